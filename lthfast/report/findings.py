"""The seven findings of docs/protocol.md, each with its test beside its statement, decided at
every rewind point where the strategies it needs were run.

A finding's verdict comes from its primary comparison, stated in docs/protocol.md ("Deciding
a finding") before any run; its other comparisons are reported as secondary and never
decide. Every comparison is a difference between trained networks over seeds with a
one-sided Student t test at 0.05 (lthfast.foundations.stats.one_sided): supports when the
primary passes the expected way (both parts, for a two-part primary), does not support when
it passes the other way (Holm-corrected over the parts), cannot tell otherwise; verdicts
from fewer than 5 seeds are provisional. "Not worse" checks are non-inferiority tests
against a declared margin; two networks are connected or separated by the one connectivity
rule. L is the deepest level of the study. The tests are lthfast's own reading of the
findings (the paper's exact protocol is not available); no threshold is tuned.
tests/test_verdicts.py gives every finding known answers.
"""
from __future__ import annotations

import math

from lthfast.foundations.stats import (
    DOES_NOT,
    NOT_MEASURED,
    SUPPORTS,
    connectivity,
    measured,
    one_sided,
    paired_difference,
    provisional,
    verdict,
    versus_zero,
)

MISSING = {"difference": math.nan, "se": None, "noise": "missing", "beyond": "missing"}
# Frankle et al. 2020 call two networks linearly connected when the test-error barrier between
# them is below 2%: a published criterion, not one tuned here; --connected-threshold sets another.
CONNECTED = 0.02
# Non-inferiority margin of "not worse" accuracy checks (docs/protocol.md, "Deciding a finding").
ACCURACY_MARGIN = 0.01


def compare(name: str, d: dict, expected: str = "above", null: float = 0.0, kind: str = "difference") -> dict:
    """A comparison the finding expects on the `expected` side of `null`."""
    return {"name": name, "kind": kind, **one_sided(d, expected, null)}


def not_worse(name: str, d: dict, margin: float = ACCURACY_MARGIN) -> dict:
    """Non-inferiority: the difference is above -margin by the t test (failing to find a
    difference is not evidence of none)."""
    return compare(name, d, "above", -margin, kind=f"non-inferiority, margin {margin:g}")


def threshold(results: dict) -> float:
    """The study's connectivity threshold (studies stored before it existed: CONNECTED)."""
    return results["config"].get("connected_threshold", CONNECTED)


def barrier(curve: dict) -> tuple[dict | None, str]:
    """A curve's test-error barrier over seeds: the held-out reading (peak chosen on one half
    of the test images, height read on the other) where stored, else the plain maximum."""
    if measured(curve.get("barrier_test_error_heldout")):
        return curve["barrier_test_error_heldout"], "held-out"
    return curve.get("barrier_test_error"), "plain maximum"


def linked(name: str, curve: dict, results: dict, expected: str = "above") -> dict:
    """The connectivity rule on a curve: "above" separated, "below" connected."""
    stat, reading = barrier(curve)
    if not measured(stat):
        return {"name": name, "kind": "connectivity", **MISSING, "expected": expected}
    return {"name": f"{name} ({reading})", "kind": "connectivity", **connectivity(stat, threshold(results), expected)}


def _row(r: dict, strategy: str, level: int) -> dict | None:
    return next((row for row in r["levels"].get(strategy, []) if row["level"] == level), None)


def _pair(r, a, b, level, key) -> dict:
    ra, rb = _row(r, a, level), _row(r, b, level)
    return paired_difference(ra[key], rb[key]) if ra and rb else MISSING


def _fmt(c: dict) -> str:
    if c["beyond"] == "missing":
        return f"{c['name']}: not stored"
    if c.get("kind") == "connectivity":
        state = {"below": "connected", "above": "separated"}.get(c["beyond"], "neither connected nor separated")
        if c.get("se") is None:
            return f"{c['name']}: {c['height']:.4f} ({c['noise']})"
        low, high = c["bounds"]
        return (f"{c['name']}: {c['height']:.4f} ± {c['se']:.4f} (one-sided 95% bounds {low:.4f}, {high:.4f}), "
                f"{state} at {c['threshold']:.0%}")
    if c.get("se") is None:
        return f"{c['name']}: {c['difference']:+.4f} ({c['noise']})"
    side = "lower" if c["expected"] == "above" else "upper"
    null = f" against {c['null']:+.4f}" if c["null"] else ""
    return (f"{c['name']}: {c['difference']:+.4f} ± {c['se']:.4f}, one-sided 95% {side} bound {c['bound']:+.4f}"
            f"{null} (t {c['t']:+.2f}, critical {c['t_critical']:.2f})")


def passed(c: dict) -> str:
    """How one comparison came out: passes (the expected way), fails (the other way), or not."""
    if c["beyond"] == c["expected"]:
        return "passes"
    return "fails" if c["beyond"] in ("above", "below") else c["beyond"]


def decide(primary: list[dict], secondary: list[dict] = (), missing_reason: str | None = None) -> dict:
    """A finding's verdict from its primary comparison, a one-sentence reason and the deciding
    numbers; secondary comparisons are reported beside it."""
    if missing_reason:
        return {"verdict": NOT_MEASURED, "provisional": False, "reason": missing_reason, "deciding": "—",
                "primary": [], "secondary": [], "checks": []}
    secondary = list(secondary)
    result = verdict(primary)
    states = [passed(c) for c in primary]
    if result == SUPPORTS:
        reason = "the primary comparison passes the expected way" + (" in both parts" if len(primary) > 1 else "")
    elif result == DOES_NOT:
        reason = "the primary comparison passes the other way" + (
            " in one part at Holm's corrected level" if len(primary) > 1 else "")
    elif all(s in ("unknown", "missing") for s in states):
        reason = ("the results it needs are not stored" if "missing" in states else
                  f"no noise estimate: {primary[0]['noise']}")
    else:
        reason = "the primary comparison passes neither way: its one-sided 95% bound includes the null"
    if secondary:
        reason += (f"; secondary comparisons (do not decide): {states_count(secondary, 'passes')} of {len(secondary)} "
                   f"pass the expected way, {states_count(secondary, 'fails')} the other way")
    return {"verdict": result, "provisional": result != NOT_MEASURED and provisional(primary), "reason": reason,
            "deciding": "; ".join(_fmt(c) for c in primary), "primary": primary, "secondary": secondary,
            "checks": primary + secondary}


def states_count(checks: list[dict], state: str) -> int:
    return sum(passed(c) == state for c in checks)


def _per_rewind(results: dict, test) -> dict:
    """test(r, deepest) -> decide(...) at every rewind point."""
    deepest = results["config"]["levels"]
    return {rewind: test(r, deepest) for rewind, r in results["rewinds"].items()}


def _needs(r: dict, *strategies) -> str | None:
    missing = [s for s in strategies if s not in r["strategies"]]
    return f"not run at this rewind point: {', '.join(missing)}" if missing else None


STATEMENT_1 = ("Good minima with small volume exist; they generalize well but SGD does not find them directly. "
               "IMP exposes them by removing bad dimensions.")
TEST_1 = ("primary: IMP's test accuracy at the deepest level L is above that of the same mask trained from a fresh "
          "initialization (imp:L - reinit:L). Secondary: the mean basin radius falls from level 0 to L (log-volumes "
          "of different dimensions are not comparable, so they are reported but do not decide); imp:L is not worse "
          "than the dense network by more than the margin; imp:k - reinit:k at the other levels.")


def finding_1(results: dict) -> dict:
    def test(r, L):
        if missing := _needs(r, "reinit"):
            return decide([], missing_reason=missing)
        geometry = {g["level"]: g for g in r.get("geometry", [])}
        secondary = []
        if 0 in geometry and L in geometry:
            secondary.append(compare(f"radius, level 0 - level {L}",
                                     paired_difference(geometry[0]["radius_mean"], geometry[L]["radius_mean"])))
        imp = _row(r, "imp", L)
        secondary.append(not_worse(f"test accuracy, imp:{L} - dense",
                                   paired_difference(imp["test_accuracy"], r["dense_accuracy"]) if imp else MISSING))
        secondary += [compare(f"test accuracy, imp:{k} - reinit:{k}", _pair(r, "imp", "reinit", k, "test_accuracy"))
                      for k in range(1, L)]
        return decide([compare(f"test accuracy, imp:{L} - reinit:{L}", _pair(r, "imp", "reinit", L, "test_accuracy"))],
                      secondary)
    return {"number": 1, "statement": STATEMENT_1, "test": TEST_1, "per_rewind": _per_rewind(results, test)}


STATEMENT_2 = "There are loss barriers between successive IMP solutions: they are not linearly connected."
TEST_2 = ("primary: the last pair of successive IMP solutions, imp:(L-1) → imp:L, is separated by the connectivity "
          "rule (its test-error barrier above the threshold by the t test). Secondary: every other successive pair.")


def finding_2(results: dict) -> dict:
    def test(r, L):
        pairs = [linked(f"test-error barrier {' → '.join(c['pair'])}", c, results) for c in r["successive"]]
        if not pairs:
            return decide([], missing_reason="no successive IMP solutions")
        return decide(pairs[-1:], pairs[:-1])
    return {"number": 2, "statement": STATEMENT_2, "test": TEST_2, "per_rewind": _per_rewind(results, test)}


STATEMENT_3 = ("IMP solutions lie in the same loss sublevel set; the other strategies (one-shot, random pruning, "
               "pruning large weights, ...) leave it and end up worse.")
TEST_3 = ("eps = (1 + margin) x the dense network's train loss (mean over seeds), fixed before any pruning. Primary, "
          "two parts: oneshot:L's train loss is above eps and imp:L's below it. Secondary: every other IMP level "
          "below eps; the segment between successive IMP solutions stays inside S(eps) (its largest train loss "
          "along the interpolation curve below eps); the deepest solution of every other strategy run above eps.")


def finding_3(results: dict) -> dict:
    def test(r, L):
        if missing := _needs(r, "oneshot"):
            return decide([], missing_reason=missing)
        eps = r.get("eps", {}).get("value")
        if eps is None:
            return decide([], missing_reason="no dense network stored to set eps")

        def minus_eps(stat):  # a loss minus the fixed eps, over seeds
            d = versus_zero(stat)
            return {**d, "difference": d["difference"] - eps}

        def loss(strategy, k, expected):
            row = _row(r, strategy, k)
            return compare(f"{strategy}:{k} train loss - eps", minus_eps(row["train_loss"]) if row else MISSING,
                           expected)
        secondary = [loss("imp", k, "below") for k in range(1, L)]
        secondary += [compare(f"segment {' → '.join(c['pair'])}, largest train loss - eps",
                              minus_eps(c["max_train_loss"]), "below")
                      for c in r["successive"] if measured(c.get("max_train_loss"))]
        secondary += [loss(s, L, "above") for s in ("random-prune", "prune-large", "reinit") if s in r["strategies"]]
        return decide([loss("oneshot", L, "above"), loss("imp", L, "below")], secondary)
    return {"number": 3, "statement": STATEMENT_3, "test": TEST_3, "per_rewind": _per_rewind(results, test)}


STATEMENT_4 = "Rewinding moves SGD away from the baseline and lets it find better minima that were not reachable before."
TEST_4 = ("primary: the rewound solution's test accuracy at L is above fine-tuning's from the same baseline "
          "(imp:L - finetune:L). Secondary: at every level the baseline b_k and the rewound solution are separated by "
          "the connectivity rule; imp:k - finetune:k at the other levels.")


def finding_4(results: dict) -> dict:
    def test(r, L):
        if missing := _needs(r, "finetune"):
            return decide([], missing_reason=missing)
        secondary = [linked(f"test-error barrier imp:{k}:baseline → imp:{k}", curve, results)
                     for k, curve in enumerate(r["from_baseline"].get("imp", []), start=1)]
        secondary += [compare(f"test accuracy, imp:{k} - finetune:{k}", _pair(r, "imp", "finetune", k, "test_accuracy"))
                      for k in range(1, L)]
        return decide([compare(f"test accuracy, imp:{L} - finetune:{L}",
                               _pair(r, "imp", "finetune", L, "test_accuracy"))], secondary)
    return {"number": 4, "statement": STATEMENT_4, "test": TEST_4, "per_rewind": _per_rewind(results, test)}


STATEMENT_5 = "Iterative pruning yields a sequence of good baselines; the one-shot baseline is too poor."
TEST_5 = ("primary: at the deepest level L >= 2 (level 1's one-shot and IMP baselines are the same network), the "
          "train accuracy (BatchNorm recomputed) of IMP's baseline b_L is above the one-shot baseline's at the same "
          "density. Secondary: the same at the other levels k >= 2.")
KEY = "baseline_train_accuracy_bn_recomputed"


def finding_5(results: dict) -> dict:
    def test(r, L):
        if missing := _needs(r, "oneshot"):
            return decide([], missing_reason=missing)
        if L < 2:
            return decide([], missing_reason="needs 2 levels or more")

        def level(k):
            return compare(f"baseline train accuracy, imp:{k} - oneshot:{k}", _pair(r, "imp", "oneshot", k, KEY))
        return decide([level(L)], [level(k) for k in range(2, L)])
    return {"number": 5, "statement": STATEMENT_5, "test": TEST_5, "per_rewind": _per_rewind(results, test)}


STATEMENT_6 = ("Pruning the smallest weights keeps good baselines; pruning the largest weights, or random pruning, "
               "degrades them.")
TEST_6 = ("on one parent, IMP's theta_(L-1) pruned three ways to level L's density with no training (docs/protocol.md, "
          "\"Baselines on one parent\"): primary: the smallest-magnitude baseline's train accuracy (BatchNorm "
          "recomputed) is above the random-magnitude one's. Secondary: smallest above largest on the same parent; "
          "the same at the other levels; and, between chains, IMP's baselines above the prune-large and random-prune "
          "chains' baselines (which mix the pruning rule with the quality of each chain's parent).")


def _one_parent(r: dict, k: int) -> dict | None:
    return next((row for row in r.get("analyses", {}).get("one-parent", []) if row["solutions"] == [f"imp:{k - 1}"]),
                None)


def finding_6(results: dict) -> dict:
    def test(r, L):
        def parent(k, other):
            row = _one_parent(r, k)
            d = (paired_difference(row["smallest_train_accuracy"], row[f"{other}_train_accuracy"])
                 if row and measured(row.get("smallest_train_accuracy")) else MISSING)
            return compare(f"one parent imp:{k - 1}, baseline train accuracy, smallest - {other}", d)
        secondary = [parent(L, "largest")] + [parent(k, other) for k in range(1, L) for other in ("random", "largest")]
        secondary += [compare(f"chains, baseline train accuracy, imp:{k} - {s}:{k}", _pair(r, "imp", s, k, KEY))
                      for k in range(1, L + 1) for s in ("prune-large", "random-prune") if s in r["strategies"]]
        primary = parent(L, "random")
        if primary["beyond"] == "missing" and not any(c["beyond"] != "missing" for c in secondary):
            return decide([], missing_reason="no baselines on one parent stored at this rewind point")
        return decide([primary], secondary)
    return {"number": 6, "statement": STATEMENT_6, "test": TEST_6, "per_rewind": _per_rewind(results, test)}


STATEMENT_7 = "Fine-tuning stays near the baseline; rewinding escapes it and finds better minima."
TEST_7 = ("primary: at the deepest level L, the test-error barrier from the baseline b_L to the rewound solution "
          "minus the barrier from b_L to the fine-tuned one is above zero (paired over seeds). Secondary: at every "
          "level the fine-tuned solution is connected to its baseline (non-inferiority against the connectivity "
          "threshold); the rewound solution is farther from the baseline (relative distance); its test accuracy is "
          "above fine-tuning's.")


def finding_7(results: dict) -> dict:
    def test(r, L):
        if missing := _needs(r, "finetune"):
            return decide([], missing_reason=missing)
        imp, ft = r["from_baseline"].get("imp", []), r["from_baseline"].get("finetune", [])
        if not imp or not ft:
            return decide([], missing_reason="no curve from the baseline at this rewind point")
        (b_imp, reading), (b_ft, _) = barrier(imp[-1]), barrier(ft[-1])
        d = paired_difference(b_imp, b_ft) if measured(b_imp) and measured(b_ft) else MISSING
        primary = compare(f"test-error barrier b_{L} → imp:{L} minus b_{L} → finetune:{L} ({reading})", d)
        secondary = []
        for k, (i, f) in enumerate(zip(imp, ft), start=1):
            secondary.append(linked(f"test-error barrier imp:{k}:baseline → finetune:{k}", f, results, "below"))
            if measured(i.get("distance", {}).get("relative")) and measured(f.get("distance", {}).get("relative")):
                secondary.append(compare(f"relative distance from b_{k}, imp - finetune",
                                         paired_difference(i["distance"]["relative"], f["distance"]["relative"])))
        secondary.append(compare(f"test accuracy, imp:{L} - finetune:{L}",
                                 _pair(r, "imp", "finetune", L, "test_accuracy")))
        return decide([primary], secondary)
    return {"number": 7, "statement": STATEMENT_7, "test": TEST_7, "per_rewind": _per_rewind(results, test)}


FINDINGS = (finding_1, finding_2, finding_3, finding_4, finding_5, finding_6, finding_7)


def findings(results: dict) -> list[dict]:
    """Every finding's test, its comparisons and verdict at each rewind point, and its headline
    verdict: the late rewind point's (where every strategy runs)."""
    late = str(results["config"]["rewind_iter"])
    out = []
    for finding in FINDINGS:
        f = finding(results)
        f["verdict"] = f["per_rewind"][late]["verdict"]
        f["provisional"] = f["per_rewind"][late]["provisional"]
        out.append(f)
    return out
