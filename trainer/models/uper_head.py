"""UPerNet decode head: a pyramid pooling module on the last feature map plus an FPN.

Architecture: Xiao et al. 2018, "Unified Perceptual Parsing for Scene Understanding"
(ECCV 2018, arXiv 1807.10221). Parameter names and numerics follow mmsegmentation
``mmseg/models/decode_heads/uper_head.py`` and ``psp_head.py`` (``PPM``) on top of
``decode_heads/decode_head.py`` (``dropout`` then ``conv_seg``), so mmseg-style checkpoints
(and the released UperNet + InternImage ones) load with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.models.layers import ConvBNReLU


class UPerHead(nn.Module):
    """PPM + FPN fusion head over the four backbone stages.

    With L = len(in_channels) inputs (finest first):

    - ``psp_modules.{s}``: adaptive average pool to ``pool_scales[s]`` then a 1x1
      conv-BN-ReLU (``psp_modules.{s}.1.conv/bn``) on the last input, each upsampled back
      (bilinear); concatenated with that input and fused by ``bottleneck`` (3x3 conv-BN-ReLU)
      into the top lateral;
    - ``lateral_convs.{i}`` (1x1 conv-BN-ReLU) on inputs 0..L-2; a top-down pass adds each
      lateral, upsampled, to the one below; ``fpn_convs.{i}`` (3x3 conv-BN-ReLU) on laterals
      0..L-2;
    - all L maps upsampled to the finest size, concatenated, ``fpn_bottleneck`` (3x3
      conv-BN-ReLU), ``dropout`` (Dropout2d, absent when ``dropout_ratio`` is 0) and
      ``conv_seg`` (1x1 conv with bias, normal(0, 0.01) weights, zero bias).

    forward(inputs: sequence of L float (N, in_channels[i], H_i, W_i)) -> float logits
    (N, num_classes, H_0, W_0) (1/4 of the image behind InternImage).

    Raises:
        ValueError: (construction) fewer than two inputs or no pool scale; (forward) a number of
            inputs different from ``len(in_channels)``.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int = 512,
        num_classes: int = 150,
        *,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        dropout_ratio: float = 0.1,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = tuple(in_channels)
        if len(self.in_channels) < 2:
            raise ValueError(f"UPerHead needs at least two inputs, got {self.in_channels}")
        if not pool_scales:
            raise ValueError("pool_scales must not be empty")
        self.channels = channels
        self.num_classes = num_classes
        self.pool_scales = tuple(pool_scales)
        self.align_corners = align_corners
        top = self.in_channels[-1]
        self.psp_modules = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(scale), ConvBNReLU(top, channels))
            for scale in self.pool_scales
        )
        self.bottleneck = ConvBNReLU(top + len(self.pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList(ConvBNReLU(c, channels) for c in self.in_channels[:-1])
        self.fpn_convs = nn.ModuleList(
            ConvBNReLU(channels, channels, 3) for _ in self.in_channels[:-1]
        )
        self.fpn_bottleneck = ConvBNReLU(len(self.in_channels) * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else None
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, 0.0, 0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def _resize(self, x: Tensor, size: torch.Size) -> Tensor:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)

    def psp_forward(self, x: Tensor) -> Tensor:
        """Pyramid pooling on the last feature map: (N, C_top, h, w) -> (N, channels, h, w)."""
        pooled = [self._resize(module(x), x.shape[2:]) for module in self.psp_modules]
        return self.bottleneck(torch.cat([x, *pooled], dim=1))

    def features(self, inputs: Sequence[Tensor]) -> Tensor:
        """Fused features before dropout and classifier: (N, channels, H_0, W_0)."""
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"expected {len(self.in_channels)} feature maps, got {len(inputs)}")
        laterals = [conv(inputs[i]) for i, conv in enumerate(self.lateral_convs)]
        laterals.append(self.psp_forward(inputs[-1]))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + self._resize(laterals[i], laterals[i - 1].shape[2:])
        outs = [conv(laterals[i]) for i, conv in enumerate(self.fpn_convs)]
        outs.append(laterals[-1])
        size = outs[0].shape[2:]
        outs = [outs[0]] + [self._resize(x, size) for x in outs[1:]]
        return self.fpn_bottleneck(torch.cat(outs, dim=1))

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        feats = self.features(inputs)
        if self.dropout is not None:
            feats = self.dropout(feats)
        return self.conv_seg(feats)
