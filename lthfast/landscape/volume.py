"""Volume of a minimum (docs/protocol.md, after Huang et al. 2019): basin radii along random
directions within the unpruned weights, found by bracketing and bisection with all
directions evaluated together, and the log-volume of the star-shaped region they span;
`volume` is the cached analysis of a stored solution. tests/test_volume.py checks the
radii against a quadratic bowl, tests/test_analysis.py the stored analysis.
"""
from __future__ import annotations

import math
from dataclasses import asdict
from typing import Callable

import torch

from lthfast.config.analyses import VolumeSettings
from lthfast.landscape.curves import Compute
from lthfast.landscape.points import EvalSettings, along_directions
from lthfast.landscape.runs import AnalysisRun, cached
from lthfast.pruning.masks import kept_count
from lthfast.store.level import Solution

Params = dict[str, torch.Tensor]


def random_directions(theta: Params, mask: Params, count: int, seed: int = 0,
                      filter_normalized: bool = False) -> Params:
    """`count` seeded Gaussian directions {name: [count, *shape]} over the unpruned entries
    of the tensors in `mask`, each scaled to the norm of theta's unpruned weights (or, with
    filter_normalized, each output filter to the norm of theta's filter)."""
    g = torch.Generator().manual_seed(seed)
    directions = {n: torch.randn((count, *theta[n].shape), generator=g) * mask[n] for n in mask}
    if filter_normalized:
        for n, d in directions.items():
            w = (theta[n].float() * mask[n]).reshape(1, theta[n].shape[0], -1)
            flat = d.reshape(count, theta[n].shape[0], -1)
            scale = w.norm(dim=-1, keepdim=True) / flat.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            directions[n] = (flat * scale).reshape(d.shape)
        return directions
    theta_norm = math.sqrt(sum(float(((theta[n].float() * mask[n]) ** 2).sum()) for n in mask))
    norms = torch.sqrt(sum((d.reshape(count, -1) ** 2).sum(1) for d in directions.values())).clamp_min(1e-12)
    return {n: d * (theta_norm / norms).view(-1, *[1] * (d.dim() - 1)) for n, d in directions.items()}


def basin_radii(losses_at: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], count: int,
                base_loss: float, delta: float = 0.1, initial: float = 0.05, growth: float = 2.0,
                max_brackets: int = 30, bisections: int = 12) -> torch.Tensor:
    """For each of `count` directions, the step r where the loss first exceeds base_loss +
    delta. losses_at(indices, steps) evaluates direction indices[i] at step steps[i], all in
    one batch. Bracketing doubles r until the loss exceeds the level, then bisection halves
    the bracket `bisections` times; the result is the bracket's midpoint (relative error
    below growth^-bisections). A direction that never exceeds it within max_brackets gets inf."""
    level = base_loss + delta
    low = torch.zeros(count, dtype=torch.float64)
    high = torch.full((count,), float(initial), dtype=torch.float64)
    open_ = torch.ones(count, dtype=torch.bool)  # still looking for an upper end
    for _ in range(max_brackets):
        index = open_.nonzero().flatten()
        if index.numel() == 0:
            break
        above = losses_at(index, high[index]).double() > level
        low[index[~above]] = high[index[~above]]
        high[index[~above]] *= growth
        open_[index[above]] = False
    for _ in range(bisections):
        index = (~open_).nonzero().flatten()
        if index.numel() == 0:
            break
        middle = (low[index] + high[index]) / 2
        above = losses_at(index, middle).double() > level
        high[index[above]] = middle[above]
        low[index[~above]] = middle[~above]
    radii = (low + high) / 2
    radii[open_] = float("inf")
    return radii


def log_volume(radii: torch.Tensor, dimension: int) -> float:
    """log of the volume of the star-shaped region with these radii along random directions:
    log V_unit(n) + log mean_i r_i^n, with V_unit(n) = pi^(n/2) / Gamma(n/2 + 1)."""
    radii = radii.double()
    log_unit = dimension / 2 * math.log(math.pi) - math.lgamma(dimension / 2 + 1)
    return log_unit + float(torch.logsumexp(dimension * radii.log(), 0)) - math.log(radii.numel())


def model_losses_at(theta: dict, directions: Params, model: str, width: int | None, data, x, y,
                    settings=None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """losses_at for basin_radii on a real model: the train loss on (x, y) at theta + t_i
    d_i, every requested point evaluated together (lthfast.landscape.points.along_directions)."""
    settings = settings or EvalSettings(bn="interpolate")  # stored statistics: theta's

    def losses_at(index: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        chosen = {n: d[index] for n, d in directions.items()}
        return torch.tensor(along_directions(theta, chosen, steps, model, width, data, x, y, settings)["loss"])

    return losses_at


def volume(run: AnalysisRun, solution: Solution, settings: VolumeSettings | None = None,
           compute: Compute | None = None, force: bool = False) -> dict:
    """Radii (mean, std), dimension and log-volume of the minimum at `solution`."""
    settings, compute = settings or VolumeSettings(), compute or Compute()

    def measure():
        theta, mask = solution.load()
        directions = random_directions(theta, mask, settings.directions, settings.seed, settings.filter_normalized)
        x, y = run.sample("train", settings.train_images)
        bn = "interpolate" if settings.bn == "stored" else "recompute"  # directions move no BN buffer
        evaluate = model_losses_at(theta, directions, run.model, run.width, run.data, x, y,
                                   compute.eval_settings(run, bn))
        evaluations = []

        def losses_at(index, steps):
            evaluations.append(len(index))
            return evaluate(index, steps)

        base_loss = float(losses_at(torch.tensor([0]), torch.tensor([0.0]))[0])
        radii = basin_radii(losses_at, settings.directions, base_loss, settings.delta, settings.initial,
                            bisections=settings.bisections)
        dimension = kept_count(mask)
        finite = radii[torch.isfinite(radii)]
        return {"radii": radii.tolist(), "radius_mean": float(radii.mean()),
                "radius_std": float(radii.std()) if len(radii) > 1 else 0.0,
                "unbounded_directions": int((~torch.isfinite(radii)).sum()),
                "dimension": dimension, "log_volume": log_volume(radii, dimension) if len(finite) == len(radii)
                else float("inf"), "base_loss": base_loss, "points_evaluated": sum(evaluations),
                "passes": len(evaluations), "train_images": len(y)}

    return cached(run, "volume", [solution], asdict(settings), measure, force)
