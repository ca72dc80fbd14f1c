"""UPerNet decode head (Xiao et al., ECCV 2018): pyramid pooling on the last level + FPN over all levels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvBNReLU(nn.Module):
    """conv (no bias) -> BatchNorm -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def resize(x: Tensor, size: tuple[int, ...]) -> Tensor:
    """Bilinear resize (align_corners=False); identity when the size already matches."""
    return x if tuple(x.shape[2:]) == tuple(size) else F.interpolate(x, size, mode="bilinear", align_corners=False)


class UPerHead(nn.Module):
    """Reads all backbone maps (B, C_l, h, w) and returns logits (B, num_classes, h0, w0) at level 0's size."""

    def __init__(
        self,
        in_channels: list[int],
        num_classes: int,
        channels: int = 512,
        pool_scales: tuple[int, ...] = (1, 2, 3, 6),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.pool_scales = tuple(pool_scales)
        top = in_channels[-1]
        self.ppm = nn.ModuleList(ConvBNReLU(top, channels, 1) for _ in self.pool_scales)
        self.bottleneck = ConvBNReLU(top + len(self.pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList(ConvBNReLU(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvBNReLU(channels, channels, 3) for _ in in_channels[:-1])
        self.fpn_bottleneck = ConvBNReLU(len(in_channels) * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def pyramid_pool(self, x: Tensor) -> Tensor:
        """PPM: adaptive average pools (overlapping bins when the size is not a multiple) -> 1x1 conv -> resize."""
        pooled = [resize(conv(F.adaptive_avg_pool2d(x, s)), x.shape[2:]) for s, conv in zip(self.pool_scales, self.ppm)]
        return self.bottleneck(torch.cat([x, *pooled], dim=1))

    def forward(self, features: list[Tensor]) -> Tensor:
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, features)] + [self.pyramid_pool(features[-1])]
        for i in range(len(laterals) - 1, 0, -1):  # top-down path
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[2:])
        outs = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals)] + [laterals[-1]]
        outs = [outs[0]] + [resize(o, outs[0].shape[2:]) for o in outs[1:]]
        return self.conv_seg(self.dropout(self.fpn_bottleneck(torch.cat(outs, dim=1))))
