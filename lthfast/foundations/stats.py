"""Noise statistics of the report: quantities over seeds, paired differences, and the one-sided
Student t test every comparison of trained networks passes or fails (docs/protocol.md,
"Deciding a finding").

Trained networks vary from seed to seed far more than their evaluation does (the same
command on two CPUs moved one network's test accuracy by 4.6 points, against a binomial
error of 0.7 points on 10,000 images), so every comparison between trained networks uses
the seed-to-seed spread:
  - two seeds or more in the study: the standard error of the mean paired difference over
    its n seeds, n - 1 degrees of freedom;
  - one seed: the spread of the same difference over stored runs of the same config that
    differ only in the seed (the root's other seeds), if there are n >= 2: the standard
    error of one observation is their standard deviation, n - 1 degrees of freedom;
  - otherwise no noise estimate: the comparison is "unknown" and cannot decide.
tests/test_verdicts.py checks both paths against hand computation.
"""
from __future__ import annotations

import math

SUPPORTS, DOES_NOT, CANNOT_TELL, NOT_MEASURED = "supports", "does not support", "cannot tell", "not measured"
LEVEL = 0.05  # one-sided level of every test over seeds (docs/protocol.md, "Deciding a finding")
PROVISIONAL_BELOW = 5  # verdicts from fewer seeds are marked provisional (docs/protocol.md)


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
    """sign * (a - b) (or sign * a if b is None), paired by seed: the mean difference, its
    standard error and n (its degrees of freedom are n - 1); se None without a noise estimate."""
    def diffs(key):
        other = b[key] if b is not None else {}
        return {s: sign * (v - (other[s] if b is not None else 0.0)) for s, v in a[key].items()
                if b is None or s in other}
    own, stored = diffs("by_seed"), diffs("noise")
    if not own:
        return {"difference": float("nan"), "se": None, "noise": "missing", "beyond": "missing"}
    values = list(own.values())
    if len(values) >= 2:
        return {"difference": mean(values), "se": std(values) / math.sqrt(len(values)),
                "noise": f"seed spread, {len(values)} seeds", "n": len(values), "seeds": len(values)}
    if len(stored) >= 2:
        return {"difference": values[0], "se": std(list(stored.values())), "n": len(stored), "seeds": 1,
                "noise": f"one seed; spread of {len(stored)} stored runs of the same config (seeds "
                         f"{', '.join(sorted(stored))})"}
    return {"difference": values[0], "se": None, "noise": "one seed, no stored seed spread", "seeds": 1}


def paired_difference(a: dict, b: dict) -> dict:
    """a - b over seeds (a and b from mean_std)."""
    return _difference(a, b)


def versus_zero(a: dict) -> dict:
    """a itself over seeds (e.g. a barrier, to be tested against a threshold)."""
    return _difference(a, None)


def t_critical(n: int) -> float:
    """The one-sided 1 - LEVEL quantile of Student's t with n - 1 degrees of freedom (n >= 2):
    2.92 at 3 seeds, 2.35 at 4, 2.13 at 5 (tests/test_connectivity.py)."""
    from scipy.stats import t  # here, not at import: the config layer reads foundations without scipy
    return float(t.ppf(1 - LEVEL, n - 1))


def _t_cdf(x: float, n: int) -> float:
    from scipy.stats import t
    return float(t.cdf(x, n - 1))


def one_sided(d: dict, expected: str, null: float = 0.0) -> dict:
    """The one-sided Student t test of a difference d (from _difference) against `null`, at
    LEVEL with n - 1 degrees of freedom (docs/protocol.md, "Deciding a finding").

    expected: "above" or "below", the side the finding predicts. Adds t (standard errors
    from the null), t_critical, the one-sided 95% bound on the expected side (lower for
    "above", upper for "below"), p_expected and p_other (one-sided p-values of each side)
    and "beyond": "above" or "below" where the test passes on that side, "within" where it
    passes on neither, "unknown" without a noise estimate, "missing" without the numbers.
    A zero standard error (no spread over seeds) passes on the side the difference lies.
    tests/test_verdicts.py checks it against hand computation."""
    out = {**d, "expected": expected, "null": null}
    if d.get("beyond") == "missing" or math.isnan(d["difference"]):
        return {**out, "beyond": "missing"}
    if d["se"] is None:
        return {**out, "beyond": "unknown"}
    critical, gap = t_critical(d["n"]), d["difference"] - null
    t = gap / d["se"] if d["se"] > 0 else math.copysign(math.inf, gap) if gap else 0.0
    p_above = 1 - _t_cdf(t, d["n"])  # the chance of a t this large if the truth were the null
    p_below = _t_cdf(t, d["n"])
    beyond = "above" if t >= critical else "below" if t <= -critical else "within"
    margin = critical * d["se"]
    bound = d["difference"] - margin if expected == "above" else d["difference"] + margin
    return {**out, "t": t, "t_critical": critical, "bound": bound, "beyond": beyond,
            "p_expected": p_above if expected == "above" else p_below,
            "p_other": p_below if expected == "above" else p_above}


def connectivity(barrier: dict, threshold: float, expected: str = "above") -> dict:
    """Two networks' linear connectivity from their test-error barrier over seeds (mean_std):
    the barrier tested against `threshold` by one_sided; "below" (connected) when below it,
    "above" (separated) when above it, "within" (neither) otherwise (Frankle et al. 2020;
    docs/protocol.md, "Linear connectivity"). `height` is the mean barrier, `difference`
    the barrier minus the threshold, `bounds` the two one-sided 95% bounds of the height.
    tests/test_connectivity.py checks all three states."""
    d = _difference(barrier, None)
    height = d["difference"]
    d = {**d, "height": height, "threshold": threshold, "difference": height - threshold}
    tested = one_sided(d, expected)
    if tested["beyond"] in ("unknown", "missing"):
        return tested
    margin = tested["t_critical"] * d["se"]
    return {**tested, "bounds": (height - margin, height + margin)}


def holm_rejects(p_values: list[float], level: float = LEVEL) -> list[bool]:
    """Holm's step-down correction: which of m hypotheses are rejected at family-wise `level`
    (the smallest p-value against level / m, the next against level / (m - 1), ...; stop at
    the first that fails). Holm 1979; tests/test_verdicts.py."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected = [False] * len(p_values)
    for rank, i in enumerate(order):
        if p_values[i] > level / (len(p_values) - rank):
            break
        rejected[i] = True
    return rejected


def verdict(primary: list[dict]) -> str:
    """A finding's verdict from its primary comparison (one_sided's dicts, one per part):
    supports when every part passes the expected way (an intersection-union test, no
    correction); does not support when any part passes the other way at Holm's corrected
    level over the parts; otherwise cannot tell (docs/protocol.md, "Deciding a finding")."""
    if not primary:
        return CANNOT_TELL
    if all(c["beyond"] == c["expected"] for c in primary):
        return SUPPORTS
    p_other = [c.get("p_other", 1.0) for c in primary]  # a part without a noise estimate rejects nothing
    if any(holm_rejects(p_other)):
        return DOES_NOT
    return CANNOT_TELL


def provisional(primary: list[dict]) -> bool:
    """Whether a verdict rests on fewer than PROVISIONAL_BELOW seeds (docs/protocol.md)."""
    seeds = [c.get("seeds", c.get("n", 0)) for c in primary if c.get("se") is not None]
    return not seeds or min(seeds) < PROVISIONAL_BELOW
