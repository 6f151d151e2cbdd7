"""Object-contextual representation (OCR) decode head.

Architecture: Yuan et al. 2020, "Object-Contextual Representations for Semantic Segmentation"
(ECCV; arXiv 1909.11065). Parameter names and numerics follow mmsegmentation 1.x
``mmseg/models/decode_heads/ocr_head.py`` (with ``models/utils/self_attention_block.py`` and
``decode_heads/cascade_decode_head.py``), so mmseg checkpoints load with ``strict=True``. The
head is the second stage of a cascade (:class:`~trainer.models.cascade.CascadeEncoderDecoder`):
it takes the backbone features and the coarse logits of the first stage (an FCN head).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.models.fcn_head import resolve_inputs, select_inputs
from trainer.models.layers import ConvBNReLU


class SpatialGatherModule(nn.Module):
    """Soft object regions: one feature vector per class, averaged with spatial softmax weights.

    forward(feats: float (N, C, H, W), probs: float logits (N, K, H, W)) -> float (N, C, K, 1):
    ``context[:, :, k] = sum_p softmax_p(probs[:, k])[p] * feats[:, :, p]`` (softmax over the H*W
    positions, temperature 1; the same size for feats and probs is required).

    Source: mmseg ``ocr_head.py`` ``SpatialGatherModule`` (no parameters).
    """

    def forward(self, feats: Tensor, probs: Tensor) -> Tensor:
        n, k = probs.shape[:2]
        weights = F.softmax(probs.reshape(n, k, -1), dim=2)  # (N, K, HW)
        values = feats.reshape(n, feats.shape[1], -1).transpose(1, 2)  # (N, HW, C)
        return torch.matmul(weights, values).transpose(1, 2).unsqueeze(3)


class ObjectAttentionBlock(nn.Module):
    """Pixel-to-object attention, then ``bottleneck`` over [context, pixel features].

    Queries come from the pixel features (``query_project``: two 1x1 ConvBNReLU), keys and values
    from the object features (``key_project``: two, ``value_project``: one); attention weights
    are ``softmax(q . k / sqrt(channels))`` over the K objects; ``out_project`` (one 1x1
    ConvBNReLU) maps the context back to ``in_channels``; ``bottleneck`` (1x1 ConvBNReLU) fuses
    ``cat([context, query_feats])``.

    forward(query_feats: float (N, in_channels, H, W), key_feats: float (N, in_channels, K, 1))
    -> float (N, in_channels, H, W).

    Source: mmseg ``ocr_head.py`` ``ObjectAttentionBlock`` on ``utils/self_attention_block.py``
    with scale 1 (mmseg's query down-sampling for scale > 1 is not supported).
    """

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.query_project = nn.Sequential(
            ConvBNReLU(in_channels, channels), ConvBNReLU(channels, channels)
        )
        self.key_project = nn.Sequential(
            ConvBNReLU(in_channels, channels), ConvBNReLU(channels, channels)
        )
        self.value_project = ConvBNReLU(in_channels, channels)
        self.out_project = ConvBNReLU(channels, in_channels)
        self.bottleneck = ConvBNReLU(in_channels * 2, in_channels)

    def forward(self, query_feats: Tensor, key_feats: Tensor) -> Tensor:
        n, _, h, w = query_feats.shape
        query = self.query_project(query_feats).reshape(n, self.channels, -1).transpose(1, 2)
        key = self.key_project(key_feats).reshape(n, self.channels, -1)
        value = self.value_project(key_feats).reshape(n, self.channels, -1).transpose(1, 2)
        attention = F.softmax(torch.matmul(query, key) * self.channels**-0.5, dim=-1)  # (N,HW,K)
        context = torch.matmul(attention, value).transpose(1, 2).reshape(n, self.channels, h, w)
        context = self.out_project(context)
        return self.bottleneck(torch.cat([context, query_feats], dim=1))


class OCRHead(nn.Module):
    """OCR head: ``bottleneck`` -> object regions -> object attention -> classifier.

    Input: ``select_inputs(features, in_index, input_transform)`` (see
    :func:`trainer.models.fcn_head.select_inputs`; C_in = sum of ``in_channels`` under
    ``"resize_concat"``). ``bottleneck`` (3x3 ConvBNReLU, C_in -> ``channels``) gives the pixel
    representation; ``spatial_gather_module`` pools it into one vector per class with the
    previous stage's logits; ``object_context_block`` (:class:`ObjectAttentionBlock`, width
    ``ocr_channels``) augments every pixel; ``dropout`` (Dropout2d, absent when
    ``dropout_ratio`` is 0; mmseg's OCRNet configs use none) and ``conv_seg`` (1x1 with bias,
    normal(0, 0.01) weights, zero bias) give the logits.

    forward(features: list of float (N, C_i, H_i, W_i), prev_output: float logits
    (N, num_classes, H, W)) -> float logits (N, num_classes, H, W), at the size of the first
    selected feature map (which ``prev_output`` must have).

    Raises:
        ValueError: (construction) an unknown ``input_transform`` or ``in_channels`` /
            ``in_index`` not matching it.
    """

    def __init__(
        self,
        in_channels: int | Sequence[int],
        channels: int,
        ocr_channels: int,
        num_classes: int,
        *,
        in_index: int | Sequence[int] = (0, 1, 2, 3),
        input_transform: str | None = "resize_concat",
        dropout_ratio: float = 0.0,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.in_index, total_in = resolve_inputs(in_channels, in_index, input_transform)
        self.in_channels = total_in
        self.channels = channels
        self.num_classes = num_classes
        self.input_transform = input_transform
        self.align_corners = align_corners

        self.bottleneck = ConvBNReLU(total_in, channels, 3)
        self.spatial_gather_module = SpatialGatherModule()
        self.object_context_block = ObjectAttentionBlock(channels, ocr_channels)
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else None
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, 0.0, 0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def forward(self, inputs: Sequence[Tensor], prev_output: Tensor) -> Tensor:
        x = select_inputs(inputs, self.in_index, self.input_transform, self.align_corners)
        feats = self.bottleneck(x)
        objects = self.spatial_gather_module(feats, prev_output)
        out = self.object_context_block(feats, objects)
        if self.dropout is not None:
            out = self.dropout(out)
        return self.conv_seg(out)
