"""DeepLabV3's Atrous Spatial Pyramid Pooling decode head.

Architecture: Chen et al. 2017, "Rethinking Atrous Convolution for Semantic Image Segmentation"
(Sec. 3.3: parallel atrous convolutions plus image-level pooling, concatenated and fused by a
conv). Parameter names and numerics follow mmsegmentation
``mmseg/models/decode_heads/aspp_head.py`` on ``decode_heads/decode_head.py``, so mmseg
DeepLabV3 checkpoints load with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.models.fcn_head import resolve_inputs, select_inputs
from trainer.models.layers import ConvBNReLU

# mmseg configs/_base_/models/deeplabv3_r50-d8.py: rates for output stride 8.
ASPP_DILATIONS_OS8 = (1, 12, 24, 36)


class ASPPModule(nn.ModuleList):
    """Parallel atrous branches ``{i}``: a 1x1 ConvBNReLU for dilation 1, else a 3x3 one with
    that dilation (padding = dilation, size-preserving).

    forward(x: float (N, in_channels, H, W)) -> list of float (N, channels, H, W), one per
    dilation, in order.
    """

    def __init__(self, dilations: Sequence[int], in_channels: int, channels: int) -> None:
        super().__init__(
            ConvBNReLU(in_channels, channels, 1 if d == 1 else 3, dilation=d) for d in dilations
        )
        self.dilations = tuple(dilations)

    def forward(self, x: Tensor) -> list[Tensor]:  # type: ignore[override]
        return [branch(x) for branch in self]


class ASPPHead(nn.Module):
    """DeepLabV3 ASPP head (mmseg ``ASPPHead``).

    Submodules: ``image_pool`` (``.0`` AdaptiveAvgPool2d(1), ``.1`` 1x1 ConvBNReLU), whose
    output is upsampled bilinearly to the input size; ``aspp_modules`` (:class:`ASPPModule`);
    ``bottleneck`` (3x3 ConvBNReLU over the concatenation [image_pool, branches...], (len(dilations)
    + 1) * channels -> channels); ``dropout`` (Dropout2d, absent when ``dropout_ratio`` is 0);
    ``conv_seg`` (1x1 with bias, normal(0, 0.01) weight, zero bias).

    forward(features: list of float (N, C_i, H_i, W_i)) -> float logits (N, num_classes, H, W)
    at the size of the selected map (see :func:`trainer.models.fcn_head.select_inputs` for
    ``in_index``/``input_transform``).

    In training mode BatchNorm after the global pool needs a batch of at least 2 (as mmseg).

    Raises:
        ValueError: (construction) an unknown ``input_transform``, an empty ``dilations`` or a
            dilation < 1, or ``in_channels``/``in_index`` not matching the transform.
    """

    def __init__(
        self,
        in_channels: int | Sequence[int],
        channels: int,
        num_classes: int,
        *,
        dilations: Sequence[int] = ASPP_DILATIONS_OS8,
        in_index: int | Sequence[int] = -1,
        input_transform: str | None = None,
        dropout_ratio: float = 0.1,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        if not dilations or min(dilations) < 1:
            raise ValueError(f"dilations must be a non-empty sequence of ints >= 1: {dilations}")
        self.in_index, total_in = resolve_inputs(in_channels, in_index, input_transform)
        self.in_channels = total_in
        self.channels = channels
        self.num_classes = num_classes
        self.input_transform = input_transform
        self.align_corners = align_corners
        self.dilations = tuple(dilations)

        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvBNReLU(total_in, channels, 1))
        self.aspp_modules = ASPPModule(dilations, total_in, channels)
        self.bottleneck = ConvBNReLU((len(dilations) + 1) * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else None
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, 0.0, 0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def features(self, inputs: Sequence[Tensor]) -> Tensor:
        """Fused ASPP features before dropout/classifier: float (N, channels, H, W)."""
        x = select_inputs(inputs, self.in_index, self.input_transform, self.align_corners)
        pooled = F.interpolate(
            self.image_pool(x), size=x.shape[2:], mode="bilinear",
            align_corners=self.align_corners,
        )
        return self.bottleneck(torch.cat([pooled, *self.aspp_modules(x)], dim=1))

    def classify(self, feats: Tensor) -> Tensor:
        """Dropout (training only) and ``conv_seg``: (N, channels, H, W) -> (N, K, H, W)."""
        if self.dropout is not None:
            feats = self.dropout(feats)
        return self.conv_seg(feats)

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        return self.classify(self.features(inputs))


__all__ = ["ASPP_DILATIONS_OS8", "ASPPHead", "ASPPModule"]
