"""Noise statistics of the report: means and spreads over seeds, paired differences and
whether a difference exceeds twice its standard error.

A difference counts only if it exceeds 2 standard errors. With two seeds or more the
standard error is the one of the mean paired difference over seeds; with one seed only
evaluation noise (binomial, sqrt(p(1-p)/n)) is known, which measures the evaluation, not
the training.
"""
from __future__ import annotations

import math

SUPPORTS, DOES_NOT, CANNOT_TELL = "supports", "does not support", "cannot tell"


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def std(values: list[float]) -> float:
    """Sample standard deviation (n - 1); nan for fewer than two values."""
    if len(values) < 2:
        return float("nan")
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def mean_std(values: list[float]) -> dict:
    return {"mean": mean(values), "std": std(values), "n": len(values), "values": values}


def paired_difference(a: list[float], b: list[float], binomial_n: int | None = None) -> dict:
    """mean(a - b) over seeds and its standard error: over seeds with two or more, else the
    binomial one of two proportions on binomial_n examples each (None: no estimate)."""
    diffs = [x - y for x, y in zip(a, b)]
    if not diffs:
        return {"difference": float("nan"), "se": None, "noise": "missing"}
    if len(diffs) >= 2:
        return {"difference": mean(diffs), "se": std(diffs) / math.sqrt(len(diffs)), "noise": "seeds"}
    if binomial_n:
        p, q = a[0], b[0]
        return {"difference": diffs[0], "se": math.sqrt((p * (1 - p) + q * (1 - q)) / binomial_n),
                "noise": f"binomial, n = {binomial_n}"}
    return {"difference": diffs[0], "se": None, "noise": "one seed, no estimate"}


def beyond_noise(d: dict) -> str:
    """'above', 'below' or 'within' twice the standard error of zero; without an estimate
    the difference is compared as measured (then above or below unless exactly zero)."""
    if d["se"] is None:
        return "above" if d["difference"] > 0 else "below" if d["difference"] < 0 else "within"
    if d["difference"] > 2 * d["se"]:
        return "above"
    if d["difference"] < -2 * d["se"]:
        return "below"
    return "within"


def verdict(checks: list[str], expected: str = "above") -> str:
    """All comparisons beyond noise in the expected direction: supports; any beyond noise
    the other way: does not; otherwise (within noise or missing): cannot tell."""
    opposite = {"above": "below", "below": "above"}[expected]
    if checks and all(c == expected for c in checks):
        return SUPPORTS
    if any(c == opposite for c in checks):
        return DOES_NOT
    return CANNOT_TELL
