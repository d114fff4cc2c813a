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
from lthfast.foundations.hardware import to_device

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
        """This data set on `device`: itself when it is there already (by torch's own rule: "cuda"
        is the current GPU), so that what is kept with it (gather_table's padded images, made
        once) is not made again for every stack (tests/test_data.py)."""
        moved = {name: getattr(self, name).to(device) for name in ("train_x", "train_y", "test_x", "test_y")}
        if all(tensor is getattr(self, name) for name, tensor in moved.items()):
            return self
        return dataclasses.replace(self, **moved)


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

def _statistics(device, mean: tuple, std: tuple, repeat: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean * 255, 1 / (std * 255)) as float32 [3 * repeat] tensors on `device` (the 3 channels'
    values `repeat` times over, for pixels stored channel-last), made once per process."""
    key = (str(device), tuple(mean), tuple(std), repeat)
    if key not in _STATISTICS:
        _STATISTICS[key] = (torch.tensor(mean, device=device).repeat(repeat) * 255,
                            1.0 / (torch.tensor(std, device=device).repeat(repeat) * 255))
    return _STATISTICS[key]


_STATISTICS: dict = {}


def normalize(x_uint8: torch.Tensor, channels_last: bool = False, mean: tuple = MEAN, std: tuple = STD) -> torch.Tensor:
    """uint8 images (B, 3, H, W) -> float32 (x / 255 - mean) / std per channel, optionally in
    channels_last layout."""
    mean_, inv_std = _statistics(x_uint8.device, mean, std)
    x = (x_uint8.float() - mean_.view(1, 3, 1, 1)) * inv_std.view(1, 3, 1, 1)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def normalize_nhwc(x_uint8: torch.Tensor, channels_last: bool = False, mean: tuple = MEAN,
                   std: tuple = STD) -> torch.Tensor:
    """normalize() of images stored (B, H, W, 3): the same float32 operations on the same
    numbers (bit-identical), returned as (B, 3, H, W), channels_last without a copy."""
    b, h, w, c = x_uint8.shape
    # statistics tiled over a whole image: a broadcast over the innermost 3 would not vectorize
    mean_, inv_std = _statistics(x_uint8.device, mean, std, h * w)
    x = ((x_uint8.reshape(b, -1).float() - mean_) * inv_std).view(b, h, w, c).permute(0, 3, 1, 2)
    return x if channels_last else x.contiguous()


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


# The padded training images are kept normalized (float32, 4 bytes a value) while that takes at
# most this much memory (CIFAR-10 whole: 0.92 GiB), so that a batch is a gather and nothing else;
# larger sets keep them as uint8 and normalize each batch (three elementwise operations).
FLOAT_TABLE_BYTES = 1 << 30


def _float_table(values: int) -> bool:
    """Whether a gather table of this many values is kept as float32 (an empty one: uint8)."""
    return 0 < 4 * values <= FLOAT_TABLE_BYTES


def table_bytes(num_images: int, height: int = 32, width: int = 32) -> int:
    """Bytes of gather_table for a training set of this size (lthfast.study.resources counts them)."""
    values = num_images * (height + 2 * CROP_PADDING) * (width + 2 * CROP_PADDING) * 3
    return 4 * values if _float_table(values) else values


def gather_table(data: Dataset) -> tuple[torch.Tensor, bool]:
    """(the training images zero-padded by CROP_PADDING on each side and stored (N, H + 8, W + 8, 3),
    normalized): float32 values normalize() gives (bit for bit) when table_bytes allows, else
    uint8 (normalized False). Made once per Dataset object: every batch is then one gather from it
    (EpochPlan.batch)."""
    cached = data.__dict__.get("_gather_table")  # not a field: dataclasses.replace drops it
    if cached is None or cached[0].device != data.train_x.device:
        p = CROP_PADDING
        table = torch.nn.functional.pad(data.train_x, (p, p, p, p)).permute(0, 2, 3, 1).contiguous()
        normalized = _float_table(table.numel())
        if normalized:
            table = normalize_nhwc(table, True, data.mean, data.std).permute(0, 2, 3, 1)  # back to (N, H, W, 3)
        cached = data.__dict__["_gather_table"] = (table, normalized)
    return cached


class EpochPlan:
    """Order and augmentation of one epoch, derived from (data seed, epoch) alone.

    batch() is the fast path: the epoch's gather offsets are computed once here, and a batch
    is one gather from gather_table(data) (and, for a large set, three elementwise operations:
    normalize_nhwc), with no host synchronization. batch_reference() is the plain path it equals bit for bit
    (pad, crop and flip by advanced indexing, then normalize; tests/test_data.py)."""

    def __init__(self, num_examples: int, batch_size: int, data_seed: int, epoch: int, device,
                 augment_data: bool = True):
        g = torch.Generator().manual_seed(data_seed * 1_000_003 + epoch)
        order = torch.randperm(num_examples, generator=g)
        offsets = torch.randint(0, 2 * CROP_PADDING + 1, (num_examples, 2), generator=g)
        flips = torch.rand(num_examples, generator=g) < 0.5
        self.order, self.offsets, self.flips = to_device(order, device), to_device(offsets, device), \
            to_device(flips, device)
        self.batch_size = batch_size
        self.augment_data = augment_data
        # The last batch may be partial: every image is seen once an epoch (as open_lth).
        self.num_batches = (num_examples + batch_size - 1) // batch_size
        self._offsets = None

    def _gather_offsets(self, data: Dataset):
        """Per image of the epoch, in order, the flat offsets into gather_table(data) (in pixels) of
        its crop's origin ([N, 1, 1]), rows ([N, H, 1]) and columns ([N, 1, W]); made on first use."""
        if self._offsets is None:
            n, _, h, w = data.train_x.shape
            ph, pw = h + 2 * CROP_PADDING, w + 2 * CROP_PADDING
            device = self.order.device
            ar_h, ar_w = torch.arange(h, device=device), torch.arange(w, device=device)
            if self.augment_data:
                rows = self.offsets[:, 0:1] + ar_h
                cols = self.offsets[:, 1:2] + torch.where(self.flips[:, None], w - 1 - ar_w, ar_w)
            else:  # the image itself: the crop at the padding's offset, unflipped
                rows = (CROP_PADDING + ar_h).expand(self.order.shape[0], h)
                cols = (CROP_PADDING + ar_w).expand(self.order.shape[0], w)
            self._offsets = ((self.order * (ph * pw))[:, None, None], (rows * pw)[:, :, None], cols[:, None, :])
        return self._offsets

    def batch(self, data: Dataset, index: int, channels_last: bool = False):
        """Batch `index`: (x float32 (B, 3, H, W) normalized with data's statistics, y int64 (B,))."""
        sl = slice(index * self.batch_size, (index + 1) * self.batch_size)
        starts, rows, cols = self._gather_offsets(data)
        pixels = (starts[sl] + rows[sl] + cols[sl])  # [B, H, W]
        table, normalized = gather_table(data)
        x = table.view(-1, 3).index_select(0, pixels.view(-1)).view(pixels.shape + (3,))
        if normalized:
            x = x.permute(0, 3, 1, 2)
            x = x if channels_last else x.contiguous()
        else:
            x = normalize_nhwc(x, channels_last, data.mean, data.std)
        return x, data.train_y[self.order[sl]]

    def batch_reference(self, data: Dataset, index: int, channels_last: bool = False):
        """batch() by plain indexing, padding and normalize(), bit-identical."""
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
