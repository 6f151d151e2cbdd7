"""HRNetV2 segmentors: FCN (HRNetV2 paper) and OCRNet heads on the four HRNet variants.

Head settings follow mmsegmentation 1.x ``configs/_base_/models/fcn_hr18.py`` and
``ocrnet_hr18.py``; parameter names follow its checkpoints (``strict=True`` loading). Official
HRNet-Semantic-Segmentation checkpoints are converted by
:mod:`trainer.models.converters.hrnet_official`. Builders only allocate modules, so they work
under ``with torch.device("meta"):``.

Parameter counts, 19 classes: FCN W18-Small-v1 1,540,579; W18-Small-v2 3,939,309;
W18 9,640,849; W48 65,858,659 (the official models have sum(widths) more: the bias of their
first head conv). OCR W48 70,371,446.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from trainer.models.cascade import CascadeEncoderDecoder
from trainer.models.fcn_head import FCNHead
from trainer.models.hrnet import HRNET_SPECS, HRNet
from trainer.models.ocr_head import OCRHead
from trainer.models.segmentor import EncoderDecoder

# OCRNet widths (Yuan et al. 2020; mmseg ocrnet_hr18.py; official OCR MID/KEY_CHANNELS).
OCR_CHANNELS = 512
OCR_KEY_CHANNELS = 256
# mmseg ocrnet_hr18.py: FCN (soft object regions) stage loss 0.4, OCR stage 1.0.
OCR_LOSS_WEIGHTS = {"aux": 0.4}


def _fcn_head(
    widths: tuple[int, ...], num_classes: int, dropout_ratio: float, align_corners: bool
) -> FCNHead:
    """mmseg fcn_hr18.py head: resize-concat all branches, one 1x1 ConvBNReLU, classifier."""
    return FCNHead(
        in_channels=widths,
        channels=sum(widths),
        num_classes=num_classes,
        num_convs=1,
        kernel_size=1,
        concat_input=False,
        in_index=tuple(range(len(widths))),
        input_transform="resize_concat",
        dropout_ratio=dropout_ratio,
        align_corners=align_corners,
    )


def build_fcn_hrnet(
    variant: str,
    num_classes: int,
    *,
    align_corners: bool = False,
    fuse_align_corners: bool = False,
    dropout_ratio: float = 0.0,
    stem_relu: bool = True,
) -> EncoderDecoder:
    """HRNetV2-``variant`` + FCN head (Wang et al. 2020; mmseg ``configs/hrnet/fcn_hr*``).

    Args:
        variant: a key of :data:`~trainer.models.hrnet.HRNET_SPECS` ("w18_small_v1",
            "w18_small_v2", "w18", "w48").
        num_classes: number of output classes.
        align_corners: for the head's resize-concat and the segmentor's final resize (mmseg
            False; the official configs True).
        fuse_align_corners: the backbone's fusion upsampling (see
            :class:`~trainer.models.hrnet.HRModule`); set it and ``align_corners`` to True to
            reproduce the official code's numerics with converted official weights.
        dropout_ratio: Dropout2d probability before the classifier; 0 (the default) builds no
            Dropout module. mmseg's ``configs/_base_/models/fcn_hr18.py`` sets
            ``dropout_ratio=-1`` (no dropout) and the official head has none either.
        stem_relu: ReLU after the stem's ``bn1`` (see :class:`~trainer.models.hrnet.HRNet`;
            False is sssegmentation's stem). Parameter names do not change.

    Returns:
        An :class:`EncoderDecoder` whose forward gives ``{"decode": (N, num_classes, H/4, W/4)}``.

    Raises:
        KeyError: unknown ``variant``.
        ValueError: ``dropout_ratio`` outside [0, 1).
    """
    spec = HRNET_SPECS[variant]
    if dropout_ratio < 0 or dropout_ratio >= 1:
        raise ValueError(f"dropout_ratio must be in [0, 1), got {dropout_ratio}")
    backbone = HRNet(spec, fuse_align_corners=fuse_align_corners, stem_relu=stem_relu)
    head = _fcn_head(spec.widths, num_classes, dropout_ratio, align_corners)
    return EncoderDecoder(backbone, head, align_corners=align_corners)


def build_ocr_hrnet(
    variant: str,
    num_classes: int,
    *,
    align_corners: bool = False,
    fuse_align_corners: bool = False,
    dropout_ratio: float = 0.0,
    stem_relu: bool = True,
) -> CascadeEncoderDecoder:
    """HRNetV2-``variant`` + OCRNet (Yuan et al. 2020; mmseg ``configs/ocrnet/ocrnet_hr*``).

    ``decode_head.0`` is the FCN head of :func:`build_fcn_hrnet` without dropout (the soft object
    regions, loss weight 0.4); ``decode_head.1`` an :class:`OCRHead` of width 512, attention
    width 256, with ``dropout_ratio`` before its classifier.

    Args:
        variant: a key of :data:`~trainer.models.hrnet.HRNET_SPECS`.
        num_classes: number of output classes.
        align_corners: for both heads' resize-concat and the final resize (mmseg False; the
            official configs True).
        fuse_align_corners: the backbone's fusion upsampling (see :func:`build_fcn_hrnet`).
        dropout_ratio: Dropout2d probability before the OCR head's classifier; 0 (the default,
            mmseg ``configs/_base_/models/ocrnet_hr18.py``: ``dropout_ratio=-1``) builds no
            Dropout module (United-Perception's OCR head uses 0.05). The FCN stage never has
            dropout.
        stem_relu: ReLU after the stem's ``bn1`` (see :func:`build_fcn_hrnet`).

    Returns:
        A :class:`CascadeEncoderDecoder` whose forward gives ``{"decode": OCR logits,
        "aux": FCN logits}``, both (N, num_classes, H/4, W/4).

    Raises:
        KeyError: unknown ``variant``.
        ValueError: ``dropout_ratio`` outside [0, 1).
    """
    spec = HRNET_SPECS[variant]
    if dropout_ratio < 0 or dropout_ratio >= 1:
        raise ValueError(f"dropout_ratio must be in [0, 1), got {dropout_ratio}")
    backbone = HRNet(spec, fuse_align_corners=fuse_align_corners, stem_relu=stem_relu)
    fcn = _fcn_head(spec.widths, num_classes, 0.0, align_corners)
    ocr = OCRHead(
        in_channels=spec.widths,
        channels=OCR_CHANNELS,
        ocr_channels=OCR_KEY_CHANNELS,
        num_classes=num_classes,
        in_index=tuple(range(len(spec.widths))),
        input_transform="resize_concat",
        dropout_ratio=dropout_ratio,
        align_corners=align_corners,
    )
    return CascadeEncoderDecoder(
        backbone, [fcn, ocr], align_corners=align_corners, loss_weights=OCR_LOSS_WEIGHTS
    )


BUILDERS: dict[str, Callable[..., EncoderDecoder]] = {
    "fcn_hrnetv2_w18_small_v1": partial(build_fcn_hrnet, "w18_small_v1"),
    "fcn_hrnetv2_w18_small": partial(build_fcn_hrnet, "w18_small_v2"),
    "fcn_hrnetv2_w18": partial(build_fcn_hrnet, "w18"),
    "fcn_hrnetv2_w48": partial(build_fcn_hrnet, "w48"),
    "ocr_hrnetv2_w18_small": partial(build_ocr_hrnet, "w18_small_v2"),
    "ocr_hrnetv2_w18": partial(build_ocr_hrnet, "w18"),
    "ocr_hrnetv2_w48": partial(build_ocr_hrnet, "w48"),
}
"""Name -> builder ``(num_classes, *, align_corners=False, **opts) -> EncoderDecoder``."""
