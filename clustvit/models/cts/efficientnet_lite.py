"""EfficientNet-Lite0 feature extractor in plain torch (the CTS policy network's trunk).

Parameter names match timm's ``efficientnet_lite0`` (``conv_stem``, ``bn1``, ``blocks.{i}.{j}.*``), so a
timm ImageNet checkpoint or an official CTS policy checkpoint loads without renaming. Lite = EfficientNet-B0
without squeeze-excitation, with ReLU6 and a fixed 32-channel stem.

    image (B,3,H,W) -> stem conv s2 -> 7 stages of MBConv blocks -> maps at strides 2, 4, 8, 16, 32
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

# One row per stage: (kernel, stride of the first block, expansion, out channels, repeats).
# timm arch_def: ds_r1_k3_s1_e1_c16, ir_r2_k3_s2_e6_c24, ir_r2_k5_s2_e6_c40, ir_r3_k3_s2_e6_c80,
#                ir_r3_k5_s1_e6_c112, ir_r4_k5_s2_e6_c192, ir_r1_k3_s1_e6_c320
LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
STEM_CHANNELS = 32
# timm features_only taps the last block before each stride change: strides 2, 4, 8, 16, 32.
FEATURE_STAGES = (0, 1, 2, 4, 6)


def conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """Bias-free conv with symmetric 'same' padding (timm's non-TF padding: k // 2)."""
    return nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, groups=groups, bias=False)


class DepthwiseSeparable(nn.Module):
    """Depthwise conv -> BN -> ReLU6 -> pointwise conv -> BN (timm ``DepthwiseSeparableConv``)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv_dw = conv(in_ch, in_ch, kernel, stride, groups=in_ch)
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv_pw = conv(in_ch, out_ch, 1)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.has_skip = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        """(B, Cin, H, W) -> (B, Cout, H/s, W/s)."""
        y = self.bn2(self.conv_pw(F.relu6(self.bn1(self.conv_dw(x)))))
        return x + y if self.has_skip else y


class InvertedResidual(nn.Module):
    """1x1 expand -> depthwise kxk -> 1x1 project, BN after each, ReLU6 after the first two (MBConv)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        mid = in_ch * expansion
        self.conv_pw = conv(in_ch, mid, 1)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv_dw = conv(mid, mid, kernel, stride, groups=mid)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv_pwl = conv(mid, out_ch, 1)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.has_skip = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        """(B, Cin, H, W) -> (B, Cout, H/s, W/s)."""
        y = F.relu6(self.bn1(self.conv_pw(x)))
        y = F.relu6(self.bn2(self.conv_dw(y)))
        y = self.bn3(self.conv_pwl(y))
        return x + y if self.has_skip else y


class EfficientNetLite0Features(nn.Module):
    """EfficientNet-Lite0 trunk returning the five feature maps of timm's ``features_only`` mode."""

    feature_channels: tuple[int, ...] = (16, 24, 40, 112, 320)

    def __init__(self, in_chans: int = 3) -> None:
        super().__init__()
        self.conv_stem = conv(in_chans, STEM_CHANNELS, 3, stride=2)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        stages = []
        in_ch = STEM_CHANNELS
        for kernel, stride, expansion, out_ch, repeats in LITE0_STAGES:
            blocks = []
            for j in range(repeats):
                s = stride if j == 0 else 1
                if expansion == 1:
                    blocks.append(DepthwiseSeparable(in_ch, out_ch, kernel, s))
                else:
                    blocks.append(InvertedResidual(in_ch, out_ch, kernel, s, expansion))
                in_ch = out_ch
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.init_weights()

    def init_weights(self) -> None:
        """timm's EfficientNet init: conv ~ N(0, 2 / fan_out) with fan_out per group; BN = identity."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B, 3, H, W) -> maps (B, C_i, ~H/s_i, ~W/s_i) for strides 2, 4, 8, 16, 32."""
        x = F.relu6(self.bn1(self.conv_stem(x)))  # (B, 32, H/2, W/2)
        features = []
        for i, stage in enumerate(self.blocks):
            x = stage(x)
            if i in FEATURE_STAGES:
                features.append(x)
        return features
