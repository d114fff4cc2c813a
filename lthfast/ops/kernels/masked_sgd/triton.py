"""Triton kernel: torch.optim.SGD's update fused with a keep-mask, one pass over memory.

Per entry, in float32: g = grad + wd * p; b = momentum * b + g; step = nesterov ? g +
momentum * b : b; p -= lr * step; pruned entries (keep == 0) get p = 0 and b = 0.
lr is one float, or (MEMBER_LR) lr_ptr[i // segment]: one float32 per member of `segment`
consecutive entries.
"""
import torch
import triton
import triton.language as tl

BLOCK_SIZE = 1024


@triton.jit
def _masked_sgd_kernel(p_ptr, g_ptr, b_ptr, keep_ptr, n, lr, lr_ptr, segment, momentum, weight_decay,
                       NESTEROV: tl.constexpr, MEMBER_LR: tl.constexpr, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    in_range = offsets < n
    p = tl.load(p_ptr + offsets, mask=in_range, other=0.0)
    g = tl.load(g_ptr + offsets, mask=in_range, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + offsets, mask=in_range, other=0.0).to(tl.float32)
    keep = tl.load(keep_ptr + offsets, mask=in_range, other=0) != 0
    if MEMBER_LR:
        rate = tl.load(lr_ptr + offsets // segment, mask=in_range, other=0.0)
    else:
        rate = lr
    param = p.to(tl.float32)
    grad = g + weight_decay * param
    buf = momentum * b + grad
    if NESTEROV:
        step = grad + momentum * buf
    else:
        step = buf
    updated = param - rate * step
    zero = tl.zeros_like(updated)
    tl.store(p_ptr + offsets, tl.where(keep, updated, zero).to(p.dtype), mask=in_range)
    tl.store(b_ptr + offsets, tl.where(keep, buf, zero).to(p.dtype), mask=in_range)


def masked_sgd_(params, grads, momentum_buf, mask, lr, momentum, weight_decay, nesterov, member_lr=None):
    """In place on flat buffers. member_lr: None (one lr) or a float32 tensor of K rates,
    K dividing params.numel(); lr is then ignored."""
    n = params.numel()
    if n == 0:
        return
    grid = (triton.cdiv(n, BLOCK_SIZE),)
    member = member_lr is not None
    _masked_sgd_kernel[grid](params, grads, momentum_buf, mask.view(torch.uint8), n, float(lr),
                             member_lr if member else params, n // member_lr.numel() if member else 1,
                             float(momentum), float(weight_decay), NESTEROV=bool(nesterov),
                             MEMBER_LR=member, BLOCK=BLOCK_SIZE)
