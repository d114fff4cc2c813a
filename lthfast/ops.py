"""lthfast's kernels behind one API, each with a plain-PyTorch reference.

backend="torch" is the reference; "cpp" (csrc/, CPU), "triton" (kernels/; on the
CPU only under TRITON_INTERPRET=1) and "auto" (the fastest available for the
tensor's device) give the same results.
"""
from __future__ import annotations

import os

import torch

from lthfast.config import BACKENDS
from lthfast.extension import cpp_ops, triton_available


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend that will actually run for tensors on `device`."""
    check_backend(backend)
    if backend != "auto":
        return backend
    if device.type == "cpu":
        return "cpp" if cpp_ops() is not None else "torch"
    if device.type == "cuda" and triton_available():
        return "triton"
    return "torch"


def _check_mask_args(tensor: torch.Tensor, mask: torch.Tensor) -> None:
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got {mask.dtype}")
    if tensor.shape != mask.shape:
        raise ValueError(f"tensor and mask shapes differ: {tuple(tensor.shape)} vs {tuple(mask.shape)}")
    if tensor.device != mask.device:
        raise ValueError(f"tensor and mask are on different devices: {tensor.device} vs {mask.device}")
    if not tensor.is_floating_point():
        raise ValueError(f"tensor must be floating point, got {tensor.dtype}")
    if not (tensor.is_contiguous() or tensor.is_contiguous(memory_format=torch.channels_last)) \
            or tensor.stride() != mask.stride():
        raise ValueError("tensor and mask must be dense (contiguous or channels_last) with the same strides")


def apply_mask_reference_(tensor: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Plain PyTorch: pruned entries become exactly zero (even NaN or inf)."""
    tensor.masked_fill_(~mask, 0)
    return tensor


def apply_mask_(tensor: torch.Tensor, mask: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Zero, in place, the entries of `tensor` where the bool `mask` is False."""
    _check_mask_args(tensor, mask)
    backend = resolve_backend(backend, tensor.device)
    if backend == "torch":
        return apply_mask_reference_(tensor, mask)
    if backend == "cpp":
        ext = cpp_ops()
        if ext is None:
            raise ValueError("backend 'cpp' requested but the C++ extension was not built")
        if tensor.device.type != "cpu":
            raise ValueError(f"backend 'cpp' runs on the CPU, tensor is on {tensor.device}")
        ext.apply_mask_(tensor, mask)
        return tensor
    if not triton_available():
        raise ValueError("backend 'triton' requested but Triton is not installed")
    if tensor.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError("backend 'triton' on CPU tensors needs TRITON_INTERPRET=1")
    from lthfast.kernels import mask as triton_mask
    triton_mask.apply_mask_(tensor, mask)
    return tensor
