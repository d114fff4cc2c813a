"""CIFAR-10 models of the study: ResNet-20 family and VGG family, as in open_lth.

Models are plain nn.Modules built from a name (`resnet20`, `vgg16`, ...) so that
a later stacked (K networks at once) variant can be built from the same plan.
"""
from __future__ import annotations

import functools
import re

import torch
from torch import nn
import torch.nn.functional as F

from lthfast import hardware
from lthfast.errors import LthError

NUM_CLASSES = 10


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
    """open_lth's cifar_resnet_D_W: three stages of (D-2)/6 blocks, widths W, 2W, 4W."""

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


VGG_PLANS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512],
}


class CifarVGG(nn.Module):
    """open_lth's cifar_vgg_D: conv-BN-ReLU blocks, 2x2 average pool, one linear layer.

    Convolutions have no bias: BatchNorm's shift makes it redundant.
    """

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


DEFAULT_WIDTHS = {"resnet": 16, "vgg": 64}
KNOWN_MODELS = ["resnet20", "resnet32", "resnet56", "vgg11", "vgg13", "vgg16", "vgg19"]


def parse_model_name(name: str, width: int | None = None) -> tuple[str, int]:
    """(family, depth) of a model name such as resnet20 or vgg16, or a one-line error."""
    match = re.fullmatch(r"(resnet|vgg)(\d+)", str(name).lower())
    if not match:
        raise LthError(f"unknown model {name!r}; known models: {', '.join(KNOWN_MODELS)} "
                       "(any resnet<6n+2> or vgg<11|13|16|19>)")
    family, depth = match.group(1), int(match.group(2))
    if family == "resnet" and (depth < 8 or (depth - 2) % 6):
        raise LthError(f"ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 56, ...), got {depth}")
    if family == "vgg" and depth not in VGG_PLANS:
        raise LthError(f"VGG depth must be one of {sorted(VGG_PLANS)}, got {depth}")
    if width is not None and (isinstance(width, bool) or not isinstance(width, int) or width < 1):
        raise LthError(f"--width must be a positive integer, got {width!r}")
    return family, depth


def initialize(model: nn.Module) -> None:
    """open_lth's default init: kaiming-normal conv/linear weights, BN scale uniform in [0, 1)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight)
            nn.init.zeros_(module.bias)


def create_model(name: str, width: int | None = None, seed: int | None = None) -> nn.Module:
    """Build and initialize a model by name; `seed` makes the initialization reproducible."""
    family, depth = parse_model_name(name, width)
    model_class = CifarResNet if family == "resnet" else CifarVGG
    model = model_class(depth, width or DEFAULT_WIDTHS[family])
    if seed is None:
        initialize(model)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            initialize(model)
    return model


def prunable_names(model: nn.Module, prune_last_layer: bool | None = None) -> list[str]:
    """Names of the prunable weights: every conv and linear weight (shortcuts included).

    VGG keeps its final linear layer dense by default (as open_lth); ResNet prunes it.
    """
    if prune_last_layer is None:
        prune_last_layer = not isinstance(model, CifarVGG)
    names = [f"{name}.weight" for name, module in model.named_modules()
             if isinstance(module, (nn.Conv2d, nn.Linear))]
    if not prune_last_layer:
        names = [n for n in names if n != "fc.weight"]
    return names


@functools.lru_cache(maxsize=None)
def _counts(name: str, width: int | None) -> tuple[int, int]:
    family, depth = parse_model_name(name, width)
    with torch.device("meta"):  # shapes only: nothing is allocated
        model = (CifarResNet if family == "resnet" else CifarVGG)(depth, width or DEFAULT_WIDTHS[family])
    params = dict(model.named_parameters())
    return sum(p.numel() for p in params.values()), sum(params[n].numel() for n in prunable_names(model))


def parameter_count(name: str, width: int | None = None) -> int:
    """Parameters of the model (counted without allocating them)."""
    return _counts(name, width)[0]


def prunable_count(name: str, width: int | None = None) -> int:
    """Prunable weights of the model (prunable_names), counted without allocating them."""
    return _counts(name, width)[1]


# Training holds about 4 bytes x (weights, gradients, momentum, a checkpoint copy) per parameter.
BYTES_PER_PARAMETER = 16


def check_size(name: str, width: int | None = None) -> None:
    """A one-line LthError if the model's training state alone cannot fit in this machine's
    memory (physical RAM, plus the largest GPU's), before anything is allocated."""
    needed = parameter_count(name, width) * BYTES_PER_PARAMETER
    available = hardware.total_memory()
    if needed > available:
        raise LthError(f"{name} at width {width} has {needed // BYTES_PER_PARAMETER:,} parameters: its training "
                       f"state alone needs {needed / 2**30:,.0f} GiB, more than this machine's "
                       f"{available / 2**30:,.0f} GiB; use a smaller --width")
