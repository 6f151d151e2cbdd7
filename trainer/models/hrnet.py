"""HRNetV2 backbone: parallel multi-resolution branches with repeated cross-branch fusion.

Architecture: Wang et al. 2020, "Deep High-Resolution Representation Learning for Visual
Recognition" (TPAMI; arXiv 1908.07919). Module names and numerics follow mmsegmentation 1.x
``mmseg/models/backbones/hrnet.py`` (``conv1``/``bn1``/``conv2``/``bn2`` stem, ``layer1``,
``transition{1,2,3}``, ``stage{2,3,4}`` of modules with ``branches`` and ``fuse_layers``), so
mmseg checkpoints load with ``strict=True``. The official HRNet-Semantic-Segmentation code
(``lib/models/seg_hrnet.py``) uses the same backbone names; it differs only in how the fusion
upsamples (see :class:`HRModule`).

Layout of the network (widths ``w0..w3``, each branch at half the resolution of the previous):

    stem (2 stride-2 3x3 convs, 64 ch, 1/4) -> layer1 (Bottlenecks, 4*C1 ch)
    -> transition1 -> stage2 (2 branches) -> transition2 -> stage3 (3) -> transition3
    -> stage4 (4 branches) -> [x0 (w0, 1/4), x1 (w1, 1/8), x2 (w2, 1/16), x3 (w3, 1/32)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

STEM_CHANNELS = 64


@dataclass(frozen=True)
class HRNetSpec:
    """Shape of one HRNetV2 variant (official ``experiments/*.yaml``; mmseg ``extra`` dicts)."""

    layer1_blocks: int
    """Bottleneck blocks in stage 1 (``layer1``)."""
    layer1_channels: int
    """Bottleneck width in stage 1; its output has 4x as many channels."""
    num_modules: tuple[int, int, int]
    """HR modules in stages 2, 3 and 4."""
    num_blocks: int
    """BasicBlocks per branch in every HR module of stages 2 to 4."""
    widths: tuple[int, int, int, int]
    """Channels of the four branches (1/4, 1/8, 1/16, 1/32 of the image size)."""


# Wang et al. 2020 and the HRNet-Semantic-Segmentation configs; W18-Small-v2 is mmseg's "hr18s".
HRNET_SPECS: dict[str, HRNetSpec] = {
    "w18_small_v1": HRNetSpec(1, 32, (1, 1, 1), 2, (16, 32, 64, 128)),
    "w18_small_v2": HRNetSpec(2, 64, (1, 3, 2), 2, (18, 36, 72, 144)),
    "w18": HRNetSpec(4, 64, (1, 4, 3), 4, (18, 36, 72, 144)),
    "w48": HRNetSpec(4, 64, (1, 4, 3), 4, (48, 96, 192, 384)),
}


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    """Bias-free conv with 'same' padding, Kaiming-normal init (fan_out), as mmseg's HRNet."""
    conv = nn.Conv2d(
        in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False
    )
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


def _conv_bn(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1
) -> nn.Sequential:
    """``Sequential(conv, bn)``: the ``{0,1}`` names of downsample and fusion layers."""
    return nn.Sequential(
        _conv(in_channels, out_channels, kernel_size, stride), nn.BatchNorm2d(out_channels)
    )


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """``Sequential(conv3x3, bn, relu)``: a transition step or an intermediate fusion step."""
    return nn.Sequential(
        _conv(in_channels, out_channels, 3, stride),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """Residual block of two 3x3 convs (``conv1``/``bn1``/``conv2``/``bn2``, ``downsample``).

    forward(x: float (N, in_channels, H, W)) -> float (N, channels, H, W).
    Source: He et al. 2016; mmseg ``backbones/resnet.py`` ``BasicBlock``.
    """

    expansion = 1

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv(in_channels, channels, 3)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = _conv(channels, channels, 3)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _conv_bn(in_channels, channels, 1) if in_channels != channels else None

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """Residual 1x1-3x3-1x1 block with 4x expansion (``conv1..3``/``bn1..3``, ``downsample``).

    forward(x: float (N, in_channels, H, W)) -> float (N, 4 * channels, H, W).
    Source: He et al. 2016; mmseg ``backbones/resnet.py`` ``Bottleneck`` (stride 1 here).
    """

    expansion = 4

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = _conv(in_channels, channels, 1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = _conv(channels, channels, 3)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = _conv(channels, out_channels, 1)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            _conv_bn(in_channels, out_channels, 1) if in_channels != out_channels else None
        )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class HRModule(nn.Module):
    """One high-resolution module: BasicBlocks on every branch, then all-to-all fusion.

    ``branches[i]``: ``num_blocks`` BasicBlocks at width ``widths[i]``.
    ``fuse_layers[i][j]`` brings branch j to branch i: None for j == i; for j > i a 1x1 conv +
    BN (``.0``, ``.1``) followed by bilinear upsampling; for j < i, i - j stride-2 3x3 conv + BN
    steps (ReLU after all but the last). Output i is ``relu(sum_j fuse_layers[i][j](x_j))``.

    Upsampling: with ``fuse_align_corners`` False (mmseg), the map is first scaled by
    ``2**(j - i)`` and then resized to the target size if that differs (odd sizes), both with
    align_corners False. With True (the official code under its configs' ``ALIGN_CORNERS:
    True``), it is resized straight to the target size with align_corners True.

    forward(x: list of float (N, widths[i], H_i, W_i)) -> list of the same shapes.
    """

    def __init__(self, widths: Sequence[int], num_blocks: int, fuse_align_corners: bool) -> None:
        super().__init__()
        self.fuse_align_corners = fuse_align_corners
        self.branches = nn.ModuleList(
            nn.Sequential(*(BasicBlock(w, w) for _ in range(num_blocks))) for w in widths
        )
        fuse_layers = []
        for i, w_i in enumerate(widths):
            row: list[nn.Module | None] = []
            for j, w_j in enumerate(widths):
                if j > i:
                    row.append(_conv_bn(w_j, w_i, 1))
                elif j == i:
                    row.append(None)
                else:
                    steps: list[nn.Module] = [_conv_bn_relu(w_j, w_j, 2) for _ in range(i - j - 1)]
                    steps.append(_conv_bn(w_j, w_i, 3, stride=2))
                    row.append(nn.Sequential(*steps))
            fuse_layers.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(fuse_layers)
        self.relu = nn.ReLU(inplace=False)

    def _upsample(self, x: Tensor, factor: int, size: tuple[int, int]) -> Tensor:
        if self.fuse_align_corners:
            return F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        scaled = (x.shape[2] * factor, x.shape[3] * factor)
        x = F.interpolate(x, size=scaled, mode="bilinear", align_corners=False)
        if scaled != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x

    def forward(self, x: list[Tensor]) -> list[Tensor]:
        x = [branch(t) for branch, t in zip(self.branches, x)]
        out = []
        for i, row in enumerate(self.fuse_layers):
            size = (x[i].shape[2], x[i].shape[3])
            y: Tensor | None = None
            # Summed in branch order, as mmseg does (float addition order matters to the bit).
            for j, layer in enumerate(row):
                if j == i:
                    term = x[j]
                elif j > i:
                    term = self._upsample(layer(x[j]), 2 ** (j - i), size)
                else:
                    term = layer(x[j])
                y = term if y is None else y + term
            out.append(self.relu(y))
        return out


class HRNet(nn.Module):
    """HRNetV2 backbone returning the four branch outputs.

    Args:
        spec: the variant's shape (see :data:`HRNET_SPECS`).
        in_channels: image channels.
        fuse_align_corners: upsampling in the fusion layers; False is mmseg's (use it for mmseg
            checkpoints), True the official code's default configuration (see
            :class:`HRModule`).
        stem_relu: True (mmseg ``backbones/hrnet.py``, official ``seg_hrnet.py``) applies ReLU
            after ``bn1`` of the stem; False leaves it out (sssegmentation's HRNetV2 stem,
            ``ssseg/modules/models/backbones/hrnet.py``: conv1-bn1-conv2-bn2-relu). No module
            is added or removed, so parameter and buffer names are the same either way.

    forward(images: float (N, in_channels, H, W)) -> list of 4 float tensors
    (N, widths[i], ceil(H / 2**(i+2)), ceil(W / 2**(i+2))) (exact halving at each stride-2
    conv: ``floor((s - 1) / 2) + 1``).

    Attributes:
        out_channels: ``spec.widths``.
    """

    def __init__(
        self,
        spec: HRNetSpec,
        in_channels: int = 3,
        *,
        fuse_align_corners: bool = False,
        stem_relu: bool = True,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.stem_relu = stem_relu
        self.out_channels: tuple[int, ...] = tuple(spec.widths)
        self.conv1 = _conv(in_channels, STEM_CHANNELS, 3, stride=2)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        self.conv2 = _conv(STEM_CHANNELS, STEM_CHANNELS, 3, stride=2)
        self.bn2 = nn.BatchNorm2d(STEM_CHANNELS)
        self.relu = nn.ReLU(inplace=True)

        layer1_out = spec.layer1_channels * Bottleneck.expansion
        self.layer1 = nn.Sequential(
            *(
                Bottleneck(STEM_CHANNELS if k == 0 else layer1_out, spec.layer1_channels)
                for k in range(spec.layer1_blocks)
            )
        )
        previous: tuple[int, ...] = (layer1_out,)
        for stage, num_modules in zip((2, 3, 4), spec.num_modules):
            widths = tuple(spec.widths[:stage])
            setattr(self, f"transition{stage - 1}", self._transition(previous, widths))
            modules = (
                HRModule(widths, spec.num_blocks, fuse_align_corners) for _ in range(num_modules)
            )
            setattr(self, f"stage{stage}", nn.Sequential(*modules))
            previous = widths

    @staticmethod
    def _transition(previous: Sequence[int], widths: Sequence[int]) -> nn.ModuleList:
        """Existing branches: a 3x3 conv-BN-ReLU where the width changes, else None; the new
        branch: stride-2 3x3 conv-BN-ReLU steps from the lowest-resolution previous branch."""
        layers: list[nn.Module | None] = []
        for i, width in enumerate(widths):
            if i < len(previous):
                layers.append(
                    _conv_bn_relu(previous[i], width, 1) if previous[i] != width else None
                )
            else:
                steps = [
                    _conv_bn_relu(
                        previous[-1], width if k == i - len(previous) else previous[-1], 2
                    )
                    for k in range(i + 1 - len(previous))
                ]
                layers.append(nn.Sequential(*steps))
        return nn.ModuleList(layers)

    @staticmethod
    def _apply_transition(transition: nn.ModuleList, feats: list[Tensor]) -> list[Tensor]:
        out = []
        for i, layer in enumerate(transition):
            source = feats[i] if i < len(feats) else feats[-1]
            out.append(source if layer is None else layer(source))
        return out

    def forward(self, images: Tensor) -> list[Tensor]:
        x = self.bn1(self.conv1(images))
        if self.stem_relu:
            x = self.relu(x)
        x = self.relu(self.bn2(self.conv2(x)))
        feats = [self.layer1(x)]
        for stage in (2, 3, 4):
            feats = self._apply_transition(getattr(self, f"transition{stage - 1}"), feats)
            feats = getattr(self, f"stage{stage}")(feats)
        return feats
