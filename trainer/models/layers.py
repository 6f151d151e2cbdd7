"""Building blocks shared by the heads and backbones, named like mmcv's modules so that
mmsegmentation checkpoints load with ``strict=True``."""

from __future__ import annotations

from torch import Tensor, nn


class ConvBNReLU(nn.Module):
    """Conv (no bias) + BatchNorm2d + ReLU, named ``conv`` / ``bn`` like mmcv's ConvModule.

    forward(x: float (N, in_channels, H, W)) -> float (N, out_channels, H', W'), where
    H' = floor((H + 2 * padding - dilation * (kernel_size - 1) - 1) / stride) + 1 and padding is
    ``dilation * (kernel_size // 2)`` (size-preserving at stride 1).

    Source: mmcv ``mmcv/cnn/bricks/conv_module.py`` (conv → norm → act, Kaiming init).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        act: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=dilation * (kernel_size // 2),
            dilation=dilation,
            groups=groups,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()
        # ConvModule's initialisation: Kaiming normal (fan_out, ReLU gain), BN ones/zeros.
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))
