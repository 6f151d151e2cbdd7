"""DeepLabV3 and DeepLabV3 + MCIBI segmentors: the name -> builder table for these families.

DeepLabV3: Chen et al. 2017, "Rethinking Atrous Convolution for Semantic Image Segmentation";
settings of mmsegmentation ``configs/_base_/models/deeplabv3_r50-d8.py`` (ASPP head, 512
channels, dilations (1, 12, 24, 36), dropout 0.1; auxiliary FCN head on stage 3: 256 channels,
one conv, no concat, dropout 0.1, loss weight 0.4) and ``configs/resnest/deeplabv3_s101-d8*``.
MCIBI: Jin et al. 2021 (arXiv 2108.11819), settings of sssegmentation
(SegmentationBLWX/sssegmentation@eb1878c1) ``ssseg/configs/_base_/segmentors/mcibi.py`` and
``ssseg/configs/mcibi/mcibi_deeplabv3_*.py`` (see :mod:`trainer.models.mcibi`); per-dataset
options in :data:`MCIBI_REFERENCE_OPTIONS`.

Every builder has the signature ``(num_classes, *, align_corners=False, **opts)`` and only
allocates modules, so it works under ``with torch.device("meta"):``.

Parameter counts (backbone + heads, derived by the tests in
``tests/test_models_deeplab.py``): see :data:`PARAMETER_COUNTS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from torch import nn

from trainer.models.aspp_head import ASPP_DILATIONS_OS8, ASPPHead
from trainer.models.fcn_head import FCNHead
from trainer.models.mcibi import MCIBISegmentor, MemoryNetHead, UpsampleAuxHead, build_activation
from trainer.models.resnet import ResNeSt, ResNetV1c
from trainer.models.segmentor import EncoderDecoder
from trainer.models.vit import VIT_LARGE_16, VIT_LARGE_SSSEG_OUT_INDICES, VisionTransformer

BACKBONES = ("r50", "r101", "resnest101", "hrnetv2_w48", "vit_large")
# DeepLabV3's rates for output stride 16 (Chen et al. 2017, Sec. 4.1), used on ViT's 1/16 maps.
ASPP_DILATIONS_OS16 = (1, 6, 12, 18)
AUX_LOSS_WEIGHT = 0.4  # mmseg deeplabv3 and sssegmentation mcibi configs
HRNET_W48_WIDTHS = (48, 96, 192, 384)

# Options of the MCIBI builders per published row (sssegmentation@eb1878c1
# ssseg/configs/mcibi/mcibi_deeplabv3_* configs): ``momentum_base_lr``
# (head.update_cfg.momentum_cfg.base_lr), ``use_memory_loss`` (head.use_loss), ``act``
# (act_cfg), ``downsample_backbone`` (head.downsample_backbone.stride == 2), ``context_dilations``
# (head.context_within_image.cfg.dilations). Keys: (backbone, dataset).
MCIBI_REFERENCE_OPTIONS: dict[tuple[str, str], dict[str, object]] = {
    **{
        (b, "ade20k"): {"momentum_base_lr": lr, "use_memory_loss": True}
        for b, lr in (("r50", 0.01), ("r101", 0.01), ("resnest101", 0.004),
                      ("hrnetv2_w48", 0.004))
    },
    ("vit_large", "ade20k"): {
        "momentum_base_lr": 0.01, "use_memory_loss": True, "context_dilations": (1, 6, 12, 18)
    },
    **{
        (b, "cocostuff10k"): {"momentum_base_lr": 0.001 * 0.9, "use_memory_loss": False}
        for b in ("r50", "r101", "resnest101", "hrnetv2_w48")
    },
    ("vit_large", "cocostuff10k"): {
        "momentum_base_lr": 0.001 * 0.9, "use_memory_loss": False,
        "context_dilations": (1, 12, 24, 36),
    },
    **{
        (b, "cityscapes"): {"momentum_base_lr": 0.01 * 0.9, "use_memory_loss": False}
        for b in ("r50", "r101", "resnest101")
    },
    ("hrnetv2_w48", "cityscapes"): {
        "momentum_base_lr": 0.01 * 0.9, "use_memory_loss": False, "downsample_backbone": True
    },
    **{
        (b, "lip"): {"momentum_base_lr": 0.01, "use_memory_loss": False, "act": "leaky_relu"}
        for b in ("r50", "r101")
    },
    ("resnest101", "lip"): {"momentum_base_lr": 0.007, "use_memory_loss": False},
    ("hrnetv2_w48", "lip"): {
        "momentum_base_lr": 0.007, "use_memory_loss": False, "downsample_backbone": True
    },
}


def _resnet_backbone(name: str) -> nn.Module:
    if name == "r50":
        return ResNetV1c(50)
    if name == "r101":
        return ResNetV1c(101)
    if name == "resnest101":
        return ResNeSt(101)
    raise KeyError(name)


def _hrnet_w48(stem_relu: bool = True) -> nn.Module:
    """HRNetV2-W48; ``stem_relu`` False leaves out the ReLU after the stem's ``bn1``
    (:class:`trainer.models.hrnet.HRNet`)."""
    from trainer.models.hrnet import HRNET_SPECS, HRNet

    return HRNet(HRNET_SPECS["w48"], stem_relu=stem_relu)


def _vit_large(drop_path_rate: float, drop_rate: float = 0.1) -> VisionTransformer:
    """sssegmentation's MCIBI ViT-L/16 (jx_vit_large_p16_384 weights): img_size 512, taps
    (9, 14, 19, 23) each followed by a LayerNorm (eps 1e-6), no final norm, bilinear
    position-embedding resize; ``drop_rate``: dropout after the position embedding, in the
    attention projection and in the FFN (probability)."""
    return VisionTransformer(
        img_size=512, **VIT_LARGE_16, out_indices=VIT_LARGE_SSSEG_OUT_INDICES,
        drop_rate=drop_rate, drop_path_rate=drop_path_rate, norm_eps=1e-6, final_norm=False,
        interpolate_mode="bilinear", tap_norms=True,
    )


def _fcn_aux(in_channels: int, channels: int, num_classes: int, align_corners: bool,
             act: str = "relu") -> FCNHead:
    head = FCNHead(
        in_channels, channels, num_classes, num_convs=1, kernel_size=3, concat_input=False,
        in_index=2, dropout_ratio=0.1, align_corners=align_corners,
    )
    if act != "relu":  # the reference's LIP configs use LeakyReLU in every head
        for block in head.convs:
            block.act = build_activation(act)
    return head


def build_deeplabv3(
    backbone: str,
    num_classes: int,
    *,
    align_corners: bool = False,
    dropout_ratio: float = 0.1,
    drop_path_rate: float = 0.0,
) -> EncoderDecoder:
    """DeepLabV3 (ASPP head) on ``backbone``, with mmseg's auxiliary FCN head on stage 3.

    Args:
        backbone: one of :data:`BACKBONES`. ResNetV1c/ResNeSt: mmseg ``deeplabv3_r50-d8``
            layout (output stride 8, ASPP on stage 4, aux on stage 3). ``hrnetv2_w48``: ASPP
            over the resize-concatenation of the four branches (720 channels, 1/4), no
            auxiliary head (as sssegmentation's HRNet MCIBI configs). ``vit_large``: the
            :func:`_vit_large` backbone (1/16), ASPP rates (1, 6, 12, 18) on the last tap, aux
            on the third tap. mmseg publishes no DeepLabV3 config for the last two.
        num_classes: number of output classes.
        align_corners: for every bilinear resize.
        dropout_ratio: Dropout2d before the decode head's classifier.
        drop_path_rate: stochastic depth of ViT-L (ignored by the CNN backbones).

    Returns:
        :class:`EncoderDecoder` with outputs ``"decode"`` (and ``"aux"``), loss weights
        ``{"aux": 0.4}``.

    Raises:
        KeyError: unknown ``backbone``.
    """
    aux: nn.Module | None
    if backbone in ("r50", "r101", "resnest101"):
        net = _resnet_backbone(backbone)
        head = ASPPHead(2048, 512, num_classes, dilations=ASPP_DILATIONS_OS8, in_index=3,
                        dropout_ratio=dropout_ratio, align_corners=align_corners)
        aux = _fcn_aux(1024, 256, num_classes, align_corners)
    elif backbone == "hrnetv2_w48":
        net = _hrnet_w48()
        head = ASPPHead(list(HRNET_W48_WIDTHS), 512, num_classes, dilations=ASPP_DILATIONS_OS8,
                        in_index=(0, 1, 2, 3), input_transform="resize_concat",
                        dropout_ratio=dropout_ratio, align_corners=align_corners)
        aux = None
    elif backbone == "vit_large":
        net = _vit_large(drop_path_rate)
        head = ASPPHead(1024, 512, num_classes, dilations=ASPP_DILATIONS_OS16, in_index=3,
                        dropout_ratio=dropout_ratio, align_corners=align_corners)
        aux = _fcn_aux(1024, 256, num_classes, align_corners)
    else:
        raise KeyError(f"unknown DeepLabV3 backbone {backbone!r}; known: {BACKBONES}")
    weights = {"aux": AUX_LOSS_WEIGHT} if aux is not None else {}
    return EncoderDecoder(net, head, aux, align_corners=align_corners, loss_weights=weights)


def build_deeplabv3_mcibi(
    backbone: str,
    num_classes: int,
    *,
    align_corners: bool = False,
    momentum_base_lr: float = 0.01,
    base_momentum: float = 0.9,
    use_memory_loss: bool = True,
    act: str = "relu",
    downsample_backbone: bool = False,
    context_dilations: Sequence[int] | None = None,
    num_feats_per_cls: int = 1,
    feats_channels: int = 512,
    transform_channels: int = 256,
    out_channels: int = 512,
    dropout: float = 0.1,
    drop_path_rate: float = 0.0,
    ignore_index: int = 255,
    stem_relu: bool = False,
    backbone_drop_rate: float = 0.0,
) -> MCIBISegmentor:
    """DeepLabV3 + MCIBI as sssegmentation's ``mcibi_deeplabv3_<backbone>_<dataset>``.

    Defaults are the reference's ``ssseg/configs/_base_/segmentors/mcibi.py``
    (SegmentationBLWX/sssegmentation@eb1878c1; the ADE20K ResNet rows); the per-row
    differences are in :data:`MCIBI_REFERENCE_OPTIONS`, e.g.
    ``build_deeplabv3_mcibi("r50", 19, **MCIBI_REFERENCE_OPTIONS[("r50", "cityscapes")])``.

    Args:
        backbone: one of :data:`BACKBONES`. ResNet/ResNeSt: head on stage 4 (2048 ch, 1/8),
            auxiliary FCN head on stage 3 (1024 -> 512 channels, one 3x3 conv, weight 0.4).
            HRNetV2-W48: head on the 720-channel resize-concatenation (1/4, or 1/8 with
            ``downsample_backbone``), no auxiliary head. ViT-L: head on the normed last tap
            (1024 ch, 1/16), three :class:`UpsampleAuxHead` on taps 9, 14, 19 (weight 0.4 each).
        num_classes: number of classes (the memory holds one row per class and slot).
        align_corners: for every bilinear resize.
        momentum_base_lr, base_momentum: memory momentum = base_momentum * lr /
            momentum_base_lr.
        use_memory_loss: classify the stored memory from epoch 2 on (ADE20K rows).
        act: "relu" or "leaky_relu" (LIP ResNet rows) for every head block.
        downsample_backbone: 3x3 stride-2 conv-BN-act on the backbone map first (HRNet
            Cityscapes/LIP rows).
        context_dilations: ASPP rates of the within-image context; None = (1, 12, 24, 36).
        num_feats_per_cls, feats_channels, transform_channels, out_channels, dropout: head
            widths (reference 1, 512, 256, 512, 0.1).
        drop_path_rate: stochastic depth of ViT-L.
        ignore_index: label skipped by the memory update.
        stem_relu: HRNetV2-W48 only: ReLU after the stem's ``bn1``. False (default) is the
            stem that trained the published MCIBI HRNet models: sssegmentation's
            ``backbones/hrnet.py`` had conv1-bn1-conv2-bn2-relu until 2025-06 (4602275d), and
            since 85efec48 keeps it under ``mcibi_version=True`` ("to align with paper
            results"), which ``mcibi_deeplabv3_hrnetv2w48_cityscapes.py`` sets.
        backbone_drop_rate: ViT-L only: dropout probability of the backbone (its
            ``drop_rate``): 0.0 in ``mcibi_deeplabv3_vitlarge_{ade20k,cocostuff10k}.py`` since
            c99d1e5c (2025-08-16; 0.1 before).

    Returns:
        :class:`~trainer.models.mcibi.MCIBISegmentor`; loss weights ``{"stage1": 0.4, "aux":
        0.4 (or "aux0".."aux2")}`` (``"decode"`` weighs 1); ``memory_loss_weight`` 1.0.

    Raises:
        KeyError: unknown ``backbone``.
        ValueError: unknown ``act``.
    """
    build_activation(act)  # validate early
    dilations = tuple(context_dilations) if context_dilations is not None else ASPP_DILATIONS_OS8
    concat, aux, down_channels = False, None, None
    weights: dict[str, float] = {"stage1": AUX_LOSS_WEIGHT}
    if backbone in ("r50", "r101", "resnest101"):
        net, in_channels = _resnet_backbone(backbone), 2048
        aux = _fcn_aux(1024, 512, num_classes, align_corners, act)
        weights["aux"] = AUX_LOSS_WEIGHT
    elif backbone == "hrnetv2_w48":
        net, in_channels, concat = _hrnet_w48(stem_relu), sum(HRNET_W48_WIDTHS), True
    elif backbone == "vit_large":
        net, in_channels = _vit_large(drop_path_rate, backbone_drop_rate), 1024
        aux = [
            UpsampleAuxHead(1024, 512, num_classes, in_index=i, num_convs=2, scale_factor=4,
                            dropout=0.1, act=act)
            for i in range(3)
        ]
        weights.update({f"aux{i}": AUX_LOSS_WEIGHT for i in range(3)})
    else:
        raise KeyError(f"unknown MCIBI backbone {backbone!r}; known: {BACKBONES}")
    if downsample_backbone:
        down_channels = in_channels
    head = MemoryNetHead(
        in_channels, num_classes, feats_channels=feats_channels,
        transform_channels=transform_channels, out_channels=out_channels,
        num_feats_per_cls=num_feats_per_cls, context_dilations=dilations, dropout=dropout,
        act=act, align_corners=align_corners,
    )
    return MCIBISegmentor(
        net, head, aux, align_corners=align_corners, loss_weights=weights,
        concat_inputs=concat, downsample_channels=down_channels, base_momentum=base_momentum,
        momentum_base_lr=momentum_base_lr, use_memory_loss=use_memory_loss,
        ignore_index=ignore_index, act=act,
    )


BUILDERS: dict[str, Callable[..., EncoderDecoder]] = {
    **{f"deeplabv3_{b}": partial(build_deeplabv3, b) for b in BACKBONES},
    **{f"deeplabv3_mcibi_{b}": partial(build_deeplabv3_mcibi, b) for b in BACKBONES},
}

# Parameter elements (builder defaults) for 19 and 150 classes, checked by the tests. The
# ResNet totals match mmseg's published DeepLabV3 sizes (R-50-D8 68.1M, R-101-D8 87.1M).
# Backbones alone: ResNetV1c-50 23,527,264; -101 42,519,392; ResNeSt-101 46,226,016;
# HRNetV2-W48 65,325,120; ViT-L/16 (512 grid, tap norms) 304,155,648. The memory buffer is not
# a parameter.
PARAMETER_COUNTS: dict[tuple[str, int], int] = {
    ("deeplabv3_r50", 19): 68_113_030,
    ("deeplabv3_r50", 150): 68_213_900,
    ("deeplabv3_r101", 19): 87_105_158,
    ("deeplabv3_r101", 150): 87_206_028,
    ("deeplabv3_resnest101", 19): 90_811_782,
    ("deeplabv3_resnest101", 150): 90_912_652,
    ("deeplabv3_hrnetv2_w48", 19): 87_828_051,
    ("deeplabv3_hrnetv2_w48", 150): 87_895_254,
    ("deeplabv3_vit_large", 19): 333_537_062,
    ("deeplabv3_vit_large", 150): 333_637_932,
    ("deeplabv3_mcibi_r50", 19): 91_209_113,
    ("deeplabv3_mcibi_r50", 150): 91_410_722,
    ("deeplabv3_mcibi_r101", 19): 110_201_241,
    ("deeplabv3_mcibi_r101", 150): 110_402_850,
    ("deeplabv3_mcibi_resnest101", 19): 113_907_865,
    ("deeplabv3_mcibi_resnest101", 150): 114_109_474,
    ("deeplabv3_mcibi_hrnetv2_w48", 19): 102_440_038,
    ("deeplabv3_mcibi_hrnetv2_w48", 150): 102_574_444,
    ("deeplabv3_mcibi_vit_large", 19): 368_454_239,
    ("deeplabv3_mcibi_vit_large", 150): 368_790_254,
}


__all__ = [
    "ASPP_DILATIONS_OS16",
    "BACKBONES",
    "BUILDERS",
    "MCIBI_REFERENCE_OPTIONS",
    "PARAMETER_COUNTS",
    "build_deeplabv3",
    "build_deeplabv3_mcibi",
]
