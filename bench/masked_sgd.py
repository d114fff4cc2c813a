"""One masked SGD step: torch.optim.SGD + mask multiply vs lthfast's fused ops.masked_sgd_.

Per model, over ALL its parameters (272,474 for ResNet-20, 14,724,042 for VGG-16) with a
random 20%-density keep-mask over the prunable weights (the other entries kept), in one
process, on the tensors' device:
  baseline   what open_lth-style code does: the model's own parameter tensors (one per
             parameter) with random gradients, torch.optim.SGD(lr=0.01, momentum=0.9,
             weight_decay=1e-4, foreach=True).step(), then p.mul_(mask_p) and
             momentum_buffer.mul_(mask_p) per prunable tensor (float masks), which zeroes
             the same entries masked_sgd_ zeroes
  <backend>  ops.masked_sgd_ on flat buffers of the same total size, the same update in one
             call: torch (reference), cpp (CPU); cuda and triton on CUDA (triton on the CPU
             runs only interpreted, far too slow to time: skipped there)
  copy       dst.copy_(src) of one flat float32 buffer of that size: the copy bandwidth
Bytes per element: a masked SGD step reads p, grad, momentum (4 B each) and the bool mask
(1 B) and writes p and momentum (4 B each): 21 B. A copy reads 4 B and writes 4 B: 8 B.
Effective GB/s = bytes/element x elements / median time; "% copy" is that over the copy's
GB/s (about 100% = as fast as memory allows; the baseline is given the same 21 B credit).
Each backend and the baseline are first checked against the torch reference (two steps,
rtol 1e-5, atol 1e-6); the script stops if one differs. Configurations are interleaved in
each repeat; medians over repeats of --steps steps (default: ~0.2 s worth, at least 3).

    python bench/masked_sgd.py --models resnet20,vgg16 --repeats 7 [--device cuda] [--backends cpp]
                               [--threads 1]
On a CPU shared with another busy process, every multi-threaded op waits for a time slice
(a 1 MB copy can take ms instead of us): compare --threads 1 there.
"""
from __future__ import annotations

import functools
import math
import statistics

import torch
from common import device_name, run, save, timed

from lthfast import ops
from lthfast.models.families import create_model, prunable_names
from lthfast.ops.kernels.backends import cpp_ops, cuda_ops, triton_available

LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 1e-4
SGD_BYTES, COPY_BYTES = 21, 8


def available_backends(device: torch.device, wanted) -> list[str]:
    if device.type == "cpu":
        names = ["torch"] + (["cpp"] if cpp_ops() is not None else [])
    else:
        names = ["torch"] + (["cuda"] if cuda_ops() is not None else []) + (["triton"] if triton_available() else [])
    if wanted:
        wanted = wanted.split(",") if isinstance(wanted, str) else list(wanted)  # Fire parses a,b as a tuple
        if set(wanted) - set(names):
            raise SystemExit(f"backends {sorted(set(wanted) - set(names))} are not available on {device}")
        names = [n for n in names if n in wanted]
    return names


def setup(model_name: str, device: torch.device):
    """The model (random .grad on every parameter), float masks per prunable tensor, flat copies."""
    model = create_model(model_name, seed=0).to(device)
    prunable, g = set(prunable_names(model)), torch.Generator().manual_seed(0)
    keeps, masked = [], []
    for name, p in model.named_parameters():
        p.grad = torch.randn(p.shape, generator=g).mul_(0.01).to(device)
        keep = torch.rand(p.shape, generator=g) < 0.2 if name in prunable else torch.ones(p.shape, dtype=torch.bool)
        keeps.append(keep.reshape(-1).to(device))
        if name in prunable:
            masked.append((p, keep.float().to(device)))
    flat = lambda ts: torch.cat([t.detach().reshape(-1) for t in ts])  # noqa: E731
    params = list(model.parameters())
    return model, masked, flat(params), flat([p.grad for p in params]), torch.cat(keeps)


def baseline_step(model, masked):
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, foreach=True)

    def step():
        opt.step()
        with torch.no_grad():
            for p, m in masked:
                p.mul_(m)
                opt.state[p]["momentum_buffer"].mul_(m)
    step.opt = opt
    return step


def check(params0, grads, mask, backends, baseline, model) -> None:
    def run(backend):
        p, buf = params0.clone(), torch.zeros_like(params0)
        for _ in range(2):  # the second step uses a nonzero momentum buffer
            ops.masked_sgd_(p, grads, buf, mask, LR, MOMENTUM, WEIGHT_DECAY, backend=backend)
        return p, buf
    ref = run("torch")
    results = {b: run(b) for b in backends}
    baseline(), baseline()
    results["baseline"] = tuple(torch.cat([t.detach().reshape(-1) for t in ts]) for ts in (
        model.parameters(), (baseline.opt.state[p]["momentum_buffer"] for p in model.parameters())))
    for name, (p, buf) in results.items():
        for what, got, want in (("weights", p, ref[0]), ("momentum buffer", buf, ref[1])):
            if not torch.allclose(got, want, rtol=1e-5, atol=1e-6):
                raise SystemExit(f"{name}: {what} differ from the torch reference "
                                 f"(max abs difference {(got - want).abs().max().item():.3g}); not timing")


def main(models: str = "resnet20,vgg16", repeats: int = 7, steps: int = 0, device: str = "auto",
         backends: str = "", threads: int = 0, out: str = "bench/results/masked_sgd.json"):
    """Median ms per masked SGD step of the baseline, each masked_sgd_ backend, and a copy.
    threads: torch.set_num_threads (also OpenMP's, for the cpp backend); 0 leaves the default."""
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    names = available_backends(device, backends)
    results = {"device": device_name(device), "threads": torch.get_num_threads(), "repeats": repeats,
               "torch": torch.__version__, "bytes_per_element": {"masked_sgd": SGD_BYTES, "copy": COPY_BYTES},
               "models": {}}
    print(f"device: {results['device']}; {results['threads']} torch threads; medians of {repeats} repeats")
    print(f"bytes/element: masked SGD {SGD_BYTES} (read p, grad, momentum 4 B each + mask 1 B; write p, "
          f"momentum 4 B each), copy {COPY_BYTES} (read 4 B + write 4 B)")
    for model_name in models.split(",") if isinstance(models, str) else list(models):
        model, masked, params0, grads, mask = setup(model_name, device)
        baseline = baseline_step(model, masked)
        check(params0, grads, mask, names, baseline, model)
        n = params0.numel()
        p, buf, dst = params0.clone(), torch.zeros_like(params0), torch.empty_like(params0)
        runners = {"baseline": baseline,
                   **{b: functools.partial(ops.masked_sgd_, p, grads, buf, mask, LR, MOMENTUM, WEIGHT_DECAY,
                                           backend=b) for b in names},
                   "copy": functools.partial(dst.copy_, grads)}
        counts = {}
        for name, fn in runners.items():  # warm-up, then as many steps as take ~0.2 s
            fn(), fn()
            counts[name] = steps or max(3, math.ceil(0.2 / timed(fn, 1, device)))
        times = {name: [] for name in runners}
        for _ in range(repeats):
            for name, fn in runners.items():
                times[name].append(timed(fn, counts[name], device))
        medians = {name: statistics.median(ts) for name, ts in times.items()}
        copy_gbs = COPY_BYTES * n / medians["copy"] / 1e9
        rows = {}
        for name in runners:
            gbs = (COPY_BYTES if name == "copy" else SGD_BYTES) * n / medians[name] / 1e9
            rows[name] = {"ms_per_step": 1e3 * medians[name], "all_ms": [1e3 * t for t in times[name]],
                          "steps_per_repeat": counts[name], "gb_per_s": gbs, "percent_of_copy": 100 * gbs / copy_gbs}
            if name != "copy":
                rows[name]["speedup_vs_baseline"] = medians["baseline"] / medians[name]
        results["models"][model_name] = {"elements": n, "kept": int(mask.sum()), "results": rows}
        print(f"\n{model_name}: {n:,} parameters, {int(mask.sum()):,} kept")
        print(f"  {'config':10s} {'ms/step':>9s} {'baseline/x':>10s} {'GB/s':>7s} {'% copy':>7s}")
        for name, r in rows.items():
            ratio = f"{r['speedup_vs_baseline']:9.2f}x" if name != "copy" else " " * 10
            print(f"  {name:10s} {r['ms_per_step']:9.3f} {ratio} {r['gb_per_s']:7.1f} {r['percent_of_copy']:6.0f}%")
    save(results, out)


if __name__ == "__main__":
    run(main)
