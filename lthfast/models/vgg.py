"""The CIFAR VGG family (vgg11, vgg13, vgg16, vgg19), as open_lth's cifar_vgg_D.

Invariant: the module tree (names, order, shapes) fixes the weights create_model gives for a
seed, so it is part of every stored run's identity: tests/test_models.py checks the counts,
the init and the prunable layers (the final linear layer stays dense).
"""
from __future__ import annotations

from torch import nn

from lthfast.foundations.errors import LthError
from lthfast.models.registry import NUM_CLASSES, register

VGG_PLANS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512],
}


class CifarVGG(nn.Module):
    """open_lth's cifar_vgg_D: conv-BN-ReLU blocks, 2x2 max pools, global average, one linear layer.

    Convolutions have no bias: BatchNorm's shift makes it redundant.
    forward: float (B, 3, H, W), H and W >= 16 -> logits (B, num_classes)."""

    def __init__(self, depth: int = 16, width: int = 64, num_classes: int = NUM_CLASSES):
        super().__init__()
        layers, in_channels = [], 3
        for spec in VGG_PLANS[depth]:
            if spec == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            channels = spec * width // 64
            layers += [nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False),
                       nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
            in_channels = channels
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        x = self.features(x)
        x = x.mean((2, 3))  # deterministic backward on CUDA, unlike adaptive pooling
        return self.fc(x)


def check_depth(depth: int) -> None:
    """LthError unless the depth has a plan (11, 13, 16 or 19)."""
    if depth not in VGG_PLANS:
        raise LthError(f"VGG depth must be one of {sorted(VGG_PLANS)}, got {depth}")


# Late rewind point 1000 iterations: Frankle et al. 2020 (docs/protocol.md). The last layer stays dense (open_lth).
register("vgg", pattern=r"vgg(\d+)", build=CifarVGG, default_width=64, rewind_iter=1000, check_depth=check_depth,
         examples=("vgg11", "vgg13", "vgg16", "vgg19"), form="vgg<11|13|16|19>", prune_last_layer=False)
