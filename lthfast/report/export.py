"""A study's stored numbers as one table: one row per stored level of the study's runs, by
seed, rewind point, strategy and level (`python -m lthfast export`, `frame(root)`).

Rows: every finished level folder (level_KK) of every run of the study's config that the
report's Collector finds (the study's seeds and every other stored seed of the same config),
at each rewind point of the study. The dense network (level 0) is one row per seed and
rewind point, under the strategy the store names it by, "imp" (its level.json says so, and
the analyses name it imp:0); every other strategy starts at level 1. Oneshot's and reinit's
folders at densities of their own (density_D, `imp --sparsities`) are not levels and are left
out. Order: rewind point (the study's order, late first), seed, strategy (the strategy
table's order), level.

Columns (COLUMNS; the README's "Results as a table" lists each with its unit, and
tests/test_export.py checks that list against COLUMNS and the numbers against the stored
files):
  seed, rewind_iter, strategy, level, density      what the row is; density: the fraction
                                                   of prunable weights kept (1.0 dense)
  test_accuracy, test_loss                         the level record: the trained network on
                                                   the test images (fraction, cross-entropy)
  train_accuracy, train_loss                       the level record: on the fixed, unaugmented
                                                   training sample (eval_train_images)
  baseline_{train,test}_{accuracy,loss}[_bn_recomputed]
                                                   the level's baseline (the pruned weights it
                                                   starts from) on the fixed training and test
                                                   samples, with the stored BatchNorm statistics
                                                   and with them recomputed; empty at level 0
  in_sublevel_set                                  1 if the solution's train loss is <= eps of
                                                   the run's stored sublevel table, 0 if above
  successive_*, prune_path_*, from_baseline_*,     the study's stored analyses whose last
  radius_mean, log_volume, top_eigenvalue,         solution is this level (ANALYSIS_COLUMNS),
  hessian_trace                                    read through the analysis registry
Every value is a plain number (or the strategy's name); a cell is empty where the store holds
no such value. Nothing is computed here that the store does not hold.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from lthfast.foundations.errors import LthError

# Importing this module stays light (no plotting, no torch): the store, the Collector and
# the analysis registry (which imports the analyses and their figures) are imported on use.

LEVEL_COLUMNS = ("seed", "rewind_iter", "strategy", "level", "density",
                 "test_accuracy", "test_loss", "train_accuracy", "train_loss")
BASELINE_KEYS = tuple(f"{split}_{what}{bn}" for bn in ("", "_bn_recomputed")
                      for split in ("train", "test") for what in ("accuracy", "loss"))
# (column, registry target, analysis, key of the analysis's summary): the analyses a study
# stores for a level, read where the target's last solution is the row's level
# (successive: imp:k-1 -> imp:k; prune-step: imp:k-1 -> b_k; from-baseline: b_k -> S:k;
# level: imp:k itself). Barriers are in train loss (cross-entropy) and test error (a
# fraction); distances over the prunable weights kept in either network, relative: divided
# by ||theta_A||; the basin radius in units of ||theta||.
ANALYSIS_COLUMNS = (
    ("successive_barrier_train_loss", "successive", "interpolate", "barrier_train_loss"),
    ("successive_barrier_test_error", "successive", "interpolate", "barrier_test_error"),
    ("successive_l2_distance", "successive", "distance", "l2"),
    ("successive_relative_distance", "successive", "distance", "relative"),
    ("prune_path_barrier_train_loss", "prune-step", "prune-path", "barrier_train_loss"),
    ("prune_path_barrier_test_error", "prune-step", "prune-path", "barrier_test_error"),
    ("from_baseline_barrier_train_loss", "from-baseline", "interpolate", "barrier_train_loss"),
    ("from_baseline_barrier_test_error", "from-baseline", "interpolate", "barrier_test_error"),
    ("from_baseline_l2_distance", "from-baseline", "distance", "l2"),
    ("from_baseline_relative_distance", "from-baseline", "distance", "relative"),
    ("radius_mean", "level", "volume", "radius_mean"),
    ("log_volume", "level", "volume", "log_volume"),
    ("top_eigenvalue", "level", "sharpness", "top_eigenvalue"),
    ("hessian_trace", "level", "sharpness", "trace"),
)
COLUMNS = LEVEL_COLUMNS + tuple(f"baseline_{key}" for key in BASELINE_KEYS) + ("in_sublevel_set",) \
    + tuple(column for column, *_ in ANALYSIS_COLUMNS)
PANDAS_HINT = "pip install -e '.[pandas]'"


def rows(root=None) -> list[dict]:
    """The table as one dict a row, keyed by COLUMNS (None: not stored); a one-line LthError
    when ROOT holds no study."""
    from lthfast.pruning import strategies
    from lthfast.report.results import Collector
    from lthfast.store.layout import Store, load_study_config

    root = Store(root).root
    config = load_study_config(root)
    col = Collector(config, root)
    out = []
    for rewind in config.rewinds():
        for seed in col.seeds[rewind]:
            run = col.runs[seed, rewind]
            levels = [(s, k) for s in strategies.STRATEGIES for k in run.levels(s) if k > 0 or s == "imp"]
            if not levels:
                continue
            analyses, inside = _analyses(config, col, seed, rewind), _sublevel(config, run)
            for strategy, k in levels:
                record = col.level(seed, rewind, strategy, k)
                if record is not None:
                    out.append(_row(seed, rewind, strategy, k, record, inside, analyses.get((strategy, k), {})))
    return out


def _row(seed, rewind, strategy, k, record, inside, analyses) -> dict:
    row = dict.fromkeys(COLUMNS)
    row.update(seed=seed, rewind_iter=rewind, strategy=strategy, level=k)
    row.update({c: record.get(c) for c in LEVEL_COLUMNS[4:]})
    baseline = record.get("baseline") or {}
    row.update({f"baseline_{key}": baseline.get(key) for key in BASELINE_KEYS})
    flag = inside.get(f"{strategy}:{k}")
    row["in_sublevel_set"] = None if flag is None else int(bool(flag))
    row.update(analyses)
    return row


def _analyses(config, col, seed: int, rewind: int) -> dict:
    """{(strategy, level): {column: number}} from the study's stored analyses of one run."""
    from lthfast.landscape import registry

    out = {}
    for target, specs, level in registry.targets(config, seed, rewind):
        for entry in registry.planned(config, target, level):
            wanted = [(column, key) for column, t, name, key in ANALYSIS_COLUMNS if (t, name) == (target, entry.name)]
            doc = col.result(seed, rewind, entry.name, specs) if wanted else None
            if doc is None:
                continue
            try:
                summary = entry.summary(doc["result"])
            except KeyError:  # a result stored before one of its summary's numbers existed
                continue
            strategy, k = specs[-1].split(":")[:2]  # b_k's numbers belong to level k's row
            out.setdefault((strategy, int(k)), {}).update({column: summary.get(key) for column, key in wanted})
    return out


def _sublevel(config, run) -> dict:
    """{solution label: whether it lies in S(eps)} from the run's stored sublevel table, the
    one the report reads ({} if there is none)."""
    from lthfast.foundations.files import read_json
    from lthfast.landscape import sublevel

    path = run.result_path("sublevel", ["run"], sublevel.settings_of(run, None, config.eps_margin))
    if not path.exists():
        return {}
    return {row["label"]: row["inside"] for row in read_json(path)["result"]["rows"] if row["kind"] == "solution"}


def csv_text(root=None) -> str:
    """The table as CSV text: one header row (COLUMNS), numbers as Python writes them in
    full (repr), empty cells where nothing is stored."""
    text = io.StringIO()
    writer = csv.DictWriter(text, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows(root))
    return text.getvalue()


def write(root=None, out=None) -> Path:
    """Write the table to OUT (default ROOT/report/results.csv) and return its path; a
    one-line LthError when ROOT holds no study or OUT cannot be written."""
    from lthfast.foundations.files import atomic_write_text
    from lthfast.store.layout import Store

    store = Store(root)
    path = Path(str(out)).expanduser() if out is not None else store.report / "results.csv"
    if path.is_dir():
        raise LthError(f"--out {path} is a folder; name the CSV file to write")
    text = csv_text(store.root)
    try:
        atomic_write_text(text, path)
    except OSError as exc:
        raise LthError(f"cannot write {exc.filename or path}: {exc.strerror or exc}; "
                       "pass --out in a folder you can write") from None
    return path


def frame(root=None):
    """The same table as a pandas DataFrame (the CSV read back, so both hold the same rows,
    columns and numbers; empty cells are NaN); a one-line LthError when pandas is missing."""
    try:
        import pandas
    except ImportError:
        raise LthError(f"lthfast.report.frame needs pandas: {PANDAS_HINT}") from None
    return pandas.read_csv(io.StringIO(csv_text(root)))
