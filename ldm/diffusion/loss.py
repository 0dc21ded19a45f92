"""Denoising losses as objects the training module composes: the plain SD loss and HumanSD's heatmap-guided loss.

Every loss is called as ``loss_fn(model, x0, cond, *, generator=None) -> LossOutput``: it draws the timesteps
and the noise from ``generator`` (so a training step is reproducible from one seed), runs the denoiser once with
gradients, and returns the scalar loss plus detached values to log.

Per-element form shared by all variants (the reduction of the original ``p_losses``)::

    L = mean_b mean_{c,h,w} W * (pred - target)^2,     target = eps (or v for v-prediction)

with W = 1 (``SimpleLoss``) or W = 1 + w * M (``HeatmapGuidedLoss``), where M is a weight map computed without
gradients from the decoded denoising error ``eps_hat - eps``.

References:
    Ho et al., "Denoising Diffusion Probabilistic Models", NeurIPS 2020, eq. (14) (simple loss).
    Ju et al., "HumanSD: A Native Skeleton-Guided Diffusion Model for Human Image Generation", ICCV 2023, §3.3,
    Fig. 2 (heatmap-guided denoising loss).
    IDEA-Research/HumanSD (c5db29d), ldm/models/diffusion/ddpm.py
    ``LatentPoseText2ImageDiffusion_HumanSD.p_losses`` (the loss as coded; spec §2.1, §2.3).
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import TYPE_CHECKING, NamedTuple, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from ldm.conditioning import Conditioning
from ldm.diffusion.parameterization import Parameterization, to_eps, training_target
from ldm.diffusion.schedule import add_noise

if TYPE_CHECKING:
    from ldm.models.latent_diffusion import LatentDiffusion

__all__ = [
    "DiffusionLoss",
    "HeatmapEstimator",
    "HeatmapGuidedLoss",
    "HeatmapMode",
    "LossOutput",
    "NoisedSample",
    "SimpleLoss",
    "min_snr_weight",
    "paper_weight_map",
    "reference_weight_map",
]


class LossOutput(NamedTuple):
    """Result of a loss call.

    Attributes:
        loss: scalar tensor to back-propagate.
        logs: detached scalars keyed by metric name without stage prefix (``loss``, ``loss_simple``,
            ``loss_mse``, ``weight_mean``).
    """

    loss: torch.Tensor
    logs: dict[str, torch.Tensor]


class NoisedSample(NamedTuple):
    """One draw of the forward process.

    Attributes:
        t: (B,) long timesteps in [0, T).
        noise: (B, C, h, w) standard normal eps.
        x_t: (B, C, h, w) noisy latents sqrt(a_t) x0 + sqrt(1 - a_t) eps.
        alpha: (B,) alpha-bar_t.
    """

    t: torch.Tensor
    noise: torch.Tensor
    x_t: torch.Tensor
    alpha: torch.Tensor


@runtime_checkable
class HeatmapEstimator(Protocol):
    """A frozen keypoint network (e.g. ``ldm.pose.estimator.PoseEstimator``)."""

    def heatmaps(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [0, 1] -> (B, K, H', W') raw keypoint heatmaps."""
        ...


class HeatmapMode(StrEnum):
    """How ``HeatmapGuidedLoss`` turns heatmaps into a weight map (see the class docstring)."""

    REFERENCE = "reference"
    PAPER = "paper"


def _generator_device(generator: torch.Generator | None, fallback: torch.device) -> torch.device:
    return generator.device if generator is not None else fallback


def min_snr_weight(alpha_cumprod: torch.Tensor, gamma: float, param: Parameterization) -> torch.Tensor:
    """Per-timestep Min-SNR-gamma loss weight (Hang et al., ICCV 2023, eq. 10 and Table 1).

    With SNR(t) = a_t / (1 - a_t), the x0-space weight min(SNR, gamma) expressed for the regression target:
    min(SNR, gamma) / SNR for eps-prediction and min(SNR, gamma) / (SNR + 1) for v-prediction. Low-noise steps
    (large SNR) are down-weighted; steps with SNR <= gamma keep weight 1 (eps) or SNR / (SNR + 1) (v).

    Args:
        alpha_cumprod: (B,) a_t of the drawn timesteps.
        gamma: the clamp (5 in the paper).
        param: the model's parameterization.
    """
    a = alpha_cumprod.double()
    snr = a / (1 - a)
    clamped = snr.clamp(max=gamma)
    weight = clamped / snr if param is Parameterization.EPS else clamped / (snr + 1)
    return weight.float()


class DiffusionLoss(nn.Module):
    """Base class: forward-process sampling, one denoiser call and the weighted MSE reduction.

    Subclasses only decide the per-element weight (``element_weight``). Randomness is drawn on the generator's
    device and moved to the latents' device, so a CPU generator gives the same step on any accelerator.

    Args:
        snr_gamma: if set, each sample's loss is also scaled by the Min-SNR-gamma weight of its timestep
            (``min_snr_weight``; 5 is the paper's value), which speeds up training from scratch. None (default,
            and what SD and HumanSD use) keeps the uniform weighting over timesteps.
    """

    def __init__(self, *, snr_gamma: float | None = None) -> None:
        super().__init__()
        if snr_gamma is not None and (not math.isfinite(snr_gamma) or snr_gamma <= 0):
            raise ValueError(f"snr_gamma must be a finite number > 0 or null; got {snr_gamma}.")
        self.snr_gamma = None if snr_gamma is None else float(snr_gamma)

    def sample_forward_process(
        self, model: LatentDiffusion, x0: torch.Tensor, generator: torch.Generator | None = None
    ) -> NoisedSample:
        """Draw t ~ U{0..T-1} (first) and eps ~ N(0, I) (second), and noise x0 (Ho et al. eq. 4).

        Args:
            model: provides ``alphas_cumprod`` (T,).
            x0: (B, C, h, w) clean scaled latents.
            generator: source of randomness (None: the global RNG).
        """
        num_timesteps = model.alphas_cumprod.shape[0]
        gen_device = _generator_device(generator, x0.device)
        t = torch.randint(0, num_timesteps, (x0.shape[0],), generator=generator, device=gen_device).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=gen_device, dtype=torch.float32)
        noise = noise.to(x0.device, x0.dtype)
        alpha = model.alphas_cumprod[t]
        return NoisedSample(t, noise, add_noise(x0, noise, alpha), alpha)

    def forward(
        self,
        model: LatentDiffusion,
        x0: torch.Tensor,
        cond: Conditioning,
        *,
        generator: torch.Generator | None = None,
    ) -> LossOutput:
        """Loss of one batch.

        Args:
            model: the latent diffusion model (its UNet gets gradients; VAE/text encoder are frozen).
            x0: (B, 4, h, w) scaled latents of the images (unit variance).
            cond: the batch's conditioning (text tokens and, for HumanSD, the pose latent).
            generator: randomness for t, eps and anything the weight map samples.

        Returns:
            ``LossOutput`` with the scalar loss and detached logs.
        """
        sample = self.sample_forward_process(model, x0, generator)
        pred = model.apply_model(sample.x_t, sample.t, cond)
        return self.loss_from_prediction(model, pred, x0, sample, generator=generator)

    def loss_from_prediction(
        self,
        model: LatentDiffusion,
        pred: torch.Tensor,
        x0: torch.Tensor,
        sample: NoisedSample,
        *,
        generator: torch.Generator | None = None,
    ) -> LossOutput:
        """Weighted MSE of a given network output (split from ``forward`` for unit tests).

        Args:
            model: the model (used by weight maps that decode or encode).
            pred: (B, C, h, w) network output (eps or v, per ``model.parameterization``).
            x0: (B, C, h, w) clean latents.
            sample: the forward-process draw that produced ``pred``.
            generator: randomness for the weight map.
        """
        param = model.parameterization
        target = training_target(x0, sample.noise, sample.alpha, param)
        sq_err = (pred.float() - target.float()) ** 2  # (B, C, h, w)
        with torch.no_grad():
            eps_error = to_eps(pred.detach(), sample.x_t, sample.alpha, param) - sample.noise  # eps_hat - eps
            weight = self.element_weight(model, eps_error, generator=generator)
        weighted = sq_err if weight is None else sq_err * weight.float()
        per_sample = weighted.mean(dim=(1, 2, 3))  # mean over C, H, W, then over the batch (spec §2.1 12-13)
        if self.snr_gamma is not None:
            per_sample = per_sample * min_snr_weight(sample.alpha, self.snr_gamma, param).to(per_sample.device)
        loss = per_sample.mean()
        logs = {
            "loss": loss.detach(),
            "loss_simple": loss.detach(),
            "loss_mse": sq_err.detach().mean(),
            "weight_mean": torch.ones((), device=loss.device) if weight is None else weight.float().mean(),
        }
        return LossOutput(loss, logs)

    def element_weight(
        self, model: LatentDiffusion, eps_error: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor | None:
        """Per-element weight broadcastable to (B, C, h, w), or None for the unweighted loss."""
        return None


class SimpleLoss(DiffusionLoss):
    """The plain noise-prediction loss ``mean (eps_hat - eps)^2`` of SD (HumanSD's "originalloss" ablation)."""

    def extra_repr(self) -> str:
        return "weight=1" + ("" if self.snr_gamma is None else f", snr_gamma={self.snr_gamma}")


def _decoded_error_image(model: LatentDiffusion, eps_error: torch.Tensor) -> torch.Tensor:
    """D = clamp((VAE.dec((eps_hat - eps) / scale_factor) + 1) / 2, 0, 1): (B, 3, H, W) in [0, 1]."""
    return ((model.decode_latents(eps_error) + 1) / 2).clamp(0, 1)


def reference_weight_map(
    model: LatentDiffusion,
    eps_error: torch.Tensor,
    estimator: HeatmapEstimator,
    *,
    threshold: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The weight map M of the original code (spec §2.1, steps 3-11), deliberate quirks included.

    Args:
        model: decodes the error and re-encodes the mask (posterior sample x scale, as ``encode_images``).
        eps_error: (B, 4, h, w) eps_hat - eps (predicted minus true, the original's sign).
        estimator: frozen pose net; ``heatmaps`` gets the un-normalised [0, 1] image, as the original.
        threshold: tau (0.05).
        generator: randomness of the VAE posterior sample of step 11.

    Returns:
        (B, 4, h, w) M; may be negative, and is *low* where joints respond (spec §2.3 #1-#3).
    """
    images = _decoded_error_image(model, eps_error)  # 3. (B, 3, H, W) in [0, 1]
    heatmaps = estimator.heatmaps(images)  # 4-7. (B, K, H/2, W/2), stage-averaged raw heatmaps
    # 8. Inverted threshold, kept on purpose: 0 where a joint responds (H > tau), 1 elsewhere.
    off_joint = torch.where(heatmaps > threshold, 0.0, 1.0).to(torch.float32)
    summed = off_joint.sum(dim=1, keepdim=True).repeat(1, 3, 1, 1)  # 9. (B, 3, H/2, W/2), values 0..K
    summed = F.interpolate(summed, size=images.shape[-2:], mode="bicubic", align_corners=False)  # 10. (B, 3, H, W)
    return model.encode_images(summed.to(images.dtype), generator)  # 11. (B, 4, h, w), VAE fed values up to ~K


def paper_weight_map(
    model: LatentDiffusion,
    eps_error: torch.Tensor,
    estimator: HeatmapEstimator,
    *,
    threshold: float,
) -> torch.Tensor:
    """The paper's intent (Fig. 2): a mask that is high where the pose net sees joints in the decoded error.

    M = area_downsample( 1[ max_j H_j(D) > tau ] ) to the latent size, with D the decoded error image as in the
    reference. M is the fraction of each latent cell's pixels (at heatmap resolution) where at least one joint
    heatmap exceeds tau, so M is in [0, 1] and is shared by the latent channels. No VAE re-encoding.

    Args:
        model: decodes the error.
        eps_error: (B, 4, h, w) eps_hat - eps.
        estimator: frozen pose net.
        threshold: tau.

    Returns:
        (B, 1, h, w) M in [0, 1].
    """
    images = _decoded_error_image(model, eps_error)  # (B, 3, H, W) in [0, 1]
    heatmaps = estimator.heatmaps(images).float()  # (B, K, H/2, W/2)
    joints = (heatmaps.amax(dim=1, keepdim=True) > threshold).float()  # (B, 1, H/2, W/2) union of detections
    return F.interpolate(joints, size=eps_error.shape[-2:], mode="area")  # (B, 1, h, w) coverage


class HeatmapGuidedLoss(DiffusionLoss):
    """HumanSD's heatmap-guided denoising loss: W = 1 + weight * M, with M from a frozen pose net.

    ``mode="reference"`` reproduces the released code exactly (``reference_weight_map``): decode the denoising
    error, run the pose net, mark pixels where *no* joint exceeds tau, sum over the 17 joints, bicubic-upsample and
    VAE-encode (posterior sample x scale_factor) into a 4-channel latent M. The emphasis is therefore inverted
    relative to the paper and M can be negative (spec §2.3).

    ``mode="paper"`` follows the paper's description (``paper_weight_map``): M in [0, 1] is the fraction of each
    latent cell covered by joint detections (max over joints > tau) in the decoded error, computed directly at
    latent resolution, so W is in [1, 1 + weight] and largest at the joints.

    In both modes M is computed without gradients (a constant weight), and the pose net stays frozen in eval mode
    (the original let ``model.train()`` switch its BatchNorms to batch statistics; we do not).

    Args:
        pose_estimator: a frozen heatmap network with ``heatmaps(images in [0, 1]) -> (B, K, H', W')``. It is a
            child module (moved with the model) but the training module keeps it out of checkpoints.
        mode: ``"reference"`` or ``"paper"``.
        weight: w (0.1 in the original).
        threshold: tau on the raw heatmaps (0.05 in the original).
        snr_gamma: Min-SNR-gamma timestep weighting on top (``DiffusionLoss``); None in the original.
    """

    def __init__(
        self,
        pose_estimator: nn.Module,
        *,
        mode: str = "reference",
        weight: float = 0.1,
        threshold: float = 0.05,
        snr_gamma: float | None = None,
    ) -> None:
        super().__init__(snr_gamma=snr_gamma)
        if not isinstance(pose_estimator, HeatmapEstimator):
            raise TypeError(
                f"pose_estimator must have a heatmaps(images) method (e.g. ldm.pose.estimator.PoseEstimator); "
                f"got {type(pose_estimator).__name__}."
            )
        try:
            self.mode = HeatmapMode(mode)
        except ValueError:
            raise ValueError(
                f"Unknown heatmap loss mode {mode!r}; choose one of {[m.value for m in HeatmapMode]}."
            ) from None
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"weight must be a finite number >= 0; got {weight}.")
        if not math.isfinite(threshold):
            raise ValueError(f"threshold must be finite; got {threshold}.")
        self.weight = float(weight)
        self.threshold = float(threshold)
        self.pose_estimator = pose_estimator.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> HeatmapGuidedLoss:
        """The pose net is eval-locked whatever ``mode`` is."""
        super().train(mode)
        self.pose_estimator.eval()
        return self

    def extra_repr(self) -> str:
        snr = "" if self.snr_gamma is None else f", snr_gamma={self.snr_gamma}"
        return f"mode={self.mode.value}, weight={self.weight}, threshold={self.threshold}{snr}"

    def weight_map(
        self, model: LatentDiffusion, eps_error: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """M for this mode: (B, 4, h, w) in reference mode, (B, 1, h, w) in paper mode."""
        if self.mode is HeatmapMode.REFERENCE:
            return reference_weight_map(
                model, eps_error, self.pose_estimator, threshold=self.threshold, generator=generator
            )
        return paper_weight_map(model, eps_error, self.pose_estimator, threshold=self.threshold)

    @torch.no_grad()
    def element_weight(
        self, model: LatentDiffusion, eps_error: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """W = 1 + weight * M (spec §2.1 step 12)."""
        return 1.0 + self.weight * self.weight_map(model, eps_error, generator=generator)
