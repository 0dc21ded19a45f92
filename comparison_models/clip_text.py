"""Frozen CLIP ViT-L/14 text encoder of Stable Diffusion 1.x, built with `transformers` and no hub access.

SD-1.x (and so ControlNet v1.1 and T2I-Adapter v1) conditions on the *last* hidden state of OpenAI's CLIP ViT-L/14
text transformer, all 77 tokens, after `final_layer_norm`. The network is `transformers.CLIPTextModel` built from a
`CLIPTextConfig` (never `from_pretrained`); its weights come from the SD checkpoint.

Key layout: SD-1.x files were written with transformers 4.19, where `CLIPTextModel` kept the transformer under
`.text_model` and `embeddings.position_ids` was a persistent buffer. transformers >= 5 drops the `text_model.` level
and makes `position_ids` non-persistent. `LegacyCLIPTextModel` restores both, so this module's `state_dict()` is
exactly `transformer.text_model.*` (197 keys for ViT-L/14, `position_ids` [1, 77] int64 included).

Tokenizer: open_clip's bundled BPE (`SimpleTokenizer`; the same vocabulary and merges as OpenAI's), framed as
Hugging Face's `CLIPTokenizer(..., truncation=True, max_length=77, padding="max_length")` frames it:
`<|startoftext|>`, at most 75 BPE tokens, `<|endoftext|>`, then `<|endoftext|>` padding (49407; open_clip's own
`__call__` pads with 0, which would change the 77 output tokens SD conditions on). One known difference: open_clip
HTML-unescapes the text (`&amp;` -> `&`), the Hugging Face tokenizer does not.

References:
    Radford et al., "Learning Transferable Visual Models From Natural Language Supervision" (CLIP), ICML 2021.
    CompVis/stable-diffusion (21f890f), ldm/modules/encoders/modules.py `FrozenCLIPEmbedder` (layer "last").
    huggingface/transformers v4.19.2, models/clip/modeling_clip.py (the checkpoint's key layout).
"""

from __future__ import annotations

import logging

import torch
from open_clip.tokenizer import SimpleTokenizer
from torch import nn

from ldm.models.text_encoder import as_prompt_list, warn_if_truncated

try:
    from transformers import CLIPTextConfig, CLIPTextModel
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "The SD-1.x comparison models need `transformers` (CLIP text encoder); install it with "
        "`pip install transformers` (see requirements.txt)."
    ) from err

logger = logging.getLogger(__name__)

CONTEXT_LENGTH = 77
VOCAB_SIZE = 49408
SOT_TOKEN = 49406  # <|startoftext|>
EOT_TOKEN = 49407  # <|endoftext|>, also the padding token of OpenAI's CLIP tokenizer config
POSITION_IDS_KEY = "transformer.text_model.embeddings.position_ids"

# Text-transformer architectures by name. "ViT-L-14" is SD-1.x's; "tiny" is for tests.
CLIP_TEXT_PRESETS: dict[str, dict[str, int]] = {
    "ViT-L-14": {"width": 768, "layers": 12, "heads": 12, "intermediate": 3072},
    "tiny": {"width": 32, "layers": 2, "heads": 2, "intermediate": 64},
}


def clip_text_config(arch: str) -> CLIPTextConfig:
    """The `CLIPTextConfig` of a preset (vocab 49408, 77 positions, quick_gelu, as OpenAI's CLIP).

    Raises:
        ValueError: unknown preset name.
    """
    if arch not in CLIP_TEXT_PRESETS:
        raise ValueError(f"Unknown CLIP text arch {arch!r}; choose one of {sorted(CLIP_TEXT_PRESETS)}.")
    p = CLIP_TEXT_PRESETS[arch]
    return CLIPTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=p["width"],
        intermediate_size=p["intermediate"],
        num_hidden_layers=p["layers"],
        num_attention_heads=p["heads"],
        max_position_embeddings=CONTEXT_LENGTH,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        bos_token_id=SOT_TOKEN,
        eos_token_id=EOT_TOKEN,
        pad_token_id=EOT_TOKEN,
    )


class LegacyCLIPTextModel(nn.Module):
    """`CLIPTextModel` in the transformers-4.19 key layout: `text_model.*` with a persistent `position_ids`.

    Args:
        config: the text transformer's configuration.
    """

    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.text_model = CLIPTextModel(config)
        embeddings = self.text_model.embeddings
        # Same tensor, re-registered as persistent: SD-1.x files store it (transformers >= 4.31 stopped doing so).
        embeddings.register_buffer("position_ids", embeddings.position_ids, persistent=True)
        embeddings.register_load_state_dict_pre_hook(_check_position_ids)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, 77) token ids -> (B, 77, width) last hidden state after `final_layer_norm`."""
        return self.text_model(input_ids=input_ids).last_hidden_state


def _check_position_ids(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Load hook: `position_ids` must be 0..76. Some SD-1.x fine-tunes stored them as drifted floats
    (e.g. 76.9999), which an int64 copy would truncate to wrong positions; those are replaced, with a warning."""
    key = prefix + "position_ids"
    value = state_dict.get(key)
    if value is None or value.is_meta:
        return
    expected = torch.arange(value.shape[-1], device=value.device).expand(value.shape)
    if not torch.equal(value.round().long(), expected) or value.dtype != torch.int64:
        logger.warning("Checkpoint %s is not 0..%d in int64; using the exact positions instead.", key, expected.max())
        state_dict[key] = expected.clone()


class CLIPTextEncoder(nn.Module):
    """Prompts -> (B, 77, width) last-layer token embeddings of a CLIP text transformer (SD-1.x's conditioning).

    Mirrors `ldm.models.text_encoder.OpenCLIPTextEncoder` (the SD-2.x / HumanSD encoder): same `forward`,
    `tokenize`, `encode_tokens`, `width`, truncation warning and frozen/eval lock.

    Args:
        arch: a key of `CLIP_TEXT_PRESETS` ("ViT-L-14" or "tiny").
        max_length: token context length (77).
        freeze: keep the weights frozen and the module in eval mode (always True in SD-1.x inference).
    """

    def __init__(self, *, arch: str = "ViT-L-14", max_length: int = CONTEXT_LENGTH, freeze: bool = True):
        super().__init__()
        if max_length != CONTEXT_LENGTH:
            raise ValueError(f"max_length must be {CONTEXT_LENGTH} (CLIP's context); got {max_length}.")
        config = clip_text_config(arch)
        self.transformer = LegacyCLIPTextModel(config)
        self.arch = arch
        self.width = config.hidden_size
        self.max_length = max_length
        self.tokenizer = SimpleTokenizer()  # BPE vocabulary ships inside the open_clip wheel
        if self.tokenizer.vocab_size != VOCAB_SIZE:
            raise RuntimeError(
                f"open_clip's tokenizer has {self.tokenizer.vocab_size} tokens; CLIP needs {VOCAB_SIZE}."
            )
        self.freeze = freeze
        if freeze:
            self.requires_grad_(False)
            self.eval()

    def train(self, mode: bool = True) -> CLIPTextEncoder:
        """Frozen encoders stay in eval mode whatever the parent module does."""
        return super().train(False if self.freeze else mode)

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """Prompts -> (B, 77) int64 token ids: start, at most 75 tokens, end, end-token padding.

        Prompts longer than 75 tokens are truncated with a warning, as the original (which truncated silently).
        """
        ids = torch.full((len(prompts), self.max_length), EOT_TOKEN, dtype=torch.long)  # (B, 77)
        for row, prompt in enumerate(prompts):
            tokens = self.tokenizer.encode(prompt)
            warn_if_truncated(prompt, len(tokens) + 2, self.max_length)
            seq = [SOT_TOKEN, *tokens[: self.max_length - 2], EOT_TOKEN]
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        return ids

    def forward(self, prompts: list[str] | str) -> torch.Tensor:
        """Encode prompts.

        Args:
            prompts: a string or a list of B strings.

        Returns:
            (B, 77, width) float tensor on the module's device.
        """
        device = self.transformer.text_model.embeddings.token_embedding.weight.device
        return self.encode_tokens(self.tokenize(as_prompt_list(prompts)).to(device))

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, 77) token ids -> (B, 77, width) last hidden state (after the final layer norm)."""
        if tokens.ndim != 2 or tokens.shape[1] != self.max_length:
            raise ValueError(f"tokens must have shape (B, {self.max_length}); got {tuple(tokens.shape)}.")
        return self.transformer(tokens)
