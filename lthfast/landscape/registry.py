"""The analyses a study can plan, one entry each, beside the strategy table: a new analysis
is one module (its compute function) plus one `register(Analysis(...))`.

An entry says what the analysis computes, on which of a study's solutions (its targets),
with which settings (a class of lthfast.config.analyses, and the StudyConfig part that holds
them), what one job costs on the calibrated device, and which numbers of a stored result the
report and the command line show. The planner (lthfast.study.plan), `python -m lthfast
analyze`, the dry run and the report read this table; tests/test_registries.py adds a toy
analysis and runs it through `analyze` and a planned study.

Targets (the study's comparisons, docs/protocol.md):
  successive      (imp:k-1, imp:k) for k >= 1, at every rewind point
  prune-step      (imp:k-1, imp:k:baseline), the pruning step into level k, late rewind point
  from-baseline   (imp:k:baseline, S:k) for S in imp and finetune, late rewind point
  level           (imp:k,) for k >= 0, the geometry seeds at the late rewind point
  instability     (imp:k, instability:k), the two copies of an instability pair, for the
                  study's instability levels at every rewind point
  one-parent      (imp:k-1,) for k >= 1, pruned to level k's density three ways (smallest,
                  largest, random magnitude), late rewind point
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

from lthfast.config.analyses import CurveSettings, SharpnessSettings, VolumeSettings
from lthfast.foundations.errors import LthError
from lthfast.landscape import curves, oneparent, sharpness, volume
from lthfast.store.layout import COPIES

TARGETS = ("successive", "prune-step", "from-baseline", "level", "instability", "one-parent")
DEFAULT_TEST_IMAGES = 10_000  # CIFAR-10's test set: the cost of "all test images"


@dataclass(frozen=True)
class Analysis:
    """One analysis of stored solutions.

    compute(run, solutions, settings, compute, force) -> the stored document (lthfast.landscape.runs.cached)
    cost(settings, study, calibration) -> estimated seconds of one job on the calibrated device
    summary(result) -> {name: number}: what the command line prints and the report tabulates
    planned(study, level) -> whether the study runs it at `level` (default: every level)"""
    name: str
    compute: Callable
    cost: Callable
    targets: tuple
    summary: Callable
    settings: type | None = None
    study_part: str | None = None
    planned: Callable | None = None
    help: str = ""

    def __post_init__(self):
        unknown = set(self.targets) - set(TARGETS)
        if unknown or not self.targets:
            raise ValueError(f"analysis {self.name}: targets must be among {TARGETS}, got {self.targets}")

    def settings_of(self, study=None):
        """The settings a study (or, without one, the defaults) gives this analysis."""
        if self.settings is None:
            return None
        if study is not None and self.study_part is not None:
            return getattr(study, self.study_part)
        return self.settings()

    def stored_settings(self, study=None) -> dict:
        """The settings as they name a stored result."""
        chosen = self.settings_of(study)
        return asdict(chosen) if chosen is not None else {}


ANALYSES: dict[str, Analysis] = {}


def register(entry: Analysis) -> Analysis:
    if entry.name in ANALYSES or entry.name == "sublevel":
        raise ValueError(f"an analysis named {entry.name!r} is already registered")
    ANALYSES[entry.name] = entry
    return entry


def get(name: str) -> Analysis:
    if name not in ANALYSES:
        raise LthError(f"unknown analysis {name!r}; analyses: {', '.join(ANALYSES)}")
    return ANALYSES[name]


def targets(study, seed: int, rewind: int) -> list[tuple[str, tuple, int]]:
    """(target, solutions, level) of a study's run of `seed` at `rewind`, in the order the
    study analyzes them (the planner and the report both read it)."""
    late = rewind == study.rewind_iter
    out = []
    for k in range(1, study.levels + 1):
        out.append(("successive", (f"imp:{k - 1}", f"imp:{k}"), k))
        if not late:
            continue  # R = 0 adds the successive barriers, where the rewind points are expected to differ
        out.append(("prune-step", (f"imp:{k - 1}", f"imp:{k}:baseline"), k))
        # Where rewinding and fine-tuning go from the same baseline b_k (findings 4 and 7).
        for strategy in ["imp"] + (["finetune"] if "finetune" in study.strategies_at(rewind) else []):
            out.append(("from-baseline", (f"imp:{k}:baseline", f"{strategy}:{k}"), k))
        # IMP's parent theta_{k-1} pruned to level k's density three ways (findings 5 and 6).
        out.append(("one-parent", (f"imp:{k - 1}",), k))
    geometry_seeds = study.geometry_seeds if study.geometry_seeds is not None else study.seeds
    if seed in geometry_seeds and late:
        out += [("level", (f"imp:{k}",), k) for k in range(study.levels + 1)]
    out += [("instability", (f"imp:{k}", f"{COPIES}:{k}"), k) for k in study.instability_at()]
    return out


def planned(study, target: str, level: int) -> list[Analysis]:
    """The analyses a study runs on a target at `level`, in registry order."""
    return [entry for entry in ANALYSES.values()
            if target in entry.targets and (entry.planned is None or entry.planned(study, level))]


# ----------------------------------------------------------------------------- the built-in ones

def _curve_cost(s: CurveSettings, study, cal) -> float:
    images = s.train_images + (s.test_images or DEFAULT_TEST_IMAGES)
    return cal.job_seconds + s.points * (images * cal.eval_image + s.bn_batches * study.train.batch_size * cal.bn_image)


def _curve_summary(r: dict) -> dict:
    """The plain barriers, and the held-out ones where the result has them (results stored
    before them lack the keys; a one-image sample stores None: both are left out)."""
    out = {"barrier_train_loss": r["barrier_train_loss"], "barrier_test_error": r["barrier_test_error"]}
    for key in ("barrier_train_loss_heldout", "barrier_test_error_heldout"):
        if r.get(key) is not None:
            out[key] = r[key]
    return out


def _curve(what: str, targets: tuple, help: str) -> Analysis:
    return Analysis(what, lambda run, solutions, s, compute, force=False: curves.interpolation(
        run, *solutions, s, compute, force, what=what), _curve_cost, targets, _curve_summary, CurveSettings, "curve",
        help=help)


# A job that only reads stored files (distance, sublevel): its claim, files and journal line. Seen
# here: 0.02 to 0.05 s a job (the journals of smoke and cpu-3seed on a 2-core Xeon with AMX).
JOB_SECONDS = 0.04

register(_curve("interpolate", ("successive", "from-baseline"), "the curve and barriers between two solutions"))
register(_curve("prune-path", ("prune-step",), "the curve from theta_{k-1} to its pruned baseline b_k"))
register(_curve("instability", ("instability",), "the barrier between the two copies of an instability pair "
                "(Frankle et al. 2020): stable when they are linearly connected"))
register(Analysis("distance", lambda run, solutions, s, compute, force=False: curves.distance(run, *solutions, force),
                  lambda s, study, cal: JOB_SECONDS, ("successive", "from-baseline"),
                  lambda r: {"l2": r["l2"], "relative": r["relative"]}, help="L2 distance over the unpruned weights"))
register(Analysis("volume", lambda run, solutions, s, compute, force=False: volume.volume(
    run, solutions[0], s, compute, force),
    lambda s, study, cal: cal.job_seconds + s.directions * s.train_images * (4 + s.bisections) * cal.eval_image,
    ("level",),
    lambda r: {"radius_mean": r["radius_mean"], "log_volume": r["log_volume"]}, VolumeSettings, "volume",
    help="basin radii along random directions and the log-volume"))
register(Analysis("sharpness", lambda run, solutions, s, compute, force=False: sharpness.sharpness(
    run, solutions[0], s, force),
    lambda s, study, cal: cal.job_seconds + (s.products + s.trace_samples) * s.images * cal.hvp_image, ("level",),
    lambda r: {"top_eigenvalue": r["top_eigenvalue"], "trace": r["trace"]}, SharpnessSettings, "sharpness",
    planned=lambda study, k: study.sharpness_levels is None or k in {j % (study.levels + 1)
                                                                    for j in study.sharpness_levels},
    help="the Hessian's extreme eigenvalues and trace within the unpruned weights"))
register(Analysis("one-parent", oneparent.one_parent, oneparent.cost, ("one-parent",), oneparent.summary,
                  help="imp:K-1 pruned to level K's density by smallest (IMP's b_K), largest and random "
                  "magnitude, no training: each baseline's train accuracy (BatchNorm recomputed) and damage "
                  "(its train loss minus the parent's); --a imp:K-1 --b imp:K, or --successive imp for every K"))
