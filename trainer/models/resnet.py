"""Dilated ResNet backbones for DeepLabV3: ResNetV1c-50/101 and ResNeSt-101.

Architectures: He et al. 2016, "Deep Residual Learning for Image Recognition" (bottleneck
residual blocks); the "V1c" deep stem of He et al. 2019, "Bag of Tricks for Image
Classification"; dilated (atrous) last stages for output stride 8 as in Chen et al. 2017,
"Rethinking Atrous Convolution for Semantic Image Segmentation"; ResNeSt: Zhang et al. 2020,
"ResNeSt: Split-Attention Networks".

Parameter names and numerics follow mmsegmentation ``mmseg/models/backbones/resnet.py``
(``ResNetV1c``: ``deep_stem=True``, stride in the 3x3 conv), ``backbones/resnest.py``
(``ResNeSt`` on ``ResNetV1d``: deep stem, average-pool shortcut) and ``utils/res_layer.py``, so
the public ``open-mmlab://resnet50_v1c`` / ``resnet101_v1c`` / ``resnest101`` ImageNet weights and
mmseg DeepLabV3 checkpoints load with ``strict=True``. mmcv names BatchNorm layers ``bn<k>``
(``build_norm_layer`` abbreviation), so the split-attention norms are ``bn0``/``bn1``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Blocks per stage (He et al. 2016, Table 1).
RESNET_DEPTHS: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}

# Output stride 8 ("-d8" in mmseg config names): stages 3 and 4 keep resolution and dilate.
D8_STRIDES = (1, 2, 1, 1)
D8_DILATIONS = (1, 1, 2, 4)


def _conv_bn_relu_stem(in_channels: int, stem_channels: int) -> nn.Sequential:
    """Deep stem: three 3x3 conv-BN-ReLU (first stride 2), names ``stem.{0..8}`` as mmseg."""
    half = stem_channels // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, half, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(half),
        nn.ReLU(inplace=True),
        nn.Conv2d(half, half, 3, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(half),
        nn.ReLU(inplace=True),
        nn.Conv2d(half, stem_channels, 3, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(stem_channels),
        nn.ReLU(inplace=True),
    )


def _init_resnet(module: nn.Module) -> None:
    """mmseg ResNet initialisation: Kaiming normal (fan_out) convs, BN weight 1 / bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class Bottleneck(nn.Module):
    """ResNet bottleneck, "pytorch" style (stride on the 3x3 conv), as mmseg ``Bottleneck``.

    ``conv1`` 1x1 (in -> planes), ``conv2`` 3x3 (stride, dilation, padding = dilation),
    ``conv3`` 1x1 (planes -> 4 * planes), each followed by ``bn1/bn2/bn3``; ``downsample`` is
    the projection shortcut (``downsample.0`` conv, ``downsample.1`` BN) when given.

    forward(x: float (N, inplanes, H, W)) -> float (N, 4 * planes, ceil(H / s), ceil(W / s)).
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(
            planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class RadixSoftmax(nn.Module):
    """Softmax over the radix splits (sigmoid when radix is 1), mmseg ``RSoftmax``.

    forward(x: float (N, groups * radix * C', 1, 1)) -> float (N, groups * radix * C').
    """

    def __init__(self, radix: int, groups: int) -> None:
        super().__init__()
        self.radix = radix
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        if self.radix > 1:
            x = x.view(n, self.groups, self.radix, -1).transpose(1, 2)
            return F.softmax(x, dim=1).reshape(n, -1)
        return torch.sigmoid(x).reshape(n, -1)


class SplitAttentionConv2d(nn.Module):
    """Split-attention convolution (Zhang et al. 2020, Fig. 2), mmseg ``SplitAttentionConv2d``.

    ``conv`` (k x k, ``channels * radix`` outputs, ``groups * radix`` groups) -> ``bn0`` -> ReLU
    gives ``radix`` splits; their sum is pooled globally and passed through ``fc1`` (1x1 with
    bias, inter = max(in_channels * radix // reduction_factor, 32)) -> ``bn1`` -> ReLU ->
    ``fc2`` (1x1 with bias) -> radix softmax, whose weights mix the splits.

    forward(x: float (N, in_channels, H, W)) -> float (N, channels, H', W') with H' the conv's
    output size (stride, padding and dilation as given).
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        radix: int = 2,
        reduction_factor: int = 4,
    ) -> None:
        super().__init__()
        inter_channels = max(in_channels * radix // reduction_factor, 32)
        self.radix = radix
        self.groups = groups
        self.channels = channels
        self.conv = nn.Conv2d(
            in_channels,
            channels * radix,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups * radix,
            bias=False,
        )
        self.bn0 = nn.BatchNorm2d(channels * radix)
        self.relu = nn.ReLU(inplace=True)
        self.fc1 = nn.Conv2d(channels, inter_channels, 1, groups=groups)
        self.bn1 = nn.BatchNorm2d(inter_channels)
        self.fc2 = nn.Conv2d(inter_channels, channels * radix, 1, groups=groups)
        self.rsoftmax = RadixSoftmax(radix, groups)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn0(self.conv(x)))
        n = x.shape[0]
        if self.radix > 1:
            splits = x.view(n, self.radix, -1, *x.shape[2:])
            gap = splits.sum(dim=1)
        else:
            splits, gap = x, x
        gap = F.adaptive_avg_pool2d(gap, 1)
        gap = self.relu(self.bn1(self.fc1(gap)))
        atten = self.rsoftmax(self.fc2(gap)).view(n, -1, 1, 1)
        if self.radix > 1:
            attens = atten.view(n, self.radix, -1, 1, 1)
            return (attens * splits).sum(dim=1).contiguous()
        return (atten * x).contiguous()


class ResNeStBottleneck(nn.Module):
    """ResNeSt bottleneck (mmseg ``resnest.Bottleneck``, groups 1 so width = planes).

    ``conv1``/``bn1`` 1x1, ``conv2`` a :class:`SplitAttentionConv2d` (3x3, dilation), then for
    a strided block with ``avg_down_stride`` an ``avd_layer`` (AvgPool2d(3, stride, padding 1))
    instead of a strided conv, ``conv3``/``bn3`` 1x1 -> 4 * planes; shortcut ``downsample``
    (``.0`` AvgPool2d, ``.1`` conv, ``.2`` BN) when given.

    forward(x: float (N, inplanes, H, W)) -> float (N, 4 * planes, ceil(H / s), ceil(W / s)).
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        radix: int = 2,
        reduction_factor: int = 4,
        avg_down_stride: bool = True,
    ) -> None:
        super().__init__()
        width = planes
        self.avg_down_stride = avg_down_stride and stride > 1
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = SplitAttentionConv2d(
            width,
            width,
            3,
            stride=1 if self.avg_down_stride else stride,
            padding=dilation,
            dilation=dilation,
            radix=radix,
            reduction_factor=reduction_factor,
        )
        if self.avg_down_stride:
            self.avd_layer = nn.AvgPool2d(3, stride, padding=1)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.conv2(out)
        if self.avg_down_stride:
            out = self.avd_layer(out)
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _res_layer(
    make_block,
    inplanes: int,
    planes: int,
    num_blocks: int,
    stride: int,
    dilation: int,
    avg_down: bool,
    contract_dilation: bool,
) -> nn.Sequential:
    """One stage as mmseg ``ResLayer``: projection shortcut on the first block; with
    ``contract_dilation`` the first block uses ``dilation // 2`` when ``dilation`` > 1."""
    downsample = None
    if stride != 1 or inplanes != planes * 4:
        parts: list[nn.Module] = []
        conv_stride = stride
        if avg_down:
            conv_stride = 1
            parts.append(
                nn.AvgPool2d(stride, stride=stride, ceil_mode=True, count_include_pad=False)
            )
        parts += [
            nn.Conv2d(inplanes, planes * 4, 1, stride=conv_stride, bias=False),
            nn.BatchNorm2d(planes * 4),
        ]
        downsample = nn.Sequential(*parts)
    first_dilation = dilation // 2 if (contract_dilation and dilation > 1) else dilation
    blocks = [make_block(inplanes, planes, stride, first_dilation, downsample)]
    blocks += [make_block(planes * 4, planes, 1, dilation, None) for _ in range(1, num_blocks)]
    return nn.Sequential(*blocks)


class _DilatedResNetBase(nn.Module):
    """Deep stem + max-pool + four stages; returns every stage's output."""

    out_channels: tuple[int, ...] = (256, 512, 1024, 2048)

    def _build(
        self,
        make_block,
        depth: int,
        in_channels: int,
        stem_channels: int,
        base_channels: int,
        strides: Sequence[int],
        dilations: Sequence[int],
        avg_down: bool,
        contract_dilation: bool,
    ) -> None:
        if depth not in RESNET_DEPTHS:
            raise ValueError(f"depth must be one of {sorted(RESNET_DEPTHS)}, got {depth}")
        if len(strides) != 4 or len(dilations) != 4:
            raise ValueError(f"need 4 strides and 4 dilations, got {strides}, {dilations}")
        self.depth = depth
        self.strides = tuple(strides)
        self.dilations = tuple(dilations)
        self.stem = _conv_bn_relu_stem(in_channels, stem_channels)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = stem_channels
        for i, num_blocks in enumerate(RESNET_DEPTHS[depth]):
            planes = base_channels * 2**i
            layer = _res_layer(
                make_block, inplanes, planes, num_blocks, strides[i], dilations[i],
                avg_down, contract_dilation,
            )
            self.add_module(f"layer{i + 1}", layer)
            inplanes = planes * 4
        self.out_channels = tuple(base_channels * 2**i * 4 for i in range(4))
        _init_resnet(self)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.stem(x))
        outs = []
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
            outs.append(x)
        return outs


class ResNetV1c(_DilatedResNetBase):
    """ResNetV1c (deep 3x3 stem, 64 stem channels) with dilated stages, mmseg ``ResNetV1c``.

    Defaults give mmseg's ``-d8`` backbone: strides (1, 2, 1, 1), dilations (1, 1, 2, 4),
    ``contract_dilation=True`` (first block of a dilated stage uses half the dilation).

    forward(images: float (N, in_channels, H, W)) -> list of 4 float maps
    (N, 256 / 512 / 1024 / 2048, h_i, w_i); with the defaults h_0 = ceil(H / 4) and the other
    three at 1/8 (output stride 8). ``out_channels`` lists the channel counts.

    Raises:
        ValueError: ``depth`` not in :data:`RESNET_DEPTHS`, or not 4 strides/dilations.
    """

    def __init__(
        self,
        depth: int = 50,
        *,
        in_channels: int = 3,
        stem_channels: int = 64,
        base_channels: int = 64,
        strides: Sequence[int] = D8_STRIDES,
        dilations: Sequence[int] = D8_DILATIONS,
        contract_dilation: bool = True,
    ) -> None:
        super().__init__()

        def make_block(inplanes, planes, stride, dilation, downsample):
            return Bottleneck(inplanes, planes, stride, dilation, downsample)

        self._build(
            make_block, depth, in_channels, stem_channels, base_channels, strides, dilations,
            avg_down=False, contract_dilation=contract_dilation,
        )


class ResNeSt(_DilatedResNetBase):
    """ResNeSt (split-attention bottlenecks on ResNetV1d), mmseg ``ResNeSt``.

    mmseg's ResNeSt-101 settings (``configs/_base_``/``resnest`` configs): deep stem with
    ``stem_channels=128``, radix 2, reduction factor 4, groups 1, ``avg_down_stride=True``, and
    the V1d average-pool projection shortcut; with the default strides/dilations the -d8
    layout of :class:`ResNetV1c`.

    forward(images: float (N, in_channels, H, W)) -> list of 4 float maps
    (N, 256 / 512 / 1024 / 2048, h_i, w_i), output stride 8 with the defaults.

    Raises:
        ValueError: ``depth`` not in :data:`RESNET_DEPTHS`, or not 4 strides/dilations.
    """

    def __init__(
        self,
        depth: int = 101,
        *,
        in_channels: int = 3,
        stem_channels: int = 128,
        base_channels: int = 64,
        radix: int = 2,
        reduction_factor: int = 4,
        avg_down_stride: bool = True,
        strides: Sequence[int] = D8_STRIDES,
        dilations: Sequence[int] = D8_DILATIONS,
        contract_dilation: bool = True,
    ) -> None:
        super().__init__()

        def make_block(inplanes, planes, stride, dilation, downsample):
            return ResNeStBottleneck(
                inplanes, planes, stride, dilation, downsample,
                radix=radix, reduction_factor=reduction_factor, avg_down_stride=avg_down_stride,
            )

        self._build(
            make_block, depth, in_channels, stem_channels, base_channels, strides, dilations,
            avg_down=True, contract_dilation=contract_dilation,
        )


__all__ = [
    "D8_DILATIONS",
    "D8_STRIDES",
    "RESNET_DEPTHS",
    "Bottleneck",
    "ResNeSt",
    "ResNeStBottleneck",
    "ResNetV1c",
    "SplitAttentionConv2d",
]
