"""Running a study's job graph: in this process, in N local worker processes, or on a Ray
cluster. One scheduling loop drives them all:

    while jobs are left:
        submit the ready jobs (trainings grouped in stacks first, then analyses) to free slots
        wait for one batch to end; report it (jobs done, running, left, time to go)

A batch claims each of its jobs before running it (lthfast.claims: a job runs in one
process at a time, anywhere on the root's shared file system) and skips the jobs another
process finished or holds; those are watched until their result exists, or taken over if
their owner died. A worker that dies mid-job costs only that job: Ray retries it (and the
local pool resubmits it), and it resumes from its own checkpoint. Stopping the driver
(a signal) lets the running batches end; the same command then continues.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import multiprocessing
import os
import socket
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import torch

from lthfast import claims, settings, signals
from lthfast.errors import Interrupted, LthError
from lthfast.hardware import resolve_device
from lthfast.settings import setting
from lthfast.stack_auto import stack_capacity, stack_seconds
from lthfast.study import Job, Study, duration
from lthfast.study_config import StudyConfig

POLL = 2.0  # seconds between looks at jobs that another process runs


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

    def __post_init__(self):
        settings.check(self)


# ----------------------------------------------------------------------------- one batch

def run_claimed(study: Study, jobs: list[Job]) -> dict:
    """Claim each job and run those this process holds and that are not done, as one batch;
    {"done": keys finished here or found finished, "busy": keys another process holds}."""
    start = time.perf_counter()
    with contextlib.ExitStack() as held:
        mine, done, busy = [], [], []
        for job in jobs:
            claim = held.enter_context(claims.Claim(study.root, job.claim))
            (busy if not claim.held else done if job.done() else mine).append(job)
        if mine:
            study.run_batch(mine)
            claims.journal(study.root, [j.claim for j in mine], time.perf_counter() - start)
    return {"done": [j.key for j in mine + done], "busy": [j.key for j in busy],
            "seconds": time.perf_counter() - start, "host": socket.gethostname(), "pid": os.getpid()}


_WORKER_STUDIES: dict = {}  # a worker process keeps its Study (and its data) between batches


def run_task(root: str, config: dict, execution: dict, keys: list[str]) -> dict:
    """A batch in a worker process (a local pool's or Ray's): the jobs named by `keys`."""
    key = (root, json.dumps(config, sort_keys=True))
    if key not in _WORKER_STUDIES:
        study = Study(StudyConfig.from_dict(config), root)
        study.stack, study.stack_mode = execution["stack"], execution["stack_mode"]
        _WORKER_STUDIES[key] = (study, {j.key: j for j in study.plan()})
    study, jobs = _WORKER_STUDIES[key]
    with signals.deferred():
        return run_claimed(study, [jobs[k] for k in keys])


# ----------------------------------------------------------------------------- executors

class InProcess:
    """One batch at a time, in this process."""
    slots = 1

    def __init__(self, study: Study, execution: Execution):
        self.study, self.results = study, {}

    def submit(self, jobs: list[Job], execution: Execution):
        handle = len(self.results) + 1
        self.results[handle] = run_claimed(self.study, jobs)
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
        self.study, self.slots = study, execution.workers
        gpus = torch.cuda.device_count()
        if gpus and self.slots > gpus:
            raise LthError(f"--workers {self.slots} is more than this machine's {gpus} GPUs (one worker a GPU)")
        self._start()

    def _start(self):
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked CUDA or OpenMP state
        queue = context.Queue()
        gpus = torch.cuda.device_count()
        for i in range(self.slots):
            queue.put(i if gpus else None)
        threads = max(1, (os.cpu_count() or 1) // self.slots) if not gpus else torch.get_num_threads()
        self.pool = ProcessPoolExecutor(self.slots, mp_context=context, initializer=_pin_worker,
                                        initargs=(queue, threads))

    def submit(self, jobs: list[Job], execution: Execution):
        return self.pool.submit(run_task, str(self.study.root), self.study.config.to_dict(),
                                dataclasses.asdict(execution), [j.key for j in jobs])

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
        try:
            import ray  # optional: pip install -e '.[ray]'
        except ImportError:
            raise LthError("--executor ray needs Ray: pip install -e '.[ray]' (or pip install 'ray[default]')") from None
        self.ray, self.study = ray, study
        ray.init(address=execution.address, ignore_reinit_error=True, log_to_driver=False,
                 runtime_env={"env_vars": {k: v for k, v in os.environ.items() if k.startswith("LTHFAST_")}})
        gpus = {execution.gpu_resource: execution.gpus_per_job} if execution.gpus_per_job else {}
        resources = {"num_cpus": execution.cpus_per_job}
        if gpus and execution.gpu_resource == "GPU":
            resources["num_gpus"] = execution.gpus_per_job
        elif gpus:
            resources["resources"] = gpus
        # A worker that dies mid-batch: Ray runs the batch again, which resumes from its checkpoints.
        self.task = ray.remote(max_retries=3, **resources)(run_task)
        total = ray.cluster_resources()
        limits = [total.get("CPU", 1) / execution.cpus_per_job]
        if gpus:
            limits.append(total.get(execution.gpu_resource, 0) / execution.gpus_per_job)
        self.slots = max(1, int(min(limits)))

    def submit(self, jobs: list[Job], execution: Execution):
        return self.task.remote(str(self.study.root), self.study.config.to_dict(),
                                dataclasses.asdict(execution), [j.key for j in jobs])

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


def stack_size(study: Study, execution: Execution) -> int:
    """--stack, or as many trainings as the device's free memory holds (computed)."""
    if execution.stack is not None:
        return execution.stack
    c = study.config
    return stack_capacity(c.imp_config(c.seeds[0], c.rewind_iter).train, resolve_device(c.device))


def batches(ready: list[Job], slots: int, stack: int, all_slots: int | None = None) -> list[list[Job]]:
    """The next batches for `slots` free slots of `all_slots` (default: all free): shared dense
    networks first (seconds each, and they free trainings), then the ready trainings in stacks
    of at most `stack`, spread over all the slots (the part a busy slot would take waits for a
    slot to free, rather than one slot taking every ready training while another runs a short
    job), then one analysis a slot."""
    out = [[j] for j in ready if j.kind == "share"][:slots]
    trainings, free = [j for j in ready if j.kind == "train"], slots - len(out)
    if trainings and free:
        size = min(stack, math.ceil(len(trainings) / max(free, all_slots or slots)))
        out += [trainings[i:i + size] for i in range(0, len(trainings), size)][:free]
    return out + [[j] for j in ready if j.kind not in ("train", "share")][:slots - len(out)]


def execute(study: Study, jobs: list[Job], execution: Execution | None = None, out=sys.stderr) -> None:
    """Run every job not done yet (in dependency order, trainings stacked), with a progress
    line per job: where it ran, how many run and are left, and the time to go."""
    execution = execution or Execution()
    by_key = {j.key: j for j in jobs}
    order = [j.key for j in jobs]
    with signals.deferred(), claims.working(study.root, f"study ({len(jobs)} jobs)"):
        pending = {j.key for j in jobs if not j.done()}
        execution = dataclasses.replace(execution, stack=stack_size(study, execution))  # workers get it resolved
        executor = EXECUTORS[execution.executor](study, execution)
        if executor.slots > 1 and execution.stack_mode == "auto":
            # With several slots, which trainings share a stack depends on timing; a grouped
            # member's rounding depends on its stack-mates, a loop member's does not: loop
            # keeps a study bit-reproducible (tests/kill_campaign.py --workers 2 measured it).
            execution = dataclasses.replace(execution, stack_mode="loop")  # what every batch is sent with
        study.stack, study.stack_mode = execution.stack, execution.stack_mode
        estimated = sum(by_key[k].cost for k in pending)
        print(f"study: {len(jobs)} jobs, {len(jobs) - len(pending)} already stored, {len(pending)} to run "
              f"(estimated {duration(estimated)} one network at a time); {execution.executor} executor, "
              f"{executor.slots} slot(s), stacks of up to {study.stack} trainings ({execution.stack_mode})",
              file=out, flush=True)
        running, elsewhere, spent, estimated_done, started = {}, set(), 0.0, 0.0, time.perf_counter()
        try:
            while pending:
                stopping = signals.stop_requested()
                taken = {k for keys in running.values() for k in keys} | elsewhere
                if not stopping:
                    ready = [by_key[k] for k in order if k in pending and k not in taken
                             and not any(d in pending for d in by_key[k].deps)]
                    for batch in batches(ready, executor.slots - len(running), study.stack, executor.slots):
                        running[executor.submit(batch, execution)] = [j.key for j in batch]
                if not running and (stopping or not elsewhere):
                    break
                lost = []
                for handle, result in executor.wait(list(running), POLL):
                    keys = running.pop(handle)
                    if isinstance(result, BrokenProcessPool):  # a local worker died with its batch
                        lost.append(keys)
                        continue
                    if isinstance(result, BaseException):
                        raise LthError(f"a batch failed on a worker ({keys[0]}, ...): {type(result).__name__}: "
                                       f"{result}") from result
                    elsewhere.update(result["busy"])
                    for key in result["done"]:
                        pending.discard(key)
                        spent += result["seconds"] / len(keys)
                        estimated_done += by_key[key].cost
                        _progress(out, key, result, len(jobs) - len(pending), len(jobs), running, pending,
                                  by_key, spent, estimated_done, executor.slots)
                if lost:  # the pool starts anew; every batch it held runs again, from its checkpoints
                    executor.restart()
                    running = {executor.submit([by_key[k] for k in keys], execution): keys
                               for keys in lost + list(running.values())}
                for key in list(elsewhere):  # another process runs it: until its result exists, or its owner died
                    if by_key[key].done():
                        pending.discard(key)
                        print(f"[{len(jobs) - len(pending)}/{len(jobs)}] {key}: computed by another process",
                              file=out, flush=True)
                        elsewhere.discard(key)
                    elif claims.free(study.root, by_key[key].claim):
                        elsewhere.discard(key)
            if signals.stop_requested():
                raise Interrupted(f"stopped ({signals.stop_requested()}) with {len(pending)} jobs left; "
                                  "run the same command to continue")
            if pending:
                raise LthError(f"{len(pending)} jobs could not start (e.g. {sorted(pending)[0]}): their inputs "
                               "were not made")
        finally:
            executor.close()
    elapsed = time.perf_counter() - started
    print(f"study: done in {duration(elapsed)}", file=out, flush=True)


def _progress(out, key, result, done, total, running, pending, by_key, spent, estimated_done, slots) -> None:
    left = sum(by_key[k].cost for k in pending)
    pace = spent / estimated_done if estimated_done > 0 else 1.0  # measured / estimated so far
    where = "" if result["pid"] == os.getpid() else f" on {result['host']}:{result['pid']}"
    print(f"[{done}/{total}] {key}: {result['seconds']:.1f} s{where}; {sum(map(len, running.values()))} running, "
          f"{len(pending)} left, about {duration(left * pace / max(1, slots))} to go", file=out, flush=True)


def waves(jobs: list[Job]) -> dict[str, int]:
    """The wave of every training: 0 for those that need none, else one after their latest
    dependency (the trainings of a wave are independent and can train together)."""
    by_key, wave = {j.key: j for j in jobs}, {}

    def of(key):
        if key not in wave:
            # A shared dense network takes no wave of its own: its dependents train one after its source.
            wave[key] = max((of(d) + (by_key[d].kind == "train") for d in by_key[key].deps
                             if by_key[d].kind in ("train", "share")), default=0)
        return wave[key]
    return {j.key: of(j.key) for j in jobs if j.kind == "train"}


def plan_text(study: Study, jobs: list[Job], execution: Execution) -> str:
    """The plan: one line per job with its state and estimated cost, totals per kind, and the
    trainings grouped into stacks by wave, with their cost before and after stacking."""
    lines = [f"{job.key:60s} {'stored' if job.done() else 'to run':7s} ~{duration(job.cost):>12s}" for job in jobs]
    pending = [j for j in jobs if not j.done()]
    kinds = {}
    for job in pending:
        count, cost = kinds.get(job.kind, (0, 0.0))
        kinds[job.kind] = (count + 1, cost + job.cost)
    cal = study.calibration
    lines += ["", f"{len(jobs)} jobs, {len(pending)} to run, estimated {duration(sum(j.cost for j in pending))} "
                  "on this device, one network at a time"]
    lines += [f"  {kind:12s} {count:5d} jobs  ~{duration(cost)}" for kind, (count, cost) in kinds.items()]
    trainings = [j for j in pending if j.kind == "train"]
    if trainings and cal:
        lines += [""] + _stacking_text(study, jobs, trainings, stack_size(study, execution), execution.stack_mode)
    if cal:
        lines.append(f"(calibration on {cal.device}, {cal.measured}: {cal.train_step * 1e3:.1f} ms per training step "
                     f"(spread {cal.spread['train_step']:.0%}), {cal.eval_image * 1e6:.0f} us per evaluated image "
                     f"({cal.spread['eval']:.0%}), {cal.hvp_image * 1e6:.0f} us per Hessian-vector-product image "
                     f"({cal.spread['hvp']:.0%}){'; MEASURED WHILE BUSY' if cal.busy else ''})")
    return "\n".join(lines)


def _stacking_text(study: Study, jobs: list[Job], trainings: list[Job], stack: int, mode: str) -> list[str]:
    """Trainings per wave in stacks of at most `stack`, in network-epochs and device-hours
    before (one at a time) and after stacking (the stack's measured step time)."""
    c, cal = study.config, study.calibration
    per_epoch = math.ceil((c.train_subset or 50_000) / c.batch_size)
    wave_of = waves(jobs)
    by_wave = {}
    for job in trainings:
        by_wave.setdefault(wave_of[job.key], []).append(job)
    k = min(stack, max(len(w) for w in by_wave.values()))
    mode, stacked = stack_seconds(c.imp_config(c.seeds[0], c.rewind_iter).train, k, resolve_device(c.device), mode)
    network_epochs = sum(j.steps for j in trainings) / per_epoch
    stacks = [w[i:i + k] for w in by_wave.values() for i in range(0, len(w), k)]
    stack_epochs = sum(max(j.steps for j in s) for s in stacks) / per_epoch
    after = sum(max(j.steps for j in s) * stacked * len(s) / k for s in stacks)
    before = sum(j.steps for j in trainings) * cal.train_step
    lines = [f"trainings: {len(trainings)} in {len(by_wave)} waves of independent ones; stacks of up to {stack} "
             f"(largest wave {max(len(w) for w in by_wave.values())}): {len(stacks)} stacks"]
    lines += [f"  wave {w:2d}: {len(ws):3d} trainings -> {math.ceil(len(ws) / k):3d} stacks"
              for w, ws in sorted(by_wave.items())]
    lines += [f"  one at a time: {network_epochs:,.1f} network-epochs, {before / 3600:.2f} device-hours "
              f"({cal.train_step * 1e3:.1f} ms a step)",
              f"  stacked:       {stack_epochs:,.1f} stack-epochs, {after / 3600:.2f} device-hours "
              f"({stacked * 1e3:.1f} ms a step of {k} networks, {mode}; a smaller last stack counted at the same "
              f"per-network cost): {before / max(after, 1e-9):.1f}x"]
    return lines
