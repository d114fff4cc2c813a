"""glibc malloc's thresholds and a process's first training: the trainer's own step
(lthfast.training.stack.open_stack, a stack of one, loop mode, the run's precision, layout and
compile default) in a FRESH process, with glibc's default thresholds (the baseline) and with
lthfast.foundations.hardware.keep_freed_memory, as every lthfast worker and CLI now runs.
A fresh process is the point: by default glibc hands each large block back to the system when
it is freed and raises its threshold only as large blocks come and go, so the first network a
process trains faults its activations' pages in again every step. The two settings alternate,
one fresh process each, and each figure is the median over processes of their median step.

Measured on an Intel Xeon with AMX-BF16 (2 cores), torch 2.14.1, one thread (a study worker's
share), 5,000 training images (cpu-3seed's), ResNet-20 at batch 128 in bf16 channels_last: see README ("Performance").

    python bench/allocator.py [--models resnet20,vgg16] [--threads 1] [--images 5000] [--processes 5]
                              [--out bench/results/allocator.json]
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]  # lthfast from this checkout

import torch  # noqa: E402
from common import device_name, run, save  # noqa: E402

# One fresh process: the trainer's step on `images` generated training images (the data set's size
# matters: freeing a block of 32 MiB or less is what raises glibc's threshold), 2 warm-ups, the
# median of 10 timed steps, in ms.
CHILD = """
import dataclasses, json, statistics, sys, tempfile, time, torch
from pathlib import Path
from lthfast.config.runs import TrainConfig
from lthfast.data.synthetic import synthetic
from lthfast.foundations import hardware
from lthfast.training.member import TrainJob
from lthfast.training.stack import open_stack
model, threads, images, keep = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "keep"
kept = hardware.keep_freed_memory() if keep else False
torch.set_num_threads(threads)
device = hardware.resolve_device("auto")
train = TrainConfig(model=model, batch_size=128, device=str(device), epochs=1)
data = synthetic(num_train=images, num_test=1)
with tempfile.TemporaryDirectory() as folder:
    step = open_stack([TrainJob(train, Path(folder) / "run")], [0], data, "loop")._step
    for _ in range(2):
        step()
    times = []
    for _ in range(10):
        start = time.perf_counter(); step(); times.append(time.perf_counter() - start)
print(json.dumps({"kept": kept, "ms": statistics.median(times) * 1e3}))
"""


def _child(model: str, threads: int, images: int, keep: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", CHILD, model, str(threads), str(images),
                          "keep" if keep else "default"],
                         capture_output=True, text=True, check=True, cwd=ROOT, env={**env, "LTHFAST_MALLOC": ""})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(models: str = "resnet20", threads: int = 1, images: int = 5000, processes: int = 5,
         out: str = "bench/results/allocator.json") -> None:
    results = {"device": device_name(torch.device("cpu")), "threads": threads, "images": images,
               "models": {}}
    for model in (models.split(",") if isinstance(models, str) else list(models)):  # Fire makes a,b a tuple
        default, kept = [], []
        for _ in range(processes):  # alternate, so that a drift of the machine hits both alike
            default.append(_child(model, threads, images, False)["ms"])
            child = _child(model, threads, images, True)
            if not child["kept"]:
                raise SystemExit("error: keep_freed_memory did not apply here (not glibc?): nothing to compare")
            kept.append(child["ms"])
        row = {"default_ms": statistics.median(default), "kept_ms": statistics.median(kept),
               "default_all": default, "kept_all": kept}
        row["speedup"] = row["default_ms"] / row["kept_ms"]
        results["models"][model] = row
        print(f"{model}: first training's step, glibc defaults {row['default_ms']:.1f} ms, keep_freed_memory "
              f"{row['kept_ms']:.1f} ms: x{row['speedup']:.2f} (medians of {processes} fresh processes each, "
              f"{threads} thread(s), {images} training images, {results['device']})", flush=True)
    save(results, out)


if __name__ == "__main__":
    run(main)
