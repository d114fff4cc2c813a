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
step (an extra checkpoint, like a stop signal's), and the members' saves commit as one
(lthfast.training.member.save_together: side files, then renames; store.level.settle on resume),
so that a stack killed at any moment resumes as the same stack from the same step. A grouped
stack of one runs as loop. `auto` picks the mode for all the jobs given, finished ones too,
so that a resumed stack trains in the mode it started in.

Tolerance (tests/test_stack.py): in `loop` mode on the CPU every member ends bit-identical
to its separate single run (weights, momentum, BatchNorm statistics, metrics). `grouped`
computes the same sums in another order: from the same state each of its steps agrees with
loop's within 5e-6, the steps it runs as loop exactly, and over 20 steps members stay within
5e-2 of their separate runs (the drift of any chaotic training; README, "Reliability", gives
the measured figures). Pruned weights are exactly zero in every mode. A stack killed at any
moment resumes bit-identically, loop and grouped alike: a grouped stack's joint saves and
(lthfast.imp.driver.record_together) its levels' records each commit as one, so a kill never
changes which networks step together (tests/test_group_commit.py aims at both windows;
`python tests/kill_campaign.py --stack-mode grouped --trials 20` kills whole studies at random).
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
from lthfast.foundations.hardware import resolve_device, to_device
from lthfast.models.families import default_width
from lthfast.store.level import CHECKPOINTS, Level, settle
from lthfast.training.auto import choose_mode
from lthfast.training.engines import check_mode, make_engine, resolve_compile
from lthfast.training.member import Member, TrainJob, save_together, stderr_writer
from lthfast.training.network import use_channels_last
from lthfast.training.optim import StackedMaskedSGD

__all__ = ["SHARED_FIELDS", "TrainJob", "check_jobs", "open_stack", "train_stack"]

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


def train_stack(jobs: Sequence[TrainJob], data: Dataset, mode: str = "auto", compile: bool | str = "auto",
                progress: bool | None = None,
                on_iteration: Callable[[int, int], None] | None = None) -> list[dict]:
    """Train (or resume, or find finished) every job; returns their metrics, in job order.

    data: the shared training and test sets (moved to the device). mode: one of
    lthfast.training.engines.MODES. compile: torch.compile each step's forward ("auto": where
    measured faster, lthfast.training.engines.COMPILED_BY_DEFAULT; False, True,
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
    if pending:
        open_stack(jobs, pending, data, mode, compile, results, progress, on_iteration).run()
    return results


def open_stack(jobs: Sequence[TrainJob], pending: Sequence[int], data: Dataset, mode: str = "auto",
               compile: bool | str = "auto", results: list | None = None, progress: bool | None = False,
               on_iteration=None) -> "_Loop":
    """The step loop of the jobs at indices `pending` (not finished), resumed from their
    checkpoints and ready to step: what train_stack runs, and what the calibration
    (lthfast.study.calibration) and bench/step_overhead.py time step by step (`_Loop._step`).
    Raises LthError as train_stack does."""
    config = jobs[pending[0]].config
    device = resolve_device(config.device)
    try:
        backend = ops.runnable_backend(config.backend, device)
    except ValueError as exc:
        raise LthError(f"--backend {config.backend}: {exc}") from None
    check_mode(mode, device, False if compile == "auto" else compile)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    data = data.to(device)
    members = [Member(index, jobs[index], data, device, backend) for index in pending]
    if mode == "auto":  # chosen for all the jobs, so that a resumed stack trains in the mode it started in
        mode = choose_mode(config, len(jobs), device)
    compile = resolve_compile(compile, config.model, default_width(config.model, config.width), config.precision,
                              device, mode)
    optimizer = StackedMaskedSGD([m.model for m in members], [m.mask for m in members], config.momentum,
                                 config.weight_decay, config.nesterov, backend)
    settle([m.files for m in members], CHECKPOINTS, undo=True)  # a joint save a kill left half done: finished or undone
    for row, member in enumerate(members):
        member.resume(optimizer, row)
    engine = make_engine(mode, [m.model for m in members], optimizer, config.precision, device,
                         use_channels_last(config, device), config.batch_size, compile)
    results = [None] * len(jobs) if results is None else results
    return _Loop(members, optimizer, engine, data, device, results, progress, on_iteration)


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

    def _save_together(self, lrs, events) -> None:
        """Where a member's numbers depend on its stack-mates (grouped), every member saves when
        one does, as one commit (member.save_together): a resume then restarts the same stack
        at the same step, whenever a kill came. rewind.pt and metrics.json follow the commit,
        so none is left from a save that a kill undid (Member.resume writes a missing rewind.pt)."""
        for row, (m, lr, (_, at_epoch_end)) in enumerate(zip(self.members, lrs, events)):
            m.fold(self.running[row])
            if at_epoch_end:
                m.end_epoch(self.data, lr, self._writer(m))
        save_together(self.members, self.optimizer)
        for m, (at_rewind, at_epoch_end) in zip(self.members, events):
            if at_rewind:
                m.save_weights(m.files.rewind)
            if at_epoch_end:
                m.write_metrics(finished=False)
        now = time.perf_counter()  # the files' time is nobody's training time
        for m in self.members:
            m.segment_start = now

    def _step(self) -> None:
        members, running = self.members, self.running
        batches = [m.batch(self.data) for m in members]
        lrs = [m.lr() for m in members]
        losses, corrects = self.engine.step(batches, lrs)
        sizes = [y.shape[0] for _, y in batches]
        scale = sizes[0] if len(set(sizes)) == 1 else to_device(torch.tensor(sizes, dtype=torch.float64),
                                                                running.device)
        running[:, 0] += losses.detach().double() * scale
        running[:, 1] += corrects
        for m, n in zip(members, sizes):
            m.advance(n)
        self.bar.update(1)
        stopping = signals.stop_requested() is not None
        events = [(m.at_rewind(), m.at_epoch_end()) for m in members]
        if self.engine.shared_numerics and (stopping or any(any(e) for e in events)):
            self._save_together(lrs, events)
        for row, (m, lr, (at_rewind, at_epoch_end)) in enumerate(zip(members, lrs, events)):
            if not self.engine.shared_numerics and (at_rewind or at_epoch_end or (stopping and not m.done)):
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
