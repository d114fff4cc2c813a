"""The `cifar100` data set (100 classes, 32x32 images) as uint8 tensors: torchvision's
download into the cache folder (default) or an ImageFolder copy (`data_dir`: train/<class>/*,
test/<class>/*, 100 class folders), read and cached by lthfast.data.sources, normalized with
CIFAR-100's own per-channel statistics (tests/test_custom.py::test_the_cifar100_entry).
"""
from __future__ import annotations

from pathlib import Path

from lthfast.data import sources
from lthfast.data.dataset import Dataset
from lthfast.data.registry import register

SIZES = (50_000, 10_000)  # (training, test) images
# CIFAR-100's training set, per channel over every pixel, in [0, 1] units (as CIFAR-10's in dataset.MEAN).
MEAN = (0.5071, 0.4865, 0.4409)
STD = (0.2673, 0.2564, 0.2762)


def load(data_dir: str | None, cache_dir: Path | None) -> Dataset:
    """The ImageFolder copy at data_dir (100 class folders) if given, else torchvision's
    download (lthfast.data.sources.cifar_loader)."""
    return Dataset(**_load(data_dir, cache_dir))


_load = sources.cifar_loader("cifar100", "CIFAR-100", 100, "CIFAR100", "cifar-100-python")
register("cifar100", load=load, num_classes=100, sizes=SIZES, mean=MEAN, std=STD, description="CIFAR-100",
         reads_data_dir=True)
