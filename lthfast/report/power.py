"""Power of a study: for every comparison the findings make, the effect and seed-to-seed
spread a study measured, and whether that effect would exceed two standard errors with N
seeds. Used to size a study from a smaller one (e.g. the cpu-3seed preset from the cpu run);
never to choose a threshold."""
from __future__ import annotations

import math
from pathlib import Path

from lthfast.report.findings import findings
from lthfast.report.results import collect
from lthfast.store.layout import load_study_config


def spread(check: dict) -> float | None:
    """The standard deviation over seeds of the check's paired difference (None: unknown)."""
    if check.get("se") is None:
        return None
    n = int(check["noise"].split(", ")[1].split()[0]) if check["noise"].startswith("seed spread") else 1
    return check["se"] * math.sqrt(n)  # a one-seed check's se already is the stored runs' deviation


def table(root: Path, seeds: int) -> list[dict]:
    """Every comparison of every finding and rewind point, with its power at `seeds` seeds."""
    results = collect(load_study_config(root), Path(root))
    rows = []
    for finding in findings(results):
        for rewind, decided in finding["per_rewind"].items():
            for check in decided["checks"]:
                sd = spread(check)
                se = None if sd is None else sd / math.sqrt(seeds)
                z = None if not se else check["difference"] * check["sign"] / se
                rows.append({"finding": finding["number"], "rewind": rewind, "comparison": check["name"],
                             "difference": check["difference"], "seed_sd": sd, "se_at_n": se, "z_at_n": z,
                             "decides_at_n": None if z is None else abs(z) > 2})
    return rows


def text(rows: list[dict], seeds: int) -> str:
    lines = [f"{'finding':>7s} {'R':>6s}  {'comparison':60s} {'difference':>11s} {'seed sd':>9s} "
             f"{'se@' + str(seeds):>9s} {'z@' + str(seeds):>7s}"]
    for r in rows:
        sd = "—" if r["seed_sd"] is None else f"{r['seed_sd']:.4f}"
        se = "—" if r["se_at_n"] is None else f"{r['se_at_n']:.4f}"
        z = "—" if r["z_at_n"] is None else f"{r['z_at_n']:+.1f}"
        lines.append(f"{r['finding']:>7d} {r['rewind']:>6s}  {r['comparison'][:60]:60s} {r['difference']:>+11.4f} "
                     f"{sd:>9s} {se:>9s} {z:>7s}")
    decided = [r for r in rows if r["decides_at_n"] is not None]
    lines.append(f"{sum(r['decides_at_n'] for r in decided)} of {len(decided)} comparisons with a measured spread "
                 f"would exceed two standard errors with {seeds} seeds ({len(rows) - len(decided)} have no spread)")
    return "\n".join(lines)
