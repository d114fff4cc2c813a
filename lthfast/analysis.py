"""The analysis layer over the run store: interpolation curves, pruning paths and distances
between stored solutions (lthfast.geometry adds volume and sharpness, lthfast.sublevel the
sublevel set), each cached as JSON next to its run with a PNG figure beside it:

  RUN/analysis/<what>/<solutions>__<settings hash>.json   the solutions, the settings, the
                                                           numbers, the wall time, the device

Asking again returns the stored result (force=True computes it again). The device and
kernel backend are not in the hash: results agree across them to floating-point tolerance.
Solutions are named as lthfast.store.SOLUTION_FORMS says ("imp:3", "imp:3:baseline", or a
level folder's path).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path

import torch

from lthfast import landscape, plots, settings, store
from lthfast.data import Dataset, fixed_sample, load_dataset
from lthfast.errors import LthError
from lthfast.hardware import device_name, resolve_device
from lthfast.hessian import distance as l2_distance
from lthfast.pruning import kept_count
from lthfast.settings import setting
from lthfast.storage import atomic_write_json, load_checkpoint, read_json
from lthfast.store import Solution
from lthfast.trainer import use_channels_last


class Run(store.Run):
    """A stored IMP run (lthfast.store.Run) with the data and device its analyses evaluate on."""

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


# ----------------------------------------------------------------------------- cache

def cached(run: Run, what: str, solutions: list[Solution], settings_: dict, compute, force: bool = False,
           name: str | None = None) -> dict:
    """The stored result of (what, solutions, settings), or compute() stored as one. The file
    is named by the solutions (or `name`) and a hash of the settings."""
    path = run.result_path(what, [name] if name else [s.slug for s in solutions], settings_)
    if path.exists() and not force:
        document = read_json(path)
        document["path"] = str(path)
        return document
    start = time.perf_counter()
    result = compute()
    document = {"what": what, "run": str(run.folder), "solutions": [s.label for s in solutions],
                "settings": settings_, "result": result, "wall_seconds": time.perf_counter() - start,
                "device": device_name(run.device), "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    atomic_write_json(document, path)
    document["path"] = str(path)
    return document


# ----------------------------------------------------------------------------- curves

@dataclass
class CurveSettings:
    """An interpolation curve (STUDY.md): grid, BatchNorm handling, evaluation samples."""
    points: int = setting(21, "grid points from a = 0 to a = 1.", minimum=2)
    bn: str = setting("recompute", "BatchNorm statistics at each point: recompute (from fixed augmented "
                      "training batches) or interpolate.", kind="str", choices=("recompute", "interpolate"))
    bn_batches: int = setting(40, "training batches for recomputed statistics.", minimum=1)
    train_images: int = setting(10_000, "fixed, unaugmented training sample for train loss and accuracy.",
                                minimum=1)
    test_images: int | None = setting(None, "test images (default: all).", minimum=1)
    seed: int = setting(0, "seed of the BatchNorm batches.", minimum=0, maximum=2 ** 32 - 1)

    def __post_init__(self):
        settings.check(self)


@dataclass
class Compute:
    """How (not what) to compute: never part of a result's name."""
    batch_size: int = setting(256, "evaluation batch size.", minimum=1)
    backend: str = setting("auto", "interpolation kernel: auto, torch, cpp, cuda or triton.", kind="str",
                           choices=("auto", "torch", "cpp", "triton", "cuda"))
    stack: str = setting("auto", "grouped (K networks as one model), loop, or auto (grouped on a GPU).",
                         kind="str", choices=landscape.STACK_MODES)
    chunk: int | None = setting(None, "at most this many points in one stacked model (memory).", minimum=1)
    precision: str = setting("auto", "fp32, bf16, or auto: the run's training precision.", kind="str",
                             choices=("auto", "fp32", "bf16"))

    def __post_init__(self):
        settings.check(self)

    def eval_settings(self, run: Run, bn: str = "recompute", bn_batches: int = 40, bn_seed: int = 0):
        return landscape.EvalSettings(bn=bn, bn_batches=bn_batches, bn_batch_size=run.config.train.batch_size,
                                      bn_seed=bn_seed, batch_size=self.batch_size, chunk=self.chunk,
                                      device=str(run.device),
                                      channels_last=use_channels_last(run.config.train, run.device),
                                      backend=self.backend, stack=self.stack,
                                      precision=run.config.train.precision if self.precision == "auto" else
                                      self.precision)


def interpolation(run: Run, a: Solution, b: Solution, settings_: CurveSettings | None = None,
                  compute: Compute | None = None, force: bool = False, what: str = "interpolate") -> dict:
    """The curve from a to b: train loss and accuracy, test loss and error at every grid
    point, all points evaluated together, and the barriers in train loss and test error."""
    settings_, compute = settings_ or CurveSettings(), compute or Compute()

    def run_curve():
        theta_a, theta_b = load_checkpoint(a.weights), load_checkpoint(b.weights)
        alphas = torch.linspace(0, 1, settings_.points)
        alphas[-1] = 1.0  # exact ends: the barrier needs a = 0 and a = 1
        sets = {"train": run.sample("train", settings_.train_images), "test": run.sample("test", settings_.test_images)}
        out = landscape.interpolate_on(theta_a, theta_b, alphas, run.model, run.width, run.data, sets,
                                       compute.eval_settings(run, settings_.bn, settings_.bn_batches, settings_.seed))
        grid = out["alphas"]
        test_error = [1 - v for v in out["test"]["accuracy"]]
        return {"alphas": grid, "train_loss": out["train"]["loss"], "train_accuracy": out["train"]["accuracy"],
                "test_loss": out["test"]["loss"], "test_error": test_error,
                "barrier_train_loss": landscape.barrier(out["train"]["loss"], grid),
                "barrier_test_error": landscape.barrier(test_error, grid),
                "train_images": len(sets["train"][1]), "test_images": len(sets["test"][1])}

    return cached(run, what, [a, b], asdict(settings_), run_curve, force)


def prune_path(run: Run, strategy: str, level: int, settings_: CurveSettings | None = None,
               compute: Compute | None = None, force: bool = False) -> dict:
    """The curve from theta_{k-1} to its pruned baseline b_k = m_k * theta_{k-1} (the
    pruned weights shrink to zero): does pruning leave the sublevel set?"""
    baseline = run.solution(f"{strategy}:{level}:baseline")
    return interpolation(run, run.parent(strategy, level), baseline, settings_, compute, force, what="prune-path")


def prune_steps(run: Run, level: str | None = None, strategy: str | None = None) -> list[tuple[str, int]]:
    """(strategy, k) of the pruning steps named: one level (STRATEGY:K) or every pruned level."""
    if strategy is not None:
        steps = [(strategy, k) for k in run.levels(strategy) if k > 0]
        if not steps:
            raise LthError(f"{strategy} has no finished pruned level in {run.folder}")
        return steps
    if level is not None:
        solution = run.solution(level)
        if solution.strategy is None or not solution.level:
            raise LthError(f"--level names a pruned level as STRATEGY:K with K >= 1, got {level!r}")
        return [(solution.strategy, solution.level)]
    raise LthError("give --level STRATEGY:K or --strategy STRATEGY")


def distance(run: Run, a: Solution, b: Solution, force: bool = False) -> dict:
    """||theta_a - theta_b|| over the prunable weights unpruned in either, and relative to
    ||theta_a|| (a pruned weight is zero, so the union loses nothing)."""
    def measure():
        (theta_a, mask_a), (theta_b, mask_b) = a.load(), b.load()
        union = {n: mask_a[n] | mask_b[n] for n in mask_a}
        return {**l2_distance(theta_a, theta_b, union), "dimension": kept_count(union)}

    return cached(run, "distance", [a, b], {}, measure, force)


# ----------------------------------------------------------------------------- figures

def figure_path(documents: list[dict], stem: str) -> Path:
    """Beside the first result, named by what the figure shows and the settings hash."""
    first = Path(documents[0]["path"])
    return first.with_name(f"{stem}__{first.stem.rsplit('__', 1)[-1]}.png")


def curves_figure(documents: list[dict], stem: str | None, title: str) -> Path:
    stem = stem or Path(documents[0]["path"]).stem.rsplit("__", 1)[0]
    return plots.curves(documents, figure_path(documents, stem), title)


def levels_figure(documents: list[dict], stem: str, series: dict[str, str], errors: dict[str, str], title: str) -> Path:
    """One panel per series (panel name: result key) against the level of each document's
    solution, with error bars from the result keys in `errors`."""
    levels = [int(doc["solutions"][0].split(":")[1]) for doc in documents]
    pick = lambda key: [d["result"][key] for d in documents]  # noqa: E731
    return plots.per_level(levels, {name: pick(key) for name, key in series.items()}, figure_path(documents, stem),
                           title, {name: pick(key) for name, key in errors.items()})
