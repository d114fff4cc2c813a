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


def load_image_folder(data_dir: str | Path, cache_dir: Path | None = None) -> Dataset:
    """CIFAR-100 from an ImageFolder copy (100 classes, 32x32 images); LthError for a missing
    folder, a wrong class count, an unreadable or wrongly sized image."""
    listing = sources.list_folder(data_dir, "CIFAR-100", classes=100)
    key = sources.fingerprint(sources.all_files(listing), Path(data_dir).expanduser())
    return Dataset(**sources.cached(sources.cache_path(cache_dir, f"cifar100-folder-{key}.pt"),
                                    lambda: sources.read_folder(listing, "CIFAR-100 images", (32, 32))))


def load_torchvision(cache_dir: Path | None = None) -> Dataset:
    """CIFAR-100 from torchvision's download into the cache folder; LthError if it fails."""
    return Dataset(**sources.torchvision_set("CIFAR100", "cifar-100-python", "CIFAR-100", "cifar100-torchvision",
                                             cache_dir))


def load(data_dir: str | None, cache_dir: Path | None) -> Dataset:
    """The ImageFolder copy at data_dir if given, else torchvision's download."""
    return load_image_folder(data_dir, cache_dir) if data_dir else load_torchvision(cache_dir)


register("cifar100", load=load, num_classes=100, sizes=SIZES, mean=MEAN, std=STD, description="CIFAR-100",
         reads_data_dir=True)
