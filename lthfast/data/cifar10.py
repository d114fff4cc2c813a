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

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
SIZES = (50_000, 10_000)  # (training, test) images


def load(data_dir: str | None, cache_dir: Path | None) -> Dataset:
    """The ImageFolder copy at data_dir (train/<class>/*.png|jpg, test/<class>/..., 10 classes)
    if given, else torchvision's download (lthfast.data.sources.cifar_loader)."""
    return Dataset(**_load(data_dir, cache_dir))


_load = sources.cifar_loader("cifar10", "CIFAR-10", 10, "CIFAR10", "cifar-10-batches-py")
register("cifar10", load=load, num_classes=10, sizes=SIZES, mean=MEAN, std=STD, description="CIFAR-10",
         reads_data_dir=True)
