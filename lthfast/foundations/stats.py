"""Noise statistics of the report: quantities over seeds, paired differences, and whether a
difference exceeds twice its standard error.

Trained networks vary from seed to seed far more than their evaluation does (the same
command on two CPUs moved one network's test accuracy by 4.6 points, against a binomial
error of 0.7 points on 10,000 images), so every comparison between trained networks uses
the seed-to-seed spread:
  - two seeds or more in the study: the standard error of the mean paired difference;
  - one seed: the spread of the same difference over stored runs of the same config that
    differ only in the seed (the root's other seeds), if there are two or more; the
    standard error of one observation is then that standard deviation;
  - otherwise no noise estimate: the comparison is "unknown" and cannot decide.
"""
from __future__ import annotations

import math

SUPPORTS, DOES_NOT, CANNOT_TELL, NOT_MEASURED = "supports", "does not support", "cannot tell", "not measured"


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def std(values: list[float]) -> float:
    """Sample standard deviation (n - 1); nan for fewer than two values."""
    if len(values) < 2:
        return float("nan")
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def measured(stat: dict | None) -> bool:
    """Whether a quantity over seeds (mean_std's dict) holds at least one value."""
    return bool(stat and stat.get("n") and stat.get("mean") is not None)


def mean_std(by_seed: dict, noise: dict | None = None) -> dict:
    """A quantity over the study's seeds ({seed: value}), and over every stored seed of the
    same config (`noise`, the study's seeds included) for the spread of one-seed studies."""
    values = list(by_seed.values())
    return {"mean": mean(values), "std": std(values), "n": len(values), "values": values,
            "by_seed": {str(k): v for k, v in by_seed.items()},
            "noise": {str(k): v for k, v in (noise or by_seed).items()}}


def _difference(a: dict, b: dict | None, sign: float = 1.0) -> dict:
    """sign * (a - b) (or sign * a if b is None), paired by seed, with its standard error."""
    def diffs(key):
        other = b[key] if b is not None else {}
        return {s: sign * (v - (other[s] if b is not None else 0.0)) for s, v in a[key].items()
                if b is None or s in other}
    own, stored = diffs("by_seed"), diffs("noise")
    if not own:
        return {"difference": float("nan"), "se": None, "noise": "missing", "beyond": "missing"}
    values = list(own.values())
    if len(values) >= 2:
        d = {"difference": mean(values), "se": std(values) / math.sqrt(len(values)),
             "noise": f"seed spread, {len(values)} seeds", "n": len(values)}
    elif len(stored) >= 2:
        d = {"difference": values[0], "se": std(list(stored.values())),
             "noise": f"one seed; spread of {len(stored)} stored runs of the same config (seeds "
                      f"{', '.join(sorted(stored))})", "n": len(stored)}
    else:
        d = {"difference": values[0], "se": None, "noise": "one seed, no stored seed spread"}
    return {**d, "beyond": beyond_noise(d)}


def paired_difference(a: dict, b: dict) -> dict:
    """a - b over seeds (a and b from mean_std)."""
    return _difference(a, b)


def versus_zero(a: dict) -> dict:
    """a itself against zero, over seeds (e.g. a barrier)."""
    return _difference(a, None)


LEVEL = 0.05  # one-sided level of a t test over seeds (docs/protocol.md, "Deciding a finding")
CONNECTED = {"below": "connected", "above": "separated", "within": "neither", "unknown": "unknown",
             "missing": "missing"}


def t_critical(n: int) -> float:
    """The one-sided 1 - LEVEL quantile of Student's t with n - 1 degrees of freedom (n >= 2):
    2.92 at 3 seeds, 2.35 at 4, 2.13 at 5 (tests/test_connectivity.py)."""
    from scipy.stats import t  # here, not at import: the config layer reads foundations without scipy
    return float(t.ppf(1 - LEVEL, n - 1))


def connectivity(barrier: dict, threshold: float) -> dict:
    """Two networks' linear connectivity from their test-error barrier over seeds (mean_std):
    the barrier minus `threshold`, its standard error, and "below" (connected) when the
    barrier is below the threshold by a one-sided Student t test at LEVEL with n - 1 degrees
    of freedom, "above" (separated) when above it by the same test, "within" (neither: the
    comparison cannot tell) otherwise, "unknown" without a noise estimate (Frankle et al.
    2020; docs/protocol.md, "Linear connectivity"). tests/test_connectivity.py checks all three."""
    d = _difference(barrier, None)
    height = d["difference"]
    d = {**d, "height": height, "threshold": threshold, "difference": height - threshold}
    if d["se"] is None or math.isnan(height):
        return d
    critical = t_critical(d["n"])
    margin = critical * d["se"]
    beyond = "above" if d["difference"] > margin else "below" if d["difference"] < -margin else "within"
    return {**d, "beyond": beyond, "t_critical": critical, "bounds": (height - margin, height + margin)}


def beyond_noise(d: dict) -> str:
    """'above', 'below' or 'within' twice the standard error of zero; 'unknown' without a
    noise estimate (trained networks are never compared as measured)."""
    if d["se"] is None or math.isnan(d["difference"]):
        return "unknown"
    if d["difference"] > 2 * d["se"]:
        return "above"
    if d["difference"] < -2 * d["se"]:
        return "below"
    return "within"


def verdict(checks: list[dict]) -> str:
    """Every check beyond noise in its expected direction: supports; any beyond noise the
    other way: does not; otherwise (within noise, unknown or missing): cannot tell.
    A check is {"beyond": ..., "expected": "above" | "below"}."""
    if not checks:
        return CANNOT_TELL
    if all(c["beyond"] == c["expected"] for c in checks):
        return SUPPORTS
    opposite = {"above": "below", "below": "above"}
    if any(c["beyond"] == opposite[c["expected"]] for c in checks):
        return DOES_NOT
    return CANNOT_TELL


def z(check: dict) -> float:
    """The check's difference in standard errors, signed so that positive is the expected way."""
    if check.get("se") in (None, 0) or math.isnan(check.get("difference", math.nan)):
        return math.nan
    return check["difference"] / check["se"] * (1 if check["expected"] == "above" else -1)
