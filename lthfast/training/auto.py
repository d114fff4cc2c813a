"""`auto`: the stack mode that trains fastest here, measured, not assumed.

The first stack of a shape (device name, model, width, batch size, precision, memory
layout, K) times a few steps of every candidate mode on throwaway networks and random
images (MEASURE_ROUNDS rounds, the candidates interleaved in each, medians), and keeps
its choice in LTHFAST_CACHE/stack_modes.json (with every timing), so later stacks of that
shape pick it at once (a damaged file is set aside, with a warning, and its shapes measured
again). The choice is loop unless another mode is faster by MARGIN: loop
runs each network exactly as a single run does, so it is never slower than separate runs
but for noise, and a noisy measurement must not trade that for a doubtful gain. Candidates: loop and grouped everywhere,
streams on CUDA. Not graph, nor compiled forwards: compiling takes minutes, longer than a
measurement may (bench/gpu_check.py measures them; choose them explicitly), and a compiled
stack keeps the structure measured uncompiled. A stack of one is always loop (the single
trainer's path).

`stack_steps` builds such a throwaway stack and `time_steps` times it; the benches
(bench/stack_throughput.py, bench/gpu_check.py) use both.
"""
from __future__ import annotations

import dataclasses
import os
import statistics
import time

import torch

from lthfast import ops
from lthfast.config.runs import TrainConfig
from lthfast.data.dataset import default_cache_dir, normalize
from lthfast.foundations.files import atomic_write_json
from lthfast.foundations.hardware import device_name
from lthfast.models.families import BYTES_PER_PARAMETER, prunable_names
from lthfast.store.level import read_checked, set_aside_damaged
from lthfast.training.engines import make_engine
from lthfast.training.network import build_model, place_mask, use_channels_last
from lthfast.training.optim import StackedMaskedSGD

MEASURE_ROUNDS, MEASURE_STEPS, MEASURE_WARMUP = 3, 2, 1
MARGIN = 0.9  # another mode must take at most 90% of loop's time to be chosen


def candidates(device: torch.device) -> list[str]:
    return ["loop", "grouped"] + (["streams"] if device.type == "cuda" else [])


def cache_key(config: TrainConfig, k: int, device: torch.device) -> str:
    return (f"{device_name(device)} | {config.model} width {config.width or 'default'} | batch {config.batch_size} | "
            f"{config.precision} | {'channels_last' if use_channels_last(config, device) else 'nchw'} | K {k}")


def _cache_path():
    return default_cache_dir() / "stack_modes.json"


def _whole(cache: dict) -> bool:
    """The cache as choose_mode writes it: by shape, a choice and its timings."""
    return all(isinstance(entry, dict) and isinstance(entry.get("seconds_per_step", {}), dict)
               for entry in cache.values())


def _read_cache() -> dict:
    """auto's cached choices and timings by shape ({} if none yet; a damaged file, torn or
    foreign, is set aside with a warning, and its shapes are measured again)."""
    return read_checked(_cache_path(), "stack modes are measured again when asked", _whole) or {}


def set_aside_damaged_cache() -> list:
    """Set aside the cache if it is damaged (`python -m lthfast repair`)."""
    return set_aside_damaged([_cache_path()], _whole)


def choose_mode(config: TrainConfig, k: int, device: torch.device, refresh: bool = False) -> str:
    """The mode `auto` resolves to for a stack of `k` trainings of `config`'s shape on `device`
    (measured uncompiled on the first call for that shape, then read from the cache;
    refresh: measure again and replace the cached choice, e.g. on a quiet machine)."""
    if k == 1:
        return "loop"
    path, key = _cache_path(), cache_key(config, k, device)
    cache = _read_cache()
    if not refresh and key in cache and cache[key].get("mode") in candidates(device):
        return cache[key]["mode"]
    steps = {mode: stack_steps(config, k, mode, device) for mode in candidates(device)}
    rounds = {mode: [] for mode in steps}
    for round_ in range(MEASURE_ROUNDS):
        for mode, step in steps.items():
            rounds[mode].append(time_steps(step, MEASURE_STEPS, MEASURE_WARMUP if round_ == 0 else 0, device))
    seconds = {mode: statistics.median(times) for mode, times in rounds.items()}
    fastest = min(seconds, key=seconds.get)
    mode = fastest if seconds[fastest] <= MARGIN * seconds["loop"] else "loop"
    cache[key] = {"mode": mode, "seconds_per_step": seconds, "torch": torch.__version__}
    atomic_write_json(cache, path)
    return mode


def stack_steps(config: TrainConfig, k: int, mode: str, device: torch.device, compile: bool | str = False,
                density: float = 0.2, seed: int = 0):
    """A step function of a throwaway stack of `k` networks of `config`'s shape (seeds
    seed..seed+k-1, random masks of `density` over the prunable weights, per-member lr)
    training on random images in `mode`; each call is one stack step and returns the
    losses [K] (on the device, not synchronized)."""
    g = torch.Generator().manual_seed(seed)
    models, masks = [], []
    for i in range(k):
        model = build_model(dataclasses.replace(config, seed=seed + i), device)
        params = dict(model.named_parameters())
        masks.append(place_mask(model, {n: torch.rand(params[n].shape, generator=g) < density
                                        for n in prunable_names(model)}))
        models.append(model)
    backend = ops.runnable_backend(config.backend, device)
    optimizer = StackedMaskedSGD(models, masks, config.momentum, config.weight_decay, config.nesterov, backend)
    channels_last = use_channels_last(config, device)
    engine = make_engine(mode, models, optimizer, config.precision, device, channels_last, config.batch_size,
                         compile)
    b = config.batch_size
    images = torch.randint(0, 256, (k, b, 3, 32, 32), generator=g, dtype=torch.uint8).to(device)
    labels = torch.randint(0, 10, (k, b), generator=g).to(device)
    lrs = [0.01 * (1 + i) for i in range(k)]

    def step():
        batches = [(normalize(images[i], channels_last), labels[i]) for i in range(k)]
        return engine.step(batches, lrs)[0]
    return step


def time_steps(step, steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per call of `step` (a stack step), after `warmup` calls, synchronized on CUDA."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        losses = step()
    losses.sum().item()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / max(1, steps)


def measurement_seconds(config: TrainConfig, k: int, device: torch.device, step: float, stacking: float) -> float:
    """Seconds choose_mode spends measuring a stack of `k` of this shape on its first call (0 where
    the cache has the shape): each candidate stepped MEASURE_ROUNDS * MEASURE_STEPS + MEASURE_WARMUP
    times, loop at k single steps of `step` seconds, any other at `stacking` times that (the dry
    run's estimates, lthfast.study.dryrun)."""
    if k == 1 or cache_key(config, k, device) in _read_cache():
        return 0.0
    return (MEASURE_ROUNDS * MEASURE_STEPS + MEASURE_WARMUP) * k * step * (1 + (len(candidates(device)) - 1) * stacking)


def stack_seconds(config: TrainConfig, k: int, device: torch.device, mode: str = "auto") -> tuple[str, float]:
    """(mode, seconds per stack step) of a stack of `k` trainings of `config`'s shape in `mode`
    (auto: the mode it chooses, measuring now if no stack of that shape was measured yet),
    from auto's cached timings where it has them, else timed now."""
    mode = "loop" if k == 1 else choose_mode(config, k, device) if mode == "auto" else mode
    timings = _read_cache().get(cache_key(config, k, device), {}).get("seconds_per_step", {})
    if mode in timings:
        return mode, timings[mode]
    return mode, time_steps(stack_steps(config, k, mode, device), MEASURE_STEPS, MEASURE_WARMUP, device)


def training_bytes(config: TrainConfig) -> tuple[int, int]:
    """(bytes of one training apart from its batch, bytes per example of its batch), computed:
    its weights, gradients, momentum and mask (16 bytes a parameter,
    lthfast.models.families.BYTES_PER_PARAMETER), and its activations, counted by one forward
    pass of batch 1 (every module's output, kept for the backward pass, and as much again for
    its gradient). The default --stack and lthfast.study.resources' checks read it."""
    model = build_model(config, torch.device("cpu"))
    elements = [0]
    hooks = [m.register_forward_hook(lambda mod, inputs, out: elements.__setitem__(0, elements[0] + out.numel()))
             for m in model.modules() if not list(m.children())]
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    return BYTES_PER_PARAMETER * sum(p.numel() for p in model.parameters()), \
        2 * elements[0] * (2 if config.precision == "bf16" else 4)


def stack_capacity(config: TrainConfig, device: torch.device, fraction: float = 0.7) -> int:
    """How many trainings of `config`'s shape (training_bytes at its batch size) fit together
    in `fraction` of the device's free memory."""
    fixed, per_example = training_bytes(config)
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    return max(1, int(fraction * free // (fixed + per_example * config.batch_size)))
