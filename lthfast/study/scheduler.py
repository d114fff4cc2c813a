"""What runs next: a study's job graph in dependency order, the ready trainings grouped in
stacks, on the slots of one executor (lthfast.study.executors), with a progress line per job.

    while jobs are left:
        submit the ready jobs (shared dense networks, trainings in stacks, then analyses) to free slots
        wait for one batch to end; report it (jobs done, running, left, time to go)
        watch the jobs another process holds: until their result exists, or their owner died

Invariants, each checked by a test:
- a job starts only once every job it depends on is done, and every job runs once
  (tests/test_executors.py::test_two_local_workers_store_the_same_numbers_and_run_every_job_once);
- ready trainings form stacks spread over all the slots, one analysis a slot
  (tests/test_executors.py::test_ready_trainings_form_stacks_spread_over_the_free_slots);
- a shared dense network runs alone, before the trainings that need it, so that no stack's
  make-up depends on when it finished
  (tests/test_executors.py::test_a_shared_dense_network_runs_alone_before_the_trainings_and_takes_no_wave);
- a stack's levels are recorded as one (lthfast.imp.driver.record_together), so a kill while
  they are recorded leaves all or none of them done and the next stacks are the same
  (tests/test_group_commit.py::test_a_kill_between_a_stacks_records_forms_the_same_next_stacks);
- stopping the driver (a signal) lets the running batches end and raises Interrupted; the
  same command then continues and ends with the same results
  (tests/test_study.py::test_a_study_stopped_in_the_middle_and_started_again_ends_the_same).
"""
from __future__ import annotations

import math
import os
import sys
import time
from concurrent.futures.process import BrokenProcessPool

from lthfast.foundations import signals
from lthfast.foundations.errors import Interrupted, LthError
from lthfast.store import claims
from lthfast.study.executors import EXECUTORS, Execution, Stacking, stack_size
from lthfast.study.plan import Job, Study, duration

POLL = 2.0  # seconds between looks at jobs that another process runs


# ----------------------------------------------------------------------------- what runs next

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


def resolve_stacking(size: int, mode: str, slots: int) -> Stacking:
    """The stacking every batch of a run is sent with. With several slots, which trainings
    share a stack depends on timing; a grouped member's rounding depends on its stack-mates, a
    loop member's does not: auto becomes loop, which keeps a study bit-reproducible however
    its stacks formed (tests/kill_campaign.py --workers 2 checks it)."""
    return Stacking(size, "loop" if slots > 1 and mode == "auto" else mode)


# ----------------------------------------------------------------------------- the run

def execute(study: Study, jobs: list[Job], execution: Execution | None = None, out=sys.stderr) -> None:
    """Run every job not done yet (in dependency order, trainings stacked), with a progress
    line per job: where it ran, how many run and are left, and the time to go."""
    execution = execution or Execution()
    with signals.deferred(), claims.working(study.root, f"study ({len(jobs)} jobs)"):
        pending = set()
        for job in jobs:  # dependencies first: a job waits (and is checked again) while one of its inputs is made
            if any(d in pending for d in job.deps) or not job.done():
                pending.add(job.key)
        size = stack_size(study, execution)  # resolved here: workers get it, and measure nothing
        executor = EXECUTORS[execution.executor](study, execution)
        stacks = resolve_stacking(size, execution.stack_mode, executor.slots)
        schedule = Schedule(study, jobs, pending, executor, stacks, out)
        estimated = sum(schedule.by_key[k].cost for k in pending)
        print(f"study: {len(jobs)} jobs, {len(jobs) - len(pending)} already stored, {len(pending)} to run "
              f"(estimated {duration(estimated)} one network at a time); {execution.executor} executor, "
              f"{executor.slots} slot(s), stacks of up to {stacks.size} trainings ({stacks.mode})",
              file=out, flush=True)
        started = time.perf_counter()
        try:
            schedule.run()
        finally:
            executor.close()
    elapsed = time.perf_counter() - started
    print(f"study: done in {duration(elapsed)}", file=out, flush=True)


class Schedule:
    """One run's state: the jobs left (`pending`), the batches running (handle: their keys),
    the jobs another process holds (`elsewhere`), and the pace so far (`progress`)."""

    def __init__(self, study: Study, jobs: list[Job], pending: set[str], executor, stacking: Stacking, out):
        self.study, self.executor, self.stacking, self.out = study, executor, stacking, out
        self.by_key = {j.key: j for j in jobs}
        self.order = [j.key for j in jobs]
        self.pending, self.running, self.elsewhere = pending, {}, set()
        self.progress = Progress(len(jobs), executor.slots, out)

    def run(self) -> None:
        """Until no job is left, or none can start: submit, wait for a batch, watch the others'."""
        while self.pending:
            stopping = signals.stop_requested()
            if not stopping:
                self.submit_ready()
            if not self.running and (stopping or not self.elsewhere):
                break
            self.collect(self.executor.wait(list(self.running), POLL))
            self.watch_elsewhere()
        self.raise_if_unfinished()

    def ready(self) -> list[Job]:
        """The jobs left, in plan order, whose dependencies are done and that nobody runs."""
        taken = {k for keys in self.running.values() for k in keys} | self.elsewhere
        return [self.by_key[k] for k in self.order if k in self.pending and k not in taken
                and not any(d in self.pending for d in self.by_key[k].deps)]

    def submit_ready(self) -> None:
        slots = self.executor.slots
        for batch in batches(self.ready(), slots - len(self.running), self.stacking.size, slots):
            self.running[self.executor.submit(batch, self.stacking)] = [j.key for j in batch]

    def collect(self, results: list) -> None:
        """Record the batches that ended; those a dead local worker took run again."""
        lost = []
        for handle, result in results:
            keys = self.running.pop(handle)
            if isinstance(result, BrokenProcessPool):  # a local worker died with its batch
                lost.append(keys)
                continue
            if isinstance(result, BaseException):
                raise LthError(f"a batch failed on a worker ({keys[0]}, ...): {type(result).__name__}: "
                               f"{result}") from result
            self.elsewhere.update(result["busy"])
            for key in result["done"]:
                self.pending.discard(key)
                self.progress.job_done(key, result, len(keys), self.by_key[key].cost,
                                       sum(map(len, self.running.values())), self.pending_cost(), len(self.pending))
        if lost:
            self.resubmit(lost)

    def resubmit(self, lost: list[list[str]]) -> None:
        """The pool starts anew; every batch it held runs again, from its checkpoints."""
        self.executor.restart()
        self.running = {self.executor.submit([self.by_key[k] for k in keys], self.stacking): keys
                        for keys in lost + list(self.running.values())}

    def watch_elsewhere(self) -> None:
        """A job another process runs: done once its result exists, free again if its owner died."""
        for key in list(self.elsewhere):
            if self.by_key[key].done():
                self.pending.discard(key)
                self.progress.done_elsewhere(key, len(self.pending))
                self.elsewhere.discard(key)
            elif claims.free(self.study.root, self.by_key[key].claim):
                self.elsewhere.discard(key)

    def pending_cost(self) -> float:
        return sum(self.by_key[k].cost for k in self.pending)

    def raise_if_unfinished(self) -> None:
        if signals.stop_requested():
            raise Interrupted(f"stopped ({signals.stop_requested()}) with {len(self.pending)} jobs left; "
                              "run the same command to continue")
        if self.pending:
            raise LthError(f"{len(self.pending)} jobs could not start (e.g. {sorted(self.pending)[0]}): their "
                           "inputs were not made")


class Progress:
    """The progress lines: jobs done of all, where each ran, how many run and are left, and
    the time to go: the estimated cost left, scaled by the pace so far (measured seconds over
    estimated ones), shared over the slots."""

    def __init__(self, total: int, slots: int, out):
        self.total, self.slots, self.out = total, slots, out
        self.spent, self.estimated_done = 0.0, 0.0

    def job_done(self, key: str, result: dict, batch_jobs: int, cost: float, running: int, left_cost: float,
                 left: int) -> None:
        """A job of a batch of `batch_jobs` ended here (or was found done): its share of the batch's time."""
        self.spent += result["seconds"] / batch_jobs
        self.estimated_done += cost
        pace = self.spent / self.estimated_done if self.estimated_done > 0 else 1.0
        where = "" if result["pid"] == os.getpid() else f" on {result['host']}:{result['pid']}"
        print(f"[{self.total - left}/{self.total}] {key}: {result['seconds']:.1f} s{where}; {running} running, "
              f"{left} left, about {duration(left_cost * pace / max(1, self.slots))} to go", file=self.out, flush=True)

    def done_elsewhere(self, key: str, left: int) -> None:
        print(f"[{self.total - left}/{self.total}] {key}: computed by another process", file=self.out, flush=True)
