"""Comparison models (ControlNet v1.1 / T2I-Adapter v1 on SD-1.5): layouts, wiring, loading, errors, pipelines.

References used as independent implementations:
* the injection points are checked against hand-written forwards that follow the original code line by line
  (`ControlNet.forward` / `ControlledUnetModel.forward` of ControlNet-v1-1-nightly, `Adapter.forward` /
  `UNetModel.forward` of T2I-Adapter), using only our blocks' sub-modules;
* the CLIP text model against transformers' own `CLIPTextModel` and open_clip's `TextTransformer`, the tokenizer
  against transformers' `CLIPTokenizer` built from the same BPE files;
* the tiny SD-1.x UNet + CLIP path against diffusers, converted with `diffusers.loaders.single_file_utils`.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from comparison_models.checkpoints import CheckpointKind, detect_kind
from comparison_models.clip_text import CLIPTextEncoder, clip_text_config
from comparison_models.controlnet import ControlNet, control_scales
from comparison_models.denoisers import ControlNetDenoiser, T2IAdapterDenoiser
from comparison_models.pipelines import (
    ControlNetPipeline,
    T2IAdapterPipeline,
    build_comparison_models,
    comparison_slot,
    load_comparison_config,
)
from comparison_models.t2i_adapter import Adapter, adapter_block_indices
from ldm.checkpoint import compare_keys, drop_extras
from ldm.conditioning import Conditioning
from ldm.config import load_config
from ldm.inference.loading import build_model
from ldm.models.unet import timestep_embedding
from ldm.pose.render import draw_openpose_skeleton
from ldm.samplers import ClassifierFreeGuidance, make_plan

TOL = 1e-5
CONTROLNET_TINY = "configs/tiny/controlnet-tiny.yaml"
ADAPTER_TINY = "configs/tiny/t2iadapter-tiny.yaml"


def _randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Perturb every parameter so zero-initialised layers (zero convs, out convs) do not hide anything."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return module.eval()


def _meta_state(manifest: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(shape, device="meta") for k, shape in manifest.items()}


@pytest.fixture(scope="module")
def tiny():
    """(SD-1.x model, ControlNet, Adapter), tiny, all weights random and non-zero."""
    torch.manual_seed(0)
    model, controlnet = build_comparison_models(load_comparison_config(CONTROLNET_TINY))
    _, adapter = build_comparison_models(load_comparison_config(ADAPTER_TINY))
    return _randomise(model, 1), _randomise(controlnet, 2), _randomise(adapter, 3)


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, 8, 8, generator=g)
    hint = torch.rand(1, 3, 64, 64, generator=g)
    ctx = torch.randn(2, 77, 32, generator=g)
    return x, torch.tensor([17, 640]), ctx, hint


# ---------------------------------------------------------------------------------------------- layouts
def test_meta_builds_match_the_three_manifests(manifest):
    with torch.device("meta"):
        model, controlnet = build_comparison_models(
            load_comparison_config("configs/comparison/controlnet-v11-openpose-sd15.yaml")
        )
        _, adapter = build_comparison_models(load_comparison_config("configs/comparison/t2iadapter-openpose-sd14.yaml"))
    sd15 = _meta_state(manifest("sd15-base"))
    assert {"model_ema.decay", "model_ema.num_updates"} <= set(sd15)
    report = compare_keys(model.state_dict(), drop_extras(sd15))
    assert report.ok, report.describe(20)
    cn_state = {f"control_model.{k}": v for k, v in controlnet.state_dict().items()}
    expected = manifest("controlnet-v11-openpose-sd15")
    assert compare_keys(cn_state, _meta_state(expected)).ok
    assert list(cn_state) == list(expected)  # same order as the reference module, too
    assert list(adapter.state_dict()) == list(manifest("t2iadapter-openpose-sd14v1"))
    assert compare_keys(adapter.state_dict(), _meta_state(manifest("t2iadapter-openpose-sd14v1"))).ok
    assert sum(p.numel() for p in controlnet.parameters()) == 361_279_120
    assert sum(p.numel() for p in adapter.parameters()) == 77_369_280
    position_ids = model.state_dict()["cond_stage_model.transformer.text_model.embeddings.position_ids"]
    assert position_ids.shape == (1, 77) and position_ids.dtype == torch.int64
    # The ControlNet encoder is the UNet encoder, key for key.
    unet = {
        k: v.shape for k, v in model.unet.state_dict().items() if k.startswith(("time_embed", "input_blocks", "middle"))
    }
    ours = {
        k: v.shape
        for k, v in controlnet.state_dict().items()
        if k.startswith(("time_embed", "input_blocks", "middle_block."))
    }
    assert ours == unet
    strides = [m.stride[0] for m in controlnet.input_hint_block if isinstance(m, torch.nn.Conv2d)]
    assert strides == [1, 1, 2, 1, 2, 1, 2, 1]
    assert [i for i, m in enumerate(controlnet.input_hint_block) if getattr(m, "stride", (1,))[0] == 2] == [4, 8, 12]


def test_adapter_injection_indices():
    assert adapter_block_indices(2, 4) == [2, 5, 8, 11]
    assert adapter_block_indices(2, 2) == [2, 5]
    assert [i for i in range(12) if (i + 1) % 3 == 0] == adapter_block_indices(2, 4)  # the original's rule


# ---------------------------------------------------------------------------------------------- references
def _reference_controlnet(cn: ControlNet, x, hint, t, ctx) -> list[torch.Tensor]:
    """`ControlNet.forward` of cldm/cldm.py, statement for statement."""
    emb = cn.time_embed(timestep_embedding(t, cn.model_channels))
    guided_hint = cn.input_hint_block(hint)
    outs = []
    h = x
    for module, zero_conv in zip(cn.input_blocks, cn.zero_convs):
        if guided_hint is not None:
            h = module(h, emb, ctx)
            h += guided_hint
            guided_hint = None
        else:
            h = module(h, emb, ctx)
        outs.append(zero_conv(h))
    h = cn.middle_block(h, emb, ctx)
    outs.append(cn.middle_block_out(h))
    return outs


def _reference_unet(unet, x, t, ctx, *, control=None, features_adapter=None) -> torch.Tensor:
    """`ControlledUnetModel.forward` (control) and T2I-Adapter's `UNetModel.forward` (features), merged."""
    emb = unet.time_embed(timestep_embedding(t, unet.model_channels))
    hs = []
    h = x
    adapter_idx = 0
    for i, module in enumerate(unet.input_blocks):
        h = module(h, emb, ctx)
        if features_adapter is not None and (i + 1) % 3 == 0:
            h = h + features_adapter[adapter_idx]
            adapter_idx += 1
        hs.append(h)
    h = unet.middle_block(h, emb, ctx)
    control = list(control) if control is not None else None
    if control is not None:
        h += control.pop()
    for module in unet.output_blocks:
        skip = hs.pop() if control is None else hs.pop() + control.pop()
        h = module(torch.cat([h, skip], dim=1), emb, ctx)
    return unet.out(h)


def _reference_adapter(adapter: Adapter, hint) -> list[torch.Tensor]:
    """`Adapter.forward` / `ResnetBlock.forward` of T2I-Adapter (sk=True, use_conv=False)."""
    x = adapter.conv_in(torch.nn.functional.pixel_unshuffle(hint, 8))
    features = []
    for i in range(len(adapter.channels)):
        for j in range(adapter.nums_rb):
            block = adapter.body[i * adapter.nums_rb + j]
            if i != 0 and j == 0:
                x = torch.nn.functional.avg_pool2d(x, 2, 2)
            if block.in_conv is not None:
                x = block.in_conv(x)
            x = block.block2(torch.relu(block.block1(x))) + x
        features.append(x)
    return features


@torch.no_grad()
def test_controlnet_injection_equals_reference(tiny, inputs):
    model, controlnet, _ = tiny
    x, t, ctx, hint = inputs
    scales = [0.5 + 0.1 * i for i in range(controlnet.num_outputs)]  # distinct, so a misplaced residual shows
    ours = ControlNetDenoiser(model, controlnet, hint, scales).apply_model(x, t, Conditioning(ctx))
    outs = _reference_controlnet(controlnet, x, hint, t, ctx)
    assert len(outs) == 7 and outs[-1].abs().max() > 0
    ref = _reference_unet(model.unet, x, t, ctx, control=[o * s for o, s in zip(outs, scales)])
    assert (ours - ref).abs().max().item() <= TOL
    assert (ours - model.apply_model(x, t, Conditioning(ctx))).abs().max().item() > 1e-3  # the control acts


@torch.no_grad()
def test_zero_control_equals_plain_unet(tiny, inputs):
    model, controlnet, adapter = tiny
    x, t, ctx, hint = inputs
    plain = model.apply_model(x, t, Conditioning(ctx))
    fresh = ControlNet(**dict(load_comparison_config(CONTROLNET_TINY).control_model.params)).eval()  # zero convs
    assert torch.equal(ControlNetDenoiser(model, fresh, hint).apply_model(x, t, Conditioning(ctx)), plain)
    zero_scales = control_scales(0.0, num_outputs=controlnet.num_outputs)
    assert torch.equal(
        ControlNetDenoiser(model, controlnet, hint, zero_scales).apply_model(x, t, Conditioning(ctx)), plain
    )
    no_features = T2IAdapterDenoiser(model, adapter, hint, cond_weight=0.0)
    assert torch.equal(no_features.apply_model(x, t, Conditioning(ctx)), plain)


@torch.no_grad()
def test_adapter_injection_equals_reference(tiny, inputs):
    model, _, adapter = tiny
    x, t, ctx, hint = inputs
    features = _reference_adapter(adapter, hint)
    assert [tuple(f.shape) for f in features] == [(1, 32, 8, 8), (1, 64, 4, 4)]
    for ours_f, ref_f in zip(adapter(hint), features):
        assert (ours_f - ref_f).abs().max().item() <= TOL
    den = T2IAdapterDenoiser(model, adapter, hint, cond_weight=0.8)
    ours = den.apply_model(x, t, Conditioning(ctx))
    ref = _reference_unet(model.unet, x, t, ctx, features_adapter=[0.8 * f for f in features])
    assert (ours - ref).abs().max().item() <= TOL
    assert (ours - model.apply_model(x, t, Conditioning(ctx))).abs().max().item() > 1e-3


@torch.no_grad()
def test_control_reaches_both_cfg_branches(tiny, inputs):
    model, controlnet, adapter = tiny
    x, t, ctx, hint = inputs
    cond, uncond = Conditioning(ctx), Conditioning(torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(5)))
    cfg = ClassifierFreeGuidance(7.5, uncond)
    for den in (ControlNetDenoiser(model, controlnet, hint), T2IAdapterDenoiser(model, adapter, hint)):
        eps_u = den.apply_model(x, t, uncond.repeat(2))  # control on the unconditional branch too
        eps_c = den.apply_model(x, t, cond)
        assert (cfg(den, x, t, cond) - (eps_u + 7.5 * (eps_c - eps_u))).abs().max().item() <= 1e-4
    with pytest.raises(ValueError, match="hint has batch 2, which does not divide the network batch 3"):
        ControlNetDenoiser(model, controlnet, hint.repeat(2, 1, 1, 1)).apply_model(
            x[:1].repeat(3, 1, 1, 1), t[:1].repeat(3), Conditioning(ctx[:1].repeat(3, 1, 1))
        )


def test_cond_tau_follows_the_original_ddim_index(tiny, inputs):
    model, _, adapter = tiny
    hint = inputs[3]
    plan = make_plan(model.alphas_cumprod, 10)
    den = T2IAdapterDenoiser(model, adapter, hint, cond_tau=0.5, plan=plan)
    active = [den.features_active(torch.tensor([int(t)])) for t in plan.timesteps]
    # index = 10 - 1 - i >= int((1 - 0.5) * 10) = 5  <=>  i <= 4: the first (noisiest) half of the steps.
    assert active == [True] * 5 + [False] * 5
    with pytest.raises(ValueError, match="needs the sampling plan"):
        T2IAdapterDenoiser(model, adapter, hint, cond_tau=0.5)
    with pytest.raises(ValueError, match="Timestep 3 is not in the sampling plan"):
        den.features_active(torch.tensor([3]))
    assert (
        T2IAdapterDenoiser(model, adapter, hint, cond_tau=0.0, plan=plan).control(inputs[0], plan.timesteps[:1]) is None
    )


# ---------------------------------------------------------------------------------------------- CLIP text
def test_clip_text_encoder_layout_and_freezing():
    enc = CLIPTextEncoder(arch="tiny")
    state = enc.state_dict()
    assert all(k.startswith("transformer.text_model.") for k in state)
    assert len(state) == 2 + 16 * 2 + 2 + 1
    assert torch.equal(state["transformer.text_model.embeddings.position_ids"], torch.arange(77)[None])
    assert not any(p.requires_grad for p in enc.parameters())
    assert not enc.train().training
    with pytest.raises(ValueError, match="Unknown CLIP text arch"):
        CLIPTextEncoder(arch="ViT-H-14")


def test_clip_position_ids_drift_is_repaired(caplog):
    enc = CLIPTextEncoder(arch="tiny")
    state = enc.state_dict()
    state["transformer.text_model.embeddings.position_ids"] = torch.arange(77.0)[None] - 1e-4  # a drifted float copy
    with caplog.at_level(logging.WARNING):
        enc.load_state_dict(state, strict=True)
    assert "position_ids" in caplog.text
    assert torch.equal(enc.transformer.text_model.embeddings.position_ids, torch.arange(77)[None])


@torch.no_grad()
def test_clip_text_matches_transformers_and_open_clip():
    from open_clip.model import CLIPTextCfg, _build_text_tower
    from transformers import CLIPTextModel

    enc = _randomise(CLIPTextEncoder(arch="tiny"), 6)
    tokens = enc.tokenize(["a watercolor of a dancer", ""])
    ours = enc.encode_tokens(tokens)
    assert ours.shape == (2, 77, 32)
    strip = "transformer.text_model."
    weights = {k[len(strip) :]: v for k, v in enc.state_dict().items() if not k.endswith("position_ids")}
    hf = CLIPTextModel(clip_text_config("tiny")).eval()
    hf.load_state_dict(weights, strict=True)
    assert (ours - hf(input_ids=tokens).last_hidden_state).abs().max().item() <= TOL
    # open_clip's TextTransformer: an independent implementation of the same network.
    oc = _build_text_tower(
        32,
        CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=2, mlp_ratio=2.0),
        quick_gelu=True,
    )
    mapped = {
        "token_embedding.weight": weights["embeddings.token_embedding.weight"],
        "positional_embedding": weights["embeddings.position_embedding.weight"],
        "ln_final.weight": weights["final_layer_norm.weight"],
        "ln_final.bias": weights["final_layer_norm.bias"],
    }
    for i in range(2):
        src, dst = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for part in ("weight", "bias"):
            qkv = [weights[f"{src}self_attn.{p}_proj.{part}"] for p in "qkv"]
            mapped[f"{dst}attn.in_proj_{part}"] = torch.cat(qkv)
            for a, b in (
                ("attn.out_proj", "self_attn.out_proj"),
                ("ln_1", "layer_norm1"),
                ("ln_2", "layer_norm2"),
                ("mlp.c_fc", "mlp.fc1"),
                ("mlp.c_proj", "mlp.fc2"),
            ):
                mapped[f"{dst}{a}.{part}"] = weights[f"{src}{b}.{part}"]
    missing, unexpected = oc.load_state_dict(mapped, strict=False)
    assert set(missing) <= {"text_projection", "logit_scale"} and not unexpected
    oc.output_tokens = True
    assert (ours - oc.eval()(tokens)[1]).abs().max().item() <= TOL


def test_clip_tokenizer_matches_transformers_clip_tokenizer(tmp_path):
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    bpe = SimpleTokenizer()
    vocab = dict(bpe.encoder)
    vocab["<|startoftext|>"] = vocab.pop("<start_of_text>")
    vocab["<|endoftext|>"] = vocab.pop("<end_of_text>")
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    merges = sorted(bpe.bpe_ranks, key=bpe.bpe_ranks.get)
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    hf = CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    assert hf.vocab_size == 49408  # the offline from_pretrained trap gives 2
    prompts = ["A Watercolor of a dancer, best quality!", "", "sketch " * 90]
    ref = hf(prompts, truncation=True, max_length=77, padding="max_length", return_tensors="pt")["input_ids"]
    enc = CLIPTextEncoder(arch="tiny")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = enc.tokenize(prompts)
    assert torch.equal(ours, ref)
    assert ours[1, :3].tolist() == [49406, 49407, 49407]  # end-token padding, as SD-1.x's tokenizer
    assert len(caught) == 1 and "truncated to 77" in str(caught[0].message)


@torch.no_grad()
def test_tiny_sd1_unet_and_clip_path_match_diffusers(tiny):
    pytest.importorskip("diffusers")
    from diffusers.loaders import single_file_utils as sfu
    from transformers import CLIPTextModel

    from ldm.interop.diffusers import to_diffusers

    model = tiny[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        unet, _ = to_diffusers(model)
    ckpt = {k: v for k, v in model.state_dict().items() if k.startswith("cond_stage_model.")}
    text = {k.removeprefix("text_model."): v for k, v in sfu.convert_ldm_clip_checkpoint(ckpt).items()}
    text.pop("embeddings.position_ids")
    clip = CLIPTextModel(clip_text_config("tiny")).eval()
    clip.load_state_dict(text, strict=True)
    prompts = ["a person dancing", "a man running"]
    x, t = torch.randn(2, 4, 8, 16, generator=torch.Generator().manual_seed(7)), torch.tensor([5, 999])
    ours = model.apply_model(x, t, Conditioning(model.encode_text(prompts)))
    ref_ctx = clip(input_ids=model.text_encoder.tokenize(prompts)).last_hidden_state
    ref = unet(x, t, encoder_hidden_states=ref_ctx).sample
    assert (ours - ref).abs().max().item() <= TOL


# ---------------------------------------------------------------------------------------------- files and errors
@pytest.fixture(scope="module")
def files(tiny, tmp_path_factory):
    """The tiny models saved in the released layouts (and variants)."""
    model, controlnet, adapter = tiny
    d = tmp_path_factory.mktemp("ckpt")
    base = {k: v.contiguous() for k, v in model.state_dict().items()}
    base.update({"model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(7, dtype=torch.int32)})
    torch.save({"state_dict": base, "global_step": 1}, d / "v1-5-pruned.ckpt")
    cn = {f"control_model.{k}": v.contiguous() for k, v in controlnet.state_dict().items()}
    save_file(cn, d / "control_v11p_sd15_openpose.safetensors")
    torch.save({k.removeprefix("control_model."): v for k, v in cn.items()}, d / "controlnet-unprefixed.pth")
    torch.save({"state_dict": {**base, **cn}}, d / "control_sd15_openpose.pth")  # ControlNet 1.0: full ControlLDM
    ad = {k: v.contiguous() for k, v in adapter.state_dict().items()}
    torch.save(ad, d / "t2iadapter_openpose_sd14v1.pth")
    torch.save({f"adapter.{k}": v for k, v in ad.items()}, d / "adapter-prefixed.pth")
    sd2 = build_model(load_config("configs/tiny/sd-tiny.yaml")).state_dict()  # OpenCLIP text encoder
    save_file({k: v.contiguous() for k, v in sd2.items()}, d / "v2-1_512-ema-pruned.safetensors")
    return d


@pytest.mark.parametrize(
    "name", ["control_v11p_sd15_openpose.safetensors", "controlnet-unprefixed.pth", "control_sd15_openpose.pth"]
)
def test_controlnet_files_load_strictly(tiny, files, name):
    pipe = ControlNetPipeline.from_files(files / "v1-5-pruned.ckpt", files / name, config=CONTROLNET_TINY)
    for k, v in tiny[1].state_dict().items():
        assert torch.equal(pipe.control_model.state_dict()[k], v), k
    assert torch.equal(pipe.model.state_dict()["model.diffusion_model.out.2.weight"], tiny[0].unet.out[2].weight)


@pytest.mark.parametrize("name", ["t2iadapter_openpose_sd14v1.pth", "adapter-prefixed.pth"])
def test_adapter_files_load_strictly(tiny, files, name):
    pipe = T2IAdapterPipeline.from_files(files / "v1-5-pruned.ckpt", files / name, config=ADAPTER_TINY)
    assert all(torch.equal(pipe.control_model.state_dict()[k], v) for k, v in tiny[2].state_dict().items())


def _one_line_error(exc_type, fn, *args, **kwargs) -> str:
    with pytest.raises(exc_type) as err:
        fn(*args, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_wrong_files_are_refused_with_one_clear_line(files):
    base = files / "v1-5-pruned.ckpt"
    msg = _one_line_error(
        ValueError,
        ControlNetPipeline.from_files,
        base,
        files / "t2iadapter_openpose_sd14v1.pth",
        config=CONTROLNET_TINY,
    )
    assert (
        "is a T2I-Adapter checkpoint, but a ControlNet checkpoint was expected here; use it with T2IAdapterPipeline"
        in msg
    )
    msg = _one_line_error(
        ValueError,
        T2IAdapterPipeline.from_files,
        base,
        files / "control_v11p_sd15_openpose.safetensors",
        config=ADAPTER_TINY,
    )
    assert (
        "is a ControlNet checkpoint, but a T2I-Adapter checkpoint was expected here; use it with ControlNetPipeline"
        in msg
    )
    msg = _one_line_error(
        ValueError,
        ControlNetPipeline.from_files,
        files / "v2-1_512-ema-pruned.safetensors",
        files / "controlnet-unprefixed.pth",
        config=CONTROLNET_TINY,
    )
    assert "is a Stable Diffusion 2.x checkpoint (OpenCLIP text encoder, context width 1024" in msg
    assert "need an SD-1.x base such as v1-5-pruned.ckpt" in msg
    msg = _one_line_error(
        ValueError,
        T2IAdapterPipeline.from_files,
        files / "t2iadapter_openpose_sd14v1.pth",
        files / "adapter-prefixed.pth",
        config=ADAPTER_TINY,
    )
    assert "is a T2I-Adapter checkpoint, but a Stable Diffusion 1.x checkpoint was expected" in msg
    msg = _one_line_error(ValueError, ControlNetPipeline.from_files, base, base, config=CONTROLNET_TINY)
    assert (
        "is a Stable Diffusion 1.x checkpoint, but a ControlNet checkpoint was expected here; pass it as the base"
        in msg
    )


def test_missing_files_say_where_to_get_them(files, tmp_path):
    msg = _one_line_error(
        FileNotFoundError,
        ControlNetPipeline.from_files,
        tmp_path / "v1-5-pruned.ckpt",
        files / "controlnet-unprefixed.pth",
        config=CONTROLNET_TINY,
    )
    assert "v1-5-pruned.ckpt" in msg and "runwayml/stable-diffusion-v1-5" in msg
    msg = _one_line_error(
        FileNotFoundError,
        T2IAdapterPipeline.from_files,
        files / "v1-5-pruned.ckpt",
        tmp_path / "t2iadapter_openpose_sd14v1.pth",
        config=ADAPTER_TINY,
    )
    assert "TencentARC/T2I-Adapter" in msg


def test_sd2_detected_by_context_width_alone():
    state = {"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": torch.empty(320, 1024)}
    assert detect_kind(state) is CheckpointKind.SD2
    state["model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"] = torch.empty(320, 768)
    assert detect_kind(state) is CheckpointKind.SD1


def test_base_model_without_position_ids_loads(files, tmp_path):
    """Files re-saved by newer tools lack the text model's position_ids: tolerated."""
    state = torch.load(files / "v1-5-pruned.ckpt", weights_only=True)["state_dict"]
    state.pop("cond_stage_model.transformer.text_model.embeddings.position_ids")
    torch.save(state, tmp_path / "sd15-no-position-ids.ckpt")
    ControlNetPipeline.from_files(
        tmp_path / "sd15-no-position-ids.ckpt", files / "controlnet-unprefixed.pth", config=CONTROLNET_TINY
    )


# ---------------------------------------------------------------------------------------------- pipelines
# One person, COCO-17 (x, y) on a 64x64 canvas, every joint visible.
_XY = [(32, 10), (34, 8), (30, 8), (36, 9), (28, 9), (40, 18), (24, 18), (44, 28), (20, 28), (46, 38), (18, 38)]
_XY += [(38, 38), (26, 38), (40, 48), (24, 48), (41, 58), (23, 58)]
POSE = np.array([[(x, y, 1.0) for x, y in _XY]], dtype=np.float32)  # (1, 17, 3)


@pytest.mark.parametrize(
    "cls, config, name",
    [
        (ControlNetPipeline, CONTROLNET_TINY, "control_v11p_sd15_openpose.safetensors"),
        (T2IAdapterPipeline, ADAPTER_TINY, "t2iadapter_openpose_sd14v1.pth"),
    ],
)
def test_pipelines_generate_with_the_openpose_control(files, cls, config, name):
    pipe = cls.from_files(files / "v1-5-pruned.ckpt", files / name, config=config)
    hints, steps = [], []
    make = pipe.controlled_denoiser
    pipe.controlled_denoiser = lambda hint, plan: hints.append(hint) or make(hint, plan)
    kwargs = {"num_inference_steps": 2, "seed": 3, "guidance_scale": 5.0, "negative_prompt": "blurry"}
    out = pipe("a dancer", POSE, callback=lambda info: steps.append((info["i"], info["total"])), **kwargs)
    assert pipe.default_size == (64, 64) and out.images[0].size == (64, 64) and steps == [(0, 2), (1, 2)]
    canvas = draw_openpose_skeleton(POSE, 64, 64, as_float=True)
    assert np.array_equal(np.asarray(out.pose_map), canvas.astype(np.uint8))
    assert torch.allclose(hints[0], torch.from_numpy(canvas / 255.0).permute(2, 0, 1)[None].float())
    assert out.parameters["model"] == cls.control_name and out.parameters["seed"] == 3
    again = pipe("a dancer", POSE, **kwargs)
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(out.images[0]))
    no_pose = pipe("a dancer", None, **kwargs)
    assert not np.array_equal(np.asarray(no_pose.images[0]), np.asarray(out.images[0]))  # the control matters
    assert np.asarray(no_pose.pose_map).max() == 0


def test_t2i_cond_tau_with_other_samplers_and_random_weights():
    pipe = T2IAdapterPipeline.from_config(ADAPTER_TINY, allow_random=True)
    pipe.cond_tau = 0.5
    for sampler in ("plms", "dpmpp_2m"):
        out = pipe("a dancer", POSE, num_inference_steps=3, seed=1, sampler=sampler, num_images=2)
        assert len(out.images) == 2 and out.parameters["cond_tau"] == 0.5
    with pytest.raises(ValueError, match="names no base_checkpoint"):
        ControlNetPipeline.from_config(CONTROLNET_TINY)


def test_comparison_slot_runs_a_generation_request(files, tmp_path):
    from ldm.demo.slots import GenerationRequest, SlotOptions
    from ldm.pose.keypoints import Pose

    cfg = load_comparison_config(CONTROLNET_TINY)
    cfg.base_checkpoint, cfg.control_checkpoint = (
        str(files / "v1-5-pruned.ckpt"),
        str(files / "controlnet-unprefixed.pth"),
    )
    from omegaconf import OmegaConf

    OmegaConf.save(cfg, tmp_path / "controlnet.yaml")
    options = SlotOptions(config=Path("unused.yaml"), checkpoint=None)
    slot = comparison_slot("ControlNet", options, config=tmp_path / "controlnet.yaml")
    assert slot.available and slot.name == "ControlNet"
    request = GenerationRequest("a dancer", pose=Pose.from_array(POSE * 2, width=128, height=128), steps=2)
    out = slot.generate(request, None)
    assert out.images[0].size == (64, 64)  # the model's native size
    cfg.base_checkpoint = str(tmp_path / "v1-5-pruned.ckpt")
    OmegaConf.save(cfg, tmp_path / "missing.yaml")
    slot = comparison_slot("ControlNet", options, config=tmp_path / "missing.yaml")
    assert not slot.available and "runwayml/stable-diffusion-v1-5" in slot.note
