"""Calibration: measured seconds per training step, per evaluated image, per image of a
BatchNorm recomputation and per Hessian-vector-product image of a study's model on its
device, and the fixed seconds of a training level and of an analysis job besides those, from
which the study's plan estimates its cost. The training step is the trainer's own
(lthfast.training.stack's step loop: the member's batch pipeline, the engine, the flat masked
SGD, in the run's precision and layout), timed at the thread count each of the study's jobs
runs with (a local CPU worker's share of the cores), with malloc tuned as the workers have it
(foundations.hardware.keep_freed_memory); the fixed seconds come from a real one-step IMP level
and a real two-point curve on generated data.

Measured once per device, model and recipe and kept in the cache folder
(~/.cache/lthfast/calibration), so that a finished study or a --dry-run starts at once.
Each figure is the median of several runs after two warm-ups, with its spread; a
measurement taken while the machine is busy (other processes' CPU time, or a wide spread) is used for
this run only, with a warning, and never cached: it can be many times too high. A damaged cache
entry (torn, emptied, not a calibration) is set aside, with a warning, and measured again.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import statistics
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from lthfast.config.analyses import CurveSettings
from lthfast.config.runs import ImpConfig
from lthfast.data.dataset import default_cache_dir
from lthfast.data.synthetic import synthetic
from lthfast.foundations.files import atomic_write_json
from lthfast.foundations.hardware import device_name, keep_freed_memory, resolve_device
from lthfast.foundations.hashing import digest
from lthfast.imp.driver import ImpRun
from lthfast.landscape import curves
from lthfast.landscape.hessian import hessian_vector_product, model_loss
from lthfast.landscape.runs import AnalysisRun
from lthfast.models.families import create_model
from lthfast.store.level import read_checked, set_aside_damaged
from lthfast.training.evaluation import evaluate, recompute_batchnorm
from lthfast.training.member import TrainJob
from lthfast.training.network import build_model, use_channels_last
from lthfast.training.stack import open_stack

WARMUPS, REPEATS = 2, 7
HVP_CHUNK = 512  # images per chunk of the sharpness analysis's products (lthfast.landscape.sharpness)
BUSY_SPREAD = 0.5  # (slowest - fastest) / median above this: something else was running
BUSY_SHARE = 0.25  # other processes using a quarter of the cores slow a 2-thread step several-fold


@dataclass
class Calibration:
    train_step: float  # seconds per training step (one batch)
    eval_image: float  # seconds per evaluated image (evaluation batch size)
    hvp_image: float  # seconds per image of a Hessian-vector product
    spread: dict  # (slowest - fastest) / median of the repeats, per figure
    device: str
    busy: bool  # measured while the machine was busy (not cached)
    measured: str
    bn_image: float = 0.0  # seconds per image of a BatchNorm recomputation (training batches, augmented)
    level_seconds: float = 0.0  # seconds a training level spends besides its steps and images
    job_seconds: float = 0.0  # seconds an analysis job spends besides its images

    @classmethod
    def load_or_measure(cls, config, threads: int | None = None) -> "Calibration":
        """The cached calibration of (device, model, recipe, threads) of a StudyConfig, or a new
        one; threads: the CPU threads each job runs with (default: this process's)."""
        device = resolve_device(config.train.device)
        train = config.imp_config(config.seeds[0], config.rewind_iter).train
        threads = threads or torch.get_num_threads()
        key = {"device": device_name(device), "model": train.model, "width": train.width,
               "batch_size": train.batch_size, "precision": train.precision,
               "channels_last": use_channels_last(train, device), "augment": train.augment,
               "eval_batch_size": train.eval_batch_size, "torch": torch.__version__, "threads": threads,
               "hvp_images": max(1, min(config.sharpness.images, train.batch_size, HVP_CHUNK)),
               "version": 5}  # 5: BatchNorm images and fixed costs (4: no fixed costs; 3: training-batch forwards)
        path = _cache_folder() / (digest(key, 16) + ".json")
        stored = read_checked(path, "measured again now", _whole)
        if stored is not None:
            return cls(**stored["calibration"])
        calibration = measure(train, device, threads, min(config.sharpness.images, train.batch_size))
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


@contextlib.contextmanager
def _threads(threads: int):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _generated(train, images: int):
    """Generated training images of the training's class count (and one test image)."""
    data = synthetic(num_train=images, num_test=1)
    return dataclasses.replace(data, train_y=data.train_y % train.num_classes, test_y=data.test_y % train.num_classes,
                               num_classes=train.num_classes)


def _trainer_step(train, device: torch.device, folder: Path, data):
    """One step of the trainer's own loop (a stack of one, loop mode) per call, on generated
    images of the training's batch size, class count and augmentation; no epoch ends."""
    config = dataclasses.replace(train, device=str(device), rewind_iter=None, epochs=1)
    return open_stack([TrainJob(config, folder / "calibration")], [0], data, "loop")._step


def _fixed_seconds(train, device: torch.device, folder: Path, step: float, bn_image: float,
                   eval_image: float) -> tuple[float, float]:
    """(seconds of a training level, seconds of an analysis job) besides the steps and images they
    compute (model builds, pruning, reading and writing their files): a real IMP level and a real
    interpolation curve on generated data, with one step, one image a sample and one BatchNorm
    batch, less the work those did, priced at the calibrated rates."""
    data = _generated(train, train.batch_size)  # an epoch is one step
    config = ImpConfig(train=dataclasses.replace(train, device=str(device), epochs=1, rewind_iter=0),
                       eval_train_images=1, eval_test_images=1, bn_batches=1)
    run = ImpRun(config, folder / "fixed", data, progress=False)
    with contextlib.redirect_stderr(io.StringIO()):  # the trainings' epoch lines: not news in a dry run
        run.dense()
        start = time.perf_counter()
        run.level("imp", 1)  # one step; the baseline's BatchNorm batch; six one-image evaluations
        level = time.perf_counter() - start - step - train.batch_size * bn_image - 6 * eval_image
    analysis = AnalysisRun(run.dir, device=str(device), data=data)
    start = time.perf_counter()
    curves.interpolation(analysis, analysis.solution("imp:0"), analysis.solution("imp:1"),
                         CurveSettings(points=2, bn_batches=1, train_images=1, test_images=1),
                         curves.Compute(backend=train.backend))
    job = time.perf_counter() - start - 2 * (train.batch_size * bn_image + 2 * eval_image)
    return max(0.0, level), max(0.0, job)


def measure(train, device: torch.device, threads: int | None = None, hvp_images: int = HVP_CHUNK) -> Calibration:
    """Time the trainer's step, an evaluation batch (training.evaluation.evaluate at the
    evaluation batch size) and a Hessian-vector product of the model
    (as the sharpness analysis makes it, on min(hvp_images, HVP_CHUNK) images), with `threads`
    CPU threads (default: this process's)."""
    keep_freed_memory()  # as every worker does (executors.run_task): their steps, not a first one's
    with _threads(threads or torch.get_num_threads()), tempfile.TemporaryDirectory() as folder:
        return _measure(train, device, Path(folder), max(1, min(hvp_images, HVP_CHUNK)))


def _measure(train, device: torch.device, folder: Path, hvp_images: int) -> Calibration:
    start_wall, start_all, start_own = time.monotonic(), _busy_cpu_seconds(), _own_cpu_seconds()
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    data = _generated(train, train.batch_size * (WARMUPS + REPEATS + 1))
    step = _trainer_step(train, device, folder, data)
    model = build_model(train, device)
    images = torch.randint(0, 256, (train.eval_batch_size, 3, 32, 32), dtype=torch.uint8, device=device)
    labels = torch.randint(0, train.num_classes, (train.eval_batch_size,), device=device)
    channels_last, on_device = use_channels_last(train, device), data.to(device)

    def forward():  # an evaluation as IMP's and the analyses' make it: one batch at their batch size
        evaluate(model, images, labels, train.precision, train.eval_batch_size, channels_last)

    def batchnorm():  # one batch of a BatchNorm recomputation: augmented, in training mode
        recompute_batchnorm(model, on_device, 1, train.batch_size, 0, channels_last, train.precision, train.augment)

    # the sharpness analysis's own product: fp32, stored BatchNorm statistics, one chunk of its sample
    hvp_model = create_model(train.model, train.width, seed=0, num_classes=train.num_classes).to(device)
    hx = torch.randn(hvp_images, 3, 32, 32, device=device)
    hy = torch.randint(0, train.num_classes, (hvp_images,), device=device)
    params = {n: p.detach() for n, p in hvp_model.named_parameters() if p.dim() > 1}
    losses, direction = model_loss(hvp_model, list(params), hx, hy, HVP_CHUNK), \
        {n: torch.randn_like(p) for n, p in params.items()}

    def hvp():
        hessian_vector_product(losses, params, direction)

    (step_s, step_spread), (forward_s, forward_spread), (bn_s, bn_spread), (hvp_s, hvp_spread) = \
        _seconds(step, device), _seconds(forward, device), _seconds(batchnorm, device), _seconds(hvp, device)
    spread = {"train_step": step_spread, "eval": forward_spread, "bn": bn_spread, "hvp": hvp_spread}
    eval_image, bn_image = forward_s / train.eval_batch_size, bn_s / train.batch_size
    level_s, job_s = _fixed_seconds(train, device, folder, step_s, bn_image, eval_image)
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
    return Calibration(step_s, eval_image, hvp_s / hvp_images, spread, device_name(device), bool(reasons),
                       time.strftime("%Y-%m-%d %H:%M:%S"), bn_image, level_s, job_s)
