"""SegFormer's all-MLP decode head as the official NVlabs code builds it.

Architecture: Xie et al. 2021, "SegFormer: Simple and Efficient Design for Semantic
Segmentation with Transformers" (arXiv 2105.15203). Module layout, parameter names and numerics
follow NVlabs/SegFormer ``mmseg/models/decode_heads/segformer_head.py`` (``SegFormerHead`` and
its ``MLP``) on ``decode_heads/decode_head.py`` (``BaseDecodeHead``: ``dropout``), so the official
segmentation checkpoints (``segformer.b*.*.pth``, keys ``decode_head.*``) load with
``strict=True`` once
:func:`trainer.models.converters.segformer_official.convert_segformer_official_segmentor` has
renamed their encoder.

How it differs from mmseg's :class:`~trainer.models.segformer_head.SegformerHead`:

* each stage is projected by a plain ``nn.Linear`` on its flattened tokens (weight and bias, no
  BatchNorm, no ReLU): ``linear_c{1..4}.proj`` instead of ``convs.{0..3}`` (conv + BN + ReLU);
* the projections are concatenated deepest first (c4, c3, c2, c1), mmseg's in stage order;
* the classifier is ``linear_pred`` (mmseg: ``conv_seg``);
* the official configs make it 768 wide for B2..B5 (256 for B0/B1); mmseg uses 256 for all.

``BaseDecodeHead`` also builds a ``conv_seg`` (128 -> classes, the config's ``channels=128``)
that the official forward never calls; the official checkpoints hold it, this head does not
(the converter reports it as dropped).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.models.layers import ConvBNReLU


class TokenProjection(nn.Module):
    """The official ``MLP``: ``proj`` (``nn.Linear``) applied to every position of a feature map.

    forward(x: float (N, in_channels, H, W)) -> float (N, out_channels, H, W); computed, as the
    official code does, on the (N, H*W, in_channels) tokens and reshaped back.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        tokens = self.proj(x.flatten(2).transpose(1, 2))
        return tokens.transpose(1, 2).reshape(n, -1, h, w)


class SegFormerOfficialHead(nn.Module):
    """Official all-MLP decoder: per-stage linear projection to ``channels``, upsample to the
    first stage's size, concatenate deepest first, fuse, classify.

    Parameters (state-dict keys relative to the head; C_i = ``in_channels[i-1]``, D =
    ``channels``, K = ``num_classes``)::

        linear_c{i}.proj.weight (D, C_i), linear_c{i}.proj.bias (D,)    i = 1..4
        linear_fuse.conv.weight (D, 4D, 1, 1)                             no bias
        linear_fuse.bn.weight / bias / running_mean / running_var (D,), num_batches_tracked
        linear_pred.weight (K, D, 1, 1), linear_pred.bias (K,)

    ``linear_fuse`` is mmcv's ``ConvModule`` (1x1 conv, BatchNorm (SyncBN in the official
    configs; converted where training is distributed), ReLU); ``dropout`` is Dropout2d (absent
    when ``dropout_ratio`` is 0). Every resize is bilinear with ``align_corners=False``, as
    hard-coded in the official head.

    forward(inputs: sequence of 4 float (N, in_channels[i], H_i, W_i), finest first) -> float
    logits (N, num_classes, H_0, W_0) in the inputs' dtype, i.e. 1/4 of the image size behind
    a MiT encoder.

    Raises:
        ValueError: (construction) ``in_channels`` does not have 4 entries; (forward) the number
            of inputs is not 4.
    """

    def __init__(
        self,
        in_channels: Sequence[int] = (32, 64, 160, 256),
        channels: int = 256,
        num_classes: int = 150,
        dropout_ratio: float = 0.1,
    ) -> None:
        super().__init__()
        self.in_channels = tuple(in_channels)
        if len(self.in_channels) != 4:
            raise ValueError(f"expected 4 input widths (c1..c4), got {self.in_channels}")
        self.channels = channels
        c1, c2, c3, c4 = self.in_channels
        self.linear_c4 = TokenProjection(c4, channels)
        self.linear_c3 = TokenProjection(c3, channels)
        self.linear_c2 = TokenProjection(c2, channels)
        self.linear_c1 = TokenProjection(c1, channels)
        self.linear_fuse = ConvBNReLU(4 * channels, channels)
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else None
        self.linear_pred = nn.Conv2d(channels, num_classes, 1)

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        if len(inputs) != 4:
            raise ValueError(f"expected 4 feature maps (c1..c4), got {len(inputs)}")
        c1, c2, c3, c4 = inputs
        size = c1.shape[2:]

        def upsampled(x: Tensor) -> Tensor:
            return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

        fused = self.linear_fuse(
            torch.cat(
                [
                    upsampled(self.linear_c4(c4)),
                    upsampled(self.linear_c3(c3)),
                    upsampled(self.linear_c2(c2)),
                    self.linear_c1(c1),
                ],
                dim=1,
            )
        )
        if self.dropout is not None:
            fused = self.dropout(fused)
        return self.linear_pred(fused)
