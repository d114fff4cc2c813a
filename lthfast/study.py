"""The whole study of STUDY.md as a graph of jobs: the trainings of every strategy, level,
seed and rewind point (lthfast.study_config), then the analyses of their solutions, run in
dependency order.

Every job's output lives in the run store (level folders, analysis JSON files), so a job
whose output exists is skipped: stopping the study at any moment and starting it again
finishes the same study, and a second study in the same root reuses what it shares.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lthfast import analysis, claims, geometry, signals, store, strategies, sublevel
from lthfast.data import load_dataset
from lthfast.errors import Interrupted
from lthfast.imp import ImpRun
from lthfast.storage import atomic_write_json
from lthfast.calibration import Calibration
from lthfast.study_config import StudyConfig


@dataclass
class Job:
    key: str  # unique, readable: "seed0/R40/train imp:2"
    kind: str  # train or an analysis name
    deps: list[str]
    cost: float  # estimated seconds (calibrated on the device)
    done: Callable[[], bool]
    run: Callable[[], object]


class Study:
    """The jobs of one StudyConfig under one root."""

    def __init__(self, config: StudyConfig, root: Path | str, calibration: Calibration | None = None,
                 progress: bool | None = False):
        self.config = config
        self.store = store.Store(root)
        self.root = self.store.root
        self.calibration = calibration
        self.progress = progress

    # --------------------------------------------------------------- data and runs
    @property
    def data(self):
        if not hasattr(self, "_data"):
            c = self.config
            self._data = load_dataset(c.data, c.data_dir, c.train_subset, 0)
        return self._data

    def imp_run(self, seed: int, rewind: int) -> ImpRun:
        return ImpRun(self.config.imp_config(seed, rewind), self.root, self.data, progress=self.progress)

    def run_folder(self, seed: int, rewind: int) -> Path:
        return self.store.run_folder(self.config.imp_config(seed, rewind))

    def analysis_run(self, seed: int, rewind: int) -> analysis.Run:
        return analysis.Run(self.run_folder(seed, rewind), device=self.config.device, data=self.data)

    # --------------------------------------------------------------- plan
    def plan(self) -> list[Job]:
        """Every job, each after the jobs it depends on; a run's analyses follow its trainings."""
        jobs: list[Job] = []
        for seed in self.config.seeds:
            for rewind in self.config.rewinds():
                jobs += self._training_jobs(seed, rewind)
                jobs += self._analysis_jobs(seed, rewind)
        return _dependency_order(jobs)

    def _prefix(self, seed, rewind) -> str:
        return f"seed{seed}/R{rewind}"

    def _training_jobs(self, seed: int, rewind: int) -> list[Job]:
        c, cal = self.config, self.calibration
        prefix = self._prefix(seed, rewind)
        run = store.Run(self.run_folder(seed, rewind), c.imp_config(seed, rewind))
        total_steps = c.epochs * math.ceil((c.train_subset or 50_000) / c.batch_size)
        # Each level also evaluates its baseline twice (stored and recomputed BN) and its solution.
        level_evals = 2 * (c.eval_train_images + (c.eval_test_images or 10_000)) + c.bn_batches * c.batch_size \
            + c.eval_train_images + (c.eval_test_images or 10_000)

        def cost(steps):
            return steps * cal.train_step + level_evals * cal.eval_image if cal else 0.0

        def done(strategy, level):
            return run.level(strategy, level).finished

        jobs = [Job(f"{prefix}/train imp:0", "train", [], cost(total_steps), done("imp", 0),
                    lambda: self.imp_run(seed, rewind).dense())]
        for name in c.strategies_at(rewind):
            entry = strategies.get(name)
            for level in range(1, c.levels + 1):
                parent, k = entry.parent_of(level)
                jobs.append(Job(f"{prefix}/train {name}:{level}", "train", [f"{prefix}/train {parent}:{k}"],
                                cost(total_steps - entry.start_iteration(rewind)), done(name, level),
                                lambda s=name, k=level: self.imp_run(seed, rewind).level(s, k)))
        return jobs

    def _analysis_jobs(self, seed: int, rewind: int) -> list[Job]:
        c, cal = self.config, self.calibration
        curve, volume, sharp = c.curve_settings(), c.volume_settings(), c.sharpness_settings()
        image = cal.eval_image if cal else 0.0
        costs = {"interpolate": curve.points * (curve.train_images + (curve.test_images or 10_000)
                                                + curve.bn_batches * c.batch_size) * image,
                 "volume": volume.directions * volume.train_images * (4 + volume.bisections) * image,
                 "sharpness": (sharp.products + sharp.trace_samples) * sharp.images * (cal.hvp_image if cal else 0),
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

        def sublevel_done():
            run = store.Run(self.run_folder(seed, rewind), c.imp_config(seed, rewind))
            return run.result_path("sublevel", ["run"], sublevel.settings_of(run, None, c.eps_margin)).exists()

        jobs.append(Job(f"{prefix}/sublevel", "sublevel", trainings, 1.0, sublevel_done,
                        lambda: sublevel.table(self.analysis_run(seed, rewind), eps_margin=c.eps_margin)))
        return jobs

    def _analysis_job(self, seed, rewind, what, specs, deps, cost) -> Job:
        """One cached analysis of the solutions `specs` ("imp:2", "imp:2:baseline") of a run."""
        c = self.config
        stored = store.Run(self.run_folder(seed, rewind), c.imp_config(seed, rewind))
        path = stored.result_path(what, list(specs), c.analysis_settings(what))
        compute_with = analysis.Compute(backend=c.backend)

        def compute():
            run = self.analysis_run(seed, rewind)
            solutions = [run.solution(spec) for spec in specs]
            if what in ("interpolate", "prune-path"):
                return analysis.interpolation(run, *solutions, c.curve_settings(), compute_with, what=what)
            if what == "distance":
                return analysis.distance(run, *solutions)
            if what == "volume":
                return geometry.volume(run, solutions[0], c.volume_settings(), compute_with)
            return geometry.sharpness(run, solutions[0], c.sharpness_settings())

        return Job(f"{self._prefix(seed, rewind)}/{what} {' -> '.join(specs)}", what, deps, cost, path.exists,
                   compute)

    # --------------------------------------------------------------- run
    def save_config(self) -> None:
        atomic_write_json(self.config.to_dict(), self.store.study_config)

    def execute(self, jobs: list[Job], out=sys.stderr) -> None:
        """Run the jobs not done yet, in the plan's (dependency) order, with a progress line per job.
        A signal stops the study after the running job (a training saves its checkpoint first)."""
        with signals.deferred(), claims.working(self.root, f"study ({len(jobs)} jobs)"):
            pending = [j for j in jobs if not j.done()]
            done_before = len(jobs) - len(pending)
            print(f"study: {len(jobs)} jobs, {done_before} already stored, {len(pending)} to run "
                  f"(estimated {duration(sum(j.cost for j in pending))})", file=out, flush=True)
            spent, estimated_done = 0.0, 0.0
            for i, job in enumerate(pending, start=1):
                if signals.stop_requested():
                    raise Interrupted(f"stopped before {job.key} ({signals.stop_requested()}); "
                                      "run the same command to continue")
                start = time.perf_counter()
                job.run()
                seconds = time.perf_counter() - start
                spent += seconds
                estimated_done += job.cost
                left = sum(j.cost for j in pending[i:])
                pace = spent / estimated_done if estimated_done > 0 else 1.0  # measured / estimated so far
                print(f"[{done_before + i}/{len(jobs)}] {job.key}: {seconds:.1f} s; {len(pending) - i} left, "
                      f"about {duration(left * pace)} to go", file=out, flush=True)
            if signals.stop_requested():
                raise Interrupted(f"stopped after the last job ({signals.stop_requested()}); "
                                  "run the same command to write the report")


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


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def dry_run_text(study: Study, jobs: list[Job]) -> str:
    """The plan: one line per job with its state and estimated cost, and totals per kind."""
    lines = []
    for job in jobs:
        state = "stored" if job.done() else "to run"
        lines.append(f"{job.key:60s} {state:7s} ~{duration(job.cost):>12s}")
    pending = [j for j in jobs if not j.done()]
    kinds = {}
    for job in pending:
        count, cost = kinds.get(job.kind, (0, 0.0))
        kinds[job.kind] = (count + 1, cost + job.cost)
    cal = study.calibration
    lines.append("")
    lines.append(f"{len(jobs)} jobs, {len(pending)} to run, estimated {duration(sum(j.cost for j in pending))} "
                 f"on this device")
    lines += [f"  {kind:12s} {count:5d} jobs  ~{duration(cost)}" for kind, (count, cost) in kinds.items()]
    if cal:
        lines.append(f"(calibration on {cal.device}, {cal.measured}: {cal.train_step * 1e3:.1f} ms per training step "
                     f"(spread {cal.spread['train_step']:.0%}), {cal.eval_image * 1e6:.0f} us per evaluated image "
                     f"({cal.spread['eval']:.0%}), {cal.hvp_image * 1e6:.0f} us per Hessian-vector-product image "
                     f"({cal.spread['hvp']:.0%}){'; MEASURED WHILE BUSY' if cal.busy else ''})")
    return "\n".join(lines)
