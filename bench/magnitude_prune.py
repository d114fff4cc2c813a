"""Global magnitude pruning of one IMP level: torch/numpy threshold selection vs ops.magnitude_prune.

Per model, on one flat buffer of its prunable weights at initialization (kaiming-normal,
create_model(..., seed=0); 270,896 for ResNet-20, 14,710,464 for VGG-16) with a random
keep-mask of 80% of them (IMP level 1's density), pruning count = ceil(20% of the kept
ones), in one process, on the tensors' device:
  kthvalue         torch.kthvalue(|w|[mask], count): the count-th smallest kept magnitude
                   (the baseline this bench names)
  topk             torch.topk(|w|[mask], count, largest=False)
  numpy sort       open_lth's way: np.sort(np.abs(w[mask].cpu().numpy()))[count], the threshold
  prune <backend>  ops.magnitude_prune(w, mask, count), the new mask itself (exactly count
                   entries removed, ties by index): torch (reference, a full stable sort),
                   cpp (CPU); cuda and triton on CUDA (triton on the CPU runs only interpreted,
                   far too slow to time: skipped there)
The first three give only a threshold; making the mask from it is one more elementwise pass
(and, unlike magnitude_prune, does not remove exactly count entries when magnitudes tie).
Before timing, every backend's mask must equal the torch reference's (torch.equal, for
largest=False and largest=True) and remove exactly the count smallest (largest) kept
magnitudes, checked against the kthvalue threshold; the script stops otherwise.
Methods are interleaved in each repeat; medians over repeats of --calls calls each
(default: ~0.2 s worth, at least 1), after a warm-up.

    python bench/magnitude_prune.py --models resnet20,vgg16 --repeats 7 [--device cuda] [--threads 1]
"""
from __future__ import annotations

import functools
import math
import statistics

import numpy as np
import torch
from common import device_name, run, save, timed

from lthfast import ops
from lthfast.models.families import create_model, prunable_names
from lthfast.ops.kernels.backends import cpp_ops, cuda_ops, triton_available


def setup(model_name: str, device: torch.device):
    model = create_model(model_name, seed=0)
    params = dict(model.named_parameters())
    weights = torch.cat([params[n].detach().reshape(-1) for n in prunable_names(model)])
    kept = round(0.8 * weights.numel())
    mask = torch.zeros(weights.numel(), dtype=torch.bool)
    mask[torch.randperm(weights.numel(), generator=torch.Generator().manual_seed(0))[:kept]] = True
    return weights.to(device), mask.to(device), math.ceil(0.2 * kept)


def check(weights, mask, count, backends) -> None:
    magnitudes, kept = weights.abs(), int(mask.sum())
    for largest in (False, True):
        ref = ops.magnitude_prune(weights, mask, count, largest=largest, backend="torch")
        removed = mask & ~ref
        if (ref & ~mask).any() or int(removed.sum()) != count:
            raise SystemExit(f"torch reference (largest={largest}) did not remove exactly {count} kept entries")
        # the count-th smallest (largest) kept magnitude bounds the removed ones and the kept ones
        threshold = torch.kthvalue(magnitudes[mask], kept - count + 1 if largest else count).values
        low, high = (magnitudes[ref], magnitudes[removed]) if largest else (magnitudes[removed], magnitudes[ref])
        if not (low.max() <= threshold <= high.min()):
            raise SystemExit(f"torch reference (largest={largest}) did not remove the {count} "
                             f"{'largest' if largest else 'smallest'} magnitudes (threshold {threshold.item():.6g})")
        for backend in backends:
            if not torch.equal(ops.magnitude_prune(weights, mask, count, largest=largest, backend=backend), ref):
                raise SystemExit(f"backend {backend} (largest={largest}) differs from the torch reference's mask")


def main(models: str = "resnet20,vgg16", repeats: int = 7, calls: int = 0, device: str = "auto",
         threads: int = 0, out: str = "bench/results/magnitude_prune.json"):
    """Median ms of each threshold baseline and each magnitude_prune backend.
    threads: torch.set_num_threads (also OpenMP's, for the cpp backend); 0 leaves the default."""
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    if device.type == "cpu":
        backends = ["torch"] + (["cpp"] if cpp_ops() is not None else [])
    else:
        backends = ["torch"] + (["cuda"] if cuda_ops() is not None else []) + (["triton"] if triton_available() else [])
    results = {"device": device_name(device), "threads": torch.get_num_threads(), "repeats": repeats,
               "torch": torch.__version__, "models": {}}
    print(f"device: {results['device']}; {results['threads']} torch threads; medians of {repeats} repeats")
    for model_name in models.split(",") if isinstance(models, str) else list(models):  # Fire: a,b is a tuple
        weights, mask, count = setup(model_name, device)
        check(weights, mask, count, backends)
        methods = {
            "kthvalue": lambda: torch.kthvalue(weights.abs()[mask], count).values,
            "topk": lambda: torch.topk(weights.abs()[mask], count, largest=False).values,
            "numpy sort": lambda: np.sort(np.abs(weights[mask].cpu().numpy()))[count],
            **{f"prune {b}": functools.partial(ops.magnitude_prune, weights, mask, count, backend=b)
               for b in backends},
        }
        counts = {}
        for name, fn in methods.items():  # warm-up, then as many calls as take ~0.2 s
            fn()
            counts[name] = calls or max(1, round(0.2 / timed(fn, 1, device)))
        times = {name: [] for name in methods}
        for _ in range(repeats):
            for name, fn in methods.items():
                times[name].append(timed(fn, counts[name], device))
        medians = {name: statistics.median(ts) for name, ts in times.items()}
        rows = {name: {"ms": 1e3 * medians[name], "all_ms": [1e3 * t for t in times[name]],
                       "calls_per_repeat": counts[name], "kthvalue_over_this": medians["kthvalue"] / medians[name]}
                for name in methods}
        results["models"][model_name] = {"elements": weights.numel(), "kept": int(mask.sum()), "count": count,
                                         "results": rows}
        print(f"\n{model_name}: {weights.numel():,} prunable weights, {int(mask.sum()):,} kept, pruning {count:,}")
        print(f"  {'method':14s} {'ms':>9s}  {'x faster than kthvalue':>22s}")
        for name, r in rows.items():
            print(f"  {name:14s} {r['ms']:9.2f}  {r['kthvalue_over_this']:21.2f}x")
    save(results, out)


if __name__ == "__main__":
    run(main)
