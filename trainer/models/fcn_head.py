"""Fully convolutional decode head (FCN), with mmseg's input selection.

Architecture: Long et al. 2015, "Fully Convolutional Networks for Semantic Segmentation"; as a
head over multi-scale features (HRNetV2: Wang et al. 2020, "Deep High-Resolution
Representation Learning for Visual Recognition"). Parameter names and numerics follow
mmsegmentation 1.x ``mmseg/models/decode_heads/fcn_head.py`` on top of
``decode_heads/decode_head.py`` (``BaseDecodeHead``: input transform, ``dropout``,
``conv_seg``), so mmseg checkpoints load with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.models.layers import ConvBNReLU

INPUT_TRANSFORMS = (None, "resize_concat")


def resolve_inputs(
    in_channels: int | Sequence[int],
    in_index: int | Sequence[int],
    input_transform: str | None,
) -> tuple[int | tuple[int, ...], int]:
    """Check a head's input selection and return (in_index, total input channels).

    The rules of mmseg's ``BaseDecodeHead._init_inputs``: with no ``input_transform`` both are
    single ints; with ``"resize_concat"`` both are sequences of equal length and the channels
    add up.

    Raises:
        ValueError: an unknown ``input_transform`` or arguments that do not fit it.
    """
    if input_transform not in INPUT_TRANSFORMS:
        raise ValueError(f"input_transform must be one of {INPUT_TRANSFORMS}, got {input_transform!r}")
    if input_transform == "resize_concat":
        if isinstance(in_channels, int) or isinstance(in_index, int):
            raise ValueError("resize_concat needs sequences for in_channels and in_index")
        if len(in_channels) != len(in_index):
            raise ValueError(
                f"in_channels {tuple(in_channels)} and in_index {tuple(in_index)} differ in length"
            )
        return tuple(in_index), sum(in_channels)
    if not isinstance(in_channels, int) or not isinstance(in_index, int):
        raise ValueError("without an input_transform, in_channels and in_index must be single ints")
    return in_index, in_channels


def select_inputs(
    inputs: Sequence[Tensor],
    in_index: int | Sequence[int],
    input_transform: str | None,
    align_corners: bool,
) -> Tensor:
    """Pick the head's input from the backbone features, as mmseg's ``_transform_inputs``.

    Args:
        inputs: float feature maps (N, C_i, H_i, W_i).
        in_index: one index (``input_transform`` None) or several ("resize_concat").
        input_transform: None takes ``inputs[in_index]``; ``"resize_concat"`` resizes every
            selected map bilinearly to the size of the first selected one and concatenates them
            along channels, in ``in_index`` order.
        align_corners: for the bilinear resize.

    Returns:
        float (N, C, H, W): C = C_i for one input, sum of the selected C_i for resize_concat.
    """
    if input_transform == "resize_concat":
        selected = [inputs[i] for i in in_index]  # type: ignore[union-attr]
        size = selected[0].shape[2:]
        resized = [
            x
            if x.shape[2:] == size
            else F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)
            for x in selected
        ]
        return torch.cat(resized, dim=1)
    return inputs[in_index]  # type: ignore[index]


class FCNHead(nn.Module):
    """``num_convs`` conv-BN-ReLU blocks, an optional concat-with-input fusion, then a classifier.

    Input: ``select_inputs(features, in_index, input_transform)`` (see :func:`select_inputs`),
    with ``C_in`` channels (``in_channels``, or their sum under ``"resize_concat"``). Then
    ``convs.{i}`` (``kernel_size`` convs with ``dilation``, the first C_in -> channels, the rest
    channels -> channels; absent when ``num_convs`` is 0, in which case C_in must equal
    ``channels``), ``conv_cat`` (only with ``concat_input``: concat [input, convs output] ->
    ``kernel_size`` conv, no dilation, -> channels), ``dropout`` (Dropout2d, absent when
    ``dropout_ratio`` is 0) and ``conv_seg`` (1x1 conv with bias, normal(0, 0.01) weights, zero
    bias).

    forward(features: list of float (N, C_i, H_i, W_i)) -> float logits (N, num_classes, H, W)
    at the size of the (first) selected feature map.

    Raises:
        ValueError: (construction) ``num_convs`` < 0, ``dilation`` < 1, an unknown
            ``input_transform``, ``in_index``/``in_channels`` not matching the transform, or
            ``num_convs`` == 0 with C_in != ``channels``.
    """

    def __init__(
        self,
        in_channels: int | Sequence[int],
        channels: int,
        num_classes: int,
        *,
        num_convs: int = 2,
        kernel_size: int = 3,
        concat_input: bool = True,
        dilation: int = 1,
        in_index: int | Sequence[int] = -1,
        input_transform: str | None = None,
        dropout_ratio: float = 0.1,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        if num_convs < 0:
            raise ValueError(f"num_convs must be >= 0, got {num_convs}")
        if dilation < 1:
            raise ValueError(f"dilation must be >= 1, got {dilation}")
        self.in_index, total_in = resolve_inputs(in_channels, in_index, input_transform)
        if num_convs == 0 and total_in != channels:
            raise ValueError(
                f"num_convs=0 passes the input through: in_channels ({total_in}) must equal "
                f"channels ({channels})"
            )
        self.in_channels = total_in
        self.channels = channels
        self.num_classes = num_classes
        self.input_transform = input_transform
        self.concat_input = concat_input
        self.align_corners = align_corners

        if num_convs > 0:
            self.convs: nn.Module = nn.Sequential(
                *(
                    ConvBNReLU(
                        total_in if i == 0 else channels, channels, kernel_size, dilation=dilation
                    )
                    for i in range(num_convs)
                )
            )
        else:
            self.convs = nn.Identity()
        self.conv_cat = (
            ConvBNReLU(total_in + channels, channels, kernel_size) if concat_input else None
        )
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else None
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, 0.0, 0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def features(self, inputs: Sequence[Tensor]) -> Tensor:
        """Features before dropout and classifier: float (N, channels, H, W)."""
        x = select_inputs(inputs, self.in_index, self.input_transform, self.align_corners)
        out = self.convs(x)
        if self.conv_cat is not None:
            out = self.conv_cat(torch.cat([x, out], dim=1))
        return out

    def classify(self, feats: Tensor) -> Tensor:
        """Dropout (training only) and ``conv_seg``: (N, channels, H, W) -> (N, K, H, W)."""
        if self.dropout is not None:
            feats = self.dropout(feats)
        return self.conv_seg(feats)

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        return self.classify(self.features(inputs))
