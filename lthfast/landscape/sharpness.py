"""Sharpness of a stored minimum (docs/protocol.md): the Hessian's extreme eigenvalues (Lanczos) and
trace (Hutchinson) of the train loss within the unpruned weights, on a fixed training sample
with stored BatchNorm statistics; the linear algebra is lthfast.landscape.hessian's.
tests/test_analysis.py checks that it is finite and restricted to the unpruned weights.
"""
from __future__ import annotations

import time
from dataclasses import asdict

import torch

from lthfast.config.analyses import SharpnessSettings
from lthfast.data.dataset import normalize
from lthfast.landscape.hessian import extreme_eigenvalues, hutchinson_trace, model_loss
from lthfast.landscape.runs import AnalysisRun, cached
from lthfast.models.families import create_model
from lthfast.pruning.masks import kept_count
from lthfast.store.level import Solution


def sharpness(run: AnalysisRun, solution: Solution, settings: SharpnessSettings | None = None, force: bool = False,
              chunk_size: int = 512) -> dict:
    """lambda_max ("top_eigenvalue"), lambda_min, their residuals and the trace of the Hessian
    of the train loss at `solution`, restricted to its unpruned weights, on a fixed training
    sample (stored BatchNorm statistics)."""
    settings = settings or SharpnessSettings()

    def measure():
        theta, mask = solution.load()
        model = create_model(run.model, run.width, num_classes=run.data.num_classes)
        model.load_state_dict(theta)
        model.to(run.device)
        x, y = run.sample("train", settings.images)
        x, y = normalize(x.to(run.device), mean=run.data.mean, std=run.data.std), y.to(run.device)
        names = list(mask)
        params = {n: theta[n].to(run.device) for n in names}
        device_mask = {n: m.to(run.device, params[n].dtype) for n, m in mask.items()}
        losses = model_loss(model, names, x, y, chunk_size)
        with torch.no_grad():
            loss = float(sum(f(params) for f in losses))
        start = time.perf_counter()
        eigen = extreme_eigenvalues(losses, params, device_mask, settings.tolerance, settings.products,
                                    settings.lanczos_vectors, settings.seed)
        eigen_seconds = time.perf_counter() - start
        trace = hutchinson_trace(losses, params, device_mask, settings.trace_samples, settings.seed)
        return {"top_eigenvalue": eigen.largest, "lambda_min": eigen.smallest,
                "eigen_residual": max(eigen.residual_largest, eigen.residual_smallest),
                "residual_largest": eigen.residual_largest, "residual_smallest": eigen.residual_smallest,
                "hessian_vector_products": eigen.products, "eigen_solver": eigen.solver,
                "eigen_converged": eigen.converged, "trace": trace.value, "trace_samples": trace.samples,
                "trace_standard_error": trace.standard_error, "loss": loss, "images": len(y),
                "dimension": kept_count(mask), "eigen_seconds": eigen_seconds,
                "trace_seconds": time.perf_counter() - start - eigen_seconds}

    return cached(run, "sharpness", [solution], asdict(settings), measure, force)
