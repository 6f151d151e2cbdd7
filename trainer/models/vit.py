"""Plain Vision Transformer backbone with feature taps for dense prediction.

Architecture: Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words: Transformers for Image
Recognition at Scale" (pre-norm encoder, class token, learned position embedding). Parameter
names and numerics follow mmsegmentation 0.x ``mmseg/models/backbones/vit.py`` (mmcv
``MultiheadAttention``/``FFN`` bricks, ``utils/embed.py`` ``PatchEmbed`` with "corner" padding),
which sssegmentation's ``ssseg/modules/models/backbones/vit.py`` (the MCIBI ViT-L backbone)
shares key for key, so checkpoints of either load with ``strict=True``.

timm/JAX ViT checkpoints (``blocks.{i}.norm1``, ``attn.qkv``, ``mlp.fc1``, ...) map onto these names
with :func:`convert_timm_vit` (the mapping both references apply when loading ImageNet weights).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.models.mit import DropPath

# ViT-L/16 (Dosovitskiy et al. 2021, Table 1).
VIT_LARGE_16 = dict(patch_size=16, embed_dims=1024, num_layers=24, num_heads=16, mlp_ratio=4)
# mmseg's ViT-L configs tap the blocks that end each quarter of the encoder.
VIT_LARGE_MMSEG_OUT_INDICES = (5, 11, 17, 23)
# sssegmentation's MCIBI ViT-L configs (ssseg/configs/mcibi/mcibi_deeplabv3_vitlarge_*.py) tap
# these instead.
VIT_LARGE_SSSEG_OUT_INDICES = (9, 14, 19, 23)


def resize_pos_embed(
    pos_embed: Tensor, grid: tuple[int, int], pos_grid: tuple[int, int], mode: str = "bicubic"
) -> Tensor:
    """Resize a learned position embedding (class-token entry kept as is) to a new patch grid.

    Args:
        pos_embed: float (1, 1 + pos_h * pos_w, C); entry 0 belongs to the class token.
        grid: target (h, w) patch grid.
        pos_grid: (pos_h, pos_w), the grid ``pos_embed`` was learned on.
        mode: ``F.interpolate`` mode ("bicubic" in mmseg, "bilinear" in sssegmentation);
            ``align_corners=False``.

    Returns:
        float (1, 1 + h * w, C).

    Raises:
        ValueError: ``pos_embed`` is not 3-D or has fewer than ``pos_h * pos_w`` grid entries.
    """
    if pos_embed.ndim != 3:
        raise ValueError(f"pos_embed must be (1, L, C), got {tuple(pos_embed.shape)}")
    pos_h, pos_w = pos_grid
    if pos_embed.shape[1] < pos_h * pos_w:
        raise ValueError(
            f"pos_embed has {pos_embed.shape[1]} entries, fewer than the grid {pos_grid}"
        )
    cls_weight = pos_embed[:, :1]
    grid_weight = pos_embed[:, -pos_h * pos_w :]
    grid_weight = grid_weight.reshape(1, pos_h, pos_w, -1).permute(0, 3, 1, 2)
    grid_weight = F.interpolate(grid_weight, size=grid, mode=mode, align_corners=False)
    grid_weight = grid_weight.flatten(2).transpose(1, 2)
    return torch.cat([cls_weight, grid_weight], dim=1)


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding: ``projection`` conv (kernel = stride = patch size).

    "Corner" padding as mmcv ``AdaptivePadding``: inputs whose size is not a multiple of the
    patch size are zero-padded on the bottom/right first.

    forward(x: float (N, C_in, H, W)) -> (tokens float (N, h * w, C), (h, w)) with
    h = ceil(H / patch_size), w = ceil(W / patch_size).
    """

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.projection = nn.Conv2d(in_channels, embed_dims, patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        p = self.patch_size
        pad_h, pad_w = (-x.shape[2]) % p, (-x.shape[3]) % p
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.projection(x)
        hw = (x.shape[2], x.shape[3])
        return x.flatten(2).transpose(1, 2), hw


class Attention(nn.Module):
    """mmcv ``MultiheadAttention`` brick: packed ``attn`` (nn.MultiheadAttention, batch-first,
    ``in_proj_weight``/``in_proj_bias``/``out_proj``), ``proj_drop`` and a DropPath residual.

    forward(x: normed tokens float (N, L, C), identity: float (N, L, C)) -> float (N, L, C).
    """

    def __init__(
        self, embed_dims: int, num_heads: int, attn_drop: float, proj_drop: float,
        drop_path: float, qkv_bias: bool,
    ) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(
            embed_dims, num_heads, dropout=attn_drop, bias=qkv_bias, batch_first=True
        )
        self.proj_drop = nn.Dropout(proj_drop)
        self.dropout_layer = DropPath(drop_path)

    def forward(self, x: Tensor, identity: Tensor) -> Tensor:
        out = self.attn(x, x, x, need_weights=False)[0]
        return identity + self.dropout_layer(self.proj_drop(out))


class FFN(nn.Module):
    """mmcv ``FFN`` brick with two fcs: ``layers.0.0`` Linear -> GELU -> Dropout,
    ``layers.1`` Linear -> Dropout; DropPath residual.

    forward(x: normed tokens float (N, L, C), identity: float (N, L, C)) -> float (N, L, C).
    """

    def __init__(self, embed_dims: int, hidden: int, drop: float, drop_path: float) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(embed_dims, hidden), nn.GELU(), nn.Dropout(drop)),
            nn.Linear(hidden, embed_dims),
            nn.Dropout(drop),
        )
        self.dropout_layer = DropPath(drop_path)

    def forward(self, x: Tensor, identity: Tensor) -> Tensor:
        return identity + self.dropout_layer(self.layers(x))


class TransformerEncoderLayer(nn.Module):
    """Pre-norm encoder block: ``x + attn(ln1(x))``, then ``x + ffn(ln2(x))``.

    forward(x: float (N, L, C)) -> float (N, L, C).
    """

    def __init__(
        self, embed_dims: int, num_heads: int, feedforward_channels: int, *, drop_rate: float,
        attn_drop_rate: float, drop_path_rate: float, qkv_bias: bool, norm_eps: float,
    ) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.attn = Attention(
            embed_dims, num_heads, attn_drop_rate, drop_rate, drop_path_rate, qkv_bias
        )
        self.ln2 = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.ffn = FFN(embed_dims, feedforward_channels, drop_rate, drop_path_rate)

    def forward(self, x: Tensor) -> Tensor:
        x = self.attn(self.ln1(x), identity=x)
        return self.ffn(self.ln2(x), identity=x)


class VisionTransformer(nn.Module):
    """ViT backbone returning the outputs of blocks ``out_indices`` as maps at 1/patch_size.

    Args:
        img_size: training size (H, W) (or one int); the position embedding holds
            ``(H // patch) * (W // patch) + 1`` entries.
        patch_size, embed_dims, num_layers, num_heads, mlp_ratio: the ViT variant
            (:data:`VIT_LARGE_16` for ViT-L/16).
        out_indices: block indices whose outputs are returned (0-based; -1 = last block).
        qkv_bias: bias in the packed q/k/v projection.
        drop_rate: dropout after the position embedding, the attention projection and in the
            FFN (0.1 in sssegmentation's ViT-L, 0.0 in mmseg's).
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth, linearly increasing from 0 to this over the blocks.
        with_cls_token: keep the class token in the encoder input.
        norm_eps: LayerNorm epsilon (1e-6 for the timm/JAX ViT weights).
        final_norm: LayerNorm ``ln1`` after the last block (applied before its tap).
        interpolate_mode: mode for resizing the position embedding when the input's patch grid
            differs from the training grid (mmseg "bicubic"; sssegmentation "bilinear").
        tap_norms: a LayerNorm (``norm_layers.{i}``, eps ``norm_eps``) over the channels of
            each returned map - the per-level norms sssegmentation's MCIBI ViT-L configs put
            between the taps and the heads (its ``head.norm_cfg.in_channels_list``; the
            reference keeps them at the segmentor's top level as ``norm_layers.{i}``). Those
            configs use no multi-level (MLA) neck.

    forward(images: float (N, in_channels, H, W)) -> list of float (N, embed_dims, h, w), one
    per ``out_indices`` entry in ascending block order, h = ceil(H / patch_size) (class token
    dropped).

    Raises:
        ValueError: (construction) an ``out_indices`` entry outside [-num_layers, num_layers).
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        *,
        patch_size: int = 16,
        in_channels: int = 3,
        embed_dims: int = 768,
        num_layers: int = 12,
        num_heads: int = 12,
        mlp_ratio: int = 4,
        out_indices: int | Sequence[int] = -1,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        with_cls_token: bool = True,
        norm_eps: float = 1e-6,
        final_norm: bool = False,
        interpolate_mode: str = "bicubic",
        tap_norms: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(img_size, int):
            img_size = (img_size, img_size)
        indices = [out_indices] if isinstance(out_indices, int) else list(out_indices)
        for i in indices:
            if not -num_layers <= i < num_layers:
                raise ValueError(f"out_indices entry {i} outside the {num_layers} blocks")
        self.out_indices = tuple(sorted({i % num_layers for i in indices}))
        self.img_size = tuple(img_size)
        self.patch_size = patch_size
        self.embed_dims = embed_dims
        self.with_cls_token = with_cls_token
        self.interpolate_mode = interpolate_mode
        self.pos_grid = (img_size[0] // patch_size, img_size[1] // patch_size)
        self.out_channels = tuple(embed_dims for _ in self.out_indices)

        self.patch_embed = PatchEmbed(in_channels, embed_dims, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dims))
        self.pos_embed = nn.Parameter(
            torch.zeros(1, self.pos_grid[0] * self.pos_grid[1] + 1, embed_dims)
        )
        self.drop_after_pos = nn.Dropout(drop_rate)
        rates = [r.item() for r in torch.linspace(0, drop_path_rate, num_layers, device="cpu")]
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(
                embed_dims, num_heads, mlp_ratio * embed_dims, drop_rate=drop_rate,
                attn_drop_rate=attn_drop_rate, drop_path_rate=rates[i], qkv_bias=qkv_bias,
                norm_eps=norm_eps,
            )
            for i in range(num_layers)
        )
        self.final_norm = final_norm
        if final_norm:
            self.ln1 = nn.LayerNorm(embed_dims, eps=norm_eps)
        if tap_norms:
            self.norm_layers = nn.ModuleList(
                nn.LayerNorm(embed_dims, eps=norm_eps) for _ in self.out_indices
            )
        self._init_weights()

    def _init_weights(self) -> None:
        """mmseg's initialisation without pretrained weights (timm 'jax_impl' style)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    if "ffn" in name:
                        nn.init.normal_(m.bias, std=1e-6)
                    else:
                        nn.init.zeros_(m.bias)
            elif isinstance(m, nn.MultiheadAttention):
                nn.init.trunc_normal_(m.in_proj_weight, std=0.02)
                if m.in_proj_bias is not None:
                    nn.init.zeros_(m.in_proj_bias)
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def position_embedding(self, grid: tuple[int, int]) -> Tensor:
        """The position embedding for a (h, w) patch grid: float (1, 1 + h * w, C), resized
        with :func:`resize_pos_embed` when ``grid`` differs from the training grid."""
        if tuple(grid) == self.pos_grid:
            return self.pos_embed
        return resize_pos_embed(self.pos_embed, grid, self.pos_grid, self.interpolate_mode)

    def forward(self, images: Tensor) -> list[Tensor]:
        n = images.shape[0]
        x, hw = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(n, -1, -1), x], dim=1)
        x = self.drop_after_pos(x + self.position_embedding(hw))
        if not self.with_cls_token:
            x = x[:, 1:]
        outs = []
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i == last and self.final_norm:
                x = self.ln1(x)
            if i in self.out_indices:
                tokens = x[:, 1:] if self.with_cls_token else x
                if hasattr(self, "norm_layers"):
                    tokens = self.norm_layers[len(outs)](tokens)
                outs.append(tokens.transpose(1, 2).reshape(n, self.embed_dims, hw[0], hw[1]))
        return outs


def convert_timm_vit(
    state: Mapping[str, Tensor], model: VisionTransformer | None = None
) -> dict[str, Tensor]:
    """Rename a timm/JAX ViT state dict to :class:`VisionTransformer` names.

    ``blocks.{i}.norm1/2`` -> ``layers.{i}.ln1/2``, ``attn.qkv`` -> ``attn.attn.in_proj_*``,
    ``attn.proj`` -> ``attn.attn.out_proj``, ``mlp.fc1/fc2`` -> ``ffn.layers.0.0``/``ffn.layers.1``,
    ``patch_embed.proj`` -> ``patch_embed.projection``, ``norm`` -> ``ln1``; ``head.*`` dropped.
    With ``model``, a ``pos_embed`` learned on another grid is resized to the model's grid with
    the model's ``interpolate_mode`` (its square source grid inferred from the entry count).
    """
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith("head"):
            continue
        new = key
        if key.startswith("norm."):
            new = "ln1." + key[len("norm.") :]
        elif key.startswith("patch_embed.proj."):
            new = key.replace("patch_embed.proj.", "patch_embed.projection.")
        elif key.startswith("blocks."):
            new = (
                key.replace("blocks.", "layers.", 1)
                .replace(".norm1.", ".ln1.")
                .replace(".norm2.", ".ln2.")
                .replace(".attn.qkv.", ".attn.attn.in_proj_")
                .replace(".attn.proj.", ".attn.attn.out_proj.")
                .replace(".mlp.fc1.", ".ffn.layers.0.0.")
                .replace(".mlp.fc2.", ".ffn.layers.1.")
            )
        out[new] = value
    if model is not None and "pos_embed" in out:
        pos = out["pos_embed"]
        if pos.shape != model.pos_embed.shape:
            side = int(math.sqrt(pos.shape[1] - 1))
            out["pos_embed"] = resize_pos_embed(
                pos, model.pos_grid, (side, side), model.interpolate_mode
            )
    return out


__all__ = [
    "VIT_LARGE_16",
    "VIT_LARGE_MMSEG_OUT_INDICES",
    "VIT_LARGE_SSSEG_OUT_INDICES",
    "VisionTransformer",
    "convert_timm_vit",
    "resize_pos_embed",
]
