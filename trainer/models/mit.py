"""Mix Transformer (MiT), the hierarchical encoder of SegFormer.

Architecture: Xie et al. 2021, "SegFormer: Simple and Efficient Design for Semantic
Segmentation with Transformers" (arXiv 2105.15203). Module layout, parameter names and
numerics follow mmsegmentation 1.x ``mmseg/models/backbones/mit.py``, so that mmseg SegFormer
checkpoints load with ``strict=True``:

    layers.{i}.0.projection / .norm            overlapping patch embedding of stage i
    layers.{i}.1.{j}.norm1 / .attn / .norm2 / .ffn   transformer block j of stage i
    layers.{i}.2                               LayerNorm closing stage i

Every LayerNorm uses eps 1e-6, as mmseg's MiT passes ``norm_cfg=dict(type='LN', eps=1e-6)`` to
the patch embeddings, the blocks, the reduction norms and the stage norms alike (the official
NVlabs code uses 1e-5 in the patch embeddings and reduction norms; mmseg's checkpoints were
trained and evaluated with 1e-6 throughout). ``MixVisionTransformer(patch_and_sr_norm_eps=1e-5)``
reproduces the NVlabs numerics, for its checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LAYER_NORM_EPS = 1e-6


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability ``p``.

    Args:
        x: float tensor whose first dimension is the batch.
        p: probability of dropping a sample, in [0, 1).
        training: when False (or ``p == 0``) ``x`` is returned unchanged.

    Returns:
        A tensor shaped like ``x``; kept samples are scaled by ``1 / (1 - p)``.
    """
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask_shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = x.new_empty(mask_shape).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    """Module form of :func:`drop_path` (no parameters)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def tokens_to_map(x: Tensor, hw: tuple[int, int]) -> Tensor:
    """(N, H*W, C) tokens -> (N, C, H, W) feature map."""
    n, _, c = x.shape
    return x.transpose(1, 2).reshape(n, c, hw[0], hw[1])


def map_to_tokens(x: Tensor) -> Tensor:
    """(N, C, H, W) feature map -> (N, H*W, C) tokens."""
    return x.flatten(2).transpose(1, 2)


class OverlapPatchEmbed(nn.Module):
    """Overlapping patch embedding: a strided conv (padding ``patch_size // 2``) then LayerNorm.

    Input (N, C_in, H, W) float; output tokens (N, h*w, C) and ``(h, w)`` where
    ``h = (H + 2 * (patch_size // 2) - patch_size) // stride + 1`` (ceil(H / stride) for the odd
    patch sizes used by MiT).
    """

    def __init__(
        self,
        in_channels: int,
        embed_dims: int,
        patch_size: int,
        stride: int,
        norm_eps: float = LAYER_NORM_EPS,
    ) -> None:
        super().__init__()
        self.projection = nn.Conv2d(
            in_channels, embed_dims, patch_size, stride=stride, padding=patch_size // 2
        )
        self.norm = nn.LayerNorm(embed_dims, eps=norm_eps)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        x = self.projection(x)
        hw = (x.shape[2], x.shape[3])
        return self.norm(map_to_tokens(x)), hw


class PackedAttention(nn.Module):
    """Multi-head attention holding its projections the way ``nn.MultiheadAttention`` does.

    Parameters: ``in_proj_weight`` (3C, C) with query rows ``[0:C]``, key rows ``[C:2C]`` and value
    rows ``[2C:3C]``; ``in_proj_bias`` (3C,); ``out_proj`` a (C -> C) Linear. Biases exist only
    when ``bias`` is True, as in ``nn.MultiheadAttention``. The product itself is computed with
    :func:`torch.nn.functional.scaled_dot_product_attention` (scale ``1 / sqrt(C / heads)``).
    """

    def __init__(self, embed_dims: int, num_heads: int, bias: bool = True, dropout: float = 0.0):
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f"embed_dims {embed_dims} is not divisible by num_heads {num_heads}")
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dims, embed_dims))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dims)) if bias else None
        self.out_proj = nn.Linear(embed_dims, embed_dims, bias=bias)
        # Same initial values as nn.MultiheadAttention; MiT.init_weights later re-draws out_proj.
        nn.init.xavier_uniform_(self.in_proj_weight)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: Tensor) -> Tensor:
        n, length, _ = x.shape
        return x.reshape(n, length, self.num_heads, -1).transpose(1, 2)

    def forward(self, query: Tensor, key_value: Tensor) -> Tensor:
        """Attend from ``query`` (N, Lq, C) to ``key_value`` (N, Lkv, C); returns (N, Lq, C)."""
        c = self.embed_dims
        w, b = self.in_proj_weight, self.in_proj_bias
        q = F.linear(query, w[:c], None if b is None else b[:c])
        k, v = F.linear(key_value, w[c:], None if b is None else b[c:]).chunk(2, dim=-1)
        out = F.scaled_dot_product_attention(
            self._heads(q),
            self._heads(k),
            self._heads(v),
            dropout_p=self.dropout if self.training else 0.0,
        )
        n, _, lq, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(n, lq, c))


class EfficientSelfAttention(nn.Module):
    """SegFormer's efficient self-attention with a residual connection.

    Keys and values come from the tokens spatially reduced by a ``sr_ratio`` x ``sr_ratio``
    strided conv (``sr``) and a LayerNorm (``norm``) when ``sr_ratio > 1``.
    forward(x (N, h*w, C), hw, identity (N, h*w, C)) -> identity + drop_path(dropout(attn(x))).
    """

    def __init__(
        self,
        embed_dims: int,
        num_heads: int,
        sr_ratio: int,
        qkv_bias: bool,
        attn_drop: float,
        proj_drop: float,
        drop_path_rate: float,
        sr_norm_eps: float = LAYER_NORM_EPS,
    ) -> None:
        super().__init__()
        self.attn = PackedAttention(embed_dims, num_heads, bias=qkv_bias, dropout=attn_drop)
        self.proj_drop = nn.Dropout(proj_drop)
        self.drop_path = DropPath(drop_path_rate)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(embed_dims, embed_dims, sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(embed_dims, eps=sr_norm_eps)

    def forward(self, x: Tensor, hw: tuple[int, int], identity: Tensor) -> Tensor:
        kv = x
        if self.sr_ratio > 1:
            kv = self.norm(map_to_tokens(self.sr(tokens_to_map(x, hw))))
        return identity + self.drop_path(self.proj_drop(self.attn(x, kv)))


class MixFFN(nn.Module):
    """Mix-FFN: 1x1 conv, 3x3 depthwise conv (positional information), GELU, 1x1 conv.

    ``layers`` indices 0, 1 and 4 hold the convs (2 is GELU, 3 and 5 dropout), matching mmseg.
    forward(x (N, h*w, C), hw, identity (N, h*w, C)) -> identity + drop_path(ffn(x)).
    """

    def __init__(self, embed_dims: int, hidden: int, drop: float, drop_path_rate: float) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(embed_dims, hidden, 1),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden),
            nn.GELU(),
            nn.Dropout(drop),
            nn.Conv2d(hidden, embed_dims, 1),
            nn.Dropout(drop),
        )
        self.drop_path = DropPath(drop_path_rate)

    def forward(self, x: Tensor, hw: tuple[int, int], identity: Tensor) -> Tensor:
        out = map_to_tokens(self.layers(tokens_to_map(x, hw)))
        return identity + self.drop_path(out)


class MiTBlock(nn.Module):
    """One pre-norm transformer block: ``x + attn(norm1(x))`` then ``x + ffn(norm2(x))``."""

    def __init__(
        self,
        embed_dims: int,
        num_heads: int,
        mlp_ratio: int,
        sr_ratio: int,
        qkv_bias: bool,
        drop_rate: float,
        attn_drop_rate: float,
        drop_path_rate: float,
        sr_norm_eps: float = LAYER_NORM_EPS,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dims, eps=LAYER_NORM_EPS)
        self.attn = EfficientSelfAttention(
            embed_dims,
            num_heads,
            sr_ratio,
            qkv_bias,
            attn_drop_rate,
            drop_rate,
            drop_path_rate,
            sr_norm_eps,
        )
        self.norm2 = nn.LayerNorm(embed_dims, eps=LAYER_NORM_EPS)
        self.ffn = MixFFN(embed_dims, mlp_ratio * embed_dims, drop_rate, drop_path_rate)

    def forward(self, x: Tensor, hw: tuple[int, int]) -> Tensor:
        x = self.attn(self.norm1(x), hw, identity=x)
        return self.ffn(self.norm2(x), hw, identity=x)


class MixVisionTransformer(nn.Module):
    """MiT encoder of SegFormer (Xie et al. 2021; mmseg 1.x ``backbones/mit.py``).

    Stage ``i`` has width ``embed_dims * num_heads[i]`` and ``num_layers[i]`` blocks; the
    stochastic-depth rate grows linearly from 0 to ``drop_path_rate`` over all blocks.
    ``patch_and_sr_norm_eps`` is the eps of the patch-embedding and spatial-reduction
    LayerNorms (1e-6 as mmseg; 1e-5 as the NVlabs code); the block and stage norms use 1e-6.

    forward(x: float (N, in_channels, H, W)) -> list of float feature maps, one per index in
    ``out_indices``, stage ``i`` shaped (N, embed_dims * num_heads[i], H_i, W_i) with
    ``H_0 = ceil(H / 4)`` and ``H_i = ceil(H_{i-1} / 2)`` for the default patch sizes and strides.

    Raises:
        ValueError: if the per-stage sequences do not all have ``num_stages`` entries, or an
            ``out_indices`` entry is not a stage index.
    """

    def __init__(
        self,
        in_channels: int = 3,
        embed_dims: int = 32,
        num_stages: int = 4,
        num_layers: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (1, 2, 5, 8),
        patch_sizes: Sequence[int] = (7, 3, 3, 3),
        strides: Sequence[int] = (4, 2, 2, 2),
        sr_ratios: Sequence[int] = (8, 4, 2, 1),
        out_indices: Sequence[int] = (0, 1, 2, 3),
        mlp_ratio: int = 4,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        patch_and_sr_norm_eps: float = LAYER_NORM_EPS,
    ) -> None:
        super().__init__()
        per_stage = dict(
            num_layers=num_layers,
            num_heads=num_heads,
            patch_sizes=patch_sizes,
            strides=strides,
            sr_ratios=sr_ratios,
        )
        wrong = [f"{k} has {len(v)}" for k, v in per_stage.items() if len(v) != num_stages]
        if wrong:
            raise ValueError(f"expected {num_stages} entries per stage; " + ", ".join(wrong))
        if any(not 0 <= i < num_stages for i in out_indices):
            raise ValueError(f"out_indices {tuple(out_indices)} must lie in [0, {num_stages})")
        self.out_indices = tuple(out_indices)
        self.out_channels = tuple(embed_dims * h for h in num_heads)

        # Explicit CPU device so that building under `torch.device("meta")` still yields numbers.
        rates = torch.linspace(0, drop_path_rate, sum(num_layers), device="cpu").tolist()
        self.layers = nn.ModuleList()
        first = 0
        for i in range(num_stages):
            width = self.out_channels[i]
            embed = OverlapPatchEmbed(
                in_channels, width, patch_sizes[i], strides[i], patch_and_sr_norm_eps
            )
            blocks = nn.ModuleList(
                MiTBlock(
                    width,
                    num_heads[i],
                    mlp_ratio,
                    sr_ratios[i],
                    qkv_bias,
                    drop_rate,
                    attn_drop_rate,
                    rates[first + j],
                    patch_and_sr_norm_eps,
                )
                for j in range(num_layers[i])
            )
            norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
            self.layers.append(nn.ModuleList([embed, blocks, norm]))
            in_channels = width
            first += num_layers[i]
        self.init_weights()

    def init_weights(self) -> None:
        """Random initialisation as mmseg's MiT: truncated normal (std 0.02) for Linear weights,
        ones/zeros for LayerNorm, normal with std sqrt(2 / fan_out) for convs (fan_out divided by
        groups), zero biases. The packed q/k/v projection keeps nn.MultiheadAttention's xavier
        initialisation, as it is not a Linear module in mmseg either."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = []
        for i, (embed, blocks, norm) in enumerate(self.layers):
            x, hw = embed(x)
            for block in blocks:
                x = block(x, hw)
            x = tokens_to_map(norm(x), hw)
            if i in self.out_indices:
                outs.append(x)
        return outs
