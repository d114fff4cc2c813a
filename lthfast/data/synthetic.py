"""The `synthetic` data set: a small learnable 10-class set generated from a seed, for tests.

Invariant: the same seed gives the same images (tests/test_data.py::test_synthetic_is_deterministic).
"""
from __future__ import annotations

import torch

from lthfast.data.dataset import Dataset
from lthfast.data.registry import register

SIZES = (1000, 500)  # (training, test) images


def synthetic(num_train: int = SIZES[0], num_test: int = SIZES[1], seed: int = 0) -> Dataset:
    """One smooth random pattern per class plus noise: uint8 (N, 3, 32, 32) images, labels
    int64 (N,) cycling through the 10 classes in a seeded order."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.rand(10, 3, 8, 8, generator=g)
    patterns = torch.nn.functional.interpolate(patterns, size=32, mode="bilinear", align_corners=False)

    def make(n):
        y = torch.arange(n) % 10
        y = y[torch.randperm(n, generator=g)]
        x = 0.6 * patterns[y] + 0.4 * torch.rand(n, 3, 32, 32, generator=g)
        return (x * 255).round().clamp(0, 255).to(torch.uint8), y
    train_x, train_y = make(num_train)
    test_x, test_y = make(num_test)
    return Dataset(train_x, train_y, test_x, test_y)


register("synthetic", load=lambda data_dir, cache_dir: synthetic(), num_classes=10, sizes=SIZES,
         description="a small generated set, for tests")
