"""Tests of the denoising losses (ldm.diffusion.loss): plain MSE, heatmap-guided reference and paper modes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ldm.config import load_config
from ldm.diffusion.loss import HeatmapGuidedLoss, LossOutput, SimpleLoss, min_snr_weight, paper_weight_map
from ldm.diffusion.parameterization import Parameterization
from ldm.diffusion.schedule import add_noise
from ldm.inference.loading import build_model
from ldm.models.latent_diffusion import LatentDiffusion
from ldm.pose.estimator import PoseEstimator

TINY_CONFIG = Path(__file__).parents[1] / "configs" / "tiny" / "humansd-tiny.yaml"
SIZE = 32  # images; latents are SIZE / 8


class InputHeatmaps(nn.Module):
    """Stand-in pose net: heatmaps that depend on the input, spread over [0, 0.2] across the 17 joints."""

    def heatmaps(self, images: torch.Tensor) -> torch.Tensor:
        gray = F.avg_pool2d(images.mean(1, keepdim=True), 2)  # (B, 1, H/2, W/2)
        return gray * torch.linspace(0.0, 0.4, 17).view(1, 17, 1, 1)  # (B, 17, H/2, W/2)


class FixedHeatmaps(nn.Module):
    """Stand-in pose net with a given (1, 17, H/2, W/2) heatmap, whatever the input."""

    def __init__(self, maps: torch.Tensor):
        super().__init__()
        self.register_buffer("maps", maps)

    def heatmaps(self, images: torch.Tensor) -> torch.Tensor:
        return self.maps.expand(images.shape[0], -1, -1, -1)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is as fast as two, and much faster when the CPU is shared (no spinning)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model() -> LatentDiffusion:
    torch.manual_seed(0)
    return build_model(load_config(TINY_CONFIG)).eval()


@pytest.fixture(scope="module")
def batch(model: LatentDiffusion):
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, SIZE, SIZE, generator=gen) * 2 - 1
    with torch.no_grad():
        x0 = model.encode_images(images, gen)  # (2, 4, 4, 4)
        cond = model.get_conditioning(["a red figure", "two people"], images.flip(-1), gen)
    return x0, cond


def _replay(model: LatentDiffusion, x0: torch.Tensor, cond, seed: int):
    """t, eps, x_t and the prediction, drawn in the documented order (t first, then eps)."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.randint(0, 1000, (x0.shape[0],), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    x_t = add_noise(x0, noise, model.alphas_cumprod[t])
    with torch.no_grad():
        pred = model.apply_model(x_t, t, cond)
    return gen, noise, pred


def _reference_map_by_hand(model, eps_error, heatmaps_fn, tau, gen) -> torch.Tensor:
    """Spec §2.1 steps 3-11, written out independently of the library."""
    decoded = model.vae.decode(eps_error / model.scale_factor)  # 3. decode (eps_hat - eps) / 0.18215
    d = torch.clamp((decoded + 1) / 2, 0, 1)
    h = heatmaps_fn(d)  # 4-7.
    b = 1.0 - (h > tau).float()  # 8. 0 at responses above tau, 1 elsewhere
    s = b.sum(dim=1, keepdim=True)  # 9. (B, 1, H/2, W/2) in 0..17
    s = torch.cat([s, s, s], dim=1)
    s = F.interpolate(s, size=tuple(d.shape[-2:]), mode="bicubic", align_corners=False)  # 10.
    posterior = model.vae.encode(s)  # 11. posterior sample x scale_factor
    noise = torch.randn(posterior.mean.shape, generator=gen)
    return model.scale_factor * (posterior.mean + posterior.std * noise)


def test_simple_loss_is_plain_mse(model, batch) -> None:
    x0, cond = batch
    with torch.no_grad():
        out = SimpleLoss()(model, x0, cond, generator=torch.Generator().manual_seed(7))
    _, noise, pred = _replay(model, x0, cond, 7)
    expected = F.mse_loss(pred, noise)
    assert isinstance(out, LossOutput)
    torch.testing.assert_close(out.loss, expected, rtol=1e-6, atol=0)
    assert set(out.logs) == {"loss", "loss_simple", "loss_mse", "weight_mean"}
    torch.testing.assert_close(out.logs["loss_mse"], expected, rtol=1e-6, atol=0)
    assert out.logs["weight_mean"].item() == 1.0


def test_min_snr_weight_values() -> None:
    alpha = torch.tensor([0.5, 5 / 6, 0.99])  # SNR 1, 5, 99
    torch.testing.assert_close(min_snr_weight(alpha, 5.0, Parameterization.EPS), torch.tensor([1.0, 1.0, 5 / 99]))
    torch.testing.assert_close(min_snr_weight(alpha, 5.0, Parameterization.V), torch.tensor([0.5, 5 / 6, 5 / 100]))


def test_min_snr_loss_scales_each_sample_by_its_timestep_weight(model, batch) -> None:
    x0, cond = batch
    with torch.no_grad():
        out = SimpleLoss(snr_gamma=2.0)(model, x0, cond, generator=torch.Generator().manual_seed(1))
        huge = SimpleLoss(snr_gamma=1e9)(model, x0, cond, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(1)
    t = torch.randint(0, 1000, (x0.shape[0],), generator=gen)
    _, noise, pred = _replay(model, x0, cond, 1)
    snr = model.alphas_cumprod[t].double() / (1 - model.alphas_cumprod[t].double())
    per_sample = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
    assert (snr > 2.0).any() and (snr < 2.0).any()  # this draw has down-weighted and full-weight samples
    expected = (per_sample * (snr.clamp(max=2.0) / snr).float()).mean()
    torch.testing.assert_close(out.loss, expected, rtol=1e-6, atol=0)
    assert out.loss.item() < F.mse_loss(pred, noise).item()
    torch.testing.assert_close(huge.loss, F.mse_loss(pred, noise), rtol=1e-6, atol=0)  # gamma above every SNR


@pytest.mark.parametrize("gamma", [0.0, -1.0, float("inf"), float("nan")])
def test_min_snr_rejects_bad_gamma(gamma) -> None:
    with pytest.raises(ValueError, match="snr_gamma must be a finite number > 0"):
        SimpleLoss(snr_gamma=gamma)
    with pytest.raises(ValueError, match="snr_gamma must be a finite number > 0"):
        HeatmapGuidedLoss(InputHeatmaps(), snr_gamma=gamma)


def test_loss_is_reproducible_from_the_generator_and_backpropagates_into_the_unet_only(model, batch) -> None:
    x0, cond = batch
    loss_fn = HeatmapGuidedLoss(PoseEstimator.from_config("tiny"), mode="reference")
    a = loss_fn(model, x0, cond, generator=torch.Generator().manual_seed(3))
    b = loss_fn(model, x0, cond, generator=torch.Generator().manual_seed(3))
    assert a.loss.item() == b.loss.item()
    model.zero_grad(set_to_none=True)
    a.loss.backward()
    assert model.unet.out[-1].weight.grad is not None
    assert all(p.grad is None for p in model.vae.parameters())
    assert all(p.grad is None and not p.requires_grad for p in loss_fn.pose_estimator.parameters())
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("sample_posterior", [True, False])
def test_reference_weight_map_matches_step_by_step_computation(model, batch, sample_posterior) -> None:
    x0, cond = batch
    estimator = InputHeatmaps()
    loss_fn = HeatmapGuidedLoss(estimator, mode="reference", weight=0.1, threshold=0.05)
    gen, noise, pred = _replay(model, x0, cond, 11)
    eps_error = pred - noise
    model.sample_posterior = sample_posterior
    try:
        with torch.no_grad():
            got = loss_fn.weight_map(model, eps_error, generator=torch.Generator().manual_seed(5))
            by_hand_gen = torch.Generator().manual_seed(5)
            if sample_posterior:
                expected = _reference_map_by_hand(model, eps_error, estimator.heatmaps, 0.05, by_hand_gen)
            else:
                decoded = torch.clamp((model.vae.decode(eps_error / model.scale_factor) + 1) / 2, 0, 1)
                s = (1.0 - (estimator.heatmaps(decoded) > 0.05).float()).sum(1, keepdim=True).repeat(1, 3, 1, 1)
                s = F.interpolate(s, size=(SIZE, SIZE), mode="bicubic", align_corners=False)
                expected = model.scale_factor * model.vae.encode(s).mean
    finally:
        model.sample_posterior = True
    assert got.shape == (2, 4, SIZE // 8, SIZE // 8)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_reference_loss_equals_weighted_mse_with_the_original_rng_order(model, batch) -> None:
    x0, cond = batch
    estimator = InputHeatmaps()
    loss_fn = HeatmapGuidedLoss(estimator, mode="reference", weight=0.1, threshold=0.05)
    with torch.no_grad():
        out = loss_fn(model, x0, cond, generator=torch.Generator().manual_seed(13))
        gen, noise, pred = _replay(model, x0, cond, 13)  # gen continues with the posterior sample of step 11
        m = _reference_map_by_hand(model, pred - noise, estimator.heatmaps, 0.05, gen)
    expected = ((pred - noise) ** 2 * (1 + 0.1 * m)).mean(dim=(1, 2, 3)).mean()
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out.logs["weight_mean"], (1 + 0.1 * m).mean(), rtol=1e-5, atol=1e-7)


def test_paper_weight_is_larger_at_joints(model, batch) -> None:
    x0, _ = batch
    maps = torch.zeros(1, 17, SIZE // 2, SIZE // 2)
    maps[0, 5, :8, :8] = 0.9  # a joint response covering the top-left 2x2 latent cells
    maps[0, 9, 12, 12] = 0.5  # one heatmap pixel: 1/16 of latent cell (3, 3)
    maps[0, 3, 0, 15] = 0.04  # below tau: ignored
    loss_fn = HeatmapGuidedLoss(FixedHeatmaps(maps), mode="paper", weight=0.1, threshold=0.05)
    eps_error = torch.randn_like(x0)
    with torch.no_grad():
        weight = loss_fn.element_weight(model, eps_error)
        m = paper_weight_map(model, eps_error, loss_fn.pose_estimator, threshold=0.05)
    assert weight.shape == (2, 1, SIZE // 8, SIZE // 8)
    torch.testing.assert_close(weight, 1 + 0.1 * m)
    at_joints = weight[:, :, :2, :2]
    elsewhere = weight.clone()
    elsewhere[:, :, :2, :2] = float("nan")
    assert torch.all(at_joints == 1.1)
    torch.testing.assert_close(weight[:, 0, 3, 3], torch.full((2,), 1 + 0.1 / 16))
    assert at_joints.min() > elsewhere.nan_to_num(0.0).max()
    assert weight[:, :, 0, 3].eq(1.0).all()  # the sub-threshold response adds nothing


def test_paper_mode_with_the_real_tiny_pose_net(model, batch) -> None:
    x0, cond = batch
    loss_fn = HeatmapGuidedLoss(PoseEstimator.from_config("tiny"), mode="paper")
    out = loss_fn(model, x0, cond, generator=torch.Generator().manual_seed(2))
    assert torch.isfinite(out.loss)
    assert 1.0 <= out.logs["weight_mean"].item() <= 1.1


def test_pose_net_stays_frozen_in_eval_mode() -> None:
    loss_fn = HeatmapGuidedLoss(PoseEstimator.from_config("tiny"))
    loss_fn.train()
    assert not loss_fn.pose_estimator.training
    assert not any(m.training for m in loss_fn.pose_estimator.modules())
    assert not any(p.requires_grad for p in loss_fn.pose_estimator.parameters())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"mode": "inverse"}, ValueError, "Unknown heatmap loss mode 'inverse'"),
        ({"weight": -0.1}, ValueError, "weight must be a finite number >= 0"),
        ({"threshold": float("nan")}, ValueError, "threshold must be finite"),
    ],
)
def test_heatmap_loss_rejects_bad_options(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        HeatmapGuidedLoss(InputHeatmaps(), **kwargs)


def test_heatmap_loss_needs_a_heatmap_network() -> None:
    with pytest.raises(TypeError, match="heatmaps"):
        HeatmapGuidedLoss(nn.Identity())
