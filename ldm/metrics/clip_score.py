"""CLIP score (CLIPSIM) of generated images against their prompts, with an open_clip model from a local file.

Per image-prompt pair: 100 * max(cos(image embedding, text embedding), 0); the reported figure is the mean over
pairs (torchmetrics ``CLIPScore``'s convention, which the original used with ``openai/clip-vit-base-patch16``).
The model is built with ``open_clip.create_model(arch, pretrained=None)`` and its weights are loaded from the
given file (``open_clip.load_checkpoint``, strict, tensor-only unpickling); nothing is downloaded.

Weights: the original's CLIP is OpenAI's ViT-B/16. In open_clip that is the architecture ``ViT-B-16-quickgelu``
(OpenAI trained with QuickGELU; plain ``ViT-B-16`` is the LAION variant's GELU and gives slightly different
embeddings with OpenAI weights). Its open_clip-format file is ``open_clip_pytorch_model.bin`` of the Hugging Face
repository ``timm/vit_base_patch16_clip_224.openai``. The architecture may also be a path to an open_clip model
config ``.json`` (``{"embed_dim", "vision_cfg", "text_cfg"}``), registered under the file's stem.

References:
    Hessel et al., "CLIPScore: A Reference-free Evaluation Metric for Image Captioning", EMNLP 2021.
    torchmetrics ``multimodal/clip_score.py``; open_clip 3.3 ``factory.py`` (``create_model``, ``load_checkpoint``).
    HumanSD (IDEA-Research/HumanSD, c5db29d), utils/metrics/text_metrics.py; spec §6.7.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["CLIP_WEIGHTS_HELP", "DEFAULT_CLIP_MODEL", "ClipScorer", "clip_scores_from_embeddings"]

DEFAULT_CLIP_MODEL = "ViT-B-16"
CLIP_WEIGHTS_HELP = (
    "CLIPSIM needs open_clip weights as a local file (--clip-weights PATH). For the original's OpenAI ViT-B/16 use "
    "--clip-model ViT-B-16-quickgelu with open_clip_pytorch_model.bin from the Hugging Face repository "
    "timm/vit_base_patch16_clip_224.openai; any open_clip architecture with a matching state dict works. Nothing is "
    "downloaded automatically."
)
_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_scores_from_embeddings(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """Per-pair CLIP scores 100 * max(cos, 0).

    Args:
        image_embeds: (N, D) image embeddings (any norm).
        text_embeds: (N, D) text embeddings of the matching prompts.

    Returns:
        (N,) scores in [0, 100].
    """
    if image_embeds.shape != text_embeds.shape or image_embeds.ndim != 2:
        raise ValueError(
            f"Expected two (N, D) embeddings; got {tuple(image_embeds.shape)}, {tuple(text_embeds.shape)}."
        )
    img = image_embeds / image_embeds.norm(dim=-1, keepdim=True)
    txt = text_embeds / text_embeds.norm(dim=-1, keepdim=True)
    return (100.0 * (img * txt).sum(dim=-1)).clamp(min=0.0)


def _resolve_arch(arch: str | Path) -> str:
    import open_clip

    path = Path(arch)
    if path.suffix == ".json":
        if not path.is_file():
            raise FileNotFoundError(f"open_clip model config not found: {path}")
        open_clip.add_model_config(path)
        return path.stem
    if str(arch) not in open_clip.list_models():
        close = [m for m in open_clip.list_models() if str(arch).lower()[:6] in m.lower()][:8]
        raise ValueError(f"Unknown open_clip architecture {arch!r}; similar names: {close}. Or pass a config .json.")
    text_cfg = open_clip.get_model_config(str(arch)).get("text_cfg", {})
    if text_cfg.get("hf_tokenizer_name") or text_cfg.get("hf_model_name"):
        raise ValueError(f"{arch} uses a Hugging Face text tower/tokenizer, which would be downloaded; pick another.")
    return str(arch)


class ClipScorer:
    """Embeds images and prompts with an open_clip model and scores pairs.

    Args:
        model: an open_clip ``CLIP`` (``encode_image``, ``encode_text``), in eval mode.
        tokenizer: callable mapping a list of strings to a (N, context_length) token tensor.
        preprocess: callable mapping a PIL image to a (3, S, S) float tensor (resize, crop, normalise).
        name: architecture name, for reports.
    """

    def __init__(self, model: nn.Module, tokenizer: Callable, preprocess: Callable, *, name: str) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.name = name

    @classmethod
    def from_weights(cls, arch: str | Path, weights: str | Path) -> ClipScorer:
        """Build ``arch`` with random weights, then load ``weights`` strictly.

        Args:
            arch: open_clip architecture name (e.g. ``ViT-B-16``) or a model-config ``.json`` path.
            weights: state-dict file (``.bin``/``.pt``/``.pth``/``.safetensors``).

        Raises:
            FileNotFoundError: missing weights (the message says where to get them).
            ValueError: unknown architecture or weights that do not fit it.
        """
        import open_clip

        weights = Path(weights)
        if not weights.is_file():
            raise FileNotFoundError(f"CLIP weights not found: {weights}. {CLIP_WEIGHTS_HELP}")
        name = _resolve_arch(arch)
        model = open_clip.create_model(name, pretrained=None, pretrained_image=False, pretrained_text=False)
        try:
            open_clip.load_checkpoint(model, str(weights), strict=True, weights_only=True)
        except (RuntimeError, KeyError, ValueError) as err:
            raise ValueError(
                f"{weights} does not fit open_clip {name}: {str(err)[:400]}. {CLIP_WEIGHTS_HELP}"
            ) from None
        cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
        size = cfg.get("size", model.visual.image_size)
        preprocess = open_clip.image_transform(
            size,
            is_train=False,
            mean=cfg.get("mean", _OPENAI_MEAN),
            std=cfg.get("std", _OPENAI_STD),
            resize_mode=cfg.get("resize_mode"),
            interpolation=cfg.get("interpolation"),
        )
        logger.info("Loaded open_clip %s from %s.", name, weights)
        return cls(model, open_clip.get_tokenizer(name), preprocess, name=name)

    @torch.no_grad()
    def image_embeddings(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """(N, D) embeddings of (H, W, 3) uint8 RGB images."""
        batch = torch.stack([self.preprocess(Image.fromarray(image)) for image in images])  # (N, 3, S, S)
        return self.model.encode_image(batch.to(self._device)).float().cpu()

    @torch.no_grad()
    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, D) embeddings of prompts (truncated to the context length by the tokenizer)."""
        return self.model.encode_text(self.tokenizer(list(texts)).to(self._device)).float().cpu()

    @property
    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> ClipScorer:
        """Move the model (inputs follow it)."""
        self.model.to(device)
        return self

    def scores(self, images: Sequence[np.ndarray], texts: Sequence[str]) -> np.ndarray:
        """Per-pair CLIP scores 100 * max(cos, 0) of images[i] and texts[i].

        Args:
            images: (H, W, 3) uint8 RGB images.
            texts: one prompt per image.

        Returns:
            (N,) float64 scores in [0, 100].
        """
        if len(images) != len(texts):
            raise ValueError(f"Need one prompt per image; got {len(images)} images and {len(texts)} prompts.")
        if not images:
            return np.zeros(0)
        scores = clip_scores_from_embeddings(self.image_embeddings(images), self.text_embeddings(texts))
        return scores.double().numpy()
