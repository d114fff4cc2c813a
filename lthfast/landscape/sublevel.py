"""The loss sublevel set S(eps) = {theta : train loss(theta) <= eps} over a run's solutions
and baselines, and matching (docs/protocol.md), read from the stored level records.

Matching: a sparse network matches if its test accuracy is within one standard deviation
(over seeds) of the dense network's. Default eps: (1 + eps_margin) x the dense network's train
loss, mean over the seeds stored beside the run, fixed before any pruning so that the solutions
under test do not set their own threshold (docs/protocol.md, "Sublevel set";
tests/test_verdicts.py checks it with two seeds and a level that does not match).
"""
from __future__ import annotations

from lthfast.foundations import stats
from lthfast.foundations.settings import number
from lthfast.landscape.runs import AnalysisRun, cached
from lthfast.pruning import strategies


def matching(run: AnalysisRun) -> dict:
    """Which IMP levels match the dense network. Needs two seeds or more (the runs beside
    `run` that differ in the seed alone); with one, the standard deviation, and so
    matching, is undetermined."""
    runs = run.seed_runs()
    dense = [r.record("imp", 0)["test_accuracy"] for r in runs if 0 in r.levels("imp")]
    result = {"seeds": len(dense), "dense_accuracy_mean": stats.mean(dense), "dense_accuracy_std": stats.std(dense),
              "levels": {}, "last_matching_level": None}
    for level in run.levels("imp"):
        accuracies = [r.record("imp", level)["test_accuracy"] for r in runs if level in r.levels("imp")]
        mean = stats.mean(accuracies)
        matches = None if len(dense) < 2 else bool(mean >= result["dense_accuracy_mean"] - result["dense_accuracy_std"])
        result["levels"][str(level)] = {"accuracy_mean": mean, "seeds": len(accuracies), "matches": matches}
    if len(dense) >= 2:
        matched = [int(k) for k, v in result["levels"].items() if v["matches"]]
        result["last_matching_level"] = max(matched) if matched else None
    return result


# The strategies every stored table's key names, run or not; a strategy added since enters the
# key once it has a level of its own (beyond the shared level 0), so that tables stored before
# it keep their names
# (tests/test_old_stores.py).
KEYED = ("imp", "oneshot", "finetune", "reinit", "random-prune", "prune-large", "finetune-chain")


def dense_eps(train_losses: list[float], eps_margin: float) -> float:
    """eps of S(eps): (1 + eps_margin) x the mean of the dense networks' train losses (nats)."""
    return (1 + eps_margin) * stats.mean(train_losses)


def settings_of(run: AnalysisRun, eps: float | None, eps_margin: float) -> dict:
    """The cache key of a sublevel table: its settings, the finished levels it covers and,
    with two seeds or more, which seeds (their dense networks set eps and matching):
    the table is computed again when another seed's run arrives beside this one."""
    levels = {s: run.levels(s) for s in strategies.STRATEGIES}
    key = {"eps": eps, "eps_margin": eps_margin, "eps_rule": "dense",
           "levels": {s: found for s, found in levels.items() if s in KEYED or max(found, default=0) > 0}}
    seeds = sorted(r.config.train.seed for r in run.seed_runs() if r.level("imp", 0).finished())
    return {**key, "matching_seeds": seeds} if len(seeds) > 1 else key


def table(run: AnalysisRun, eps: float | None = None, eps_margin: float = 0.1, force: bool = False) -> dict:
    """Train loss of every solution and baseline of the run (all strategies), the threshold
    eps (given, or dense_eps over the run's stored seeds) and which lie in S(eps)."""
    if eps is not None:
        eps = number("--eps", eps, positive=True)
    eps_margin = number("--eps-margin", eps_margin, minimum=0)

    def build():
        match = matching(run)
        if eps is not None:
            threshold, rule = float(eps), "given"
        else:
            dense = [r.record("imp", 0)["train_loss"] for r in run.seed_runs() if 0 in r.levels("imp")]
            threshold = dense_eps(dense, eps_margin)
            rule = f"(1 + {eps_margin}) x the dense network's train loss, mean over {len(dense)} seed(s)"
        rows = []
        for strategy in strategies.STRATEGIES:
            for level in run.levels(strategy):
                if level == 0 and strategy != "imp":
                    continue
                r = run.record(strategy, level)
                rows.append(_row(f"{strategy}:{level}", strategy, level, r["density"], "solution", r["train_loss"],
                                 None, threshold))
                if r.get("baseline"):
                    b = r["baseline"]
                    rows.append(_row(f"{strategy}:{level}:baseline", strategy, level, r["density"], "baseline",
                                     b["train_loss"], b.get("train_loss_bn_recomputed"), threshold))
        return {"eps": threshold, "eps_rule": rule, "matching": match, "rows": rows,
                "train_images": run.config.eval_train_images}

    return cached(run, "sublevel", [], settings_of(run, eps, eps_margin), build, force, name="run")


def _row(label, strategy, level, density, kind, loss, loss_recomputed, eps) -> dict:
    row = {"label": label, "strategy": strategy, "level": level, "density": density, "kind": kind,
           "train_loss": loss, "inside": loss <= eps}
    if loss_recomputed is not None:
        row.update(train_loss_bn_recomputed=loss_recomputed, inside_bn_recomputed=loss_recomputed <= eps)
    return row
