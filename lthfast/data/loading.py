"""Data sets by name, as device-resident uint8 tensors: `load_dataset` looks the name up in
lthfast.data.registry (cifar10, cifar100, imagefolder, synthetic, and any data set
registered), then takes the class-balanced subset the config asks for.

Invariant: a data set's tensors are a function of its source and (train_subset, subset_seed)
alone (tests/test_data.py::test_balanced_subset_is_seeded_and_balanced, test_synthetic_is_deterministic).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import lthfast.data.registry as registry
from lthfast.data.dataset import Dataset, balanced_subset
from lthfast.foundations.errors import LthError


def load_dataset(name: str, data_dir: str | None = None, train_subset: int | None = None,
                 subset_seed: int = 0, device="cpu", cache_dir: Path | None = None) -> Dataset:
    """The training and test sets of data set `name` on `device`, as the config asks: images
    uint8 (N, 3, H, W), labels int64 (N,), with the entry's class count and statistics (the
    loader's statistics where the entry leaves them to it: imagefolder's, computed from its
    training images).

    Errors (LthError, one line): an unknown name, a source the loader cannot read, labels
    outside [0, num_classes), a train_subset below one image per class or above the set."""
    entry = registry.get(name, data_dir)
    data = entry.load(data_dir, cache_dir)
    if entry.mean is not None:
        data = dataclasses.replace(data, mean=entry.mean, std=entry.std)
    data = dataclasses.replace(data, num_classes=entry.num_classes)
    for labels in (data.train_y, data.test_y):
        if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < entry.num_classes:
            raise LthError(f"data set {name!r} has labels outside 0..{entry.num_classes - 1}")
    if train_subset is not None:
        if train_subset < entry.num_classes:
            raise LthError(f"--train-subset must be at least {entry.num_classes} (one image per class), "
                           f"got {train_subset}")
        if train_subset > data.num_train:
            raise LthError(f"--train-subset {train_subset} is larger than the training set ({data.num_train})")
        data = balanced_subset(data, train_subset, subset_seed)
    return data.to(device)
