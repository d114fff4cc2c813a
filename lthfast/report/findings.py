"""The seven findings of docs/protocol.md, each with its quantitative test beside its statement,
decided at every rewind point where the strategies it needs were run.

A finding's test is a list of checks, each a difference between trained networks with its
standard error over seeds (lthfast.foundations.stats) and the direction the finding expects. All
checks beyond noise the expected way: supports; any beyond it the other way: does not
support; otherwise: cannot tell. Beyond noise is twice the standard error, but for a
barrier: two networks are connected or separated by the one connectivity rule (a one-sided
t test over seeds against the study's --connected-threshold, stats.connectivity), the same
for findings 2, 4 and 7. With one seed and no stored seed spread, no check can decide. The
tests are lthfast's own reading of the findings (the paper's exact protocol is not
available); no threshold is tuned. tests/test_connectivity.py gives the rule known answers.
"""
from __future__ import annotations

import math

from lthfast.foundations.stats import (
    CANNOT_TELL,
    DOES_NOT,
    NOT_MEASURED,
    SUPPORTS,
    connectivity,
    paired_difference,
    verdict,
    versus_zero,
    z,
)

MISSING = {"difference": math.nan, "se": None, "noise": "missing", "beyond": "missing"}


def check(name: str, comparison: dict, expected: str = "above") -> dict:
    """A comparison that must lie beyond noise on the `expected` side."""
    return {"name": name, **comparison, "expected": expected, "sign": 1 if expected == "above" else -1}


def unless(name: str, comparison: dict, bad: str) -> dict:
    """A comparison that passes unless it lies beyond noise on the `bad` side (e.g. a barrier
    above noise, an accuracy below the dense one's)."""
    beyond = comparison["beyond"]
    passed = beyond if beyond in ("unknown", "missing") else "below" if beyond == bad else "above"
    return {"name": name, **comparison, "beyond": passed, "expected": "above", "kind": f"not {bad} noise",
            "sign": -1 if bad == "above" else 1}


def _row(r: dict, strategy: str, level: int) -> dict | None:
    return next((row for row in r["levels"].get(strategy, []) if row["level"] == level), None)


def _compare(r, a, b, level, key) -> dict:
    ra, rb = _row(r, a, level), _row(r, b, level)
    if ra is None or rb is None:
        return MISSING
    return paired_difference(ra[key], rb[key])


def _z(c: dict) -> float:
    """The check's difference in standard errors, positive on its passing side."""
    return z({**c, "expected": "above"}) * c["sign"]


def _fmt(c: dict) -> str:
    if "threshold" in c and c.get("se") is not None:  # a barrier under the connectivity rule
        state = {"below": "connected", "above": "separated"}.get(c["beyond"], "neither connected nor separated")
        return (f"{c['name']}: {c['height']:.4f} ± {c['se']:.4f}, {state} at {c['threshold']:.0%} "
                f"(t {c['t_critical']:.2f} standard errors)")
    if c.get("se") is None:
        return f"{c['name']}: {c['difference']:+.4f} ({c['noise']})"
    if c["se"] == 0:
        return f"{c['name']}: {c['difference']:+.4f} ± 0 (no spread over seeds)"
    return f"{c['name']}: {c['difference']:+.4f} ± {c['se']:.4f} ({c['difference'] / c['se']:+.1f} standard errors)"


def decide(checks: list[dict], missing_reason: str | None = None) -> dict:
    """The verdict of a list of checks, a one-sentence reason and the deciding number."""
    if missing_reason:
        return {"verdict": NOT_MEASURED, "reason": missing_reason, "deciding": "—", "checks": []}
    result = verdict(checks)
    if not checks:
        return {"verdict": CANNOT_TELL, "reason": "nothing to compare was stored", "deciding": "—", "checks": []}
    unknown = [c for c in checks if c["beyond"] in ("unknown", "missing")]
    if result == SUPPORTS:
        weakest = min(checks, key=_z)
        reason = f"all {len(checks)} comparisons go the expected way beyond noise"
        deciding = f"weakest {_fmt(weakest)}"
    elif result == DOES_NOT:
        against = [c for c in checks if c["beyond"] not in (c["expected"], "within", "unknown", "missing")]
        worst = min(against, key=_z)
        reason = f"{len(against)} of {len(checks)} comparisons go the other way beyond noise"
        deciding = _fmt(worst)
    elif unknown and len(unknown) == len(checks):
        reason = (f"no noise estimate: {unknown[0]['noise']}" if unknown[0]["beyond"] == "unknown"
                  else "the results it needs are not stored")
        deciding = _fmt(unknown[0]) if unknown[0]["beyond"] == "unknown" else "—"
    else:
        within = [c for c in checks if c["beyond"] != c["expected"]]
        reason = f"{len(within)} of {len(checks)} comparisons are within noise (or have no estimate)"
        deciding = _fmt(min(within, key=lambda c: _z(c) if not math.isnan(_z(c)) else math.inf))
    return {"verdict": result, "reason": reason, "deciding": deciding, "checks": checks}


def _per_rewind(results: dict, test) -> dict:
    """test(r, rewind) -> decide(...) at every rewind point."""
    return {rewind: test(r, rewind) for rewind, r in results["rewinds"].items()}


def _needs(r: dict, *strategies) -> str | None:
    missing = [s for s in strategies if s not in r["strategies"]]
    return f"not run at this rewind point: {', '.join(missing)}" if missing else None


def _needs_escapes(r: dict) -> str | None:
    """Why findings 4 and 7 cannot be tested at this rewind point (no fine-tuning, or no curves
    from the baselines), or None."""
    return _needs(r, "finetune") or (None if "finetune" in r["from_baseline"] else
                                     "no curve from the baseline at this rewind point")


STATEMENT_1 = ("Good minima with small volume exist; they generalize well but SGD does not find them directly. "
               "IMP exposes them by removing bad dimensions.")
TEST_1 = ("(a) the mean basin radius of the IMP minimum along random directions falls from level 0 to the deepest level "
          "(volumes of different dimensions are not comparable: the unit ball's log-volume alone moves by about "
          "(n/2) log n with the dimension n, so the log-volume is reported but does not decide); (b) IMP at the deepest "
          "level is not worse than the dense network beyond noise; (c) the same mask trained from a fresh "
          "initialization (reinit) is worse than IMP beyond noise.")


def finding_1(results: dict) -> dict:
    deepest = results["config"]["levels"]

    def test(r, rewind):
        geometry = {g["level"]: g for g in r["geometry"]}
        if 0 not in geometry or deepest not in geometry:
            return decide([], "no volume measured at this rewind point")
        if missing := _needs(r, "reinit"):
            return decide([], missing)
        imp = _row(r, "imp", deepest)
        return decide([check(f"radius, level 0 - level {deepest}",
                             paired_difference(geometry[0]["radius_mean"], geometry[deepest]["radius_mean"])),
                       unless(f"test accuracy, imp:{deepest} - dense",
                              paired_difference(imp["test_accuracy"], r["dense_accuracy"]) if imp else MISSING, "below"),
                       check(f"test accuracy, imp:{deepest} - reinit:{deepest}",
                             _compare(r, "imp", "reinit", deepest, "test_accuracy"))])
    return {"number": 1, "statement": STATEMENT_1, "test": TEST_1, "per_rewind": _per_rewind(results, test)}


# Frankle et al. 2020 (linear mode connectivity) call two networks linearly connected when the
# test-error barrier between them is below 2%: a published criterion, not one tuned here; a
# study may set another (--connected-threshold), stored with it.
CONNECTED = 0.02
STATEMENT_2 = "There are loss barriers between successive IMP solutions: they are not linearly connected."
TEST_2 = ("every pair of successive IMP solutions is separated by the connectivity rule: its test-error barrier is "
          "above the connectivity threshold by a one-sided t test over seeds. Any pair connected (below it by the "
          "same test) does not support.")


def threshold(results: dict) -> float:
    """The study's connectivity threshold (studies stored before it existed: CONNECTED)."""
    return results["config"].get("connected_threshold", CONNECTED)


def _barrier(curve: dict, results: dict) -> dict:
    """The curve's test-error barrier under the connectivity rule (stats.connectivity)."""
    return connectivity(curve["barrier_test_error"], threshold(results)) if "barrier_test_error" in curve else MISSING


def finding_2(results: dict) -> dict:
    def test(r, rewind):
        return decide([check(f"test-error barrier {' → '.join(c['pair'])}", _barrier(c, results))
                       for c in r["successive"]])
    return {"number": 2, "statement": STATEMENT_2, "test": TEST_2, "per_rewind": _per_rewind(results, test)}


STATEMENT_3 = ("IMP solutions lie in the same loss sublevel set; the other strategies (one-shot, random pruning, "
               "pruning large weights, ...) leave it and end up worse.")
TEST_3 = ("every IMP solution's train loss is below eps (docs/protocol.md's rule) by more than two standard errors of "
          "(loss - eps) over seeds, and the deepest solution of each other strategy run (oneshot, random-prune, "
          "prune-large, reinit) is above it by as much.")


def finding_3(results: dict) -> dict:
    deepest = results["config"]["levels"]

    def test(r, rewind):
        others = [s for s in ("oneshot", "random-prune", "prune-large", "reinit") if s in r["strategies"]]
        if not others:
            return decide([], "no other strategy run at this rewind point")
        margins = r["sublevel_margin"]
        if not margins:
            return decide([], "no sublevel table stored")
        checks = [check(f"imp:{k} loss - eps", versus_zero(margins[f"imp:{k}"]), "below")
                  for k in range(deepest + 1) if f"imp:{k}" in margins]
        checks += [check(f"{s}:{deepest} loss - eps", versus_zero(margins[f"{s}:{deepest}"]))
                   for s in others if f"{s}:{deepest}" in margins]
        return decide(checks)
    return {"number": 3, "statement": STATEMENT_3, "test": TEST_3, "per_rewind": _per_rewind(results, test)}


STATEMENT_4 = "Rewinding moves SGD away from the baseline and lets it find better minima that were not reachable before."
TEST_4 = ("at every level, the baseline b_k and the rewound solution are separated by the connectivity rule (not "
          "reachable along the line), and the rewound solution's test accuracy is above fine-tuning's from the same "
          "baseline beyond noise.")


def _from_baseline(results: dict, number: int, statement: str, text: str, level_checks) -> dict:
    """A finding tested on the curves from each level's baseline b_k to the rewound (imp) and
    fine-tuned solutions: level_checks(r, k, imp_curve, finetune_curve) -> checks."""
    def test(r, rewind):
        if missing := _needs_escapes(r):
            return decide([], missing)
        escapes = r["from_baseline"]
        return decide([c for k, (imp, ft) in enumerate(zip(escapes["imp"], escapes["finetune"]), start=1)
                       for c in level_checks(r, k, imp, ft)])
    return {"number": number, "statement": statement, "test": text, "per_rewind": _per_rewind(results, test)}


def finding_4(results: dict) -> dict:
    return _from_baseline(results, 4, STATEMENT_4, TEST_4, lambda r, k, imp, ft: [
        check(f"test-error barrier imp:{k}:baseline → imp:{k}", _barrier(imp, results)),
        check(f"test accuracy, imp:{k} - finetune:{k}", _compare(r, "imp", "finetune", k, "test_accuracy"))])


STATEMENT_5 = "Iterative pruning yields a sequence of good baselines; the one-shot baseline is too poor."
TEST_5 = ("at every level k >= 2 (level 1's one-shot and IMP baselines are the same network), the IMP baseline's "
          "train accuracy (BatchNorm recomputed) is above the one-shot baseline's at the same density beyond noise.")
STATEMENT_6 = ("Pruning the smallest weights keeps good baselines; pruning the largest weights, or random pruning, "
               "degrades them.")
TEST_6 = ("at every level, the IMP baseline's train accuracy (BatchNorm recomputed) is above the prune-large and "
          "random-prune baselines' beyond noise.")


def _baselines_above(results: dict, number: int, first_level: int, others: tuple, statement: str, text: str) -> dict:
    def test(r, rewind):
        if missing := _needs(r, *others):
            return decide([], missing)
        levels = range(first_level, results["config"]["levels"] + 1)
        if not levels:
            return decide([], f"needs {first_level} levels or more")
        return decide([check(f"baseline train accuracy, imp:{k} - {other}:{k}",
                             _compare(r, "imp", other, k, "baseline_train_accuracy_bn_recomputed"))
                       for k in levels for other in others])
    return {"number": number, "statement": statement, "test": text, "per_rewind": _per_rewind(results, test)}


def finding_5(results: dict) -> dict:
    return _baselines_above(results, 5, 2, ("oneshot",), STATEMENT_5, TEST_5)


def finding_6(results: dict) -> dict:
    return _baselines_above(results, 6, 1, ("prune-large", "random-prune"), STATEMENT_6, TEST_6)


STATEMENT_7 = "Fine-tuning stays near the baseline; rewinding escapes it and finds better minima."
TEST_7 = ("at every level, the rewound solution is farther from the baseline than the fine-tuned one (relative "
          "distance) beyond noise, the fine-tuned solution and its baseline are connected by the connectivity rule, "
          "and the rewound solution's test accuracy is above fine-tuning's beyond noise.")


def finding_7(results: dict) -> dict:
    return _from_baseline(results, 7, STATEMENT_7, TEST_7, lambda r, k, imp, ft: [
        check(f"relative distance from b_{k}, imp - finetune",
              paired_difference(imp["distance"]["relative"], ft["distance"]["relative"])),
        check(f"test-error barrier imp:{k}:baseline → finetune:{k}", _barrier(ft, results), "below"),
        check(f"test accuracy, imp:{k} - finetune:{k}", _compare(r, "imp", "finetune", k, "test_accuracy"))])


FINDINGS = (finding_1, finding_2, finding_3, finding_4, finding_5, finding_6, finding_7)


def findings(results: dict) -> list[dict]:
    """Every finding's test, its checks and verdict at each rewind point, and its headline
    verdict: the late rewind point's (where every strategy runs)."""
    late = str(results["config"]["rewind_iter"])
    out = []
    for finding in FINDINGS:
        f = finding(results)
        f["verdict"] = f["per_rewind"][late]["verdict"]
        out.append(f)
    return out
