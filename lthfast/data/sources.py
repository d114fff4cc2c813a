"""Reading a data set's source once: an ImageFolder copy (train/<class>/*, test/<class>/*) or
torchvision's download, decoded into uint8 tensors and kept in one cache file whose name
carries a fingerprint of the source, so a changed source is noticed and a corrupt cache is
rebuilt (tests/test_data.py::test_image_folder_is_decoded_labelled_and_cached,
test_corrupt_cache_file_is_rebuilt). cifar10, cifar100 and imagefolder read through here.

Invariants: classes are labelled in the sorted order of their folder names, images in the
sorted order of their file names; every image of a set has one size (the first's, or the
size the data set requires); per-channel statistics are exact integer sums over every
training pixel, so computing them again gives the same floats (tests/test_custom.py).
"""
from __future__ import annotations

import contextlib
import hashlib
import socket
import time
import urllib.error
from pathlib import Path

import numpy as np
import torch

from lthfast.data.dataset import default_cache_dir
from lthfast.foundations.errors import LthError
from lthfast.foundations.files import atomic_torch_save, load_tensors

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
DOWNLOAD_TIMEOUT = 60.0  # seconds a download may go without an answer (connecting, or between two reads)
SPLITS = ("train", "test")
LAYOUT = "expected ImageFolder layout: train/<class>/*.jpg and test/<class>/*.jpg"


def fingerprint(files: list[Path], root: Path, times: bool = True) -> str:
    """16 hex digits of a hash of every file's relative path and size (and modification time
    unless times=False: then a copy of the same files elsewhere has the same fingerprint)."""
    digest = hashlib.sha256()
    for f in files:
        st = f.stat()
        stamp = f"\0{st.st_mtime_ns}" if times else ""
        digest.update(f"{f.relative_to(root)}\0{st.st_size}{stamp}\n".encode())
    return digest.hexdigest()[:16]


def list_split(split_dir: Path, what: str, classes: int | None = None) -> tuple[list[str], list[list[Path]]]:
    """(class names, image files per class) of one split folder, both sorted.

    classes: the class count the data set needs (None: any count from 2). Errors (LthError):
    no such folder, another class count, a class folder without images."""
    if not split_dir.is_dir():
        raise LthError(f"data folder {split_dir.parent} has no '{split_dir.name}/' folder ({LAYOUT})")
    names = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    if classes is not None and len(names) != classes:
        raise LthError(f"{split_dir} holds {len(names)} class folders; {what} needs {classes}")
    if classes is None and len(names) < 2:
        raise LthError(f"{split_dir} holds {len(names)} class folders; a data set needs at least 2 ({LAYOUT})")
    files = [sorted(p for p in (split_dir / c).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS) for c in names]
    for c, fs in zip(names, files):
        if not fs:
            raise LthError(f"class folder {split_dir / c} holds no images")
    return names, files


def list_folder(data_dir: str | Path, what: str, classes: int | None = None) -> dict[str, list[list[Path]]]:
    """{split: image files per class} of an ImageFolder copy; LthError for a missing folder or
    split, a wrong class count, class folders that differ between the splits."""
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise LthError(f"data folder {data_dir} does not exist")
    out, train_names = {}, None
    for split in SPLITS:
        names, files = list_split(data_dir / split, what, classes)
        if train_names is not None and names != train_names:
            raise LthError(f"class folders differ between {data_dir}/train and {data_dir}/test")
        train_names, out[split] = names, files
    return out


def all_files(listing: dict[str, list[list[Path]]]) -> list[Path]:
    """Every image file of a listing (list_folder's), training files first, in label order."""
    return [p for split in SPLITS for fs in listing[split] for p in fs]


def decode_images(paths: list[Path], what: str, size: tuple[int, int] | None = None) -> torch.Tensor:
    """uint8 (N, 3, H, W) of the images at `paths` (RGB), each of `size` (W, H), or of the
    first image's size when None; LthError (naming the path) for an unreadable image or
    another size."""
    from PIL import Image, UnidentifiedImageError

    errors = (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError, SyntaxError)
    out = None
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as img:  # reads the header only: the size is checked before decoding
                if size is None:
                    size = img.size
                if img.size != size:
                    raise LthError(f"image {path} is {img.size[0]}x{img.size[1]}; {what} are {size[0]}x{size[1]}")
                arr = np.asarray(img.convert("RGB"))
        except errors as exc:
            raise LthError(f"cannot read image {path}: {exc}") from None
        if out is None:
            out = np.empty((len(paths), size[1], size[0], 3), dtype=np.uint8)
        out[i] = arr
    if out is None:
        return torch.empty(0, 3, 0, 0, dtype=torch.uint8)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def read_folder(listing: dict[str, list[list[Path]]], what: str, size: tuple[int, int] | None = None) -> dict:
    """{train_x, train_y, test_x, test_y}: uint8 images and int64 labels of a listed folder;
    the test images must have the training images' size."""
    tensors = {}
    for split in SPLITS:
        files = listing[split]
        tensors[f"{split}_x"] = decode_images([p for fs in files for p in fs], what, size)
        tensors[f"{split}_y"] = torch.cat([torch.full((len(fs),), i, dtype=torch.int64) for i, fs in enumerate(files)])
        size = (tensors[f"{split}_x"].shape[3], tensors[f"{split}_x"].shape[2])
    return tensors


def channel_statistics(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple, tuple]:
    """(mean, std) per channel of uint8 images (N, 3, H, W), in [0, 1] units, from exact
    integer sums (the population standard deviation over every pixel)."""
    total = torch.zeros(3, dtype=torch.int64)
    squares = torch.zeros(3, dtype=torch.int64)
    for part in images.split(chunk):
        values = part.to(torch.int64)
        total += values.sum((0, 2, 3))
        squares += (values * values).sum((0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total.double() / (count * 255)
    var = squares.double() / (count * 255 ** 2) - mean * mean
    return tuple(mean.tolist()), tuple(var.clamp(min=0).sqrt().tolist())


def cached(cache_file: Path, build) -> dict[str, torch.Tensor]:
    """The tensors in cache_file, or build()'s, written there atomically first."""
    if cache_file.exists():
        try:
            return load_tensors(cache_file)
        except Exception:  # a corrupt cache is rebuilt, never trusted
            cache_file.unlink()
    tensors = build()
    atomic_torch_save(tensors, cache_file)
    return tensors


def cache_path(cache_dir: Path | None, name: str) -> Path:
    """Where a decoded data set named `name` is cached: <cache folder>/data/<name>."""
    return (cache_dir or default_cache_dir()) / "data" / name


@contextlib.contextmanager
def socket_timeout(seconds: float):
    """Every socket made in the block (torchvision's urllib ones) gives up after `seconds`
    without an answer, instead of waiting forever."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


def download_cause(exc: BaseException) -> str:
    """The likely cause of a failed download, in a few words."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError) \
        else exc
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return (f"no answer for {DOWNLOAD_TIMEOUT:.0f} s: the server is down or slow, or a firewall or proxy holds "
                "the connection")
    if isinstance(reason, ConnectionRefusedError):
        return "the connection was refused: the server is down, or a proxy or firewall refuses it"
    if isinstance(reason, socket.gaierror):
        return "the server's name is unknown: no network, or no DNS"
    first = (str(reason).strip().splitlines() or [""])[0]
    return f"{type(reason).__name__}: {first}"


def torchvision_set(class_name: str, folder: str, what: str, prefix: str, cache_dir: Path | None) -> dict:
    """{train_x, train_y, test_x, test_y} of torchvision.datasets.<class_name> downloaded into
    the cache folder (its files in <download>/<folder>), decoded once and cached as
    `<prefix>-<fingerprint>.pt`; LthError (one line: the address, the time waited, the likely
    cause) if the download fails or goes DOWNLOAD_TIMEOUT seconds without an answer."""
    import torchvision

    download_dir = (cache_dir or default_cache_dir()) / "torchvision"
    dataset = getattr(torchvision.datasets, class_name, None)
    start = time.monotonic()
    try:
        with socket_timeout(DOWNLOAD_TIMEOUT):
            splits = {split: dataset(download_dir, train=(split == "train"), download=True) for split in SPLITS}
    except Exception as exc:  # no network, a server that does not answer, a broken archive, ...
        raise LthError(f"could not download {what} from {getattr(dataset, 'url', class_name)} into {download_dir} "
                       f"(gave up after {time.monotonic() - start:.0f} s; {download_cause(exc)}); pass --data-dir "
                       "with a copy in ImageFolder layout") from None
    batch_dir = download_dir / folder
    key = fingerprint(sorted(p for p in batch_dir.iterdir() if p.is_file()), batch_dir)

    def build():
        out = {}
        for split, ds in splits.items():
            out[f"{split}_x"] = torch.from_numpy(np.asarray(ds.data)).permute(0, 3, 1, 2).contiguous()
            out[f"{split}_y"] = torch.tensor(ds.targets, dtype=torch.int64)
        return out
    return cached(cache_path(cache_dir, f"{prefix}-{key}.pt"), build)


def cifar_loader(key: str, title: str, classes: int, torchvision_class: str, archive: str):
    """load(data_dir, cache_dir) of a CIFAR-like set of 32x32 images with `classes` classes:
    the ImageFolder copy at data_dir if given (cached as `<key>-folder-<fingerprint>.pt`), else
    torchvision's `torchvision_class` downloaded into the cache folder (`<key>-torchvision-...`);
    LthError for a missing folder, a wrong class count, an unreadable or wrongly sized image, or
    a failed download."""
    def load(data_dir: str | None, cache_dir: Path | None) -> dict:
        if data_dir:
            listing = list_folder(data_dir, title, classes=classes)
            key_ = fingerprint(all_files(listing), Path(data_dir).expanduser())
            return cached(cache_path(cache_dir, f"{key}-folder-{key_}.pt"),
                          lambda: read_folder(listing, f"{title} images", (32, 32)))
        return torchvision_set(torchvision_class, archive, title, f"{key}-torchvision", cache_dir)
    return load
