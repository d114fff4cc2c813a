"""The report's figures, each with its caption: accuracy and baseline loss against density,
interpolation curves, pruning paths, geometry per level, escapes from the baseline and the
sublevel set, per rewind point (lthfast.landscape.plots draws them)."""
from __future__ import annotations

from pathlib import Path

from lthfast.foundations.stats import measured
from lthfast.landscape import plots
from lthfast.report import published


def _curve_documents(curves: list[dict]) -> list[dict]:
    """Collected curves (first seed's points, barriers as means over seeds) as plots.curves wants."""
    return [{"solutions": c["pair"], "settings": {"bn": "recompute"},
             "result": {"alphas": c["alphas"], "train_loss": c["train_loss"], "test_error": c["test_error"],
                        "barrier_train_loss": c["barrier_train_loss"]["mean"],
                        "barrier_test_error": c["barrier_test_error"]["mean"]}} for c in curves if "alphas" in c]


def _references(results: dict, rewind: str) -> dict:
    """Published ResNet-20 curves that match this rewind point, if the study is comparable."""
    config = results["config"]
    if published.comparable(config) is not None:
        return {}
    late = rewind == str(config["rewind_iter"])
    ref = published.reference(config)
    out = {label: {d: v for d, v in points.items()} for label, points in ref["by_density"].items()
           if published.MATCHES[label][1] == ("late" if late else 0)}
    if ref["dense"]:
        out["dense"] = {1.0: ref["dense"][0]}
    return out


def _geometry_figure(geometry: list[dict], path: Path, at: str) -> dict:
    """Volume per level, and sharpness only where it was measured (no empty panels)."""
    keys = {"log-volume (nats)": "log_volume", "mean radius (units of ||theta||)": "radius_mean",
            "lambda_max (top Hessian eigenvalue, loss per unit^2)": "top_eigenvalue",
            "Hessian trace (loss per unit^2)": "trace"}
    series = {name: [x[key]["mean"] for x in geometry] for name, key in keys.items()
              if any(measured(x.get(key)) for x in geometry)}
    sharpness = any(measured(x["top_eigenvalue"]) for x in geometry)
    caption = (f"Geometry of the IMP minimum per level at {at} (means over the geometry seeds): log-volume and mean "
               "basin radius along random directions" + (", top Hessian eigenvalue (Lanczos) and Hessian trace "
                                                         "(Hutchinson)" if sharpness else "")
               + ", within the unpruned weights" + ("" if sharpness else "; sharpness not measured in this study")
               + ".")
    file = plots.per_level([x["level"] for x in geometry], series, path,
                           f"volume{' and sharpness' if sharpness else ''} of the IMP minima ({at})")
    return {"file": file, "caption": caption}


def write(results: dict, folder: Path) -> dict[str, list[dict]]:
    """Every figure of the report under `folder`: {rewind: [{"file", "caption"}]}."""
    figures = {}
    for rewind, r in results["rewinds"].items():
        tag, at = f"R{rewind}", f"R = {rewind}"
        seeds = ", ".join(map(str, results["config"]["seeds"]))
        out = [{"file": plots.metric_vs_density(
            r, "test_accuracy", folder / f"accuracy_vs_density_{tag}.png", f"test accuracy against density ({at})",
            "test accuracy (%)", 100, band=r["dense_accuracy"], references=_references(results, rewind)),
            "caption": f"Test accuracy (%) of every strategy against density at {at}: mean ± std over seeds {seeds}; "
                       "the grey band is the dense network's mean ± std. Hollow squares on dotted lines are published "
                       "values (Renda et al. 2020), shown only for studies that follow the paper's recipe."},
            {"file": plots.metric_vs_density(
                r, "baseline_train_loss_bn_recomputed", folder / f"baseline_loss_vs_density_{tag}.png",
                f"baseline train loss against density ({at})", "baseline train loss (cross-entropy, nats)"),
             "caption": f"Train loss of each strategy's baseline (the pruned weights before retraining, BatchNorm "
                        f"statistics recomputed) against density at {at}, mean ± std over seeds."}]
        if curves := _curve_documents(r["successive"]):
            out.append({"file": plots.curves(curves, folder / f"successive_{tag}.png",
                                             f"successive IMP solutions ({at})"),
                        "caption": f"Train loss and test error along the line between successive IMP solutions at {at} "
                                   "(points: first seed; barriers in the legend: mean over seeds)."})
        if paths := _curve_documents(r["prune_path"]):
            out.append({"file": plots.curves(paths, folder / f"prune_path_{tag}.png", f"pruning paths ({at})"),
                        "caption": f"Pruning paths theta_(k-1) → b_k at {at}: the pruned weights shrink to zero "
                                   "along the line."})
        if g := r["geometry"]:
            out.append(_geometry_figure(g, folder / f"geometry_{tag}.png", at))
        if r["from_baseline"]:
            out.append({"file": plots.from_baseline(r["from_baseline"], folder / f"from_baseline_{tag}.png",
                                                    f"distance and barrier from the baseline ({at})"),
                        "caption": f"Relative distance from the baseline b_k and test-error barrier on the line from "
                                   f"it, for rewinding (imp) and fine-tuning, at {at} (means over seeds)."})
        if r.get("eps", {}).get("value") is not None:
            rows = [{"strategy": s, "density": row["density"], "kind": kind, "train_loss": row[key]["mean"]}
                    for s, rows_ in r["levels"].items() for row in rows_
                    for kind, key in (("solution", "train_loss"), ("baseline", "baseline_train_loss_bn_recomputed"))
                    if measured(row[key])]
            out.append({"file": plots.sublevel({"rows": rows, "eps": r["eps"]["value"]}, folder / f"sublevel_{tag}.png",
                                               f"sublevel set ({at})"),
                        "caption": f"Train loss of every solution (filled) and baseline (hollow, BatchNorm recomputed) "
                                   f"against density, mean over seeds, {at}; the dashed line is eps "
                                   f"({r['eps']['rule']})."})
        figures[rewind] = [{"file": f["file"].name, "caption": f["caption"]} for f in out]
    return figures
