"""The CIFAR ResNet family (`resnet<6n+2>`: resnet20, resnet32, resnet56, ...), as open_lth's
cifar_resnet_D_W.

Invariant: the module tree (names, order, shapes) fixes the weights create_model gives for a
seed, so it is part of every stored run's identity: parameter counts and shapes are checked by
tests/test_models.py::test_parameter_counts_match_open_lth and test_width_option_scales_channels.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from lthfast.foundations.errors import LthError
from lthfast.models.registry import NUM_CLASSES, register


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus a shortcut (1x1 conv + BN when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Sequential()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """open_lth's cifar_resnet_D_W: three stages of (D-2)/6 blocks, widths W, 2W, 4W.

    forward: float (B, 3, H, W) -> logits (B, num_classes)."""

    def __init__(self, depth: int = 20, width: int = 16, num_classes: int = NUM_CLASSES):
        super().__init__()
        blocks_per_stage = (depth - 2) // 6
        self.conv = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        layers, in_channels = [], width
        for stage, channels in enumerate((width, 2 * width, 4 * width)):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(in_channels, channels, stride))
                in_channels = channels
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        x = self.blocks(x)
        x = x.mean((2, 3))  # deterministic backward on CUDA, unlike adaptive pooling
        return self.fc(x)


def check_depth(depth: int) -> None:
    """LthError unless depth = 6n + 2 with n >= 1."""
    if depth < 8 or (depth - 2) % 6:
        raise LthError(f"ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 56, ...), got {depth}")


# Late rewind point 2000 iterations: Frankle et al. 2020 (docs/protocol.md). The last layer is pruned.
register("resnet", pattern=r"resnet(\d+)", build=CifarResNet, default_width=16, rewind_iter=2000,
         check_depth=check_depth, examples=("resnet20", "resnet32", "resnet56"), form="resnet<6n+2>")
