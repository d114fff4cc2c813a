"""The `cifar10` data set as uint8 tensors: torchvision's download (default) or an
ImageFolder copy (`data_dir`), read and cached by lthfast.data.sources.

Invariant: the cache files keep their names (`cifar10-folder-<fingerprint>.pt`,
`cifar10-torchvision-<fingerprint>.pt`) and contents, so caches written before stay valid
(tests/test_data.py::test_image_folder_is_decoded_labelled_and_cached, test_folder_errors).
"""
from __future__ import annotations

from pathlib import Path

from lthfast.data import sources
from lthfast.data.dataset import MEAN, STD, Dataset
from lthfast.data.registry import register
from lthfast.data.sources import IMAGE_EXTENSIONS  # noqa: F401  (lthfast.data.loading re-exports it)

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
SIZES = (50_000, 10_000)  # (training, test) images


def load_image_folder(data_dir: str | Path, cache_dir: Path | None = None) -> Dataset:
    """CIFAR-10 from train/<class>/*.png|jpg and test/<class>/... (10 classes, 32x32 images);
    LthError for a missing folder, a wrong class count, an unreadable or wrongly sized image."""
    listing = sources.list_folder(data_dir, "CIFAR-10", classes=10)
    key = sources.fingerprint(sources.all_files(listing), Path(data_dir).expanduser())
    return Dataset(**sources.cached(sources.cache_path(cache_dir, f"cifar10-folder-{key}.pt"),
                                    lambda: sources.read_folder(listing, "CIFAR-10 images", (32, 32))))


def load_torchvision(cache_dir: Path | None = None) -> Dataset:
    """CIFAR-10 from torchvision's download into the cache folder; LthError if it fails."""
    return Dataset(**sources.torchvision_set("CIFAR10", "cifar-10-batches-py", "CIFAR-10", "cifar10-torchvision",
                                             cache_dir))


def load(data_dir: str | None, cache_dir: Path | None) -> Dataset:
    """The ImageFolder copy at data_dir if given, else torchvision's download."""
    return load_image_folder(data_dir, cache_dir) if data_dir else load_torchvision(cache_dir)


register("cifar10", load=load, num_classes=10, sizes=SIZES, mean=MEAN, std=STD, description="CIFAR-10",
         reads_data_dir=True)
