"""Which backend runs an op: the backend names, their checks, and the compiled extensions.

    BACKENDS            ("auto", "torch", "cpp", "triton", "cuda")
    check_backend       ValueError unless the name is one of BACKENDS
    resolve_backend     "auto" -> the fastest backend available for a device
    runnable_backend    resolve_backend, then ValueError if it cannot run here
    cpp_ops / cuda_ops  the extension modules lthfast._C / lthfast._cuda, or None
    triton_available    whether Triton can be imported

Imports nothing of lthfast above the kernels (the training config imports BACKENDS from
here through lthfast.ops, not the other way round).
"""
from __future__ import annotations

import functools
import importlib
import os
import warnings

import torch

BACKENDS = ("auto", "torch", "cpp", "triton", "cuda")


@functools.lru_cache(maxsize=None)
def cpp_ops():
    """The C++ extension module `lthfast._C`, or None (with one RuntimeWarning) if it was
    not built: without a compiler the package installs anyway and runs on plain PyTorch."""
    try:
        return importlib.import_module("lthfast._C")
    except ImportError as exc:
        warnings.warn(f"lthfast's C++ extension is not available ({exc}); "
                      "running on plain PyTorch. Reinstall with a C++ compiler to build it.",
                      RuntimeWarning, stacklevel=3)
        return None


@functools.lru_cache(maxsize=None)
def cuda_ops():
    """The CUDA extension module `lthfast._cuda`, or None: it is built only where CUDA is
    available at install time (see setup.py), so its absence is normal and silent."""
    try:
        return importlib.import_module("lthfast._cuda")
    except ImportError:
        return None


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """Whether Triton imports (it is optional: plain-PyTorch installs lack it)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def check_backend(backend: str) -> None:
    """ValueError unless `backend` is one of BACKENDS."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend that will actually run for tensors on `device`."""
    check_backend(backend)
    if backend != "auto":
        return backend
    if device.type == "cpu":
        return "cpp" if cpp_ops() is not None else "torch"
    if device.type == "cuda" and cuda_ops() is not None:
        return "cuda"
    if device.type == "cuda" and triton_available():
        return "triton"
    return "torch"


def runnable_backend(backend: str, device: torch.device, cuda_kernel: bool = True) -> str:
    """resolve_backend, then a ValueError if that backend cannot run on `device` here.
    cuda_kernel=False: the op has no kernel in the CUDA extension (its `cuda` backend is
    ATen's own CUDA kernel), so only the device is checked."""
    backend = resolve_backend(backend, device)
    if backend == "cpp":
        if cpp_ops() is None:
            raise ValueError("backend 'cpp' requested but the C++ extension was not built")
        if device.type != "cpu":
            raise ValueError(f"backend 'cpp' runs on the CPU, tensors are on {device}")
    elif backend == "cuda":
        if device.type != "cuda":
            raise ValueError(f"backend 'cuda' runs on CUDA tensors, tensors are on {device}")
        if cuda_kernel and cuda_ops() is None:
            raise ValueError("backend 'cuda' requested but the CUDA extension was not built")
    elif backend == "triton":
        if not triton_available():
            raise ValueError("backend 'triton' requested but Triton is not installed")
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"backend 'triton' runs on CUDA (or, interpreted, CPU) tensors, not {device}")
        if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError("backend 'triton' on CPU tensors needs TRITON_INTERPRET=1")
    return backend
