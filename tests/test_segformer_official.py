"""SegFormer with the official NVlabs decoder (``segformer_official_mit_b*``): sizes, loading a
whole official segmentation checkpoint strictly, numerics against the official forward, and
the error for a model with mmseg's head.

The official checkpoint layout and forward are written out here from NVlabs/SegFormer
``mmseg/models/backbones/mix_transformer.py`` and ``mmseg/models/decode_heads/segformer_head.py``
(on ``decode_head.py``), independently of the code under test.
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from segctl.recipe import MODEL_PRESETS
from trainer.models import MIT_VARIANTS, build_segmentor, count_parameters
from trainer.models.converters.pretrained import detect_kind, load_pretrained
from trainer.models.converters.segformer_official import (
    convert_segformer_official,
    convert_segformer_official_segmentor,
    official_preset,
)
from trainer.models.segformer_official_head import SegFormerOfficialHead

# Official totals with decoder, 150 classes (zoo README, "MiT / SegFormer"), in thousands.
OFFICIAL_TOTALS_K = {
    "b0": 3_753, "b1": 13_716, "b2": 27_462, "b3": 47_338, "b4": 64_108, "b5": 84_709,
}
# Encoder sizes (zoo README) and decoder widths (NVlabs local_configs decoder_params.embed_dim).
ENCODER_PARAMETERS = {
    "b0": 3_319_392, "b1": 13_151_424, "b2": 24_196_288,
    "b3": 44_072_128, "b4": 60_842_688, "b5": 81_443_008,
}
DECODER_WIDTH = {"b0": 256, "b1": 256, "b2": 768, "b3": 768, "b4": 768, "b5": 768}
HEADS = (1, 2, 5, 8)
SR_RATIOS = (8, 4, 2, 1)
CONV_SEG_CHANNELS = 128  # the configs' ``channels``: BaseDecodeHead's unused conv_seg


def _widths(variant: str) -> list[int]:
    base = MIT_VARIANTS[variant][0]
    return [base * h for h in HEADS]


def _decoder_parameters(variant: str, num_classes: int) -> int:
    """linear_c1..c4 (Linear with bias), linear_fuse (1x1 conv without bias + BN weight and
    bias), linear_pred (1x1 conv with bias)."""
    d = DECODER_WIDTH[variant]
    widths = _widths(variant)
    return d * (sum(widths) + 4) + 4 * d * d + 2 * d + num_classes * (d + 1)


# --- the official checkpoint layout ---------------------------------------------------------------


def _official_shapes(variant: str, num_classes: int) -> dict[str, tuple[int, ...]]:
    """Every tensor of an official segmentation checkpoint (``state_dict``), by name."""
    widths = _widths(variant)
    depths = MIT_VARIANTS[variant][1]
    shapes: dict[str, tuple[int, ...]] = {}
    in_ch = 3
    for n, (c, depth, sr) in enumerate(zip(widths, depths, SR_RATIOS), start=1):
        k = 7 if n == 1 else 3
        p = f"backbone.patch_embed{n}."
        shapes |= {p + "proj.weight": (c, in_ch, k, k), p + "proj.bias": (c,),
                   p + "norm.weight": (c,), p + "norm.bias": (c,)}
        for j in range(depth):
            b = f"backbone.block{n}.{j}."
            shapes |= {
                b + "norm1.weight": (c,), b + "norm1.bias": (c,),
                b + "attn.q.weight": (c, c), b + "attn.q.bias": (c,),
                b + "attn.kv.weight": (2 * c, c), b + "attn.kv.bias": (2 * c,),
                b + "attn.proj.weight": (c, c), b + "attn.proj.bias": (c,),
                b + "norm2.weight": (c,), b + "norm2.bias": (c,),
                b + "mlp.fc1.weight": (4 * c, c), b + "mlp.fc1.bias": (4 * c,),
                b + "mlp.dwconv.dwconv.weight": (4 * c, 1, 3, 3),
                b + "mlp.dwconv.dwconv.bias": (4 * c,),
                b + "mlp.fc2.weight": (c, 4 * c), b + "mlp.fc2.bias": (c,),
            }
            if sr > 1:
                shapes |= {b + "attn.sr.weight": (c, c, sr, sr), b + "attn.sr.bias": (c,),
                           b + "attn.norm.weight": (c,), b + "attn.norm.bias": (c,)}
        shapes |= {f"backbone.norm{n}.weight": (c,), f"backbone.norm{n}.bias": (c,)}
        in_ch = c
    d = DECODER_WIDTH[variant]
    h = "decode_head."
    for i, c in enumerate(widths, start=1):
        shapes |= {h + f"linear_c{i}.proj.weight": (d, c), h + f"linear_c{i}.proj.bias": (d,)}
    shapes |= {
        h + "linear_fuse.conv.weight": (d, 4 * d, 1, 1),
        h + "linear_fuse.bn.weight": (d,), h + "linear_fuse.bn.bias": (d,),
        h + "linear_fuse.bn.running_mean": (d,), h + "linear_fuse.bn.running_var": (d,),
        h + "linear_fuse.bn.num_batches_tracked": (),
        h + "linear_pred.weight": (num_classes, d, 1, 1), h + "linear_pred.bias": (num_classes,),
        h + "conv_seg.weight": (num_classes, CONV_SEG_CHANNELS, 1, 1),
        h + "conv_seg.bias": (num_classes,),
    }
    return shapes


def _official_checkpoint(
    variant: str, num_classes: int, device: str = "cpu", seed: int = 0
) -> dict[str, Tensor]:
    """A random official segmentation checkpoint (float32), as mmcv saves it."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in _official_shapes(variant, num_classes).items():
        if device == "meta":
            state[key] = torch.empty(shape, device="meta")
        elif key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        elif "norm" in key and key.endswith("weight"):
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        else:
            state[key] = 0.1 * torch.randn(shape, generator=gen)
    return {"meta": {"CLASSES": [str(k) for k in range(num_classes)]}, "state_dict": state}


# --- the official forward, written from the NVlabs sources ----------------------------------------


def _official_forward(sd: dict[str, Tensor], images: Tensor, variant: str) -> Tensor:
    """NVlabs ``EncoderDecoder.encode_decode`` in eval mode: mit_b* features, SegFormerHead,
    bilinear resize (align_corners False) to the image size."""
    widths, depths = _widths(variant), MIT_VARIANTS[variant][1]
    x = images
    feats = []
    for n, (c, depth, heads, sr) in enumerate(zip(widths, depths, HEADS, SR_RATIOS), start=1):
        p = f"backbone.patch_embed{n}."
        weight = sd[p + "proj.weight"]
        x = F.conv2d(x, weight, sd[p + "proj.bias"], stride=4 if n == 1 else 2,
                     padding=weight.shape[-1] // 2)
        b_, _, h, w = x.shape
        t = F.layer_norm(x.flatten(2).transpose(1, 2), (c,), sd[p + "norm.weight"],
                         sd[p + "norm.bias"], eps=1e-5)  # nn.LayerNorm default
        for j in range(depth):
            b = f"backbone.block{n}.{j}."
            y = F.layer_norm(t, (c,), sd[b + "norm1.weight"], sd[b + "norm1.bias"], eps=1e-6)
            q = F.linear(y, sd[b + "attn.q.weight"], sd[b + "attn.q.bias"])
            q = q.reshape(b_, -1, heads, c // heads).permute(0, 2, 1, 3)
            if sr > 1:
                r = y.permute(0, 2, 1).reshape(b_, c, h, w)
                r = F.conv2d(r, sd[b + "attn.sr.weight"], sd[b + "attn.sr.bias"], stride=sr)
                r = F.layer_norm(r.reshape(b_, c, -1).permute(0, 2, 1), (c,),
                                 sd[b + "attn.norm.weight"], sd[b + "attn.norm.bias"], eps=1e-5)
            else:
                r = y
            kv = F.linear(r, sd[b + "attn.kv.weight"], sd[b + "attn.kv.bias"])
            kv = kv.reshape(b_, -1, 2, heads, c // heads).permute(2, 0, 3, 1, 4)
            attn = (q @ kv[0].transpose(-2, -1)) * (c // heads) ** -0.5
            out = (attn.softmax(dim=-1) @ kv[1]).transpose(1, 2).reshape(b_, -1, c)
            t = t + F.linear(out, sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"])
            y = F.layer_norm(t, (c,), sd[b + "norm2.weight"], sd[b + "norm2.bias"], eps=1e-6)
            y = F.linear(y, sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"])
            y = y.transpose(1, 2).reshape(b_, 4 * c, h, w)
            y = F.conv2d(y, sd[b + "mlp.dwconv.dwconv.weight"], sd[b + "mlp.dwconv.dwconv.bias"],
                         padding=1, groups=4 * c)
            y = F.gelu(y.flatten(2).transpose(1, 2))
            t = t + F.linear(y, sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"])
        t = F.layer_norm(t, (c,), sd[f"backbone.norm{n}.weight"], sd[f"backbone.norm{n}.bias"],
                         eps=1e-6)
        x = t.reshape(b_, h, w, -1).permute(0, 3, 1, 2).contiguous()
        feats.append(x)

    hd = "decode_head."
    c1 = feats[0]
    projected = {}
    for i, f in enumerate(feats, start=1):
        n, _, h, w = f.shape
        y = F.linear(f.flatten(2).transpose(1, 2), sd[hd + f"linear_c{i}.proj.weight"],
                     sd[hd + f"linear_c{i}.proj.bias"])
        y = y.permute(0, 2, 1).reshape(n, -1, h, w)
        if i > 1:
            y = F.interpolate(y, size=c1.shape[2:], mode="bilinear", align_corners=False)
        projected[i] = y
    fused = F.conv2d(torch.cat([projected[4], projected[3], projected[2], projected[1]], dim=1),
                     sd[hd + "linear_fuse.conv.weight"])
    fused = F.batch_norm(fused, sd[hd + "linear_fuse.bn.running_mean"],
                         sd[hd + "linear_fuse.bn.running_var"], sd[hd + "linear_fuse.bn.weight"],
                         sd[hd + "linear_fuse.bn.bias"], training=False, eps=1e-5)
    logits = F.conv2d(F.relu(fused), sd[hd + "linear_pred.weight"], sd[hd + "linear_pred.bias"])
    return F.interpolate(logits, size=images.shape[2:], mode="bilinear", align_corners=False)


# --- sizes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(MIT_VARIANTS))
def test_parameter_totals_match_official(variant: str) -> None:
    with torch.device("meta"):
        model = build_segmentor(f"segformer_official_mit_{variant}", num_classes=150)
    total = count_parameters(model)
    assert round(total / 1000) == OFFICIAL_TOTALS_K[variant]
    assert count_parameters(model.backbone) == ENCODER_PARAMETERS[variant]
    assert total == ENCODER_PARAMETERS[variant] + _decoder_parameters(variant, 150)
    assert model.decode_head.channels == DECODER_WIDTH[variant]


def test_presets_are_listed_and_zoo_models_keep_the_mmseg_head() -> None:
    for variant in MIT_VARIANTS:
        preset = MODEL_PRESETS[f"segformer_official_mit_{variant}"]
        assert preset.backbone == f"MiT-{variant.upper()}"
    with torch.device("meta"):
        mmseg = build_segmentor("segformer_mit_b2", num_classes=19)
    assert not isinstance(mmseg.decode_head, SegFormerOfficialHead)
    assert mmseg.decode_head.fusion_conv.conv.out_channels == 256


def test_head_state_dict_has_the_official_names() -> None:
    with torch.device("meta"):
        model = build_segmentor("segformer_official_mit_b2", num_classes=19)
    expected = {k: v for k, v in _official_shapes("b2", 19).items()
                if k.startswith("decode_head.") and not k.startswith("decode_head.conv_seg.")}
    got = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("decode_head.")}
    assert got == expected


def test_layer_norm_eps_follow_the_official_code() -> None:
    with torch.device("meta"):
        model = build_segmentor("segformer_official_mit_b0", num_classes=19)
    eps = {name: m.eps for name, m in model.backbone.named_modules()
           if isinstance(m, torch.nn.LayerNorm)}
    assert eps["layers.0.0.norm"] == 1e-5 and eps["layers.0.1.0.attn.norm"] == 1e-5
    assert eps["layers.0.1.0.norm1"] == 1e-6 and eps["layers.0.2"] == 1e-6


def test_head_rejects_other_than_four_inputs() -> None:
    with pytest.raises(ValueError, match="4 input widths"):
        SegFormerOfficialHead(in_channels=(32, 64, 160))
    head = SegFormerOfficialHead()
    with pytest.raises(ValueError, match="4 feature maps"):
        head([torch.zeros(1, 32, 8, 8)])


# --- conversion and numerics ----------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["b0", "b2"])
def test_official_checkpoint_converts_and_loads_strict(variant: str) -> None:
    checkpoint = _official_checkpoint(variant, num_classes=19)
    state = checkpoint["state_dict"]
    converted, dropped = convert_segformer_official_segmentor(state)
    assert dropped == ["decode_head.conv_seg.bias", "decode_head.conv_seg.weight"]
    model = build_segmentor(f"segformer_official_mit_{variant}", num_classes=19)
    missing, unexpected = model.load_state_dict(converted, strict=True)
    assert not missing and not unexpected
    assert torch.equal(model.decode_head.linear_c3.proj.weight,
                       state["decode_head.linear_c3.proj.weight"])
    # q rows then kv rows in the packed projection
    c = _widths(variant)[0]
    packed = model.backbone.layers[0][1][0].attn.attn.in_proj_weight
    assert torch.equal(packed[:c], state["backbone.block1.0.attn.q.weight"])
    assert torch.equal(packed[c:], state["backbone.block1.0.attn.kv.weight"])
    assert official_preset(state) == f"segformer_official_mit_{variant}"


@pytest.mark.slow
def test_outputs_equal_the_official_forward() -> None:
    checkpoint = _official_checkpoint("b0", num_classes=19, seed=3)
    assert detect_kind(list(checkpoint["state_dict"])) == "segformer_official"
    model = build_segmentor("segformer_official_mit_b0", num_classes=19)
    report = load_pretrained(model, checkpoint, require_full=True)
    assert (report.kind, report.target, report.strict) == ("segformer_official", "model", True)
    assert report.dropped == ["decode_head.conv_seg.bias", "decode_head.conv_seg.weight"]

    model = model.double().eval()
    reference = {k: v.double() if v.is_floating_point() else v
                 for k, v in checkpoint["state_dict"].items()}
    images = torch.randn(2, 3, 72, 100, generator=torch.Generator().manual_seed(1),
                         dtype=torch.float64)
    with torch.no_grad():
        ours = model.encode_decode(images)
        official = _official_forward(reference, images, "b0")
    assert ours.shape == official.shape == (2, 19, 72, 100)
    torch.testing.assert_close(ours, official, rtol=1e-9, atol=1e-9)


def test_checkpoint_without_bn_counter_still_loads_strict() -> None:
    state = _official_checkpoint("b0", num_classes=19)["state_dict"]
    del state["decode_head.linear_fuse.bn.num_batches_tracked"]
    model = build_segmentor("segformer_official_mit_b0", num_classes=19)
    report = load_pretrained(model, state)
    assert report.target == "model" and report.strict


def test_unknown_decoder_keys_are_an_error() -> None:
    state = _official_checkpoint("b0", num_classes=19, device="meta")["state_dict"]
    state["decode_head.linear_extra.proj.weight"] = torch.empty(2, 2, device="meta")
    with pytest.raises(ValueError, match="linear_extra"):
        convert_segformer_official_segmentor(state)
    with pytest.raises(ValueError, match="encoder only"):
        convert_segformer_official_segmentor(
            {k: v for k, v in state.items() if k.startswith("backbone.")})


def test_imagenet_encoder_loads_into_the_official_model_backbone() -> None:
    state = _official_checkpoint("b0", num_classes=19)["state_dict"]
    encoder, _ = convert_segformer_official(state)
    imagenet = {k.removeprefix("backbone."): v for k, v in state.items()
                if k.startswith("backbone.")}
    imagenet |= {"head.weight": torch.zeros(1000, 256), "head.bias": torch.zeros(1000)}
    model = build_segmentor("segformer_official_mit_b0", num_classes=19)
    report = load_pretrained(model, imagenet)
    assert (report.target, report.strict) == ("backbone", True)
    assert torch.equal(model.backbone.state_dict()["layers.3.2.weight"],
                       encoder["layers.3.2.weight"])
    with pytest.raises(ValueError, match="backbone only"):
        load_pretrained(model, imagenet, require_full=True, source="mit_b0.pth")


# --- a full official checkpoint for a model with mmseg's head -------------------------------------


def test_full_official_checkpoint_for_the_mmseg_head_names_the_preset() -> None:
    checkpoint = _official_checkpoint("b2", num_classes=19, device="meta")
    with torch.device("meta"):
        model = build_segmentor("segformer_mit_b2", num_classes=19)
    with pytest.raises(ValueError) as info:
        load_pretrained(model, checkpoint, require_full=True,
                        source="segformer.b2.1024x1024.city.160k.pth")
    message = str(info.value)
    assert "segformer.b2.1024x1024.city.160k.pth" in message
    assert "SegformerHead" in message and "segformer_official_mit_b2" in message


def test_full_official_checkpoint_as_init_loads_the_encoder_with_a_warning(caplog) -> None:
    checkpoint = _official_checkpoint("b0", num_classes=19)
    model = build_segmentor("segformer_mit_b0", num_classes=19)
    with caplog.at_level(logging.WARNING, logger="trainer.models.converters.pretrained"):
        report = load_pretrained(model, checkpoint)
    assert (report.target, report.strict) == ("backbone", True)
    assert "decode_head.linear_pred.weight" in report.dropped
    assert "segformer_official_mit_b0" in caplog.text


# --- evaluation of an official checkpoint (segctl eval --checkpoint) ------------------------------


@pytest.mark.slow
def test_evaluation_of_an_official_checkpoint(real_data, tmp_path) -> None:
    """run_evaluation loads the whole official checkpoint into segformer_official_mit_b0 and
    scores it; the same file for segformer_mit_b0 stops before scoring, naming the preset."""
    from tests.trainer_runs import make_run_dir, one_frame_cityscapes, small_recipe
    from segctl.recipe.eval_request import EvalRequest
    from trainer.entry import run_evaluation

    root = one_frame_cityscapes(real_data / "cityscapes", tmp_path / "cityscapes")
    path = tmp_path / "segformer.b0.1024x1024.city.160k.pth"
    torch.save(_official_checkpoint("b0", num_classes=19), path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    recipe = small_recipe(root, uri, name="official", model={"name": "segformer_official_mit_b0"})
    request = EvalRequest(ms_flip=recipe.eval.ms_flip, checkpoint=str(path))
    result = run_evaluation(make_run_dir(tmp_path / "official", recipe), request)
    assert result["checkpoint"] == str(path) and 0.0 <= result["metrics"]["aAcc"] <= 100.0

    recipe = small_recipe(root, uri, name="mmseg-head", model={"name": "segformer_mit_b0"})
    with pytest.raises(ValueError, match="use model segformer_official_mit_b0"):
        run_evaluation(make_run_dir(tmp_path / "mmseg-head", recipe),
                       EvalRequest(ms_flip=recipe.eval.ms_flip, checkpoint=str(path)))
