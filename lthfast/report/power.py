"""Power of a study: for every comparison the findings make (primary and secondary), the
effect and seed-to-seed spread a study measured, and whether that effect would pass the
findings' own rule with N seeds: the one-sided Student t test at 0.05 with N - 1 degrees of
freedom against the comparison's null (zero, a non-inferiority margin or the connectivity
threshold; lthfast.foundations.stats.one_sided). Used to size a study from a smaller one;
never to choose a threshold. tests/test_verdicts.py checks it on constructed effects."""
from __future__ import annotations

import math
from pathlib import Path

from lthfast.foundations.stats import t_critical
from lthfast.report.findings import findings
from lthfast.report.results import collect
from lthfast.store.layout import load_study_config


def spread(check: dict) -> float | None:
    """The standard deviation over seeds of the check's paired difference (None: unknown)."""
    if check.get("se") is None:
        return None
    # a one-seed check's se already is the stored runs' deviation
    return check["se"] * math.sqrt(check["n"]) if check.get("seeds", 1) >= 2 else check["se"]


def at_seeds(check: dict, seeds: int) -> dict:
    """The check's measured effect against its null, with the standard error and t it would
    have with `seeds` seeds, and whether t reaches the one-sided critical value there."""
    sd = spread(check)
    se = None if sd is None else sd / math.sqrt(seeds)
    effect = check["difference"] - check.get("null", 0.0)
    sign = 1 if check.get("expected", "above") == "above" else -1
    t = None if not se else effect * sign / se
    return {"seed_sd": sd, "se_at_n": se, "t_at_n": t, "t_critical_at_n": t_critical(seeds),
            "decides_at_n": None if t is None else abs(t) >= t_critical(seeds),
            "expected_way_at_n": None if t is None else t >= t_critical(seeds)}


def table(root: Path, seeds: int) -> list[dict]:
    """Every comparison of every finding and rewind point of the study under `root`, with its
    power at `seeds` seeds."""
    return rows_of(collect(load_study_config(root), Path(root)), seeds)


def rows_of(results: dict, seeds: int) -> list[dict]:
    """table() on collected results (lthfast.report.results.collect's dictionary)."""
    rows = []
    for finding in findings(results):
        for rewind, decided in finding["per_rewind"].items():
            for role in ("primary", "secondary"):
                for check in decided[role]:
                    rows.append({"finding": finding["number"], "rewind": rewind, "role": role,
                                 "comparison": check["name"], "difference": check["difference"],
                                 "null": check.get("null", 0.0), **at_seeds(check, seeds)})
    return rows


def text(rows: list[dict], seeds: int) -> str:
    lines = [f"{'finding':>7s} {'R':>6s} {'role':9s} {'comparison':58s} {'difference':>11s} {'null':>8s} "
             f"{'seed sd':>9s} {'se@' + str(seeds):>9s} {'t@' + str(seeds):>7s}"]
    for r in rows:
        sd = "—" if r["seed_sd"] is None else f"{r['seed_sd']:.4f}"
        se = "—" if r["se_at_n"] is None else f"{r['se_at_n']:.4f}"
        t = "—" if r["t_at_n"] is None else f"{r['t_at_n']:+.1f}"
        lines.append(f"{r['finding']:>7d} {r['rewind']:>6s} {r['role']:9s} {r['comparison'][:58]:58s} "
                     f"{r['difference']:>+11.4f} {r['null']:>+8.4f} {sd:>9s} {se:>9s} {t:>7s}")
    for role in ("primary", "secondary"):
        decided = [r for r in rows if r["role"] == role and r["decides_at_n"] is not None]
        lines.append(f"{role}: {sum(r['decides_at_n'] for r in decided)} of {len(decided)} comparisons with a measured "
                     f"spread would pass a one-sided t test at 0.05 (|t| >= {t_critical(seeds):.2f}) with {seeds} "
                     f"seeds, {sum(r['expected_way_at_n'] for r in decided)} of them the expected way "
                     f"({sum(r['role'] == role for r in rows) - len(decided)} have no spread)")
    return "\n".join(lines)
