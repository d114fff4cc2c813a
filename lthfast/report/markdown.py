"""REPORT.md, its figures and results.json for a study under a root, written like a paper's
results section: a summary table of the seven findings at each rewind point, each
finding's test, verdict, one-sentence reason and labelled table of comparisons, the
measured tables per rewind point, published reference values (for studies that follow the
paper's recipe, never mixed with measured ones) and captioned figures.

Every number comes from the run store (lthfast.report.results); tests and verdicts are
lthfast.report.findings, the noise statistics lthfast.foundations.stats. This module only renders them.
"""
from __future__ import annotations

import math
from pathlib import Path

from lthfast.foundations.files import atomic_write_json, atomic_write_text
from lthfast.foundations.stats import PROVISIONAL_BELOW, connectivity, measured
from lthfast.report import figures, published
from lthfast.report.findings import ACCURACY_MARGIN, CONNECTED, barrier, findings, passed
from lthfast.report.results import collect
from lthfast.store import claims
from lthfast.store.layout import Store, load_study_config
from lthfast.store.level import set_aside_damaged

SHORT = {1: "small-volume minima, exposed by IMP", 2: "barriers between successive IMP solutions",
         3: "IMP stays in one sublevel set, others leave it", 4: "rewinding escapes the baseline to better minima",
         5: "iterative baselines good, one-shot poor", 6: "smallest-magnitude pruning keeps good baselines",
         7: "fine-tuning stays near the baseline"}


CONVERGED = 0.98  # dense train accuracy below which a report warns (docs/protocol.md, "Deciding a finding")

# Analyses the tables above present; any other registered analysis gets a table of its own.
SHOWN = {"interpolate", "prune-path", "distance", "volume", "sharpness", "instability"}


def write_report(root: Path | str) -> Path:
    """Collect a study's results under `root` and write REPORT.md, figures/ and results.json."""
    root = Path(root).expanduser()
    config = load_study_config(root)
    set_aside_damaged([Store(root).report / "results.json"])  # kept, then written again below
    results = collect(config, root)  # sets damaged analysis results aside first
    results["findings"] = findings(results)
    results["working"] = claims.working_now(root)  # a study still running: the report says so at its top
    results["published"] = published.reference(results["config"])
    results["comparable"] = published.comparable(results["config"])
    folder = Store(root).report
    results["figures"] = figures.write(results, folder / "figures")
    atomic_write_json(results, folder / "results.json")
    path = folder / "REPORT.md"
    atomic_write_text(markdown(results), path)
    return path


def _fmt(stats: dict | None, digits: int = 4, scale: float = 1.0) -> str:
    if not measured(stats):
        return "—"
    if stats["n"] < 2 or math.isnan(stats["std"]):
        return f"{stats['mean'] * scale:.{digits}f}"
    return f"{stats['mean'] * scale:.{digits}f} ± {stats['std'] * scale:.{digits}f}"


def _threshold(results: dict) -> float:
    return results["config"].get("connected_threshold", CONNECTED)


def _connected(curve: dict, results: dict) -> str:
    """The connectivity rule's verdict on a curve (held-out barrier where stored): connected,
    separated or neither (or —)."""
    stat, _ = barrier(curve)
    if not measured(stat):
        return "—"
    state = connectivity(stat, _threshold(results))["beyond"]
    return {"below": "connected", "above": "separated", "within": "neither"}.get(state, "no noise estimate")


def _table(caption: str, header: list[str], rows: list[list]) -> list[str]:
    return [f"**{caption}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(map(str, row)) + " |" for row in rows] + [""]


def markdown(results: dict) -> str:
    c = results["config"]
    rewinds = list(results["rewinds"])
    lines = [f"# lthfast study: {c['model']} on {c['data']}", ""]
    working = [f"{w['what']}, pid {w['pid']} on {w['host']} since {w['started']}" for w in results.get("working", [])]
    if working:
        lines += [f"> **Written while a study was still running in this root** ({'; '.join(working)}): results "
                  "may be missing or change; write the report again when it has finished.", ""]
    subset = "the full training set" if c["train_subset"] is None else f"a {c['train_subset']:,}-image class-balanced subset"
    lines += [f"{c['model']} trained {c['epochs']} epochs on {subset}, precision {c.get('precision', 'fp32')}; "
              f"seeds {', '.join(map(str, c['seeds']))}; {c['levels']} levels of {c['prune_fraction']:.0%} pruning "
              f"(density down to {(1 - c['prune_fraction']) ** c['levels']:.3f}); rewind points "
              f"{' and '.join('R = ' + k for k in rewinds)} (iterations). Test accuracies on "
              f"{results['sizes']['test']:,} test images; train losses and baseline accuracies on a fixed sample of "
              f"{results['sizes']['train_eval']:,} training images.", "",
              "Definitions and thresholds are lthfast's own (docs/protocol.md), not the paper's exact protocol, which is not "
              "available. Each finding is decided by its primary comparison, stated before any run (docs/protocol.md, "
              "\"Deciding a finding\"): a mean paired difference over seeds passes when a one-sided Student t test at "
              "0.05 with n - 1 degrees of freedom says so (its one-sided 95% bound beyond the null); \"not worse\" "
              f"checks are non-inferiority tests against a margin of {ACCURACY_MARGIN:.0%} of accuracy or the "
              "connectivity threshold; a two-part primary supports only when both parts pass, and does not support "
              "when either passes the other way at Holm's corrected level. Secondary comparisons are reported and do "
              f"not decide. Verdicts from fewer than {PROVISIONAL_BELOW} seeds are marked provisional. With one seed "
              "and no stored runs of the same config for other seeds, no comparison can decide. Every number below is "
              "in `results.json`.", "",
              f"Linear connectivity, one rule for every pair of networks (findings 2, 4 and 7): two networks are "
              f"connected when their test-error barrier is below {_threshold(results):.0%}, separated when it is above, "
              f"each by the same t test (Frankle et al. 2020); otherwise the pair is neither. A barrier is read on "
              f"held-out halves (the peak chosen on one half of the test images, the height read on the other) where "
              f"stored; curves stored before that give the plain maximum, and say so.", ""]
    if results.get("comparable"):
        lines += [f"Published results are not shown: this study is not comparable with them ({results['comparable']}).",
                  ""]
    lines = lines[:2] + _convergence(results) + lines[2:]
    lines += ["## Summary", ""]
    rows = []
    for f in results["findings"]:
        late = f["per_rewind"][str(c["rewind_iter"])]
        rows.append([f"{f['number']}. {SHORT[f['number']]}"] + [_verdict(f["per_rewind"][r]) for r in rewinds]
                    + [late["deciding"], len(c["seeds"])])
    lines += _table("Table 1: the seven findings at each rewind point, and the primary comparison that decides each "
                    "at the late rewind point.",
                    ["finding"] + [f"R = {r}" for r in rewinds] + ["primary comparison", "seeds"], rows)
    lines += ["## Findings", ""]
    for f in results["findings"]:
        lines += _finding(f, rewinds)
    for rewind, r in results["rewinds"].items():
        lines += _rewind_section(results, rewind, r)
    if not results.get("comparable"):
        lines += _published(results)
    return "\n".join(lines)


def _verdict(d: dict) -> str:
    return d["verdict"] + (" (provisional)" if d.get("provisional") else "")


def _convergence(results: dict) -> list[str]:
    """The warning docs/protocol.md asks for at the top of a report whose dense networks reach
    less than CONVERGED train accuracy."""
    late = results["rewinds"][str(results["config"]["rewind_iter"])]
    accuracy = late.get("dense_train_accuracy")
    if not measured(accuracy) or accuracy["mean"] >= CONVERGED:
        return []
    return [f"> **Not converged: the dense networks reach {accuracy['mean']:.1%} train accuracy (mean over "
            f"{accuracy['n']} seeds, on the fixed training sample), below {CONVERGED:.0%}.** The findings are "
            "statements about trained networks; the verdicts below describe under-trained ones.", ""]


def _finding(f: dict, rewinds: list[str]) -> list[str]:
    lines = [f"### {f['number']}. {f['statement']}", "", f"Test: {f['test']}", ""]
    for rewind in rewinds:
        d = f["per_rewind"][rewind]
        lines += [f"**R = {rewind}: {_verdict(d)}.** {d['reason'][0].upper() + d['reason'][1:]}.", ""]
        rows = [[role, ch["name"], f"{ch['difference']:+.4f}", "—" if ch.get("se") is None else f"{ch['se']:.4f}",
                 "—" if ch.get("bound") is None else f"{ch['bound']:+.4f}", f"{ch.get('null', 0.0):+.4f}",
                 ch["expected"], ch["noise"], passed(ch)]
                for role in ("primary", "secondary") for ch in d.get(role, [])]
        if rows:
            lines += _table(f"Table {f['number']}.{rewinds.index(rewind) + 1}: comparisons of finding {f['number']} at "
                            f"R = {rewind}: mean difference over seeds, its standard error, its one-sided 95% bound "
                            "on the expected side, and the null it is tested against (for a barrier, the difference "
                            "is the barrier minus the connectivity threshold); passes: the one-sided t test at 0.05 "
                            "passes the expected way, fails: the other way.",
                            ["role", "comparison", "difference", "standard error", "95% bound", "null", "expected",
                             "noise", "result"], rows)
    return lines


def _rewind_section(results: dict, rewind: str, r: dict) -> list[str]:
    at = f"R = {rewind}"
    lines = [f"## Results at {at}", ""]
    rows = [["dense", 0, "1.0000", _fmt(r["dense_accuracy"], 2, 100), "—", "—", "—", "—"]]
    for strategy, levels in r["levels"].items():
        rows += [[strategy, row["level"], f"{row['density']:.4f}", _fmt(row["test_accuracy"], 2, 100),
                  _fmt(row["train_loss"]), _fmt(row["baseline_train_loss"]),
                  _fmt(row["baseline_train_loss_bn_recomputed"]), ", ".join(row["collapsed_layers"]) or "—"]
                 for row in levels]
    lines += _table(f"Accuracy against density at {at}: test accuracy (%), mean ± std over seeds; train losses in "
                    "nats on the fixed training sample.",
                    ["strategy", "level", "density", "test accuracy (%)", "train loss", "baseline train loss (stored BN)",
                     "baseline train loss (BN recomputed)", "collapsed layers"], rows)
    lines += _table(f"Interpolation between successive IMP solutions at {at}.",
                    ["pair", "barrier, train loss", "barrier, test error", "held-out barrier, test error",
                     "linear connectivity", "L2 distance", "relative distance"],
                    [[" → ".join(cv["pair"]), _fmt(cv.get("barrier_train_loss")), _fmt(cv.get("barrier_test_error")),
                      _fmt(cv.get("barrier_test_error_heldout")), _connected(cv, results), _fmt(d["l2"]),
                      _fmt(d["relative"])]
                     for cv, d in zip(r["successive"], r["distance_successive"])])
    if any(cv["seeds"] for cv in r.get("instability", [])):
        lines += _table(f"Instability at {at} (Frankle et al. 2020): the test-error barrier between two copies "
                        "trained from the level's start with different data orders (BatchNorm recomputed); stable "
                        "when they are connected by the connectivity rule. Beside findings 2 and 4: a pair of "
                        "networks separated by less than this is within SGD's own noise.",
                        ["level", "barrier, test error", "held-out barrier, test error", "barrier, train loss",
                         "stability"],
                        [[cv["level"], _fmt(cv.get("barrier_test_error")), _fmt(cv.get("barrier_test_error_heldout")),
                          _fmt(cv.get("barrier_train_loss")),
                          {"connected": "stable", "separated": "unstable"}.get(_connected(cv, results),
                                                                                _connected(cv, results))]
                         for cv in r["instability"] if cv["seeds"]])
    if r["prune_path"]:
        lines += _table(f"Pruning paths theta_(k-1) → b_k at {at}.", ["path", "barrier, train loss",
                                                                      "train loss at b_k"],
                        [[" → ".join(cv["pair"]), _fmt(cv.get("barrier_train_loss")), _fmt(cv.get("end_train_loss"))]
                         for cv in r["prune_path"]])
    if r["from_baseline"]:
        lines += _table(f"Distance and barrier from the baseline at {at}: rewinding (imp) against fine-tuning.",
                        ["level", "strategy", "relative distance", "barrier, train loss", "barrier, test error",
                         "held-out barrier, test error", "linear connectivity"],
                        [[k, s, _fmt(row["distance"]["relative"]), _fmt(row.get("barrier_train_loss")),
                          _fmt(row.get("barrier_test_error")), _fmt(row.get("barrier_test_error_heldout")),
                          _connected(row, results)]
                         for s, rows_ in r["from_baseline"].items() for k, row in enumerate(rows_, start=1)])
    if r["geometry"]:
        lines += _geometry_table(r["geometry"], at)
    for name, rows_ in r.get("analyses", {}).items():
        if name in SHOWN or not any(len(row) > 1 for row in rows_):
            continue
        keys = sorted({key for row in rows_ for key in row if key != "solutions"})
        lines += _table(f"The {name} analysis at {at}: mean ± std over seeds.", ["solutions"] + keys,
                        [[" → ".join(row["solutions"])] + [_fmt(row.get(key)) for key in keys] for row in rows_])
    if r.get("eps", {}).get("value") is not None:
        eps = r["eps"]["value"]

        def inside(stat):
            return "—" if not measured(stat) else "yes" if stat["mean"] <= eps else "no"
        lines += [f"Sublevel set S(eps) at {at}: eps = {eps:.4f} nats ({r['eps']['rule']}).", ""]
        lines += _table(f"Train loss of every solution and baseline at {at} (mean ± std over seeds) and whether the "
                        "mean lies in S(eps).",
                        ["solution", "density", "train loss", "in S(eps)", "baseline loss, BN recomputed", "in S(eps)"],
                        [[f"{s}:{row['level']}", f"{row['density']:.4f}", _fmt(row["train_loss"]),
                          inside(row["train_loss"]), _fmt(row["baseline_train_loss_bn_recomputed"]),
                          inside(row["baseline_train_loss_bn_recomputed"])]
                         for s, rows_ in r["levels"].items() for row in rows_])
    for i, figure in enumerate(results["figures"].get(rewind, []), start=1):
        lines += [f"![{figure['file']}](figures/{figure['file']})", "", f"*Figure {rewind}.{i}: {figure['caption']}*",
                  ""]
    return lines


def _geometry_table(geometry: list[dict], at: str) -> list[str]:
    """Volume per level, and sharpness where it was measured (the CPU presets leave it out:
    its columns are then left out rather than shown empty)."""
    header = ["level", "dimension", "log-volume", "mean radius"]
    rows = [[g["level"], g["dimension"], _fmt(g["log_volume"], 1), _fmt(g["radius_mean"])] for g in geometry]
    caption = f"Volume of the IMP minima at {at} (radius in units of ||theta||; log-volume in nats)"
    if any(measured(g["top_eigenvalue"]) for g in geometry):
        header += ["lambda_max", "lambda_min", "residual", "trace", "converged"]
        for row, g in zip(rows, geometry):
            converged = "—" if g["eigen_converged"] is None else ("yes" if g["eigen_converged"] else "no")
            row += [_fmt(g["top_eigenvalue"], 3), _fmt(g.get("lambda_min"), 3), _fmt(g.get("eigen_residual"), 5),
                    _fmt(g["trace"], 1), converged]
        caption += ("; sharpness: Hessian eigenvalues by Lanczos, converged when the residual is below the "
                    "tolerance, trace by Hutchinson")
    else:
        caption += "; sharpness not measured in this study"
    return _table(caption + ".", header, rows)


def _published(results: dict) -> list[str]:
    ref = results["published"]
    lines = ["## Published reference (not measured here)", "", f"Source: {ref['source']}.", ""]
    if ref["dense"]:
        lines += [f"Dense {ref['model']}: {ref['dense'][0]:.2f} ± {ref['dense'][1]:.2f}% test accuracy.", ""]
    if ref["by_density"]:
        densities = sorted({d for points in ref["by_density"].values() for d in points}, reverse=True)
        lines += _table("Published test accuracy (%) of iterative magnitude pruning, ResNet-20 on CIFAR-10 (Renda et "
                        "al. 2020; their rewind point is epoch 12, this study's is its own R).",
                        ["retraining"] + [f"density {d:.2%}" for d in densities],
                        [[label] + [f"{points.get(d, float('nan')):.2f}" for d in densities]
                         for label, points in ref["by_density"].items()])
    return lines
