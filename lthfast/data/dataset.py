"""A data set in memory (uint8 images on one device) and what training and evaluation take
from it: normalized batches, seeded augmentation, the epoch plan, class-balanced subsets,
fixed evaluation samples.

Data order and augmentation of epoch e are a pure function of (data seed, e): resuming at
any iteration needs no saved RNG state, only the iteration
(tests/test_data.py::test_epoch_plan_is_a_function_of_seed_and_epoch).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from lthfast.foundations.errors import LthError

# The default normalization: CIFAR-10's per-channel statistics (in [0, 1] units).
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
NUM_CLASSES = 10
CROP_PADDING = 4


def default_cache_dir() -> Path:
    return Path(os.environ.get("LTHFAST_CACHE", Path.home() / ".cache" / "lthfast"))


@dataclass
class Dataset:
    """Images as uint8 (N, 3, H, W) and labels as int64 (N,) in [0, num_classes), on one
    device, with the per-channel statistics (mean, std) its batches are normalized with."""
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int = NUM_CLASSES
    mean: tuple = MEAN
    std: tuple = STD

    @property
    def num_train(self) -> int:
        return self.train_x.shape[0]

    def to(self, device) -> "Dataset":
        return dataclasses.replace(self, **{name: getattr(self, name).to(device)
                                            for name in ("train_x", "train_y", "test_x", "test_y")})


def balanced_subset(data: Dataset, size: int, seed: int) -> Dataset:
    """A seeded subset of the training set with (as nearly as possible) equal class counts.

    LthError if a class has fewer images than its share."""
    classes = data.num_classes
    counts = torch.bincount(data.train_y, minlength=classes)
    per_class = [size // classes + (1 if c < size % classes else 0) for c in range(classes)]
    for c in range(classes):
        if per_class[c] > counts[c]:
            raise LthError(f"--train-subset {size} needs {per_class[c]} images of class {c}, "
                           f"the training set has {int(counts[c])}")
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(classes):
        idx = torch.nonzero(data.train_y.cpu() == c).flatten()
        picks.append(idx[torch.randperm(len(idx), generator=g)[:per_class[c]]])
    idx = torch.sort(torch.cat(picks)).values.to(data.train_x.device)
    return dataclasses.replace(data, train_x=data.train_x[idx], train_y=data.train_y[idx])


# ----------------------------------------------------------------------------- batches

def normalize(x_uint8: torch.Tensor, channels_last: bool = False, mean: tuple = MEAN, std: tuple = STD) -> torch.Tensor:
    """uint8 images (B, 3, H, W) -> float32 (x / 255 - mean) / std per channel, optionally in
    channels_last layout."""
    mean_ = torch.tensor(mean, device=x_uint8.device).view(1, 3, 1, 1) * 255
    inv_std = 1.0 / (torch.tensor(std, device=x_uint8.device).view(1, 3, 1, 1) * 255)
    x = (x_uint8.float() - mean_) * inv_std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def augment(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Random crop (4-pixel zero padding) and horizontal flip of a batch, as one gather.

    x: (B, C, H, W); offsets: (B, 2) crop corner in [0, 8]; flips: (B,) bool. Returns (B, C, H, W).
    """
    b, c, h, w = x.shape
    p = CROP_PADDING
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = offsets[:, 0:1] + ar_h                                         # (B, H)
    cols = offsets[:, 1:2] + torch.where(flips[:, None], w - 1 - ar_w, ar_w)  # (B, W)
    batch_idx = torch.arange(b, device=x.device)[:, None, None, None]
    chan_idx = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch_idx, chan_idx, rows[:, None, :, None], cols[:, None, None, :]]


class EpochPlan:
    """Order and augmentation of one epoch, derived from (data seed, epoch) alone."""

    def __init__(self, num_examples: int, batch_size: int, data_seed: int, epoch: int, device,
                 augment_data: bool = True):
        g = torch.Generator().manual_seed(data_seed * 1_000_003 + epoch)
        self.order = torch.randperm(num_examples, generator=g).to(device)
        self.offsets = torch.randint(0, 2 * CROP_PADDING + 1, (num_examples, 2), generator=g).to(device)
        self.flips = (torch.rand(num_examples, generator=g) < 0.5).to(device)
        self.batch_size = batch_size
        self.augment_data = augment_data
        # The last batch may be partial: every image is seen once an epoch (as open_lth).
        self.num_batches = (num_examples + batch_size - 1) // batch_size

    def batch(self, data: Dataset, index: int, channels_last: bool = False):
        """Batch `index`: (x float32 (B, 3, H, W) normalized with data's statistics, y int64 (B,))."""
        sl = slice(index * self.batch_size, (index + 1) * self.batch_size)
        idx = self.order[sl]
        x = data.train_x[idx]
        if self.augment_data:
            x = augment(x, self.offsets[sl], self.flips[sl])
        return normalize(x, channels_last, data.mean, data.std), data.train_y[idx]


def fixed_sample(x: torch.Tensor, y: torch.Tensor, size: int | None):
    """The same seeded random sample every time (ImageFolder data is stored class by class,
    so a prefix would hold only a few classes)."""
    if size is None or size >= x.shape[0]:
        return x, y
    index = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[:size]
    index = torch.sort(index).values.to(x.device)
    return x[index], y[index]


def iterate_eval(x: torch.Tensor, y: torch.Tensor, batch_size: int, channels_last: bool = False,
                 mean: tuple = MEAN, std: tuple = STD):
    """(normalized float32 (B, 3, H, W), labels (B,)) batches of (x uint8, y) in order."""
    for start in range(0, x.shape[0], batch_size):
        yield normalize(x[start:start + batch_size], channels_last, mean, std), y[start:start + batch_size]
