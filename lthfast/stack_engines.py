"""One training step of a stack of K networks of one architecture, in each way of running
them together (lthfast.stack's modes). Every engine takes the K members' batches and
learning rates, runs forward and backward, and ends with ONE StackedMaskedSGD.step (one
masked_sgd_ call, per-member lr) over the stack's [K, row] flat buffers.

  loop     the K plain networks one after another, each a view of its row of the flat
           buffer. On the CPU bit-identical to K separate runs (same ops on the same numbers).
  grouped  one stacked model (lthfast.stacked: grouped convolutions, per-member BatchNorm
           channels) on the K batches side by side, its parameters made from the members'
           each step (a copy of K * n numbers; autograd hands each member its gradient).
           It needs every member's batch to have one size: at a step where they differ
           (members at different places in their epochs have their partial last batch at
           different steps) it runs that step as `loop` on the same storage, so any stack
           is trained right; only that step's speed is loop's.
  streams  (CUDA) loop with each member's forward and backward on a CUDA stream of its own.
  graph    (CUDA) the K members' forward and backward compiled as one graph by
           torch.compile(mode="reduce-overhead"), replayed as CUDA graphs; steps whose batch
           sizes are not all the full batch size run as `loop` (no graph per odd shape).
compile=True (or a torch.compile backend name, e.g. "eager" to check the plumbing)
compiles each mode's forward with torch.compile's default mode (inductor).

Floating point: `loop` (and `streams`) compute each member exactly as a single run does;
`grouped` and compiled forwards compute the same sums in other orders (lthfast.stack
states the tolerance). Each engine is deterministic, so a resumed stack of one mode ends
where an uninterrupted one of that mode does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call

from lthfast.errors import LthError
from lthfast.evaluation import autocast
from lthfast.optim import StackedMaskedSGD
from lthfast.stacked import member_parameters, share_batchnorm, stack_inputs, stack_model

MODES = ("auto", "loop", "grouped", "streams", "graph")
CUDA_MODES = ("streams", "graph")


def forward_loss(model, x: torch.Tensor, y: torch.Tensor, precision: str, device: torch.device):
    """(mean cross-entropy as float32, logits) of `model` on (x, y) under the precision's autocast."""
    with autocast(precision, device):
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
    return loss, logits


def check_mode(mode: str, device: torch.device, compile: bool | str = False) -> None:
    """LthError unless `mode` (one of MODES) can run on `device` with this compile setting."""
    if mode not in MODES:
        raise LthError(f"stack mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode in CUDA_MODES and device.type != "cuda":
        raise LthError(f"stack mode {mode!r} needs a CUDA device; this stack runs on {device} "
                       f"(use loop, grouped or auto)")
    if mode == "graph" and compile:
        raise LthError("stack mode 'graph' compiles the step itself; leave compile off")


class LoopEngine:
    """The K networks one after another (mode `loop`); also every engine's fallback step.

    shared_numerics: whether a member's rounding depends on the other members of its stack
    (False here: each member runs its own network; lthfast.stack then needs no joint checkpoints).
    """
    shared_numerics = False

    def __init__(self, models: list, sgd: StackedMaskedSGD, precision: str, device: torch.device,
                 channels_last: bool, compile: bool | str = False):
        self.models, self.sgd, self.precision, self.device = list(models), sgd, precision, device
        self.channels_last, self.compile = channels_last, compile
        self.forward = _compiled(forward_loss, compile)

    def subset(self, members: list[int], sgd: StackedMaskedSGD) -> "LoopEngine":
        """This engine for the members at these rows only (others left the stack)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.models, new.sgd = [self.models[i] for i in members], sgd
        new._after_subset(members)
        return new

    def _after_subset(self, members: list[int]) -> None:
        pass

    def _member(self, model, x, y, forward=None):
        loss, logits = (forward or self.forward)(model, x, y, self.precision, self.device)
        loss.backward()
        return loss.detach(), (logits.argmax(1) == y).sum()

    def loop_step(self, batches, lrs, forward=None):
        """One step of every member in turn (any batch sizes), then one SGD step."""
        self.sgd.zero_grad()
        results = [self._member(m, x, y, forward) for m, (x, y) in zip(self.models, batches)]
        self.sgd.step(lrs)
        return torch.stack([r[0] for r in results]), torch.stack([r[1] for r in results])

    def step(self, batches: list, lrs: list[float]):
        """batches: K pairs (x [B_k, 3, H, W] float, y [B_k] int64) on the device; lrs: K floats.
        Returns (losses [K] float32, correct predictions [K] int64), on the device."""
        return self.loop_step(batches, lrs)


class StreamsEngine(LoopEngine):
    """Mode `streams`: member k's forward and backward on CUDA stream k, the SGD step on the
    current stream once all have finished."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.streams = [torch.cuda.Stream(self.device) for _ in self.models]

    def _after_subset(self, members):
        self.streams = [self.streams[i] for i in members]

    def step(self, batches, lrs):
        main = torch.cuda.current_stream(self.device)
        self.sgd.zero_grad()
        results = []
        for model, (x, y), stream in zip(self.models, batches, self.streams):
            stream.wait_stream(main)  # the batch and the zeroed gradients are ready
            with torch.cuda.stream(stream):
                x.record_stream(stream)  # made on the main stream, read on this one
                y.record_stream(stream)
                results.append(self._member(model, x, y))
        for stream in self.streams:
            main.wait_stream(stream)
        self.sgd.step(lrs)
        return torch.stack([r[0] for r in results]), torch.stack([r[1] for r in results])


def _all_members(models, xs, ys, precision, device):
    """Losses [K] and correct counts [K] of the K members on their batches (one graph)."""
    losses, corrects = [], []
    for model, x, y in zip(models, xs, ys):
        loss, logits = forward_loss(model, x, y, precision, device)
        losses.append(loss)
        corrects.append((logits.argmax(1) == y).sum())
    return torch.stack(losses), torch.stack(corrects)


class GraphEngine(LoopEngine):
    """Mode `graph`: the K members' forward (and so backward) compiled as one graph with
    torch.compile(mode="reduce-overhead"), i.e. CUDA graphs; full-batch steps only."""
    shared_numerics = True

    def __init__(self, models, sgd, precision, device, channels_last, compile=False, batch_size=None):
        super().__init__(models, sgd, precision, device, channels_last, False)
        self.batch_size = batch_size
        self.graph = torch.compile(_all_members, mode="reduce-overhead", dynamic=False)

    def step(self, batches, lrs):
        if any(y.shape[0] != self.batch_size for _, y in batches):
            return self.loop_step(batches, lrs)
        torch.compiler.cudagraph_mark_step_begin()
        self.sgd.zero_grad()
        losses, corrects = self.graph(self.models, [x for x, _ in batches], [y for _, y in batches],
                                      self.precision, self.device)
        losses.sum().backward()
        # Outputs of a CUDA graph are overwritten by its next replay: keep copies.
        losses, corrects = losses.detach().clone(), corrects.clone()
        self.sgd.step(lrs)
        return losses, corrects


def _grouped_forward(stacked, members, x, y, precision, device, channels_last):
    """Per-member mean losses [K] (float32) and logits [B, K, classes] of the stacked model."""
    k = len(members)
    params = member_parameters(stacked, members, channels_last)
    with autocast(precision, device):
        logits = functional_call(stacked, params, (x,))
        logits = logits.float().reshape(x.shape[0], k, -1)
        losses = F.cross_entropy(logits.permute(0, 2, 1), y, reduction="none").mean(0)
    return losses, logits


class GroupedEngine(LoopEngine):
    """Mode `grouped`: one stacked model over the K members' batches side by side (K >= 2;
    make_engine and subset give a stack of one a LoopEngine)."""
    shared_numerics = True

    def __init__(self, models, sgd, precision, device, channels_last, compile=False):
        super().__init__(models, sgd, precision, device, channels_last, compile)
        self._build()

    def _build(self):
        self.stacked = stack_model(self.models[0], len(self.models), shared_input=False).to(self.device)
        if self.channels_last:
            self.stacked.to(memory_format=torch.channels_last)
        self.stacked.train()
        self.counters = share_batchnorm(self.stacked, self.models)
        self.grouped = _compiled(_grouped_forward, self.compile)

    def subset(self, members, sgd):
        if len(members) == 1:  # one network: its plain model is the fastest way
            return LoopEngine(self.models[members[0]:members[0] + 1], sgd, self.precision, self.device,
                              self.channels_last, self.compile)
        return super().subset(members, sgd)

    def _after_subset(self, members):
        self._build()  # a stacked model of the members left, their statistics carried over

    def step(self, batches, lrs):
        if len({y.shape[0] for _, y in batches}) > 1:
            return self.loop_step(batches, lrs)  # partial batches at different steps
        self.sgd.zero_grad()
        x = stack_inputs([x for x, _ in batches])
        y = torch.stack([y for _, y in batches], dim=1)  # [B, K]
        losses, logits = self.grouped(self.stacked, self.models, x, y, self.precision, self.device,
                                      self.channels_last)
        losses.sum().backward()  # member k's loss depends on member k's parameters only
        with torch.no_grad():
            self.counters.add_(1)  # every member's BatchNorm saw one more batch
        self.sgd.step(lrs)
        return losses.detach(), (logits.argmax(-1) == y).sum(0)


def _compiled(fn, compile: bool | str):
    if not compile:
        return fn
    return torch.compile(fn, dynamic=False) if compile is True else torch.compile(fn, backend=compile,
                                                                                  dynamic=False)


ENGINES = {"loop": LoopEngine, "grouped": GroupedEngine, "streams": StreamsEngine, "graph": GraphEngine}


def make_engine(mode: str, models: list, sgd: StackedMaskedSGD, precision: str, device: torch.device,
                channels_last: bool, batch_size: int, compile: bool | str = False) -> LoopEngine:
    """The engine of `mode` (not auto) for these members' models (already re-homed by `sgd`).
    LthError if the mode cannot run on `device`."""
    check_mode(mode, device, compile)
    if mode == "auto":
        raise ValueError("resolve 'auto' to a mode first (lthfast.stack_auto)")
    if mode == "graph":
        return GraphEngine(models, sgd, precision, device, channels_last, batch_size=batch_size)
    if mode == "grouped" and len(models) == 1:
        mode = "loop"
    return ENGINES[mode](models, sgd, precision, device, channels_last, compile)
