"""InternImage backbone (DCNv3 blocks) and its layer-wise learning-rate decay.

Architecture: Wang et al. 2023, "InternImage: Exploring Large-Scale Vision Foundation Models
with Deformable Convolutions" (CVPR 2023, arXiv 2211.05778). Module layout, parameter names
and numerics follow OpenGVLab/InternImage
``segmentation/mmseg_custom/models/backbones/intern_image.py``, so the released segmentation
checkpoints (keys prefixed ``backbone.``) load with ``strict=True``::

    patch_embed.conv1 / norm1.1 / conv2 / norm2.1        stem: two stride-2 3x3 convs, LN
    levels.{i}.blocks.{j}.norm1.0 / dcn / norm2.0 / mlp.fc1 / mlp.fc2
        .gamma1 / .gamma2                                  layer scale (not H)
        .res_post_norm1.0 / .res_post_norm2.0              H only
    levels.{i}.norm.0                                      level norm (unless post-norm)
    levels.2.post_norms.{k}.0                              H only (after blocks 5, 11, ...)
    levels.{i}.downsample.conv / .norm.1                   stride-2 3x3 conv, LN (i < 3)

Features flow channels-last (N, H, W, C) inside the backbone; outputs are channels-first.
:func:`layer_decay_param_groups` reproduces the reference's optimizer constructor
(``segmentation/mmcv_custom/custom_layer_decay_optimizer_constructor.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.utils.checkpoint as checkpoint
from torch import Tensor, nn

from trainer.models.dcnv3 import LAYER_NORM_EPS, ChannelsFirst, ChannelsLast, CoreFn, DCNv3
from trainer.models.mit import DropPath


@dataclass(frozen=True)
class InternImageSpec:
    """Architecture of one InternImage size (the reference's UperNet ADE20K configs)."""

    channels: int
    """Width of level 0; level i has ``channels * 2**i``."""
    depths: tuple[int, int, int, int]
    """Blocks per level."""
    groups: tuple[int, int, int, int]
    """DCNv3 groups per level (16 channels per group, 32 for H)."""
    drop_path_rate: float
    """Stochastic depth of the last block (linear from 0 over all blocks)."""
    layer_scale: float | None
    """Initial value of ``gamma1``/``gamma2``; None: no layer scale (no such parameters)."""
    offset_scale: float
    """DCNv3 ``offset_scale``."""
    post_norm: bool
    """Norm after the DCN / MLP branch instead of before; drops the level norm."""
    dw_kernel_size: int | None = None
    """Kernel of the DCNv3 depthwise conv (None: the DCN kernel, 3)."""
    res_post_norm: bool = False
    """Extra LN on each residual branch after the pre-norm branch (H)."""
    level2_post_norm_block_ids: tuple[int, ...] | None = None
    """LN after these blocks of level 2 (H)."""
    center_feature_scale: bool = False
    """DCNv3 centre-feature gate (H); also keeps the level norm."""


INTERNIMAGE_SPECS: dict[str, InternImageSpec] = {
    "t": InternImageSpec(64, (4, 4, 18, 4), (4, 8, 16, 32), 0.2, 1.0, 1.0, False),
    "s": InternImageSpec(80, (4, 4, 21, 4), (5, 10, 20, 40), 0.3, 1.0, 1.0, True),
    "b": InternImageSpec(112, (4, 4, 21, 4), (7, 14, 28, 56), 0.4, 1.0, 1.0, True),
    "l": InternImageSpec(160, (5, 5, 22, 5), (10, 20, 40, 80), 0.4, 1.0, 2.0, True),
    "xl": InternImageSpec(192, (5, 5, 24, 5), (12, 24, 48, 96), 0.4, 1.0, 2.0, True),
    "h": InternImageSpec(
        320,
        (6, 6, 32, 6),
        (10, 20, 40, 80),
        0.5,
        None,
        1.0,
        False,
        dw_kernel_size=5,
        res_post_norm=True,
        level2_post_norm_block_ids=(5, 11, 17, 23, 29),
        center_feature_scale=True,
    ),
}


def _layer_norm(channels: int) -> nn.Sequential:
    """Channels-last LayerNorm in a Sequential slot ``0`` (names ``*.0.weight``)."""
    return nn.Sequential(nn.LayerNorm(channels, eps=LAYER_NORM_EPS))


class StemLayer(nn.Module):
    """(N, 3, H, W) -> (N, H/4, W/4, C): conv 3x3/2 -> LN -> GELU -> conv 3x3/2 -> LN.

    Names ``conv1``, ``norm1.1`` (LN between layout permutes), ``conv2``, ``norm2.1``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        half = out_channels // 2
        self.conv1 = nn.Conv2d(in_channels, half, 3, stride=2, padding=1)
        self.norm1 = nn.Sequential(
            ChannelsLast(), nn.LayerNorm(half, eps=LAYER_NORM_EPS), ChannelsFirst()
        )
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(half, out_channels, 3, stride=2, padding=1)
        self.norm2 = nn.Sequential(ChannelsLast(), nn.LayerNorm(out_channels, eps=LAYER_NORM_EPS))

    def forward(self, x: Tensor) -> Tensor:
        return self.norm2(self.conv2(self.act(self.norm1(self.conv1(x)))))


class DownsampleLayer(nn.Module):
    """(N, H, W, C) -> (N, ceil(H/2), ceil(W/2), 2C): conv 3x3/2 (no bias) then LN (``norm.1``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1, bias=False)
        self.norm = nn.Sequential(ChannelsLast(), nn.LayerNorm(2 * channels, eps=LAYER_NORM_EPS))

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x.permute(0, 3, 1, 2)))


class MLPLayer(nn.Module):
    """Linear ``fc1`` (C -> hidden) -> GELU -> Linear ``fc2`` (hidden -> C), channels-last."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class InternImageLayer(nn.Module):
    """One InternImage block: a DCNv3 branch and an MLP branch, each residual.

    Pre-norm (T, H): ``x + dp(g1 * dcn(norm1(x)))``, ``x + dp(g2 * mlp(norm2(x)))``;
    post-norm (S, B, L, XL): ``x + dp(g1 * norm1(dcn(x)))``, ``x + dp(g2 * norm2(mlp(x)))``;
    ``g1``/``g2`` are ``gamma1``/``gamma2`` with layer scale, else 1; ``res_post_norm`` (H,
    pre-norm without layer scale) adds ``res_post_norm1``/``2`` after each branch. ``dp`` is
    stochastic depth. forward: float (N, H, W, C) -> same shape.

    Raises:
        ValueError: ``res_post_norm`` with ``post_norm`` or layer scale (the reference ignores
            it there; no released model uses that combination).
    """

    def __init__(
        self,
        channels: int,
        groups: int,
        *,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        post_norm: bool = False,
        layer_scale: float | None = None,
        offset_scale: float = 1.0,
        dw_kernel_size: int | None = None,
        res_post_norm: bool = False,
        center_feature_scale: bool = False,
        with_cp: bool = False,
        core: CoreFn | None = None,
    ) -> None:
        super().__init__()
        if res_post_norm and (post_norm or layer_scale is not None):
            raise ValueError("res_post_norm needs pre-norm blocks without layer scale")
        self.post_norm = post_norm
        self.with_cp = with_cp
        self.norm1 = _layer_norm(channels)
        self.dcn = DCNv3(
            channels,
            kernel_size=3,
            dw_kernel_size=dw_kernel_size,
            stride=1,
            pad=1,
            dilation=1,
            group=groups,
            offset_scale=offset_scale,
            center_feature_scale=center_feature_scale,
            core=core,
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = _layer_norm(channels)
        self.mlp = MLPLayer(channels, int(channels * mlp_ratio))
        self.layer_scale = layer_scale is not None
        if layer_scale is not None:
            self.gamma1 = nn.Parameter(torch.full((channels,), float(layer_scale)))
            self.gamma2 = nn.Parameter(torch.full((channels,), float(layer_scale)))
        self.res_post_norm = res_post_norm
        if res_post_norm:
            self.res_post_norm1 = _layer_norm(channels)
            self.res_post_norm2 = _layer_norm(channels)

    def _branches(self, x: Tensor) -> Tensor:
        if self.post_norm:
            dcn_out = self.norm1(self.dcn(x))
        else:
            dcn_out = self.dcn(self.norm1(x))
            if self.res_post_norm:
                dcn_out = self.res_post_norm1(dcn_out)
        if self.layer_scale:
            dcn_out = self.gamma1 * dcn_out
        x = x + self.drop_path(dcn_out)
        if self.post_norm:
            mlp_out = self.norm2(self.mlp(x))
        else:
            mlp_out = self.mlp(self.norm2(x))
            if self.res_post_norm:
                mlp_out = self.res_post_norm2(mlp_out)
        if self.layer_scale:
            mlp_out = self.gamma2 * mlp_out
        return x + self.drop_path(mlp_out)

    def forward(self, x: Tensor) -> Tensor:
        if self.with_cp and x.requires_grad:
            return checkpoint.checkpoint(self._branches, x, use_reentrant=False)
        return self._branches(x)


class InternImageLevel(nn.Module):
    """``blocks`` at one resolution, then ``post_norms`` (after the listed blocks), ``norm``
    (unless post-norm without centre-feature scale) and ``downsample`` (all but the last level).

    forward(x: (N, H, W, C)) -> (next level input or None, level output (N, H, W, C)).
    """

    def __init__(
        self,
        channels: int,
        depth: int,
        groups: int,
        *,
        downsample: bool,
        drop_path: Sequence[float],
        post_norm: bool,
        post_norm_block_ids: Sequence[int] | None = None,
        center_feature_scale: bool = False,
        **layer_options,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            InternImageLayer(
                channels,
                groups,
                drop_path=drop_path[j],
                post_norm=post_norm,
                center_feature_scale=center_feature_scale,
                **layer_options,
            )
            for j in range(depth)
        )
        self.norm = _layer_norm(channels) if (not post_norm or center_feature_scale) else None
        self.post_norm_block_ids = tuple(post_norm_block_ids or ())
        if self.post_norm_block_ids:
            self.post_norms = nn.ModuleList(_layer_norm(channels) for _ in self.post_norm_block_ids)
        self.downsample = DownsampleLayer(channels) if downsample else None

    def forward(self, x: Tensor) -> tuple[Tensor | None, Tensor]:
        for j, block in enumerate(self.blocks):
            x = block(x)
            if j in self.post_norm_block_ids:
                x = self.post_norms[self.post_norm_block_ids.index(j)](x)
        if self.norm is not None:
            x = self.norm(x)
        down = self.downsample(x) if self.downsample is not None else None
        return down, x


class InternImage(nn.Module):
    """InternImage backbone: stem, four levels of DCNv3 blocks with downsampling between.

    forward(images: float (N, 3, H, W)) -> list of float (N, channels * 2**i, H_i, W_i) for
    i in ``out_indices``, with H_0 = ceil(H / 4) and each next level half (ceil) the previous.

    Init (as the reference's ``_init_weights`` then the DCN reset): Linear weights truncated
    normal std 0.02 and zero bias, LayerNorm ones/zeros, then every DCNv3's own init (zero
    offset/mask projections, Xavier input/output projections); convs keep PyTorch's default.

    Args:
        channels, depths, groups, layer_scale, offset_scale, post_norm, dw_kernel_size,
            res_post_norm, level2_post_norm_block_ids, center_feature_scale: see
            :class:`InternImageSpec`.
        mlp_ratio: MLP hidden width / channels.
        drop_path_rate: stochastic depth of the last block, linear from 0 over all blocks.
        out_indices: which levels to return.
        with_cp: activation checkpointing per block (memory for time, training only).
        core: DCNv3 operator implementation (default :func:`trainer.models.dcnv3.dcnv3_core_auto`:
            :func:`~trainer.models.dcnv3.dcnv3_core` unless ``SEGCTL_DCNV3_IMPL`` says otherwise).

    Raises:
        ValueError: ``depths``/``groups`` not of length 4, or a level width not divisible by
            its groups.
    """

    def __init__(
        self,
        channels: int = 64,
        depths: Sequence[int] = (4, 4, 18, 4),
        groups: Sequence[int] = (4, 8, 16, 32),
        *,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.2,
        layer_scale: float | None = None,
        offset_scale: float = 1.0,
        post_norm: bool = False,
        dw_kernel_size: int | None = None,
        res_post_norm: bool = False,
        level2_post_norm_block_ids: Sequence[int] | None = None,
        center_feature_scale: bool = False,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        with_cp: bool = False,
        core: CoreFn | None = None,
    ) -> None:
        super().__init__()
        if len(depths) != 4 or len(groups) != 4:
            raise ValueError(f"depths and groups need 4 levels, got {depths} and {groups}")
        self.depths = tuple(depths)
        self.out_indices = tuple(out_indices)
        widths = tuple(channels * 2**i for i in range(4))
        self.out_channels = tuple(widths[i] for i in self.out_indices)
        self.patch_embed = StemLayer(3, channels)
        rates = torch.linspace(0, drop_path_rate, sum(self.depths), device="cpu").tolist()
        self.levels = nn.ModuleList()
        start = 0
        for i, (depth, group) in enumerate(zip(self.depths, groups)):
            self.levels.append(
                InternImageLevel(
                    widths[i],
                    depth,
                    group,
                    downsample=i < 3,
                    drop_path=rates[start : start + depth],
                    post_norm=post_norm,
                    post_norm_block_ids=level2_post_norm_block_ids if i == 2 else None,
                    center_feature_scale=center_feature_scale,
                    mlp_ratio=mlp_ratio,
                    layer_scale=layer_scale,
                    offset_scale=offset_scale,
                    dw_kernel_size=dw_kernel_size,
                    res_post_norm=res_post_norm,
                    with_cp=with_cp,
                    core=core,
                )
            )
            start += depth
        self.apply(self._init_weights)
        for module in self.modules():
            if isinstance(module, DCNv3):
                module.reset_parameters()

    @classmethod
    def from_spec(
        cls, spec: InternImageSpec, *, drop_path_rate: float | None = None, **options
    ) -> InternImage:
        """Backbone of ``spec``; ``drop_path_rate`` None keeps the spec's; ``options`` go to
        the constructor (``out_indices``, ``with_cp``, ``core``, ``mlp_ratio``)."""
        return cls(
            spec.channels,
            spec.depths,
            spec.groups,
            drop_path_rate=spec.drop_path_rate if drop_path_rate is None else drop_path_rate,
            layer_scale=spec.layer_scale,
            offset_scale=spec.offset_scale,
            post_norm=spec.post_norm,
            dw_kernel_size=spec.dw_kernel_size,
            res_post_norm=spec.res_post_norm,
            level2_post_norm_block_ids=spec.level2_post_norm_block_ids,
            center_feature_scale=spec.center_feature_scale,
            **options,
        )

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, images: Tensor) -> list[Tensor]:
        x: Tensor | None = self.patch_embed(images)
        outs = []
        for i, level in enumerate(self.levels):
            x, level_out = level(x)
            if i in self.out_indices:
                outs.append(level_out.permute(0, 3, 1, 2).contiguous())
        return outs


def _layer_id(name: str, depths: Sequence[int], num_layers: int) -> int:
    """Layer index of parameter ``name`` in the reference's ``get_num_layer_for_swin``.

    ``backbone.patch_embed.*`` -> 0; ``backbone.levels.{i}.{part}.{j}.*`` -> j + 1 +
    depths[:i] for every part other than ``downsample``/``norm`` (blocks; H's
    ``post_norms.{k}`` thus takes block k's id, as the reference does); level ``downsample``
    and ``norm`` -> 1 + sum(depths[:i + 1]), with level 3 taking level 2's id (the reference's
    table stops at three levels); everything else (the heads) -> ``num_layers - 1``.
    """
    if name.startswith("backbone.patch_embed"):
        return 0
    if name.startswith("backbone.levels"):
        parts = name.split(".")
        level = int(parts[2])
        if parts[3] not in ("downsample", "norm"):
            return int(parts[4]) + 1 + sum(depths[:level])
        return 1 + sum(depths[: min(level, 2) + 1])
    return num_layers - 1


def layer_decay_param_groups(
    model: nn.Module,
    base_lr: float,
    weight_decay: float,
    layer_decay_rate: float,
    head_lr_mult: float = 1.0,
) -> list[dict[str, object]]:
    """Optimizer parameter groups with InternImage's layer-wise learning-rate decay.

    With D = sum of the backbone depths and ``num_layers = D + 2``, each parameter gets a layer
    id (see :func:`_layer_id`: stem 0, block j of level i ``1 + depths[:i] + j``, level
    downsample/norm after their level's blocks, heads ``num_layers - 1``) and the learning-rate
    scale ``layer_decay_rate ** (num_layers - 1 - layer_id)`` (heads 1, the stem the smallest),
    times ``head_lr_mult`` for parameters outside ``backbone.``. Parameters that are 1-D
    (biases, norms, ``gamma1``/``gamma2``, the centre-feature-scale bias), whose name ends in
    ``.bias`` or contains ``norm``, ``relative_position`` or ``sampling_offsets`` (the
    reference's list; no parameter here has the last two) get no weight decay; the others
    ``weight_decay``. Frozen parameters (``requires_grad`` False) are left out.

    Args:
        model: a segmentor whose ``backbone`` is an :class:`InternImage` (names ``backbone.*``,
            heads ``decode_head.*``/``auxiliary_head.*``).
        base_lr, weight_decay: the optimizer's base values.
        layer_decay_rate: 1.0 disables the decay (T, S, B); 0.94 (L, XL), 0.95 (H).
        head_lr_mult: extra multiplier for non-backbone parameters (1.0 in the reference).

    Returns:
        Groups in order of first appearance, one per (layer id, decay or not), each a dict with
        ``params``, ``names``, ``lr`` (= ``base_lr * lr_mult``), ``base_lr`` (the same, the
        schedule's starting rate), ``lr_mult`` (the scale), ``lr_scale`` (alias),
        ``weight_decay``, ``decay_mult`` (1.0 or 0.0), ``layer_id`` and ``group_name``
        (``layer_{id}_decay`` / ``layer_{id}_no_decay``, as the reference names them).

    Raises:
        ValueError: ``model.backbone`` is not an InternImage.

    Source: OpenGVLab/InternImage
    ``segmentation/mmcv_custom/custom_layer_decay_optimizer_constructor.py``.
    """
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, InternImage):
        raise ValueError(
            "layer-wise decay needs a model whose `backbone` is an InternImage, got "
            f"{type(backbone).__name__}"
        )
    depths = backbone.depths
    num_layers = sum(depths) + 2
    groups: dict[str, dict[str, object]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = (
            param.ndim == 1
            or name.endswith(".bias")
            or "relative_position" in name
            or "norm" in name
            or "sampling_offsets" in name
        )
        layer_id = _layer_id(name, depths, num_layers)
        group_name = f"layer_{layer_id}_{'no_decay' if no_decay else 'decay'}"
        if group_name not in groups:
            scale = layer_decay_rate ** (num_layers - 1 - layer_id)
            if not name.startswith("backbone."):
                scale *= head_lr_mult
            groups[group_name] = {
                "params": [],
                "names": [],
                "group_name": group_name,
                "layer_id": layer_id,
                "lr_mult": scale,
                "lr_scale": scale,
                "decay_mult": 0.0 if no_decay else 1.0,
                "base_lr": base_lr * scale,
                "lr": base_lr * scale,
                "weight_decay": 0.0 if no_decay else weight_decay,
            }
        groups[group_name]["params"].append(param)  # type: ignore[union-attr]
        groups[group_name]["names"].append(name)  # type: ignore[union-attr]
    return list(groups.values())
