"""Host overhead of a training step: what the trainer adds to the bare arithmetic, by phase.

Side by side in one process (every configuration stepped in each repeat, in turn; medians
over the repeats), for ResNet-20 at batch 128 and the tiny model (resnet8 width 8) at batch
32, whose arithmetic is small enough that the host's work shows, as it does on a GPU:
  bare        a fixed normalized batch: forward, backward, one flat masked SGD step
              (lthfast.training.trainer.train_step; no data pipeline, no bookkeeping)
  trainer     the trainer's own step (lthfast.training.stack._Loop._step, a stack of one):
              the member's batch (gather, augmentation, normalization), the engine's
              forward and backward, the update, the running sums and the member's events
  loop K, grouped K   stacks of K trainers (K = 1, 4, 16), time per network
Host overhead = trainer - bare, and by phase: the trainer's and the bare step's phases timed
in a pass of their own in each repeat (timers around the member's batch, the normalization,
the engine and the update, synchronized on a GPU; bookkeeping is the rest), medians.
The arithmetic rate is the forward and backward FLOPs (torch.utils.flop_counter) over the
bare step's time, against the peak of the device, computed as printed: on a CPU from its
flags, clock and threads, on a GPU from its datasheet. On a GPU the trainer's steps are run
once more under torch.cuda.set_sync_debug_mode("warn") and its synchronizations counted.

    python bench/step_overhead.py [--models resnet20:128,resnet8:32:8] [--ks 1,4,16]
                                  [--repeats 5] [--out bench/results/step_overhead.json]
"""
from __future__ import annotations

import dataclasses
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]  # lthfast from this checkout

import lthfast.data.dataset as dataset_module  # noqa: E402
from lthfast import ops  # noqa: E402
from lthfast.config.runs import TrainConfig  # noqa: E402
from lthfast.data.synthetic import synthetic  # noqa: E402
from lthfast.foundations.hardware import device_name  # noqa: E402
from lthfast.training import stack as stack_module  # noqa: E402
from lthfast.training.member import TrainJob  # noqa: E402
from lthfast.training.network import build_model, use_channels_last  # noqa: E402
from lthfast.training.optim import MaskedSGD  # noqa: E402
from lthfast.training.trainer import train_step  # noqa: E402

PHASES = ("batch gather and augmentation", "normalization", "forward and backward", "update", "bookkeeping")
# Dense datasheet figures, FLOP/s: (bf16, fp32 as torch runs it: TF32 where cuDNN allows it).
GPU_PEAKS = {"H200": (989.4e12, 494.7e12), "H100 NVL": (835e12, 417.5e12), "H100 PCIe": (756e12, 378e12),
             "H100": (989.4e12, 494.7e12), "A100": (312e12, 156e12)}


def open_stack(config: TrainConfig, data, k: int, mode: str, folder: Path):
    """A stack of k fresh trainings (seeds 0..k-1) of `config`, ready to step: the trainer's
    own objects (lthfast.training.stack.open_stack)."""
    jobs = [TrainJob(dataclasses.replace(config, seed=i), folder / f"{mode}{k}-{i}") for i in range(k)]
    return stack_module.open_stack(jobs, range(k), data, mode, False)  # eager, as the bare step


def bare_step(config: TrainConfig, data):
    """train_step on one fixed, already normalized batch (the arithmetic and the update only)."""
    device = torch.device(config.device)
    model = build_model(config, device)
    sgd = MaskedSGD(model, None, config.momentum, config.weight_decay, config.nesterov,
                    ops.runnable_backend(config.backend, device))
    channels_last = use_channels_last(config, device)
    x = dataset_module.normalize(data.train_x[:config.batch_size], channels_last, data.mean, data.std)
    y = data.train_y[:config.batch_size]
    step = lambda: train_step(model, sgd, x, y, config.lr, config, device)  # noqa: E731
    step.sgd = sgd
    return step


class Phases:
    """Seconds spent inside wrapped callables, by phase name (synchronized on a GPU)."""

    def __init__(self, device: torch.device):
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.seconds: dict[str, float] = {}

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            self.sync()
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            self.sync()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            return out
        return timed


def trainer_phases(loop, steps: int, device: torch.device) -> dict:
    """Per-step seconds of each phase of the trainer's step (a stack of one)."""
    phases, normalize = Phases(device), dataset_module.normalize
    nhwc = getattr(dataset_module, "normalize_nhwc", None)  # absent before lthfast 0.2: to time older trees
    member, engine, sgd = loop.members[0], loop.engine, loop.engine.sgd
    saved = member.batch, engine.step, sgd.step
    member.batch, engine.step, sgd.step = phases.wrap("batch", member.batch), phases.wrap("engine", engine.step), \
        phases.wrap("update", sgd.step)
    dataset_module.normalize = phases.wrap("normalize", normalize)
    dataset_module.normalize_nhwc = nhwc and phases.wrap("normalize", nhwc)
    try:
        total = phases.wrap("total", loop._step)
        for _ in range(steps):
            total()
    finally:
        dataset_module.normalize, dataset_module.normalize_nhwc = normalize, nhwc
        member.batch, engine.step, sgd.step = saved
    s = {name: seconds / steps for name, seconds in phases.seconds.items()}
    return {"batch gather and augmentation": s["batch"] - s.get("normalize", 0.0),
            "normalization": s.get("normalize", 0.0), "forward and backward": s["engine"] - s["update"],
            "update": s["update"], "bookkeeping": s["total"] - s["batch"] - s["engine"], "total": s["total"]}


def bare_phases(step, steps: int, device: torch.device) -> dict:
    phases = Phases(device)
    saved = step.sgd.step
    step.sgd.step = phases.wrap("update", saved)
    try:
        total = phases.wrap("total", step)
        for _ in range(steps):
            total()
    finally:
        step.sgd.step = saved
    s = {name: seconds / steps for name, seconds in phases.seconds.items()}
    return {"forward and backward": s["total"] - s["update"], "update": s["update"], "total": s["total"]}


def count_syncs(loop, steps: int) -> int:
    """Synchronizations torch.cuda.set_sync_debug_mode reports in `steps` trainer steps."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                loop._step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def step_flops(config: TrainConfig, data) -> float:
    """FLOPs of one forward and backward pass at the config's batch size."""
    from torch.utils.flop_counter import FlopCounterMode

    device = torch.device(config.device)
    model = build_model(config, device)
    x = dataset_module.normalize(data.train_x[:config.batch_size], use_channels_last(config, device),
                                 data.mean, data.std)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(model(x), data.train_y[:config.batch_size]).backward()
    return float(counter.get_total_flops())


def peak(device: torch.device, precision: str) -> tuple[float, str]:
    """(peak FLOP/s of the device in this precision, how it was computed)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, (bf16, fp32) in GPU_PEAKS.items():
            if key in name:
                value = bf16 if precision == "bf16" else fp32
                return value, f"{name}: datasheet dense {precision} ({'TF32' if precision != 'bf16' else 'bf16'}) " \
                              f"{value / 1e12:.1f} TFLOP/s"
        return float("nan"), f"{name}: no datasheet figure known"
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    amd = "AuthenticAMD" in info
    mhz = max((float(line.split(":", 1)[1]) for line in info.splitlines() if line.startswith("cpu MHz")), default=0)
    wide = "avx512f" in flags
    fp32 = (32 if amd else 64) if wide else (32 if "fma" in flags else 16)  # two FMA pipes; Zen 4 splits 512 bits
    if precision == "bf16" and "amx_bf16" in flags:
        per_cycle, unit = 1024, "AMX-BF16 tile multiply, 1024 FLOP/cycle/core"
    elif precision == "bf16" and "avx512_bf16" in flags:
        per_cycle, unit = (64 if amd else 128), "AVX512-BF16 dot products, " + ("64" if amd else "128") \
            + " FLOP/cycle/core"
    else:
        per_cycle, unit = fp32, f"fp32 FMA, {fp32} FLOP/cycle/core"
    threads = torch.get_num_threads()
    return threads * mhz * 1e6 * per_cycle, f"{threads} threads x {mhz / 1000:.2f} GHz (cpu MHz) x {unit}"


def timed_steps(step, steps: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / steps


def measure(spec: str, ks, repeats: int, device: torch.device, folder: Path, steps: int | None = None) -> dict:
    """Every configuration of one model spec ("model:batch[:width]")."""
    name, batch, *width = spec.split(":")
    config = TrainConfig(model=name, width=int(width[0]) if width else None, batch_size=int(batch),
                         device=str(device), rewind_iter=None, epochs=10, lr=0.05)
    small = config.batch_size <= 32 or device.type == "cuda"
    steps = steps or (20 if small else 3)
    # no epoch ends while timed: every member's epoch is longer than all the steps it takes here
    per_epoch = 2 + 2 * steps * repeats + 2 + 2
    data = synthetic(num_train=config.batch_size * per_epoch, num_test=16).to(device)
    runs = {"bare": bare_step(config, data), "trainer": open_stack(config, data, 1, "loop", folder)._step}
    sizes = {"bare": 1, "trainer": 1}
    for k in ks:
        for mode in ("loop", "grouped"):
            if k > 1:
                runs[f"{mode} {k}"], sizes[f"{mode} {k}"] = open_stack(config, data, k, mode, folder)._step, k
    for step in runs.values():
        step(), step()  # warm-up: allocator, oneDNN primitives
    trainer_loop = open_stack(config, data, 1, "loop", folder)  # its phases timed by wrappers
    trainer_loop._step(), trainer_loop._step()
    times, phase_runs, bare_runs = {key: [] for key in runs}, [], []
    for _ in range(repeats):
        for key, step in runs.items():
            times[key].append(timed_steps(step, steps, device) / sizes[key])
        phase_runs.append(trainer_phases(trainer_loop, steps, device))
        bare_runs.append(bare_phases(runs["bare"], steps, device))
    medians = {key: statistics.median(ts) for key, ts in times.items()}
    by_phase = {p: statistics.median(r[p] for r in phase_runs) for p in phase_runs[0]}
    bare_by_phase = {p: statistics.median(r[p] for r in bare_runs) for p in bare_runs[0]}
    flops = step_flops(config, data)
    peak_flops, peak_how = peak(device, config.precision)
    overhead = {p: by_phase[p] - bare_by_phase.get(p, 0.0) for p in PHASES}
    result = {"model": name, "width": config.width, "batch_size": config.batch_size, "precision": config.precision,
              "channels_last": use_channels_last(config, device), "steps_per_repeat": steps, "repeats": repeats,
              "seconds_per_network_step": medians, "all": times, "trainer_phases": by_phase,
              "bare_phases": bare_by_phase, "host_overhead_by_phase": overhead,
              "host_overhead": medians["trainer"] - medians["bare"], "flops_per_step": flops,
              "arithmetic_rate": flops / medians["bare"], "peak_flops": peak_flops, "peak": peak_how}
    if device.type == "cuda":
        result["synchronizations_in_10_trainer_steps"] = count_syncs(trainer_loop, 10)
    return result


def report(r: dict) -> None:
    bare = r["seconds_per_network_step"]["bare"]
    print(f"\n{r['model']} width {r['width'] or 'default'}, batch {r['batch_size']}, {r['precision']}, "
          f"{'channels_last' if r['channels_last'] else 'NCHW'} (medians of {r['repeats']} repeats of "
          f"{r['steps_per_repeat']} steps)")
    for key, seconds in r["seconds_per_network_step"].items():
        print(f"  {key:12s} {seconds * 1e3:9.2f} ms per network-step   x{seconds / bare:.3f} of bare")
    print(f"  host overhead (trainer - bare): {r['host_overhead'] * 1e3:.2f} ms a step; by phase (trainer's "
          f"phase - bare's, medians of timed passes; their sum {sum(r['host_overhead_by_phase'].values()) * 1e3:.2f} ms):")
    for phase in PHASES:
        print(f"    {phase:30s} {r['host_overhead_by_phase'][phase] * 1e3:8.2f} ms  "
              f"(trainer {r['trainer_phases'][phase] * 1e3:.2f} ms)")
    print(f"  arithmetic: {r['flops_per_step'] / 1e9:.2f} GFLOP a step, {r['arithmetic_rate'] / 1e9:.1f} GFLOP/s "
          f"= {r['arithmetic_rate'] / r['peak_flops']:.1%} of peak {r['peak_flops'] / 1e9:.0f} GFLOP/s "
          f"({r['peak']})")
    if "synchronizations_in_10_trainer_steps" in r:
        print(f"  synchronizations in 10 trainer steps: {r['synchronizations_in_10_trainer_steps']}")


def run(models: str, ks, repeats: int, device: torch.device, steps: int | None = None) -> dict:
    """Every model spec measured and printed; the results as one dict."""
    specs = models.split(",") if isinstance(models, str) else list(models)  # Fire parses a,b as a tuple
    ks = [int(k) for k in (str(ks).split(",") if isinstance(ks, (str, int)) else ks)]
    results = {"device": device_name(device), "torch": torch.__version__, "models": []}
    print(f"device: {results['device']}; torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        for spec in specs:
            results["models"].append(measure(spec, ks, repeats, device, Path(tmp), steps))
            report(results["models"][-1])
    return results


def main(models: str = "resnet20:128,resnet8:32:8", ks: str = "1,4,16", repeats: int = 7, device: str = "auto",
         out: str = "bench/results/step_overhead.json") -> None:
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    results = run(models, ks, repeats, device)
    if out:
        from common import save  # bench/common.py

        save(results, out)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import fire

    fire.Fire(main)
