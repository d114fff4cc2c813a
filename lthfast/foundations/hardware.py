"""The device lthfast runs on: resolving `--device`, its name (recorded beside every
timing) and the memory layout that is fastest there."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import re
import subprocess
from pathlib import Path

import torch

from lthfast.foundations.errors import LthError


def check_device(name: str) -> str:
    """`name` if it is a device lthfast runs on (auto, cpu or cuda[:N]), else a one-line LthError."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(name)):
        raise LthError(f"--device must be auto, cpu or cuda[:N], got {name!r}")
    return name


def resolve_device(name: str) -> torch.device:
    """`auto` (CUDA if available, else CPU), `cpu` or `cuda[:N]`; LthError for any other name,
    or if CUDA is asked for and absent."""
    if check_device(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LthError("--device cuda asked for, but no CUDA device is available")
    return device


def channels_last(width: int, device: torch.device, setting: bool | None = None) -> bool:
    """Whether models of base width `width` run channels_last on `device` (setting None: where
    faster). Measured faster on the CPU (bench/train_throughput.py) and usual on GPUs; except
    below width 8 on the CPU, where oneDNN's channels_last backward hangs or dies with a bus
    error (torch 2.14.1, ResNet-8 at width 4)."""
    if setting is None:
        return device.type != "cpu" or width >= 8
    return bool(setting)


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """A host tensor on `device` without making the host wait for the GPU: through pinned
    memory, asynchronously, on CUDA (a copy from pageable memory synchronizes); `t` itself
    on the CPU. tests/test_step_sync.py checks that a training step needs no other transfer."""
    device = torch.device(device)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)  # t itself where it is already


def device_name(device: torch.device) -> str:
    """A readable name of `device`: the GPU's, or the CPU model and torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
        name = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name"))
    except (OSError, StopIteration):
        name = platform.processor() or platform.machine()
    return f"CPU {name}, {torch.get_num_threads()} threads"


def total_memory() -> int:
    """Bytes of physical RAM plus the largest visible GPU's memory (an upper bound on what a
    training could use)."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    gpu = max((torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count())),
              default=0)
    return ram + gpu


def _proc_bytes(path: str, field: str) -> int | None:
    """A `field:  N kB` line of a /proc file, in bytes (None where there is none)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def free_memory(device: torch.device) -> int:
    """Bytes a new allocation can take on `device` now: the GPU's free memory, or the RAM
    available without swapping (MemAvailable: free pages and reclaimable caches)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    available = _proc_bytes("/proc/meminfo", "MemAvailable")
    return available if available is not None else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def resident_memory() -> int:
    """This process's resident memory in bytes (VmRSS; its peak where /proc is missing)."""
    rss = _proc_bytes("/proc/self/status", "VmRSS")
    if rss is not None:
        return rss
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity, e.g. under taskset or SLURM)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_flags() -> set[str]:
    """The CPU's feature flags (from /proc/cpuinfo; empty where it does not exist)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16(device: torch.device) -> bool:
    """Whether `device` runs bfloat16 natively: a CUDA device with bf16, or a CPU with AMX-BF16
    or AVX512-BF16 (elsewhere bf16 is emulated, and slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def resolve_precision(precision: str, device: str) -> str:
    """"auto": bf16 (autocast) where the device runs it natively, fp32 elsewhere."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(resolve_device(device)) else "fp32"


# glibc's malloc hands every block above its mmap threshold (128 KiB, raised only as large blocks
# are freed) back to the system and trims the heap's top above 128 KiB, so a process's first
# training faults in its activations' pages again every step (bench/allocator.py measures it;
# the figures are in the README, "Benchmarks").
MMAP_THRESHOLD = 256 << 20  # every activation of the study's models at batch 128 stays on the heap
TRIM_THRESHOLD = 1 << 30  # up to this much freed memory stays with the process for the next step
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed blocks (mallopt: MMAP_THRESHOLD, TRIM_THRESHOLD) so that
    steps reuse their memory instead of faulting it in again; for processes that train or evaluate
    (the CLI, study workers). Left alone where the user tuned malloc (MALLOC_* or GLIBC_TUNABLES in
    the environment), where LTHFAST_MALLOC=0, or where the C library is not glibc. True when set.
    Checked by tests/test_hardware.py::test_keep_freed_memory_sets_glibc_thresholds_once."""
    if os.environ.get("LTHFAST_MALLOC") == "0" or "GLIBC_TUNABLES" in os.environ \
            or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
            bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False
