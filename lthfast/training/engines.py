"""One training step of a stack of K networks of one architecture, in each way of running
them together (lthfast.training.stack's modes). Every engine takes the K members' batches and
learning rates, runs forward and backward, and ends with ONE StackedMaskedSGD.step (one
masked_sgd_ call, per-member lr) over the stack's [K, row] flat buffers.

  loop     the K plain networks one after another, each a view of its row of the flat
           buffer. On the CPU bit-identical to K separate runs (same ops on the same numbers).
  grouped  one stacked model (lthfast.models.stacked: grouped convolutions, per-member BatchNorm
           channels) on the K batches side by side, its parameters made from the members'
           each step (a copy of K * n numbers; autograd hands each member its gradient).
           It needs every member's batch to have one size: at a step where they differ
           (members at different places in their epochs have their partial last batch at
           different steps) it runs that step as `loop` on the same storage, so any stack
           is trained right; only that step's speed is loop's.
  streams  (CUDA) loop with each member's forward and backward on a CUDA stream of its own.
  graph    (CUDA) loop with each member's forward and backward compiled once for all
           members by torch.compile(mode="reduce-overhead") and replayed as CUDA graphs
           (one recording per member): the launch overhead of a network gone, the compile
           time that of one network whatever K.
compile: torch.compile each mode's forward (and so backward): "auto" (the default: compiled where
bench/compile_step.py measured it faster, COMPILED_BY_DEFAULT), True or "default" (inductor),
"reduce-overhead" (inductor and CUDA graphs; with grouped, one graph for the whole stack,
compiled once per K), "max-autotune", or a dynamo backend name (e.g. "eager", to check the
plumbing). Compiled forwards run on full batches only; a partial last batch runs eagerly
(no compile per odd shape).

Floating point: `loop` (and `streams`) compute each member exactly as a single run does;
`grouped` and compiled forwards compute the same sums in other orders (lthfast.training.stack
states the tolerance). Each engine is deterministic, so a resumed stack of one mode ends
where an uninterrupted one of that mode does.
"""
from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F
from torch.func import functional_call

from lthfast.foundations.errors import LthError
from lthfast.foundations.hardware import cpu_flags
from lthfast.models.stacked import (
    member_parameters,
    share_batchnorm,
    stack_inputs,
    stack_model,
)
from lthfast.training.evaluation import autocast
from lthfast.training.optim import StackedMaskedSGD

MODES = ("auto", "loop", "grouped", "streams", "graph")
# compile="auto" compiles a loop stack's step where bench/compile_step.py measured the compiled
# trainer's step more than COMPILE_GAIN times as fast as eager, with its weights after 11 steps
# within COMPILE_TOLERANCE (relative to the largest weight; the drift any reordering of sums
# gives, as grouped's, lthfast.training.stack) of eager's. Measured (README, "Benchmarks"), by
# (device kind, model, width, precision): on an Intel Xeon with AMX-BF16, 2 threads, torch
# 2.14.1: ResNet-20 x1.15 (2.6e-3), compiled; VGG-16 x0.93 (9.3e-3), eager. Unmeasured: eager.
COMPILE_GAIN, COMPILE_TOLERANCE = 1.10, 5e-2
COMPILED_BY_DEFAULT = {("cpu-amx", "resnet20", 16, "bf16"): 1.15}
CUDA_MODES = ("streams", "graph")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")  # torch.compile's modes (inductor)


def forward_loss(model, x: torch.Tensor, y: torch.Tensor, precision: str, device: torch.device):
    """(mean cross-entropy as float32, logits) of `model` on (x, y) under the precision's autocast."""
    with autocast(precision, device):
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
    return loss, logits


def device_kind(device: torch.device) -> str:
    """What COMPILED_BY_DEFAULT tells devices apart by: cuda, cpu-amx (AMX-BF16) or cpu."""
    if device.type == "cuda":
        return "cuda"
    return "cpu-amx" if "amx_bf16" in cpu_flags() else "cpu"


def resolve_compile(compile: bool | str, model: str, width: int, precision: str, device: torch.device,
                    mode: str) -> bool | str:
    """`compile`, or for "auto" whether this loop stack's step compiles by default (COMPILED_BY_DEFAULT;
    never where the environment sets LTHFAST_COMPILE=0: the test suite, which would otherwise pay a
    compile a process)."""
    if compile != "auto":
        return compile
    if os.environ.get("LTHFAST_COMPILE") == "0":
        return False
    return mode == "loop" and (device_kind(device), model, width, precision) in COMPILED_BY_DEFAULT


def check_mode(mode: str, device: torch.device, compile: bool | str = False) -> None:
    """LthError unless `mode` (one of MODES) can run on `device` with this compile setting."""
    if mode not in MODES:
        raise LthError(f"stack mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode in CUDA_MODES and device.type != "cuda":
        raise LthError(f"stack mode {mode!r} needs a CUDA device; this stack runs on {device} "
                       f"(use loop, grouped or auto)")
    if isinstance(compile, str) and compile not in COMPILE_MODES:
        import torch._dynamo  # only here: importing it takes seconds

        if compile not in torch._dynamo.list_backends(exclude_tags=()):
            raise LthError(f"compile must be True, one of {', '.join(COMPILE_MODES)} or a dynamo backend, "
                           f"got {compile!r}")
    if mode == "streams" and compile == "reduce-overhead":
        raise LthError("stack mode 'streams' does not replay CUDA graphs on its streams; use mode graph")
    if mode == "graph" and compile not in (False, "reduce-overhead"):
        raise LthError("stack mode 'graph' compiles each member's step with mode reduce-overhead itself; "
                       "leave compile off")


class LoopEngine:
    """The K networks one after another (mode `loop`); also every engine's fallback step.

    shared_numerics: whether a member's rounding depends on the other members of its stack
    (False here: each member runs its own network; lthfast.training.stack then needs no joint checkpoints).
    """
    shared_numerics = False

    def __init__(self, models: list, sgd: StackedMaskedSGD, precision: str, device: torch.device,
                 channels_last: bool, batch_size: int, compile: bool | str = False):
        self.models, self.sgd, self.precision, self.device = list(models), sgd, precision, device
        self.channels_last, self.batch_size, self.compile = channels_last, batch_size, compile
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

    def _member(self, model, x, y):
        """Forward and backward of one member: (loss, correct), kept apart from any CUDA graph's
        output memory (the next replay overwrites it)."""
        compiled = self.compile and y.shape[0] == self.batch_size
        if compiled and self.compile == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        loss, logits = (self.forward if compiled else forward_loss)(model, x, y, self.precision, self.device)
        loss.backward()
        correct = (logits.argmax(1) == y).sum()
        return (loss.detach().clone(), correct.clone()) if compiled else (loss.detach(), correct)

    def loop_step(self, batches, lrs):
        """One step of every member in turn (any batch sizes), then one SGD step."""
        self.sgd.zero_grad()
        results = [self._member(m, x, y) for m, (x, y) in zip(self.models, batches)]
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


class GraphEngine(LoopEngine):
    """Mode `graph`: loop, each member's forward and backward compiled once for all members
    with torch.compile(mode="reduce-overhead") and replayed as CUDA graphs."""

    def __init__(self, models, sgd, precision, device, channels_last, batch_size, compile=False):
        super().__init__(models, sgd, precision, device, channels_last, batch_size, "reduce-overhead")


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

    def __init__(self, models, sgd, precision, device, channels_last, batch_size, compile=False):
        super().__init__(models, sgd, precision, device, channels_last, batch_size, compile)
        self.forward = forward_loss  # its loop steps are rare: not worth compiling a second graph
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
                              self.channels_last, self.batch_size, self.compile)
        return super().subset(members, sgd)

    def _after_subset(self, members):
        self._build()  # a stacked model of the members left, their statistics carried over

    def step(self, batches, lrs):
        sizes = {y.shape[0] for _, y in batches}
        if len(sizes) > 1:
            return self.loop_step(batches, lrs)  # partial batches at different steps
        self.sgd.zero_grad()
        x = stack_inputs([x for x, _ in batches])
        y = torch.stack([y for _, y in batches], dim=1)  # [B, K]
        compiled = self.compile and sizes == {self.batch_size}
        if compiled and self.compile == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        losses, logits = (self.grouped if compiled else _grouped_forward)(
            self.stacked, self.models, x, y, self.precision, self.device, self.channels_last)
        losses.sum().backward()  # member k's loss depends on member k's parameters only
        correct = (logits.argmax(-1) == y).sum(0)
        with torch.no_grad():
            self.counters.add_(1)  # every member's BatchNorm saw one more batch
        self.sgd.step(lrs)
        return losses.detach().clone(), correct.clone()


def _compiled(fn, compile: bool | str):
    """fn compiled as the `compile` setting says (module docstring), or fn itself."""
    if not compile:
        return fn
    if not torch.cuda.is_available():  # inductor's C++ builder says at import that it found no CUDA: no news here
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    if compile is True or compile in COMPILE_MODES:
        return torch.compile(fn, mode="default" if compile is True else compile, dynamic=False)
    return torch.compile(fn, backend=compile, dynamic=False)


ENGINES = {"loop": LoopEngine, "grouped": GroupedEngine, "streams": StreamsEngine, "graph": GraphEngine}


def make_engine(mode: str, models: list, sgd: StackedMaskedSGD, precision: str, device: torch.device,
                channels_last: bool, batch_size: int, compile: bool | str = False) -> LoopEngine:
    """The engine of `mode` (not auto) for these members' models (already re-homed by `sgd`),
    whose full batches have `batch_size` images. LthError if the mode cannot run on `device`."""
    check_mode(mode, device, compile)
    if mode == "auto":
        raise ValueError("resolve 'auto' to a mode first (lthfast.training.auto)")
    if mode == "grouped" and len(models) == 1:
        mode = "loop"
    return ENGINES[mode](models, sgd, precision, device, channels_last, batch_size, compile)
