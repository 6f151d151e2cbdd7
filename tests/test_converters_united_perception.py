"""United-Perception segmentation checkpoints (the seg benchmark's 0.2.0 release files) through
:mod:`trainer.models.converters.united_perception` and ``load_pretrained``.

The UP side is written here from ModelTC/United-Perception@52aaeb9ed27a, independently of the
converter: the heads of ``up/tasks/seg/models/decoder/ocrnet.py`` (``Seghead`` = ``hr_seg_head``,
``OCR`` = ``ocr_head`` with ``SpatialGather_Module``, ``_ObjectAttentionBlock``,
``SpatialOCR_Module``) and ``decoder/segformer_decoder.py`` (``SegFormerHead`` on
``components.py`` ``ConvBnRelu``), without their loss modules (no tensors), and a
``ModelHelper``-like container (``up/models/model_helper.py``: children ``encoder`` and
``decoder``). The encoders reuse segctl's HRNet and MiT, whose parameter names are those of
``encoder/hrnet.py`` and ``encoder/segformer_encoder.py`` (checked key by key below, against
names read by hand from those files). An inverse name table (segctl -> UP) makes UP-format
checkpoints of the full-size models on the meta device; the transcribed UP modules must have
exactly those keys. Checkpoint containers follow ``BaseRunner.get_dump_dict``
(``up/runner/base_runner.py``), ``ExpEMA.state_dict`` (``up/utils/model/ema_helper.py``) and
``AutoSaveBest._save_best`` (``up/utils/general/hook_helper.py``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.test_models_hrnet import randomize
from trainer.models import build_segmentor
from trainer.models.converters.pretrained import detect_kind, load_pretrained, unwrap_checkpoint
from trainer.models.converters.united_perception import (
    convert_united_perception,
    detect_decoder,
)
from trainer.models.hrnet import HRNET_SPECS, HRNet
from trainer.models.hrnet_zoo import build_fcn_hrnet, build_ocr_hrnet
from trainer.models.mit import MixVisionTransformer

NUM_CLASSES = 19


# --- United-Perception modules, transcribed from up/tasks/seg/models (loss modules left out) ------


class UPSeghead(nn.Module):
    """decoder/ocrnet.py ``Seghead`` (``hr_seg_head``): ``last_layer`` = Conv2d 1x1 (bias),
    BN, ReLU, Conv2d 1x1 (bias); logits resized to the image by ``nn.UpsamplingBilinear2d``."""

    def __init__(self, inplanes, num_classes=19):
        super().__init__()
        last_inp_channels = int(sum(inplanes))
        self.last_layer = nn.Sequential(
            nn.Conv2d(last_inp_channels, last_inp_channels, kernel_size=1, stride=1, padding=0),
            nn.BatchNorm2d(last_inp_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(last_inp_channels, num_classes, kernel_size=1, stride=1, padding=0),
        )

    def forward(self, input):
        x = self.last_layer(input["features"])
        return {"blob_pred": nn.UpsamplingBilinear2d(size=input["size"])(x)}


class UPSpatialGather(nn.Module):
    """decoder/ocrnet.py ``SpatialGather_Module`` (scale 1)."""

    def forward(self, feats, probs):
        batch_size, c = probs.size(0), probs.size(1)
        probs = probs.view(batch_size, c, -1)
        feats = feats.view(batch_size, feats.size(1), -1).permute(0, 2, 1)
        probs = F.softmax(probs, dim=2)
        return torch.matmul(probs, feats).permute(0, 2, 1).unsqueeze(3)


class UPObjectAttentionBlock(nn.Module):
    """decoder/ocrnet.py ``_ObjectAttentionBlock`` (scale 1, solo BN)."""

    def __init__(self, in_channels, key_channels):
        super().__init__()
        self.key_channels = key_channels

        def conv_bn_relu(cin, cout):
            return [nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.f_pixel = nn.Sequential(*conv_bn_relu(in_channels, key_channels),
                                     *conv_bn_relu(key_channels, key_channels))
        self.f_object = nn.Sequential(*conv_bn_relu(in_channels, key_channels),
                                      *conv_bn_relu(key_channels, key_channels))
        self.f_down = nn.Sequential(*conv_bn_relu(in_channels, key_channels))
        self.f_up = nn.Sequential(*conv_bn_relu(key_channels, in_channels))

    def forward(self, x, proxy):
        batch_size = x.size(0)
        query = self.f_pixel(x).view(batch_size, self.key_channels, -1).permute(0, 2, 1)
        key = self.f_object(proxy).view(batch_size, self.key_channels, -1)
        value = self.f_down(proxy).view(batch_size, self.key_channels, -1).permute(0, 2, 1)
        sim_map = F.softmax((self.key_channels ** -.5) * torch.matmul(query, key), dim=-1)
        context = torch.matmul(sim_map, value).permute(0, 2, 1).contiguous()
        context = context.view(batch_size, self.key_channels, *x.size()[2:])
        return self.f_up(context)


class UPSpatialOCR(nn.Module):
    """decoder/ocrnet.py ``SpatialOCR_Module``: object context, then ``conv_bn_dropout``."""

    def __init__(self, in_channels, key_channels, out_channels, dropout=0.05):
        super().__init__()
        self.object_context_block = UPObjectAttentionBlock(in_channels, key_channels)
        self.conv_bn_dropout = nn.Sequential(
            nn.Conv2d(2 * in_channels, out_channels, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(), nn.Dropout2d(dropout))

    def forward(self, feats, proxy_feats):
        context = self.object_context_block(feats, proxy_feats)
        return self.conv_bn_dropout(torch.cat([context, feats], 1))


class UPOCR(nn.Module):
    """decoder/ocrnet.py ``OCR`` (``ocr_head``): widths 512 / 256; conv biases on
    ``conv3x3_ocr.0``, ``aux_head.0``, ``aux_head.3`` and ``cls_head``."""

    def __init__(self, inplanes, num_classes=19):
        super().__init__()
        last_inp_channels = int(sum(inplanes))
        ocr_mid_channels, ocr_key_channels = 512, 256
        self.conv3x3_ocr = nn.Sequential(
            nn.Conv2d(last_inp_channels, ocr_mid_channels, kernel_size=3, stride=1, padding=1),
            nn.BatchNorm2d(ocr_mid_channels), nn.ReLU())
        self.ocr_gather_head = UPSpatialGather()
        self.ocr_distri_head = UPSpatialOCR(ocr_mid_channels, ocr_key_channels, ocr_mid_channels)
        self.cls_head = nn.Conv2d(ocr_mid_channels, num_classes, 1, stride=1, padding=0, bias=True)
        self.aux_head = nn.Sequential(
            nn.Conv2d(last_inp_channels, last_inp_channels, 1, stride=1, padding=0),
            nn.BatchNorm2d(last_inp_channels), nn.ReLU(),
            nn.Conv2d(last_inp_channels, num_classes, 1, stride=1, padding=0, bias=True))

    def forward(self, input):
        feats = input["features"]
        out_aux = self.aux_head(feats)
        feats = self.conv3x3_ocr(feats)
        context = self.ocr_gather_head(feats, out_aux)
        out = self.cls_head(self.ocr_distri_head(feats, context))
        upsample = nn.UpsamplingBilinear2d(size=input["size"])
        return {"blob_pred": upsample(out), "aux_pred": upsample(out_aux)}


class UPConvBnRelu(nn.Module):
    """components.py ``ConvBnRelu`` (no conv bias, ``bn``, ``relu``)."""

    def __init__(self, in_planes, out_planes):
        super().__init__()
        self.conv = nn.Conv2d(in_planes, out_planes, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class UPSegFormerHead(nn.Module):
    """decoder/segformer_decoder.py ``SegFormerHead`` (channels 256, dropout 0.1,
    align_corners False)."""

    def __init__(self, in_channels, channels=256, num_classes=19):
        super().__init__()
        self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)
        self.dropout = nn.Dropout2d(0.1)
        self.convs = nn.ModuleList(UPConvBnRelu(c, channels) for c in in_channels)
        self.fusion_conv = UPConvBnRelu(channels * len(in_channels), channels)

    def forward(self, inputs):
        x = inputs["features"]
        outs = [F.interpolate(conv(f), size=x[0].shape[2:], mode="bilinear", align_corners=False)
                for conv, f in zip(self.convs, x)]
        out = self.conv_seg(self.dropout(self.fusion_conv(torch.cat(outs, dim=1))))
        return {"blob_pred": F.interpolate(out, size=inputs["size"], mode="bilinear",
                                           align_corners=False)}


class UPHRNetEncoder(HRNet):
    """encoder/hrnet.py ``HighResolutionNet``: segctl's HRNet (same names; fusion upsampling
    ``nn.UpsamplingBilinear2d``, i.e. ``fuse_align_corners=True``), whose four branches are
    upsampled to the first with ``nn.UpsamplingBilinear2d`` and concatenated."""

    def forward(self, input):
        x = super().forward(input["image"])
        upsample = nn.UpsamplingBilinear2d(size=x[0].shape[2:])
        feats = torch.cat([x[0], *(upsample(t) for t in x[1:])], 1)
        return {"features": feats, "size": input["image"].shape[2:]}


class UPMiTEncoder(MixVisionTransformer):
    """encoder/segformer_encoder.py ``MixVisionTransformer``: segctl's MiT (same names)."""

    def forward(self, input):
        return {"features": super().forward(input["image"]), "size": input["image"].shape[2:]}


class UPModel(nn.Module):
    """up/models/model_helper.py ``ModelHelper``: children ``encoder`` then ``decoder``."""

    def __init__(self, encoder, decoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, image):
        out = self.encoder({"image": image})
        return self.decoder(out)


# --- inverse name table: segctl -> UP, independent of the converter ----------------------------

SEGFORMER_TO_UP = [("backbone.", "encoder."), ("decode_head.", "decoder.")]
FCN_TO_UP = [
    ("backbone.", "encoder."),
    ("decode_head.convs.0.conv.", "decoder.last_layer.0."),
    ("decode_head.convs.0.bn.", "decoder.last_layer.1."),
    ("decode_head.conv_seg.", "decoder.last_layer.3."),
]
OCB = "decode_head.1.object_context_block."
UP_OCB = "decoder.ocr_distri_head.object_context_block."
OCR_TO_UP = [
    ("backbone.", "encoder."),
    ("decode_head.0.convs.0.conv.", "decoder.aux_head.0."),
    ("decode_head.0.convs.0.bn.", "decoder.aux_head.1."),
    ("decode_head.0.conv_seg.", "decoder.aux_head.3."),
    ("decode_head.1.bottleneck.conv.", "decoder.conv3x3_ocr.0."),
    ("decode_head.1.bottleneck.bn.", "decoder.conv3x3_ocr.1."),
    (OCB + "query_project.0.conv.", UP_OCB + "f_pixel.0."),
    (OCB + "query_project.0.bn.", UP_OCB + "f_pixel.1."),
    (OCB + "query_project.1.conv.", UP_OCB + "f_pixel.3."),
    (OCB + "query_project.1.bn.", UP_OCB + "f_pixel.4."),
    (OCB + "key_project.0.conv.", UP_OCB + "f_object.0."),
    (OCB + "key_project.0.bn.", UP_OCB + "f_object.1."),
    (OCB + "key_project.1.conv.", UP_OCB + "f_object.3."),
    (OCB + "key_project.1.bn.", UP_OCB + "f_object.4."),
    (OCB + "value_project.conv.", UP_OCB + "f_down.0."),
    (OCB + "value_project.bn.", UP_OCB + "f_down.1."),
    (OCB + "out_project.conv.", UP_OCB + "f_up.0."),
    (OCB + "out_project.bn.", UP_OCB + "f_up.1."),
    (OCB + "bottleneck.conv.", "decoder.ocr_distri_head.conv_bn_dropout.0."),
    (OCB + "bottleneck.bn.", "decoder.ocr_distri_head.conv_bn_dropout.1."),
    ("decode_head.1.conv_seg.", "decoder.cls_head."),
]
TABLES = {"segformer": SEGFORMER_TO_UP, "fcn": FCN_TO_UP, "ocr": OCR_TO_UP}
#: UP conv biases before a BatchNorm (no segctl slot): (bias key, that BatchNorm's prefix).
UP_BIASES = {
    "segformer": [],
    "fcn": [("decoder.last_layer.0.bias", "decoder.last_layer.1.")],
    "ocr": [("decoder.aux_head.0.bias", "decoder.aux_head.1."),
            ("decoder.conv3x3_ocr.0.bias", "decoder.conv3x3_ocr.1.")],
}
#: Keys read by hand from the UP source (module attribute names and Sequential indices).
HAND_CHECKED = {
    "segformer_mit_b0": [
        "encoder.layers.0.0.projection.weight",           # PatchEmbed.projection
        "encoder.layers.0.1.0.attn.attn.in_proj_weight",  # EfficientMultiheadAttention.attn
        "encoder.layers.0.1.1.attn.sr.weight",            # sr_ratio 8 > 1
        "encoder.layers.1.1.1.ffn.layers.1.weight",       # MixFFN pe_conv
        "encoder.layers.3.2.bias",                        # per-stage norm
        "decoder.convs.3.conv.weight",                    # ConvBnRelu.conv
        "decoder.fusion_conv.bn.running_var",             # ConvBnRelu.bn
        "decoder.conv_seg.bias",
    ],
    "fcn_hrnetv2_w18": [
        "encoder.conv2.weight", "encoder.bn2.running_mean",
        "encoder.layer1.0.downsample.1.weight",           # _make_layer downsample
        "encoder.transition1.1.0.0.weight",  # new branch: Sequential(Sequential(conv, ..))
        "encoder.stage4.2.fuse_layers.3.0.2.1.running_var",  # 3 conv3x3s from branch 0 to 3
        "encoder.stage3.3.branches.2.3.bn2.weight",
        "decoder.last_layer.0.bias", "decoder.last_layer.1.running_mean",
        "decoder.last_layer.3.weight",
    ],
    "ocr_hrnetv2_w48": [
        "decoder.aux_head.0.bias", "decoder.aux_head.3.weight",
        "decoder.conv3x3_ocr.0.bias", "decoder.conv3x3_ocr.1.weight",
        "decoder.ocr_distri_head.object_context_block.f_pixel.3.weight",
        "decoder.ocr_distri_head.object_context_block.f_object.4.running_mean",
        "decoder.ocr_distri_head.object_context_block.f_up.1.bias",
        "decoder.ocr_distri_head.conv_bn_dropout.1.num_batches_tracked",
        "decoder.cls_head.bias",
    ],
}
HEAD_OF = {"segformer_mit_b0": "segformer", "fcn_hrnetv2_w18": "fcn", "ocr_hrnetv2_w48": "ocr"}


def up_name(key: str, table: list[tuple[str, str]]) -> str:
    for ours, theirs in sorted(table, key=lambda pair: -len(pair[0])):
        if key.startswith(ours):
            return theirs + key[len(ours):]
    raise AssertionError(f"no UP name for {key}")


def to_up(state: dict[str, torch.Tensor], head: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A UP-format state dict computing what ``state`` computes (eval mode): each UP conv bias
    b before a BatchNorm is random and that BatchNorm's running mean becomes m + b, so
    BN(conv(x) + b) with mean m + b equals segctl's BN(conv(x)) with mean m."""
    up = {up_name(k, TABLES[head]): v.clone() for k, v in state.items()}
    gen = torch.Generator().manual_seed(seed)
    for bias_key, bn in UP_BIASES[head]:
        mean = up[bn + "running_mean"]
        if mean.is_meta:
            up[bias_key] = torch.empty_like(mean)
        else:
            bias = torch.randn(mean.shape, generator=gen)
            up[bias_key] = bias
            up[bn + "running_mean"] = mean + bias
    return up


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to rounding relative to the tensor's scale (folding a bias into the running
    mean changes only the rounding of (Wx + b) - m against Wx - (m - b)): 1e-5 in float32,
    1e-9 in float64."""
    scale = expected.abs().max().item()
    tol = 1e-9 if expected.dtype == torch.float64 else 1e-5
    torch.testing.assert_close(actual, expected, atol=tol * scale, rtol=tol)


def up_meta_model(name: str) -> UPModel:
    """The transcribed UP model of a segctl preset, on the meta device."""
    with torch.device("meta"):
        if name == "segformer_mit_b0":
            encoder = UPMiTEncoder(embed_dims=32, num_layers=(2, 2, 2, 2))
            return UPModel(encoder, UPSegFormerHead(encoder.out_channels))
        variant = {"fcn_hrnetv2_w18": "w18", "ocr_hrnetv2_w48": "w48"}[name]
        spec = HRNET_SPECS[variant]
        head = UPSeghead if name.startswith("fcn") else UPOCR
        return UPModel(UPHRNetEncoder(spec, fuse_align_corners=True), head(spec.widths))


# --- key names -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(HEAD_OF))
def test_inverse_table_gives_the_transcribed_up_keys_and_converts_back(name):
    head = HEAD_OF[name]
    with torch.device("meta"):
        model = build_segmentor(name, NUM_CLASSES)
    ours = model.state_dict()
    up = to_up(ours, head)
    assert set(up) == set(up_meta_model(name).state_dict())
    assert set(HAND_CHECKED[name]) <= set(up), sorted(set(HAND_CHECKED[name]) - set(up))
    assert detect_kind(list(up)) == "united_perception" and detect_decoder(list(up)) == head

    converted, dropped = convert_united_perception(up)
    assert set(converted) == set(ours) and dropped == []
    for key, value in converted.items():
        assert value.shape == ours[key].shape, key
    params = sum(v.numel() for k, v in up.items()
                 if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    folded = sum(up[bias].numel() for bias, _ in UP_BIASES[head])
    assert params == sum(p.numel() for p in model.parameters()) + folded


# --- numerics: the transcribed UP models against the converted segctl models -------------------


def _up_checkpoint(up_model: UPModel, ema: bool) -> dict:
    """BaseRunner.get_dump_dict of a distributed run: ``model`` from the DistModule
    (``module.`` keys), ``ema`` = ExpEMA.state_dict() (the EMA copy, no prefix)."""
    state = up_model.state_dict()
    raw = {f"module.{k}": (v + 1.0 if v.is_floating_point() else v) for k, v in state.items()}
    checkpoint = {"epoch": 180, "iter": 66960, "optimizer": {"state": {}, "param_groups": []},
                  "model": raw, "lr_scheduler": {"last_epoch": 66960, "base_lrs": [0.005]},
                  "metric_val": -1}
    if ema:
        checkpoint["ema"] = {"ema_state_dict": state, "decay": 0.9998, "warmup": 1,
                             "inner_T": 1}
    else:
        checkpoint["model"] = {f"module.{k}": v for k, v in state.items()}
    return checkpoint


def test_hr_seg_head_checkpoint_gives_up_logits():
    torch.manual_seed(0)
    spec = HRNET_SPECS["w18_small_v1"]
    up_model = randomize(UPModel(UPHRNetEncoder(spec, fuse_align_corners=True),
                                 UPSeghead(spec.widths)), seed=1)
    model = build_fcn_hrnet("w18_small_v1", NUM_CLASSES, align_corners=True,
                            fuse_align_corners=True).eval()
    report = load_pretrained(model, _up_checkpoint(up_model, ema=True), require_full=True)
    assert (report.kind, report.target, report.strict) == ("united_perception", "model", True)
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert_close_to_scale(model.encode_decode(images), up_model(images)["blob_pred"])
        # and the head alone: UP's conv with bias + BN = segctl's conv + BN with folded mean
        feats = torch.randn(2, sum(spec.widths), 9, 13)
        logits = model.decode_head.classify(model.decode_head.convs(feats))
        assert_close_to_scale(logits, up_model.decoder.last_layer(feats))


def test_ocr_head_checkpoint_gives_up_logits_for_both_stages():
    torch.manual_seed(0)
    spec = HRNET_SPECS["w18_small_v1"]
    up_model = randomize(UPModel(UPHRNetEncoder(spec, fuse_align_corners=True),
                                 UPOCR(spec.widths)), seed=2)
    model = build_ocr_hrnet("w18_small_v1", NUM_CLASSES, align_corners=True,
                            fuse_align_corners=True, dropout_ratio=0.05).eval()
    # float64 (weights, fold and forward): with random weights the OCR softmaxes (over
    # positions, over objects) are sharp and magnify float32 rounding of the folded bias to
    # ~1e-4 of the logits' scale; in float64 the two agree to 1e-9 (exactly when UP's biases
    # are 0).
    up_model.double()
    model.double()
    load_pretrained(model, _up_checkpoint(up_model, ema=False), require_full=True)
    images = torch.randn(1, 3, 64, 128, dtype=torch.float64)
    with torch.no_grad():
        expected = up_model(images)
        assert_close_to_scale(model.encode_decode(images), expected["blob_pred"])
        outputs = model(images)
        aux = F.interpolate(outputs["aux"], size=images.shape[2:], mode="bilinear",
                            align_corners=True)
        assert_close_to_scale(aux, expected["aux_pred"])


def test_segformer_checkpoint_gives_up_logits():
    torch.manual_seed(0)
    encoder = UPMiTEncoder(embed_dims=32, num_layers=(2, 2, 2, 2))
    up_model = randomize(UPModel(encoder, UPSegFormerHead(encoder.out_channels)), seed=3)
    model = build_segmentor("segformer_mit_b0", NUM_CLASSES).eval()
    # ckpt_best.pth of the auto_save_best hook: weights under state_dict, ema {}
    best = {"epoch": 430, "iter": 160000, "state_dict": up_model.state_dict(), "ema": {},
            "optimizer": {}, "lr_scheduler": {}, "metric_val": 75.28}
    load_pretrained(model, best, require_full=True)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert_close_to_scale(model.encode_decode(images), up_model(images)["blob_pred"])


# --- containers, files, init_checkpoint, errors -------------------------------------------------


def test_ema_weights_win_and_module_prefixes_go():
    with torch.device("meta"):
        model = build_segmentor("fcn_hrnetv2_w18", NUM_CLASSES)
    up = to_up(model.state_dict(), "fcn")
    ema = {k: torch.zeros(1) for k in up}
    state, _ = unwrap_checkpoint({"model": {f"module.{k}": v for k, v in up.items()},
                                  "ema": {"ema_state_dict": ema, "decay": 0.9998}})
    assert set(state) == set(ema) and all(state[k] is ema[k] for k in ema)
    state, _ = unwrap_checkpoint({"model": {f"module.{k}": v for k, v in up.items()}, "ema": {}})
    assert set(state) == set(up)


def test_published_file_loads_through_a_path_and_as_init_checkpoint(tmp_path):
    """A saved file (tensors, ints, floats, dicts: readable with weights_only=True), loaded by
    ``load_pretrained`` from its path (segctl eval --published reads the cached file so) and by
    ``build_model`` through ``model.init_checkpoint``."""
    from tests.trainer_runs import small_recipe
    from trainer.models.build import build_model

    torch.manual_seed(4)
    spec = HRNET_SPECS["w18_small_v1"]
    up_model = randomize(UPModel(UPHRNetEncoder(spec, fuse_align_corners=True),
                                 UPSeghead(spec.widths)), seed=4)
    path = tmp_path / "hrnet18_small_v1.pth"
    torch.save(_up_checkpoint(up_model, ema=True), path)

    model = build_fcn_hrnet("w18_small_v1", NUM_CLASSES, align_corners=True,
                            fuse_align_corners=True).eval()
    report = load_pretrained(model, path, require_full=True)
    assert report.kind == "united_perception" and report.source == str(path)

    recipe = small_recipe(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}", model={
        "name": "fcn_hrnetv2_w18_small_v1", "init_checkpoint": str(path),
        "options": {"align_corners": True, "fuse_align_corners": True}})
    built = build_model(recipe).eval()  # Cityscapes: 19 classes
    images = torch.randn(1, 3, 32, 64)
    with torch.no_grad():
        assert_close_to_scale(built.encode_decode(images), up_model(images)["blob_pred"])


def test_encoder_only_file_fills_the_backbone_strictly():
    torch.manual_seed(5)
    source = randomize(build_segmentor("segformer_mit_b0", NUM_CLASSES), seed=5)
    encoder = {"encoder." + k: v for k, v in source.backbone.state_dict().items()}
    target = build_segmentor("segformer_mit_b0", NUM_CLASSES).eval()
    report = load_pretrained(target, {"model": encoder})
    assert (report.kind, report.target, report.strict) == ("united_perception", "backbone", True)
    with pytest.raises(ValueError, match="backbone only"):
        load_pretrained(build_segmentor("segformer_mit_b0", NUM_CLASSES), {"model": encoder},
                        require_full=True)


def test_missing_counters_are_added_and_loss_tensors_dropped():
    with torch.device("meta"):
        model = build_segmentor("ocr_hrnetv2_w48", NUM_CLASSES)
    up = {k: v for k, v in to_up(model.state_dict(), "ocr").items()
          if not k.endswith("num_batches_tracked")}   # linklink SyncBatchNorm keeps none
    up["decoder.loss._criterion1.criterion.weight"] = torch.empty(NUM_CLASSES, device="meta")
    converted, dropped = convert_united_perception(up)
    assert set(converted) == set(model.state_dict())
    assert dropped == ["decoder.loss._criterion1.criterion.weight"]


def test_unknown_keys_bad_head_and_unfoldable_bias_are_errors():
    base = {"encoder.conv1.weight": torch.zeros(1), "decoder.last_layer.3.bias": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"no segctl counterpart.*decoder\.last_layer\.7\.weight"):
        convert_united_perception({**base, "decoder.last_layer.7.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="head must be one of"):
        convert_united_perception(base, head="psp")
    with pytest.raises(ValueError, match="cannot fold decoder.last_layer.0.bias"):
        convert_united_perception({**base, "decoder.last_layer.0.bias": torch.zeros(1)})
    with pytest.raises(ValueError, match="does not fit the model"):
        load_pretrained(build_segmentor("fcn_hrnetv2_w18_small_v1", NUM_CLASSES),
                        {"model": {"encoder.conv1.weight": torch.zeros(1),
                                   "decoder.last_layer.3.bias": torch.zeros(NUM_CLASSES)}})


def test_other_formats_are_not_taken_for_united_perception():
    assert detect_kind(["backbone.conv1.weight", "decode_head.conv_seg.weight"]) == "mmseg"
    assert detect_kind(["model.last_layer.0.weight", "model.conv1.weight"]) == "hrnet_official"
    assert detect_kind(["decoder.conv_seg.weight"]) != "united_perception"  # no encoder
    assert detect_kind(["encoder.x", "head.fc.weight"]) != "united_perception"
