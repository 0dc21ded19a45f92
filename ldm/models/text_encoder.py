"""Frozen OpenCLIP text encoder (ViT-H/14 text tower for SD-2.x / HumanSD), built with `open_clip_torch`.

The tower is built from its architecture config only (never `pretrained=`), its weights come from our
checkpoint (`cond_stage_model.model.*`). The output is the penultimate transformer layer followed by
`ln_final`, all 77 tokens, no pooling: exactly what SD-2.x conditions on.

References:
    Cherti et al., "Reproducible scaling laws for contrastive language-image learning" (OpenCLIP), CVPR 2023.
    Stability-AI/stablediffusion (cf8f7b6), ldm/modules/encoders/modules.py `FrozenOpenCLIPEmbedder`.
"""

from __future__ import annotations

import logging
import math
import warnings

import open_clip
import torch
from open_clip.model import CLIPTextCfg, _build_text_tower
from torch import nn

logger = logging.getLogger(__name__)

CONTEXT_LENGTH = 77

# Text-tower architectures by name. "ViT-H-14" is the real one; "tiny" is for tests and the mannequin world.
TEXT_TOWER_PRESETS: dict[str, dict[str, int]] = {
    "ViT-H-14": {"embed_dim": 1024, "width": 1024, "heads": 16, "layers": 24},
    "tiny": {"embed_dim": 32, "width": 32, "heads": 2, "layers": 3},
}


def as_prompt_list(prompts: list[str] | str) -> list[str]:
    """A string or a list of strings -> list of strings (TypeError otherwise). Shared by the text encoders."""
    if isinstance(prompts, str):
        return [prompts]
    if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
        raise TypeError(f"prompts must be a string or a list of strings; got {type(prompts).__name__}.")
    return list(prompts)


def warn_if_truncated(prompt: str, num_tokens: int, max_length: int) -> None:
    """Warn (as the original tokenizers silently truncate) when a prompt has more tokens than fit."""
    if num_tokens > max_length:
        warnings.warn(
            f"Prompt has {num_tokens} tokens; it is truncated to {max_length}: {prompt[:60]!r}...", stacklevel=4
        )


class OpenCLIPTextEncoder(nn.Module):
    """Prompts -> (B, 77, width) token embeddings from the penultimate layer of an OpenCLIP text tower.

    Args:
        arch: a key of `TEXT_TOWER_PRESETS` ("ViT-H-14" or "tiny").
        layer: "penultimate" (SD-2.x) or "last".
        max_length: token context length (77).
        freeze: keep the weights frozen and the module in eval mode (always True in HumanSD).
    """

    def __init__(
        self,
        *,
        arch: str = "ViT-H-14",
        layer: str = "penultimate",
        max_length: int = CONTEXT_LENGTH,
        freeze: bool = True,
    ):
        super().__init__()
        if arch not in TEXT_TOWER_PRESETS:
            raise ValueError(f"Unknown text tower arch {arch!r}; choose one of {sorted(TEXT_TOWER_PRESETS)}.")
        if layer not in ("penultimate", "last"):
            raise ValueError(f"layer must be 'penultimate' or 'last'; got {layer!r}.")
        if max_length != CONTEXT_LENGTH:
            raise ValueError(f"max_length must be {CONTEXT_LENGTH} (OpenCLIP's context); got {max_length}.")
        p = TEXT_TOWER_PRESETS[arch]
        cfg = CLIPTextCfg(
            context_length=max_length, vocab_size=49408, width=p["width"], heads=p["heads"], layers=p["layers"]
        )
        self.model = _build_text_tower(p["embed_dim"], cfg)
        # The CLIP model's temperature lives beside the text tower in SD checkpoints (stored, unused).
        self.model.logit_scale = nn.Parameter(torch.full([], math.log(1 / 0.07)))
        self.layer_index = p["layers"] - 1 if layer == "penultimate" else p["layers"]
        self.max_length = max_length
        self.width = p["width"]
        self.tokenizer = open_clip.get_tokenizer("ViT-H-14")  # BPE vocabulary ships inside the wheel
        self.freeze = freeze
        if freeze:
            self.requires_grad_(False)
            self.eval()

    def train(self, mode: bool = True) -> OpenCLIPTextEncoder:
        """Frozen encoders stay in eval mode whatever the parent module does."""
        return super().train(False if self.freeze else mode)

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """Prompts -> (B, 77) token ids, truncating (with a warning) what does not fit, as the original."""
        for prompt in prompts:
            warn_if_truncated(prompt, len(self.tokenizer.encode(prompt)) + 2, self.max_length)  # + start/end tokens
        return self.tokenizer(prompts, context_length=self.max_length)

    def forward(self, prompts: list[str] | str) -> torch.Tensor:
        """Encode prompts.

        Args:
            prompts: a string or a list of B strings.

        Returns:
            (B, 77, width) float tensor on the module's device.
        """
        device = self.model.positional_embedding.device
        tokens = self.tokenize(as_prompt_list(prompts)).to(device)
        return self.encode_tokens(tokens)

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, 77) token ids -> (B, 77, width) penultimate-layer features after ln_final."""
        m = self.model
        x = m.token_embedding(tokens) + m.positional_embedding  # (B, 77, width)
        mask = m.attn_mask.to(x.dtype) if m.attn_mask is not None else None
        for block in m.transformer.resblocks[: self.layer_index]:
            x = block(x, attn_mask=mask)
        return m.ln_final(x)
