"""Network modules: shapes, determinism, and numerical equivalence with independent implementations.

The reference for the UNet and the VAE is `diffusers` (UNet2DConditionModel / AutoencoderKL) loaded with *our*
weights through diffusers' own LDM conversion utilities; diffusers reproduces the original SD-2 code, which cannot
be run here. The text encoder is checked against open_clip's own TextTransformer forward.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from ldm.config import load_config
from ldm.inference.loading import build_model
from ldm.models.text_encoder import OpenCLIPTextEncoder
from ldm.models.unet import UNetModel, timestep_embedding

TOL = 1e-5


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Perturb every parameter so zero-initialised layers do not hide differences."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.fixture(scope="module")
def tiny_humansd():
    torch.manual_seed(0)
    model = build_model(load_config("configs/tiny/humansd-tiny.yaml")).eval()
    _randomise(model)
    return model


@pytest.fixture(scope="module")
def diffusers_pair(tiny_humansd):
    pytest.importorskip("diffusers")
    from ldm.interop.diffusers import to_diffusers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return to_diffusers(tiny_humansd)


def test_timestep_embedding_is_cos_first():
    emb = timestep_embedding(torch.tensor([0, 7]), 8)
    assert emb.shape == (2, 8)
    assert torch.equal(emb[0, :4], torch.ones(4)) and torch.equal(emb[0, 4:], torch.zeros(4))
    assert torch.allclose(emb[1, 0], torch.cos(torch.tensor(7.0)))


def test_unet_matches_diffusers(tiny_humansd, diffusers_pair):
    unet, _ = diffusers_pair
    g = torch.Generator().manual_seed(1)
    x, ctx = torch.randn(2, 8, 16, 24, generator=g), torch.randn(2, 77, 32, generator=g)
    t = torch.tensor([3, 901])
    with torch.no_grad():
        ours = tiny_humansd.unet(x, t, ctx)
        ref = unet(x, t, encoder_hidden_states=ctx).sample
    assert ours.shape == (2, 4, 16, 24)
    assert (ours - ref).abs().max().item() <= TOL


def test_vae_matches_diffusers(tiny_humansd, diffusers_pair):
    _, vae = diffusers_pair
    g = torch.Generator().manual_seed(2)
    images, z = torch.rand(2, 3, 64, 48, generator=g) * 2 - 1, torch.randn(2, 4, 8, 6, generator=g)
    with torch.no_grad():
        post, ref_post = tiny_humansd.vae.encode(images), vae.encode(images).latent_dist
        assert (post.mean - ref_post.mean).abs().max().item() <= TOL
        assert (post.std - ref_post.std).abs().max().item() <= TOL
        assert (tiny_humansd.vae.decode(z) - vae.decode(z).sample).abs().max().item() <= TOL


def test_sd1_style_unet_matches_diffusers():
    """num_heads + conv proj_in/out + context 768 (the SD-1.x layout used by the comparison models)."""
    pytest.importorskip("diffusers")
    from diffusers import UNet2DConditionModel
    from diffusers.loaders import single_file_utils as sfu

    torch.manual_seed(0)
    unet = UNetModel(
        in_channels=4,
        model_channels=32,
        attention_resolutions=[1, 2],
        num_res_blocks=1,
        channel_mult=[1, 2],
        num_heads=2,
        context_dim=24,
    ).eval()
    _randomise(unet)
    ckpt = {f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()}
    cfg = {
        "model": {
            "params": {
                "unet_config": {"params": unet.config},
                "first_stage_config": {"params": {"ddconfig": {"ch_mult": [1, 2, 4, 4]}}},
            }
        }
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcfg = sfu.create_unet_diffusers_config_from_ldm(cfg, ckpt)
        ref = UNet2DConditionModel(**dcfg).eval()
    ref.load_state_dict(sfu.convert_ldm_unet_checkpoint(ckpt, dcfg), strict=True)
    x, ctx, t = torch.randn(1, 4, 8, 8), torch.randn(1, 77, 24), torch.tensor([500])
    with torch.no_grad():
        assert (unet(x, t, ctx) - ref(x, t, encoder_hidden_states=ctx).sample).abs().max().item() <= TOL


def test_text_encoder_matches_open_clip_forward():
    torch.manual_seed(0)
    enc = OpenCLIPTextEncoder(arch="tiny")
    prompts = ["a watercolor of a dancer", ""]
    ref = copy.deepcopy(enc.model)
    ref.transformer.resblocks = ref.transformer.resblocks[:-1]  # penultimate layer, then ln_final
    ref.output_tokens = True
    with torch.no_grad():
        _, tokens = ref(enc.tokenize(prompts))
        ours = enc(prompts)
    assert ours.shape == (2, 77, 32)
    assert (ours - tokens).abs().max().item() <= TOL


def test_text_encoder_frozen_and_truncates_with_warning():
    enc = OpenCLIPTextEncoder(arch="tiny")
    enc.train()
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    with pytest.warns(UserWarning, match="truncated to 77"):
        out = enc("word " * 120)
    assert out.shape == (1, 77, 32)
    with pytest.raises(ValueError, match="Unknown text tower arch"):
        OpenCLIPTextEncoder(arch="ViT-Z")


def test_unet_is_seeded_deterministic_and_checks_inputs(tiny_humansd):
    x, ctx, t = torch.randn(1, 8, 8, 8), torch.randn(1, 77, 32), torch.tensor([10])
    with torch.no_grad():
        assert torch.equal(tiny_humansd.unet(x, t, ctx), tiny_humansd.unet(x, t, ctx))
    with pytest.raises(ValueError, match="expects 8 input channels"):
        tiny_humansd.unet(torch.randn(1, 4, 8, 8), t, ctx)
    with pytest.raises(ValueError, match="must be a multiple of 2"):
        tiny_humansd.unet(torch.randn(1, 8, 9, 8), t, ctx)


def test_gradient_checkpointing_gives_identical_gradients():
    torch.manual_seed(0)
    kwargs = dict(
        in_channels=4,
        model_channels=32,
        attention_resolutions=[2],
        num_res_blocks=1,
        channel_mult=[1, 2],
        num_head_channels=16,
        use_linear_in_transformer=True,
        context_dim=16,
    )
    plain = UNetModel(**kwargs)
    _randomise(plain)
    ckpt = UNetModel(**kwargs, use_checkpoint=True)
    ckpt.load_state_dict(plain.state_dict())
    x, ctx, t = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 16), torch.tensor([1, 2])
    grads = []
    for model in (plain, ckpt):
        model.train()
        model(x, t, ctx).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_unet_rejects_unsupported_original_options():
    with pytest.raises(ValueError, match="use_scale_shift_norm=True is not supported"):
        UNetModel(num_heads=8, use_scale_shift_norm=True)
    with pytest.raises(ValueError, match="set either num_heads"):
        UNetModel()


def test_pose_concat_goes_to_channels_4_to_7(tiny_humansd):
    """Changing the pose latent changes the output; the UNet sees [x_t, pose] in that order."""
    from ldm.conditioning import Conditioning

    x, t, ctx = torch.randn(1, 4, 8, 8), torch.tensor([100]), torch.randn(1, 77, 32)
    pose = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        out = tiny_humansd.apply_model(x, t, Conditioning(ctx, pose))
        direct = tiny_humansd.unet(torch.cat([x, pose], 1), t, ctx)
        other = tiny_humansd.apply_model(x, t, Conditioning(ctx, torch.zeros_like(pose)))
    assert torch.equal(out, direct)
    assert not torch.allclose(out, other)
    with pytest.raises(ValueError, match="needs the pose latent"):
        tiny_humansd.apply_model(x, t, Conditioning(ctx))
