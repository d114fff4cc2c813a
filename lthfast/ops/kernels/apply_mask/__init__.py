"""apply_mask_: zero, in place, the pruned entries of a tensor.

    apply_mask_(tensor, mask, backend)     the op
    apply_mask_reference_(tensor, mask)    the plain-PyTorch reference

Backends: torch and cuda (masked_fill_, already one fused kernel on CUDA), cpp (cpu.cpp),
triton (triton.py). Registered as torch.ops.lthfast.apply_mask_ (mutates tensor).
"""
import torch

from lthfast.ops.kernels.backends import check_backend, cpp_ops, runnable_backend


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


@torch.library.custom_op("lthfast::apply_mask_", mutates_args=("tensor",))
def _apply_mask_op(tensor: torch.Tensor, mask: torch.Tensor, backend: str) -> None:
    """The op, arguments checked by apply_mask_."""
    backend = runnable_backend(backend, tensor.device, cuda_kernel=False)
    if backend in ("torch", "cuda"):  # on CUDA, masked_fill_ already is one fused kernel
        apply_mask_reference_(tensor, mask)
    elif backend == "cpp":
        cpp_ops().apply_mask_(tensor, mask)
    else:
        from lthfast.ops.kernels.apply_mask import triton as triton_kernel
        triton_kernel.apply_mask_(tensor, mask)


@_apply_mask_op.register_fake
def _(tensor, mask, backend):
    return None


def apply_mask_(tensor: torch.Tensor, mask: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Zero, in place, the entries of `tensor` where the bool `mask` is False; returns tensor.

    tensor: floating point (float32, bfloat16, float16, float64), any shape, dense
    (contiguous or channels_last); mask: bool, the same shape and strides, on the same
    device. backend: one of BACKENDS. Raises ValueError otherwise (tensor is then untouched).
    """
    _check_mask_args(tensor, mask)
    check_backend(backend)
    _apply_mask_op(tensor, mask, backend)
    return tensor
