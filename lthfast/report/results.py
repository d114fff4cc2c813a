"""A study's stored numbers, collected from the run store into one dictionary (the report's
results.json): per rewind point, the accuracy-against-density table of every strategy, the
curves, distances, geometry, eps of the sublevel set. Each quantity is kept by seed (lthfast.foundations.stats
.mean_std), for the study's seeds and, for the noise of one-seed studies, for every stored
run of the same config that differs only in the seed. Nothing is computed here that the run
store does not hold; image counts come from the stored records.
"""
from __future__ import annotations

from pathlib import Path

import lthfast.data.registry as data_sets
from lthfast.config.study import StudyConfig
from lthfast.foundations import settings
from lthfast.foundations.files import read_json
from lthfast.foundations.stats import mean_std
from lthfast.landscape import registry, sublevel
from lthfast.store import layout as store
from lthfast.store.layout import COPIES


class Collector:
    """Reads a study's stored numbers by seed, rewind point, strategy and level."""

    def __init__(self, config: StudyConfig, root: Path):
        # Every reader of the store's numbers (report, power, export) opens it here: damaged analysis
        # results are set aside first (one warning each: `study` computes them again) and read as missing.
        store.Store(root).set_aside_damaged_results(f"{store.study_command(root)} computes it again")
        self.config = config
        self.runs = {}  # (seed, rewind) -> store.Run: the study's seeds, then other stored seeds
        self.seeds = {}  # rewind -> every seed with a stored run of the study's config
        for rewind in config.rewinds():
            for seed in config.seeds:
                imp = config.imp_config(seed, rewind)
                self.runs[seed, rewind] = store.Run(store.Store(root).run_folder(imp), imp)
            first = self.runs[config.seeds[0], rewind]
            stored = first.seed_runs() if (first.folder / "config.json").exists() else []
            for run in stored:
                self.runs.setdefault((run.config.train.seed, rewind), run)
            self.seeds[rewind] = sorted({s for s, r in self.runs if r == rewind})

    def level(self, seed, rewind, strategy, level) -> dict | None:
        files = self.runs[seed, rewind].level(strategy, level)
        return files.read_record() if files.finished() else None

    def result(self, seed, rewind, what, specs) -> dict | None:
        path = self.runs[seed, rewind].result_path(what, list(specs), registry.get(what).stored_settings(self.config))
        return read_json(path) if path.exists() else None

    def stat(self, rewind, fn) -> dict:
        """fn(seed) over the study's seeds and over every stored seed (None: not there)."""
        every = {s: v for s in self.seeds[rewind] if (v := fn(s)) is not None}
        return mean_std({s: every[s] for s in self.config.seeds if s in every}, every)


def sizes(config: StudyConfig, col: Collector) -> dict:
    """Images behind the stored accuracies: the trained networks' test evaluation and the
    fixed training sample of baselines and solutions (from the records; legacy records
    without counts: the data source's size and the configured sample)."""
    records = [r for (s, rewind) in col.runs if (r := col.level(s, rewind, "imp", 0))]
    num_train, num_test = data_sets.get(config.train.data, config.train.data_dir).sizes
    num_train = min(num_train, config.train.train_subset or num_train)
    test = next((r["test_images"] for r in records if "test_images" in r), num_test)
    train_eval = next((r["eval_images"]["train"] for r in records if "eval_images" in r),
                      min(config.imp.eval_train_images, num_train))
    return {"test": test, "train_eval": train_eval}


def collect(config: StudyConfig, root: Path) -> dict:
    col = Collector(config, root)
    results = {"config": settings.to_flags(config), "sizes": sizes(config, col), "rewinds": {},
               "noise_seeds": {str(r): s for r, s in col.seeds.items()}}
    for rewind in config.rewinds():
        results["rewinds"][str(rewind)] = _rewind_point(config, col, rewind)
    return results


def _rewind_point(c: StudyConfig, col: Collector, rewind: int) -> dict:
    strategies = c.strategies_at(rewind)
    levels = list(range(c.levels + 1))
    r = {"rewind_iter": rewind, "strategies": list(strategies),
         "dense_accuracy": col.stat(rewind, lambda s: (col.level(s, rewind, "imp", 0) or {}).get("test_accuracy"))}
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
    r["instability"] = [{**_curve(col, rewind, "instability", (f"imp:{k}", f"{COPIES}:{k}")), "level": k}
                        for k in c.instability_at()]
    r["analyses"] = _every_analysis(c, col, rewind)
    r["dense_train_accuracy"] = col.stat(rewind, lambda s: (col.level(s, rewind, "imp", 0) or {}).get(
        "train_accuracy"))
    dense_loss = col.stat(rewind, lambda s: (col.level(s, rewind, "imp", 0) or {}).get("train_loss"))
    r["eps"] = {"dense_train_loss": dense_loss, "margin": c.eps_margin,
                "value": sublevel.dense_eps(dense_loss["values"], c.eps_margin) if dense_loss["n"] else None,
                "rule": f"(1 + {c.eps_margin:g}) x the dense network's train loss, mean over "
                        f"{dense_loss['n']} seed{'s' if dense_loss['n'] != 1 else ''}"}
    return r


def _every_analysis(c: StudyConfig, col: Collector, rewind: int) -> dict:
    """Every registered analysis the study plans at `rewind`: its summary numbers (the
    registry's reader of a stored result), mean ± std over seeds, per set of solutions."""
    out = {}
    seen = set()
    for seed in c.seeds:
        for target, specs, level in registry.targets(c, seed, rewind):
            for entry in registry.planned(c, target, level):
                if (entry.name, specs) in seen:
                    continue
                seen.add((entry.name, specs))

                def number(key, name=entry.name, specs=specs, entry=entry):
                    return lambda s: (entry.summary(d["result"]).get(key)
                                      if (d := col.result(s, rewind, name, specs)) else None)
                first = next((d for s in col.seeds[rewind] if (d := col.result(s, rewind, entry.name, specs))), None)
                keys = list(entry.summary(first["result"])) if first else []
                out.setdefault(entry.name, []).append({"solutions": list(specs),
                                                       **{key: col.stat(rewind, number(key)) for key in keys}})
    return out


def _level_rows(c: StudyConfig, col: Collector, rewind: int, strategy: str) -> list[dict]:
    rows = []
    for k in range(1, c.levels + 1):
        record = lambda s: col.level(s, rewind, strategy, k)  # noqa: E731
        first = next((v for s in c.seeds if (v := record(s))), None)
        if first is None:
            continue

        def field(key, baseline=False):
            return col.stat(rewind, lambda s: (v := record(s)) and (v["baseline"] if baseline else v)[key])
        rows.append({"level": k, "density": first["density"],
                     "seeds": [s for s in c.seeds if record(s)],
                     "test_accuracy": field("test_accuracy"), "train_loss": field("train_loss"),
                     "baseline_train_loss": field("train_loss", True),
                     "baseline_train_loss_bn_recomputed": field("train_loss_bn_recomputed", True),
                     "baseline_train_accuracy_bn_recomputed": field("train_accuracy_bn_recomputed", True),
                     "baseline_test_accuracy_bn_recomputed": field("test_accuracy_bn_recomputed", True),
                     "collapsed_layers": sorted({n for s in c.seeds if (v := record(s)) for n in v["collapsed_layers"]})})
    return rows


def _geometry(col: Collector, rewind: int, k: int) -> dict | None:
    def of(what, key, fallback=None):
        def value(s):
            doc = col.result(s, rewind, what, (f"imp:{k}",))
            return None if doc is None else doc["result"].get(key, doc["result"].get(fallback))
        return col.stat(rewind, value)
    volume, sharp = of("volume", "radius_mean"), of("sharpness", "top_eigenvalue")
    if not volume["n"] and not sharp["n"]:
        return None
    dimension = next((d["result"]["dimension"] for s in col.seeds[rewind]
                      if (d := col.result(s, rewind, "volume", (f"imp:{k}",)))), None)
    converged = [d["result"]["eigen_converged"] for s in col.config.seeds
                 if (d := col.result(s, rewind, "sharpness", (f"imp:{k}",)))]
    return {"level": k, "seeds": volume["n"], "radius_mean": volume, "log_volume": of("volume", "log_volume"),
            "radius_std": of("volume", "radius_std"), "dimension": dimension, "top_eigenvalue": sharp,
            "lambda_min": of("sharpness", "lambda_min"),
            # power iteration's last relative change, in results of lthfast before the Lanczos solver
            "eigen_residual": of("sharpness", "eigen_residual", "eigen_relative_change"),
            "eigen_converged": all(converged) if converged else None, "trace": of("sharpness", "trace")}


def _curve(col: Collector, rewind, what, specs) -> dict:
    docs = {s: d["result"] for s in col.seeds[rewind] if (d := col.result(s, rewind, what, specs))}
    out = {"pair": list(specs), "seeds": len([s for s in docs if s in col.config.seeds])}
    first = next((docs[s] for s in col.config.seeds if s in docs), None)
    if first is None:
        return out
    def stat(key, reduce=lambda v: v):
        return col.stat(rewind, lambda s: reduce(docs[s][key]) if s in docs and docs[s].get(key) is not None else None)
    out.update(barrier_train_loss=stat("barrier_train_loss"), barrier_test_error=stat("barrier_test_error"),
               barrier_train_loss_heldout=stat("barrier_train_loss_heldout"),
               barrier_test_error_heldout=stat("barrier_test_error_heldout"),
               end_train_loss=stat("train_loss", lambda v: v[-1]), max_train_loss=stat("train_loss", max),
               alphas=first["alphas"], train_loss=first["train_loss"], test_error=first["test_error"],
               test_images=first["test_images"])
    return out


def _distance(col: Collector, rewind, specs) -> dict:
    def of(key):
        return col.stat(rewind, lambda s: (d := col.result(s, rewind, "distance", specs)) and d["result"][key])
    return {"pair": list(specs), "l2": of("l2"), "relative": of("relative")}
