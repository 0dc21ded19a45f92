"""FID and KID between generated images and reference images, with torchmetrics' estimators.

Features are extracted once per image (each generated image on its own, never a concatenated panel) by a network
from :mod:`ldm.metrics.features`, which takes uint8 images in [0, 255] and does its own range handling. The
whole-set figure and every per-scenario figure then reuse those features: torchmetrics'
``FrechetInceptionDistance`` / ``KernelInceptionDistance`` are given a pass-through ``feature`` module
(``num_features`` set) and fed the feature vectors, so their formulas (FID: ||mu_r - mu_f||² + Tr(S_r + S_f -
2 (S_r S_f)^½); KID: unbiased polynomial-kernel MMD² averaged over random subsets) are applied unchanged without
re-running the network per group.

Behaviour relative to the original (spec §6.6): the input range is right (see features.py); KID's subset size is
clamped to the smaller set (the original's torchmetrics raised or returned None below ``kid_subset_size``), and
the clamped size is reported; KID subsets are drawn from a fixed seed, so figures are reproducible.

References:
    HumanSD (IDEA-Research/HumanSD, c5db29d), utils/metrics/quality_metrics.py and
        evalute_metrics_of_each_category.py; spec §6.6 of shared/spec/humansd-reference.md.
    Binkowski et al., "Demystifying MMD GANs" (KID), ICLR 2018. torchmetrics 1.9 ``image/fid.py``, ``image/kid.py``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

__all__ = ["KIDResult", "extract_features", "frechet_distance", "kernel_distance", "to_uint8_chw"]


class _PassThrough(nn.Module):
    """The torchmetrics ``feature`` module for precomputed features: returns its input."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


@dataclass(frozen=True)
class KIDResult:
    """KID estimate.

    Args:
        mean: mean MMD² over subsets.
        std: standard deviation over subsets.
        subset_size: subset size actually used (after clamping to the smaller set).
        subsets: number of subsets.
    """

    mean: float
    std: float
    subset_size: int
    subsets: int


def to_uint8_chw(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB array -> (3, H, W) uint8 tensor (no value change)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"Expected an (H, W, 3) uint8 RGB image; got {image.dtype} {image.shape}.")
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)


@torch.no_grad()
def extract_features(extractor: nn.Module, images: Iterable[np.ndarray], *, batch_size: int = 16) -> torch.Tensor:
    """Features of a stream of images, batching consecutive images of equal size.

    Args:
        extractor: a feature network taking (N, 3, H, W) uint8 batches (``num_features`` attribute); batches go to
            the device of its parameters.
        images: (H, W, 3) uint8 RGB arrays.
        batch_size: images per forward pass.

    Returns:
        (N, num_features) float64 features on the CPU (N = 0 gives an empty (0, num_features) tensor).
    """
    out: list[torch.Tensor] = []
    batch: list[torch.Tensor] = []
    device = next(iter(extractor.parameters()), torch.empty(0)).device

    def flush() -> None:
        if batch:
            out.append(extractor(torch.stack(batch).to(device)).to("cpu", torch.float64))  # (B, D)
            batch.clear()

    for image in images:
        tensor = to_uint8_chw(image)
        if batch and (tensor.shape != batch[0].shape or len(batch) >= batch_size):
            flush()
        batch.append(tensor)
    flush()
    if not out:
        return torch.zeros((0, int(extractor.num_features)), dtype=torch.float64)
    return torch.cat(out)


def _check_features(real: torch.Tensor, fake: torch.Tensor, minimum: int, name: str) -> None:
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"{name} needs (N, D) feature matrices of equal D; got {tuple(real.shape)}, {tuple(fake.shape)}."
        )
    if len(real) < minimum or len(fake) < minimum:
        raise ValueError(
            f"{name} needs at least {minimum} images per set; got {len(real)} real and {len(fake)} generated."
        )


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID between two feature sets (torchmetrics' estimator, float64).

    Args:
        real: (N_r, D) reference features, N_r >= 2.
        fake: (N_f, D) generated-image features, N_f >= 2.

    Returns:
        The Fréchet distance (>= 0 up to float error).
    """
    _check_features(real, fake, 2, "FID")
    metric = FrechetInceptionDistance(feature=_PassThrough(real.shape[1]))
    metric.update(real.to(torch.float64), real=True)
    metric.update(fake.to(torch.float64), real=False)
    return float(metric.compute())


def kernel_distance(
    real: torch.Tensor, fake: torch.Tensor, *, subset_size: int = 1000, subsets: int = 100, seed: int = 0
) -> KIDResult:
    """KID between two feature sets (torchmetrics' estimator; subsets drawn with a fixed seed).

    Args:
        real: (N_r, D) reference features, N_r >= 2.
        fake: (N_f, D) generated-image features, N_f >= 2.
        subset_size: requested subset size; clamped to min(N_r, N_f).
        subsets: number of random subsets.
        seed: seed of the subset draws.

    Returns:
        :class:`KIDResult`. The estimate is unbiased, so identical sets give 0 only up to an O(1/subset_size)
        term, which can be slightly negative.
    """
    _check_features(real, fake, 2, "KID")
    if subset_size < 2 or subsets < 1:
        raise ValueError(f"KID needs subset_size >= 2 and subsets >= 1; got {subset_size} and {subsets}.")
    size = min(subset_size, len(real), len(fake))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = KernelInceptionDistance(feature=_PassThrough(real.shape[1]), subsets=subsets, subset_size=size)
    metric.update(real.to(torch.float64), real=True)
    metric.update(fake.to(torch.float64), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return KIDResult(mean=float(mean), std=float(std), subset_size=size, subsets=subsets)
