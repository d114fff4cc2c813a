"""The `cifar10` data set as uint8 tensors: torchvision's download (default) or an
ImageFolder copy (`data_dir`).

Decoded images are cached as one uint8 tensor file whose name carries a fingerprint of the
source, so a changed source is noticed and a corrupt cache is rebuilt
(tests/test_data.py::test_image_folder_is_decoded_labelled_and_cached,
test_corrupt_cache_file_is_rebuilt).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from lthfast.data.dataset import MEAN, STD, Dataset, default_cache_dir
from lthfast.data.registry import register
from lthfast.foundations.errors import LthError
from lthfast.foundations.files import atomic_torch_save, load_tensors

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
SIZES = (50_000, 10_000)  # (training, test) images


def _fingerprint(files: list[Path], root: Path) -> str:
    """Hash of every file's relative path, size and modification time."""
    digest = hashlib.sha256()
    for f in files:
        st = f.stat()
        digest.update(f"{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _list_image_folder(split_dir: Path) -> tuple[list[str], list[list[Path]]]:
    if not split_dir.is_dir():
        raise LthError(f"data folder {split_dir.parent} has no '{split_dir.name}/' folder "
                       "(expected ImageFolder layout: train/<class>/*.jpg and test/<class>/*.jpg)")
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    if len(classes) != 10:
        raise LthError(f"{split_dir} holds {len(classes)} class folders; CIFAR-10 needs 10")
    files = [sorted(p for p in (split_dir / c).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
             for c in classes]
    for c, fs in zip(classes, files):
        if not fs:
            raise LthError(f"class folder {split_dir / c} holds no images")
    return classes, files


def _decode_images(paths: list[Path]) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    out = np.empty((len(paths), 32, 32, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as img:  # reads the header only: the size is checked before decoding
                if img.size != (32, 32):
                    raise LthError(f"image {path} is {img.size[0]}x{img.size[1]}; CIFAR-10 images are 32x32")
                arr = np.asarray(img.convert("RGB"))
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError, SyntaxError) as exc:
            raise LthError(f"cannot read image {path}: {exc}") from None
        out[i] = arr
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _read_image_folder(data_dir: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    train_classes = None
    for split in ("train", "test"):
        classes, files = _list_image_folder(data_dir / split)
        if train_classes is not None and classes != train_classes:
            raise LthError(f"class folders differ between {data_dir}/train and {data_dir}/test")
        train_classes = classes
        labels = torch.cat([torch.full((len(fs),), i, dtype=torch.int64) for i, fs in enumerate(files)])
        tensors[f"{split}_x"] = _decode_images([p for fs in files for p in fs])
        tensors[f"{split}_y"] = labels
    return tensors


def _cached(cache_file: Path, build) -> dict[str, torch.Tensor]:
    if cache_file.exists():
        try:
            return load_tensors(cache_file)
        except Exception:  # a corrupt cache is rebuilt, never trusted
            cache_file.unlink()
    tensors = build()
    atomic_torch_save(tensors, cache_file)
    return tensors


def load_image_folder(data_dir: str | Path, cache_dir: Path | None = None) -> Dataset:
    """CIFAR-10 from train/<class>/*.png|jpg and test/<class>/... (10 classes, 32x32 images);
    LthError for a missing folder, a wrong class count, an unreadable or wrongly sized image."""
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise LthError(f"data folder {data_dir} does not exist")
    files = []
    for split in ("train", "test"):
        _, per_class = _list_image_folder(data_dir / split)
        files += [p for fs in per_class for p in fs]
    key = _fingerprint(files, data_dir)
    cache_file = (cache_dir or default_cache_dir()) / "data" / f"cifar10-folder-{key}.pt"
    return Dataset(**_cached(cache_file, lambda: _read_image_folder(data_dir)))


def load_torchvision(cache_dir: Path | None = None) -> Dataset:
    """CIFAR-10 from torchvision's download into the cache folder; LthError if it fails."""
    import torchvision

    download_dir = (cache_dir or default_cache_dir()) / "torchvision"
    try:
        splits = {split: torchvision.datasets.CIFAR10(download_dir, train=(split == "train"), download=True)
                  for split in ("train", "test")}
    except Exception as exc:  # no network, a broken archive, ...
        raise LthError(f"could not download CIFAR-10 into {download_dir} ({type(exc).__name__}: {exc}); "
                       "pass --data-dir with a copy in ImageFolder layout") from None
    batch_dir = download_dir / "cifar-10-batches-py"
    key = _fingerprint(sorted(p for p in batch_dir.iterdir() if p.is_file()), batch_dir)
    cache_file = (cache_dir or default_cache_dir()) / "data" / f"cifar10-torchvision-{key}.pt"

    def build():
        out = {}
        for split, ds in splits.items():
            out[f"{split}_x"] = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
            out[f"{split}_y"] = torch.tensor(ds.targets, dtype=torch.int64)
        return out
    return Dataset(**_cached(cache_file, build))


def load(data_dir: str | None, cache_dir: Path | None) -> Dataset:
    """The ImageFolder copy at data_dir if given, else torchvision's download."""
    return load_image_folder(data_dir, cache_dir) if data_dir else load_torchvision(cache_dir)


register("cifar10", load=load, num_classes=10, sizes=SIZES, mean=MEAN, std=STD, description="CIFAR-10",
         reads_data_dir=True)
