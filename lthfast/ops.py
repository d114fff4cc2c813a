"""lthfast's kernels behind one API, each with a plain-PyTorch reference.

    apply_mask_(tensor, mask)                       zero the pruned entries, in place
    masked_sgd_(params, grads, momentum_buf, mask, lr, momentum, weight_decay, nesterov)
                                                    torch.optim.SGD's step fused with the mask
    magnitude_prune(weights, mask, count, largest)  global magnitude pruning, ties by index
    lerp_points(theta_a, theta_b, alphas)           K interpolation points [K, n] in one pass

backend="torch" is the reference; "cpp" (csrc/, CPU), "cuda" (csrc/cuda/, built where
CUDA is present), "triton" (kernels/; on the CPU only under TRITON_INTERPRET=1) and
"auto" (the fastest available for the tensors' device) give the same results, up to
floating-point rounding for masked_sgd_ and exactly for the masks.
"""
from __future__ import annotations

import operator
import os

import torch

from lthfast.config import BACKENDS
from lthfast.extension import cpp_ops, cuda_ops, triton_available


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
    backend = runnable_backend(backend, tensor.device, cuda_kernel=False)
    if backend in ("torch", "cuda"):  # on CUDA, masked_fill_ already is one fused kernel
        return apply_mask_reference_(tensor, mask)
    if backend == "cpp":
        cpp_ops().apply_mask_(tensor, mask)
    else:
        from lthfast.kernels import mask as triton_mask
        triton_mask.apply_mask_(tensor, mask)
    return tensor


# ----------------------------------------------------------------------------- masked SGD

SGD_DTYPES = (torch.float32, torch.bfloat16)


def _check_flat(mask: torch.Tensor, **tensors: torch.Tensor) -> None:
    """Flat-buffer arguments: one size, one device, contiguous, a bool mask."""
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got {mask.dtype}")
    for name, t in {**tensors, "mask": mask}.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a tensor, got {type(t).__name__}")
        if t.numel() != mask.numel():
            raise ValueError(f"{name} has {t.numel()} entries, the mask {mask.numel()}: buffers differ in size")
        if t.device != mask.device:
            raise ValueError(f"{name} is on {t.device}, the mask on {mask.device}: mixed devices")
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous")


def masked_sgd_reference_(params, grads, momentum_buf, mask, lr, momentum, weight_decay, nesterov=False):
    """Plain PyTorch, step for step torch.optim.SGD (dampening 0), then the mask."""
    d_p = grads.add(params, alpha=weight_decay) if weight_decay else grads.clone()
    momentum_buf.mul_(momentum).add_(d_p)
    step = d_p.add(momentum_buf, alpha=momentum) if nesterov else momentum_buf
    params.add_(step, alpha=-lr)
    params.masked_fill_(~mask, 0)
    momentum_buf.masked_fill_(~mask, 0)
    return params


def masked_sgd_(params: torch.Tensor, grads: torch.Tensor, momentum_buf: torch.Tensor, mask: torch.Tensor,
                lr: float, momentum: float, weight_decay: float, nesterov: bool = False,
                backend: str = "auto") -> torch.Tensor:
    """One SGD step on flat buffers, in place, exactly torch.optim.SGD's update (weight decay
    added to the gradient, momentum buffer, optional Nesterov), then the pruned entries of
    the weights and of the buffer set to zero, in one pass over memory.

    The buffer starts at zero: momentum * 0 + g = g is torch's first-step rule (buffer =
    gradient) exactly, so no first-step flag is needed.
    """
    _check_flat(mask, params=params, grads=grads, momentum_buf=momentum_buf)
    if params.dtype not in SGD_DTYPES or grads.dtype != params.dtype or momentum_buf.dtype != params.dtype:
        raise ValueError(f"params, grads and momentum_buf must share one dtype of "
                         f"{', '.join(map(str, SGD_DTYPES))}; got {params.dtype}, {grads.dtype}, "
                         f"{momentum_buf.dtype}")
    for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    backend = runnable_backend(backend, params.device)
    args = (params.view(-1), grads.view(-1), momentum_buf.view(-1), mask.view(-1), float(lr),
            float(momentum), float(weight_decay), bool(nesterov))
    if backend == "torch":
        masked_sgd_reference_(*args)
    elif backend == "cpp":
        cpp_ops().masked_sgd_(*args)
    elif backend == "cuda":
        cuda_ops().masked_sgd_(*args[:3], args[3].view(torch.uint8), *args[4:])
    else:
        from lthfast.kernels import sgd
        sgd.masked_sgd_(*args)
    return params


# ----------------------------------------------------------------------------- magnitude pruning

def magnitude_prune_reference(weights: torch.Tensor, mask: torch.Tensor, count: int,
                              largest: bool = False) -> torch.Tensor:
    """Plain PyTorch, by a full stable sort: the new flat mask with `count` more entries
    removed, the smallest |w| (or largest) among the kept ones, ties by lowest index."""
    kept_index = torch.nonzero(mask.view(-1)).flatten()
    magnitudes = weights.view(-1)[kept_index].float().abs()
    # Stable sort on the (already index-ordered) kept entries: equal magnitudes keep index order.
    order = torch.sort(magnitudes, descending=largest, stable=True).indices
    new_mask = mask.clone()
    new_mask.view(-1)[kept_index[order[:count]]] = False
    return new_mask


def _magnitude_keys(weights: torch.Tensor, largest: bool) -> torch.Tensor:
    """int32 keys monotone in |w| (decreasing for largest): the bits of |w| as an integer."""
    bits = weights.abs().view(torch.int32)
    return 0x7FFFFFFF - bits if largest else bits


def _select_by_histogram(weights, mask, count, largest, histogram) -> torch.Tensor:
    """Radix selection of the count-th smallest key in two 16-bit histogram passes, then one
    elementwise pass (ties by index through a cumulative count of the tied entries)."""
    high = histogram(16, -1).long()
    cumulative = high.cumsum(0)
    bin_high = int(torch.searchsorted(cumulative, count))  # first bin reaching count
    before_high = int(cumulative[bin_high] - high[bin_high])
    low = histogram(0, bin_high).long()
    cumulative = low.cumsum(0)
    bin_low = int(torch.searchsorted(cumulative, count - before_high))
    threshold = (bin_high << 16) | bin_low
    ties_to_remove = count - before_high - int(cumulative[bin_low] - low[bin_low])
    keys = _magnitude_keys(weights, largest)
    tied = mask & (keys == threshold)
    remove = (mask & (keys < threshold)) | (tied & (tied.cumsum(0) <= ties_to_remove))
    return mask & ~remove


def magnitude_prune(weights: torch.Tensor, mask: torch.Tensor, count: int, largest: bool = False,
                    backend: str = "auto") -> torch.Tensor:
    """The new mask (shaped like `mask`) with exactly `count` more entries removed: the smallest |w| (or,
    with largest=True, the largest) among the entries `mask` keeps, over the whole buffer,
    ties broken by lowest index, so that every backend returns the same mask.

    Fast backends select the threshold by radix histograms instead of sorting everything.
    """
    _check_flat(mask, weights=weights)
    if weights.dtype not in SGD_DTYPES:
        raise ValueError(f"weights must be float32 or bfloat16, got {weights.dtype}")
    try:
        count = operator.index(count)  # ints, numpy and 0-d integer tensors; not floats or bools
    except TypeError:
        raise ValueError(f"count must be an integer, got {count!r}") from None
    if isinstance(count, bool):
        raise ValueError(f"count must be an integer, got {count!r}")
    kept = int(torch.count_nonzero(mask))  # (mask.sum() is 20x slower on bool)
    if not 0 <= count <= kept:
        raise ValueError(f"cannot prune {count} entries: the mask keeps {kept}")
    backend = runnable_backend(backend, weights.device)
    weights, flat_mask = weights.reshape(-1).float().contiguous(), mask.reshape(-1)
    if backend == "torch":
        out = magnitude_prune_reference(weights, flat_mask, count, largest)
    elif count == 0:
        out = flat_mask.clone()
    elif backend == "cpp":
        out = cpp_ops().magnitude_prune(weights, flat_mask, count, bool(largest))
    else:
        if backend == "cuda":
            keep = flat_mask.view(torch.uint8)
            histogram = lambda shift, prefix: cuda_ops().key_histogram(weights, keep, largest, shift, prefix)  # noqa: E731
        else:
            from lthfast.kernels import select
            histogram = lambda shift, prefix: select.key_histogram(weights, flat_mask, largest, shift, prefix)  # noqa: E731
        out = _select_by_histogram(weights, flat_mask, count, largest, histogram)
    return out.view(mask.shape)


# ----------------------------------------------------------------------------- interpolation points

def lerp_points_reference(theta_a: torch.Tensor, theta_b: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """Plain PyTorch: row k is torch.lerp(theta_a, theta_b, alphas[k]) (exact at 0 and 1)."""
    return torch.stack([torch.lerp(theta_a, theta_b, float(a)) for a in alphas.tolist()]) \
        if alphas.numel() else theta_a.new_empty(0, theta_a.numel())


def lerp_points(theta_a: torch.Tensor, theta_b: torch.Tensor, alphas: torch.Tensor,
                out: torch.Tensor | None = None, backend: str = "auto") -> torch.Tensor:
    """The K parameter points theta(a_k) = (1 - a_k) theta_a + a_k theta_b of flat vectors,
    as rows of a [K, n] tensor written in one pass (into `out` if given), with torch.lerp's
    formula, so that a = 0 and a = 1 give theta_a and theta_b exactly."""
    for name, t in (("theta_a", theta_a), ("theta_b", theta_b)):
        if t.dtype != torch.float32 or t.dim() != 1 or not t.is_contiguous():
            raise ValueError(f"{name} must be a contiguous 1-D float32 tensor, got {t.dtype} {tuple(t.shape)}")
    if theta_b.shape != theta_a.shape or theta_b.dtype != theta_a.dtype:
        raise ValueError(f"theta_a and theta_b differ: {theta_a.dtype} {tuple(theta_a.shape)} vs "
                         f"{theta_b.dtype} {tuple(theta_b.shape)}")
    if alphas.dim() != 1:
        raise ValueError("alphas must be a 1-D tensor")
    if len({theta_a.device, theta_b.device, alphas.device}) != 1:
        raise ValueError("theta_a, theta_b and alphas are on mixed devices")
    shape = (alphas.numel(), theta_a.numel())
    if out is not None and (tuple(out.shape) != shape or out.dtype != theta_a.dtype
                            or out.device != theta_a.device or not out.is_contiguous()):
        raise ValueError(f"out must be a contiguous {theta_a.dtype} tensor of shape {shape} on {theta_a.device}")
    backend = runnable_backend(backend, theta_a.device, cuda_kernel=False)
    if backend == "triton":
        out = torch.empty(shape, dtype=theta_a.dtype, device=theta_a.device) if out is None else out
        from lthfast.kernels import points
        points.lerp_points(theta_a, theta_b, alphas.to(torch.float32).contiguous(), out)
        return out
    if backend == "torch":
        result = lerp_points_reference(theta_a, theta_b, alphas)
        return result if out is None else out.copy_(result)
    # cpp and cuda: ATen's lerp broadcast over the K rows already is one fused pass writing
    # straight into `out`, so the extensions add no kernel of their own here.
    out = torch.empty(shape, dtype=theta_a.dtype, device=theta_a.device) if out is None else out
    weights = alphas.to(device=theta_a.device, dtype=theta_a.dtype)[:, None]
    return torch.lerp(theta_a.expand(shape), theta_b.expand(shape), weights.expand(shape), out=out)
