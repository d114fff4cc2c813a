"""The seven findings of STUDY.md, each with its quantitative test beside its statement.

Each function takes the collected results (lthfast.results) and returns the finding's
test, the numbers it used and its verdict: "supports", "does not support" or "cannot tell"
(lthfast.stats). The tests are lthfast's own reading of the findings (the paper's exact
protocol is not available); thresholds are twice a standard error, never tuned.
"""
from __future__ import annotations

import math

from lthfast.stats import CANNOT_TELL, DOES_NOT, SUPPORTS, beyond_noise, paired_difference, verdict


def _barrier_test(curve: dict) -> dict:
    """Is the test-error barrier of a curve above noise? Over seeds if two or more, else the
    binomial error of one evaluation at the curve's peak."""
    b = curve.get("barrier_test_error")
    if not b:
        return {"difference": float("nan"), "se": None, "noise": "missing", "beyond": "missing"}
    if b["n"] >= 2:
        d = {"difference": b["mean"], "se": b["std"] / math.sqrt(b["n"]), "noise": "seeds"}
    else:
        e = curve["peak_test_error"][0]
        d = {"difference": b["mean"], "se": math.sqrt(max(e * (1 - e), 0) / curve["test_images"]),
             "noise": f"binomial, n = {curve['test_images']}"}
    return {**d, "beyond": beyond_noise(d)}


def _values(rows, strategy, level, key):
    for row in rows.get(strategy, []):
        if row["level"] == level:
            return row[key]["values"]
    return []


def _compare(r, a, b, level, key, n) -> dict:
    d = paired_difference(_values(r["levels"], a, level, key), _values(r["levels"], b, level, key), n)
    return {**d, "beyond": beyond_noise(d) if d["noise"] != "missing" else "missing"}


def _late(results: dict) -> dict:
    """The results of the late rewind point, where every strategy runs."""
    return results["rewinds"][str(results["config"]["rewind_iter"])]


def _seeds_note(c) -> str:
    return "" if len(c["seeds"]) >= 2 else "; one seed: noise from the evaluations' sample sizes only"


STATEMENT_1 = ("Good minima with small volume exist; they generalize well but SGD does not find them directly. "
               "IMP exposes them by removing bad dimensions.")


def finding_1(results: dict) -> dict:
    c, late = results["config"], _late(results)
    deepest, n_test = c["levels"], results["sizes"]["test"]
    # Volumes of different dimensions are not comparable: log V_unit(n) alone changes by about
    # (n/2) log(n) when pruning removes weights. The mean radius is the part that is not.
    geometry = late["geometry"]
    radius_first = geometry[0]["radius_mean"]["mean"] if geometry else float("nan")
    radius_last = geometry[-1]["radius_mean"]["mean"] if geometry else float("nan")
    falls = "above" if radius_first > radius_last else "below" if radius_first < radius_last else "within"
    imp_deepest = _values(late["levels"], "imp", deepest, "test_accuracy")
    dense_gap = paired_difference(imp_deepest, late["dense_accuracy"]["values"][:len(imp_deepest)], n_test)
    dense_gap["beyond"] = dense_ok = beyond_noise(dense_gap)  # below: IMP worse than dense beyond noise
    reinit = _compare(late, "imp", "reinit", deepest, "test_accuracy", n_test)
    checks = [falls if geometry else "missing", "above" if dense_ok != "below" else "below", reinit["beyond"]]
    return {"number": 1, "statement": STATEMENT_1, "test": (
        f"(a) the basin of the IMP minimum shrinks from level 0 to level {deepest}: its mean radius along random "
        f"directions falls (geometry seeds); (b) IMP at level {deepest} is not worse than the dense network beyond "
        f"noise; (c) the same mask trained from a fresh initialization (reinit) is worse than IMP beyond noise. "
        f"Supports if all three hold."),
        "numbers": {"radius_level0": radius_first, "radius_last": radius_last,
                    "log_volume_level0": geometry[0]["log_volume"]["mean"] if geometry else None,
                    "log_volume_last": geometry[-1]["log_volume"]["mean"] if geometry else None,
                    "dimension_level0": geometry[0]["dimension"] if geometry else None,
                    "dimension_last": geometry[-1]["dimension"] if geometry else None,
                    "imp_minus_dense_accuracy": dense_gap, "imp_minus_reinit_accuracy": reinit},
        "verdict": verdict(checks), "note": "the test uses the mean radius, not the log-volume: log-volumes of "
        "different dimensions are not comparable (the unit ball's log-volume alone moves by about (n/2) log n as "
        "pruning changes the dimension n), so the log-volume is reported but does not decide" + _seeds_note(c)}


STATEMENT_2 = "There are loss barriers between successive IMP solutions: they are not linearly connected."


def finding_2(results: dict) -> dict:
    per_rewind = {}
    for rewind, r in results["rewinds"].items():
        tests = [_barrier_test(curve) for curve in r["successive"]]
        present = sum(t["beyond"] == "above" for t in tests)
        # A pair is linearly connected only if no point of either curve rises above its chord;
        # a positive barrier within noise is not evidence of absence (noise as large as the effect).
        connected = sum(cv.get("barrier_test_error", {}).get("mean") == 0 and
                        cv.get("barrier_train_loss", {}).get("mean", 1) <= 0 for cv in r["successive"])
        missing = not tests or any(t["beyond"] == "missing" for t in tests)
        result = (CANNOT_TELL if missing else SUPPORTS if present == len(tests) else
                  DOES_NOT if connected == len(tests) else CANNOT_TELL)
        per_rewind[rewind] = {"pairs": len(tests), "with_barrier": present, "connected": connected,
                              "verdict": result, "barrier_test_error": [t["difference"] for t in tests],
                              "se": [t["se"] for t in tests],
                              "barrier_train_loss": [cv.get("barrier_train_loss", {}).get("mean")
                                                     for cv in r["successive"]]}
    return {"number": 2, "statement": STATEMENT_2, "test": (
        "the test-error barrier of every successive IMP pair exceeds twice its standard error; reported for each "
        "rewind point (the verdict is the late rewind point's). Supports if every pair has one; does not if every "
        "pair is linearly connected (no point of the train-loss or test-error curve above its chord); otherwise "
        "cannot tell (barriers within noise, or a mix)."),
        "numbers": per_rewind, "verdict": per_rewind[str(results["config"]["rewind_iter"])]["verdict"],
        "note": "verdicts per rewind point: " + ", ".join(
            f"R = {k}: {v['verdict']} (barrier above noise at {v['with_barrier']} of {v['pairs']} pairs, "
            f"linearly connected: {v['connected']})" for k, v in per_rewind.items())}


STATEMENT_3 = ("IMP solutions lie in the same loss sublevel set; the other strategies (one-shot, random pruning, "
               "pruning large weights, ...) leave it and end up worse.")


def finding_3(results: dict) -> dict:
    c, late = results["config"], _late(results)
    deepest = c["levels"]
    inside_imp, leave = [], {}
    others = [s for s in ("oneshot", "random-prune", "prune-large", "reinit") if s in late["strategies"]]
    for table in late["sublevel"].values():
        rows = {row["label"]: row for row in table["rows"]}
        inside_imp += [rows[f"imp:{k}"]["inside"] for k in range(0, deepest + 1) if f"imp:{k}" in rows]
        for s in others:
            if f"{s}:{deepest}" in rows:
                leave.setdefault(s, []).append(not rows[f"{s}:{deepest}"]["inside"])
    all_imp_in = bool(inside_imp) and all(inside_imp)
    left = [s for s, v in leave.items() if all(v)]
    result = (CANNOT_TELL if not inside_imp or not leave else
              SUPPORTS if all_imp_in and len(left) == len(leave) else DOES_NOT)
    return {"number": 3, "statement": STATEMENT_3, "test": (
        f"in every seed, every IMP solution (levels 0..{deepest}) lies in S(eps) and the deepest solution of each "
        f"other strategy ({', '.join(others)}) lies outside it. eps follows STUDY.md's rule (see the sublevel "
        "section)."),
        "numbers": {"imp_inside": f"{sum(inside_imp)} of {len(inside_imp)}", "strategies_leaving": left,
                    "strategies_checked": list(leave), "eps": {seed: t["eps"] for seed, t in late["sublevel"].items()}},
        "verdict": result, "note": "no noise estimate: membership is read as measured" + _seeds_note(c)}


STATEMENT_4 = "Rewinding moves SGD away from the baseline and lets it find better minima that were not reachable before."


def finding_4(results: dict) -> dict:
    c, late = results["config"], _late(results)
    escapes, n_test = late["from_baseline"], results["sizes"]["test"]
    checks, numbers = [], []
    for k, curve in zip(range(1, c["levels"] + 1), escapes.get("imp", [])):
        barrier = _barrier_test(curve)
        better = _compare(late, "imp", "finetune", k, "test_accuracy", n_test) if "finetune" in escapes else None
        checks += [barrier["beyond"]] + ([better["beyond"]] if better else ["missing"])
        numbers.append({"level": k, "barrier_baseline_to_imp": barrier, "imp_minus_finetune_accuracy": better})
    return {"number": 4, "statement": STATEMENT_4, "test": (
        "at every level, the test-error barrier between the baseline b_k and the rewound solution exceeds twice its "
        "standard error (not reachable along the line from b_k), and the rewound solution's test accuracy is above "
        "fine-tuning's from the same baseline beyond noise."),
        "numbers": numbers, "verdict": verdict(checks), "note": _seeds_note(c).lstrip("; ")}


STATEMENT_5 = "Iterative pruning yields a sequence of good baselines; the one-shot baseline is too poor."


def _baselines_above(results: dict, levels, others) -> tuple[list, list]:
    """IMP's baseline train accuracy (BatchNorm recomputed) minus each other strategy's, per level."""
    late = _late(results)
    checks, numbers = [], []
    for k in levels:
        for other in others:
            if other in late["strategies"]:
                d = _compare(late, "imp", other, k, "baseline_train_accuracy_bn_recomputed",
                             results["sizes"]["train_eval"])
                checks.append(d["beyond"])
                numbers.append({"level": k, "versus": other, "imp_minus_other_baseline_train_accuracy": d})
    return checks, numbers


def finding_5(results: dict) -> dict:
    c = results["config"]
    # from level 2: level 1's one-shot and IMP baselines are the same network
    checks, numbers = _baselines_above(results, range(2, c["levels"] + 1), ["oneshot"])
    return {"number": 5, "statement": STATEMENT_5, "test": (
        "at every level k >= 2, the IMP baseline's train accuracy (BatchNorm recomputed) is above the one-shot "
        "baseline's at the same density beyond noise."),
        "numbers": numbers, "verdict": verdict(checks) if checks else CANNOT_TELL,
        "note": (("needs two levels or more" if not checks else "") + _seeds_note(c)).lstrip("; ")}


STATEMENT_6 = ("Pruning the smallest weights keeps good baselines; pruning the largest weights, or random pruning, "
               "degrades them.")


def finding_6(results: dict) -> dict:
    c = results["config"]
    checks, numbers = _baselines_above(results, range(1, c["levels"] + 1), ["prune-large", "random-prune"])
    return {"number": 6, "statement": STATEMENT_6, "test": (
        "at every level, the IMP baseline's train accuracy (BatchNorm recomputed) is above the prune-large and "
        "random-prune baselines' beyond noise."),
        "numbers": numbers, "verdict": verdict(checks), "note": _seeds_note(c).lstrip("; ")}


STATEMENT_7 = "Fine-tuning stays near the baseline; rewinding escapes it and finds better minima."


def finding_7(results: dict) -> dict:
    c, late = results["config"], _late(results)
    escapes = late["from_baseline"]
    checks, numbers = [], []
    if "finetune" in escapes:
        for k, imp_curve, ft_curve in zip(range(1, c["levels"] + 1), escapes["imp"], escapes["finetune"]):
            near = imp_curve["distance"]["relative"]["values"], ft_curve["distance"]["relative"]["values"]
            farther = paired_difference(*near)
            farther["beyond"] = beyond_noise(farther) if farther["noise"] != "missing" else "missing"
            ft_barrier = _barrier_test(ft_curve)
            better = _compare(late, "imp", "finetune", k, "test_accuracy", results["sizes"]["test"])
            # Fine-tuning's barrier from its baseline must be absent: within noise counts as a pass.
            checks += [farther["beyond"], "above" if ft_barrier["beyond"] == "within" else
                       "below" if ft_barrier["beyond"] == "above" else ft_barrier["beyond"], better["beyond"]]
            numbers.append({"level": k, "relative_distance_imp_minus_finetune": farther,
                            "barrier_baseline_to_finetune": ft_barrier, "imp_minus_finetune_accuracy": better})
    return {"number": 7, "statement": STATEMENT_7, "test": (
        "at every level, the rewound solution is farther from the baseline than the fine-tuned one (relative "
        "distance), fine-tuning shows no test-error barrier from its baseline beyond noise, and the rewound "
        "solution's test accuracy is above fine-tuning's beyond noise."),
        "numbers": numbers, "verdict": verdict(checks),
        "note": "distances have no noise estimate with one seed" if len(c["seeds"]) < 2 else ""}


FINDINGS = (finding_1, finding_2, finding_3, finding_4, finding_5, finding_6, finding_7)


def findings(results: dict) -> list[dict]:
    """Every finding's test, numbers and verdict, in STUDY.md's order."""
    return [finding(results) for finding in FINDINGS]
