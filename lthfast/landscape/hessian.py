"""Sharpness of a minimum (docs/protocol.md): the Hessian's extreme eigenvalues (Lanczos) and its
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

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
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
    """The largest and smallest algebraic eigenvalues of the restricted Hessian, each with its
    relative residual ||Hv - lambda v|| / |lambda|, and the Hessian-vector products spent."""
    largest: float
    smallest: float
    residual_largest: float
    residual_smallest: float
    products: int
    converged: bool  # both residuals below the tolerance
    solver: str


def extreme_eigenvalues(loss_fn, params: Params, mask: Params | None = None, tolerance: float = 1e-3,
                        max_products: int = 200, lanczos_vectors: int = 20, seed: int = 0) -> Eigen:
    """lambda_max and lambda_min (algebraic) of the Hessian restricted to the unpruned
    entries (mask) of `params`, by implicitly restarted Lanczos (scipy.sparse.linalg.eigsh,
    ARPACK, both ends at once) on Hessian-vector products, from a seeded start vector.

    docs/protocol.md's "top eigenvalue" is lambda_max. Power iteration finds the largest |lambda|,
    and stops early when two eigenvalues of opposite sign are close in size; Lanczos does not.
    A result counts as converged only if each residual is below `tolerance`; at most about
    `max_products` products are spent (a few more for the residuals). Dimensions up to
    lanczos_vectors + 1 are solved exactly from the dense restricted Hessian."""
    names = list(params)
    keep = {n: (mask[n] != 0 if mask is not None and n in mask else torch.ones_like(params[n], dtype=torch.bool))
            for n in names}
    dimension = sum(int(k.sum()) for k in keep.values())
    count = [0]

    def product(x: np.ndarray) -> np.ndarray:
        count[0] += 1
        v, offset = {}, 0
        for n in names:
            size = int(keep[n].sum())
            full = torch.zeros_like(params[n])
            full[keep[n]] = torch.as_tensor(x[offset:offset + size], dtype=params[n].dtype, device=params[n].device)
            v[n], offset = full, offset + size
        hv = hessian_vector_product(loss_fn, params, v, mask)
        return np.concatenate([hv[n][keep[n]].detach().double().cpu().numpy() for n in names])

    if dimension <= lanczos_vectors + 1:
        dense = np.stack([product(e) for e in np.eye(dimension)], axis=1)
        values, vectors = np.linalg.eigh((dense + dense.T) / 2)
        pairs, solver = [(values[-1], vectors[:, -1]), (values[0], vectors[:, 0])], "dense (numpy eigh)"
    else:
        operator = LinearOperator((dimension, dimension), matvec=product, dtype=np.float64)
        start = np.random.default_rng(seed).standard_normal(dimension)
        ncv = min(lanczos_vectors, dimension - 1)
        try:  # each restart spends about ncv - 2 products
            values, vectors = eigsh(operator, k=2, which="BE", ncv=ncv, tol=tolerance, v0=start,
                                    maxiter=max(1, (max_products - ncv) // max(1, ncv - 2) + 1))
        except ArpackNoConvergence as exc:  # the best Ritz pairs so far: their residuals say how good
            values, vectors = exc.eigenvalues, exc.eigenvectors
        order = np.argsort(values)
        pairs = [(values[order[-1]], vectors[:, order[-1]]), (values[order[0]], vectors[:, order[0]])] \
            if len(values) else []
        solver = f"Lanczos (scipy eigsh, {ncv} vectors)"
    if len(pairs) < 2:
        return Eigen(math.nan, math.nan, math.inf, math.inf, count[0], False, solver)
    residuals = [float(np.linalg.norm(product(v) - lam * v) / max(abs(lam), 1e-30) / np.linalg.norm(v))
                 for lam, v in pairs]
    return Eigen(float(pairs[0][0]), float(pairs[1][0]), residuals[0], residuals[1], count[0],
                 max(residuals) < tolerance, solver)


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


