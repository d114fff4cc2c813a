"""Volume and sharpness of stored minima (STUDY.md), cached like every analysis
(lthfast.analysis): basin radii along random directions and the log-volume (lthfast.volume),
the Hessian's top eigenvalue and trace within the unpruned weights (lthfast.hessian).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from lthfast import settings
from lthfast.analysis import Compute, Run, cached
from lthfast.data import normalize
from lthfast.hessian import extreme_eigenvalues, hutchinson_trace, model_loss
from lthfast.models import create_model
from lthfast.pruning import kept_count
from lthfast.settings import setting
from lthfast.store import Solution
from lthfast.volume import basin_radii, log_volume, model_losses_at, random_directions


@dataclass
class VolumeSettings:
    """Basin radii along random directions (STUDY.md, after Huang et al. 2019)."""
    directions: int = setting(64, "random directions.", minimum=1)
    delta: float = setting(0.1, "the radius is where the train loss first exceeds loss(theta) + DELTA.",
                           kind="float", positive=True)
    filter_normalized: bool = setting(False, "scale each filter of a direction to the solution's filter norm "
                                      "(default: the whole direction to the norm of the unpruned weights).",
                                      kind="bool")
    train_images: int = setting(10_000, "fixed training sample for the loss.", minimum=1)
    initial: float = setting(0.05, "first bracket end (in units of the direction).", kind="float", positive=True)
    bisections: int = setting(10, "bisection steps after bracketing (relative precision 2^-BISECTIONS).",
                              minimum=0)
    bn: str = setting("stored", "BatchNorm statistics along a direction: stored (the solution's) or recompute.",
                      kind="str", choices=("stored", "recompute"))
    seed: int = setting(0, "seed of the directions.", minimum=0, maximum=2 ** 32 - 1)

    def __post_init__(self):
        settings.check(self)


def volume(run: Run, solution: Solution, settings_: VolumeSettings | None = None,
           compute: Compute | None = None, force: bool = False) -> dict:
    """Radii (mean, std), dimension and log-volume of the minimum at `solution`."""
    settings_, compute = settings_ or VolumeSettings(), compute or Compute()

    def measure():
        theta, mask = solution.load()
        directions = random_directions(theta, mask, settings_.directions, settings_.seed, settings_.filter_normalized)
        x, y = run.sample("train", settings_.train_images)
        bn = "interpolate" if settings_.bn == "stored" else "recompute"  # directions move no BN buffer
        evaluate = model_losses_at(theta, directions, run.model, run.width, run.data, x, y,
                                   compute.eval_settings(run, bn))
        evaluations = []

        def losses_at(index, steps):
            evaluations.append(len(index))
            return evaluate(index, steps)

        base_loss = float(losses_at(torch.tensor([0]), torch.tensor([0.0]))[0])
        radii = basin_radii(losses_at, settings_.directions, base_loss, settings_.delta, settings_.initial,
                            bisections=settings_.bisections)
        dimension = kept_count(mask)
        finite = radii[torch.isfinite(radii)]
        return {"radii": radii.tolist(), "radius_mean": float(radii.mean()),
                "radius_std": float(radii.std()) if len(radii) > 1 else 0.0,
                "unbounded_directions": int((~torch.isfinite(radii)).sum()),
                "dimension": dimension, "log_volume": log_volume(radii, dimension) if len(finite) == len(radii)
                else float("inf"), "base_loss": base_loss, "points_evaluated": sum(evaluations),
                "passes": len(evaluations), "train_images": len(y)}

    return cached(run, "volume", [solution], asdict(settings_), measure, force)


@dataclass
class SharpnessSettings:
    """Extreme Hessian eigenvalues (Lanczos) and trace within the unpruned weights (STUDY.md)."""
    images: int = setting(4096, "fixed training sample (STUDY.md: at least 4,096; smaller ones are unstable).",
                          minimum=1)
    products: int = setting(200, "Hessian-vector products the eigensolver may spend, at most.", minimum=4)
    lanczos_vectors: int = setting(20, "Lanczos vectors (ARPACK's ncv): memory and products per restart.",
                                   minimum=4)
    tolerance: float = setting(1e-3, "an eigenvalue is converged when ||Hv - lambda v|| / |lambda| is below this.",
                               kind="float", positive=True)
    trace_samples: int = setting(50, "Rademacher vectors for the trace.", minimum=1)
    seed: int = setting(0, "seed of the start vector and the Rademacher vectors.", minimum=0, maximum=2 ** 32 - 1)

    def __post_init__(self):
        settings.check(self)


def sharpness(run: Run, solution: Solution, settings_: SharpnessSettings | None = None, force: bool = False,
              chunk_size: int = 512) -> dict:
    """lambda_max ("top_eigenvalue"), lambda_min, their residuals and the trace of the Hessian
    of the train loss at `solution`, restricted to its unpruned weights, on a fixed training
    sample (stored BatchNorm statistics)."""
    settings_ = settings_ or SharpnessSettings()

    def measure():
        theta, mask = solution.load()
        model = create_model(run.model, run.width)
        model.load_state_dict(theta)
        model.to(run.device)
        x, y = run.sample("train", settings_.images)
        x, y = normalize(x.to(run.device)), y.to(run.device)
        names = list(mask)
        params = {n: theta[n].to(run.device) for n in names}
        device_mask = {n: m.to(run.device, params[n].dtype) for n, m in mask.items()}
        losses = model_loss(model, names, x, y, chunk_size)
        with torch.no_grad():
            loss = float(sum(f(params) for f in losses))
        start = time.perf_counter()
        eigen = extreme_eigenvalues(losses, params, device_mask, settings_.tolerance, settings_.products,
                                    settings_.lanczos_vectors, settings_.seed)
        eigen_seconds = time.perf_counter() - start
        trace = hutchinson_trace(losses, params, device_mask, settings_.trace_samples, settings_.seed)
        return {"top_eigenvalue": eigen.largest, "lambda_min": eigen.smallest,
                "eigen_residual": max(eigen.residual_largest, eigen.residual_smallest),
                "residual_largest": eigen.residual_largest, "residual_smallest": eigen.residual_smallest,
                "hessian_vector_products": eigen.products, "eigen_solver": eigen.solver,
                "eigen_converged": eigen.converged, "trace": trace.value, "trace_samples": trace.samples,
                "trace_standard_error": trace.standard_error, "loss": loss, "images": len(y),
                "dimension": kept_count(mask), "eigen_seconds": eigen_seconds,
                "trace_seconds": time.perf_counter() - start - eigen_seconds}

    return cached(run, "sharpness", [solution], asdict(settings_), measure, force)
