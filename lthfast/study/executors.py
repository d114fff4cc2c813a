"""Where a study's batches run: in this process, in N local worker processes, or on a Ray
cluster; how they are set (`Execution`), and the batch every one of them runs (`run_claimed`).
What runs next, and when, is lthfast.study.scheduler's; every executor offers the same four
calls to it: `slots`, `submit(jobs, stacking)`, `wait(handles, timeout)` and `close()`.

Invariants, each checked by a test in tests/test_executors.py:
- results do not depend on the executor: in-process, two local workers and Ray store the same
  numbers (test_two_local_workers_store_the_same_numbers_and_run_every_job_once,
  test_ray_runs_the_study_with_a_custom_resource_for_gpus);
- a job runs in one process at a time, anywhere on the root's shared file system: a batch
  claims each of its jobs (lthfast.store.claims) and skips those another process finished or
  holds (test_two_studies_on_one_root_at_once_both_finish_and_every_job_runs_once);
- a worker that dies mid-job costs only that job: Ray retries it, the local pool is started
  anew and the batch resubmitted, and it resumes from its own checkpoint
  (test_a_worker_killed_in_the_middle_of_a_training_costs_only_that_job).
"""
from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import socket
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass

import torch

from lthfast.config.study import StudyConfig
from lthfast.foundations import settings, signals
from lthfast.foundations.errors import LthError
from lthfast.foundations.hardware import keep_freed_memory, resolve_device
from lthfast.foundations.settings import setting
from lthfast.store import claims
from lthfast.study import resources
from lthfast.study.plan import Job, Study
from lthfast.training.auto import stack_capacity


@dataclass
class Execution:
    """How a study runs (never what it computes: results do not depend on it)."""
    stack: int | None = setting(None, "trainings trained together in one stack, at most (default: as many as the "
                                "device's free memory holds, computed).", minimum=1)
    stack_mode: str = setting("auto", "how a stack trains: auto (measured per device), loop, grouped, streams or "
                              "graph (CUDA).", kind="str", choices=("auto", "loop", "grouped", "streams", "graph"))
    executor: str = setting("local", "local (this machine) or ray (a Ray cluster).", kind="str",
                            choices=("local", "ray"))
    workers: int = setting(1, "local: worker processes (one per GPU, or CPU processes with the threads split).",
                           minimum=1)
    address: str | None = setting(None, "ray: the cluster (auto, or HOST:PORT; default: a new local one).",
                                  kind="str")
    gpus_per_job: float = setting(0.0, "ray: GPUs a batch reserves (fractions let small jobs share a GPU).",
                                  kind="float", minimum=0.0)
    cpus_per_job: float = setting(1.0, "ray: CPUs a batch reserves.", kind="float", positive=True)
    gpu_resource: str = setting("GPU", "ray: the resource --gpus-per-job asks for (GPU, or a custom one).",
                                kind="str")
    connect_timeout: float = setting(20.0, "ray: seconds the cluster at --address may take to answer (a TCP "
                                     "connection, then Ray's handshake) before the study stops.", kind="float",
                                     positive=True)
    verbose: bool = setting(False, "ray: show Ray's own log lines and its workers' output.", kind="bool")

    def __post_init__(self):
        settings.check(self)


@dataclass(frozen=True)
class Stacking:
    """How the trainings of a batch train together: in stacks of at most `size`, in `mode`.
    Resolved once per study run (lthfast.study.scheduler.resolve_stacking) and sent with every batch,
    so that every worker stacks alike and none measures the device again."""
    size: int
    mode: str


def job_threads(execution: Execution) -> int:
    """CPU threads each job runs with: a local CPU worker's share of the cores (LocalPool pins
    them), else this process's; the calibration times a step at this count."""
    if execution.executor == "local" and execution.workers > 1 and not torch.cuda.device_count():
        return max(1, (os.cpu_count() or 1) // execution.workers)
    return torch.get_num_threads()


def stack_size(study: Study, execution: Execution) -> int:
    """--stack, or as many trainings as the device's free memory holds (computed); local CPU
    workers share the memory, each taking an equal part (lthfast.study.resources)."""
    if execution.stack is not None:
        return execution.stack
    c = study.config
    device = resolve_device(c.train.device)
    sharing = execution.workers if execution.executor == "local" and not torch.cuda.device_count() else 1
    return stack_capacity(c.imp_config(c.seeds[0], c.rewind_iter).train, device, fraction=0.7 / sharing)


# ----------------------------------------------------------------------------- one batch

def run_claimed(study: Study, jobs: list[Job], stacking: Stacking) -> dict:
    """Claim each job and run those this process holds and that are not done, as one batch;
    {"done": keys finished here or found finished, "busy": keys another process holds}."""
    start = time.perf_counter()
    with contextlib.ExitStack() as held:
        mine, done, busy = [], [], []
        for job in jobs:
            claim = held.enter_context(claims.Claim(study.root, job.claim))
            (busy if not claim.held else done if job.done() else mine).append(job)
        if mine:
            study.run_batch(mine, stacking.size, stacking.mode)
            claims.journal(study.root, [j.claim for j in mine], time.perf_counter() - start)
    return {"done": [j.key for j in mine + done], "busy": [j.key for j in busy],
            "seconds": time.perf_counter() - start, "host": socket.gethostname(), "pid": os.getpid()}


_WORKER_STUDIES: dict = {}  # a worker process keeps its Study (and its data) between batches


def run_task(root: str, config: dict, keys: list[str], stacking: Stacking) -> dict:
    """A batch in a worker process (a local pool's or Ray's): the jobs named by `keys`."""
    keep_freed_memory()  # a worker's first training as fast as its next (foundations.hardware)
    key = (root, json.dumps(config, sort_keys=True))
    if key not in _WORKER_STUDIES:
        study = Study(StudyConfig.from_dict(config), root)
        _WORKER_STUDIES[key] = (study, {j.key: j for j in study.plan()})
    study, jobs = _WORKER_STUDIES[key]
    with signals.deferred():
        return run_claimed(study, [jobs[k] for k in keys], stacking)


# ----------------------------------------------------------------------------- executors

class InProcess:
    """One batch at a time, in this process."""
    slots = 1

    def __init__(self, study: Study, execution: Execution):
        self.study, self.results = study, {}

    def submit(self, jobs: list[Job], stacking: Stacking):
        handle = len(self.results) + 1
        self.results[handle] = run_claimed(self.study, jobs, stacking)
        return handle

    def wait(self, handles, timeout):
        if not handles:
            time.sleep(timeout)
        return [(h, self.results.pop(h)) for h in handles]

    def close(self):
        pass


def _pin_worker(queue, threads: int) -> None:
    """Pool initializer: one GPU per worker (from the queue), or a share of the CPU threads."""
    gpu = queue.get()
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    torch.set_num_threads(threads)


class LocalPool:
    """N worker processes on this machine: one per GPU, or CPU processes with the threads split."""

    def __init__(self, study: Study, execution: Execution):
        self.study, self.slots, self.execution = study, execution.workers, execution
        gpus = torch.cuda.device_count()
        if gpus and self.slots > gpus:  # the study command checks this and memory first (lthfast.study.resources)
            raise LthError(f"--workers {self.slots} is more than this machine's {gpus} GPUs (one worker a GPU); "
                           f"the most that fits is {gpus}")
        self._start()

    def _start(self):
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked CUDA or OpenMP state
        queue = context.Queue()
        gpus = torch.cuda.device_count()
        for i in range(self.slots):
            queue.put(i if gpus else None)
        threads = job_threads(self.execution)  # a share of the cores, or all of them beside a GPU
        self.pool = ProcessPoolExecutor(self.slots, mp_context=context, initializer=_pin_worker,
                                        initargs=(queue, threads))

    def submit(self, jobs: list[Job], stacking: Stacking):
        return self.pool.submit(run_task, str(self.study.root), self.study.config.to_dict(),
                                [j.key for j in jobs], stacking)

    def wait(self, handles, timeout):
        finished, _ = wait(handles, timeout=timeout, return_when=FIRST_COMPLETED)
        return [(h, h.exception() or h.result()) for h in finished]

    def restart(self):
        """After a worker died (the pool is broken): a new pool; the caller submits again."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        self._start()

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """Batches as Ray tasks on a cluster (every node must see the root: a shared file system)."""

    def __init__(self, study: Study, execution: Execution):
        # Connected with a timeout, its nodes checked against the request (or kept, if the study command connected).
        ray = resources.connect_ray(execution)
        self.ray, self.study = ray, study
        gpus = {execution.gpu_resource: execution.gpus_per_job} if execution.gpus_per_job else {}
        options = {"num_cpus": execution.cpus_per_job}
        if gpus and execution.gpu_resource == "GPU":
            options["num_gpus"] = execution.gpus_per_job
        elif gpus:
            options["resources"] = gpus
        # A worker that dies mid-batch: Ray runs the batch again, which resumes from its checkpoints.
        self.task = ray.remote(max_retries=3, **options)(run_task)
        total = ray.cluster_resources()
        limits = [total.get("CPU", 1) / execution.cpus_per_job]
        if gpus:
            limits.append(total.get(execution.gpu_resource, 0) / execution.gpus_per_job)
        self.slots = max(1, int(min(limits)))

    def submit(self, jobs: list[Job], stacking: Stacking):
        return self.task.remote(str(self.study.root), self.study.config.to_dict(), [j.key for j in jobs], stacking)

    def wait(self, handles, timeout):
        if not handles:
            time.sleep(timeout)
            return []
        ready, _ = self.ray.wait(list(handles), num_returns=1, timeout=timeout)
        out = []
        for handle in ready:
            try:
                out.append((handle, self.ray.get(handle)))
            except Exception as exc:  # the task failed after its retries
                out.append((handle, exc))
        return out

    def close(self):
        pass  # the cluster stays (ray.init's local cluster ends with this process)


EXECUTORS = {"local": lambda study, e: InProcess(study, e) if e.workers == 1 else LocalPool(study, e),
             "ray": RayExecutor}
