"""Calibration: measured seconds per training step, per evaluated image and per
Hessian-vector-product image of a study's model on its device, from which the study's
plan estimates its cost.

Measured once per device, model and recipe and kept in the cache folder
(~/.cache/lthfast/calibration), so that a finished study or a --dry-run starts at once.
Each figure is the median of several runs after two warm-ups, with its spread; a
measurement taken while the machine is busy (other processes' CPU time, or a wide spread) is used for
this run only, with a warning, and never cached: it can be many times too high. A damaged cache
entry (torn, emptied, not a calibration) is set aside, with a warning, and measured again.
"""
from __future__ import annotations

import os
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, fields

import torch

from lthfast.data.dataset import default_cache_dir
from lthfast.foundations.files import atomic_write_json
from lthfast.foundations.hardware import device_name, resolve_device
from lthfast.foundations.hashing import digest
from lthfast.store.level import read_checked, set_aside_damaged
from lthfast.training.evaluation import autocast
from lthfast.training.network import build_model, use_channels_last

WARMUPS, REPEATS = 2, 7
BUSY_SPREAD = 0.5  # (slowest - fastest) / median above this: something else was running
BUSY_SHARE = 0.25  # other processes using a quarter of the cores slow a 2-thread step several-fold


@dataclass
class Calibration:
    train_step: float  # seconds per training step (one batch)
    eval_image: float  # seconds per evaluated image
    hvp_image: float  # seconds per image of a Hessian-vector product
    spread: dict  # (slowest - fastest) / median of the repeats, per figure
    device: str
    busy: bool  # measured while the machine was busy (not cached)
    measured: str

    @classmethod
    def load_or_measure(cls, config) -> "Calibration":
        """The cached calibration of (device, model, recipe) of a StudyConfig, or a new one."""
        device = resolve_device(config.train.device)
        train = config.imp_config(config.seeds[0], config.rewind_iter).train
        key = {"device": device_name(device), "model": train.model, "width": train.width,
               "batch_size": train.batch_size, "precision": train.precision,
               "channels_last": use_channels_last(train, device), "torch": torch.__version__,
               "version": 2}  # 2: steps and forwards timed in the training's precision (1 timed fp32)
        path = _cache_folder() / (digest(key, 16) + ".json")
        stored = read_checked(path, "measured again now", _whole)
        if stored is not None:
            return cls(**stored["calibration"])
        calibration = measure(train, device)
        if not calibration.busy:
            atomic_write_json({"key": key, "calibration": asdict(calibration)}, path)
        return calibration


def _cache_folder():
    return default_cache_dir() / "calibration"


def _whole(document: dict) -> bool:
    """A cache entry as load_or_measure writes it: every field of a Calibration."""
    return set(document["calibration"]) == {f.name for f in fields(Calibration)}


def set_aside_damaged_cache() -> list:
    """Set aside every damaged entry of the calibration cache (`python -m lthfast repair`)."""
    return set_aside_damaged(sorted(_cache_folder().glob("*.json")), _whole)


def _seconds(fn, device) -> tuple[float, float]:
    """Median seconds of fn and the relative spread of the repeats, after the warm-ups."""
    for _ in range(WARMUPS):
        fn()
    times = []
    for _ in range(REPEATS):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return median, (max(times) - min(times)) / median


def _busy_cpu_seconds() -> float | None:
    """CPU seconds all processes have used since boot (/proc/stat; None where there is none)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def measure(train, device: torch.device) -> Calibration:
    """Time a training step, an evaluation forward and a Hessian-vector product of the model."""
    start_wall, start_all, start_own = time.monotonic(), _busy_cpu_seconds(), _own_cpu_seconds()
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    model = build_model(train, device)
    x = torch.randn(train.batch_size, 3, 32, 32, device=device)
    if use_channels_last(train, device):
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (train.batch_size,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def step():  # in the training's precision, as the trainer runs it
        optimizer.zero_grad()
        with autocast(train.precision, device):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    def forward():  # evaluations run in the same precision
        with torch.no_grad(), autocast(train.precision, device):
            model(x)

    def hvp():  # sharpness runs in fp32
        params = [p for p in model.parameters() if p.dim() > 1]
        grads = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), y), params, create_graph=True)
        torch.autograd.grad(sum((g * g.detach()).sum() for g in grads), params)

    (step_s, step_spread), (forward_s, forward_spread), (hvp_s, hvp_spread) = \
        _seconds(step, device), _seconds(forward, device), _seconds(hvp, device)
    spread = {"train_step": step_spread, "eval": forward_spread, "hvp": hvp_spread}
    cores = os.cpu_count() or 1
    end_all = _busy_cpu_seconds()
    if start_all is not None and end_all is not None:
        # the CPU time other processes used while we measured, as a share of the machine: the
        # load average would count our own work of the last minute (e.g. a study's previous job)
        others = max(0.0, (end_all - start_all) - (_own_cpu_seconds() - start_own)) \
            / (cores * (time.monotonic() - start_wall))
        seen = f"other processes used {others:.0%} of the {cores} cores"
    else:  # no /proc/stat: a load above half the cores before we started
        others, seen = load_before / cores, f"the load average was {load_before:.1f} on {cores} cores"
    # another process's share, or repeats this uneven, mean the machine was shared
    reasons = ([seen] if device.type == "cpu" and others > BUSY_SHARE else []) \
        + ([f"its repeats spread up to {max(spread.values()):.0%}"] if max(spread.values()) > BUSY_SPREAD else [])
    if reasons:
        warnings.warn(f"the machine looked busy while calibrating ({' and '.join(reasons)}): cost estimates may be "
                      "too high; this calibration is not kept")
    return Calibration(step_s, forward_s / train.batch_size, hvp_s / train.batch_size, spread, device_name(device),
                       bool(reasons), time.strftime("%Y-%m-%d %H:%M:%S"))
