"""A study's stored numbers, collected from the run store into one dictionary (the report's
results.json): per rewind point, the accuracy-against-density table of every strategy, the
curves, distances, geometry and sublevel tables, grouped over seeds. Nothing is computed
here that the run store does not hold; image counts come from the stored records.
"""
from __future__ import annotations

from pathlib import Path

from lthfast import store, sublevel
from lthfast.data import SIZES
from lthfast.stats import mean_std
from lthfast.storage import read_json
from lthfast.study_config import StudyConfig


class Collector:
    """Reads a study's stored numbers by seed, rewind point, strategy and level."""

    def __init__(self, config: StudyConfig, root: Path):
        self.config = config
        self.runs = {(s, r): store.Run(config.run_folder(root, s, r), config.imp_config(s, r))
                     for s in config.seeds for r in config.rewinds()}

    def level(self, seed, rewind, strategy, level) -> dict | None:
        files = self.runs[seed, rewind].level(strategy, level)
        return files.read_record() if files.finished() else None

    def result(self, seed, rewind, what, specs) -> dict | None:
        path = self.runs[seed, rewind].result_path(what, list(specs), self.config.analysis_settings(what))
        return read_json(path) if path.exists() else None

    def over_seeds(self, fn) -> list:
        """fn(seed) for every seed where it is not None."""
        return [v for v in (fn(s) for s in self.config.seeds) if v is not None]


def sizes(config: StudyConfig, col: Collector) -> dict:
    """Images behind the stored accuracies: the trained networks' test evaluation and the
    fixed training sample of baselines and solutions (from the records; legacy records
    without counts: the data source's size and the configured sample)."""
    records = [r for (s, rewind) in col.runs if (r := col.level(s, rewind, "imp", 0))]
    num_train, num_test = SIZES[config.data]
    num_train = min(num_train, config.train_subset or num_train)
    test = next((r["test_images"] for r in records if "test_images" in r), num_test)
    train_eval = next((r["eval_images"]["train"] for r in records if "eval_images" in r),
                      min(config.eval_train_images, num_train))
    return {"test": test, "train_eval": train_eval}


def collect(config: StudyConfig, root: Path) -> dict:
    col = Collector(config, root)
    results = {"config": config.to_dict(), "sizes": sizes(config, col), "rewinds": {}}
    for rewind in config.rewinds():
        results["rewinds"][str(rewind)] = _rewind_point(config, col, rewind)
    return results


def _rewind_point(c: StudyConfig, col: Collector, rewind: int) -> dict:
    strategies = c.strategies_at(rewind)
    levels = list(range(c.levels + 1))
    r = {"rewind_iter": rewind, "strategies": list(strategies)}
    dense = col.over_seeds(lambda s: (col.level(s, rewind, "imp", 0) or {}).get("test_accuracy"))
    r["dense_accuracy"] = mean_std(dense)
    r["levels"] = {strategy: _level_rows(c, col, rewind, strategy) for strategy in strategies}
    r["successive"] = [_curve(col, rewind, "interpolate", (f"imp:{k - 1}", f"imp:{k}")) for k in levels[1:]]
    r["distance_successive"] = [_distance(col, rewind, (f"imp:{k - 1}", f"imp:{k}")) for k in levels[1:]]
    late = rewind == c.rewind_iter  # pruning paths and escapes from the baseline: late rewind point only
    r["prune_path"] = [_curve(col, rewind, "prune-path", (f"imp:{k - 1}", f"imp:{k}:baseline"))
                       for k in levels[1:]] if late else []
    r["from_baseline"] = {}
    for strategy in (["imp"] + (["finetune"] if "finetune" in strategies else [])) if late else []:
        r["from_baseline"][strategy] = [
            {**_curve(col, rewind, "interpolate", (f"imp:{k}:baseline", f"{strategy}:{k}")),
             "distance": _distance(col, rewind, (f"imp:{k}:baseline", f"{strategy}:{k}"))} for k in levels[1:]]
    r["geometry"] = [g for k in levels if (g := _geometry(col, rewind, k))]
    r["sublevel"] = {}
    for seed in c.seeds:
        run = col.runs[seed, rewind]
        path = run.result_path("sublevel", ["run"], sublevel.settings_of(run, None, c.eps_margin))
        if path.exists():
            r["sublevel"][str(seed)] = read_json(path)["result"]
    return r


def _level_rows(c: StudyConfig, col: Collector, rewind: int, strategy: str) -> list[dict]:
    rows = []
    for k in range(1, c.levels + 1):
        records = {s: v for s in c.seeds if (v := col.level(s, rewind, strategy, k))}
        if not records:
            continue
        values = list(records.values())
        base = [v["baseline"] for v in values]
        rows.append({"level": k, "density": values[0]["density"], "seeds": list(records),
                     "test_accuracy": mean_std([v["test_accuracy"] for v in values]),
                     "train_loss": mean_std([v["train_loss"] for v in values]),
                     "baseline_train_loss": mean_std([b["train_loss"] for b in base]),
                     "baseline_train_loss_bn_recomputed": mean_std([b["train_loss_bn_recomputed"] for b in base]),
                     "baseline_train_accuracy_bn_recomputed":
                         mean_std([b["train_accuracy_bn_recomputed"] for b in base]),
                     "baseline_test_accuracy_bn_recomputed": mean_std([b["test_accuracy_bn_recomputed"] for b in base]),
                     "collapsed_layers": sorted({n for v in values for n in v["collapsed_layers"]})})
    return rows


def _geometry(col: Collector, rewind: int, k: int) -> dict | None:
    volumes = col.over_seeds(lambda s: col.result(s, rewind, "volume", (f"imp:{k}",)))
    sharps = col.over_seeds(lambda s: col.result(s, rewind, "sharpness", (f"imp:{k}",)))
    if not volumes and not sharps:
        return None
    return {"level": k, "seeds": len(volumes),
            "log_volume": mean_std([v["result"]["log_volume"] for v in volumes]),
            "radius_mean": mean_std([v["result"]["radius_mean"] for v in volumes]),
            "radius_std": mean_std([v["result"]["radius_std"] for v in volumes]),
            "dimension": volumes[0]["result"]["dimension"] if volumes else None,
            "top_eigenvalue": mean_std([v["result"]["top_eigenvalue"] for v in sharps]),
            "eigen_converged": all(v["result"]["eigen_converged"] for v in sharps) if sharps else None,
            "lambda_min": mean_std([v["result"]["lambda_min"] for v in sharps if "lambda_min" in v["result"]]),
            # power iteration's last relative change, in results of lthfast before the Lanczos solver
            "eigen_residual": mean_std([v["result"].get("eigen_residual", v["result"].get("eigen_relative_change"))
                                        for v in sharps]),
            "trace": mean_std([v["result"]["trace"] for v in sharps]),
            "wall_seconds": sum(v["wall_seconds"] for v in volumes + sharps)}


def _curve(col: Collector, rewind, what, specs) -> dict:
    docs = col.over_seeds(lambda s: col.result(s, rewind, what, specs))
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


def _distance(col: Collector, rewind, specs) -> dict:
    docs = col.over_seeds(lambda s: col.result(s, rewind, "distance", specs))
    return {"pair": list(specs), "l2": mean_std([d["result"]["l2"] for d in docs]),
            "relative": mean_std([d["result"]["relative"] for d in docs])}
