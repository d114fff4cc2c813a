"""PNG figures of analysis results (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the Agg backend)
import matplotlib.ticker  # noqa: E402

from lthfast.foundations.files import atomic_write_bytes  # noqa: E402


def _save(fig, path: Path) -> Path:
    """Write the figure atomically (a figure is whole or absent, as every stored file), under
    a temporary name of its own so that two writers never share one."""
    try:
        atomic_write_bytes(lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"), path)
    finally:
        plt.close(fig)
    return Path(path)


def _finish(fig, axes, title: str, path: Path) -> Path:
    """Grid and legend on every panel, the title, and the figure saved."""
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def curves(documents: list[dict], path: Path, title: str) -> Path:
    """Interpolation curves: train loss and test error against a, one line per curve, the
    barriers in the legend."""
    fig, (ax_loss, ax_error) = plt.subplots(1, 2, figsize=(11, 4))
    for doc in documents:
        r = doc["result"]
        a, b = doc["solutions"]
        ax_loss.plot(r["alphas"], r["train_loss"], marker=".", label=f"{a} → {b}  (barrier {r['barrier_train_loss']:.3f})")
        ax_error.plot(r["alphas"], r["test_error"], marker=".",
                      label=f"{a} → {b}  (barrier {r['barrier_test_error']:.3f})")
    bn = documents[0]["settings"]["bn"] if documents else ""
    ax_loss.set(xlabel="a, interpolation coefficient (theta = (1-a) A + a B)", ylabel="train loss (cross-entropy, nats)",
                title=f"train loss (BN: {bn})")
    ax_error.set(xlabel="a, interpolation coefficient (theta = (1-a) A + a B)", ylabel="test error (fraction)",
                 title="test error")
    return _finish(fig, (ax_loss, ax_error), title, path)


def per_level(levels: list[int], series: dict[str, list[float]], path: Path, title: str,
              errors: dict[str, list[float]] | None = None) -> Path:
    """One panel per series (e.g. log-volume, mean radius) against the pruning level; a series'
    name is its axis label, units included."""
    fig, axes = plt.subplots(1, len(series), figsize=(4.5 * len(series), 3.6), squeeze=False, layout="constrained")
    for ax, (name, values) in zip(axes[0], series.items()):
        spread = (errors or {}).get(name)
        ax.errorbar(levels, values, yerr=spread, marker="o", capsize=3)
        ax.set(xlabel="pruning level k (density 0.8^k)", ylabel=name, title=name.split(" (")[0])
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


def _density_ticks(ax, densities: list[float]) -> None:
    """Ticks at the measured densities, as percentages (log-scale axes otherwise print 8x10^-1)."""
    ticks = sorted({round(d, 6) for d in densities})
    if ticks:
        ax.set_xticks(ticks, [f"{100 * d:.3g}%" for d in ticks], rotation=45 if len(ticks) > 8 else 0)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())


def sublevel(result: dict, path: Path, title: str) -> Path:
    """Train loss of every solution (filled) and baseline (hollow) against density, per
    strategy, with the threshold eps."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    strategies = sorted({r["strategy"] for r in result["rows"]})
    colors = dict(zip(strategies, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3))
    for strategy in strategies:
        for kind, face in (("solution", colors[strategy]), ("baseline", "none")):
            rows = [r for r in result["rows"] if r["strategy"] == strategy and r["kind"] == kind]
            if rows:
                ax.scatter([r["density"] for r in rows], [r["train_loss"] for r in rows], facecolors=face,
                           edgecolors=colors[strategy], label=f"{strategy} {kind}s")
    ax.axhline(result["eps"], color="k", linestyle="--", label=f"eps = {result['eps']:.3f}")
    ax.set(xscale="log", yscale="log", xlabel="density (% of prunable weights kept, log scale)",
           ylabel="train loss (cross-entropy, nats, log scale)", title=title)
    _density_ticks(ax, [r["density"] for r in result["rows"]])
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")  # 1.4, not 1.4x10^0
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.invert_xaxis()
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return _save(fig, path)


def metric_vs_density(rewind_results: dict, key: str, path: Path, title: str, ylabel: str, scale: float = 1.0,
                      band: dict | None = None, references: dict | None = None) -> Path:
    """A per-level metric (mean and standard deviation over seeds, times `scale`) against
    density, one line per strategy; `band`: the dense network's mean and standard deviation,
    shaded; `references`: published curves {label: {density: value}} drawn as hollow
    markers with dotted lines, never joined to the measured ones."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for strategy, rows in rewind_results["levels"].items():
        if rows:
            std = [0 if r[key]["n"] < 2 else r[key]["std"] * scale for r in rows]
            ax.errorbar([r["density"] for r in rows], [r[key]["mean"] * scale for r in rows], yerr=std, marker="o",
                        capsize=3, label=f"{strategy} (measured)")
    if band and band["n"]:
        spread = 0 if band["n"] < 2 else band["std"] * scale
        ax.axhspan(band["mean"] * scale - spread, band["mean"] * scale + spread, color="grey", alpha=0.25)
        ax.axhline(band["mean"] * scale, color="grey", linestyle="--", label="dense (measured)")
    for label, points in (references or {}).items():
        ax.plot(list(points), list(points.values()), linestyle=":", marker="s", markerfacecolor="none",
                label=f"{label} (published)")
    ax.set(xscale="log", xlabel="density (% of prunable weights kept, log scale)", ylabel=ylabel, title=title)
    _density_ticks(ax, [r["density"] for rows in rewind_results["levels"].values() for r in rows]
                   + [d for points in (references or {}).values() for d in points])
    ax.invert_xaxis()
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return _save(fig, path)


def from_baseline(rows_by_strategy: dict, path: Path, title: str) -> Path:
    """Relative distance and test-error barrier from each level's baseline, per strategy."""
    fig, (ax_distance, ax_barrier) = plt.subplots(1, 2, figsize=(11, 4))
    for strategy, rows in rows_by_strategy.items():
        levels = list(range(1, len(rows) + 1))
        ax_distance.plot(levels, [r["distance"]["relative"]["mean"] for r in rows], marker="o", label=strategy)
        ax_barrier.plot(levels, [r.get("barrier_test_error", {}).get("mean", float("nan")) for r in rows],
                        marker="o", label=strategy)
    ax_distance.set(xlabel="pruning level k", ylabel="relative distance ||theta - b_k|| / ||b_k||",
                    title="relative distance from the baseline")
    ax_barrier.set(xlabel="pruning level k", ylabel="test-error barrier (fraction)", title="barrier from the baseline")
    return _finish(fig, (ax_distance, ax_barrier), title, path)
