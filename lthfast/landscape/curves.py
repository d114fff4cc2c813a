"""Interpolation curves, pruning paths and distances between stored solutions (docs/protocol.md),
each cached through lthfast.landscape.runs, and their figures. tests/test_analysis.py
checks that a curve's ends are the stored evaluations and that a self-barrier is zero.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lthfast.config.analyses import CurveSettings
from lthfast.foundations.errors import LthError
from lthfast.foundations.files import load_checkpoint
from lthfast.foundations.settings import check, setting
from lthfast.landscape import plots
from lthfast.landscape import points as landscape
from lthfast.landscape.runs import AnalysisRun, cached
from lthfast.pruning.masks import kept_count
from lthfast.store.level import Solution
from lthfast.training.network import use_channels_last

# ----------------------------------------------------------------------------- cache



# ----------------------------------------------------------------------------- curves



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
        check(self)

    def eval_settings(self, run: AnalysisRun, bn: str = "recompute", bn_batches: int = 40, bn_seed: int = 0):
        return landscape.EvalSettings(bn=bn, bn_batches=bn_batches, bn_batch_size=run.config.train.batch_size,
                                      bn_seed=bn_seed, bn_augment=run.config.train.augment,
                                      batch_size=self.batch_size, chunk=self.chunk,
                                      device=str(run.device),
                                      channels_last=use_channels_last(run.config.train, run.device),
                                      backend=self.backend, stack=self.stack,
                                      precision=run.config.train.precision if self.precision == "auto" else
                                      self.precision)


def interpolation(run: AnalysisRun, a: Solution, b: Solution, settings: CurveSettings | None = None,
                  compute: Compute | None = None, force: bool = False, what: str = "interpolate") -> dict:
    """The curve from a to b: train loss and accuracy, test loss and error at every grid
    point, all points evaluated together, and the barriers in train loss and test error.

    barrier_*: the plain maximum on the whole sample (Frankle et al. 2020), as stored by
    every version. barrier_*_heldout: the peak a* (peak_alpha_*) chosen on half A of the
    sample and the barrier read there on half B (points.heldout_barrier; None when the
    sample has one image), from the halves' curves (*_halves: [A, B]) read in the same pass;
    "halves" says how the samples are split (points.HALVES)."""
    settings, compute = settings or CurveSettings(), compute or Compute()

    def run_curve():
        theta_a, theta_b = load_checkpoint(a.weights), load_checkpoint(b.weights)
        alphas = torch.linspace(0, 1, settings.points)
        alphas[-1] = 1.0  # exact ends: the barrier needs a = 0 and a = 1
        sets = {"train": run.sample("train", settings.train_images), "test": run.sample("test", settings.test_images)}
        out = landscape.interpolate_on(theta_a, theta_b, alphas, run.model, run.width, run.data, sets,
                                       compute.eval_settings(run, settings.bn, settings.bn_batches, settings.seed),
                                       halves=True)
        grid = out["alphas"]
        test_error = [1 - v for v in out["test"]["accuracy"]]
        train_halves = out["train"]["halves"]["loss"]
        test_halves = [None if h is None else [1 - v for v in h] for h in out["test"]["halves"]["accuracy"]]
        peak_train, heldout_train = landscape.heldout_barrier(*train_halves, grid)
        peak_test, heldout_test = landscape.heldout_barrier(*test_halves, grid)
        return {"alphas": grid, "train_loss": out["train"]["loss"], "train_accuracy": out["train"]["accuracy"],
                "test_loss": out["test"]["loss"], "test_error": test_error,
                "barrier_train_loss": landscape.barrier(out["train"]["loss"], grid),
                "barrier_test_error": landscape.barrier(test_error, grid),
                "barrier_train_loss_heldout": heldout_train, "barrier_test_error_heldout": heldout_test,
                "peak_alpha_train_loss": peak_train, "peak_alpha_test_error": peak_test,
                "train_loss_halves": train_halves, "test_error_halves": test_halves, "halves": landscape.HALVES,
                "train_images": len(sets["train"][1]), "test_images": len(sets["test"][1])}

    return cached(run, what, [a, b], asdict(settings), run_curve, force)


def prune_path(run: AnalysisRun, strategy: str, level: int, settings: CurveSettings | None = None,
               compute: Compute | None = None, force: bool = False) -> dict:
    """The curve from theta_{k-1} to its pruned baseline b_k = m_k * theta_{k-1} (the
    pruned weights shrink to zero): does pruning leave the sublevel set?"""
    baseline = run.solution(f"{strategy}:{level}:baseline")
    return interpolation(run, run.parent(strategy, level), baseline, settings, compute, force, what="prune-path")


def prune_steps(run: AnalysisRun, level: str | None = None, strategy: str | None = None) -> list[tuple[str, int]]:
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


def distance(run: AnalysisRun, a: Solution, b: Solution, force: bool = False) -> dict:
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


def l2_distance(theta_a: dict, theta_b: dict, mask: dict | None = None) -> dict:
    """||theta_a - theta_b|| over the unpruned entries of the tensors in `mask` (all of
    theta_a's tensors if no mask), and that distance relative to ||theta_a||."""
    names = list(mask) if mask is not None else list(theta_a)
    diff = sum(float(((theta_a[n].float() - theta_b[n].float())[mask[n] if mask else ...] ** 2).sum()) for n in names)
    norm = sum(float((theta_a[n].float()[mask[n] if mask else ...] ** 2).sum()) for n in names)
    l2 = math.sqrt(diff)
    return {"l2": l2, "relative": l2 / math.sqrt(norm) if norm > 0 else float("inf")}
