"""The table of data sets: a data set's name (`cifar10`, `synthetic`) finds its entry here.

A data set is one module (lthfast.data.cifar10, lthfast.data.synthetic) ending with one
`register(...)` call; its loader, class count, sizes and normalization are read from its
entry, never from an if/else on its name. TrainConfig's `data` choices are this table's
names (a live view: a data set registered later is a valid choice).

Invariants:
  - an unknown name is a one-line LthError listing the known names
    (tests/test_registries.py::test_unknown_data_set_lists_the_registered_ones);
  - a data set's normalization equals the default (CIFAR-10's statistics): training batches
    read the entry's, but evaluation paths outside lthfast.data still normalize bare
    tensors with the default, so any other statistics would train and evaluate on different
    inputs (tests/test_registries.py::test_a_data_set_with_other_statistics_is_refused);
  - a data set registered outside the package (a test) trains as a built-in's
    (tests/test_registries.py::test_a_registered_data_set_with_three_classes_trains).

Tests register a data set for their own duration by replacing DATA_SETS with a copy first:
    monkeypatch.setattr(lthfast.data.registry, "DATA_SETS", dict(lthfast.data.registry.DATA_SETS))
so every lookup here reads the module-level DATA_SETS at call time (the views below included).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lthfast.data.dataset import MEAN, STD, Dataset
from lthfast.foundations.errors import LthError
from lthfast.foundations.views import View


@dataclass(frozen=True)
class DataSetEntry:
    """One data set.

    name: what TrainConfig's `data` names ("cifar10").
    load: (data_dir: str | None, cache_dir: Path | None) -> Dataset on the CPU: images uint8
        (N, 3, H, W), labels int64 (N,) in [0, num_classes); LthError for a source it cannot read.
    num_classes: the number of classes (the models' output size).
    sizes: (training, test) images of the full set: what plans and reports count when a
        record lacks them.
    mean, std: per-channel normalization statistics in [0, 1] units (3 floats each).
    description: a few words for the command line's help.
    reads_data_dir: whether `load` reads data_dir (then a folder source is part of a run's hash).
    """
    name: str
    load: Callable[[str | None, Path | None], Dataset]
    num_classes: int
    sizes: tuple[int, int]
    mean: tuple[float, float, float] = MEAN
    std: tuple[float, float, float] = STD
    description: str = ""
    reads_data_dir: bool = False


DATA_SETS: dict[str, DataSetEntry] = {}


def register(name: str, *, load: Callable[[str | None, Path | None], Dataset], num_classes: int,
             sizes: tuple[int, int], mean: tuple[float, float, float] = MEAN, std: tuple[float, float, float] = STD,
             description: str = "", reads_data_dir: bool = False) -> DataSetEntry:
    """Add a data set to DATA_SETS (fields as DataSetEntry's) and return its entry.

    Errors: ValueError if the name is taken, num_classes < 2, sizes is not two positive ints,
    or mean/std differ from the default statistics (see the module's invariants)."""
    if name in DATA_SETS:
        raise ValueError(f"data set {name!r} is already registered")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"num_classes of data set {name!r} must be an int >= 2, got {num_classes!r}")
    sizes = tuple(sizes)
    if len(sizes) != 2 or not all(isinstance(n, int) and n > 0 for n in sizes):
        raise ValueError(f"sizes of data set {name!r} must be (training, test) positive ints, got {sizes!r}")
    if (tuple(mean), tuple(std)) != (MEAN, STD):
        raise ValueError(f"data set {name!r} asks for normalization mean={tuple(mean)}, std={tuple(std)}; only "
                         f"the default {MEAN}, {STD} is supported: evaluation outside lthfast.data normalizes "
                         "with it")
    entry = DataSetEntry(name, load, num_classes, sizes, tuple(mean), tuple(std), description, reads_data_dir)
    DATA_SETS[name] = entry
    return entry


def get(name: str) -> DataSetEntry:
    """The entry of a data set; a one-line LthError naming the known ones if there is none."""
    try:
        return DATA_SETS[name]
    except (KeyError, TypeError):
        raise LthError(f"unknown data set {name!r}; known: {', '.join(DATA_SETS)}") from None


NAMES = View(lambda: DATA_SETS)  # the registered names, e.g. a setting's choices
SIZES: Mapping[str, tuple[int, int]] = View(lambda: DATA_SETS, "sizes")  # {"cifar10": (50_000, 10_000), ...}

