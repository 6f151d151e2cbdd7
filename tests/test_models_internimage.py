"""UperNet + InternImage: parameter counts and names against the released models, DCNv3
numerics against an explicit loop, output shapes, layer-wise lr decay."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trainer.models.dcnv3 import DCNv3, dcnv3_core, dcnv3_core_grid_sample
from trainer.models.dcnv3_spec import dcnv3_output_size
from trainer.models.internimage import (
    INTERNIMAGE_SPECS,
    InternImage,
    InternImageLayer,
    layer_decay_param_groups,
)
from trainer.models.internimage_zoo import BUILDERS
from trainer.models.segmentor import EncoderDecoder

# Published totals (OpenGVLab/InternImage ADE20K table; /work/shared/zoo/README.md), 150 classes.
PARAMS_WITH_HEADS = {
    "t": 59_077_148,
    "s": 79_866_956,
    "b": 128_387_852,
    "l": 255_600_606,
    "xl": 367_733_000,
    "h": 1_120_338_396,
}
PARAMS_BACKBONE = {
    "t": 28_769_520,
    "s": 48_502_560,
    "b": 94_909_920,
    "l": 218_952_370,
    "xl": 328_971_228,
    "h": 1_073_122_480,
}


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- parameter counts and names ---------------------------------------------------------------


@pytest.mark.parametrize("variant", list(PARAMS_WITH_HEADS))
def test_parameter_counts_match_the_published_models(variant: str) -> None:
    with torch.device("meta"):
        model = BUILDERS[f"upernet_internimage_{variant}"](150)
    assert count(model) == PARAMS_WITH_HEADS[variant]
    assert count(model.backbone) == PARAMS_BACKBONE[variant]
    assert model.loss_weights == {"aux": 0.4}


def test_builders_cover_every_size() -> None:
    assert sorted(BUILDERS) == sorted(
        f"upernet_internimage_{v}" for v in ("t", "s", "b", "l", "xl", "h")
    )


def test_first_block_keys_of_t_match_the_released_checkpoint() -> None:
    with torch.device("meta"):
        model = BUILDERS["upernet_internimage_t"](150)
    prefix = "backbone.levels.0.blocks.0."
    keys = {k[len(prefix) :] for k in model.state_dict() if k.startswith(prefix)}
    expected = {"gamma1", "gamma2"}
    for module in (
        "norm1.0",
        "dcn.dw_conv.0",
        "dcn.dw_conv.1.1",
        "dcn.offset",
        "dcn.mask",
        "dcn.input_proj",
        "dcn.output_proj",
        "norm2.0",
        "mlp.fc1",
        "mlp.fc2",
    ):
        expected |= {f"{module}.weight", f"{module}.bias"}
    assert keys == expected
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith(prefix)}
    assert shapes[prefix + "dcn.offset.weight"] == (4 * 9 * 2, 64)
    assert shapes[prefix + "dcn.mask.weight"] == (4 * 9, 64)
    assert shapes[prefix + "dcn.dw_conv.0.weight"] == (64, 1, 3, 3)


def test_h_specific_keys() -> None:
    with torch.device("meta"):
        backbone = InternImage.from_spec(INTERNIMAGE_SPECS["h"])
    keys = set(backbone.state_dict())
    block = "levels.2.blocks.0."
    assert {block + "res_post_norm1.0.weight", block + "res_post_norm2.0.bias"} <= keys
    assert block + "gamma1" not in keys
    assert backbone.state_dict()[block + "dcn.dw_conv.0.weight"].shape == (1280, 1, 5, 5)
    state = backbone.state_dict()
    assert state[block + "dcn.center_feature_scale_proj_weight"].shape == (40, 1280)
    assert state[block + "dcn.center_feature_scale_proj_bias"].shape == (40,)
    assert {f"levels.2.post_norms.{k}.0.weight" for k in range(5)} <= keys
    assert "levels.2.post_norms.5.0.weight" not in keys
    assert all(f"levels.{i}.norm.0.weight" in keys for i in range(4))


def test_post_norm_sizes_have_no_level_norm() -> None:
    with torch.device("meta"):
        backbone = InternImage.from_spec(INTERNIMAGE_SPECS["s"])
    assert not any(".norm.0." in k and ".downsample." not in k for k in backbone.state_dict())


def test_state_dict_round_trip_is_strict() -> None:
    with torch.device("meta"):
        a = BUILDERS["upernet_internimage_t"](150)
        b = BUILDERS["upernet_internimage_t"](150)
    b.load_state_dict(a.state_dict(), strict=True, assign=True)
    prefixes = {k.split(".")[0] for k in a.state_dict()}
    assert prefixes == {"backbone", "decode_head", "auxiliary_head"}


def test_drop_path_rate_override() -> None:
    with torch.device("meta"):
        model = BUILDERS["upernet_internimage_t"](19, drop_path_rate=0.3)
    assert model.backbone.levels[3].blocks[-1].drop_path.p == pytest.approx(0.3)
    assert isinstance(model.backbone.levels[0].blocks[0].drop_path, torch.nn.Identity)


def test_res_post_norm_with_layer_scale_is_rejected() -> None:
    with pytest.raises(ValueError, match="res_post_norm"):
        InternImageLayer(16, 1, layer_scale=1.0, res_post_norm=True)


# --- DCNv3 numerics -----------------------------------------------------------------------------


def dcnv3_loop(
    input, offset, mask, kernel_size, stride, pad, dilation, group, group_channels, scale
):
    """The DCNv3 formula with explicit loops: zero-padded input, sampling position
    centre + (kernel point + offset) * scale with pixel centres at i + 0.5, bilinear sampling
    reading zeros outside the padded input, mask-weighted sum over kernel points. Differentiable
    (built from tensor scalars)."""
    n_, h, w, _ = input.shape
    padded = F.pad(input, (0, 0, pad, pad, pad, pad))
    hp, wp = h + 2 * pad, w + 2 * pad
    h_out = (hp - dilation * (kernel_size - 1) - 1) // stride + 1
    w_out = (wp - dilation * (kernel_size - 1) - 1) // stride + 1
    half = dilation * (kernel_size - 1) // 2
    k_points = kernel_size * kernel_size
    zero = input.new_zeros(group_channels)
    rows = []
    for n in range(n_):
        for i in range(h_out):
            for j in range(w_out):
                pixel = []
                for g in range(group):
                    acc = input.new_zeros(group_channels)
                    for ix in range(kernel_size):
                        for iy in range(kernel_size):
                            k = ix * kernel_size + iy  # x-major kernel points
                            dx = offset[n, i, j, (g * k_points + k) * 2]
                            dy = offset[n, i, j, (g * k_points + k) * 2 + 1]
                            # continuous coordinates, pixel u of the padded input covers [u, u+1)
                            cx = half + 0.5 + j * stride + (ix * dilation - half + dx) * scale
                            cy = half + 0.5 + i * stride + (iy * dilation - half + dy) * scale
                            px, py = cx - 0.5, cy - 0.5  # in pixel-index units
                            x0, y0 = math.floor(px.item()), math.floor(py.item())
                            value = zero
                            for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
                                wgt = (1 - (px - xx).abs()) * (1 - (py - yy).abs())
                                if 0 <= yy < hp and 0 <= xx < wp:
                                    channels = slice(g * group_channels, (g + 1) * group_channels)
                                    sample = padded[n, yy, xx, channels]
                                else:
                                    sample = zero
                                value = value + wgt * sample
                            acc = acc + mask[n, i, j, g * k_points + k] * value
                    pixel.append(acc)
                rows.append(torch.cat(pixel))
    return torch.stack(rows).view(n_, h_out, w_out, group * group_channels)


def random_case(kernel_size, stride, pad, dilation, group, group_channels, offset_std, seed,
                size=(4, 5), dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    h_out = dcnv3_output_size(h, kernel_size, stride, pad, dilation)
    w_out = dcnv3_output_size(w, kernel_size, stride, pad, dilation)
    k = kernel_size * kernel_size
    x = torch.randn(1, h, w, group * group_channels, generator=gen, dtype=dtype)
    offset = offset_std * torch.randn(1, h_out, w_out, group * k * 2, generator=gen, dtype=dtype)
    logits = torch.randn(1, h_out, w_out, group, k, generator=gen, dtype=dtype)
    mask = logits.softmax(-1).reshape(1, h_out, w_out, group * k)
    return x, offset, mask


# (kernel_size, stride, pad, dilation, group, group_channels, offset_scale, offset_std)
CASES = [
    (3, 1, 1, 1, 2, 3, 1.0, 1.0),
    (3, 1, 1, 1, 2, 2, 2.0, 1.5),
    (3, 2, 1, 1, 3, 2, 1.0, 1.0),
    (3, 1, 2, 2, 2, 2, 1.0, 0.7),
    (5, 1, 2, 1, 2, 2, 2.0, 1.0),
    (1, 1, 0, 1, 2, 2, 1.0, 2.0),
    (3, 1, 1, 1, 1, 4, 1.0, 6.0),  # far outside the image
]


@pytest.mark.parametrize("case", CASES)
def test_dcnv3_cores_match_the_loop_forward_and_backward(case) -> None:
    kernel_size, stride, pad, dilation, group, gc, scale, std = case
    x, offset, mask = random_case(kernel_size, stride, pad, dilation, group, gc, std, seed=1)
    args = (kernel_size, stride, pad, dilation, group, gc, scale)
    results = {}
    for name, core in (
        ("loop", dcnv3_loop),
        ("fast", dcnv3_core),
        ("grid_sample", dcnv3_core_grid_sample),
    ):
        leaves = [t.clone().requires_grad_() for t in (x, offset, mask)]
        out = core(*leaves, *args)
        grad = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
        out.backward(grad)
        results[name] = (out.detach(), *(t.grad for t in leaves))
    for name in ("fast", "grid_sample"):
        for got, want, what in zip(results[name], results["loop"], ("out", "dx", "doff", "dmask")):
            torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-9, msg=f"{name} {what}")


def test_dcnv3_fast_core_gradcheck() -> None:
    x, offset, mask = random_case(3, 1, 1, 1, 2, 2, 1.0, seed=3, size=(3, 3))
    leaves = tuple(t.requires_grad_() for t in (x, offset, mask))
    assert torch.autograd.gradcheck(
        lambda a, b, c: dcnv3_core(a, b, c, 3, 1, 1, 1, 2, 2, 2.0), leaves, atol=1e-7
    )


def test_dcnv3_float32_batch_matches_grid_sample() -> None:
    gen = torch.Generator().manual_seed(0)
    n, h, w, group, gc = 2, 9, 7, 4, 8
    x = torch.randn(n, h, w, group * gc, generator=gen)
    offset = 2 * torch.randn(n, h, w, group * 18, generator=gen)
    mask = torch.randn(n, h, w, group, 9, generator=gen).softmax(-1).reshape(n, h, w, -1)
    args = (3, 1, 1, 1, group, gc, 1.0)
    torch.testing.assert_close(
        dcnv3_core(x, offset, mask, *args), dcnv3_core_grid_sample(x, offset, mask, *args),
        atol=1e-5, rtol=1e-5,
    )


def test_dcnv3_core_rejects_inconsistent_shapes() -> None:
    x, offset, mask = random_case(3, 1, 1, 1, 2, 2, 1.0, seed=0)
    with pytest.raises(ValueError, match="offset"):
        dcnv3_core(x, offset[..., :-2], mask, 3, 1, 1, 1, 2, 2, 1.0)
    with pytest.raises(ValueError, match="input"):
        dcnv3_core(x, offset, mask, 3, 1, 1, 1, 3, 2, 1.0)


def test_dcnv3_module_with_center_feature_scale() -> None:
    torch.manual_seed(0)
    module = DCNv3(8, kernel_size=3, dw_kernel_size=5, group=2, offset_scale=2.0,
                   center_feature_scale=True).double()
    names = {k for k, _ in module.named_parameters()}
    assert {"center_feature_scale_proj_weight", "center_feature_scale_proj_bias",
            "dw_conv.0.weight", "dw_conv.1.1.weight"} <= names
    assert module.dw_conv[0].weight.shape == (8, 1, 5, 5)
    assert not module.offset.weight.any() and not module.mask.bias.any()
    with torch.no_grad():  # leave the zero init so that offsets, mask and gate all matter
        for p in (module.offset.weight, module.offset.bias, module.mask.weight,
                  module.center_feature_scale_proj_weight, module.center_feature_scale_proj_bias):
            p.normal_()
    x = torch.randn(1, 4, 5, 8, dtype=torch.float64)
    got = module(x)

    # The module's formula spelled out, with the loop core.
    projected = module.input_proj(x)
    feats = module.dw_conv(x.permute(0, 3, 1, 2))
    offset = module.offset(feats)
    mask = module.mask(feats).view(1, 4, 5, 2, 9).softmax(-1).view(1, 4, 5, 18)
    sampled = dcnv3_loop(projected, offset, mask, 3, 1, 1, 1, 2, 4, 2.0)
    gate = torch.sigmoid(feats @ module.center_feature_scale_proj_weight.t()
                         + module.center_feature_scale_proj_bias)  # (1, 4, 5, group)
    gate = gate[..., :, None].expand(1, 4, 5, 2, 4).reshape(1, 4, 5, 8)
    want = module.output_proj(sampled * (1 - gate) + projected * gate)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-9)

    module.core = dcnv3_core_grid_sample
    torch.testing.assert_close(module(x), want, atol=1e-10, rtol=1e-9)


# --- whole model ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_upernet_internimage_t_output_shapes() -> None:
    torch.manual_seed(0)
    model = BUILDERS["upernet_internimage_t"](150).eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = model.backbone(images)
        out = model(images)
        full = model.encode_decode(images)
    assert [tuple(f.shape) for f in feats] == [
        (1, 64, 16, 16), (1, 128, 8, 8), (1, 256, 4, 4), (1, 512, 2, 2)
    ]
    assert tuple(out["decode"].shape) == (1, 150, 16, 16)
    assert tuple(out["aux"].shape) == (1, 150, 4, 4)
    assert tuple(full.shape) == (1, 150, 64, 64)
    assert torch.isfinite(full).all()


def test_h_style_backbone_runs_and_trains() -> None:
    torch.manual_seed(0)
    backbone = InternImage(
        16, (1, 1, 2, 1), (1, 2, 4, 8), dw_kernel_size=5, res_post_norm=True,
        level2_post_norm_block_ids=(0,), center_feature_scale=True, drop_path_rate=0.1,
    )
    feats = backbone(torch.randn(2, 3, 40, 36))
    assert [tuple(f.shape) for f in feats] == [
        (2, 16, 10, 9), (2, 32, 5, 5), (2, 64, 3, 3), (2, 128, 2, 2)
    ]
    sum(f.mean() for f in feats).backward()
    assert backbone.levels[0].blocks[0].dcn.input_proj.weight.grad is not None


# --- layer-wise learning-rate decay ------------------------------------------------------------


def test_layer_decay_groups_follow_the_reference_formula() -> None:
    with torch.device("meta"):
        model = BUILDERS["upernet_internimage_l"](150)
    rate, base_lr, wd = 0.9, 2e-5, 0.05
    groups = layer_decay_param_groups(model, base_lr, wd, rate, head_lr_mult=1.0)
    depths = INTERNIMAGE_SPECS["l"].depths
    num_layers = sum(depths) + 2
    by_name = {name: g for g in groups for name in g["names"]}
    assert len(by_name) == len(list(model.parameters()))

    def scale(name: str) -> float:
        return by_name[name]["lr_mult"]

    stem = scale("backbone.patch_embed.conv1.weight")
    head = scale("decode_head.conv_seg.weight")
    assert stem == pytest.approx(rate ** (num_layers - 1))
    assert head == 1.0 == scale("auxiliary_head.conv_seg.weight")
    assert stem == min(g["lr_mult"] for g in groups)
    assert head == max(g["lr_mult"] for g in groups)
    # block j of level i: layer id 1 + depths[:i] + j
    assert scale("backbone.levels.1.blocks.3.mlp.fc1.weight") == pytest.approx(
        rate ** (num_layers - 1 - (1 + depths[0] + 3))
    )
    # level downsample / norm: after their level's blocks
    assert scale("backbone.levels.0.downsample.conv.weight") == pytest.approx(
        rate ** (num_layers - 1 - (1 + depths[0]))
    )
    for g in groups:
        assert g["lr"] == pytest.approx(base_lr * g["lr_mult"]) == g["base_lr"]
    # no decay for 1-D parameters, biases and norms (gamma included)
    assert by_name["backbone.levels.0.blocks.0.gamma1"]["weight_decay"] == 0.0
    assert by_name["backbone.levels.0.blocks.0.norm1.0.weight"]["weight_decay"] == 0.0
    assert by_name["decode_head.conv_seg.bias"]["weight_decay"] == 0.0
    assert by_name["backbone.levels.0.blocks.0.dcn.offset.weight"]["weight_decay"] == wd
    assert by_name["decode_head.bottleneck.conv.weight"]["weight_decay"] == wd
    assert by_name["backbone.levels.0.blocks.0.dcn.offset.weight"]["group_name"] == "layer_1_decay"

    boosted = layer_decay_param_groups(model, base_lr, wd, rate, head_lr_mult=10.0)
    heads = [g for g in boosted if g["names"][0].startswith("decode_head")]
    assert heads and all(g["lr_mult"] == 10.0 for g in heads)


def test_layer_decay_no_decay_names_follow_the_reference() -> None:
    """The constructor's no-decay rule (OpenGVLab/InternImage@31c962dc6c1c
    segmentation/mmcv_custom/custom_layer_decay_optimizer_constructor.py): 1-D, ``*.bias``,
    names containing ``relative_position``, ``norm`` or ``sampling_offsets``."""
    with torch.device("meta"):
        model = BUILDERS["upernet_internimage_t"](150)
        for name in ("relative_position_table", "sampling_offsets_w", "plain_w"):
            model.decode_head.register_parameter(name, torch.nn.Parameter(torch.zeros(2, 2)))
    groups = layer_decay_param_groups(model, 1e-4, 0.05, 1.0)
    decay = {name: g["weight_decay"] for g in groups for name in g["names"]}
    assert decay["decode_head.relative_position_table"] == 0.0
    assert decay["decode_head.sampling_offsets_w"] == 0.0
    assert decay["decode_head.plain_w"] == 0.05


def test_layer_decay_needs_an_internimage_backbone() -> None:
    with torch.device("meta"):
        model = EncoderDecoder(torch.nn.Conv2d(3, 8, 1), torch.nn.Conv2d(8, 2, 1))
    with pytest.raises(ValueError, match="InternImage"):
        layer_decay_param_groups(model, 1e-4, 0.05, 0.9)
