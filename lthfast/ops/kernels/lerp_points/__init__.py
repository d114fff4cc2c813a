"""lerp_points: K interpolation points between two flat parameter vectors, in one pass.

    lerp_points(theta_a, theta_b, alphas, out, backend)     [K, n] rows theta(a_k)
    lerp_points_reference(theta_a, theta_b, alphas)         plain PyTorch, one torch.lerp a row

Backends: torch (the reference), cpp and cuda (ATen's lerp broadcast over the K rows: one
fused pass already, so no kernel of lthfast's own), triton (triton.py). Registered as
torch.ops.lthfast.lerp_points (returns a new tensor) and torch.ops.lthfast.lerp_points_out
(writes into out).
"""
from typing import Optional

import torch

from lthfast.ops.kernels.backends import check_backend, runnable_backend


def lerp_points_reference(theta_a: torch.Tensor, theta_b: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """Plain PyTorch: row k is torch.lerp(theta_a, theta_b, alphas[k]) (exact at 0 and 1)."""
    return torch.stack([torch.lerp(theta_a, theta_b, float(a)) for a in alphas.tolist()]) \
        if alphas.numel() else theta_a.new_empty(0, theta_a.numel())


def _lerp_into(theta_a, theta_b, alphas, out: Optional[torch.Tensor], backend: str) -> torch.Tensor:
    """The points written into `out` (a new tensor when None), by `backend`."""
    shape = (alphas.numel(), theta_a.numel())
    backend = runnable_backend(backend, theta_a.device, cuda_kernel=False)
    if backend == "triton":
        out = torch.empty(shape, dtype=theta_a.dtype, device=theta_a.device) if out is None else out
        from lthfast.ops.kernels.lerp_points import triton as triton_kernel
        triton_kernel.lerp_points(theta_a, theta_b, alphas.to(torch.float32).contiguous(), out)
        return out
    if backend == "torch":
        result = lerp_points_reference(theta_a, theta_b, alphas)
        return result if out is None else out.copy_(result)
    # cpp and cuda: ATen's lerp broadcast over the K rows already is one fused pass writing
    # straight into `out`, so the extensions add no kernel of their own here.
    out = torch.empty(shape, dtype=theta_a.dtype, device=theta_a.device) if out is None else out
    weights = alphas.to(device=theta_a.device, dtype=theta_a.dtype)[:, None]
    return torch.lerp(theta_a.expand(shape), theta_b.expand(shape), weights.expand(shape), out=out)


@torch.library.custom_op("lthfast::lerp_points", mutates_args=())
def _lerp_points_op(theta_a: torch.Tensor, theta_b: torch.Tensor, alphas: torch.Tensor,
                    backend: str) -> torch.Tensor:
    """The op, arguments checked by lerp_points: a new [K, n] tensor."""
    return _lerp_into(theta_a, theta_b, alphas, None, backend)


@_lerp_points_op.register_fake
def _(theta_a, theta_b, alphas, backend):
    return theta_a.new_empty((alphas.shape[0], theta_a.shape[0]))


@torch.library.custom_op("lthfast::lerp_points_out", mutates_args=("out",))
def _lerp_points_out_op(theta_a: torch.Tensor, theta_b: torch.Tensor, alphas: torch.Tensor, out: torch.Tensor,
                        backend: str) -> None:
    """The op writing into `out` (checked by lerp_points)."""
    _lerp_into(theta_a, theta_b, alphas, out, backend)


@_lerp_points_out_op.register_fake
def _(theta_a, theta_b, alphas, out, backend):
    return None


def lerp_points(theta_a: torch.Tensor, theta_b: torch.Tensor, alphas: torch.Tensor,
                out: Optional[torch.Tensor] = None, backend: str = "auto") -> torch.Tensor:
    """The K parameter points theta(a_k) = (1 - a_k) theta_a + a_k theta_b of flat vectors,
    as rows of a [K, n] tensor written in one pass (into `out` if given, which is returned),
    with torch.lerp's formula, so that a = 0 and a = 1 give theta_a and theta_b exactly.

    theta_a, theta_b: contiguous 1-D float32, n entries each; alphas: 1-D, K entries (any
    real dtype); out: a contiguous float32 [K, n] tensor; all on one device; backend: one
    of BACKENDS. Raises ValueError otherwise.
    """
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
    check_backend(backend)
    if out is None:
        return _lerp_points_op(theta_a, theta_b, alphas, backend)
    _lerp_points_out_op(theta_a, theta_b, alphas, out, backend)
    return out
