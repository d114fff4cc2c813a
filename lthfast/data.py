"""CIFAR-10 as device-resident uint8 tensors, with batched, seeded augmentation.

Sources: torchvision's download (default), an ImageFolder copy (`data_dir`), or a
small synthetic set for tests. Decoded images are cached as one uint8 tensor file
whose name carries a fingerprint of the source, so a changed source is noticed.

Data order and augmentation of epoch e are a pure function of (data seed, e):
resuming at any iteration needs no saved RNG state, only the iteration.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lthfast.errors import LthError
from lthfast.storage import atomic_torch_save, load_tensors

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
CROP_PADDING = 4
# (training, test) images of each source: what the report counts when a legacy record lacks them
SIZES = {"cifar10": (50_000, 10_000), "synthetic": (1000, 500)}


def default_cache_dir() -> Path:
    return Path(os.environ.get("LTHFAST_CACHE", Path.home() / ".cache" / "lthfast"))


@dataclass
class Dataset:
    """Images as uint8 (N, 3, 32, 32) and labels as int64 (N,), on one device."""
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    @property
    def num_train(self) -> int:
        return self.train_x.shape[0]

    def to(self, device) -> "Dataset":
        return Dataset(*(t.to(device) for t in
                         (self.train_x, self.train_y, self.test_x, self.test_y)))


# ----------------------------------------------------------------------------- sources

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


def synthetic(num_train: int = SIZES["synthetic"][0], num_test: int = SIZES["synthetic"][1], seed: int = 0) -> Dataset:
    """A small learnable 10-class set: one smooth random pattern per class plus noise."""
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


def balanced_subset(data: Dataset, size: int, seed: int) -> Dataset:
    """A seeded subset of the training set with (as nearly as possible) equal class counts."""
    counts = torch.bincount(data.train_y, minlength=10)
    per_class = [size // 10 + (1 if c < size % 10 else 0) for c in range(10)]
    for c in range(10):
        if per_class[c] > counts[c]:
            raise LthError(f"--train-subset {size} needs {per_class[c]} images of class {c}, "
                           f"the training set has {int(counts[c])}")
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(10):
        idx = torch.nonzero(data.train_y.cpu() == c).flatten()
        picks.append(idx[torch.randperm(len(idx), generator=g)[:per_class[c]]])
    idx = torch.sort(torch.cat(picks)).values.to(data.train_x.device)
    return Dataset(data.train_x[idx], data.train_y[idx], data.test_x, data.test_y)


def load_dataset(name: str, data_dir: str | None = None, train_subset: int | None = None,
                 subset_seed: int = 0, device="cpu", cache_dir: Path | None = None) -> Dataset:
    """The training and test sets on `device`, as the config asks."""
    if name == "synthetic":
        data = synthetic()
    elif name == "cifar10":
        data = load_image_folder(data_dir, cache_dir) if data_dir else load_torchvision(cache_dir)
    else:
        raise LthError(f"unknown data set {name!r}; known: cifar10, synthetic")
    if train_subset is not None:
        if train_subset < 10:
            raise LthError(f"--train-subset must be at least 10 (one image per class), got {train_subset}")
        if train_subset > data.num_train:
            raise LthError(f"--train-subset {train_subset} is larger than the training set ({data.num_train})")
        data = balanced_subset(data, train_subset, subset_seed)
    return data.to(device)


# ----------------------------------------------------------------------------- batches

def normalize(x_uint8: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 images -> normalized float32, optionally in channels_last layout."""
    mean = torch.tensor(MEAN, device=x_uint8.device).view(1, 3, 1, 1) * 255
    inv_std = 1.0 / (torch.tensor(STD, device=x_uint8.device).view(1, 3, 1, 1) * 255)
    x = (x_uint8.float() - mean) * inv_std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def augment(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Random crop (4-pixel zero padding) and horizontal flip of a batch, as one gather.

    offsets: (B, 2) crop corner in [0, 8]; flips: (B,) bool.
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
        sl = slice(index * self.batch_size, (index + 1) * self.batch_size)
        idx = self.order[sl]
        x = data.train_x[idx]
        if self.augment_data:
            x = augment(x, self.offsets[sl], self.flips[sl])
        return normalize(x, channels_last), data.train_y[idx]


def fixed_sample(x: torch.Tensor, y: torch.Tensor, size: int | None):
    """The same seeded random sample every time (ImageFolder data is stored class by class,
    so a prefix would hold only a few classes)."""
    if size is None or size >= x.shape[0]:
        return x, y
    index = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[:size]
    index = torch.sort(index).values.to(x.device)
    return x[index], y[index]


def iterate_eval(x: torch.Tensor, y: torch.Tensor, batch_size: int, channels_last: bool = False):
    for start in range(0, x.shape[0], batch_size):
        yield normalize(x[start:start + batch_size], channels_last), y[start:start + batch_size]
