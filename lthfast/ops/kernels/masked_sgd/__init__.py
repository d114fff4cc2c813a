"""masked_sgd_: torch.optim.SGD's step fused with a keep-mask, in place on flat buffers.

    masked_sgd_(params, grads, momentum_buf, mask, lr, momentum, weight_decay, nesterov, backend)
    masked_sgd_reference_(...)       the plain-PyTorch reference the backends are tested against

Backends: torch (the reference below), cpp (cpu.cpp), cuda (cuda.cu through
cuda_binding.cpp), triton (triton.py). Registered as torch.ops.lthfast.masked_sgd_
(mutates params and momentum_buf), so that torch.compile keeps it as one opaque call.
"""
from typing import Optional

import torch

from lthfast.ops.kernels.backends import (
    check_backend,
    cpp_ops,
    cuda_ops,
    runnable_backend,
)
from lthfast.ops.kernels.checks import FLOAT_DTYPES, check_flat, flat

SGD_DTYPES = FLOAT_DTYPES


def _reference_step(params, grads, momentum_buf, mask, lr, momentum, weight_decay, nesterov):
    d_p = grads.add(params, alpha=weight_decay) if weight_decay else grads.clone()
    momentum_buf.mul_(momentum).add_(d_p)
    step = d_p.add(momentum_buf, alpha=momentum) if nesterov else momentum_buf
    params.add_(step, alpha=-lr)
    params.masked_fill_(~mask, 0)
    momentum_buf.masked_fill_(~mask, 0)


def masked_sgd_reference_(params, grads, momentum_buf, mask, lr, momentum, weight_decay, nesterov=False):
    """Plain PyTorch, step for step torch.optim.SGD (dampening 0), then the mask, on flat
    buffers. lr: a float, or a 1-D tensor of K rates for K equal segments (segment k is
    updated exactly as a call of its own with lr = float(lr[k]))."""
    if not isinstance(lr, torch.Tensor):
        _reference_step(params, grads, momentum_buf, mask, lr, momentum, weight_decay, nesterov)
        return params
    segment = params.numel() // lr.numel()
    for k, rate in enumerate(lr.tolist()):
        part = slice(k * segment, (k + 1) * segment)
        _reference_step(params[part], grads[part], momentum_buf[part], mask[part], rate, momentum,
                        weight_decay, nesterov)
    return params


def _check_member_lr(lr: torch.Tensor, params: torch.Tensor) -> None:
    """Metadata of a per-member lr (traceable by torch.compile); its values are checked in the op."""
    if lr.dim() != 1:
        raise ValueError(f"lr as a tensor must be 1-D (one rate per member), got shape {tuple(lr.shape)}")
    if lr.dtype != torch.float32:
        raise ValueError(f"lr as a tensor must be float32, got {lr.dtype}")
    if lr.device != params.device:
        raise ValueError(f"lr is on {lr.device}, params on {params.device}: mixed devices")
    if lr.numel() == 0 or params.numel() % lr.numel():
        raise ValueError(f"lr has {lr.numel()} entries, which do not divide the {params.numel()} entries of "
                         "params into equal members")


def _check_member_lr_values(lr: torch.Tensor) -> None:
    if bool((torch.isfinite(lr) & (lr >= 0)).all()):  # one sync on CUDA, not one per check
        return
    if not bool(torch.isfinite(lr).all()):
        raise ValueError("lr must be finite, got a NaN or infinite rate")
    raise ValueError(f"lr must be non-negative, got a rate of {float(lr.min())}")


@torch.library.custom_op("lthfast::masked_sgd_", mutates_args=("params", "momentum_buf"))
def _masked_sgd_op(params: torch.Tensor, grads: torch.Tensor, momentum_buf: torch.Tensor, mask: torch.Tensor,
                   lr: float, member_lr: Optional[torch.Tensor], momentum: float, weight_decay: float,
                   nesterov: bool, backend: str, lr_checked: bool) -> None:
    """The op on 1-D buffers, arguments checked by masked_sgd_ (but for the values of member_lr,
    unless the caller checked them: lr_checked)."""
    backend = runnable_backend(backend, params.device)
    if member_lr is not None:
        if not lr_checked:
            _check_member_lr_values(member_lr)
        member_lr = member_lr.contiguous()
    if backend == "torch":
        masked_sgd_reference_(params, grads, momentum_buf, mask, lr if member_lr is None else member_lr,
                              momentum, weight_decay, nesterov)
    elif backend == "cpp":
        if member_lr is None:
            cpp_ops().masked_sgd_(params, grads, momentum_buf, mask, lr, momentum, weight_decay, nesterov)
        else:
            cpp_ops().masked_sgd_member_lr_(params, grads, momentum_buf, mask, member_lr, momentum,
                                            weight_decay, nesterov)
    elif backend == "cuda":
        keep = mask.view(torch.uint8)
        if member_lr is None:
            cuda_ops().masked_sgd_(params, grads, momentum_buf, keep, lr, momentum, weight_decay, nesterov)
        else:
            cuda_ops().masked_sgd_member_lr_(params, grads, momentum_buf, keep, member_lr, momentum,
                                             weight_decay, nesterov)
    else:
        from lthfast.ops.kernels.masked_sgd import triton as triton_kernel
        triton_kernel.masked_sgd_(params, grads, momentum_buf, mask, lr, momentum, weight_decay, nesterov,
                                  member_lr)


@_masked_sgd_op.register_fake
def _(params, grads, momentum_buf, mask, lr, member_lr, momentum, weight_decay, nesterov, backend, lr_checked):
    return None


def masked_sgd_(params: torch.Tensor, grads: torch.Tensor, momentum_buf: torch.Tensor, mask: torch.Tensor,
                lr, momentum: float, weight_decay: float, nesterov: bool = False,
                backend: str = "auto", lr_checked: bool = False) -> torch.Tensor:
    """One SGD step on flat buffers, in place, exactly torch.optim.SGD's update (weight decay
    added to the gradient, momentum buffer, optional Nesterov), then the pruned entries of
    the weights and of the buffer set to zero, in one pass over memory. Returns params.

    params, grads, momentum_buf: contiguous, N entries each, one dtype (float32 or
    bfloat16), on one device; mask: bool, N entries (False = pruned). The buffer starts at
    zero: momentum * 0 + g = g is torch's first-step rule exactly, so no first-step flag.

    lr: a non-negative float, or a 1-D float32 tensor of K finite non-negative rates on
    params' device, K dividing N: the buffers then hold K members of N / K consecutive
    entries each, member k updated with lr[k] exactly as a call of its own would.
    momentum, weight_decay: non-negative floats. backend: one of BACKENDS. lr_checked: the
    caller vouches that a tensor lr's values are finite and non-negative (made from floats it
    checked, as StackedMaskedSGD does), so the op does not read them back: on a GPU that
    reading is a host synchronization (tests/test_step_sync.py).

    Raises ValueError for any other argument (nothing is then modified).
    """
    check_flat(mask, params=params, grads=grads, momentum_buf=momentum_buf)
    if params.dtype not in SGD_DTYPES or grads.dtype != params.dtype or momentum_buf.dtype != params.dtype:
        raise ValueError(f"params, grads and momentum_buf must share one dtype of "
                         f"{', '.join(map(str, SGD_DTYPES))}; got {params.dtype}, {grads.dtype}, "
                         f"{momentum_buf.dtype}")
    member_lr = lr if isinstance(lr, torch.Tensor) else None
    if member_lr is not None:
        _check_member_lr(member_lr, params)
    elif torch.compiler.is_compiling() and isinstance(lr, (int, float)) and not isinstance(lr, bool):
        # A float would be baked into the graph, so that every new lr of a schedule
        # recompiles; as one rate for one member it stays a graph input (1 * lr: the one
        # form inductor keeps symbolic; torch.full is specialized), the same float32
        # arithmetic, and the op checks its value.
        member_lr = torch.ones(1, dtype=torch.float32, device=params.device).mul(lr)
    scalars = (("momentum", momentum), ("weight_decay", weight_decay))
    for name, value in ((("lr", lr),) if member_lr is None else ()) + scalars:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    check_backend(backend)
    _masked_sgd_op(flat(params), flat(grads), flat(momentum_buf), flat(mask),
                   float(lr) if member_lr is None else 0.0,  # the op reads member_lr when given
                   member_lr, float(momentum), float(weight_decay), bool(nesterov), backend,
                   bool(lr_checked) and member_lr is lr)
    return params
