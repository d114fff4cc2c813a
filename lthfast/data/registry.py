"""The table of data sets: a data set's name (`cifar10`, `cifar100`, `imagefolder`,
`synthetic`) finds its entry here.

A data set is one module (lthfast.data.cifar10, ...) ending with one `register(...)` call; its
loader, class count, sizes and normalization are read from its entry, never from an if/else
on its name. TrainConfig's `data` choices are this table's names (a live view: a data set
registered later is a valid choice).

A data set whose classes and sizes are read from its folder (imagefolder) registers
`describe` instead of a class count: `get(name, data_dir)` answers that folder's entry, so
whatever reads a config's data set through its data and data_dir (the model's output size,
TrainConfig.num_classes; the sizes) reads the folder's.

Invariants:
  - an unknown name is a one-line LthError listing the known names
    (tests/test_registries.py::test_unknown_data_set_lists_the_registered_ones);
  - every training and evaluation normalizes with the data set's own statistics (the
    entry's, or the loader's where the entry leaves them to it), so a data set with other
    statistics trains and interpolates as CIFAR-10 does
    (tests/test_registries.py::test_a_data_set_with_other_statistics_trains_and_interpolates);
  - a data set registered outside the package (a test) trains as a built-in's
    (tests/test_registries.py::test_a_registered_data_set_with_three_classes_trains).

Tests register a data set for their own duration by replacing DATA_SETS with a copy first:
    monkeypatch.setattr(lthfast.data.registry, "DATA_SETS", dict(lthfast.data.registry.DATA_SETS))
so every lookup here reads the module-level DATA_SETS at call time (the views below included).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

from lthfast.data.dataset import MEAN, STD, Dataset
from lthfast.foundations.errors import LthError
from lthfast.foundations.views import View


class Description(NamedTuple):
    """What a folder-read data set's `describe(data_dir)` finds: the class count, (training,
    test) images, and `identity`, a text that differs between different folders' contents
    (the run hash holds it, since the folder's path is not)."""
    num_classes: int
    sizes: tuple[int, int]
    identity: str


@dataclass(frozen=True)
class DataSetEntry:
    """One data set.

    name: what TrainConfig's `data` names ("cifar10").
    load: (data_dir: str | None, cache_dir: Path | None) -> Dataset on the CPU: images uint8
        (N, 3, H, W), labels int64 (N,) in [0, num_classes); LthError for a source it cannot read.
    num_classes: the number of classes (the models' output size).
    sizes: (training, test) images of the full set: what plans and reports count when a
        record lacks them.
    mean, std: per-channel normalization statistics in [0, 1] units (3 floats each); None:
        the loader computes them (its Dataset's mean and std are used).
    description: a few words for the command line's help.
    reads_data_dir: whether `load` reads data_dir (then a folder source is part of a run's hash).
    describe: (data_dir) -> Description, for a data set read from a folder of any class count
        (num_classes and sizes are then the folder's: get(name, data_dir)); None otherwise.
    identity: the bound folder's Description.identity (None for an unbound entry).
    """
    name: str
    load: Callable[[str | None, Path | None], Dataset]
    num_classes: int | None
    sizes: tuple[int, int] | None
    mean: tuple[float, float, float] | None = MEAN
    std: tuple[float, float, float] | None = STD
    description: str = ""
    reads_data_dir: bool = False
    describe: Callable[[str], Description] | None = None
    identity: str | None = None


DATA_SETS: dict[str, DataSetEntry] = {}


def _statistics(name: str, what: str, values) -> tuple[float, float, float] | None:
    if values is None:
        return None
    values = tuple(values)
    if len(values) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                   for v in values) or (what == "std" and min(values) <= 0):
        raise ValueError(f"{what} of data set {name!r} must be 3 finite numbers (one per channel"
                         f"{', each > 0' if what == 'std' else ''}), got {values!r}")
    return tuple(float(v) for v in values)


def register(name: str, *, load: Callable[[str | None, Path | None], Dataset], num_classes: int | None = None,
             sizes: tuple[int, int] | None = None, mean: tuple[float, float, float] | None = MEAN,
             std: tuple[float, float, float] | None = STD, description: str = "", reads_data_dir: bool = False,
             describe: Callable[[str], Description] | None = None) -> DataSetEntry:
    """Add a data set to DATA_SETS (fields as DataSetEntry's) and return its entry.

    Errors: ValueError if the name is taken, num_classes < 2 or sizes not two positive ints
    (both required unless `describe` is given), or mean/std are not 3 finite numbers (std > 0)
    or only one of them is None."""
    if name in DATA_SETS:
        raise ValueError(f"data set {name!r} is already registered")
    if (describe is None or num_classes is not None) and \
            (not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2):
        raise ValueError(f"num_classes of data set {name!r} must be an int >= 2, got {num_classes!r}")
    if describe is None or sizes is not None:
        sizes = tuple(sizes or ())
        if len(sizes) != 2 or not all(isinstance(n, int) and n > 0 for n in sizes):
            raise ValueError(f"sizes of data set {name!r} must be (training, test) positive ints, got {sizes!r}")
    mean, std = _statistics(name, "mean", mean), _statistics(name, "std", std)
    if (mean is None) != (std is None):
        raise ValueError(f"data set {name!r}: give both mean and std, or neither (the loader computes them)")
    entry = DataSetEntry(name, load, num_classes, sizes, mean, std, description, reads_data_dir, describe)
    DATA_SETS[name] = entry
    return entry


def get(name: str, data_dir: str | None = None) -> DataSetEntry:
    """The entry of a data set; for one read from a folder of any class count (`describe`),
    with that folder's class count, sizes and identity.

    Errors (LthError, one line): an unknown name, naming the known ones; a folder-read data
    set without a folder; the folder's own errors (lthfast.data.sources)."""
    try:
        entry = DATA_SETS[name]
    except (KeyError, TypeError):
        raise LthError(f"unknown data set {name!r}; known: {', '.join(DATA_SETS)}") from None
    if entry.describe is None:
        return entry
    folder = data_dir
    if folder is None:
        raise LthError(f"--data {name} reads its images from --data-dir (a folder with train/<class>/ and "
                       "test/<class>/); none was given")
    found = entry.describe(folder)
    return dataclasses.replace(entry, num_classes=found.num_classes, sizes=tuple(found.sizes),
                               identity=found.identity)


class _Sizes(View):
    """{name: (training, test) images}, read through `get` (a bound name: its folder's)."""

    def __getitem__(self, name):
        if name not in DATA_SETS:
            raise KeyError(name)
        return get(name).sizes

    def __contains__(self, name) -> bool:
        return name in DATA_SETS


NAMES = View(lambda: DATA_SETS)  # the registered names, e.g. a setting's choices
SIZES: Mapping[str, tuple[int, int]] = _Sizes(lambda: DATA_SETS)  # {"cifar10": (50_000, 10_000), ...}
