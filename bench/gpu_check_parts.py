"""The measuring sections of bench/gpu_check.py (see its docstring); each takes the Check and
returns a dict for the JSON ("status": "failed" in it marks a check that ran and failed)."""
from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import torch
from common import timed


def _json(path):
    return json.loads(path.read_text())


def _op_backends(check) -> list[str]:
    from lthfast.ops.kernels.backends import cpp_ops, cuda_ops, triton_available
    own = ["cuda"] if check.device.type == "cuda" and cuda_ops() is not None else \
        (["cpp"] if check.device.type == "cpu" and cpp_ops() is not None else [])
    return own + (["triton"] if triton_available() else [])


def op_checks(check) -> dict:
    """Every op, every backend that runs on the device, against the torch reference."""
    from lthfast import ops
    device, n, results = check.device, check.p["op_size"], {}
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(device)

    def keep(size, density):
        return (torch.rand(size, generator=g) < density).to(device)

    n3 = n - n % 3  # three members for the per-member learning rates
    for backend in _op_backends(check):
        for dtype in (torch.float32, torch.bfloat16):
            for nesterov in (False, True):
                for member_lr in (False, True):
                    p0, grad, mask = rand(n3).to(dtype), rand(n3).to(dtype), keep(n3, 0.3)
                    lr = torch.tensor([0.1, 0.0, 0.02], device=device) if member_lr else 0.05
                    out = {}
                    for which in ("torch", backend):
                        p, buf = p0.clone(), torch.zeros_like(p0)
                        for _ in range(2):  # the second step with a nonzero momentum buffer
                            ops.masked_sgd_(p, grad, buf, mask, lr, 0.9, 5e-4, nesterov, backend=which)
                        out[which] = (p.float(), buf.float())
                    diff = max((a - b).abs().max().item() for a, b in zip(out["torch"], out[backend]))
                    tol = 1e-5 if dtype == torch.float32 else 2e-2
                    pruned_zero = bool((out[backend][0][~mask] == 0).all())
                    results[f"masked_sgd/{backend}/{str(dtype)[6:]}/nesterov={nesterov}/member_lr={member_lr}"] = {
                        "max_abs_diff": diff, "ok": diff <= tol * max(1.0, out["torch"][0].abs().max().item())
                        and pruned_zero}
        w, m = rand(n), keep(n, 0.8)
        for largest in (False, True):
            count = int(m.sum()) // 5
            same = torch.equal(ops.magnitude_prune(w, m, count, largest=largest, backend=backend),
                               ops.magnitude_prune(w, m, count, largest=largest, backend="torch"))
            results[f"magnitude_prune/{backend}/largest={largest}"] = {"ok": same}
        for shape, fmt in (((n,), torch.contiguous_format), ((64, 32, 3, 3), torch.channels_last)):
            t = rand(*shape).contiguous(memory_format=fmt)
            mk = torch.empty_like(t, dtype=torch.bool).copy_(keep(t.numel(), 0.5).view(shape))
            results[f"apply_mask/{backend}/{'x'.join(map(str, shape))}"] = {
                "ok": torch.equal(ops.apply_mask_(t.clone(), mk, backend=backend),
                                  ops.apply_mask_(t.clone(), mk, backend="torch"))}
        if backend != "cpp":  # lerp_points has no C++ kernel
            a, b, alphas = rand(n), rand(n), torch.linspace(0, 1, 21, device=device)
            got, want = ops.lerp_points(a, b, alphas, backend=backend), ops.lerp_points(a, b, alphas, backend="torch")
            results[f"lerp_points/{backend}"] = {"max_abs_diff": (got - want).abs().max().item(),
                                                 "ok": torch.allclose(got, want, rtol=1e-6, atol=1e-6)
                                                 and torch.equal(got[0], a) and torch.equal(got[-1], b)}
    bad = [name for name, r in results.items() if not r["ok"]]
    return {"backends": _op_backends(check), "checks": results, **({"status": "failed", "failed": bad} if bad else {})}


# ----------------------------------------------------------------------------- stacks

def _three_jobs(root, device: str):
    """Three small trainings with different masks, seeds, starts, lrs and lengths (as tests/test_stack.py)."""
    from lthfast.config.runs import TrainConfig
    from lthfast.models.families import create_model, prunable_names
    from lthfast.training.stack import TrainJob

    base = dict(model="resnet8", width=8, data="synthetic", train_subset=120, batch_size=32, device=device,
                precision="fp32")

    def mask(seed, density):
        params = dict(create_model("resnet8", 8).named_parameters())
        g = torch.Generator().manual_seed(seed)
        return {n: torch.rand(params[n].shape, generator=g) < density for n in prunable_names(create_model("resnet8", 8))}
    return [TrainJob(TrainConfig(**base, seed=0, epochs=3), root / "a", mask(1, 0.3)),
            TrainJob(TrainConfig(**base, seed=1, epochs=4, data_seed=11), root / "b", mask(2, 0.5),
                     create_model("resnet8", 8, seed=5).state_dict(), start_iteration=6),
            TrainJob(TrainConfig(**base, seed=2, epochs=2, lr=0.001, milestones=()), root / "c", mask(3, 0.2))]


def stack_equivalence(check, modes=("loop", "grouped", "streams"), compile_=False) -> dict:
    """The three trainings stacked in each mode against trained alone: max |difference| of
    every member's final weights and BatchNorm statistics, and its pruned weights zero."""
    from lthfast.data.loading import load_dataset
    from lthfast.foundations.errors import LthError
    from lthfast.foundations.files import load_tensors
    from lthfast.training.stack import train_stack
    from lthfast.training.trainer import train

    device = str(check.device)
    data = load_dataset("synthetic", train_subset=120)
    root = check.tmp / f"equivalence_{time.monotonic_ns()}"
    alone = _three_jobs(root / "alone", device)
    start = time.monotonic()
    for job in alone:
        train(job.config, job.folder, data, job.mask, job.initial_weights, job.start_iteration, progress=False)
    results = {"separate_seconds": time.monotonic() - start}
    for mode in modes:
        jobs = _three_jobs(root / mode, device)
        start = time.monotonic()
        try:
            train_stack(jobs, data, mode=mode, compile=compile_, progress=False)
        except LthError as exc:
            results[mode] = {"error": str(exc), "expected": check.device.type == "cpu"}
            continue
        members = []
        for job, other in zip(jobs, alone):
            mine, theirs = load_tensors(job.folder / "final.pt"), load_tensors(other.folder / "final.pt")
            diffs = [(mine[k].double() - theirs[k].double()).abs().max().item() for k in mine if mine[k].is_floating_point()]
            members.append({"max_abs_diff": max(diffs), "identical": all(torch.equal(mine[k], theirs[k]) for k in mine),
                            "pruned_exactly_zero": all(bool((mine[n][~m] == 0).all()) for n, m in job.mask.items())})
        results[mode] = {"seconds": time.monotonic() - start, "members": members}
    unexpected = [m for m, r in results.items() if isinstance(r, dict) and "error" in r and not r["expected"]]
    zeros = all(x["pruned_exactly_zero"] for r in results.values() if isinstance(r, dict) for x in r.get("members", []))
    return {"modes": results, **({"status": "failed"} if unexpected or not zeros else {})}


def smoke_study(check) -> dict:
    """One epoch of the smoke study, trainings stacked (the default) and one at a time, and
    the paper-resnet20 plan grouped into stacks with its cost before and after stacking."""
    commands = {}
    # the dry run's stacks hold 2: timing auto's modes for a stack of 16 costs seconds on a CPU
    for name, extra in (("stacked", ["--stack", "2"] if check.dry_run else []), ("one_at_a_time", ["--stack", "1"])):
        commands[name] = [sys.executable, "-m", "lthfast", "study", "--preset", "smoke", "--epochs", "1", "--root",
                          str(check.tmp / f"study_{name}"), "--noreport", *extra] + (["--dry-run"] if check.dry_run else [])
    # the dry run's plan calibrates batches of 16 and times stacks of 2 in one mode: 21 ResNet-20s
    # of batch 128 in every mode take minutes to time on a CPU
    commands["paper_plan"] = [sys.executable, "-m", "lthfast", "study", "--preset", "paper-resnet20", "--root",
                              str(check.tmp / "paper"), "--dry-run"] \
        + (["--batch-size", "16", "--stack", "2", "--stack-mode", "loop"] if check.dry_run else [])
    if check.dry_run:  # plans only, no figure kept: the three at once, a thread each (threads would wait on each other)
        with ThreadPoolExecutor(len(commands)) as pool:
            out = dict(zip(commands, pool.map(lambda cmd: check.run(cmd, 120, {"OMP_NUM_THREADS": "1"}),
                                              commands.values())))
    else:  # one at a time, so that each one's wall time is its own
        out = {name: check.run(cmd, 120) for name, cmd in commands.items()}
    failed = any(r["returncode"] != 0 for r in out.values())
    return {**out, **({"status": "failed"} if failed else {})}


def kernels(check) -> dict:
    """Each kernel against its torch baseline (the kernel benches), and the stack's one
    per-member-lr masked SGD call against one call per member."""
    import magnitude_prune as prune_bench
    import masked_sgd as sgd_bench

    from lthfast import ops
    from lthfast.models.families import parameter_count

    dry, p, device = check.dry_run, check.p, check.device
    sgd_out, prune_out = check.tmp / "masked_sgd.json", check.tmp / "magnitude_prune.json"
    sgd_bench.main(models=p["sgd_models"], repeats=1 if dry else 5, steps=1 if dry else 0, device=str(device),
                   out=str(sgd_out))
    prune_bench.main(models=p["sgd_models"], repeats=1 if dry else 5, calls=1 if dry else 0, device=str(device),
                     out=str(prune_out))
    k, n = p["members"], parameter_count(p["model"], p["width"])
    g = torch.Generator().manual_seed(0)
    params, grads = torch.randn(k * n, generator=g).to(device), torch.randn(k * n, generator=g).to(device)
    mask, rates = (torch.rand(k * n, generator=g) < 0.2).to(device), [0.1 / (1 + i) for i in range(k)]
    lr = torch.tensor(rates, dtype=torch.float32, device=device)
    one_p, one_b, many_p, many_b = params.clone(), torch.zeros_like(params), params.clone(), torch.zeros_like(params)

    def one():
        ops.masked_sgd_(one_p, grads, one_b, mask, lr, 0.9, 1e-4)

    def many():
        for i in range(k):
            part = slice(i * n, (i + 1) * n)
            ops.masked_sgd_(many_p[part], grads[part], many_b[part], mask[part], rates[i], 0.9, 1e-4)
    one(), many()
    same = (one_p - many_p).abs().max().item()
    calls = 3 if dry else 200
    t_one, t_many = timed(one, calls, device), timed(many, calls, device)
    member_lr = {"members": k, "parameters_per_member": n, "max_abs_diff_vs_separate_calls": same,
                 "ms_one_call": 1e3 * t_one, "ms_one_call_per_member": 1e3 * t_many, "speedup": t_many / t_one}
    return {"masked_sgd": _json(sgd_out), "magnitude_prune": _json(prune_out), "member_lr_masked_sgd": member_lr}


def _throughput(check, precision: str, labelled_runs, ks) -> dict:
    """{label: {K: rows}} of bench/stack_throughput.measure for (label, modes, compile) runs, K by K,
    as long as the budget allows (K = 32 only where K = 21's peak memory says it fits)."""
    import stack_throughput as bench

    from lthfast.config.runs import TrainConfig

    p, device = check.p, check.device
    config = TrainConfig(model=p["model"], width=p["width"], batch_size=p["batch"], precision=precision,
                         device=str(device), data="synthetic")
    out = {}
    for label, modes, compile_ in labelled_runs:
        rows, first = {}, True
        for k in ks:
            needs = (60 if first and compile_ else 5) + 0.5 * k
            if check.left() < needs + 20:
                rows[k] = {"skipped": f"time budget ({check.left():.0f} s left)"}
                continue
            if device.type == "cuda" and k == 32 and 21 in rows and "peak_memory_gib" in rows[21]:
                free, _ = torch.cuda.mem_get_info(device)
                if rows[21]["peak_memory_gib"] * 2**30 * 32 / 21 * 1.3 > free:
                    rows[k] = {"skipped": "memory: K = 21's peak scaled to 32 does not fit"}
                    continue
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            try:
                rows[k] = bench.measure(config, [k], modes, device, p["steps"], p["repeats"], compile_)[k]
            except Exception as exc:  # noqa: BLE001 - e.g. out of memory at K = 32: recorded, the rest goes on
                rows[k] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            if device.type == "cuda":
                rows[k]["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            first = False
        out[label] = rows
    return out


def stack_throughput(check) -> dict:
    modes = ["loop", "grouped"] + (["streams"] if check.device.type == "cuda" else [])
    results = {precision: _throughput(check, precision, [("uncompiled", modes, False)], check.p["ks"])["uncompiled"]
               for precision in ("fp32", "bf16")}
    summary = {}  # the target: at least 5x over one at a time at K = 8 (on a GPU)
    for precision, rows in results.items():
        at8 = {mode: r["speedup_vs_separate"] for mode, r in rows.get(8, {}).items()
               if isinstance(r, dict) and "speedup_vs_separate" in r and mode not in ("separate", "auto")}
        summary[precision] = {"speedup_vs_separate_at_K8": at8,
                              "best_at_K8": max(at8.items(), key=lambda item: item[1]) if at8 else None}
    return {"model": check.p["model"], "batch_size": check.p["batch"], "steps": check.p["steps"],
            "repeats": check.p["repeats"], "results": results, "summary": summary}


def interpolation(check) -> dict:
    import interpolation as bench
    p, out = check.p, {}
    for stack in ("grouped", "loop"):
        path = check.tmp / f"interpolation_{stack}.json"
        bench.main(model=p["model"], points=p["points"], images=p["images"], bn_batches=p["bn_batches"],
                   repeats=1 if check.dry_run else 2, device=str(check.device), stack=stack,
                   check_images=p["check_images"], out=str(path))
        out[stack] = _json(path)
    return out


def compiled(check) -> dict:
    """graph mode (its equivalence first), then compiled forwards, fp32 then bf16, K by K."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    for name in ("cache_size_limit", "recompile_limit"):  # one entry per mode, precision and K
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 64)
    if check.dry_run:  # the plumbing: dynamo's eager backend, loop, K = 1; graph's CPU error
        runs, ks, precisions = [("loop+eager", ["loop"], "eager")], (1,), ("fp32",)
        equivalence = stack_equivalence(check, modes=("graph",))
    else:
        runs = [("graph", ["graph"], False), ("loop+inductor", ["loop"], True),
                ("grouped+reduce-overhead", ["grouped"], "reduce-overhead")]
        ks, precisions = check.p["ks"], ("fp32", "bf16")
        equivalence = stack_equivalence(check, modes=("graph",))
    results = {precision: _throughput(check, precision, runs, ks) for precision in precisions}
    return {"graph_equivalence": equivalence, "results": results,
            "inductor_counters": {k: dict(v) for k, v in counters.items() if k in ("inductor", "stats")}}



def step_overhead(check) -> dict:
    """bench/step_overhead.py: the trainer's step against the bare step (host overhead by
    phase, synchronizations counted by torch.cuda.set_sync_debug_mode), stacks of K."""
    import step_overhead as bench
    specs = "resnet20:128,resnet8:32:8" if not check.dry_run else "resnet8:8:8"
    ks = "1,4,16" if not check.dry_run else "1,2"
    return bench.run(specs, ks, check.p["repeats"], check.device, steps=2 if check.dry_run else None)


def compile_step(check) -> dict:
    """bench/compile_step.py: torch.compile of the training step against eager, ResNet-20 and
    VGG-16 at batch 128 (the dry run: the tiny model through dynamo's eager backend)."""
    import compile_step as bench
    if check.dry_run:
        return bench.run("resnet8", 8, 1, 1, check.device, compile="eager")
    return bench.run("resnet20,vgg16", 128, check.p["repeats"], 2, check.device)
