"""Stacked training: K trainings of one architecture trained together in one process.

    results = train_stack([TrainJob(config, folder, mask, initial_weights, start_iteration), ...],
                          data, mode="auto")

Each job keeps its own start weights, mask, optimizer state, data order and augmentation
(its seed), learning-rate schedule and place in it (IMP starts at R, reinit at 0,
fine-tuning at its own constant lr), and its own length; it writes exactly the files a
single training writes (lthfast.training.member), in its own folder, at the same moments.
A job whose folder holds a finished training is not trained again; a job that ends
earlier saves its results then and leaves the stack, and the rest go on. The whole
stack's weights are updated by one fused masked SGD call a step (per-member lr), from
member-major [K, row] flat buffers (lthfast.training.optim.StackedMaskedSGD).

The jobs must share (LthError otherwise): model, width, data set (data, data_dir,
train_subset, subset_seed), batch size, device, precision (autocast is per stack),
memory layout, kernel backend, and momentum, weight decay and Nesterov (one SGD call).

Modes (lthfast.training.engines): loop, grouped, streams (CUDA), graph (CUDA), auto
(lthfast.training.auto: measured once per device and stack shape, cached); compile= adds
torch.compile to any of them. Members at different places in their epochs are trained
right by every mode: grouped runs the steps where their batch sizes differ as loop.

Checkpoints: each member saves at its own epoch ends, its rewind point and on a stop signal,
as a single run does. In grouped mode a member's rounding also depends on its stack-mates
(K, and which steps run grouped): there, when one member saves, every member saves at that
step (an extra checkpoint, like a stop signal's), so that a killed stack resumes as the
same stack from the same step. A grouped stack of one runs as loop.

Tolerance (tests/test_stack.py): in `loop` mode on the CPU every member ends bit-identical
to its separate single run (weights, momentum, BatchNorm statistics, metrics). `grouped`
computes the same sums in another order: from the same state each of its steps agrees with
loop's within 5e-6, the steps it runs as loop exactly, and over 20 steps members stay within
5e-2 of their separate runs (the drift of any chaotic training; README, "Reliability", gives
the measured figures). Pruned weights are exactly zero in every mode. A killed loop stack
resumes bit-identically (tests/kill_campaign.py); a grouped one only when the kill misses
the moments its members save or its levels are recorded, one after another (README).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm import tqdm

from lthfast import ops
from lthfast.data.dataset import Dataset
from lthfast.foundations import signals
from lthfast.foundations.errors import Interrupted, LthError
from lthfast.foundations.files import read_json
from lthfast.foundations.hardware import resolve_device
from lthfast.store.level import Level
from lthfast.training.auto import choose_mode
from lthfast.training.engines import check_mode, make_engine
from lthfast.training.member import Member, TrainJob, stderr_writer
from lthfast.training.network import use_channels_last
from lthfast.training.optim import StackedMaskedSGD

__all__ = ["SHARED_FIELDS", "TrainJob", "check_jobs", "train_stack"]

SHARED_FIELDS = ("model", "width", "data", "data_dir", "train_subset", "subset_seed", "batch_size", "device",
                 "precision", "channels_last", "backend", "momentum", "weight_decay", "nesterov")


def check_jobs(jobs: Sequence[TrainJob]) -> None:
    """LthError unless the jobs can train as one stack: at least one, distinct folders,
    and every field of SHARED_FIELDS equal."""
    if not jobs:
        raise LthError("a stack needs at least one training")
    first = jobs[0].config
    for job in jobs[1:]:
        for field in SHARED_FIELDS:
            mine, theirs = getattr(first, field), getattr(job.config, field)
            if mine != theirs:
                raise LthError(f"the trainings of a stack must share {field}: {jobs[0].folder} has {mine!r}, "
                               f"{job.folder} has {theirs!r}")
    folders = [Path(job.folder).expanduser().resolve() for job in jobs]
    if len(set(folders)) != len(folders):
        raise LthError("two trainings of a stack share one folder")


def train_stack(jobs: Sequence[TrainJob], data: Dataset, mode: str = "auto", compile: bool | str = False,
                progress: bool | None = None,
                on_iteration: Callable[[int, int], None] | None = None) -> list[dict]:
    """Train (or resume, or find finished) every job; returns their metrics, in job order.

    data: the shared training and test sets (moved to the device). mode: one of
    lthfast.training.engines.MODES. compile: torch.compile each step's forward (False, True,
    a torch.compile mode such as "reduce-overhead", or a dynamo backend name such as "eager"). on_iteration(job_index, iteration) is called for every
    member after each completed step (progress hooks, tests). Raises LthError for jobs that
    cannot share a stack, a mode or backend that cannot run here, or a bad schedule;
    Interrupted on SIGINT/SIGTERM after every unfinished member saved its checkpoint.
    """
    jobs = list(jobs)
    check_jobs(jobs)
    results: list[dict | None] = [None] * len(jobs)
    pending = []
    for index, job in enumerate(jobs):
        files = Level(job.folder)
        if files.trained():  # never train a finished run again, never overwrite its results
            results[index] = read_json(files.metrics)
        else:
            pending.append(index)
    if not pending:
        return results
    config = jobs[pending[0]].config
    device = resolve_device(config.device)
    try:
        backend = ops.runnable_backend(config.backend, device)
    except ValueError as exc:
        raise LthError(f"--backend {config.backend}: {exc}") from None
    check_mode(mode, device, compile)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    data = data.to(device)
    members = [Member(index, jobs[index], data, device, backend) for index in pending]
    if mode == "auto":
        mode = choose_mode(config, len(members), device)
    optimizer = StackedMaskedSGD([m.model for m in members], [m.mask for m in members], config.momentum,
                                 config.weight_decay, config.nesterov, backend)
    for row, member in enumerate(members):
        member.resume(optimizer, row)
    engine = make_engine(mode, [m.model for m in members], optimizer, config.precision, device,
                         use_channels_last(config, device), config.batch_size, compile)
    _Loop(members, optimizer, engine, data, device, results, progress, on_iteration).run()
    return results


class _Loop:
    """The stack's step loop: batches, one engine step, each member's events, departures."""

    def __init__(self, members, optimizer, engine, data, device, results, progress, on_iteration):
        self.members, self.optimizer, self.engine, self.data = members, optimizer, engine, data
        self.results, self.on_iteration = results, on_iteration
        self.single = len(members) == 1  # a single run: its own bar, lines and messages, as always
        # Running sums of each member's epoch (loss * n, correct) stay on the device: no sync per step.
        self.running = torch.zeros(len(members), 2, dtype=torch.float64, device=device)
        if len(members) == 1:
            only = members[0]
            self.bar = _progress_bar(progress, only.total_iters, only.iteration, only.name)
        else:
            steps = max(m.total_iters - m.iteration for m in members)
            self.bar = _progress_bar(progress, steps, 0, f"stack of {len(members)}")
        for m in members:
            m.segment_start = time.perf_counter()

    def run(self) -> None:
        try:
            with signals.deferred(after="interrupted after a training finished and was saved; "
                                        "run the same command to continue"):
                while self._leave_finished():
                    self._step()
        finally:
            self.bar.close()

    def _writer(self, member):
        return stderr_writer(self.bar, "" if self.single else f"{member.name}: ")

    def _pause(self, seconds: float, but=None) -> None:
        """Time spent on one member's files is not the others' training time."""
        for m in self.members:
            if m is not but:
                m.segment_start += seconds

    def _leave_finished(self) -> bool:
        """Finish the members at their end and rebuild the stack of the rest; False when none is left."""
        rows = [row for row, m in enumerate(self.members) if not m.done]
        if len(rows) == len(self.members):
            return True
        start = time.perf_counter()
        for m in self.members:
            if m.done:
                self.results[m.index] = m.finish(self.data)
        if rows:
            self.members = [self.members[row] for row in rows]
            self.optimizer = self.optimizer.subset(rows, [m.model for m in self.members])
            self.engine = self.engine.subset(rows, self.optimizer)
            self.running = self.running[rows]
        self._pause(time.perf_counter() - start)
        return bool(rows)

    def _step(self) -> None:
        members, running = self.members, self.running
        batches = [m.batch(self.data) for m in members]
        lrs = [m.lr() for m in members]
        losses, corrects = self.engine.step(batches, lrs)
        sizes = [y.shape[0] for _, y in batches]
        scale = sizes[0] if len(set(sizes)) == 1 else torch.tensor(sizes, dtype=torch.float64, device=running.device)
        running[:, 0] += losses.detach().double() * scale
        running[:, 1] += corrects
        for m, n in zip(members, sizes):
            m.advance(n)
        self.bar.update(1)
        stopping = signals.stop_requested() is not None
        events = [(m.at_rewind(), m.at_epoch_end()) for m in members]
        # Where a member's numbers depend on its stack-mates, every member saves when one does:
        # a resume then restarts the same stack at the same step (see the module docstring).
        together = self.engine.shared_numerics and any(any(e) for e in events)
        for row, (m, lr, (at_rewind, at_epoch_end)) in enumerate(zip(members, lrs, events)):
            if at_rewind or at_epoch_end or together or (stopping and not m.done):
                start = time.perf_counter()
                m.fold(running[row])
                if at_rewind:
                    m.save_weights(m.files.rewind)
                if at_epoch_end:
                    m.end_epoch(self.data, lr, self._writer(m))
                m.save_checkpoint(self.optimizer, row)
                if at_epoch_end:
                    m.write_metrics(finished=False)
                m.segment_start = time.perf_counter()
                self._pause(m.segment_start - start, but=m)
        if self.on_iteration is not None:
            for m in members:
                self.on_iteration(m.index, m.iteration)
        if stopping and any(not m.done for m in members):
            self._leave_finished()
            left = [m for m in self.members if not m.done]
            if self.single:
                m = left[0]
                raise Interrupted(f"interrupted at iteration {m.iteration}/{m.total_iters}; checkpoint saved in "
                                  f"{m.files.folder}; run the same command to resume")
            raise Interrupted(f"interrupted; checkpoints of {len(left)} trainings saved "
                              f"({', '.join(str(m.files.folder) for m in left)}); run the same command to resume")


def _progress_bar(progress, total, initial, desc):
    # progress=None: a bar only when stderr is a terminal.
    return tqdm(total=total, initial=initial, desc=desc, unit="it", file=sys.stderr,
                disable=(None if progress is None else not progress), dynamic_ncols=True)
