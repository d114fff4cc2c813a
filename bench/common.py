"""Shared by the bench scripts: the device's name for the record, and timing that waits
for the GPU. (Scripts run as `python bench/<name>.py`, so this imports as `common`.)"""
from __future__ import annotations

import time

import torch

from lthfast.hardware import device_name  # noqa: F401  (the benches record it)


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
