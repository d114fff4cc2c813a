"""A small CNN of your own, trained by lthfast through its factory name (README, "Your own
models and data sets"):

    python -m lthfast imp --model examples/custom_cnn.py:build --data synthetic --levels 2 --epochs 1

`build(num_classes)` returns the network: float32 images (B, 3, H, W) -> logits
(B, num_classes). lthfast calls it under torch.manual_seed(seed), so the initialization
below is reproducible. Every conv and linear weight would be pruned; PRUNABLE names the
convolutions only, so the classifier stays dense (as VGG's does). REWIND_ITER is IMP's late
rewind point (iterations; --rewind-iter overrides it).
"""
import torch
from torch import nn

PRUNABLE = ["features.0.weight", "features.4.weight", "features.8.weight"]
REWIND_ITER = 1


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU blocks of 16, 32 and 64 channels (2x2 max pools between), the global
    average (a mean: deterministic on CUDA, unlike adaptive pooling), one linear layer."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


def build(num_classes: int) -> nn.Module:
    model = SmallCNN(num_classes)
    for m in model.modules():  # your own initialization: lthfast keeps it
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return model
