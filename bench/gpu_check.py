"""The GPU check: run once the first time a GPU is available. Every GPU path of lthfast
measured in one run, one JSON file, a hard time budget (default 450 s, under 8 minutes).

    python bench/gpu_check.py [--out bench/results/gpu_check.json] [--budget 450]
                              [--sections build,pytest,...] [--dry-run]

On a bare GPU machine with no network (Python, torch 2.11 to 2.14, nothing else assumed), one
command sets up and runs it within 8 minutes, from wheels prepared here with
`bash bench/gpu_wheels.sh` and carried along (.wheels/cp312):

    bash bench/gpu_setup.sh [these arguments]

It installs the missing dependencies and lthfast (keeping the machine's torch), builds
nothing (the `build` section below does, once), and shortens --budget by its own time.

Sections, in this order (each wrapped: a failure is recorded with its error and the next
section runs; the JSON is rewritten after each, so even a kill leaves what was measured;
a section the budget cannot afford is recorded as skipped). Every figure names the device.
  environment        device, GPU memory, torch / CUDA / cuDNN / Triton versions, nvcc, the versions
                     of lthfast's dependencies, gpu_setup.sh's time (setup_seconds) if it ran
  build              the C++ and CUDA extensions, the only build of a gpu_setup.sh run:
                     LTHFAST_BUILD_CUDA=1 python setup.py build_ext --inplace (against this torch;
                     setup.py stamps each with its version, and lthfast refuses one built for another)
  pytest             started in the background: tests/test_op_cuda_sources.py on the device
                     (its nvcc compile-only tests left out: `build` compiled those sources),
                     the Triton tests of tests/test_op_*.py, and tests/test_stack.py (whose
                     stacks train on the default device, the GPU)
  op_checks          every op on CUDA tensors, each backend (cuda, triton) against the torch reference
  stack_equivalence  3 trainings stacked (loop, grouped, streams) vs trained alone, on the device
  smoke_study        one epoch of the smoke study on the GPU (python -m lthfast study --preset smoke)
  pytest (result)    waited for here, before anything is timed
  step_overhead      bench/step_overhead.py: the trainer's step against the bare step, host overhead
                     by phase, synchronizations a step (torch.cuda.set_sync_debug_mode), stacks of 1, 4, 16
  kernels            bench/masked_sgd.py and bench/magnitude_prune.py (each kernel against its
                     torch baseline), and one per-member-lr masked_sgd_ over 21 ResNet-20s against
                     21 calls
  stack_throughput   ResNet-20, batch 128: images/s per network for K = 1, 8, 21 and 32 (if memory
                     allows) in loop, grouped and streams against K separate runs, fp32 and bf16
                     (bench/stack_throughput.py)
  interpolation      a 21-point curve on 10,000 images, stacked (grouped, loop) vs sequential
                     (bench/interpolation.py)
  compiled           graph mode (per-member CUDA graphs) and its equivalence to separate runs; loop
                     compiled with inductor; grouped compiled with mode reduce-overhead (one CUDA
                     graph for the whole stack), fp32 then bf16, K = 1, 8, 21, 32, as the budget allows
  compile_step       bench/compile_step.py: torch.compile of the trainer's step against eager, ResNet-20
                     and VGG-16 at batch 128 (what engines.COMPILED_BY_DEFAULT is decided from)
--sections runs only the named ones (e.g. a second run for `compiled` alone).
--dry-run: every section's plumbing on the CPU with tiny sizes, in under a minute: no build
(the command is recorded), pytest only collects, CUDA-only modes recorded as their expected
errors, compiled forwards through dynamo's eager backend (tests/test_gpu_check.py runs it).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]  # lthfast from this checkout; the bench scripts

SECTIONS = ("environment", "build", "pytest", "op_checks", "stack_equivalence", "smoke_study", "pytest_result",
            "step_overhead", "kernels", "stack_throughput", "interpolation", "compiled", "compile_step")
FULL = dict(model="resnet20", width=None, batch=128, ks=(1, 8, 21, 32), steps=10, repeats=3, sgd_models="resnet20,vgg16",
            points=21, images=10_000, bn_batches=8, check_images=500, op_size=1_000_003, members=21)
DRY = dict(model="resnet8", width=8, batch=8, ks=(1, 2), steps=1, repeats=1, sgd_models="resnet8", points=3,
           images=64, bn_batches=1, check_images=16, op_size=1031, members=3)


class Check:
    """The run: its budget, its JSON, its sections."""

    def __init__(self, out: Path, budget: float, dry_run: bool):
        import torch

        from lthfast.foundations.hardware import device_name

        self.out, self.budget, self.dry_run, self.start = out, budget, dry_run, time.monotonic()
        self.p = DRY if dry_run else FULL
        self.device = torch.device("cpu" if dry_run or not torch.cuda.is_available() else "cuda")
        self.device_name = device_name(self.device)
        self.result = {"device": self.device_name, "dry_run": dry_run, "budget_seconds": budget,
                       "started": time.strftime("%Y-%m-%d %H:%M:%S"), "sections": {}}
        self.current, self.background = None, None
        self.tmp = Path(tempfile.mkdtemp(prefix="gpu_check_"))

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.start)

    def write(self) -> None:
        self.result["seconds"] = time.monotonic() - self.start
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.result, indent=2, default=str))
        tmp.replace(self.out)

    def section(self, name: str, fn, needs: float) -> None:
        """Run fn() -> dict as section `name` if about `needs` seconds are left."""
        if self.left() < needs:
            entry = {"status": "skipped", "reason": f"time budget: {self.left():.0f} s left, needs about {needs:.0f} s"}
        else:
            self.current, start = name, time.monotonic()
            try:
                entry = {"status": "ok", **fn()}
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - one failure must not lose the rest
                entry = {"status": "error", "error": f"{type(exc).__name__}: {exc}",
                         "traceback": traceback.format_exc()[-3000:]}
            entry["seconds"] = time.monotonic() - start
            self.current = None
        entry["device"] = self.device_name
        self.result["sections"][name] = entry
        print(f"[{time.monotonic() - self.start:6.1f} s] {name}: {entry['status']}"
              f"{' - ' + entry.get('error', entry.get('reason', '')) if entry['status'] != 'ok' else ''}", flush=True)
        self.write()

    def run(self, cmd: list[str], timeout: float, env: dict | None = None) -> dict:
        """A subprocess in the checkout, bounded by `timeout` and the budget; its exit status and output tail."""
        timeout = max(1.0, min(timeout, self.left() - 5))
        start = time.monotonic()
        try:
            done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                                  capture_output=True, text=True, timeout=timeout)
            rc, output = done.returncode, done.stdout + done.stderr
        except subprocess.TimeoutExpired as exc:
            rc, output = "timeout", f"{exc.stdout or ''}{exc.stderr or ''}"
            output = output.decode() if isinstance(output, bytes) else output
        return {"command": " ".join(cmd), "returncode": rc, "seconds": time.monotonic() - start,
                "output_tail": output[-4000:]}


# ----------------------------------------------------------------------------- sections

def environment(check: Check) -> dict:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    from lthfast.ops.kernels.backends import triton_available

    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": sys.version.split()[0],
            "nvcc": shutil.which("nvcc"), "cuda_home": CUDA_HOME, "cpu_count": os.cpu_count()}
    if os.environ.get("LTHFAST_SETUP_SECONDS"):  # set by bench/gpu_setup.sh
        info["setup_seconds"] = float(os.environ["LTHFAST_SETUP_SECONDS"])
    from importlib.metadata import PackageNotFoundError, version
    packages = {}
    for name in ("torchvision", "numpy", "scipy", "matplotlib", "pillow", "fire", "tqdm", "filelock", "pybind11",
                 "ninja", "pytest", "ray"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    info["packages"] = packages
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=props.total_memory / 2**30, capability=f"{props.major}.{props.minor}",
                    gpus=torch.cuda.device_count(), cudnn=torch.backends.cudnn.version())
    if triton_available():
        import triton
        info["triton"] = triton.__version__
    return info


def build(check: Check) -> dict:
    cmd = [sys.executable, "setup.py", "build_ext", "--inplace"]
    if check.dry_run:
        return {"dry_run": True, "command": "LTHFAST_BUILD_CUDA=1 " + " ".join(cmd), "nvcc": shutil.which("nvcc")}
    result = check.run(cmd, 300, {"LTHFAST_BUILD_CUDA": "1", "MAX_JOBS": str(min(16, os.cpu_count() or 4))})
    probe = check.run([sys.executable, "-c", "import lthfast._cuda as c, lthfast._C as h; "
                       "print(sorted(n for n in dir(c) if not n.startswith('_')))"], 60)
    from lthfast.ops.kernels.backends import cpp_ops, cuda_ops
    cpp_ops.cache_clear(), cuda_ops.cache_clear()  # found now, not cached as absent
    if probe["returncode"] != 0:
        raise RuntimeError(f"the CUDA extension does not import after the build: {probe['output_tail'][-800:]}")
    return {"build": result, "extension": probe["output_tail"].strip()}


PYTEST = [["tests/test_op_cuda_sources.py", "-k", "not compiles_with_nvcc and not compiles_against_torch"],
          ["tests/test_op_masked_sgd.py", "tests/test_op_apply_mask.py", "tests/test_op_magnitude_prune.py",
           "tests/test_op_lerp_points.py", "-k", "triton"],
          ["tests/test_stack.py"]]


def pytest_start(check: Check) -> dict:
    """Start the test runs in the background (their output in files); pytest_result waits."""
    runs = []
    for args in PYTEST:
        log = check.tmp / f"pytest_{len(runs)}.log"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args] + \
              (["--collect-only"] if check.dry_run else [])
        runs.append((cmd, log))
    # One shell runs them one after another; each one's exit status lands beside its output.
    shell = "; ".join(f"{shlex.join(cmd)} > {shlex.quote(str(log))} 2>&1; echo $? > {shlex.quote(str(log) + '.rc')}"
                      for cmd, log in runs)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MAX_JOBS": "4"}
    check.background = (subprocess.Popen(["bash", "-c", shell], cwd=ROOT, env=env, start_new_session=True),
                        runs, time.monotonic())
    return {"started": [" ".join(cmd) for cmd, _ in runs]}


def pytest_result(check: Check) -> dict:
    if check.background is None:
        raise RuntimeError("pytest was not started (run the pytest section first)")
    process, runs, started = check.background
    try:
        process.wait(timeout=max(1.0, check.left() - 150))  # leave time for the timings
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    results = []
    for cmd, log in runs:
        text = log.read_text() if log.exists() else ""
        rc_file = Path(f"{log}.rc")
        lines = [line for line in text.splitlines() if line.strip()]
        results.append({"command": " ".join(cmd), "returncode": int(rc_file.read_text().split()[0]) if rc_file.exists()
                        else "killed (time budget)", "summary": lines[-1] if lines else "", "output_tail": text[-3000:]})
    failed = [r for r in results if r["returncode"] != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} test run(s) failed: " + "; ".join(r["summary"] for r in failed)
                           + "\n" + json.dumps(results)[-6000:])
    return {"runs": results, "seconds_since_start": time.monotonic() - started}


from gpu_check_parts import (  # noqa: E402
    compile_step,
    compiled,
    interpolation,
    kernels,
    op_checks,
    smoke_study,
    stack_equivalence,
    stack_throughput,
    step_overhead,
)

NEEDS = {"environment": 1, "build": 60, "pytest": 1, "op_checks": 15, "stack_equivalence": 20, "smoke_study": 90,
         "pytest_result": 5, "step_overhead": 40, "kernels": 20, "stack_throughput": 40, "interpolation": 20,
         "compiled": 60, "compile_step": 90}
FUNCTIONS = {"environment": environment, "build": build, "pytest": pytest_start, "op_checks": op_checks,
             "stack_equivalence": stack_equivalence, "smoke_study": smoke_study, "pytest_result": pytest_result,
             "kernels": kernels, "stack_throughput": stack_throughput, "interpolation": interpolation,
             "compiled": compiled, "step_overhead": step_overhead, "compile_step": compile_step}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="the JSON file (default bench/results/gpu_check.json; with --dry-run "
                                      "bench/results/gpu_check_dry_run.json)")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for the whole run (default 450)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset of: " + ", ".join(SECTIONS))
    parser.add_argument("--dry-run", action="store_true", help="the plumbing on the CPU, tiny sizes, under a minute")
    args = parser.parse_args(argv)
    wanted = [s for s in args.sections.split(",") if s]
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # Triton kernels on CPU tensors, before triton is imported
    out = args.out or ROOT / "bench" / "results" / ("gpu_check_dry_run.json" if args.dry_run else "gpu_check.json")
    check = Check(Path(out), args.budget, args.dry_run)

    def out_of_time(signum, frame):  # the last guard: whatever runs, the JSON is written and the run ends
        check.result["sections"][check.current or "run"] = {"status": "killed", "reason": "hard time budget",
                                                            "device": check.device_name}
        check.write()
        if check.background is not None:
            os.killpg(check.background[0].pid, signal.SIGKILL)
        os._exit(3)
    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(int(args.budget) + 20)
    if "pytest_result" in wanted and "pytest" not in wanted:
        wanted.insert(wanted.index("pytest_result"), "pytest")
    for name in SECTIONS:
        if name in wanted:
            check.section(name, lambda fn=FUNCTIONS[name]: fn(check), NEEDS[name])
    signal.alarm(0)
    check.write()
    shutil.rmtree(check.tmp, ignore_errors=True)
    print(f"written {check.out} ({check.result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
