"""SegFormer's all-MLP decode head.

Architecture: Xie et al. 2021, "SegFormer: Simple and Efficient Design for Semantic
Segmentation with Transformers" (arXiv 2105.15203). Parameter names and numerics follow
mmsegmentation 1.x ``mmseg/models/decode_heads/segformer_head.py`` on top of
``decode_heads/decode_head.py`` (``BaseDecodeHead``: ``dropout`` then ``conv_seg``), so mmseg
checkpoints load with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.models.layers import ConvBNReLU


class SegformerHead(nn.Module):
    """All-MLP decoder: per-stage 1x1 conv to ``channels``, upsample, concatenate, fuse, classify.

    Each input ``i`` passes through ``convs[i]`` (1x1 conv + BN + ReLU) and is resized
    bilinearly to the size of the first input; the results are concatenated in stage order
    (stage 0 first) and fused by ``fusion_conv`` (1x1 conv + BN + ReLU). ``dropout``
    (Dropout2d, absent when ``dropout_ratio`` is 0) and ``conv_seg`` (1x1 conv with bias) give the
    logits.

    forward(inputs: sequence of float (N, in_channels[i], H_i, W_i)) -> float logits
    (N, num_classes, H_0, W_0), i.e. 1/4 of the image size behind a MiT encoder.

    Raises:
        ValueError: (forward) if the number of inputs differs from ``len(in_channels)``.
    """

    def __init__(
        self,
        in_channels: Sequence[int] = (32, 64, 160, 256),
        channels: int = 256,
        num_classes: int = 150,
        dropout_ratio: float = 0.1,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = tuple(in_channels)
        self.align_corners = align_corners
        self.convs = nn.ModuleList(ConvBNReLU(c, channels) for c in self.in_channels)
        self.fusion_conv = ConvBNReLU(channels * len(self.in_channels), channels)
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else None
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, 0.0, 0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        if len(inputs) != len(self.convs):
            raise ValueError(f"expected {len(self.convs)} feature maps, got {len(inputs)}")
        size = inputs[0].shape[2:]
        outs = [
            F.interpolate(conv(x), size=size, mode="bilinear", align_corners=self.align_corners)
            for conv, x in zip(self.convs, inputs)
        ]
        out = self.fusion_conv(torch.cat(outs, dim=1))
        if self.dropout is not None:
            out = self.dropout(out)
        return self.conv_seg(out)
