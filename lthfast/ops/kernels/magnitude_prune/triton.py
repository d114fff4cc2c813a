"""Triton kernel: the radix-select histogram of global magnitude pruning.

Key of an entry: the bits of |w| as an integer (monotone in |w|), flipped when the largest
are wanted, so that both directions select the smallest keys. For every kept entry whose
high 16 key bits equal `prefix` (any entry when prefix < 0), the kernel counts the 16-bit
digit (key >> shift) & 0xFFFF into 65536 bins. Two calls (shift 16, then shift 0 within
the chosen high bin) find the exact threshold key without sorting.
"""
import torch
import triton
import triton.language as tl

BLOCK_SIZE = 1024
NUM_BINS = 1 << 16


@triton.jit
def _key_histogram_kernel(w_ptr, keep_ptr, bins_ptr, n, prefix, LARGEST: tl.constexpr,
                          SHIFT: tl.constexpr, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    in_range = offsets < n
    w = tl.load(w_ptr + offsets, mask=in_range, other=0.0)
    keep = tl.load(keep_ptr + offsets, mask=in_range, other=0) != 0
    bits = tl.abs(w).to(tl.int32, bitcast=True)  # sign bit cleared: non-negative
    if LARGEST:
        key = 0x7FFFFFFF - bits
    else:
        key = bits
    valid = in_range & keep & ((prefix < 0) | ((key >> 16) == prefix))
    digit = (key >> SHIFT) & 0xFFFF
    tl.atomic_add(bins_ptr + digit, tl.full(digit.shape, 1, tl.int32), mask=valid)


def key_histogram(weights: torch.Tensor, keep: torch.Tensor, largest: bool, shift: int,
                  prefix: int) -> torch.Tensor:
    bins = torch.zeros(NUM_BINS, dtype=torch.int32, device=weights.device)
    n = weights.numel()
    if n:
        grid = (triton.cdiv(n, BLOCK_SIZE),)
        _key_histogram_kernel[grid](weights, keep.view(torch.uint8), bins, n, int(prefix),
                                    LARGEST=bool(largest), SHIFT=int(shift), BLOCK=BLOCK_SIZE)
    return bins
