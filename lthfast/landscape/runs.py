"""A stored IMP run opened for analysis (its data and device), and the cache every analysis
goes through: one JSON document per (analysis, solutions, settings), with a PNG beside it.

  RUN/analysis/<what>/<solutions>__<settings hash>.json   the solutions, the settings, the
                                                           numbers, the wall time, the device

Asking again returns the stored result (force=True computes it again); a damaged one (torn,
empty, not a result) is set aside and computed again, with a warning. The device and
kernel backend are not in the hash: results agree across them to floating-point tolerance.
Solutions are named as lthfast.store.layout.SOLUTION_FORMS says ("imp:3", "imp:3:baseline", or a
level folder's path). tests/test_analysis.py checks the cache and the names.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path

import torch

from lthfast.data.dataset import Dataset, fixed_sample
from lthfast.data.loading import load_dataset
from lthfast.foundations.errors import LthError
from lthfast.foundations.files import atomic_write_json
from lthfast.foundations.hardware import device_name, resolve_device
from lthfast.store import layout as store
from lthfast.store.level import Solution, read_checked


class AnalysisRun(store.Run):
    """A stored IMP run (lthfast.store.layout.Run) with the data and device its analyses evaluate on."""

    def __init__(self, folder: str | Path, data_dir: str | None = None, device: str = "auto",
                 data: Dataset | None = None):
        opened = store.Run.open(folder)
        super().__init__(opened.folder, opened.config)
        self.data_dir, self.device_name = data_dir, device
        if data is not None:
            self.__dict__["data"] = data  # a caller's copy (the study's), loaded once

    @property
    def model(self) -> str:
        return self.config.train.model

    @property
    def width(self) -> int | None:
        return self.config.train.width

    @cached_property
    def device(self) -> torch.device:
        return resolve_device(self.device_name)

    @cached_property
    def data(self) -> Dataset:
        t = self.config.train
        return load_dataset(t.data, self.data_dir or t.data_dir, t.train_subset, t.subset_seed)

    def sample(self, split: str, size: int | None):
        """The fixed, unaugmented evaluation sample of `split` (the one IMP's level.json uses
        when the sizes agree)."""
        x, y = (self.data.train_x, self.data.train_y) if split == "train" else (self.data.test_x, self.data.test_y)
        return fixed_sample(x, y, size)

    def solutions(self, solution: str | None = None, strategy: str | None = None) -> list[Solution]:
        """One named solution, or every finished level of a strategy."""
        if strategy is not None:
            return [self.solution(f"{strategy}:{k}") for k in self.levels(strategy)]
        if solution is not None:
            return [self.solution(solution)]
        raise LthError("give --solution (e.g. imp:2) or --strategy STRATEGY (every level)")

    def pairs(self, a: str | None = None, b: str | None = None, successive: str | None = None):
        """(A, B) solution pairs: the two named, or every pair of successive finished levels."""
        if successive is not None:
            levels = self.levels(successive)
            if len(levels) < 2:
                raise LthError(f"{successive} has fewer than two finished levels in {self.folder}")
            return [(self.solution(f"{successive}:{k}"), self.solution(f"{successive}:{j}"))
                    for k, j in zip(levels, levels[1:])]
        if a is not None and b is not None:
            return [(self.solution(a), self.solution(b))]
        raise LthError("give --a and --b, or --successive STRATEGY")


def cached(run: AnalysisRun, what: str, solutions: list[Solution], settings: dict, compute, force: bool = False,
           name: str | None = None) -> dict:
    """The stored result of (what, solutions, settings), or compute() stored as one. The file
    is named by the solutions (or `name`) and a hash of the settings."""
    path = run.result_path(what, [name] if name else [s.slug for s in solutions], settings)
    document = None if force else read_checked(path, "computed again now", store.whole_result)
    if document is not None:
        document["path"] = str(path)
        return document
    start = time.perf_counter()
    result = compute()
    document = {"what": what, "run": str(run.folder), "solutions": [s.label for s in solutions],
                "settings": settings, "result": result, "wall_seconds": time.perf_counter() - start,
                "device": device_name(run.device), "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    atomic_write_json(document, path)
    document["path"] = str(path)
    return document
