"""HRNetV2 backbone, FCN and OCR heads, cascade segmentor, official-checkpoint converter.

Parameter counts come from /work/shared/zoo/README.md (HRNetV2 section). The converter is
checked against an official-format state dict generated here through an inverse name map written
independently of the converter, and against official-layout head modules with their conv biases.
Everything runs on small inputs with the smallest variant; large variants are built on the meta
device only.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainer.models.cascade import CascadeEncoderDecoder
from trainer.models.converters.hrnet_official import convert_hrnet_official
from trainer.models.fcn_head import FCNHead
from trainer.models.hrnet import HRNET_SPECS, HRNet
from trainer.models.hrnet_zoo import BUILDERS, build_fcn_hrnet, build_ocr_hrnet
from trainer.models.ocr_head import OCRHead

NUM_CLASSES = 19

# zoo README: official HRNet-Semantic-Segmentation seg models (FCN head with conv bias).
OFFICIAL_FCN_PARAMS = {
    "w18_small_v1": 1_540_819,
    "w18_small_v2": 3_939_579,
    "w18": 9_641_119,
    "w48": 65_859_379,
}
# zoo README: mmseg FCN W18 / W48; the small ones follow from official - sum(widths).
MMSEG_PARAMS = {
    "fcn_hrnetv2_w18_small_v1": 1_540_579,
    "fcn_hrnetv2_w18_small": 3_939_309,
    "fcn_hrnetv2_w18": 9_640_849,
    "fcn_hrnetv2_w48": 65_858_659,
    "ocr_hrnetv2_w48": 70_371_446,
}
BUILDER_VARIANT = {
    "fcn_hrnetv2_w18_small_v1": "w18_small_v1",
    "fcn_hrnetv2_w18_small": "w18_small_v2",
    "fcn_hrnetv2_w18": "w18",
    "fcn_hrnetv2_w48": "w48",
}


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def is_parameter_key(key: str) -> bool:
    return not key.endswith(("running_mean", "running_var", "num_batches_tracked"))


# --- inverse map: our (mmseg) names -> official names, independent of the converter -------------

FCN_TO_OFFICIAL = [
    ("decode_head.convs.0.conv.", "last_layer.0."),
    ("decode_head.convs.0.bn.", "last_layer.1."),
    ("decode_head.conv_seg.", "last_layer.3."),
]
OCB = "decode_head.1.object_context_block."
OFF = "ocr_distri_head.object_context_block."
OCR_TO_OFFICIAL = [
    ("decode_head.0.convs.0.conv.", "aux_head.0."),
    ("decode_head.0.convs.0.bn.", "aux_head.1."),
    ("decode_head.0.conv_seg.", "aux_head.3."),
    ("decode_head.1.bottleneck.conv.", "conv3x3_ocr.0."),
    ("decode_head.1.bottleneck.bn.", "conv3x3_ocr.1."),
    (OCB + "bottleneck.conv.", "ocr_distri_head.conv_bn_dropout.0."),
    (OCB + "bottleneck.bn.", "ocr_distri_head.conv_bn_dropout.1.0."),
    (OCB + "value_project.conv.", OFF + "f_down.0."),
    (OCB + "value_project.bn.", OFF + "f_down.1.0."),
    (OCB + "out_project.conv.", OFF + "f_up.0."),
    (OCB + "out_project.bn.", OFF + "f_up.1.0."),
    ("decode_head.1.conv_seg.", "cls_head."),
]
for ours, theirs in (("query_project", "f_pixel"), ("key_project", "f_object")):
    OCR_TO_OFFICIAL += [
        (f"{OCB}{ours}.0.conv.", f"{OFF}{theirs}.0."),
        (f"{OCB}{ours}.0.bn.", f"{OFF}{theirs}.1.0."),
        (f"{OCB}{ours}.1.conv.", f"{OFF}{theirs}.2."),
        (f"{OCB}{ours}.1.bn.", f"{OFF}{theirs}.3.0."),
    ]
# official conv biases (no mmseg slot): bias key, BN prefix, channels taken from that BN.
OFFICIAL_BIASES = {
    "fcn": [("last_layer.0.bias", "last_layer.1.")],
    "ocr": [("aux_head.0.bias", "aux_head.1."), ("conv3x3_ocr.0.bias", "conv3x3_ocr.1.")],
}


def official_name(key: str, table: list[tuple[str, str]]) -> str:
    if key.startswith("backbone."):
        return key.removeprefix("backbone.")
    for ours, theirs in table:
        if key.startswith(ours):
            return theirs + key.removeprefix(ours)
    raise AssertionError(f"no official name for {key}")


def to_official(model: nn.Module, head: str, biases: bool = True) -> dict[str, torch.Tensor]:
    """Official-format state dict with the same function as ``model`` (eval mode).

    Each official conv bias b is random; the BN after it gets running mean m + b, so that
    BN(conv(x) + b) equals our BN(conv(x)) with mean m.
    """
    table = FCN_TO_OFFICIAL if head == "fcn" else OCR_TO_OFFICIAL
    official = {official_name(k, table): v.clone() for k, v in model.state_dict().items()}
    if biases:
        for bias_key, bn in OFFICIAL_BIASES[head]:
            mean = official[bn + "running_mean"]
            bias = torch.randn_like(mean)
            official[bias_key] = bias
            official[bn + "running_mean"] = mean + bias
    return official


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BN statistics (positive variances), so every tensor matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            values = torch.randn(tensor.shape, generator=gen) * 0.1
            if tensor.ndim == 4:  # conv weights: unit-variance outputs keep activations O(1)
                values = values * 10 / tensor[0].numel() ** 0.5
            elif name.endswith("running_var"):
                values = values.abs() + 0.5
            elif tensor.ndim == 1 and name.endswith("weight"):  # BN scales around 1
                values = values + 1.0
            tensor.copy_(values)
    return model.eval()


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to float32 rounding relative to the tensor's scale: folding a conv bias into the
    BN mean only changes the rounding of (conv + b) - m versus conv - (m - b)."""
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, atol=1e-5 * scale, rtol=1e-5)


# --- parameter counts ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MMSEG_PARAMS))
def test_mmseg_parameter_counts(name: str) -> None:
    with torch.device("meta"):
        model = BUILDERS[name](NUM_CLASSES)
    assert count(model) == MMSEG_PARAMS[name]


@pytest.mark.parametrize("variant", sorted(OFFICIAL_FCN_PARAMS))
def test_official_count_is_mmseg_count_plus_head_conv_bias(variant: str) -> None:
    with torch.device("meta"):
        model = build_fcn_hrnet(variant, NUM_CLASSES)
        official = to_official(model, "fcn")
    official_params = sum(v.numel() for k, v in official.items() if is_parameter_key(k))
    assert official_params == OFFICIAL_FCN_PARAMS[variant]
    # The official model has exactly one more vector than mmseg: the first head conv's bias.
    assert official_params - count(model) == sum(HRNET_SPECS[variant].widths)


@pytest.mark.slow
def test_every_builder_takes_the_documented_signature() -> None:
    assert set(BUILDERS) >= set(MMSEG_PARAMS) | {"ocr_hrnetv2_w18", "ocr_hrnetv2_w18_small"}
    with torch.device("meta"):
        for builder in BUILDERS.values():
            model = builder(7, align_corners=True)
            assert model.align_corners is True


# --- backbone and segmentors ----------------------------------------------------------------------


def test_backbone_state_dict_names_follow_mmseg() -> None:
    with torch.device("meta"):
        keys = set(HRNet(HRNET_SPECS["w18"]).state_dict())
    for key in (
        "conv1.weight",
        "bn1.running_var",
        "conv2.weight",
        "bn2.weight",
        "layer1.0.downsample.0.weight",
        "layer1.3.conv3.weight",
        "layer1.3.bn3.bias",
        "transition1.0.0.weight",
        "transition1.1.0.1.weight",
        "transition2.2.0.0.weight",
        "transition3.3.0.1.running_mean",
        "stage2.0.branches.1.3.conv2.weight",
        "stage3.3.fuse_layers.0.2.0.weight",
        "stage3.3.fuse_layers.2.0.1.0.weight",
        "stage4.2.fuse_layers.3.0.2.1.running_var",
    ):
        assert key in keys, key
    assert not any(k.startswith(("transition2.0", "transition2.1", "stage4.3")) for k in keys)


def test_fcn_output_shapes() -> None:
    torch.manual_seed(0)
    model = BUILDERS["fcn_hrnetv2_w18_small_v1"](NUM_CLASSES).eval()
    images = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        feats = model.backbone(images)
        outputs = model(images)
        full = model.encode_decode(images)
    assert [tuple(f.shape) for f in feats] == [
        (1, 16, 16, 32),
        (1, 32, 8, 16),
        (1, 64, 4, 8),
        (1, 128, 2, 4),
    ]
    assert set(outputs) == {"decode"}
    assert outputs["decode"].shape == (1, NUM_CLASSES, 16, 32)
    assert full.shape == (1, NUM_CLASSES, 64, 128)
    assert torch.isfinite(full).all()


@pytest.mark.parametrize("fuse_align_corners", [False, True])
def test_backbone_handles_sizes_that_do_not_halve_evenly(fuse_align_corners: bool) -> None:
    backbone = HRNet(HRNET_SPECS["w18_small_v1"], fuse_align_corners=fuse_align_corners).eval()
    with torch.no_grad():
        feats = backbone(torch.randn(1, 3, 50, 74))
    assert [tuple(f.shape[2:]) for f in feats] == [(13, 19), (7, 10), (4, 5), (2, 3)]


def test_ocr_cascade_outputs_and_loss_weights() -> None:
    torch.manual_seed(0)
    model = build_ocr_hrnet("w18_small_v1", NUM_CLASSES).eval()
    assert isinstance(model, CascadeEncoderDecoder)
    assert model.loss_weights == {"aux": 0.4}
    assert isinstance(model.decode_head[0], FCNHead) and isinstance(model.decode_head[1], OCRHead)
    assert model.decode_head[0].dropout is None and model.decode_head[1].dropout is None
    images = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        outputs = model(images)
        full = model.encode_decode(images)
        feats = model.backbone(images)
        fcn = model.decode_head[0](feats)
        ocr = model.decode_head[1](feats, fcn)
    assert set(outputs) == {"decode", "aux"}
    assert outputs["aux"].shape == outputs["decode"].shape == (1, NUM_CLASSES, 16, 32)
    torch.testing.assert_close(outputs["aux"], fcn)
    torch.testing.assert_close(outputs["decode"], ocr)
    assert full.shape == (1, NUM_CLASSES, 64, 128)
    keys = set(model.state_dict())
    assert "decode_head.0.convs.0.conv.weight" in keys
    assert "decode_head.1.object_context_block.query_project.1.bn.running_mean" in keys
    assert "decode_head.1.object_context_block.value_project.conv.weight" in keys


def test_fcn_default_has_no_dropout_as_mmseg_fcn_hr18() -> None:
    # mmseg configs/_base_/models/fcn_hr18.py: decode_head dropout_ratio=-1 (no Dropout module).
    with torch.device("meta"):
        model = build_fcn_hrnet("w18", NUM_CLASSES)
        with_dropout = build_fcn_hrnet("w18", NUM_CLASSES, dropout_ratio=0.1)
    assert model.decode_head.dropout is None
    assert isinstance(with_dropout.decode_head.dropout, nn.Dropout2d)
    assert with_dropout.decode_head.dropout.p == 0.1
    assert set(model.state_dict()) == set(with_dropout.state_dict())
    with pytest.raises(ValueError, match="dropout_ratio"):
        build_fcn_hrnet("w18", NUM_CLASSES, dropout_ratio=-1)


def test_ocr_dropout_ratio_option_sets_only_the_ocr_stage() -> None:
    with torch.device("meta"):
        model = build_ocr_hrnet("w18_small_v1", NUM_CLASSES, dropout_ratio=0.05)
    assert model.decode_head[0].dropout is None
    assert isinstance(model.decode_head[1].dropout, nn.Dropout2d)
    assert model.decode_head[1].dropout.p == 0.05
    with pytest.raises(ValueError, match="dropout_ratio"):
        build_ocr_hrnet("w18_small_v1", NUM_CLASSES, dropout_ratio=1.0)


def test_stem_relu_false_leaves_out_the_relu_after_bn1_only() -> None:
    torch.manual_seed(0)
    with_relu = HRNet(HRNET_SPECS["w18_small_v1"]).eval()
    without = HRNet(HRNET_SPECS["w18_small_v1"], stem_relu=False).eval()
    # Same names and shapes: checkpoints load strictly either way.
    without.load_state_dict(with_relu.state_dict(), strict=True)
    conv2_inputs: dict[str, torch.Tensor] = {}
    for key, net in (("with", with_relu), ("without", without)):
        net.conv2.register_forward_hook(
            lambda _m, args, _out, key=key: conv2_inputs.__setitem__(key, args[0].clone())
        )
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        after_bn1 = with_relu.bn1(with_relu.conv1(images))
        out_with, out_without = with_relu(images), without(images)
    assert (after_bn1 < 0).any()
    torch.testing.assert_close(conv2_inputs["with"], after_bn1.relu(), rtol=0, atol=0)
    torch.testing.assert_close(conv2_inputs["without"], after_bn1, rtol=0, atol=0)
    assert not torch.equal(out_with[0], out_without[0])
    for name, builder in (("fcn", build_fcn_hrnet), ("ocr", build_ocr_hrnet)):
        with torch.device("meta"):
            default = builder("w18", NUM_CLASSES)
            plain = builder("w18", NUM_CLASSES, stem_relu=False)
        assert default.backbone.stem_relu is True, name
        assert plain.backbone.stem_relu is False, name
        assert list(default.state_dict()) == list(plain.state_dict()), name


def test_cascade_needs_two_heads() -> None:
    head = FCNHead(8, 8, 2, num_convs=0, concat_input=False)
    with pytest.raises(ValueError, match="at least two"):
        CascadeEncoderDecoder(nn.Identity(), [head])


def test_spatial_gather_is_a_softmax_weighted_mean_over_positions() -> None:
    head = OCRHead(4, 6, 3, 2, in_index=0, input_transform=None)
    feats = torch.randn(1, 6, 3, 5)
    probs = torch.zeros(1, 2, 3, 5)  # uniform weights -> spatial mean
    context = head.spatial_gather_module(feats, probs)
    assert context.shape == (1, 6, 2, 1)
    torch.testing.assert_close(context[0, :, 0, 0], feats.mean(dim=(2, 3))[0])


# --- FCNHead options -----------------------------------------------------------------------------


def test_fcn_head_concat_input_and_dilation() -> None:
    head = FCNHead(16, 8, 5, num_convs=2, kernel_size=3, dilation=2).eval()
    keys = set(head.state_dict())
    assert {"convs.0.conv.weight", "convs.1.conv.weight", "conv_cat.conv.weight"} <= keys
    assert head.convs[0].conv.dilation == (2, 2) and head.convs[0].conv.padding == (2, 2)
    assert head.conv_cat.conv.weight.shape == (8, 16 + 8, 3, 3)
    assert head.conv_cat.conv.dilation == (1, 1)
    assert head.conv_seg.bias is not None and torch.all(head.conv_seg.bias == 0)
    feats = [torch.randn(2, 4, 20, 20), torch.randn(2, 16, 9, 11)]
    with torch.no_grad():
        assert head(feats).shape == (2, 5, 9, 11)  # default in_index -1


def test_fcn_head_without_convs_classifies_the_input() -> None:
    head = FCNHead(8, 8, 3, num_convs=0, concat_input=False, in_index=0, dropout_ratio=0).eval()
    assert isinstance(head.convs, nn.Identity) and head.conv_cat is None and head.dropout is None
    assert set(head.state_dict()) == {"conv_seg.weight", "conv_seg.bias"}
    x = torch.randn(1, 8, 5, 6)
    torch.testing.assert_close(head([x]), head.conv_seg(x))
    with pytest.raises(ValueError, match="must equal"):
        FCNHead(8, 4, 3, num_convs=0)


def test_fcn_head_resize_concat_upsamples_to_the_first_selected_input() -> None:
    head = FCNHead(
        (2, 3), 5, 4, num_convs=1, kernel_size=1, concat_input=False,
        in_index=(1, 2), input_transform="resize_concat", align_corners=True,
    ).eval()
    assert head.in_channels == 5 and head.convs[0].conv.weight.shape == (5, 5, 1, 1)
    a, b = torch.randn(1, 2, 8, 12), torch.randn(1, 3, 4, 6)
    feats = [torch.randn(1, 7, 16, 24), a, b]
    expected_input = torch.cat(
        [a, nn.functional.interpolate(b, size=(8, 12), mode="bilinear", align_corners=True)], 1
    )
    with torch.no_grad():
        expected = head.conv_seg(head.convs(expected_input))
        torch.testing.assert_close(head(feats), expected)


def test_fcn_head_rejects_inconsistent_options() -> None:
    with pytest.raises(ValueError, match="input_transform"):
        FCNHead(8, 8, 2, input_transform="multiple_select")
    with pytest.raises(ValueError, match="resize_concat"):
        FCNHead(8, 8, 2, input_transform="resize_concat")
    with pytest.raises(ValueError, match="differ in length"):
        FCNHead((8, 8), 8, 2, in_index=(0, 1, 2), input_transform="resize_concat")
    with pytest.raises(ValueError, match="single ints"):
        FCNHead((8, 8), 8, 2)
    with pytest.raises(ValueError, match="num_convs"):
        FCNHead(8, 8, 2, num_convs=-1)


# --- converter -----------------------------------------------------------------------------------


def official_fcn_last_layer(official: dict[str, torch.Tensor], channels: int) -> nn.Sequential:
    """The official seg_hrnet head: 1x1 conv with bias, BN, ReLU, 1x1 classifier."""
    layer = nn.Sequential(
        nn.Conv2d(channels, channels, 1),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.Conv2d(channels, NUM_CLASSES, 1),
    )
    layer.load_state_dict(
        {k.removeprefix("last_layer."): v for k, v in official.items() if k.startswith("last_")}
    )
    return layer.eval()


def test_convert_official_fcn_loads_strictly_with_identical_outputs() -> None:
    torch.manual_seed(0)
    reference = randomize(build_fcn_hrnet("w18_small_v1", NUM_CLASSES, align_corners=True))
    official = to_official(reference, "fcn")
    checkpoint = {"model." + k: v for k, v in official.items()}
    checkpoint["loss.criterion.weight"] = torch.ones(NUM_CLASSES)  # FullModel's class weights

    converted = convert_hrnet_official(checkpoint)
    model = build_fcn_hrnet("w18_small_v1", NUM_CLASSES, align_corners=True).eval()
    model.load_state_dict(converted, strict=True)

    images = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        assert_close_to_scale(model(images)["decode"], reference(images)["decode"])
        # The official head (conv with bias) on the same features gives the same logits.
        feats = model.backbone(images)
        size = feats[0].shape[2:]
        concat = torch.cat(
            [nn.functional.interpolate(f, size=size, mode="bilinear", align_corners=True)
             for f in feats], 1,
        )
        last_layer = official_fcn_last_layer(official, concat.shape[1])
        expected = last_layer(concat)
        assert_close_to_scale(model.decode_head(feats), expected)


def test_convert_official_ocr_loads_strictly_with_identical_outputs() -> None:
    torch.manual_seed(0)
    reference = randomize(build_ocr_hrnet("w18_small_v1", NUM_CLASSES), seed=1)
    official = to_official(reference, "ocr")
    converted = convert_hrnet_official({"module.model." + k: v for k, v in official.items()})
    model = build_ocr_hrnet("w18_small_v1", NUM_CLASSES).eval()
    model.load_state_dict(converted, strict=True)

    images = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        ours, theirs = model(images), reference(images)
        assert_close_to_scale(ours["decode"], theirs["decode"])
        assert_close_to_scale(ours["aux"], theirs["aux"])
        # Official conv3x3_ocr (3x3 conv with bias, BN, ReLU) = our OCR bottleneck.
        channels = sum(HRNET_SPECS["w18_small_v1"].widths)
        conv3x3_ocr = nn.Sequential(nn.Conv2d(channels, 512, 3, padding=1), nn.BatchNorm2d(512))
        conv3x3_ocr.load_state_dict(
            {k.removeprefix("conv3x3_ocr."): v for k, v in official.items()
             if k.startswith("conv3x3_ocr.")}
        )
        x = torch.randn(1, channels, 6, 7)
        assert_close_to_scale(model.decode_head[1].bottleneck(x), conv3x3_ocr.eval()(x).relu())


def test_convert_official_ocr_w48_key_coverage_on_meta() -> None:
    with torch.device("meta"):
        model = BUILDERS["ocr_hrnetv2_w48"](NUM_CLASSES)
        official = to_official(model, "ocr")
        converted = convert_hrnet_official(official, head="ocr")
    assert set(converted) == set(model.state_dict())
    official_params = sum(v.numel() for k, v in official.items() if is_parameter_key(k))
    assert official_params == MMSEG_PARAMS["ocr_hrnetv2_w48"] + 720 + 512


def test_convert_backbone_only_and_old_bn_layout() -> None:
    with torch.device("meta"):
        backbone = HRNet(HRNET_SPECS["w18_small_v1"])
    official = {
        k: v for k, v in backbone.state_dict().items() if not k.endswith("num_batches_tracked")
    }
    official["incre_modules.0.0.conv1.weight"] = torch.empty(1, device="meta")
    official["classifier.weight"] = torch.empty(1, device="meta")
    converted = convert_hrnet_official(official)
    assert set(converted) == {"backbone." + k for k in backbone.state_dict()}


def test_convert_rejects_unknown_keys_and_heads() -> None:
    with pytest.raises(ValueError, match="no mmseg counterpart"):
        convert_hrnet_official({"last_layer.0.weight": torch.zeros(1), "head.x": torch.zeros(1)})
    with pytest.raises(ValueError, match="head must be"):
        convert_hrnet_official({}, head="psp")
