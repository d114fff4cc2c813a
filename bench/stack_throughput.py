"""Stacked training throughput: K networks trained together (each stack mode) against the
same K networks trained one after another, side by side in one process.

For each K (default 1, 2, 4, 8), on the tensors' device, ResNet-20 at batch 128 by default,
each network with its own seed, random 20%-density mask and learning rate, on random images:
  separate  K stacks of one (the single trainer's step), trained one after another:
            the time of one step of every network is the sum of their step times
  loop, grouped (streams, graph on CUDA)
            one stack of K networks (lthfast.training.engines); one stack step trains each
            network on one batch
  auto      the mode lthfast.training.auto picks for this K (measured again here, and the
            choice cached in LTHFAST_CACHE/stack_modes.json for later stacks); its figures
            are that mode's
Reported per configuration: seconds for one step of all K networks, images/s of all K
networks together (K x batch / that time), images/s per network (that / K: how fast each
network advances when K of them are trained this way), and the speedup over separate.
Configurations are interleaved in each repeat; medians over repeats of --steps steps
(after one warm-up step).

    python bench/stack_throughput.py --ks 1,2,4,8 --repeats 3 [--model resnet20] [--precision bf16]
                                     [--modes loop,grouped] [--compile] [--threads 2]
"""
from __future__ import annotations

import statistics

import torch
from common import device_name, run, save

from lthfast.config.runs import TrainConfig
from lthfast.training.auto import choose_mode, stack_steps, time_steps
from lthfast.training.engines import CUDA_MODES


def _ints(value) -> list[int]:
    return [int(v) for v in (value.split(",") if isinstance(value, str) else
                             (value if isinstance(value, (list, tuple)) else [value]))]


def _names(value) -> list[str]:
    return value.split(",") if isinstance(value, str) else list(value)  # Fire parses a,b as a tuple


def measure(config: TrainConfig, ks, modes, device, steps: int, repeats: int, compile_=False, log=print) -> dict:
    """{K: {configuration: {...figures}}} for the stacks of `config`'s shape (used by gpu_check too)."""
    results = {}
    for k in ks:
        # auto's choice measured afresh here (and cached for later stacks); its structure is measured uncompiled
        picked = None if compile_ else choose_mode(config, k, device, refresh=True)
        runners = {"separate": [stack_steps(config, 1, "loop", device, compile_, seed=i) for i in range(k)]}
        for mode in list(modes) + ([picked] if picked and picked not in modes else []):
            if mode == "graph" and compile_:
                continue
            runners[mode] = [stack_steps(config, k, mode, device, compile_)]
        times = {name: [] for name in runners}
        for _ in range(repeats):
            for name, steps_fns in runners.items():
                times[name].append(sum(time_steps(fn, steps, 1, device) for fn in steps_fns))
        medians = {name: statistics.median(ts) for name, ts in times.items()}
        rows = {}
        for name, seconds in medians.items():
            total = k * config.batch_size / seconds
            rows[name] = {"seconds_per_step_of_all": seconds, "all_seconds": times[name],
                          "images_per_second": total, "images_per_second_per_network": total / k,
                          "speedup_vs_separate": medians["separate"] / seconds}
        if picked:
            rows["auto"] = {"mode": picked, **rows[picked]}
        results[k] = rows
        log(f"K={k}")
        for name, r in rows.items():
            label = f"auto ({r['mode']})" if name == "auto" else name
            log(f"  {label:16s} {r['seconds_per_step_of_all']:8.3f} s/step of all  {r['images_per_second']:8.0f} img/s  "
                f"{r['images_per_second_per_network']:8.0f} img/s per network  x{r['speedup_vs_separate']:.2f} vs separate")
    return results


def main(ks="1,2,4,8", model: str = "resnet20", width: int | None = None, batch_size: int = 128,
         precision: str = "fp32", modes: str = "", steps: int = 3, repeats: int = 3, compile: bool = False,
         device: str = "auto", threads: int = 0, out: str = "bench/results/stack_throughput.json"):
    """modes: comma-separated (default: loop, grouped, and streams, graph on CUDA).
    compile: torch.compile each mode's forward (inductor; minutes on a CPU)."""
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    available = ["loop", "grouped"] + (list(CUDA_MODES) if device.type == "cuda" else [])
    chosen = _names(modes) if modes else available
    if set(chosen) - set(available):
        raise SystemExit(f"modes {sorted(set(chosen) - set(available))} cannot run on {device}")
    config = TrainConfig(model=model, width=width, batch_size=batch_size, precision=precision,
                         device=str(device), data="synthetic")
    name = device_name(device)
    print(f"device: {name}; {model} batch {batch_size} {precision}{' compiled' if compile else ''}; "
          f"medians of {repeats} repeats of {steps} steps")
    results = {"device": name, "torch": torch.__version__, "model": model, "width": width, "batch_size": batch_size,
               "precision": precision, "compile": compile, "steps": steps, "repeats": repeats,
               "ks": measure(config, _ints(ks), chosen, device, steps, repeats, compile)}
    slower = [k for k, rows in results["ks"].items() if "auto" in rows and rows["auto"]["speedup_vs_separate"] < 1]
    if slower:
        print(f"auto was slower than separate runs at K = {', '.join(map(str, slower))} (target: never)")
    save(results, out)


if __name__ == "__main__":
    run(main)
