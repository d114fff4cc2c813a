"""REPORT.md, its figures and results.json for a study under a root.

Every number comes from the run store (lthfast.results collects it); the findings'
tests and verdicts are lthfast.findings, the noise statistics lthfast.stats. This module
only renders them.
"""
from __future__ import annotations

import math
from pathlib import Path

from lthfast import claims, plots
from lthfast.findings import findings
from lthfast.results import collect
from lthfast.stats import CANNOT_TELL, DOES_NOT, SUPPORTS, mean_std  # noqa: F401  (the verdicts, for callers)
from lthfast.storage import atomic_write_json, atomic_write_text
from lthfast.store import Store
from lthfast.study_config import load_study_config


# ----------------------------------------------------------------------------- writing

def _fmt(stats: dict | None, digits: int = 4) -> str:
    if not stats or stats.get("n", 0) == 0 or stats.get("mean") is None:
        return "—"
    if stats["n"] < 2 or math.isnan(stats["std"]):
        return f"{stats['mean']:.{digits}f}"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def _figures(results: dict, folder: Path) -> dict[str, list[str]]:
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
    results = collect(config, root)
    results["findings"] = findings(results)
    results["working"] = claims.working_now(root)  # a study still running: the report says so at its top
    folder = Store(root).report
    figures = _figures(results, folder / "figures")
    results["figures"] = figures
    atomic_write_json(results, folder / "results.json")
    path = folder / "REPORT.md"
    atomic_write_text(markdown(results, figures), path)
    return path


def markdown(results: dict, figures: dict) -> str:
    c = results["config"]
    working = [f"{w['what']}, pid {w['pid']} on {w['host']} since {w['started']}" for w in results.get("working", [])]
    lines = [f"# lthfast study: {c['model']} on {c['data']}", ""]
    if working:
        lines += [f"> **Written while a study was still running in this root** ({'; '.join(working)}): results "
                  "may be missing or change; write the report again when it has finished.", ""]
    lines += [
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
