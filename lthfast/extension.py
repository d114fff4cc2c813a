"""The compiled C++ extension (csrc/), if it was built at install time.

Without a working compiler the package installs anyway and every op runs on its
plain-PyTorch path; this module says so once, on first use.
"""
from __future__ import annotations

import functools
import importlib
import warnings


@functools.lru_cache(maxsize=None)
def cpp_ops():
    """The extension module `lthfast._C`, or None (with one warning) if it was not built."""
    try:
        return importlib.import_module("lthfast._C")
    except ImportError as exc:
        warnings.warn(f"lthfast's C++ extension is not available ({exc}); "
                      "running on plain PyTorch. Reinstall with a C++ compiler to build it.",
                      RuntimeWarning, stacklevel=3)
        return None


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    try:
        from lthfast import kernels
    except ImportError:
        return False
    return kernels.AVAILABLE


@functools.lru_cache(maxsize=None)
def cuda_ops():
    """The CUDA extension module `lthfast._cuda`, or None: it is built only where CUDA is
    available at install time (see setup.py), so its absence is normal and silent."""
    try:
        return importlib.import_module("lthfast._cuda")
    except ImportError:
        return None
