"""The whole study of docs/protocol.md as a graph of jobs: the trainings of every strategy, level,
seed and rewind point (lthfast.config.study), then the analyses of their solutions, run in
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

from lthfast.config.study import StudyConfig
from lthfast.data.loading import load_dataset
from lthfast.foundations.files import atomic_write_json
from lthfast.imp.driver import ImpRun, train_together
from lthfast.landscape import curves, registry, sublevel
from lthfast.landscape.runs import AnalysisRun
from lthfast.pruning import strategies
from lthfast.store import layout as store
from lthfast.store.layout import COPIES
from lthfast.store.level import readable
from lthfast.study.calibration import Calibration

# A plan without a calibration (tests, a dry run that measures nothing) costs nothing but the
# fixed costs an analysis states.
NO_CALIBRATION = Calibration(train_step=0.0, eval_image=0.0, hvp_image=0.0, spread={}, device="", busy=False,
                             measured="")


@dataclass
class Job:
    key: str  # unique in the study, readable: "seed0/R40/train imp:2"
    kind: str  # train or an analysis name
    deps: list[str]
    cost: float  # estimated seconds of one network alone (calibrated on the device)
    done: Callable[[], bool]
    run: Callable[[], object]  # an analysis; trainings run in stacks (Study.run_batch)
    claim: str = ""  # unique in the root: the run folder and what the job makes (lthfast.store.claims)
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
        self._imp_runs = {}

    # --------------------------------------------------------------- data and runs
    @property
    def data(self):
        if not hasattr(self, "_data"):
            c = self.config
            self._data = load_dataset(c.train.data, c.train.data_dir, c.train.train_subset, 0)
        return self._data

    def imp_run(self, seed: int, rewind: int) -> ImpRun:
        if (seed, rewind) not in self._imp_runs:
            late = self.config.imp_config(seed, self.config.rewind_iter) if rewind != self.config.rewind_iter else None
            self._imp_runs[seed, rewind] = ImpRun(self.config.imp_config(seed, rewind), self.root, self.data,
                                                  progress=self.progress, dense_from=late)
        return self._imp_runs[seed, rewind]

    def run_folder(self, seed: int, rewind: int) -> Path:
        return self.store.run_folder(self.config.imp_config(seed, rewind))

    def analysis_run(self, seed: int, rewind: int) -> AnalysisRun:
        return AnalysisRun(self.run_folder(seed, rewind), device=self.config.train.device, data=self.data)

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
        c, cal = self.config, self.calibration or NO_CALIBRATION
        prefix = self._prefix(seed, rewind)
        run = store.Run(self.run_folder(seed, rewind), c.imp_config(seed, rewind))
        t = c.train
        total_steps = t.epochs * math.ceil((t.train_subset or 50_000) / t.batch_size)
        # Each level also evaluates its baseline twice (stored and recomputed BN) and its solution.
        i = c.imp
        level_evals = 3 * (i.eval_train_images + (i.eval_test_images or 10_000))

        def cost(steps):
            return cal.level_seconds + steps * cal.train_step + level_evals * cal.eval_image \
                + i.bn_batches * t.batch_size * cal.bn_image

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
                        cal.level_seconds + i.eval_train_images * cal.eval_image,  # files copied, train loss
                        done("imp", 0), lambda: self.imp_run(seed, rewind).dense(),
                        f"{run.folder.name}/imp/0", seed, rewind, "imp", 0)]
        else:
            jobs = [train("imp", 0, [], total_steps)]
        for name in c.strategies_at(rewind):
            entry = strategies.get(name)
            for level in range(1, c.levels + 1):
                parent, k = entry.parent_of(level)
                jobs.append(train(name, level, [f"{prefix}/train {parent}:{k}"],
                                  total_steps - entry.start_iteration(rewind)))
        for level in c.instability_at():  # each pair's second copy starts where imp:level does
            steps = total_steps - rewind
            job = Job(f"{prefix}/train {COPIES}:{level}", "train", [f"{prefix}/train imp:{level}"],
                      steps * cal.train_step, run.copy(level).trained, lambda: None,
                      f"{run.folder.name}/{COPIES}/{level}", seed, rewind, COPIES, level, steps)
            job.run = lambda job=job: self.run_batch([job])
            jobs.append(job)
        return jobs

    def _analysis_jobs(self, seed: int, rewind: int) -> list[Job]:
        c = self.config
        prefix = self._prefix(seed, rewind)
        jobs = []
        for target, specs, level in registry.targets(c, seed, rewind):
            jobs += [self._analysis_job(seed, rewind, entry, specs) for entry in registry.planned(c, target, level)]
        # Matching (and so eps) uses every seed's dense network: the table waits for all of them.
        trainings = [j.key for j in self._training_jobs(seed, rewind)] + \
            [f"{self._prefix(s, rewind)}/train imp:0" for s in c.seeds if s != seed]

        def sublevel_done():
            run = store.Run(self.run_folder(seed, rewind), c.imp_config(seed, rewind))
            return readable(run.result_path("sublevel", ["run"], sublevel.settings_of(run, None, c.eps_margin)),
                            store.whole_result)

        jobs.append(Job(f"{prefix}/sublevel", "sublevel", trainings, registry.JOB_SECONDS, sublevel_done,
                        lambda: sublevel.table(self.analysis_run(seed, rewind), eps_margin=c.eps_margin),
                        f"{self.run_folder(seed, rewind).name}/sublevel", seed, rewind))
        return jobs

    def _analysis_job(self, seed, rewind, entry: registry.Analysis, specs: tuple) -> Job:
        """One cached analysis of the solutions `specs` ("imp:2", "imp:2:baseline") of a run;
        it waits for the trainings that wrote them (a baseline b_k is written by level k's)."""
        c, prefix = self.config, self._prefix(seed, rewind)
        stored = store.Run(self.run_folder(seed, rewind), c.imp_config(seed, rewind))
        path = stored.result_path(entry.name, list(specs), entry.stored_settings(c))
        deps = sorted({f"{prefix}/train {'imp' if int(k) == 0 and s != COPIES else s}:{k}"
                       for s, k, *_ in (spec.split(":") for spec in specs)})
        cost = entry.cost(entry.settings_of(c), c, self.calibration or NO_CALIBRATION)

        def compute():
            run = self.analysis_run(seed, rewind)
            return entry.compute(run, [run.solution(spec) for spec in specs], entry.settings_of(c),
                                 curves.Compute(backend=c.train.backend))

        # done only when whole: a damaged result is set aside and computed again (landscape.runs.cached)
        return Job(f"{prefix}/{entry.name} {' -> '.join(specs)}", entry.name, deps, cost,
                   lambda: readable(path, store.whole_result),
                   compute, f"{stored.folder.name}/{path.stem}", seed, rewind)

    # --------------------------------------------------------------- run
    def save_config(self) -> None:
        atomic_write_json(self.config.to_dict(), self.store.study_config)

    def run_batch(self, jobs: list[Job], stack: int = 1, mode: str = "auto") -> None:
        """Run a batch: trainings together in stacks of at most `stack`, trained in `mode`
        (their parents finished; the scheduler resolves both, lthfast.study.scheduler), or
        analyses one after another. A lone training (a training Job's run) needs neither."""
        trainings = [j for j in jobs if j.kind == "train"]
        if trainings:
            train_together([(self.imp_run(j.seed, j.rewind), j.strategy, j.level, None) for j in trainings],
                           stack, mode)
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
