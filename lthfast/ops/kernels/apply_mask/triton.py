"""Triton kernel: zero the pruned entries of a tensor in place, one pass over memory."""
import torch
import triton
import triton.language as tl

BLOCK_SIZE = 1024


@triton.jit
def _apply_mask_kernel(data_ptr, keep_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    in_range = offsets < n
    keep = tl.load(keep_ptr + offsets, mask=in_range, other=0).to(tl.int1)
    values = tl.load(data_ptr + offsets, mask=in_range)
    # A select, not a multiply: NaN or inf in a pruned entry still becomes exactly zero.
    tl.store(data_ptr + offsets, tl.where(keep, values, tl.zeros_like(values)), mask=in_range)


def apply_mask_(tensor: torch.Tensor, mask: torch.Tensor) -> None:
    n = tensor.numel()
    if n == 0:
        return
    keep = mask.view(torch.uint8)  # Triton loads bool pointers as int1 inconsistently; bytes are safe
    grid = (triton.cdiv(n, BLOCK_SIZE),)
    _apply_mask_kernel[grid](tensor, keep, n, BLOCK=BLOCK_SIZE)
