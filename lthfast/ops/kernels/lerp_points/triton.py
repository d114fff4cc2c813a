"""Triton kernel: K interpolation points theta(a_k) = lerp(theta_A, theta_B, a_k) at once.

Writes out[k, i] for every point k and entry i in one launch (a 2-D grid), with
torch.lerp's formula, exact at both ends: |a| < 0.5: A + a (B - A), else B - (B - A)(1 - a).
"""
import torch
import triton
import triton.language as tl

BLOCK_SIZE = 1024


@triton.jit
def _lerp_points_kernel(a_ptr, b_ptr, alpha_ptr, out_ptr, n, BLOCK: tl.constexpr):
    k = tl.program_id(1)
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    in_range = offsets < n
    a = tl.load(a_ptr + offsets, mask=in_range, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + offsets, mask=in_range, other=0.0).to(tl.float32)
    weight = tl.load(alpha_ptr + k)
    diff = b - a
    value = tl.where(tl.abs(weight) < 0.5, a + weight * diff, b - diff * (1.0 - weight))
    tl.store(out_ptr + k.to(tl.int64) * n + offsets, value.to(out_ptr.dtype.element_ty), mask=in_range)


def lerp_points(theta_a: torch.Tensor, theta_b: torch.Tensor, alphas: torch.Tensor, out: torch.Tensor) -> None:
    n, k = theta_a.numel(), alphas.numel()
    if n == 0 or k == 0:
        return
    grid = (triton.cdiv(n, BLOCK_SIZE), k)
    _lerp_points_kernel[grid](theta_a, theta_b, alphas, out, n, BLOCK=BLOCK_SIZE)
