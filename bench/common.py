"""Shared by the bench scripts: the device's name for the record, and timing that waits
for the GPU. (Scripts run as `python bench/<name>.py`, so this imports as `common`.)"""
from __future__ import annotations

import platform
import subprocess
import time

import torch


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
        return "CPU " + next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name"))
    except (OSError, StopIteration):
        return f"CPU {platform.processor() or platform.machine()}"


def timed(fn, calls: int, device: torch.device) -> float:
    """Seconds per call of `fn`, averaged over `calls` calls (synchronized on CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls
