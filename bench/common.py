"""Shared by the bench scripts: the device's name for the record, and timing that waits
for the GPU. (Scripts run as `python bench/<name>.py`, so this imports as `common`.)"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from lthfast.foundations.hardware import device_name  # noqa: F401  (the benches record it)


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


def save(results: dict, out: str) -> None:
    """Write the results as JSON (folders made as needed) and say where."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(results, indent=2))
    print(f"results written to {out}")


def run(main) -> None:
    """A bench script's command line (Fire)."""
    import fire  # only when run as a script

    fire.Fire(main)
