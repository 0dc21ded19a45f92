"""Tests for ldm.samplers: plans, guidance, DDIM / PLMS / DPM-Solver++ on analytic toy denoisers (no UNet)."""

from __future__ import annotations

import math

import pytest
import torch

from ldm.conditioning import Conditioning
from ldm.diffusion.parameterization import Parameterization
from ldm.diffusion.schedule import NoiseSchedule
from ldm.samplers import (
    SAMPLERS,
    ClassifierFreeGuidance,
    Denoiser,
    FunctionDenoiser,
    SamplerName,
    SamplingPlan,
    TimestepSpacing,
    get_sampler,
    make_plan,
    prepare_latents,
    sample_ddim,
    sample_dpmpp_2m,
    sample_plms,
)

AC = NoiseSchedule().buffers()["alphas_cumprod"]  # (1000,) float32, as stored in checkpoints
AC64 = AC.double()
MU, S = 1.5, 0.5  # toy data distribution N(MU, S^2 I)


def gaussian_eps(x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
    """Exact eps-predictor for data N(MU, S^2): sqrt(1-a) (x - sqrt(a) MU) / (a S^2 + 1 - a)."""
    a = AC64[t].view(-1, *([1] * (x.ndim - 1))).to(x.dtype)
    return (1 - a).sqrt() * (x - a.sqrt() * MU) / (a * S**2 + 1 - a)


def eps_to_v(eps_fn):
    """Turn an eps-predictor into the equivalent v-predictor: v = sqrt(a) eps - sqrt(1-a) x0."""

    def v_fn(x, t, cond):
        a = AC64[t].view(-1, 1, 1, 1).to(x.dtype)
        eps = eps_fn(x, t, cond)
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        return a.sqrt() * eps - (1 - a).sqrt() * x0

    return v_fn


def cond_dependent_eps(x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
    """A toy network whose output depends on x, t, text and pose, per batch item."""
    text = cond.crossattn.mean(dim=(1, 2)).view(-1, 1, 1, 1)
    pose = cond.concat.mean(dim=(1, 2, 3)).view(-1, 1, 1, 1) if cond.concat is not None else 0.0
    return 0.3 * x * torch.tanh(text) + (t.view(-1, 1, 1, 1).to(x.dtype) / 1000) + 0.1 * pose


class Recorder:
    """Wraps a function denoiser and records the batch size of each network call."""

    def __init__(self, fn, parameterization=Parameterization.EPS):
        self.batches: list[int] = []
        self.den = FunctionDenoiser(self._call, AC, parameterization)
        self.fn = fn

    def _call(self, x, t, cond):
        assert x.shape[0] == t.shape[0] == len(cond)
        self.batches.append(x.shape[0])
        return self.fn(x, t, cond)


def make_cond(batch: int, seed: int = 0, pose: bool = True) -> Conditioning:
    g = torch.Generator().manual_seed(seed)
    concat = torch.randn(batch, 4, 2, 2, generator=g) if pose else None
    return Conditioning(torch.randn(batch, 3, 8, generator=g), concat)


# ----------------------------------------------------------------------------------------------------------- plans


def test_trailing_plan_50():
    plan = make_plan(AC, 50)
    assert len(plan) == 50
    assert plan.timesteps.dtype == torch.long
    assert plan.timesteps.tolist() == list(range(999, 0, -20))
    assert plan.alphas.dtype == plan.alphas_prev.dtype == torch.float64
    assert torch.equal(plan.alphas, AC64[plan.timesteps])
    assert torch.equal(plan.alphas_prev[:-1], AC64[plan.timesteps[1:]])
    assert plan.alphas_prev[-1] == 1.0
    assert plan.init_alpha is None


def test_original_plan_50_runs_49_steps():
    plan = make_plan(AC, 50, spacing=TimestepSpacing.ORIGINAL)
    grid = list(range(0, 1000, 20))
    grid = [g + 1 for g in grid]  # 1, 21, ..., 981
    assert len(plan) == 49
    assert plan.timesteps[0] == 961 and plan.timesteps[-1] == 1
    assert plan.timesteps.tolist() == grid[:49][::-1]
    full_prev = [AC64[0].item()] + [AC64[g].item() for g in grid[:-1]]  # spec §5.3 step 6
    assert plan.alphas_prev.tolist() == full_prev[:49][::-1]
    assert plan.alphas_prev[-1] == AC64[0]
    assert plan.init_alpha is None


def test_original_plan_30_uneven_grid():
    # arange(0, 1000, 1000 // 30 = 33) + 1 -> 1, 34, ..., 991: 31 points (not 30); t_enc = 29 of them run.
    grid = [g + 1 for g in range(0, 1000, 33)]
    assert len(grid) == 31 and grid[-1] == 991
    plan = make_plan(AC, 30, spacing="original")
    assert plan.timesteps.tolist() == grid[:29][::-1]
    assert plan.timesteps[0] == 925
    assert plan.alphas_prev.tolist() == ([AC64[0].item()] + [AC64[g].item() for g in grid[:28]])[::-1]


def test_strength_trailing():
    plan = make_plan(AC, 50, strength=0.5)
    assert len(plan) == 25
    assert plan.timesteps.tolist() == list(range(499, 0, -20))
    assert plan.init_alpha == AC64[499].item()
    assert plan.alphas_prev[-1] == 1.0
    assert len(make_plan(AC, 50, strength=0.001)) == 1  # at least one step


def test_strength_original():
    plan = make_plan(AC, 50, spacing=TimestepSpacing.ORIGINAL, strength=0.5)
    # t_enc = int(0.5 * 50) = 25 steps: grid[24] = 481 down to 1; the image is noised to grid[25] = 501.
    assert len(plan) == 25
    assert plan.timesteps[0] == 481 and plan.timesteps[-1] == 1
    assert plan.init_alpha == AC64[501].item()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, r"steps must be an integer in \[1, 1000\].*got 0"),
        ({"steps": 1001}, r"got 1001"),
        ({"steps": 2.5}, r"got 2.5"),
        ({"steps": 50, "strength": 0.0}, r"strength must be in \(0, 1\].*got 0.0"),
        ({"steps": 50, "strength": 1.5}, r"got 1.5"),
        ({"steps": 50, "spacing": "leading"}, r"Unknown timestep spacing 'leading'; choose one of: trailing, original"),
        ({"steps": 10, "spacing": "original", "strength": 0.05}, r"0 denoising steps"),
        ({"steps": 1, "spacing": "original"}, r"t_enc = min\(int\(strength \* steps\), steps - 1\) = 0"),
        ({"steps": 1000, "spacing": "original"}, r"past the last timestep 999"),
    ],
)
def test_plan_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_plan(AC, **kwargs)


def test_prepare_latents():
    noise = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    x0 = torch.ones_like(noise)
    assert prepare_latents(make_plan(AC, 10), noise) is noise
    plan = make_plan(AC, 10, strength=0.3)
    a = plan.init_alpha
    torch.testing.assert_close(prepare_latents(plan, noise, x0), math.sqrt(a) * x0 + math.sqrt(1 - a) * noise)
    with pytest.raises(ValueError, match="x0 is None"):
        prepare_latents(plan, noise)
    with pytest.raises(ValueError, match=r"x0 has shape \(1, 4, 3, 3\)"):
        prepare_latents(plan, noise, x0[:1])


def test_sampling_plan_validates_shapes():
    with pytest.raises(ValueError, match="must both have shape"):
        SamplingPlan(torch.tensor([5, 1]), torch.ones(2, dtype=torch.float64), torch.ones(3, dtype=torch.float64))


# -------------------------------------------------------------------------------------------------------- guidance


def test_cfg_scale_one_is_conditional_prediction():
    rec = Recorder(cond_dependent_eps)
    x = torch.randn(3, 4, 2, 2, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([999, 500, 3])
    cond = make_cond(3)
    expected = cond_dependent_eps(x, t, cond)
    for guidance in (ClassifierFreeGuidance(), ClassifierFreeGuidance(1.0, make_cond(3, seed=1))):
        rec.batches.clear()
        assert torch.equal(guidance(rec.den, x, t, cond), expected)
        assert rec.batches == [3]


def test_cfg_one_batched_call():
    rec = Recorder(cond_dependent_eps)
    x = torch.randn(3, 4, 2, 2, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([999, 500, 3])
    cond = make_cond(3)
    uncond = Conditioning(make_cond(3, seed=5).crossattn, cond.concat)  # same pose, other text (spec §1.6)
    eps = ClassifierFreeGuidance(7.5, uncond)(rec.den, x, t, cond)
    assert rec.batches == [6]
    e_u, e_c = cond_dependent_eps(x, t, uncond), cond_dependent_eps(x, t, cond)
    torch.testing.assert_close(eps, e_u + 7.5 * (e_c - e_u), rtol=1e-6, atol=1e-6)


def test_cfg_broadcasts_uncond_of_batch_one():
    rec = Recorder(cond_dependent_eps)
    x = torch.randn(2, 4, 2, 2, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([10, 10])
    cond = Conditioning(make_cond(2).crossattn)
    uncond = Conditioning(make_cond(1, seed=3).crossattn)
    eps = ClassifierFreeGuidance(3.0, uncond)(rec.den, x, t, cond)
    e_u, e_c = cond_dependent_eps(x, t, uncond.repeat(2)), cond_dependent_eps(x, t, cond)
    torch.testing.assert_close(eps, e_u + 3.0 * (e_c - e_u), rtol=1e-6, atol=1e-6)
    assert rec.batches == [4]


def test_cfg_errors():
    rec = Recorder(cond_dependent_eps)
    x = torch.zeros(3, 4, 2, 2)
    t = torch.full((3,), 5)
    with pytest.raises(ValueError, match=r"uncond has batch 2 but x and cond have batch 3"):
        ClassifierFreeGuidance(2.0, make_cond(2))(rec.den, x, t, make_cond(3))
    with pytest.raises(ValueError, match=r"cond has batch 2 but x has batch 3"):
        ClassifierFreeGuidance(2.0)(rec.den, x, t, make_cond(2))
    with pytest.raises(ValueError, match=r"t must have shape \(3,\)"):
        ClassifierFreeGuidance()(rec.den, x, t[:1], make_cond(3))
    with pytest.raises(ValueError, match="cond carries a concat .* but uncond does not"):
        ClassifierFreeGuidance(2.0, make_cond(3, pose=False))(rec.den, x, t, make_cond(3))
    assert rec.batches == []


def test_v_parameterization_converts_to_eps():
    x = torch.randn(3, 4, 2, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    t = torch.tensor([999, 400, 0])
    cond, uncond = make_cond(3), make_cond(3, seed=9)
    cond, uncond = cond.to(torch.float64), uncond.to(torch.float64)
    eps_den = FunctionDenoiser(cond_dependent_eps, AC)
    v_den = FunctionDenoiser(eps_to_v(cond_dependent_eps), AC, Parameterization.V)
    for guidance in (ClassifierFreeGuidance(), ClassifierFreeGuidance(4.0, uncond)):
        torch.testing.assert_close(guidance(v_den, x, t, cond), guidance(eps_den, x, t, cond), rtol=1e-9, atol=1e-9)
    plan = make_plan(AC, 10)
    torch.testing.assert_close(
        sample_dpmpp_2m(v_den, x, plan, cond=cond), sample_dpmpp_2m(eps_den, x, plan, cond=cond), rtol=1e-9, atol=1e-9
    )


# ------------------------------------------------------------------------------------------------------------ DDIM


def test_ddim_eta0_deterministic():
    den = FunctionDenoiser(cond_dependent_eps, AC)
    x = torch.randn(2, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    plan, cond = make_plan(AC, 10), make_cond(2)
    assert torch.equal(sample_ddim(den, x, plan, cond=cond), sample_ddim(den, x, plan, cond=cond))


def test_ddim_eta_uses_only_the_generator():
    den = FunctionDenoiser(cond_dependent_eps, AC)
    x = torch.randn(2, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    plan, cond = make_plan(AC, 10), make_cond(2)

    def run(seed):
        return sample_ddim(den, x, plan, cond=cond, eta=1.0, generator=torch.Generator().manual_seed(seed))

    state = torch.get_rng_state()
    first = run(1)
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    assert torch.equal(first, run(1))
    assert not torch.allclose(first, run(2))
    with pytest.raises(ValueError, match=r"eta=0.5 draws fresh noise .* pass generator="):
        sample_ddim(den, x, plan, cond=cond, eta=0.5)
    with pytest.raises(ValueError, match=r"eta must be in \[0, 1\].*got 1.5"):
        sample_ddim(den, x, plan, cond=cond, eta=1.5, generator=torch.Generator())


def reference_ddim_original(eps_fn, x, cond, steps, eta, generator):
    """Spec §5.3 steps 4-6 written out: uniform grid, t_enc = steps - 1 steps, a_prev[0] = alpha-bar_0."""
    grid = [g + 1 for g in range(0, 1000, 1000 // steps)]
    alphas = [AC64[g].item() for g in grid]
    alphas_prev = [AC64[0].item()] + alphas[:-1]
    t_enc = steps - 1
    for index in reversed(range(t_enc)):
        a_t, a_prev = alphas[index], alphas_prev[index]
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
        e_t = eps_fn(x, torch.full((x.shape[0],), grid[index]), cond)
        x0 = (x - math.sqrt(1 - a_t) * e_t) / math.sqrt(a_t)
        dir_xt = math.sqrt(1 - a_prev - sigma**2) * e_t
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        x = math.sqrt(a_prev) * x0 + dir_xt + sigma * z
    return x


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ddim_matches_spec_step_by_step(dtype):
    den = FunctionDenoiser(cond_dependent_eps, AC)
    x = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0), dtype=dtype)
    cond = make_cond(2).to(dtype)
    plan = make_plan(AC, 50, spacing=TimestepSpacing.ORIGINAL)
    out = sample_ddim(den, x, plan, cond=cond, eta=0.5, generator=torch.Generator().manual_seed(7))
    ref = reference_ddim_original(cond_dependent_eps, x, cond, 50, 0.5, torch.Generator().manual_seed(7))
    assert out.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)


# ---------------------------------------------------------------------------------------------- all three samplers


def gaussian_start(plan: SamplingPlan, n: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """A draw z and the exact marginal x_T = sqrt(a) MU + sqrt(a S^2 + 1 - a) z at the plan's first timestep.

    The probability-flow ODE keeps z fixed for Gaussian data, so its exact solution is MU + S z.
    """
    z = torch.randn(n, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = plan.alphas[0].item()
    return z, math.sqrt(a) * MU + math.sqrt(a * S**2 + 1 - a) * z


@pytest.mark.parametrize("name", list(SamplerName))
def test_samplers_recover_gaussian_from_noise(name):
    den = FunctionDenoiser(gaussian_eps, AC)
    plan = make_plan(AC, 50)
    noise = torch.randn(4096, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = get_sampler(name)(den, prepare_latents(plan, noise), plan, cond=Conditioning(torch.zeros(4096, 1, 1)))
    # Mean tolerance covers SD's non-zero terminal SNR (pure noise is not exactly the t = 999 marginal, ~ -0.06).
    assert abs(out.mean().item() - MU) < 0.1
    assert abs(out.std().item() - S) < 0.05


def test_higher_order_samplers_converge_faster():
    den = FunctionDenoiser(gaussian_eps, AC)
    cond = Conditioning(torch.zeros(4096, 1, 1))
    z, x = gaussian_start(make_plan(AC, 20))
    ref = sample_ddim(den, x, make_plan(AC, 200), cond=cond)
    plan = make_plan(AC, 20)
    err = {name: (get_sampler(name)(den, x, plan, cond=cond) - ref).abs().max().item() for name in SamplerName}
    assert err[SamplerName.DPMPP_2M] < 0.75 * err[SamplerName.DDIM]
    assert err[SamplerName.PLMS] < 0.75 * err[SamplerName.DDIM]

    # Against the exact ODE solution, before the (first-order, x0-prediction) final step.
    def penultimate_error(name, steps):
        plan = make_plan(AC, steps)
        seen = {}
        get_sampler(name)(den, x, plan, cond=cond, callback=lambda d: seen.setdefault(d["i"], d["x"]))
        a = plan.alphas_prev[-2].item()
        return (seen[steps - 2] - (math.sqrt(a) * MU + math.sqrt(a * S**2 + 1 - a) * z)).abs().max().item()

    ddim_err = penultimate_error(SamplerName.DDIM, 20)
    assert penultimate_error(SamplerName.DPMPP_2M, 20) < 0.1 * ddim_err
    assert penultimate_error(SamplerName.PLMS, 20) < 0.1 * ddim_err


@pytest.mark.parametrize("name", list(SamplerName))
def test_callback_once_per_step(name):
    den = FunctionDenoiser(cond_dependent_eps, AC)
    x = torch.randn(2, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    plan = make_plan(AC, 7)
    calls = []
    out = get_sampler(name)(den, x, plan, cond=make_cond(2), callback=calls.append)
    assert [c["i"] for c in calls] == list(range(7))
    assert [c["t"] for c in calls] == plan.timesteps.tolist()
    assert all(set(c) == {"i", "t", "x", "x0_pred", "total"} and c["total"] == 7 for c in calls)
    assert calls[-1]["x"] is out
    assert calls[-1]["x0_pred"].shape == x.shape


def test_network_calls_per_sampler():
    for fn, expected in ((sample_ddim, [4] * 5), (sample_plms, [4] * 6), (sample_dpmpp_2m, [4] * 5)):
        rec = Recorder(cond_dependent_eps)
        cond = make_cond(2)
        uncond = Conditioning(make_cond(2, seed=4).crossattn, cond.concat)
        x = torch.randn(2, 4, 2, 2, generator=torch.Generator().manual_seed(0))
        fn(rec.den, x, make_plan(AC, 5), cond=cond, guidance=ClassifierFreeGuidance(5.0, uncond))
        assert rec.batches == expected, fn.__name__


def test_single_step_plans_land_on_x0_prediction():
    den = FunctionDenoiser(gaussian_eps, AC)
    plan = make_plan(AC, 1)
    x = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cond = Conditioning(torch.zeros(3, 1, 1))
    a = plan.alphas[0].item()
    x0 = (x - math.sqrt(1 - a) * gaussian_eps(x, plan.timesteps.expand(3), cond)) / math.sqrt(a)
    for name in SamplerName:
        torch.testing.assert_close(get_sampler(name)(den, x, plan, cond=cond), x0, rtol=1e-12, atol=1e-12)


# -------------------------------------------------------------------------------------------------------- registry


def test_registry():
    assert isinstance(FunctionDenoiser(gaussian_eps, AC), Denoiser)
    assert SAMPLERS[SamplerName.DDIM] is sample_ddim
    assert get_sampler("plms") is sample_plms
    assert get_sampler(SamplerName.DPMPP_2M) is sample_dpmpp_2m
    with pytest.raises(ValueError) as info:
        get_sampler("xyz")
    assert str(info.value) == "Unknown sampler 'xyz'; choose one of: ddim, plms, dpmpp_2m"


def test_registry_eta():
    den = FunctionDenoiser(cond_dependent_eps, AC)
    x = torch.randn(2, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    plan, cond = make_plan(AC, 5), make_cond(2)
    sampler = get_sampler("ddim", eta=0.3)
    out = sampler(den, x, plan, cond=cond, generator=torch.Generator().manual_seed(1))
    ref = sample_ddim(den, x, plan, cond=cond, eta=0.3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, ref)
    with pytest.raises(ValueError, match=r"Sampler 'plms' is deterministic and does not support eta=0.5"):
        get_sampler("plms", eta=0.5)
    with pytest.raises(ValueError, match=r"Sampler 'dpmpp_2m' is deterministic"):
        get_sampler("dpmpp_2m", eta=1.0)
