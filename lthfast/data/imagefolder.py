"""The `imagefolder` data set: any ImageFolder folder (--data-dir with train/<class>/* and
test/<class>/*, images of one size, any number of classes from 2), read and cached by
lthfast.data.sources.

Its class count and sizes are read from the folder (registry.Description, through the
config's bound name); its normalization statistics are computed once from the training
images (every pixel, lthfast.data.sources.channel_statistics) and cached with the decoded
tensors. The run hash holds the folder's identity (every image's relative path and size,
not its place or times), so a copy of the same folder elsewhere finds the same runs and
another folder does not (tests/test_custom.py::test_a_100_class_image_folder_trains_one_level).
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch

from lthfast.data import sources
from lthfast.data.dataset import Dataset
from lthfast.data.registry import Description, register
from lthfast.foundations.errors import LthError

WHAT = "an image folder"


def _listing(data_dir: str | Path) -> dict:
    return sources.list_folder(data_dir, WHAT)


@functools.lru_cache(maxsize=16)
def _describe(folder: str, stamp: int) -> Description:
    listing = _listing(folder)
    sizes = tuple(sum(len(fs) for fs in listing[split]) for split in sources.SPLITS)
    identity = sources.fingerprint(sources.all_files(listing), Path(folder), times=False)
    return Description(len(listing["train"]), sizes, identity)


def describe(data_dir: str) -> Description:
    """The folder's class count, (training, test) images and identity; LthError as
    lthfast.data.sources.list_folder's. Kept per folder while the modification times of its
    split and class folders stay the same (every config reads it: the files are not listed
    each time)."""
    folder = Path(data_dir).expanduser().resolve()
    splits = [folder / s for s in sources.SPLITS if (folder / s).is_dir()]
    stamp = [d.stat().st_mtime_ns for split in splits for d in (split, *sorted(split.iterdir())) if d.is_dir()]
    return _describe(str(folder), hash(tuple(stamp)))


def load(data_dir: str | None, cache_dir: Path | None) -> Dataset:
    """The folder's images (uint8, the first training image's size), labels in the sorted
    order of the class folders, and the training images' mean and std; LthError for no
    folder, an unreadable image, images of different sizes."""
    if data_dir is None:
        raise LthError("--data imagefolder reads its images from --data-dir; none was given")
    listing = _listing(data_dir)
    key = sources.fingerprint(sources.all_files(listing), Path(data_dir).expanduser())

    def build():
        tensors = sources.read_folder(listing, f"the images of {data_dir} (as its first)")
        mean, std = sources.channel_statistics(tensors["train_x"])
        return {**tensors, "mean": torch.tensor(mean, dtype=torch.float64),
                "std": torch.tensor(std, dtype=torch.float64)}
    tensors = sources.cached(sources.cache_path(cache_dir, f"imagefolder-{key}.pt"), build)
    mean, std = (tuple(tensors.pop(k).tolist()) for k in ("mean", "std"))
    return Dataset(**tensors, num_classes=len(listing["train"]), mean=mean, std=std)


register("imagefolder", load=load, mean=None, std=None, describe=describe, reads_data_dir=True,
         description="any folder of train/<class>/ and test/<class>/ images given by --data-dir; its class count "
                     "from the folder, its mean and std computed from its training images")
