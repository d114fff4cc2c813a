"""REPORT.md, its figures and results.json for a study (lthfast.study) under a root.

Every number comes from the run store: level.json files and the cached analysis results.
Each of STUDY.md's seven findings gets a stated quantitative test and a verdict from the
measured numbers: "supports", "does not support" or "cannot tell".

Noise: a difference counts only if it exceeds twice its standard error. With two seeds or
more the standard error is the one of the mean over seeds (paired by seed); with one seed,
for accuracies and errors it is the binomial one of the evaluation (sqrt(p(1-p)/n) per
estimate), and quantities without a noise estimate (losses, distances, volumes) are
compared as measured and the report says that one seed was used.
"""
from __future__ import annotations

import math
from pathlib import Path

from lthfast.storage import atomic_write_json, read_json
from lthfast.study import Study, StudyConfig, load_study_config

FINDINGS = {
    1: "Good minima with small volume exist; they generalize well but SGD does not find them directly. "
       "IMP exposes them by removing bad dimensions.",
    2: "There are loss barriers between successive IMP solutions: they are not linearly connected.",
    3: "IMP solutions lie in the same loss sublevel set; the other strategies (one-shot, random pruning, "
       "pruning large weights, ...) leave it and end up worse.",
    4: "Rewinding moves SGD away from the baseline and lets it find better minima that were not reachable before.",
    5: "Iterative pruning yields a sequence of good baselines; the one-shot baseline is too poor.",
    6: "Pruning the smallest weights keeps good baselines; pruning the largest weights, or random pruning, "
       "degrades them.",
    7: "Fine-tuning stays near the baseline; rewinding escapes it and finds better minima.",
}
SUPPORTS, DOES_NOT, CANNOT_TELL = "supports", "does not support", "cannot tell"


# ----------------------------------------------------------------------------- statistics

def mean_std(values: list[float]) -> dict:
    n = len(values)
    mean = sum(values) / n if n else float("nan")
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return {"mean": mean, "std": std, "n": n, "values": values}


def paired_difference(a: list[float], b: list[float], binomial_n: int | None = None) -> dict:
    """mean(a - b) over seeds and its standard error: over seeds with two or more, else the
    binomial one of two proportions on binomial_n examples each (None: no estimate)."""
    diffs = [x - y for x, y in zip(a, b)]
    if not diffs:
        return {"difference": float("nan"), "se": None, "noise": "missing"}
    stats = mean_std(diffs)
    if len(diffs) >= 2:
        return {"difference": stats["mean"], "se": stats["std"] / math.sqrt(len(diffs)), "noise": "seeds"}
    if binomial_n:
        p, q = a[0], b[0]
        return {"difference": diffs[0], "se": math.sqrt((p * (1 - p) + q * (1 - q)) / binomial_n),
                "noise": f"binomial, n = {binomial_n}"}
    return {"difference": diffs[0], "se": None, "noise": "one seed, no estimate"}


def beyond_noise(d: dict) -> str:
    """'above', 'below' or 'within' twice the standard error of zero; 'unknown' without one
    unless the difference is exactly signed (compared as measured: then above or below)."""
    if d["se"] is None:
        return "above" if d["difference"] > 0 else "below" if d["difference"] < 0 else "within"
    if d["difference"] > 2 * d["se"]:
        return "above"
    if d["difference"] < -2 * d["se"]:
        return "below"
    return "within"


# ----------------------------------------------------------------------------- collection

class Collector:
    """Reads a study's stored numbers, grouped by rewind point, strategy, level and seed."""

    def __init__(self, study: Study):
        self.study = study
        self.config = study.config

    def level(self, seed, rewind, strategy, level) -> dict | None:
        folder = self.study.run_folder(seed, rewind)
        path = folder / ("level_00" if level == 0 else f"{strategy}/level_{level:02d}") / "level.json"
        return read_json(path) if path.exists() else None

    def result(self, seed, rewind, what, specs) -> dict | None:
        path = self.study.result_path(seed, rewind, what, specs)
        return read_json(path) if path.exists() else None

    def over_seeds(self, rewind, fn) -> list:
        """fn(seed) for every seed where it is not None."""
        return [v for v in (fn(s) for s in self.config.seeds) if v is not None]


def collect(study: Study) -> dict:
    c, col = study.config, Collector(study)
    data = study.data
    sizes = {"test": int(data.test_y.shape[0]), "train_eval": min(c.eval_train_images, data.num_train),
             "curve_test": min(c.curve_test_images or data.test_y.shape[0], data.test_y.shape[0])}
    results = {"config": c.to_dict(), "sizes": sizes, "rewinds": {}}
    for rewind in c.rewinds():
        strategies = c.strategies_at(rewind)
        levels = list(range(c.levels + 1))
        r = {"rewind_iter": rewind, "strategies": list(strategies)}
        dense = col.over_seeds(rewind, lambda s: (col.level(s, rewind, "imp", 0) or {}).get("test_accuracy"))
        r["dense_accuracy"] = mean_std(dense)
        r["levels"] = {}
        for strategy in strategies:
            rows = []
            for k in levels[1:]:
                records = {s: col.level(s, rewind, strategy, k) for s in c.seeds}
                records = {s: v for s, v in records.items() if v}
                if not records:
                    continue
                base = [v["baseline"] for v in records.values()]
                rows.append({"level": k, "density": next(iter(records.values()))["density"],
                             "seeds": list(records), "test_accuracy": mean_std([v["test_accuracy"] for v in records.values()]),
                             "train_loss": mean_std([v["train_loss"] for v in records.values()]),
                             "baseline_train_loss": mean_std([b["train_loss"] for b in base]),
                             "baseline_train_loss_bn_recomputed": mean_std([b["train_loss_bn_recomputed"] for b in base]),
                             "baseline_train_accuracy_bn_recomputed":
                                 mean_std([b["train_accuracy_bn_recomputed"] for b in base]),
                             "baseline_test_accuracy_bn_recomputed":
                                 mean_std([b["test_accuracy_bn_recomputed"] for b in base]),
                             "collapsed_layers": sorted({n for v in records.values() for n in v["collapsed_layers"]})})
            r["levels"][strategy] = rows
        r["successive"] = [_curve_summary(col, rewind, "interpolate", (f"imp:{k - 1}", f"imp:{k}"))
                           for k in levels[1:]]
        r["distance_successive"] = [_distance_summary(col, rewind, (f"imp:{k - 1}", f"imp:{k}")) for k in levels[1:]]
        late = rewind == c.rewind_iter  # pruning paths and escapes from the baseline: late rewind point only
        r["prune_path"] = [_curve_summary(col, rewind, "prune-path", (f"imp:{k - 1}", f"imp:{k}:baseline"))
                           for k in levels[1:]] if late else []
        r["from_baseline"] = {}
        for strategy in (["imp"] + (["finetune"] if "finetune" in strategies else [])) if late else []:
            r["from_baseline"][strategy] = [
                {**_curve_summary(col, rewind, "interpolate", (f"imp:{k}:baseline", f"{strategy}:{k}")),
                 "distance": _distance_summary(col, rewind, (f"imp:{k}:baseline", f"{strategy}:{k}"))}
                for k in levels[1:]]
        r["geometry"] = []
        for k in levels:
            volumes = col.over_seeds(rewind, lambda s: col.result(s, rewind, "volume", (f"imp:{k}",)) or None)
            sharps = col.over_seeds(rewind, lambda s: col.result(s, rewind, "sharpness", (f"imp:{k}",)) or None)
            if volumes or sharps:
                r["geometry"].append({
                    "level": k, "seeds": len(volumes),
                    "log_volume": mean_std([v["result"]["log_volume"] for v in volumes]),
                    "radius_mean": mean_std([v["result"]["radius_mean"] for v in volumes]),
                    "radius_std": mean_std([v["result"]["radius_std"] for v in volumes]),
                    "dimension": volumes[0]["result"]["dimension"] if volumes else None,
                    "top_eigenvalue": mean_std([v["result"]["top_eigenvalue"] for v in sharps]),
                    "eigen_converged": all(v["result"]["eigen_converged"] for v in sharps) if sharps else None,
                    "eigen_relative_change": mean_std([v["result"]["eigen_relative_change"] for v in sharps]),
                    "trace": mean_std([v["result"]["trace"] for v in sharps]),
                    "wall_seconds": sum(v["wall_seconds"] for v in volumes + sharps)})
        r["sublevel"] = {}
        for seed in c.seeds:
            from lthfast import analysis

            folder = study.run_folder(seed, rewind)
            if (folder / "config.json").exists():
                run = analysis.Run(folder)
                path = analysis.result_path(folder, "sublevel", "run", analysis.sublevel_settings(run, None, c.eps_margin))
                if path.exists():
                    r["sublevel"][str(seed)] = read_json(path)["result"]
        results["rewinds"][str(rewind)] = r
    results["findings"] = findings(results)
    return results


def _curve_summary(col: Collector, rewind, what, specs) -> dict:
    docs = col.over_seeds(rewind, lambda s: col.result(s, rewind, what, specs) or None)
    out = {"pair": list(specs), "seeds": len(docs)}
    if not docs:
        return out
    curves = [d["result"] for d in docs]
    out.update(barrier_train_loss=mean_std([c["barrier_train_loss"] for c in curves]),
               barrier_test_error=mean_std([c["barrier_test_error"] for c in curves]),
               alphas=curves[0]["alphas"], train_loss=curves[0]["train_loss"], test_error=curves[0]["test_error"],
               test_images=curves[0]["test_images"],
               peak_test_error=[max(c["test_error"]) for c in curves],
               end_train_loss=[c["train_loss"][-1] for c in curves])
    return out


def _distance_summary(col: Collector, rewind, specs) -> dict:
    docs = col.over_seeds(rewind, lambda s: col.result(s, rewind, "distance", specs) or None)
    return {"pair": list(specs), "l2": mean_std([d["result"]["l2"] for d in docs]),
            "relative": mean_std([d["result"]["relative"] for d in docs])}


# ----------------------------------------------------------------------------- findings

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


def _verdict(passes: list[str], expected: str = "above") -> str:
    """All comparisons beyond noise in the expected direction: supports; any beyond noise
    the other way: does not; otherwise (within noise or missing): cannot tell."""
    opposite = {"above": "below", "below": "above"}[expected]
    if passes and all(p == expected for p in passes):
        return SUPPORTS
    if any(p == opposite for p in passes):
        return DOES_NOT
    return CANNOT_TELL


def findings(results: dict) -> list[dict]:
    c = results["config"]
    late = results["rewinds"][str(c["rewind_iter"])]
    levels = list(range(1, c["levels"] + 1))
    deepest = c["levels"]
    n_test, n_train = results["sizes"]["test"], results["sizes"]["train_eval"]
    seeds_note = "" if len(c["seeds"]) >= 2 else "; one seed: noise from the evaluations' sample sizes only"
    out = []

    # 1. Small-volume minima that generalize, which SGD from scratch does not reach.
    # Volumes of different dimensions are not comparable: log V_unit(n) alone changes by about
    # (n/2) log(n) when pruning removes weights. The mean radius is the part that is not.
    geometry = late["geometry"]
    radius_first = geometry[0]["radius_mean"]["mean"] if geometry else float("nan")
    radius_last = geometry[-1]["radius_mean"]["mean"] if geometry else float("nan")
    falls = "above" if radius_first > radius_last else "below" if radius_first < radius_last else "within"
    dense_gap = paired_difference(_values(late["levels"], "imp", deepest, "test_accuracy"),
                                  late["dense_accuracy"]["values"][:len(_values(late["levels"], "imp", deepest,
                                                                                "test_accuracy"))], n_test)
    dense_gap["beyond"] = dense_ok = beyond_noise(dense_gap)  # below: IMP worse than dense beyond noise
    reinit = _compare(late, "imp", "reinit", deepest, "test_accuracy", n_test)
    checks = [falls if geometry else "missing", "above" if dense_ok != "below" else "below", reinit["beyond"]]
    out.append({"number": 1, "test": (
        f"(a) the basin of the IMP minimum shrinks from level 0 to level {deepest}: its mean radius along random "
        f"directions falls (geometry seeds); (b) IMP at "
        f"level {deepest} is not worse than the dense network beyond noise; (c) the same mask trained from a fresh "
        f"initialization (reinit) is worse than IMP beyond noise. Supports if all three hold."),
        "numbers": {"radius_level0": radius_first, "radius_last": radius_last,
                    "log_volume_level0": geometry[0]["log_volume"]["mean"] if geometry else None,
                    "log_volume_last": geometry[-1]["log_volume"]["mean"] if geometry else None,
                    "dimension_level0": geometry[0]["dimension"] if geometry else None,
                    "dimension_last": geometry[-1]["dimension"] if geometry else None,
                    "imp_minus_dense_accuracy": dense_gap, "imp_minus_reinit_accuracy": reinit},
        "verdict": _verdict(checks), "note": "the test uses the mean radius, not the log-volume: log-volumes of "
        "different dimensions are not comparable (the unit ball's log-volume alone moves by about (n/2) log n as "
        "pruning changes the dimension n), so the log-volume is reported but does not decide" + seeds_note})

    # 2. Barriers between successive IMP solutions, for each rewind point.
    per_rewind = {}
    for rewind, r in results["rewinds"].items():
        tests = [_barrier_test(curve) for curve in r["successive"]]
        present = sum(t["beyond"] == "above" for t in tests)
        # A pair is linearly connected only if no point of either curve rises above its chord;
        # a positive barrier within noise is not evidence of absence (noise as large as the effect).
        connected = sum(cv.get("barrier_test_error", {}).get("mean") == 0 and
                        cv.get("barrier_train_loss", {}).get("mean", 1) <= 0 for cv in r["successive"])
        missing = not tests or any(t["beyond"] == "missing" for t in tests)
        verdict = (CANNOT_TELL if missing else SUPPORTS if present == len(tests) else
                   DOES_NOT if connected == len(tests) else CANNOT_TELL)
        per_rewind[rewind] = {"pairs": len(tests), "with_barrier": present, "connected": connected, "verdict": verdict,
                              "barrier_test_error": [t["difference"] for t in tests],
                              "se": [t["se"] for t in tests],
                              "barrier_train_loss": [cv.get("barrier_train_loss", {}).get("mean") for cv in r["successive"]]}
    out.append({"number": 2, "test": "the test-error barrier of every successive IMP pair exceeds twice its standard "
                "error; reported for each rewind point (the verdict is the late rewind point's). Supports if every "
                "pair has one; does not if every pair is linearly connected (no point of the train-loss or "
                "test-error curve above its chord); otherwise cannot tell (barriers within noise, or a mix).",
                "numbers": per_rewind, "verdict": per_rewind[str(c["rewind_iter"])]["verdict"],
                "note": "verdicts per rewind point: " + ", ".join(
                    f"R = {k}: {v['verdict']} (barrier above noise at {v['with_barrier']} of {v['pairs']} pairs, "
                    f"linearly connected: {v['connected']})" for k, v in per_rewind.items())})

    # 3. IMP solutions inside S(eps); the other strategies leave it.
    inside_imp, leave = [], {}
    others = [s for s in ("oneshot", "random-prune", "prune-large", "reinit") if s in late["strategies"]]
    for seed, table in late["sublevel"].items():
        rows = {row["label"]: row for row in table["rows"]}
        inside_imp += [rows[f"imp:{k}"]["inside"] for k in range(0, deepest + 1) if f"imp:{k}" in rows]
        for s in others:
            if f"{s}:{deepest}" in rows:
                leave.setdefault(s, []).append(not rows[f"{s}:{deepest}"]["inside"])
    all_imp_in = bool(inside_imp) and all(inside_imp)
    left = [s for s, v in leave.items() if all(v)]
    verdict3 = (CANNOT_TELL if not inside_imp or not leave else
                SUPPORTS if all_imp_in and len(left) == len(leave) else DOES_NOT)
    out.append({"number": 3, "test": f"in every seed, every IMP solution (levels 0..{deepest}) lies in S(eps) and the "
                f"deepest solution of each other strategy ({', '.join(others)}) lies outside it. eps follows STUDY.md's "
                "rule (see the sublevel section).",
                "numbers": {"imp_inside": f"{sum(inside_imp)} of {len(inside_imp)}",
                            "strategies_leaving": left, "strategies_checked": list(leave),
                            "eps": {seed: t["eps"] for seed, t in late["sublevel"].items()}},
                "verdict": verdict3, "note": "no noise estimate: membership is read as measured" + seeds_note})

    # 4. Rewinding escapes the baseline to better minima not linearly reachable from it.
    escapes = late["from_baseline"]
    checks4, numbers4 = [], []
    for k, curve in zip(levels, escapes.get("imp", [])):
        barrier = _barrier_test(curve)
        better = _compare(late, "imp", "finetune", k, "test_accuracy", n_test) if "finetune" in escapes else None
        checks4 += [barrier["beyond"]] + ([better["beyond"]] if better else ["missing"])
        numbers4.append({"level": k, "barrier_baseline_to_imp": barrier, "imp_minus_finetune_accuracy": better})
    out.append({"number": 4, "test": "at every level, the test-error barrier between the baseline b_k and the "
                "rewound solution exceeds twice its standard error (not reachable along the line from b_k), and the "
                "rewound solution's test accuracy is above fine-tuning's from the same baseline beyond noise.",
                "numbers": numbers4, "verdict": _verdict(checks4), "note": seeds_note.lstrip("; ")})

    # 5. Iterative baselines stay good; one-shot baselines are poor.
    checks5, numbers5 = [], []
    for k in levels[1:]:  # level 1's one-shot and IMP baselines are the same network
        d = _compare(late, "imp", "oneshot", k, "baseline_train_accuracy_bn_recomputed", n_train)
        checks5.append(d["beyond"])
        numbers5.append({"level": k, "imp_minus_oneshot_baseline_train_accuracy": d})
    out.append({"number": 5, "test": "at every level k >= 2, the IMP baseline's train accuracy (BatchNorm recomputed) "
                "is above the one-shot baseline's at the same density beyond noise.",
                "numbers": numbers5, "verdict": _verdict(checks5) if checks5 else CANNOT_TELL,
                "note": (("needs two levels or more" if not checks5 else "") + seeds_note).lstrip("; ")})

    # 6. Smallest-magnitude pruning keeps good baselines; largest or random degrade them.
    checks6, numbers6 = [], []
    for k in levels:
        for other in ("prune-large", "random-prune"):
            if other in late["strategies"]:
                d = _compare(late, "imp", other, k, "baseline_train_accuracy_bn_recomputed", n_train)
                checks6.append(d["beyond"])
                numbers6.append({"level": k, "versus": other, "imp_minus_other_baseline_train_accuracy": d})
    out.append({"number": 6, "test": "at every level, the IMP baseline's train accuracy (BatchNorm recomputed) is above "
                "the prune-large and random-prune baselines' beyond noise.",
                "numbers": numbers6, "verdict": _verdict(checks6), "note": seeds_note.lstrip("; ")})

    # 7. Fine-tuning stays near the baseline; rewinding escapes it to better minima.
    checks7, numbers7 = [], []
    if "finetune" in escapes:
        for k, imp_curve, ft_curve in zip(levels, escapes["imp"], escapes["finetune"]):
            near = imp_curve["distance"]["relative"]["values"], ft_curve["distance"]["relative"]["values"]
            farther = paired_difference(*near)
            farther["beyond"] = beyond_noise(farther) if farther["noise"] != "missing" else "missing"
            ft_barrier = _barrier_test(ft_curve)
            better = _compare(late, "imp", "finetune", k, "test_accuracy", n_test)
            # Fine-tuning's barrier from its baseline must be absent: within noise counts as a pass.
            checks7 += [farther["beyond"], "above" if ft_barrier["beyond"] == "within" else
                        "below" if ft_barrier["beyond"] == "above" else ft_barrier["beyond"], better["beyond"]]
            numbers7.append({"level": k, "relative_distance_imp_minus_finetune": farther,
                             "barrier_baseline_to_finetune": ft_barrier, "imp_minus_finetune_accuracy": better})
    out.append({"number": 7, "test": "at every level, the rewound solution is farther from the baseline than the "
                "fine-tuned one (relative distance), fine-tuning shows no test-error barrier from its baseline beyond "
                "noise, and the rewound solution's test accuracy is above fine-tuning's beyond noise.",
                "numbers": numbers7, "verdict": _verdict(checks7),
                "note": "distances have no noise estimate with one seed" if len(c["seeds"]) < 2 else ""})
    for f in out:
        f["statement"] = FINDINGS[f["number"]]
    return out


# ----------------------------------------------------------------------------- writing

def _fmt(stats: dict | None, digits: int = 4) -> str:
    if not stats or stats.get("n", 0) == 0 or stats.get("mean") is None:
        return "—"
    if stats["n"] < 2 or math.isnan(stats["std"]):
        return f"{stats['mean']:.{digits}f}"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def _figures(results: dict, folder: Path) -> dict[str, list[str]]:
    from lthfast import plots

    figures = {}
    for rewind, r in results["rewinds"].items():
        tag = f"R{rewind}"
        files = [plots.metric_vs_density(r, "test_accuracy", folder / f"accuracy_vs_density_{tag}.png",
                                         f"test accuracy against density (R = {rewind})", band=r["dense_accuracy"]),
                 plots.metric_vs_density(r, "baseline_train_loss_bn_recomputed",
                                         folder / f"baseline_loss_vs_density_{tag}.png",
                                         f"baseline train loss (BN recomputed) against density (R = {rewind})")]
        curves = [_as_document(cv) for cv in r["successive"] if "alphas" in cv]
        if curves:
            files.append(plots.curves(curves, folder / f"successive_{tag}.png",
                                      f"successive IMP solutions (R = {rewind}, first seed)"))
        paths = [_as_document(cv) for cv in r["prune_path"] if "alphas" in cv]
        if paths:
            files.append(plots.curves(paths, folder / f"prune_path_{tag}.png", f"pruning paths (R = {rewind})"))
        if r["geometry"]:
            g = r["geometry"]
            files.append(plots.per_level([x["level"] for x in g], {
                "log-volume": [x["log_volume"]["mean"] for x in g], "mean radius": [x["radius_mean"]["mean"] for x in g],
                "top eigenvalue": [x["top_eigenvalue"]["mean"] for x in g], "trace": [x["trace"]["mean"] for x in g]},
                folder / f"geometry_{tag}.png", f"volume, radius and sharpness of IMP minima (R = {rewind})"))
        if r["from_baseline"]:
            files.append(plots.from_baseline(r["from_baseline"], folder / f"from_baseline_{tag}.png",
                                             f"distance and barrier from the baseline (R = {rewind})"))
        seeds = sorted(r["sublevel"])
        if seeds:
            files.append(plots.sublevel(r["sublevel"][seeds[0]], folder / f"sublevel_{tag}.png",
                                        f"sublevel set, seed {seeds[0]} (R = {rewind})"))
        figures[rewind] = [p.name for p in files]
    return figures


def _as_document(curve: dict) -> dict:
    return {"solutions": curve["pair"], "settings": {"bn": "recompute"},
            "result": {"alphas": curve["alphas"], "train_loss": curve["train_loss"], "test_error": curve["test_error"],
                       "barrier_train_loss": curve["barrier_train_loss"]["values"][0],
                       "barrier_test_error": curve["barrier_test_error"]["values"][0]}}


def write_report(root: Path | str) -> Path:
    """Collect a study's results under `root` and write REPORT.md, figures/ and results.json."""
    root = Path(root).expanduser()
    config = load_study_config(root)
    study = Study(config, root)
    results = collect(study)
    folder = root / "report"
    figures = _figures(results, folder / "figures")
    results["figures"] = figures
    atomic_write_json(results, folder / "results.json")
    text = markdown(results, figures)
    path = folder / "REPORT.md"
    tmp = path.with_name(".REPORT.md.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def markdown(results: dict, figures: dict) -> str:
    c = results["config"]
    lines = [f"# lthfast study: {c['model']} on {c['data']}", "",
             f"Seeds {', '.join(map(str, c['seeds']))}; {c['levels']} levels of {c['prune_fraction']:.0%} pruning "
             f"(density down to {(1 - c['prune_fraction']) ** c['levels']:.3f}); {c['epochs']} epochs"
             f"{'' if c['train_subset'] is None else ' on a ' + str(c['train_subset']) + '-image class-balanced subset'}; "
             f"rewind points: {', '.join('R = ' + k for k in results['rewinds'])}.",
             "Definitions and thresholds are lthfast's own (STUDY.md), not the paper's exact protocol, which is "
             "not available. Every number below is in `results.json`.", "",
             "## The seven findings", ""]
    for f in results["findings"]:
        lines += [f"### {f['number']}. {f['statement']}", "", f"**Verdict: {f['verdict']}.** Test: {f['test']}", "",
                  _numbers_text(f), ""]
        if f.get("note"):
            lines += [f"Note: {f['note']}.", ""]
    for rewind, r in results["rewinds"].items():
        lines += [f"## Rewind point R = {rewind}", "", "### Test accuracy against density (mean ± std over seeds)", "",
                  f"Dense: {_fmt(r['dense_accuracy'])} (matching band: within one standard deviation).", "",
                  "| strategy | level | density | test accuracy | train loss | baseline train loss (stored BN) | "
                  "baseline train loss (BN recomputed) | collapsed layers |", "|---|---|---|---|---|---|---|---|"]
        for strategy, rows in r["levels"].items():
            for row in rows:
                lines.append(f"| {strategy} | {row['level']} | {row['density']:.4f} | {_fmt(row['test_accuracy'])} | "
                             f"{_fmt(row['train_loss'])} | {_fmt(row['baseline_train_loss'])} | "
                             f"{_fmt(row['baseline_train_loss_bn_recomputed'])} | "
                             f"{', '.join(row['collapsed_layers']) or '—'} |")
        lines += ["", "### Interpolation between successive IMP solutions", "",
                  "| pair | barrier, train loss | barrier, test error | L2 distance | relative distance |", "|---|---|---|---|---|"]
        for curve, dist in zip(r["successive"], r["distance_successive"]):
            lines.append(f"| {' → '.join(curve['pair'])} | {_fmt(curve.get('barrier_train_loss'))} | "
                         f"{_fmt(curve.get('barrier_test_error'))} | {_fmt(dist['l2'])} | {_fmt(dist['relative'])} |")
        if r["prune_path"]:
            lines += ["", "### Pruning paths (theta_{k-1} → baseline b_k)", "",
                      "| path | barrier, train loss | train loss at b_k (BN recomputed) |", "|---|---|---|"]
        for curve in r["prune_path"]:
            end = mean_std(curve.get("end_train_loss", []))
            lines.append(f"| {' → '.join(curve['pair'])} | {_fmt(curve.get('barrier_train_loss'))} | {_fmt(end)} |")
        if r["from_baseline"]:
            lines += ["", "### Distance and barrier from the baseline: rewinding (imp) versus fine-tuning", "",
                      "| level | strategy | relative distance | barrier, train loss | barrier, test error |",
                      "|---|---|---|---|---|"]
            for strategy, rows in r["from_baseline"].items():
                for k, row in enumerate(rows, start=1):
                    lines.append(f"| {k} | {strategy} | {_fmt(row['distance']['relative'])} | "
                                 f"{_fmt(row.get('barrier_train_loss'))} | {_fmt(row.get('barrier_test_error'))} |")
        if r["geometry"]:
            lines += ["", "### Volume and sharpness of the IMP minima", "",
                      "| level | dimension | log-volume | mean radius | top eigenvalue | trace | eigenvalue converged |",
                      "|---|---|---|---|---|---|---|"]
            for g in r["geometry"]:
                lines.append(f"| {g['level']} | {g['dimension']} | {_fmt(g['log_volume'], 1)} | {_fmt(g['radius_mean'])} "
                             f"| {_fmt(g['top_eigenvalue'], 2)} | {_fmt(g['trace'], 1)} | {g['eigen_converged']} |")
        for seed, table in sorted(r["sublevel"].items())[:1]:
            lines += ["", f"### Sublevel set S(eps), seed {seed}", "", f"eps = {table['eps']:.4f}: {table['eps_rule']}.", "",
                      "| solution | density | train loss | in S(eps) | baseline loss, BN recomputed | in S(eps) |",
                      "|---|---|---|---|---|---|"]
            for row in table["rows"]:
                recomputed = (f"{row['train_loss_bn_recomputed']:.4f} | {row['inside_bn_recomputed']}"
                              if "train_loss_bn_recomputed" in row else "— | —")
                lines.append(f"| {row['label']} | {row['density']:.4f} | {row['train_loss']:.4f} | {row['inside']} | "
                             f"{recomputed} |")
        lines += ["", "### Figures", ""] + [f"![{name}](figures/{name})" for name in figures.get(rewind, [])] + [""]
    return "\n".join(lines)


def _numbers_text(finding: dict) -> str:
    """The finding's numbers as a nested list; a comparison reads "difference ± standard error"."""
    lines = []

    def show(value, indent):
        pad = "  " * indent
        if isinstance(value, dict) and "difference" in value:
            if value["se"] is None:
                return f"{value['difference']:+.4f} ({value['noise']}: compared as measured)"
            where = {"above": "above noise", "below": "below noise (the other way)", "within": "within noise"}
            return (f"{value['difference']:+.4f} ± {value['se']:.4f} ({value['noise']}; "
                    f"{where.get(value.get('beyond'), value.get('beyond'))})")
        if isinstance(value, dict) and "mean" in value and "std" in value:
            return _fmt(value)
        if isinstance(value, dict):
            for key, item in value.items():
                nested = (isinstance(item, dict) and "difference" not in item and "mean" not in item) or (
                    isinstance(item, list) and item and isinstance(item[0], dict))
                if nested:
                    lines.append(f"{pad}- {key}:")
                    show(item, indent + 1)
                else:
                    lines.append(f"{pad}- {key}: {show(item, indent + 1)}")
            return None
        if isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                label = ", ".join(f"{k} {item[k]}" for k in ("level", "versus") if k in item)
                lines.append(f"{pad}- {label}:")
                show({k: v for k, v in item.items() if k not in ("level", "versus")}, indent + 1)
            return None
        if isinstance(value, float):
            return f"{value:.4f}"
        if isinstance(value, list):
            return ", ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in value)
        return str(value)

    show(finding["numbers"], 0)
    return "Measured:\n\n" + "\n".join(lines)
