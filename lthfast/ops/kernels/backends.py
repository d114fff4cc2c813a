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
import importlib.util
import os
import warnings

import torch

BACKENDS = ("auto", "torch", "cpp", "triton", "cuda")
REBUILD = ("Rebuild it against this torch: python setup.py build_ext --inplace "
           "(or pip install --no-build-isolation -e .).")


class WrongTorch(ImportError):
    """An extension built against another torch than the one imported (its stamp says which)."""


def _import_extension(name: str):
    """`lthfast.<name>`, unless setup.py's stamp beside it (`<file>.torch`) names another torch:
    an extension is bound to the torch it was compiled against, and one built for another may
    fail to load or misbehave. Builds without a stamp (older ones) are imported as before."""
    spec = importlib.util.find_spec(f"lthfast.{name}")
    if spec is not None and spec.origin:
        try:
            with open(spec.origin + ".torch") as file:
                built = file.read().strip()
        except OSError:
            built = None
        if built is not None and built != torch.__version__:
            raise WrongTorch(f"{os.path.basename(spec.origin)} was built against torch {built}, "
                             f"this is torch {torch.__version__}")
    return importlib.import_module(f"lthfast.{name}")


@functools.lru_cache(maxsize=None)
def cpp_ops():
    """The C++ extension module `lthfast._C`, or None (with one RuntimeWarning) if it was
    not built, or built for another torch: the package runs on plain PyTorch then."""
    try:
        return _import_extension("_C")
    except ImportError as exc:
        other_torch = isinstance(exc, WrongTorch) or "undefined symbol" in str(exc)
        warnings.warn(f"lthfast's C++ extension is not available ({exc}); running on plain PyTorch. "
                      + (REBUILD if other_torch else "Reinstall with a C++ compiler to build it."),
                      RuntimeWarning, stacklevel=3)
        return None


@functools.lru_cache(maxsize=None)
def cuda_ops():
    """The CUDA extension module `lthfast._cuda`, or None: it is built only where CUDA is
    available at install time (see setup.py), so its absence is normal and silent; one built
    for another torch is refused with a RuntimeWarning."""
    try:
        return _import_extension("_cuda")
    except WrongTorch as exc:
        warnings.warn(f"lthfast's CUDA extension is not used ({exc}). {REBUILD}", RuntimeWarning, stacklevel=3)
        return None
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
