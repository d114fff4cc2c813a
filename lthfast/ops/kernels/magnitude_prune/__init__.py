"""magnitude_prune: global magnitude pruning of a flat buffer, ties broken by index.

    magnitude_prune(weights, mask, count, largest, backend)      the new mask
    magnitude_prune_reference(weights, mask, count, largest)     plain PyTorch, a full stable sort

Backends: torch (the reference), cpp (cpu.cpp: radix select), cuda (the key histogram of
cuda.cu) and triton (the key histogram of triton.py), both finished by select_by_histogram
below. Registered as torch.ops.lthfast.magnitude_prune (returns a new mask).
"""
import operator

import torch

from lthfast.ops.kernels.backends import (
    check_backend,
    cpp_ops,
    cuda_ops,
    runnable_backend,
)
from lthfast.ops.kernels.checks import FLOAT_DTYPES, check_flat


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


def select_by_histogram(weights, mask, count, largest, histogram) -> torch.Tensor:
    """Radix selection of the count-th smallest key in two 16-bit histogram passes, then one
    elementwise pass (ties by index through a cumulative count of the tied entries).
    histogram(shift, prefix) -> 65536 counts: see cuda.cuh's key_histogram."""
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


@torch.library.custom_op("lthfast::magnitude_prune", mutates_args=())
def _magnitude_prune_op(weights: torch.Tensor, mask: torch.Tensor, count: int, largest: bool,
                        backend: str) -> torch.Tensor:
    """The op on a 1-D float32 `weights` and 1-D bool `mask`, checked by magnitude_prune
    but for `count` against the kept entries (a value, so checked here)."""
    kept = int(torch.count_nonzero(mask))  # (mask.sum() is 20x slower on bool)
    if not 0 <= count <= kept:
        raise ValueError(f"cannot prune {count} entries: the mask keeps {kept}")
    backend = runnable_backend(backend, weights.device)
    if backend == "torch":
        return magnitude_prune_reference(weights, mask, count, largest)
    if count == 0:
        return mask.clone()
    if backend == "cpp":
        return cpp_ops().magnitude_prune(weights, mask, count, largest)
    if backend == "cuda":
        keep = mask.view(torch.uint8)
        histogram = lambda shift, prefix: cuda_ops().key_histogram(weights, keep, largest, shift, prefix)  # noqa: E731
    else:
        from lthfast.ops.kernels.magnitude_prune import triton as triton_kernel
        histogram = lambda shift, prefix: triton_kernel.key_histogram(weights, mask, largest, shift, prefix)  # noqa: E731
    return select_by_histogram(weights, mask, count, largest, histogram)


@_magnitude_prune_op.register_fake
def _(weights, mask, count, largest, backend):
    return torch.empty_like(mask)


def magnitude_prune(weights: torch.Tensor, mask: torch.Tensor, count: int, largest: bool = False,
                    backend: str = "auto") -> torch.Tensor:
    """The new mask (shaped like `mask`) with exactly `count` more entries removed: the
    smallest |w| (or, with largest=True, the largest) among the entries `mask` keeps, over
    the whole buffer, ties broken by lowest index, so that every backend returns the same mask.

    weights: float32 or bfloat16, contiguous; mask: bool, as many entries, same device;
    count: an integer, 0 <= count <= the kept entries; backend: one of BACKENDS.
    Raises ValueError otherwise. Fast backends select the threshold by radix histograms
    instead of sorting everything.
    """
    check_flat(mask, weights=weights)
    if weights.dtype not in FLOAT_DTYPES:
        raise ValueError(f"weights must be float32 or bfloat16, got {weights.dtype}")
    try:
        count = operator.index(count)  # ints, numpy and 0-d integer tensors; not floats or bools
    except TypeError:
        raise ValueError(f"count must be an integer, got {count!r}") from None
    if isinstance(count, bool):
        raise ValueError(f"count must be an integer, got {count!r}")
    check_backend(backend)
    out = _magnitude_prune_op(weights.reshape(-1).float().contiguous(), mask.reshape(-1), count,
                              bool(largest), backend)
    return out.view(mask.shape)
