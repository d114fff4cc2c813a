"""Sharpness of a minimum (STUDY.md): the Hessian's top eigenvalue (power iteration) and its
trace (Hutchinson), restricted to the unpruned weights.

Both need only Hessian-vector products of a scalar loss: `loss_fn(params) -> loss`, where
params maps names to tensors (requires_grad is set here). Directions live in the same
name -> tensor form and are multiplied by the keep-mask before and after every product, so
pruned weights never move (the restricted Hessian is M H M on the kept coordinates).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch.func import functional_call

Params = dict[str, torch.Tensor]


def _dot(a: Params, b: Params) -> torch.Tensor:
    return sum((a[n] * b[n]).sum() for n in a)


def _masked(v: Params, mask: Params | None) -> Params:
    return {n: t * mask[n] if mask is not None and n in mask else t for n, t in v.items()}


def hessian_vector_product(loss_fn: Callable[[Params], torch.Tensor] | list, params: Params, v: Params,
                           mask: Params | None = None) -> Params:
    """(M H M) v at `params`, by double backpropagation. `loss_fn` may be a list of
    functions whose losses add up to the loss (chunks of a data sample: memory stays that
    of one chunk, and the product is the sum of the chunks' products)."""
    v = _masked(v, mask)
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for chunk_loss in (loss_fn if isinstance(loss_fn, list) else [loss_fn]):
        leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
        grads = torch.autograd.grad(chunk_loss(leaves), list(leaves.values()), create_graph=True)
        dot = sum((g * v[n]).sum() for g, n in zip(grads, leaves))
        for n, h in zip(leaves, torch.autograd.grad(dot, list(leaves.values()))):
            total[n] += h.detach()
    return _masked(total, mask)


def model_loss(model: torch.nn.Module, names: list[str], x: torch.Tensor, y: torch.Tensor,
               chunk_size: int = 512) -> list:
    """Mean cross-entropy of `model` (eval mode: stored BN statistics) on a fixed sample (x
    already normalized), as a function of the tensors `names`, split in chunks whose losses
    add up to the mean. Other parameters stay fixed at the model's values."""
    model.eval()
    fixed = {n: t.detach() for n, t in {**dict(model.named_parameters()), **dict(model.named_buffers())}.items()
             if n not in names}
    n_total = x.shape[0]

    def chunk(start):
        xb, yb = x[start:start + chunk_size], y[start:start + chunk_size]
        return lambda params: torch.nn.functional.cross_entropy(
            functional_call(model, {**fixed, **params}, (xb,)), yb, reduction="sum") / n_total

    return [chunk(start) for start in range(0, n_total, chunk_size)]


@dataclass
class Eigen:
    value: float
    iterations: int
    relative_change: float  # |lambda_t - lambda_{t-1}| / |lambda_t| at the last step: the convergence figure


def top_eigenvalue(loss_fn, params: Params, mask: Params | None = None, max_iterations: int = 100,
                   tolerance: float = 1e-3, seed: int = 0) -> Eigen:
    """Largest-magnitude eigenvalue of M H M by power iteration from a seeded random start,
    stopped when successive estimates differ by less than `tolerance` (relative)."""
    g = torch.Generator().manual_seed(seed)
    v = _masked({n: torch.randn(p.shape, generator=g).to(p) for n, p in params.items()}, mask)
    norm = math.sqrt(float(_dot(v, v)))
    v = {n: t / norm for n, t in v.items()}
    value, change = 0.0, float("inf")
    for iteration in range(1, max_iterations + 1):
        hv = hessian_vector_product(loss_fn, params, v, mask)
        new_value = float(_dot(v, hv))  # Rayleigh quotient, v has unit norm
        norm = math.sqrt(float(_dot(hv, hv)))
        if norm == 0:
            return Eigen(0.0, iteration, 0.0)
        v = {n: t / norm for n, t in hv.items()}
        change = abs(new_value - value) / max(abs(new_value), 1e-12)
        value = new_value
        if change < tolerance:
            break
    return Eigen(value, iteration, change)


@dataclass
class Trace:
    value: float
    samples: int
    standard_error: float


def hutchinson_trace(loss_fn, params: Params, mask: Params | None = None, samples: int = 100,
                     seed: int = 0) -> Trace:
    """tr(M H M) as the mean of v^T H v over seeded Rademacher vectors v (restricted to the
    unpruned weights), with its standard error."""
    g = torch.Generator().manual_seed(seed)
    estimates = []
    for _ in range(samples):
        v = _masked({n: (torch.randint(0, 2, p.shape, generator=g) * 2 - 1).to(p) for n, p in params.items()},
                    mask)
        estimates.append(float(_dot(v, hessian_vector_product(loss_fn, params, v, mask))))
    mean = sum(estimates) / len(estimates)
    var = sum((e - mean) ** 2 for e in estimates) / max(1, len(estimates) - 1)
    return Trace(mean, len(estimates), math.sqrt(var / len(estimates)))


def distance(theta_a: Params, theta_b: Params, mask: Params | None = None) -> dict:
    """||theta_a - theta_b|| over the unpruned entries of the tensors in `mask` (all of
    theta_a's tensors if no mask), and that distance relative to ||theta_a||."""
    names = list(mask) if mask is not None else list(theta_a)
    diff = sum(float(((theta_a[n].float() - theta_b[n].float())[mask[n] if mask else ...] ** 2).sum()) for n in names)
    norm = sum(float((theta_a[n].float()[mask[n] if mask else ...] ** 2).sum()) for n in names)
    l2 = math.sqrt(diff)
    return {"l2": l2, "relative": l2 / math.sqrt(norm) if norm > 0 else float("inf")}
