"""The whole study of STUDY.md as a graph of jobs: the trainings of every strategy, level,
seed and rewind point, then the analyses of their solutions, run in dependency order.

Every job's output lives in the run store (level folders, analysis JSON files), so a job
whose output exists is skipped: stopping the study at any moment and starting it again
finishes the same study, and a second study in the same root reuses what it shares.

Rewind points: the late one (rewind_iter, default 2000 for ResNet and 1000 for VGG) runs
every strategy; R = 0 (the original lottery-ticket reset) runs `rewind_zero_strategies`.
Each (seed, rewind point) is one IMP run folder ROOT/imp_<hash>.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

from lthfast import analysis
from lthfast.config import TrainConfig
from lthfast.errors import Interrupted, LthError
from lthfast.imp import CHAINS, DEFAULT_REWIND_ITER, STRATEGIES, ImpConfig, ImpRun, check_strategy
from lthfast.models import parse_model_name
from lthfast.storage import atomic_write_json, read_json

STUDY_STRATEGIES = ("imp", "oneshot", "finetune", "reinit", "random-prune", "prune-large")


@dataclass
class StudyConfig:
    """Every value of a study; a preset fills them, any flag overrides one."""
    model: str = "resnet20"
    width: int | None = None
    data: str = "cifar10"
    data_dir: str | None = None
    train_subset: int | None = None  # class-balanced training subset (None: all 50,000)
    seeds: tuple = (0, 1, 2)
    epochs: int = 160
    batch_size: int = 128
    lr: float = 0.1
    milestones: tuple | None = (80, 120)
    levels: int = 16  # 0.8^16 = 2.8% density
    prune_fraction: float = 0.2
    rewind_iter: int | None = None  # the late rewind point (None: 2000 for ResNet, 1000 for VGG)
    rewind_zero: bool = True  # also the R = 0 study
    strategies: tuple = STUDY_STRATEGIES
    rewind_zero_strategies: tuple = ("imp",)
    eval_train_images: int = 10_000  # fixed training sample of every stored train loss
    eval_test_images: int | None = None
    bn_batches: int = 40
    curve_points: int = 21
    curve_train_images: int = 10_000
    curve_test_images: int | None = None
    volume_directions: int = 64
    volume_train_images: int = 10_000
    volume_bisections: int = 10
    volume_delta: float = 0.1
    sharpness_images: int = 4096
    sharpness_iterations: int = 100
    sharpness_trace_samples: int = 50
    geometry_seeds: tuple | None = None  # seeds whose IMP levels get volume and sharpness (None: all)
    sharpness_levels: tuple | None = None  # IMP levels with sharpness, -1 the last (None: all; the costliest analysis)
    eps_margin: float = 0.1
    device: str = "auto"
    backend: str = "auto"

    def __post_init__(self):
        parse_model_name(self.model, self.width)
        if self.sharpness_levels is not None and not all(-self.levels - 1 <= k <= self.levels
                                                         for k in self.sharpness_levels):
            raise LthError(f"--sharpness-levels must lie in 0..{self.levels} (or -1 for the last), "
                           f"got {self.sharpness_levels}")
        if not self.seeds:
            raise LthError("--seeds must name at least one seed")
        for s in self.strategies + self.rewind_zero_strategies:
            check_strategy(s)
        if "imp" not in self.strategies:
            raise LthError("--strategies must include imp: every other strategy is compared with it")
        if isinstance(self.levels, bool) or not isinstance(self.levels, int) or self.levels < 1:
            raise LthError(f"--levels must be an integer >= 1, got {self.levels!r}")
        if self.rewind_iter is None:
            self.rewind_iter = DEFAULT_REWIND_ITER[parse_model_name(self.model, self.width)[0]]
        # Settings are checked where they are used; build them once here so a bad value fails now.
        self.curve_settings(), self.volume_settings(), self.sharpness_settings()
        for seed in self.seeds:
            for rewind in self.rewinds():
                self.imp_config(seed, rewind)

    def rewinds(self) -> list[int]:
        return [self.rewind_iter] + ([0] if self.rewind_zero and self.rewind_iter != 0 else [])

    def strategies_at(self, rewind: int) -> tuple:
        return self.strategies if rewind == self.rewind_iter else self.rewind_zero_strategies

    def imp_config(self, seed: int, rewind: int) -> ImpConfig:
        train = TrainConfig(model=self.model, width=self.width, data=self.data, data_dir=self.data_dir,
                            train_subset=self.train_subset, epochs=self.epochs, batch_size=self.batch_size,
                            lr=self.lr, milestones=self.milestones, seed=seed, rewind_iter=rewind,
                            eval_every=self.epochs, device=self.device, backend=self.backend)
        return ImpConfig(train=train, prune_fraction=self.prune_fraction, eval_train_images=self.eval_train_images,
                         eval_test_images=self.eval_test_images, bn_batches=self.bn_batches)

    def curve_settings(self) -> analysis.CurveSettings:
        return analysis.CurveSettings(points=self.curve_points, bn_batches=self.bn_batches,
                                      train_images=self.curve_train_images, test_images=self.curve_test_images)

    def volume_settings(self) -> analysis.VolumeSettings:
        return analysis.VolumeSettings(directions=self.volume_directions, delta=self.volume_delta,
                                       train_images=self.volume_train_images, bisections=self.volume_bisections)

    def sharpness_settings(self) -> analysis.SharpnessSettings:
        return analysis.SharpnessSettings(images=self.sharpness_images, iterations=self.sharpness_iterations,
                                          trace_samples=self.sharpness_trace_samples)

    def to_dict(self) -> dict:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "StudyConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known})


PRESETS = {
    # STUDY.md's recipe: 160 epochs, levels to 2.8% density, 3 seeds. Meant for a GPU.
    "paper-resnet20": dict(model="resnet20"),
    "paper-vgg16": dict(model="vgg16"),
    # A 2-core CPU in under an hour: ResNet-20 on a 5,000-image class-balanced subset, 4 epochs,
    # 3 levels (density 0.51), one seed (noise from the evaluations' sample sizes), sharpness (a
    # Hessian-vector product over 4,096 images costs about a minute here) at the first and last level.
    "cpu": dict(model="resnet20", train_subset=5000, epochs=4, milestones=(3,), levels=3, seeds=(0,),
                rewind_iter=40, eval_train_images=1000, eval_test_images=2000, bn_batches=8,
                curve_points=9, curve_train_images=1000, curve_test_images=1000,
                volume_directions=8, volume_train_images=500, volume_bisections=6,
                sharpness_images=4096, sharpness_iterations=3, sharpness_trace_samples=2, sharpness_levels=(0, -1)),
    # Synthetic data and a tiny ResNet: every job of the study in minutes, for tests.
    "smoke": dict(model="resnet8", width=8, data="synthetic", train_subset=128, epochs=2, batch_size=32,
                  milestones=(1,), levels=2, seeds=(0, 1), rewind_iter=2, eval_train_images=128,
                  eval_test_images=128, bn_batches=2, curve_points=3, curve_train_images=64, curve_test_images=64,
                  volume_directions=2, volume_train_images=64, volume_bisections=2, sharpness_images=64,
                  sharpness_iterations=2, sharpness_trace_samples=2),
}


def preset_config(name: str, **overrides) -> StudyConfig:
    if name not in PRESETS:
        raise LthError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return StudyConfig(**{**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}})


# ----------------------------------------------------------------------------- jobs

@dataclass
class Job:
    key: str  # unique, readable: "seed0/R40/train imp:2"
    kind: str  # train or an analysis name
    deps: list[str]
    cost: float  # estimated seconds (calibrated on the device)
    done: Callable[[], bool]
    run: Callable[[], object]


@dataclass
class Calibration:
    """Measured seconds per training step, per evaluated image and per Hessian-vector
    product image, on the study's device with its model: the plan's cost estimates."""
    train_step: float
    eval_image: float
    hvp_image: float

    @classmethod
    def measure(cls, config: StudyConfig) -> "Calibration":
        import torch

        from lthfast.trainer import build_model, resolve_device, use_channels_last

        device = resolve_device(config.device)
        train = config.imp_config(config.seeds[0], config.rewind_iter).train
        model = build_model(train, device)
        x = torch.randn(config.batch_size, 3, 32, 32, device=device)
        if use_channels_last(train, device):
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (config.batch_size,), device=device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

        def step():
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()

        def forward():
            with torch.no_grad():
                model(x)

        def hvp():
            params = [p for p in model.parameters() if p.dim() > 1]
            grads = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), y), params, create_graph=True)
            torch.autograd.grad(sum((g * g.detach()).sum() for g in grads), params)

        return cls(_median_seconds(step, device), _median_seconds(forward, device) / config.batch_size,
                   _median_seconds(hvp, device) / config.batch_size)


def _median_seconds(fn, device, repeats: int = 5) -> float:
    import torch

    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


class Study:
    """The jobs of one StudyConfig under one root."""

    def __init__(self, config: StudyConfig, root: Path | str, calibration: Calibration | None = None,
                 progress: bool | None = False):
        self.config = config
        self.root = Path(root).expanduser()
        self.calibration = calibration
        self.progress = progress

    # --------------------------------------------------------------- data and runs
    @property
    def data(self):
        if not hasattr(self, "_data"):
            from lthfast.data import load_dataset

            c = self.config
            self._data = load_dataset(c.data, c.data_dir, c.train_subset, 0)
        return self._data

    def imp_run(self, seed: int, rewind: int) -> ImpRun:
        return ImpRun(self.config.imp_config(seed, rewind), self.root, self.data, progress=self.progress)

    def run_folder(self, seed: int, rewind: int) -> Path:
        return self.root / f"imp_{self.config.imp_config(seed, rewind).run_hash()}"

    def analysis_run(self, seed: int, rewind: int) -> analysis.Run:
        run = analysis.Run(self.run_folder(seed, rewind), device=self.config.device)
        run.__dict__["data"] = self.data  # the study's copy: loaded once
        return run

    # --------------------------------------------------------------- plan
    def plan(self) -> list[Job]:
        """Every job, each after the jobs it depends on; a run's analyses follow its trainings."""
        c = self.config
        jobs: list[Job] = []
        for seed in c.seeds:
            for rewind in c.rewinds():
                jobs += self._training_jobs(seed, rewind)
                jobs += self._analysis_jobs(seed, rewind)
        return _dependency_order(jobs)

    def _prefix(self, seed, rewind) -> str:
        return f"seed{seed}/R{rewind}"

    def _training_jobs(self, seed: int, rewind: int) -> list[Job]:
        c, cal = self.config, self.calibration
        prefix = self._prefix(seed, rewind)
        folder = self.run_folder(seed, rewind)
        steps_per_epoch = math.ceil((c.train_subset or 50_000) / c.batch_size)
        total_steps = c.epochs * steps_per_epoch
        # Each level also evaluates its baseline twice (stored and recomputed BN) and its solution.
        level_evals = 2 * (c.eval_train_images + (c.eval_test_images or 10_000)) + c.bn_batches * c.batch_size \
            + c.eval_train_images + (c.eval_test_images or 10_000)

        def cost(steps):
            return steps * cal.train_step + level_evals * cal.eval_image if cal else 0.0

        def done(strategy, level):
            return lambda: (folder / ("level_00" if level == 0 else f"{strategy}/level_{level:02d}") / "level.json").exists()

        jobs = [Job(f"{prefix}/train imp:0", "train", [], cost(total_steps), done("imp", 0),
                    lambda: self.imp_run(seed, rewind).dense())]
        for strategy in c.strategies_at(rewind):
            for level in range(1, c.levels + 1):
                source = strategy if strategy in CHAINS else "imp"
                parent = 0 if strategy == "oneshot" or level == 1 else level - 1
                deps = [f"{prefix}/train {source if parent else 'imp'}:{parent}"]
                if strategy in ("finetune", "reinit", "finetune-chain"):
                    steps = total_steps  # from iteration 0
                else:
                    steps = total_steps - rewind
                jobs.append(Job(f"{prefix}/train {strategy}:{level}", "train", deps, cost(steps),
                                done(strategy, level),
                                lambda s=strategy, k=level: self.imp_run(seed, rewind).level(s, k)))
        return jobs

    def _analysis_jobs(self, seed: int, rewind: int) -> list[Job]:
        c, cal = self.config, self.calibration
        curve, volume, sharp = c.curve_settings(), c.volume_settings(), c.sharpness_settings()
        image = cal.eval_image if cal else 0.0
        costs = {"interpolate": curve.points * (curve.train_images + (curve.test_images or 10_000)
                                                + curve.bn_batches * c.batch_size) * image,
                 "volume": volume.directions * volume.train_images * (4 + volume.bisections) * image,
                 "sharpness": (sharp.iterations + sharp.trace_samples) * sharp.images * (cal.hvp_image if cal else 0),
                 "distance": 0.5}
        costs["prune-path"] = costs["interpolate"]
        prefix = self._prefix(seed, rewind)
        trained = lambda s, k: f"{prefix}/train {'imp' if k == 0 else s}:{k}"  # noqa: E731
        job = lambda what, specs, deps: self._analysis_job(seed, rewind, what, specs, deps, costs[what])  # noqa: E731
        jobs = []
        for k in range(1, c.levels + 1):
            pair = [trained("imp", k - 1), trained("imp", k)]
            jobs.append(job("interpolate", (f"imp:{k - 1}", f"imp:{k}"), pair))
            jobs.append(job("distance", (f"imp:{k - 1}", f"imp:{k}"), pair))
            if rewind != c.rewind_iter:
                continue  # R = 0 adds the successive barriers, where STUDY.md expects the rewind points to differ
            jobs.append(job("prune-path", (f"imp:{k - 1}", f"imp:{k}:baseline"), pair))
            # Where rewinding and fine-tuning go from the same baseline b_k (findings 4 and 7).
            for strategy in ["imp"] + (["finetune"] if "finetune" in c.strategies_at(rewind) else []):
                deps = sorted({trained("imp", k), trained(strategy, k)})
                jobs.append(job("interpolate", (f"imp:{k}:baseline", f"{strategy}:{k}"), deps))
                jobs.append(job("distance", (f"imp:{k}:baseline", f"{strategy}:{k}"), deps))
        geometry_seeds = c.geometry_seeds if c.geometry_seeds is not None else c.seeds
        if seed in geometry_seeds and rewind == c.rewind_iter:
            for k in range(c.levels + 1):
                jobs.append(job("volume", (f"imp:{k}",), [trained("imp", k)]))
                if c.sharpness_levels is None or k in {j % (c.levels + 1) for j in c.sharpness_levels}:
                    jobs.append(job("sharpness", (f"imp:{k}",), [trained("imp", k)]))
        trainings = [j.key for j in self._training_jobs(seed, rewind)]
        folder = self.run_folder(seed, rewind)

        def sublevel_done():
            if not (folder / "config.json").exists():
                return False
            run = analysis.Run(folder)
            return analysis.result_path(folder, "sublevel", "run",
                                        analysis.sublevel_settings(run, None, c.eps_margin)).exists()

        jobs.append(Job(f"{prefix}/sublevel", "sublevel", trainings, 1.0, sublevel_done,
                        lambda: analysis.sublevel(self.analysis_run(seed, rewind), eps_margin=c.eps_margin)))
        return jobs

    def analysis_settings(self, what: str):
        c = self.config
        return {"interpolate": c.curve_settings(), "prune-path": c.curve_settings(), "volume": c.volume_settings(),
                "sharpness": c.sharpness_settings(), "distance": None}[what]

    def result_path(self, seed: int, rewind: int, what: str, specs) -> Path:
        """Where the analysis `what` of the named solutions is (or will be) stored."""
        settings = self.analysis_settings(what)
        name = "__".join(spec.replace(":", "-") for spec in specs)  # Solution.slug of a named solution
        return analysis.result_path(self.run_folder(seed, rewind), what, name,
                                    dataclasses.asdict(settings) if settings else {})

    def _analysis_job(self, seed, rewind, what, specs, deps, cost) -> Job:
        """One cached analysis of the solutions `specs` ("imp:2", "imp:2:baseline") of a run."""
        c = self.config
        settings = self.analysis_settings(what)
        path = self.result_path(seed, rewind, what, specs)
        compute_with = analysis.Compute(backend=c.backend)

        def compute():
            run = self.analysis_run(seed, rewind)
            solutions = [run.solution(spec) for spec in specs]
            if what in ("interpolate", "prune-path"):
                return analysis.interpolation(run, *solutions, settings, compute_with, what=what)
            if what == "distance":
                return analysis.distance(run, *solutions)
            if what == "volume":
                return analysis.volume(run, solutions[0], settings, compute_with)
            return analysis.sharpness(run, solutions[0], settings)

        return Job(f"{self._prefix(seed, rewind)}/{what} {' -> '.join(specs)}", what, deps, cost,
                   path.exists, compute)

    # --------------------------------------------------------------- run
    def save_config(self) -> None:
        atomic_write_json(self.config.to_dict(), self.root / "study.json")

    def execute(self, jobs: list[Job], out=sys.stderr) -> None:
        """Run the jobs not done yet, in the plan's (dependency) order, with a progress line per job."""
        pending = [j for j in jobs if not j.done()]
        done_before = len(jobs) - len(pending)
        print(f"study: {len(jobs)} jobs, {done_before} already stored, {len(pending)} to run "
              f"(estimated {_duration(sum(j.cost for j in pending))})", file=out, flush=True)
        spent, estimated_done = 0.0, 0.0
        with _stop_between_jobs() as stop:
            for i, job in enumerate(pending, start=1):
                start = time.perf_counter()
                job.run()
                seconds = time.perf_counter() - start
                spent += seconds
                estimated_done += job.cost
                left = sum(j.cost for j in pending[i:])
                pace = spent / estimated_done if estimated_done > 0 else 1.0  # measured / estimated so far
                print(f"[{done_before + i}/{len(jobs)}] {job.key}: {seconds:.1f} s; {len(pending) - i} left, "
                      f"about {_duration(left * pace)} to go", file=out, flush=True)
                if stop.signal is not None:
                    raise Interrupted(f"stopped after {job.key}; run the same command to continue")


@contextlib.contextmanager
def _stop_between_jobs():
    """SIGINT/SIGTERM outside a training (whose own handler saves a checkpoint first) stop the
    study after the running job, so no signal is lost between jobs and nothing is half-done."""
    from lthfast.trainer import _StopRequest

    stop = _StopRequest()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _dependency_order(jobs: list[Job]) -> list[Job]:
    """A stable topological order: each job after its dependencies, otherwise as planned."""
    by_key = {j.key: j for j in jobs}
    ordered, placed = [], set()

    def place(job, path=()):
        if job.key in placed:
            return
        if job.key in path:
            raise RuntimeError(f"dependency cycle through {job.key}")
        for dep in job.deps:
            place(by_key[dep], path + (job.key,))
        placed.add(job.key)
        ordered.append(job)

    for job in jobs:
        place(job)
    return ordered


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def dry_run_text(study: Study, jobs: list[Job]) -> str:
    """The plan: one line per job with its dependencies' count and estimated cost, and totals."""
    lines = []
    for job in jobs:
        state = "stored" if job.done() else "to run"
        lines.append(f"{job.key:60s} {state:7s} ~{_duration(job.cost):>12s}")
    pending = [j for j in jobs if not j.done()]
    kinds = {}
    for job in pending:
        count, cost = kinds.get(job.kind, (0, 0.0))
        kinds[job.kind] = (count + 1, cost + job.cost)
    cal = study.calibration
    lines.append("")
    lines.append(f"{len(jobs)} jobs, {len(pending)} to run, estimated {_duration(sum(j.cost for j in pending))} "
                 f"on this device")
    lines += [f"  {kind:12s} {count:5d} jobs  ~{_duration(cost)}" for kind, (count, cost) in kinds.items()]
    if cal:
        lines.append(f"(calibration on this device: {cal.train_step * 1e3:.1f} ms per training step, "
                     f"{cal.eval_image * 1e6:.0f} us per evaluated image, {cal.hvp_image * 1e6:.0f} us per "
                     "Hessian-vector-product image)")
    return "\n".join(lines)


def load_study_config(root: Path) -> StudyConfig:
    path = Path(root).expanduser() / "study.json"
    if not path.exists():
        raise LthError(f"no study under {root} (no study.json); run `python -m lthfast study` first")
    return StudyConfig.from_dict(read_json(path))
