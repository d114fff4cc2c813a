"""torch.compile of the training step against eager, for ResNet-20 and VGG-16: the trainer's own
step loop (lthfast.training.stack.open_stack, a stack of one, loop mode) with compile=False
and compile=True (inductor on the forward, and so the backward; the flat masked SGD stays one
opaque op), side by side in one process on the same batches, medians of several repeats.

Prints per model: eager and compiled milliseconds a step and their ratio; the compile time (the
first compiled step less a compiled step), and the first step of a SECOND training compiled in
the same process (the price of compiling once per process and shape, not once per training);
and how far the compiled training ends from the eager one after the timed steps, from the same
weights and batches (largest absolute weight difference, and relative to the largest weight).

    python bench/compile_step.py [--models resnet20,vgg16] [--batch-size 128] [--repeats 5]
                                 [--out bench/results/compile_step.json]
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]  # lthfast from this checkout

from lthfast.config.runs import TrainConfig  # noqa: E402
from lthfast.data.synthetic import synthetic  # noqa: E402
from lthfast.foundations.hardware import device_name  # noqa: E402
from lthfast.training.member import TrainJob  # noqa: E402
from lthfast.training.stack import open_stack  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def measure(model: str, batch_size: int, repeats: int, steps: int, device: torch.device, folder: Path,
            compile: bool | str = True) -> dict:
    config = TrainConfig(model=model, batch_size=batch_size, device=str(device), rewind_iter=None, epochs=1,
                         lr=0.05)
    data = synthetic(num_train=batch_size * (repeats * steps + 8), num_test=1).to(device)

    def stack(name, compile):
        return open_stack([TrainJob(config, folder / name)], [0], data, "loop", compile)

    eager, compiled = stack("eager", False), stack("compiled", compile)
    first_eager = _timed(eager._step, device)
    first_compiled = _timed(compiled._step, device)  # compiles the full-batch forward and backward
    second = stack("second", compile)
    second_first = _timed(second._step, device)  # a new training of the same shape, same process
    times = {"eager": [], "compiled": []}
    for _ in range(repeats):
        for name, loop in (("eager", eager), ("compiled", compiled)):
            times[name].append(_timed(lambda: [loop._step() for _ in range(steps)], device) / steps)
    eager_s, compiled_s = statistics.median(times["eager"]), statistics.median(times["compiled"])
    weights = [dict(loop.members[0].model.named_parameters()) for loop in (eager, compiled)]
    largest = max(float(p.detach().abs().max()) for p in weights[0].values())
    diff = max(float((weights[0][n] - weights[1][n]).detach().abs().max()) for n in weights[0])
    return {"model": model, "batch_size": batch_size, "precision": config.precision, "steps_compared": 1 + repeats * steps,
            "eager_seconds": eager_s, "compiled_seconds": compiled_s, "speedup": eager_s / compiled_s,
            "compile_seconds": first_compiled - compiled_s, "first_eager_step": first_eager,
            "second_training_first_step": second_first, "all": times,
            "max_weight_difference": diff, "relative_weight_difference": diff / largest}


def run(models: str, batch_size: int, repeats: int, steps: int, device: torch.device,
        compile: bool | str = True) -> dict:
    """Every model measured and printed; the results as one dict (compile: the setting timed
    against eager; dynamo's "eager" backend checks the plumbing in seconds)."""
    names = models.split(",") if isinstance(models, str) else list(models)
    results = {"device": device_name(device), "torch": torch.__version__, "compile": compile, "models": []}
    print(f"device: {results['device']}; torch {torch.__version__}; medians of {repeats} repeats of {steps} steps")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            r = measure(name, batch_size, repeats, steps, device, Path(tmp), compile)
            results["models"].append(r)
            print(f"{name:9s} batch {batch_size} {r['precision']}: eager {r['eager_seconds'] * 1e3:.1f} ms, compiled "
                  f"{r['compiled_seconds'] * 1e3:.1f} ms a step: x{r['speedup']:.2f}; compile {r['compile_seconds']:.1f} s "
                  f"once, a second training's first step {r['second_training_first_step'] * 1e3:.0f} ms; after "
                  f"{r['steps_compared']} steps the weights differ by {r['max_weight_difference']:.2e} "
                  f"({r['relative_weight_difference']:.1e} of the largest weight)", flush=True)
    return results


def main(models: str = "resnet20,vgg16", batch_size: int = 128, repeats: int = 5, steps: int = 2,
         device: str = "auto", out: str = "bench/results/compile_step.json") -> None:
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    results = run(models, batch_size, repeats, steps, device)
    if out:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from common import save

        save(results, out)


if __name__ == "__main__":
    import fire

    fire.Fire(main)
