"""The analysis layer over the run store: every geometric quantity of STUDY.md for
solutions named by run folder, strategy and level, cached next to the run.

  RUN/analysis/<what>/<name>.json   one result: the solutions, the settings, the numbers,
                                    the wall time and the device
  RUN/analysis/<what>/<name>.png    its figure

A result's name holds its solutions and a hash of the settings that change its numbers:
asking again returns the stored result (force=True computes it again). The device and
kernel backend are not in the hash: results agree across them to floating-point tolerance.

Solutions are named "STRATEGY:LEVEL" (level 0 is the dense network, shared by every
strategy), "STRATEGY:LEVEL:baseline" (the pruned weights the level starts from, before
rewinding), or a level folder's path.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path

import torch

from lthfast import pruning
from lthfast.config import TrainConfig
from lthfast.data import fixed_sample, load_dataset, normalize
from lthfast.errors import LthError
from lthfast.hardware import device_name
from lthfast.imp import CHAINS, STRATEGIES, ImpConfig, check_strategy
from lthfast.storage import atomic_write_json, load_checkpoint, read_json

SOLUTION_FORMS = "STRATEGY:LEVEL (e.g. imp:3; level 0 is the dense network), STRATEGY:LEVEL:baseline, or a level folder"


# ----------------------------------------------------------------------------- solutions

@dataclass(frozen=True)
class Solution:
    label: str  # how results and figures name it: "imp:3", "imp:3:baseline", or the folder
    weights: Path  # final.pt or baseline.pt
    mask: Path  # mask.pt of its level
    strategy: str | None = None
    level: int | None = None

    @property
    def slug(self) -> str:
        """The label as a file-name part."""
        if self.strategy is None:
            return "path-" + hashlib.sha256(str(self.weights.resolve()).encode()).hexdigest()[:8]
        return self.label.replace(":", "-")

    def load(self) -> tuple[dict, dict]:
        """(state dict, keep-mask over the prunable weights)."""
        return load_checkpoint(self.weights), pruning.unpack(load_checkpoint(self.mask))


class Run:
    """One IMP run folder (ROOT/imp_<hash>, as `python -m lthfast imp` prints it)."""

    def __init__(self, folder: str | Path, data_dir: str | None = None, device: str = "auto"):
        from lthfast.imp import _hashed

        self.folder = Path(folder).expanduser()
        config_path = self.folder / "config.json"
        if not config_path.exists():
            raise LthError(f"{self.folder} is not an IMP run folder (no config.json); pass the imp_<hash> "
                           "folder that `python -m lthfast imp` printed")
        stored = read_json(config_path)
        try:
            _hashed(stored)
            train = TrainConfig.from_dict(stored.pop("train"))
            self.config = ImpConfig(train=train, **stored)
        except (KeyError, TypeError, ValueError) as exc:
            raise LthError(f"{config_path} is not an IMP config ({exc})") from None
        self.data_dir = data_dir
        self.device_name = device

    @property
    def model(self) -> str:
        return self.config.train.model

    @property
    def width(self) -> int | None:
        return self.config.train.width

    @cached_property
    def device(self) -> torch.device:
        from lthfast.trainer import resolve_device

        return resolve_device(self.device_name)

    @cached_property
    def data(self):
        t = self.config.train
        return load_dataset(t.data, self.data_dir or t.data_dir, t.train_subset, t.subset_seed)

    def sample(self, split: str, size: int | None):
        """The fixed, unaugmented evaluation sample of `split` (the one IMP's level.json uses
        when the sizes agree)."""
        x, y = (self.data.train_x, self.data.train_y) if split == "train" else (self.data.test_x, self.data.test_y)
        return fixed_sample(x, y, size)

    def level_folder(self, strategy: str, level: int) -> Path:
        return self.folder / "level_00" if level == 0 else self.folder / strategy / f"level_{level:02d}"

    def levels(self, strategy: str) -> list[int]:
        """The finished levels of `strategy`, dense level 0 first."""
        check_strategy(strategy)
        found = [0] if (self.folder / "level_00" / "level.json").exists() else []
        folder = self.folder / strategy
        if folder.is_dir():
            found += sorted(int(p.name[6:]) for p in folder.glob("level_[0-9][0-9]") if (p / "level.json").exists())
        return found

    def strategies(self) -> list[str]:
        return [s for s in STRATEGIES if len(self.levels(s)) > 1]

    def solution(self, spec: str) -> Solution:
        """The solution named by `spec` (SOLUTION_FORMS); a clear error if it does not exist."""
        spec = str(spec)
        parts = spec.split(":")
        if len(parts) in (2, 3) and parts[0] in STRATEGIES:
            strategy, level_text, *rest = parts
            if rest not in ([], ["baseline"]) or not level_text.isdigit():
                raise LthError(f"cannot read solution {spec!r}; name it as {SOLUTION_FORMS}")
            level = int(level_text)
            if level == 0:
                strategy = "imp"  # the dense network is every strategy's level 0
            folder = self.level_folder(strategy, level)
            if not (folder / "level.json").exists():
                finished = self.levels(strategy)
                raise LthError(f"no finished level {level} of {strategy} in {self.folder} "
                               f"(finished: {', '.join(map(str, finished)) or 'none'})")
            if rest:
                if level == 0:
                    raise LthError("the dense network (level 0) has no baseline")
                return Solution(f"{strategy}:{level}:baseline", folder / "baseline.pt", folder / "mask.pt",
                                strategy, level)
            return Solution(f"{strategy}:{level}", folder / "final.pt", folder / "mask.pt", strategy, level)
        path = Path(spec).expanduser()
        if path.is_dir() and (path / "final.pt").exists() and (path / "mask.pt").exists():
            return Solution(str(path), path / "final.pt", path / "mask.pt")
        if path.exists():
            raise LthError(f"{path} is not a finished level folder (it needs final.pt and mask.pt)")
        raise LthError(f"no solution {spec!r}; name it as {SOLUTION_FORMS}")

    def parent(self, strategy: str, level: int) -> Solution:
        """theta_{k-1}, the solution whose pruning gives level k's baseline: the strategy's
        own previous level for the chains, imp's for finetune and reinit, dense for oneshot."""
        if level < 1:
            raise LthError("the dense network (level 0) has no parent")
        if strategy == "oneshot" or level == 1:
            return self.solution("imp:0")
        return self.solution(f"{strategy if strategy in CHAINS else 'imp'}:{level - 1}")


# ----------------------------------------------------------------------------- cache

def _settings_hash(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def result_path(run_folder: Path, what: str, name: str, settings: dict) -> Path:
    return Path(run_folder) / "analysis" / what / f"{name}__{_settings_hash(settings)}.json"


def cached(run: Run, what: str, name: str, settings: dict, compute, force: bool = False,
           solutions: list[str] | None = None) -> dict:
    """The stored result of (what, name, settings), or compute() stored as one."""
    path = result_path(run.folder, what, name, settings)
    if path.exists() and not force:
        document = read_json(path)
        document["path"] = str(path)
        return document
    start = time.perf_counter()
    result = compute()
    document = {"what": what, "run": str(run.folder), "solutions": solutions or [], "settings": settings,
                "result": result, "wall_seconds": time.perf_counter() - start, "device": device_name(run.device),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    atomic_write_json(document, path)
    document["path"] = str(path)
    return document


# ----------------------------------------------------------------------------- curves

@dataclass
class CurveSettings:
    """An interpolation curve (STUDY.md): grid, BatchNorm handling, evaluation samples."""
    points: int = 21
    bn: str = "recompute"  # recompute (from fixed augmented training batches) or interpolate
    bn_batches: int = 40
    train_images: int = 10_000  # fixed, unaugmented training sample
    test_images: int | None = None  # None: the whole test set
    seed: int = 0  # of the BN batches

    def __post_init__(self):
        _check_int("points", self.points, 2)
        _check_int("bn-batches", self.bn_batches, 1)
        _check_int("train-images", self.train_images, 1)
        if self.test_images is not None:
            _check_int("test-images", self.test_images, 1)
        if self.bn not in ("recompute", "interpolate"):
            raise LthError(f"--bn must be recompute or interpolate, got {self.bn!r}")


@dataclass
class Compute:
    """How (not what) to compute: never part of a result's name."""
    batch_size: int = 256
    backend: str = "auto"
    stack: str = "auto"
    chunk: int | None = None

    def eval_settings(self, run: Run, bn: str = "recompute", bn_batches: int = 40, bn_seed: int = 0):
        from lthfast.landscape import EvalSettings
        from lthfast.trainer import use_channels_last

        return EvalSettings(bn=bn, bn_batches=bn_batches, bn_batch_size=run.config.train.batch_size,
                            bn_seed=bn_seed, batch_size=self.batch_size, chunk=self.chunk,
                            device=str(run.device), channels_last=use_channels_last(run.config.train, run.device),
                            backend=self.backend, stack=self.stack)


def interpolation(run: Run, a: Solution, b: Solution, settings: CurveSettings | None = None,
                  compute: Compute | None = None, force: bool = False, what: str = "interpolate") -> dict:
    """The curve from a to b: train loss and accuracy, test loss and error at every grid
    point, all points evaluated together, and the barriers in train loss and test error."""
    from lthfast.landscape import barrier, interpolate_on

    settings, compute = settings or CurveSettings(), compute or Compute()
    def run_curve():
        theta_a, theta_b = load_checkpoint(a.weights), load_checkpoint(b.weights)
        alphas = torch.linspace(0, 1, settings.points)
        alphas[-1] = 1.0  # exact ends: the barrier needs a = 0 and a = 1
        sets = {"train": run.sample("train", settings.train_images), "test": run.sample("test", settings.test_images)}
        out = interpolate_on(theta_a, theta_b, alphas, run.model, run.width, run.data, sets,
                             compute.eval_settings(run, settings.bn, settings.bn_batches, settings.seed))
        grid = out["alphas"]
        test_error = [1 - v for v in out["test"]["accuracy"]]
        return {"alphas": grid, "train_loss": out["train"]["loss"], "train_accuracy": out["train"]["accuracy"],
                "test_loss": out["test"]["loss"], "test_error": test_error,
                "barrier_train_loss": barrier(out["train"]["loss"], grid),
                "barrier_test_error": barrier(test_error, grid),
                "train_images": len(sets["train"][1]), "test_images": len(sets["test"][1])}

    return cached(run, what, f"{a.slug}__{b.slug}", asdict(settings), run_curve, force, [a.label, b.label])


def successive_pairs(run: Run, strategy: str) -> list[tuple[Solution, Solution]]:
    levels = run.levels(strategy)
    if len(levels) < 2:
        raise LthError(f"{strategy} has fewer than two finished levels in {run.folder}")
    return [(run.solution(f"{strategy}:{k}"), run.solution(f"{strategy}:{j}")) for k, j in zip(levels, levels[1:])]


def prune_path(run: Run, strategy: str, level: int, settings: CurveSettings | None = None,
               compute: Compute | None = None, force: bool = False) -> dict:
    """The curve from theta_{k-1} to its pruned baseline b_k = m_k * theta_{k-1} (the
    pruned weights shrink to zero): does pruning leave the sublevel set?"""
    baseline = run.solution(f"{strategy}:{level}:baseline")
    return interpolation(run, run.parent(strategy, level), baseline, settings, compute, force, what="prune-path")


# ----------------------------------------------------------------------------- sublevel set

def seed_runs(run: Run) -> list[Run]:
    """The runs beside `run` (same root) whose config differs from it in the seed alone,
    `run` included: the seeds that matching's standard deviation is taken over."""
    def key(config: ImpConfig) -> dict:
        fields = config.hashed_fields()
        fields["train"] = {k: v for k, v in fields["train"].items() if k != "seed"}
        return fields

    own = key(run.config)
    runs = []
    for path in sorted(run.folder.parent.glob("imp_*/config.json")):
        try:
            other = run if path.parent == run.folder else Run(path.parent, run.data_dir, run.device_name)
        except LthError:
            continue
        if key(other.config) == own:
            runs.append(other)
    return runs


def _level_record(run: Run, strategy: str, level: int) -> dict:
    return read_json(run.level_folder(strategy, level) / "level.json")


def matching(run: Run) -> dict:
    """Which IMP levels match the dense network (STUDY.md: test accuracy within one standard
    deviation over seeds of the dense network's). Needs two seeds or more; with one the
    standard deviation, and so matching, is undetermined."""
    runs = seed_runs(run)
    dense = [_level_record(r, "imp", 0)["test_accuracy"] for r in runs if 0 in r.levels("imp")]
    result = {"seeds": len(dense), "dense_accuracy_mean": _mean(dense), "dense_accuracy_std": _std(dense),
              "levels": {}, "last_matching_level": None}
    for level in run.levels("imp"):
        accuracies = [_level_record(r, "imp", level)["test_accuracy"] for r in runs if level in r.levels("imp")]
        mean = _mean(accuracies)
        matches = None if len(dense) < 2 else bool(mean >= result["dense_accuracy_mean"] - result["dense_accuracy_std"])
        result["levels"][str(level)] = {"accuracy_mean": mean, "seeds": len(accuracies), "matches": matches}
    if len(dense) >= 2:
        matched = [int(k) for k, v in result["levels"].items() if v["matches"]]
        result["last_matching_level"] = max(matched) if matched else None
    return result


def sublevel_settings(run: Run, eps: float | None, eps_margin: float) -> dict:
    """The cache key of a sublevel table: its settings and the finished levels it covers."""
    return {"eps": eps, "eps_margin": eps_margin, "levels": {s: run.levels(s) for s in STRATEGIES}}


def sublevel(run: Run, eps: float | None = None, eps_margin: float = 0.1, force: bool = False) -> dict:
    """Train loss of every solution and baseline of the run (all strategies), the threshold
    eps and which lie in S(eps) = {theta: train loss <= eps}. Default eps: the largest train
    loss among the IMP solutions up to the last matching level, times (1 + eps_margin); with
    one seed (matching undetermined) all finished IMP levels are used, and the result says so."""
    if eps is not None and (not isinstance(eps, (int, float)) or isinstance(eps, bool) or eps <= 0):
        raise LthError(f"--eps must be a positive number, got {eps!r}")
    if not isinstance(eps_margin, (int, float)) or eps_margin < 0:
        raise LthError(f"--eps-margin must be a number >= 0, got {eps_margin!r}")
    settings = sublevel_settings(run, eps, eps_margin)

    def table():
        match = matching(run)
        imp_levels = run.levels("imp")
        if eps is not None:
            threshold, rule = float(eps), "given"
        else:
            last = match["last_matching_level"]
            upto = imp_levels if last is None else [k for k in imp_levels if k <= last]
            worst = max(_level_record(run, "imp", k)["train_loss"] for k in upto)
            threshold = worst * (1 + eps_margin)
            rule = (f"max IMP train loss over levels {upto[0]}..{upto[-1]} x (1 + {eps_margin})"
                    + (" (one seed: matching undetermined, every finished IMP level used)" if last is None
                       and match["seeds"] < 2 else ""))
        rows = []
        for strategy in STRATEGIES:
            for level in run.levels(strategy):
                if level == 0 and strategy != "imp":
                    continue
                r = _level_record(run, strategy, level)
                rows.append(_sublevel_row(f"{strategy}:{level}", strategy, level, r["density"], "solution",
                                          r["train_loss"], None, threshold))
                if r.get("baseline"):
                    b = r["baseline"]
                    rows.append(_sublevel_row(f"{strategy}:{level}:baseline", strategy, level, r["density"],
                                              "baseline", b["train_loss"], b.get("train_loss_bn_recomputed"),
                                              threshold))
        return {"eps": threshold, "eps_rule": rule, "matching": match, "rows": rows,
                "train_images": run.config.eval_train_images}

    return cached(run, "sublevel", "run", settings, table, force)


def _sublevel_row(label, strategy, level, density, kind, loss, loss_recomputed, eps) -> dict:
    row = {"label": label, "strategy": strategy, "level": level, "density": density, "kind": kind,
           "train_loss": loss, "inside": loss <= eps}
    if loss_recomputed is not None:
        row.update(train_loss_bn_recomputed=loss_recomputed, inside_bn_recomputed=loss_recomputed <= eps)
    return row


# ----------------------------------------------------------------------------- volume

@dataclass
class VolumeSettings:
    """Basin radii along random directions (STUDY.md, after Huang et al. 2019)."""
    directions: int = 64
    delta: float = 0.1
    filter_normalized: bool = False
    train_images: int = 10_000
    initial: float = 0.05  # first bracket end, in units of the direction (scaled to ||theta||)
    bisections: int = 10  # the radius is within 2^-bisections (relative) of the crossing
    bn: str = "stored"  # BN statistics along a direction: the solution's stored ones, or recompute
    seed: int = 0

    def __post_init__(self):
        _check_int("directions", self.directions, 1)
        _check_int("train-images", self.train_images, 1)
        _check_int("bisections", self.bisections, 0)
        if not isinstance(self.delta, (int, float)) or self.delta <= 0:
            raise LthError(f"--delta must be a positive number, got {self.delta!r}")
        if not isinstance(self.initial, (int, float)) or self.initial <= 0:
            raise LthError(f"--initial must be a positive number, got {self.initial!r}")
        if self.bn not in ("stored", "recompute"):
            raise LthError(f"--bn must be stored or recompute, got {self.bn!r}")


def volume(run: Run, solution: Solution, settings: VolumeSettings | None = None,
           compute: Compute | None = None, force: bool = False) -> dict:
    from lthfast.landscape import along_directions
    from lthfast.volume import basin_radii, log_volume, random_directions

    settings, compute = settings or VolumeSettings(), compute or Compute()
    def measure():
        theta, mask = solution.load()
        directions = random_directions(theta, mask, settings.directions, settings.seed, settings.filter_normalized)
        x, y = run.sample("train", settings.train_images)
        bn = "interpolate" if settings.bn == "stored" else "recompute"  # directions move no BN buffer
        eval_settings = compute.eval_settings(run, bn)
        evaluations = []

        def losses_at(index, steps):
            evaluations.append(len(index))
            chosen = {n: d[index] for n, d in directions.items()}
            return torch.tensor(along_directions(theta, chosen, steps, run.model, run.width, run.data, x, y,
                                                 eval_settings)["loss"])

        base_loss = float(losses_at(torch.tensor([0]), torch.tensor([0.0]))[0])
        radii = basin_radii(losses_at, settings.directions, base_loss, settings.delta, settings.initial,
                            bisections=settings.bisections)
        dimension = pruning.kept_count(mask)
        finite = radii[torch.isfinite(radii)]
        return {"radii": radii.tolist(), "radius_mean": float(radii.mean()),
                "radius_std": float(radii.std()) if len(radii) > 1 else 0.0,
                "unbounded_directions": int((~torch.isfinite(radii)).sum()),
                "dimension": dimension, "log_volume": log_volume(radii, dimension) if len(finite) == len(radii)
                else float("inf"), "base_loss": base_loss, "points_evaluated": sum(evaluations),
                "passes": len(evaluations), "train_images": len(y)}

    return cached(run, "volume", solution.slug, asdict(settings), measure, force, [solution.label])


# ----------------------------------------------------------------------------- sharpness

@dataclass
class SharpnessSettings:
    """Top Hessian eigenvalue and trace within the unpruned weights (STUDY.md)."""
    images: int = 4096  # fixed training sample; smaller ones are known to be unstable
    iterations: int = 100  # power iteration, at most
    tolerance: float = 1e-3  # stop when successive eigenvalue estimates differ by less (relative)
    trace_samples: int = 50  # Rademacher vectors
    seed: int = 0

    def __post_init__(self):
        _check_int("images", self.images, 1)
        _check_int("iterations", self.iterations, 1)
        _check_int("trace-samples", self.trace_samples, 1)
        if not isinstance(self.tolerance, (int, float)) or self.tolerance <= 0:
            raise LthError(f"--tolerance must be a positive number, got {self.tolerance!r}")


def sharpness(run: Run, solution: Solution, settings: SharpnessSettings | None = None, force: bool = False,
              chunk_size: int = 512) -> dict:
    from lthfast.hessian import hutchinson_trace, model_loss, top_eigenvalue
    from lthfast.models import create_model

    settings = settings or SharpnessSettings()

    def measure():
        theta, mask = solution.load()
        model = create_model(run.model, run.width)
        model.load_state_dict(theta)
        model.to(run.device)
        x, y = run.sample("train", settings.images)
        x, y = normalize(x.to(run.device)), y.to(run.device)
        names = list(mask)
        params = {n: theta[n].to(run.device) for n in names}
        device_mask = {n: m.to(run.device, params[n].dtype) for n, m in mask.items()}
        losses = model_loss(model, names, x, y, chunk_size)
        with torch.no_grad():
            loss = float(sum(f(params) for f in losses))
        start = time.perf_counter()
        eigen = top_eigenvalue(losses, params, device_mask, settings.iterations, settings.tolerance, settings.seed)
        eigen_seconds = time.perf_counter() - start
        trace = hutchinson_trace(losses, params, device_mask, settings.trace_samples, settings.seed)
        return {"top_eigenvalue": eigen.value, "eigen_iterations": eigen.iterations,
                "eigen_relative_change": eigen.relative_change, "eigen_converged": eigen.relative_change
                < settings.tolerance, "trace": trace.value, "trace_samples": trace.samples,
                "trace_standard_error": trace.standard_error, "loss": loss, "images": len(y),
                "dimension": pruning.kept_count(mask), "eigen_seconds": eigen_seconds,
                "trace_seconds": time.perf_counter() - start - eigen_seconds}

    return cached(run, "sharpness", solution.slug, asdict(settings), measure, force, [solution.label])


# ----------------------------------------------------------------------------- distance

def distance(run: Run, a: Solution, b: Solution, force: bool = False) -> dict:
    """||theta_a - theta_b|| over the prunable weights unpruned in either, and relative to
    ||theta_a|| (a pruned weight is zero, so the union loses nothing)."""
    from lthfast.hessian import distance as l2_distance

    def measure():
        (theta_a, mask_a), (theta_b, mask_b) = a.load(), b.load()
        union = {n: mask_a[n] | mask_b[n] for n in mask_a}
        return {**l2_distance(theta_a, theta_b, union), "dimension": pruning.kept_count(union)}

    return cached(run, "distance", f"{a.slug}__{b.slug}", {}, measure, force, [a.label, b.label])


# ----------------------------------------------------------------------------- helpers

def _check_int(flag: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise LthError(f"--{flag} must be an integer >= {minimum}, got {value!r}")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _std(values: list[float]) -> float:
    if len(values) < 2:
        return float("nan")
    mean = _mean(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
