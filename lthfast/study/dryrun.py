"""The plan a `study --dry-run` prints: one line per job with its state and estimated cost,
totals per kind, the trainings grouped into stacks by wave with their cost before and after
stacking, and the calibration the estimates come from. It runs nothing and writes nothing
(tests/test_study.py::test_dry_run_prints_the_plan_and_writes_nothing); its stacking section
is what bench/gpu_check.py reads (tests/test_gpu_check.py checks its "stacked:" line).

The stacks it shows form by wave (`waves`): a model of what the scheduler
(lthfast.study.scheduler) stacks, which forms its stacks from the trainings ready at the time.
"""
from __future__ import annotations

import math

from lthfast.foundations.hardware import resolve_device
from lthfast.study.calibration import Calibration
from lthfast.study.executors import Execution, stack_size
from lthfast.study.plan import Job, Study, duration
from lthfast.study.scheduler import batches, resolve_stacking
from lthfast.training.auto import measurement_seconds, stack_seconds


def waves(jobs: list[Job]) -> dict[str, int]:
    """The wave of every training: 0 for those that need none, else one after their latest
    dependency (the trainings of a wave are independent and can train together). A shared
    dense network takes no wave (tests/test_executors.py::
    test_a_shared_dense_network_runs_alone_before_the_trainings_and_takes_no_wave)."""
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
    stacking = 1.0
    if trainings and cal:
        resolved = resolve_stacking(stack_size(study, execution), execution.stack_mode, execution.workers)
        text, stacking = _stacking_text(study, jobs, trainings, resolved.size, resolved.mode)
        lines += [""] + text
    wall = wall_seconds(study, jobs, execution, stacking)
    if cal and wall is not None:
        lines += ["", f"estimated wall time with {execution.workers} worker(s): {duration(wall)} (the scheduler's "
                      f"batches replayed on {execution.workers} slot(s) with the costs above)"]
    if cal:
        lines.append(_calibration_line(cal))
    return "\n".join(lines)


def _calibration_line(cal: Calibration) -> str:
    """Where and when the figures behind the estimates were measured, with their spreads."""
    return (f"(calibration on {cal.device}, {cal.measured}: {cal.train_step * 1e3:.1f} ms per training step "
            f"(spread {cal.spread['train_step']:.0%}), {cal.eval_image * 1e6:.0f} us per evaluated image "
            f"({cal.spread['eval']:.0%}), {cal.bn_image * 1e6:.0f} us per BatchNorm-recomputation image "
            f"({cal.spread.get('bn', 0):.0%}), {cal.hvp_image * 1e6:.0f} us per Hessian-vector-product image "
            f"({cal.spread['hvp']:.0%}); fixed: {cal.level_seconds:.2f} s a training level, {cal.job_seconds:.2f} s "
            f"an analysis{'; MEASURED WHILE BUSY' if cal.busy else ''})")


def _stacking_text(study: Study, jobs: list[Job], trainings: list[Job], stack: int,
                   mode: str) -> tuple[list[str], float]:
    """Trainings per wave in stacks of at most `stack`, in network-epochs and device-hours
    before (one at a time) and after stacking (the stack's measured step time); and the
    ratio after / before (1 for loop, which steps each network as a single run does)."""
    c, cal = study.config, study.calibration
    per_epoch = math.ceil((c.train.train_subset or 50_000) / c.train.batch_size)
    wave_of = waves(jobs)
    by_wave = {}
    for job in trainings:
        by_wave.setdefault(wave_of[job.key], []).append(job)
    k = min(stack, max(len(w) for w in by_wave.values()))
    if mode == "loop":  # each network stepped as alone: a loop stack costs its members' sum (bench/step_overhead.py)
        stacked = k * cal.train_step
    else:
        mode, stacked = stack_seconds(c.imp_config(c.seeds[0], c.rewind_iter).train, k, resolve_device(c.train.device),
                                      mode)
    network_epochs = sum(j.steps for j in trainings) / per_epoch
    stacks = [w[i:i + k] for w in by_wave.values() for i in range(0, len(w), k)]
    stack_epochs = sum(max(j.steps for j in s) for s in stacks) / per_epoch
    before = sum(j.steps for j in trainings) * cal.train_step
    # loop: each member steps as alone and leaves at its own end; other modes: a stack runs its longest member
    after = before if mode == "loop" else sum(max(j.steps for j in s) * stacked * len(s) / k for s in stacks)
    lines = [f"trainings: {len(trainings)} in {len(by_wave)} waves of independent ones; stacks of up to {stack} "
             f"(largest wave {max(len(w) for w in by_wave.values())}): {len(stacks)} stacks"]
    lines += [f"  wave {w:2d}: {len(ws):3d} trainings -> {math.ceil(len(ws) / k):3d} stacks"
              for w, ws in sorted(by_wave.items())]
    lines += [f"  one at a time: {network_epochs:,.1f} network-epochs, {before / 3600:.2f} device-hours "
              f"({cal.train_step * 1e3:.1f} ms a step)",
              f"  stacked:       {stack_epochs:,.1f} stack-epochs, {after / 3600:.2f} device-hours "
              f"({stacked * 1e3:.1f} ms a step of {k} networks, {mode}; a smaller last stack counted at the same "
              f"per-network cost): {before / max(after, 1e-9):.1f}x"]
    return lines, (1.0 if mode == "loop" else after / max(before, 1e-9))


def wall_seconds(study: Study, jobs: list[Job], execution: Execution, stacking: float = 1.0) -> float | None:
    """The wall time of the jobs not done, on a local executor's slots: the scheduler's own
    batching (scheduler.batches, in plan order, as jobs become ready) replayed on their
    calibrated costs, a batch taking the sum of its jobs' costs, their steps' part times
    `stacking` for a batch of trainings (a loop stack costs its members' sum,
    bench/step_overhead.py; levels' evaluations and files cost the same in any stack); None on
    Ray, whose slots are the cluster's."""
    if execution.executor != "local":
        return None
    slots = execution.workers
    step = study.calibration.train_step if study is not None and study.calibration else 0.0
    resolved = resolve_stacking(stack_size(study, execution), execution.stack_mode, slots)
    size, shapes = resolved.size, set()  # stack sizes whose auto mode is measured in this replay
    by_key, order = {j.key: j for j in jobs}, [j.key for j in jobs]
    pending = {j.key for j in jobs if not j.done()}
    now, running = 0.0, []  # (end, keys) of the batches running
    while pending:
        taken = {k for _, keys in running for k in keys}
        ready = [by_key[k] for k in order if k in pending and k not in taken
                 and not any(d in pending for d in by_key[k].deps)]
        for batch in batches(ready, slots - len(running), size, slots):
            steps = sum(j.steps for j in batch) * step if batch[0].kind == "train" else 0.0
            cost = sum(j.cost for j in batch) - steps + steps * stacking  # stacking speeds up the steps only
            if steps and resolved.mode == "auto" and len(batch) not in shapes:  # auto measures a new shape first
                shapes.add(len(batch))
                c = study.config
                cost += measurement_seconds(c.imp_config(c.seeds[0], c.rewind_iter).train, len(batch),
                                            resolve_device(c.train.device), step, stacking)
            running.append((now + cost, [j.key for j in batch]))
        if not running:
            break
        running.sort(key=lambda item: item[0])
        now, keys = running.pop(0)
        pending.difference_update(keys)
    return now
