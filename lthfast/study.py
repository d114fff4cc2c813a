"""The whole study of STUDY.md as a graph of jobs: the trainings of every strategy, level,
seed and rewind point (lthfast.study_config), then the analyses of their solutions, run in
dependency order.

Every job's output lives in the run store (level folders, analysis JSON files), so a job
whose output exists is skipped: stopping the study at any moment and starting it again
finishes the same study, and a second study in the same root reuses what it shares.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lthfast import analysis, geometry, store, strategies, sublevel
from lthfast.data import load_dataset
from lthfast.imp import ImpRun, train_together
from lthfast.calibration import Calibration
from lthfast.storage import atomic_write_json
from lthfast.study_config import StudyConfig


@dataclass
class Job:
    key: str  # unique in the study, readable: "seed0/R40/train imp:2"
    kind: str  # train or an analysis name
    deps: list[str]
    cost: float  # estimated seconds of one network alone (calibrated on the device)
    done: Callable[[], bool]
    run: Callable[[], object]  # an analysis; trainings run in stacks (Study.run_batch)
    claim: str = ""  # unique in the root: the run folder and what the job makes (lthfast.claims)
    seed: int = 0
    rewind: int = 0
    strategy: str | None = None  # trainings: what they train
    level: int | None = None
    steps: int = 0  # trainings: steps of the schedule they run


class Study:
    """The jobs of one StudyConfig under one root."""

    def __init__(self, config: StudyConfig, root: Path | str, calibration: Calibration | None = None,
                 progress: bool | None = False):
        self.config = config
        self.store = store.Store(root)
        self.root = self.store.root
        self.calibration = calibration
        self.progress = progress
        self.stack, self.stack_mode = 1, "auto"  # trainings a stack, and how (lthfast.executors sets them)
        self._imp_runs = {}

    # --------------------------------------------------------------- data and runs
    @property
    def data(self):
        if not hasattr(self, "_data"):
            c = self.config
            self._data = load_dataset(c.data, c.data_dir, c.train_subset, 0)
        return self._data

    def imp_run(self, seed: int, rewind: int) -> ImpRun:
        if (seed, rewind) not in self._imp_runs:
            late = self.config.imp_config(seed, self.config.rewind_iter) if rewind != self.config.rewind_iter else None
            self._imp_runs[seed, rewind] = ImpRun(self.config.imp_config(seed, rewind), self.root, self.data,
                                                  progress=self.progress, dense_from=late)
        return self._imp_runs[seed, rewind]

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

        def train(strategy, level, deps, steps):
            job = Job(f"{prefix}/train {strategy}:{level}", "train", deps, cost(steps), done(strategy, level),
                      lambda: None, f"{run.folder.name}/{strategy}/{level}", seed, rewind, strategy, level, steps)
            job.run = lambda: self.run_batch([job])
            return job

        if rewind == 0 and c.rewind_iter != 0:
            # R = 0 takes the late run's dense network (ImpRun.share_dense): a job of its own, not a
            # member of a stack, so that no stack's make-up depends on when it finished.
            jobs = [Job(f"{prefix}/train imp:0", "share", [f"{self._prefix(seed, c.rewind_iter)}/train imp:0"],
                        cost(0), done("imp", 0), lambda: self.imp_run(seed, rewind).dense(),
                        f"{run.folder.name}/imp/0", seed, rewind, "imp", 0)]
        else:
            jobs = [train("imp", 0, [], total_steps)]
        for name in c.strategies_at(rewind):
            entry = strategies.get(name)
            for level in range(1, c.levels + 1):
                parent, k = entry.parent_of(level)
                jobs.append(train(name, level, [f"{prefix}/train {parent}:{k}"],
                                  total_steps - entry.start_iteration(rewind)))
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
        # Matching (and so eps) uses every seed's dense network: the table waits for all of them.
        trainings = [j.key for j in self._training_jobs(seed, rewind)] + \
            [f"{self._prefix(s, rewind)}/train imp:0" for s in c.seeds if s != seed]

        def sublevel_done():
            run = store.Run(self.run_folder(seed, rewind), c.imp_config(seed, rewind))
            return run.result_path("sublevel", ["run"], sublevel.settings_of(run, None, c.eps_margin)).exists()

        jobs.append(Job(f"{prefix}/sublevel", "sublevel", trainings, 1.0, sublevel_done,
                        lambda: sublevel.table(self.analysis_run(seed, rewind), eps_margin=c.eps_margin),
                        f"{self.run_folder(seed, rewind).name}/sublevel", seed, rewind))
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
                   compute, f"{stored.folder.name}/{path.stem}", seed, rewind)

    # --------------------------------------------------------------- run
    def save_config(self) -> None:
        atomic_write_json(self.config.to_dict(), self.store.study_config)

    def run_batch(self, jobs: list[Job]) -> None:
        """Run a batch: trainings together in stacks of at most self.stack (their parents
        finished), or analyses one after another."""
        trainings = [j for j in jobs if j.kind == "train"]
        if trainings:
            train_together([(self.imp_run(j.seed, j.rewind), j.strategy, j.level, None) for j in trainings],
                           self.stack, self.stack_mode)
        for job in jobs:
            if job.kind != "train":
                job.run()


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
