"""Settings of the landscape analyses (docs/protocol.md): an interpolation curve, a basin volume,
sharpness. Declarations only; lthfast.landscape computes them. A stored result is named by
a hash of its settings, so a field added here needs a default that keeps old names."""
from __future__ import annotations

from dataclasses import dataclass

from lthfast.foundations import settings
from lthfast.foundations.settings import setting


@dataclass
class CurveSettings:
    """An interpolation curve (docs/protocol.md): grid, BatchNorm handling, evaluation samples."""
    points: int = setting(21, "grid points from a = 0 to a = 1.", minimum=2)
    bn: str = setting("recompute", "BatchNorm statistics at each point: recompute (from fixed augmented "
                      "training batches) or interpolate.", kind="str", choices=("recompute", "interpolate"))
    bn_batches: int = setting(40, "training batches for recomputed statistics.", minimum=1)
    train_images: int = setting(10_000, "fixed, unaugmented training sample for train loss and accuracy.",
                                minimum=1)
    test_images: int | None = setting(None, "test images (default: all).", minimum=1)
    seed: int = setting(0, "seed of the BatchNorm batches.", minimum=0, maximum=2 ** 32 - 1)

    def __post_init__(self):
        settings.check(self)


@dataclass
class VolumeSettings:
    """Basin radii along random directions (docs/protocol.md, after Huang et al. 2019)."""
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


@dataclass
class SharpnessSettings:
    """Extreme Hessian eigenvalues (Lanczos) and trace within the unpruned weights (docs/protocol.md)."""
    images: int = setting(4096, "fixed training sample (docs/protocol.md: at least 4,096; smaller ones are unstable).",
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
