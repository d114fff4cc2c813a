"""`python -m lthfast analyze WHAT RUN ...`: the landscape analyses of docs/protocol.md on a run folder.

Each prints one line per result (its key numbers, the seconds it took, its JSON file) and
writes PNG figures beside the JSON files. Solutions are named as lthfast.store.layout.SOLUTION_FORMS
says, e.g. imp:3, imp:3:baseline or a level folder. Flags come from the settings classes.
"""
from __future__ import annotations

from pathlib import Path

from lthfast.cli.flags import build, with_flags
from lthfast.config.analyses import CurveSettings, SharpnessSettings, VolumeSettings
from lthfast.foundations.errors import LthError
from lthfast.foundations.settings import integer, number
from lthfast.imp.driver import ImpRun
from lthfast.landscape import curves as analysis
from lthfast.landscape import plots, registry
from lthfast.landscape import sublevel as sublevel_set
from lthfast.landscape.curves import Compute
from lthfast.landscape.runs import AnalysisRun
from lthfast.landscape.sharpness import sharpness as sharpness_of
from lthfast.landscape.volume import volume as volume_of

WHERE = """        data_dir: CIFAR-10 folder, if not the one the run was trained from.
        device: auto, cpu or cuda[:N].
        force: compute again even if a stored result exists."""


def _open(run, data_dir=None, device="cpu") -> AnalysisRun:
    if run is None:
        raise LthError("name the run folder (ROOT/imp_<hash>) as the first argument")
    return AnalysisRun(run, data_dir=data_dir, device=device)


def _curve_line(doc: dict) -> str:
    r = doc["result"]
    a, b = doc["solutions"]
    return (f"{a} -> {b}: barrier train loss {r['barrier_train_loss']:.4f}, test error "
            f"{r['barrier_test_error']:.4f} (train loss {r['train_loss'][0]:.4f} .. max "
            f"{max(r['train_loss']):.4f} .. {r['train_loss'][-1]:.4f}; {doc['wall_seconds']:.1f} s, {doc['path']})")


def _print_per_level(r, documents, line, strategy, what, series, errors) -> None:
    """A line per result, and with --strategy a figure of the series against the level."""
    for doc in documents:
        print(f"{doc['solutions'][0]}: {line(doc['result'])} ({doc['wall_seconds']:.1f} s, {doc['path']})")
    if strategy is not None:
        print("figure:", analysis.levels_figure(documents, f"{what}-{strategy}", series, errors,
                                                f"{r.folder.name}: {what} of the {strategy} minima"))


@with_flags(CurveSettings, Compute, more=WHERE)
def interpolate(run=None, a=None, b=None, successive=None, data_dir=None, device: str = "auto", force: bool = False,
                **flags):
    """The curve and barrier between two solutions, or between every pair of successive
    levels of a strategy (--successive imp), all grid points evaluated together.

    Args:
        run: the run folder, ROOT/imp_<hash>.
        a: first solution (a = 0), e.g. imp:1.
        b: second solution (a = 1), e.g. imp:2.
        successive: a strategy: curves between each pair of its successive finished levels.
    """
    settings, compute = build(CurveSettings, flags), build(Compute, flags)  # every flag checked before any work
    r = _open(run, data_dir, device)
    documents = [analysis.interpolation(r, x, y, settings, compute, force) for x, y in r.pairs(a, b, successive)]
    for doc in documents:
        print(_curve_line(doc))
    title = f"{r.folder.name}: {'successive ' + successive + ' levels' if successive else a + ' → ' + b}"
    print("figure:", analysis.curves_figure(documents, f"successive-{successive}" if successive else None, title))


@with_flags(CurveSettings, Compute, more=WHERE)
def prune_path(run=None, level=None, strategy=None, data_dir=None, device: str = "auto", force: bool = False,
               **flags):
    """The curve from theta_{k-1} to the baseline b_k = m_k * theta_{k-1} of level k: does
    pruning leave the sublevel set? For one level (--level imp:2) or every level of a
    strategy (--strategy imp).

    Args:
        run: the run folder, ROOT/imp_<hash>.
        level: STRATEGY:K, the pruning step into level K.
        strategy: every finished level of this strategy.
    """
    settings, compute = build(CurveSettings, flags), build(Compute, flags)  # every flag checked before any work
    r = _open(run, data_dir, device)
    documents = [analysis.prune_path(r, s, k, settings, compute, force) for s, k in analysis.prune_steps(r, level, strategy)]
    for doc in documents:
        print(_curve_line(doc))
    print("figure:", analysis.curves_figure(documents, f"prune-path-{strategy}" if strategy else None,
                                            f"{r.folder.name}: pruning paths"))


def sublevel(run=None, eps: float | None = None, eps_margin: float = 0.1, force: bool = False):
    """Train loss of every solution and baseline of the run (all strategies), the threshold
    eps and which lie in the sublevel set S(eps) = {theta: train loss <= eps}.

    Args:
        run: the run folder, ROOT/imp_<hash>.
        eps: the threshold; default: the largest train loss among IMP solutions up to the last matching level, times (1 + EPS_MARGIN).
        eps_margin: relative margin of the default eps.
        force: compute again even if stored.
    """
    eps = None if eps is None else number("--eps", eps, positive=True)
    eps_margin = number("--eps-margin", eps_margin, minimum=0)
    r = _open(run)  # the table is read from the stored levels: no data, no device
    doc = sublevel_set.table(r, eps, eps_margin, force)
    result = doc["result"]
    print(f"eps = {result['eps']:.4f} ({result['eps_rule']}; train loss on {result['train_images']} fixed "
          "training images, stored BN statistics unless noted)")
    print(f"{'solution':>22s} {'density':>8s} {'train_loss':>10s} {'in S(eps)':>9s} {'loss, BN recomputed':>20s} {'in S(eps)':>9s}")
    for row in result["rows"]:
        recomputed = (f"{row['train_loss_bn_recomputed']:>20.4f} {str(row['inside_bn_recomputed']):>9s}"
                      if "train_loss_bn_recomputed" in row else "")
        print(f"{row['label']:>22s} {row['density']:>8.4f} {row['train_loss']:>10.4f} {str(row['inside']):>9s} "
              f"{recomputed}")
    print("json:", doc["path"])
    print("figure:", plots.sublevel(result, Path(doc["path"]).with_suffix(".png"), f"{r.folder.name}: sublevel set"))


@with_flags(VolumeSettings, Compute, more=WHERE)
def volume(run=None, solution=None, strategy=None, data_dir=None, device: str = "auto", force: bool = False, **flags):
    """Basin radii along random Gaussian directions within the unpruned weights (all
    directions evaluated together), their mean and spread, the dimension and the log-volume.

    Args:
        run: the run folder, ROOT/imp_<hash>.
        solution: one solution, e.g. imp:2.
        strategy: every finished level of this strategy (and a per-level figure).
    """
    settings, compute = build(VolumeSettings, flags), build(Compute, flags)
    r = _open(run, data_dir, device)
    documents = [volume_of(r, s, settings, compute, force) for s in r.solutions(solution, strategy)]

    def line(v):
        return (f"radius {v['radius_mean']:.4f} +- {v['radius_std']:.4f} over {len(v['radii'])} directions, "
                f"dimension {v['dimension']}, log-volume {v['log_volume']:.1f}, loss {v['base_loss']:.4f}")
    _print_per_level(r, documents, line, strategy, "volume", {"log-volume (nats)": "log_volume",
                     "mean radius (units of ||theta||)": "radius_mean"}, {"mean radius (units of ||theta||)": "radius_std"})


@with_flags(SharpnessSettings, more=WHERE)
def sharpness(run=None, solution=None, strategy=None, data_dir=None, device: str = "auto", force: bool = False,
              **flags):
    """The Hessian's largest and smallest eigenvalues (Lanczos, with residuals) and trace
    (Hutchinson) within the unpruned weights, on a fixed training sample.

    Args:
        run: the run folder, ROOT/imp_<hash>.
        solution: one solution, e.g. imp:2.
        strategy: every finished level of this strategy (and a per-level figure).
    """
    settings = build(SharpnessSettings, flags)
    r = _open(run, data_dir, device)
    documents = [sharpness_of(r, s, settings, force=force) for s in r.solutions(solution, strategy)]

    def line(v):
        return (f"lambda_max {v['top_eigenvalue']:.3f}, lambda_min {v['lambda_min']:.3f} (residual "
                f"{v['eigen_residual']:.1e}, {'converged' if v['eigen_converged'] else 'NOT converged'}, "
                f"{v['hessian_vector_products']} Hessian-vector products), trace {v['trace']:.1f} +- "
                f"{v['trace_standard_error']:.1f} ({v['trace_samples']} samples), {v['images']} images")
    _print_per_level(r, documents, line, strategy, "sharpness", {"lambda_max (top Hessian eigenvalue)": "top_eigenvalue",
                     "Hessian trace": "trace"}, {"Hessian trace": "trace_standard_error"})


def distance(run=None, a=None, b=None, successive=None, force: bool = False):
    """L2 distance between two solutions over the unpruned weights, and relative to ||A||.

    Args:
        run: the run folder, ROOT/imp_<hash>.
        a: first solution, e.g. imp:1.
        b: second solution, e.g. imp:2.
        successive: a strategy: distances between its successive finished levels.
        force: compute again even if stored.
    """
    r = _open(run)
    for x, y in r.pairs(a, b, successive):
        doc = analysis.distance(r, x, y, force)
        v = doc["result"]
        print(f"{x.label} -> {y.label}: L2 {v['l2']:.4f}, relative {v['relative']:.4f} over {v['dimension']} "
              f"weights ({doc['path']})")


@with_flags(CurveSettings, Compute, more=WHERE)
def instability(run=None, level=None, data_dir=None, device: str = "auto", force: bool = False, **flags):
    """Instability (Frankle et al. 2020): two copies trained from the start of level LEVEL (the
    dense run's rewind point for level 0) with the same weights, mask and schedule but different
    data orders, and the test-error barrier between them (BatchNorm recomputed). The first copy
    is the stored imp:LEVEL; the second is trained once and stored beside it.

    Args:
        run: the run folder, ROOT/imp_<hash>.
        level: the level whose start the copies train from (0: the dense run's rewind point).
    """
    settings, compute = build(CurveSettings, flags), build(Compute, flags)  # every flag checked before any work
    if level is None:
        raise LthError("give --level LEVEL (0: the dense run's rewind point)")
    level = integer("--level", level, minimum=0)
    r = _open(run, data_dir, device)
    ImpRun(r.config, r.folder.parent, r.data).instability_copy(level)
    doc = registry.get("instability").compute(r, [r.solution(f"imp:{level}"), r.solution(f"instability:{level}")],
                                              settings, compute, force)
    print(_curve_line(doc))


DEDICATED = {"interpolate": interpolate, "prune-path": prune_path, "sublevel": sublevel, "volume": volume,
             "sharpness": sharpness, "distance": distance, "instability": instability}


def _print(entry: registry.Analysis, doc: dict) -> None:
    numbers = ", ".join(f"{key} {value:.4g}" for key, value in entry.summary(doc["result"]).items())
    print(f"{' -> '.join(doc['solutions'])}: {numbers} ({doc['wall_seconds']:.1f} s, {doc['path']})")


def _registered(entry: registry.Analysis):
    """`analyze NAME RUN ...` for a registered analysis without a command of its own: on one
    solution or every level of a strategy (target "level"), else on pairs of solutions."""
    classes = ([entry.settings] if entry.settings else []) + [Compute]

    def on_solutions(run=None, solution=None, strategy=None, data_dir=None, device: str = "auto",
                     force: bool = False, **flags):
        settings, compute = build(entry.settings, flags) if entry.settings else None, build(Compute, flags)
        r = _open(run, data_dir, device)
        for s in r.solutions(solution, strategy):
            _print(entry, entry.compute(r, [s], settings, compute, force))

    def on_pairs(run=None, a=None, b=None, successive=None, data_dir=None, device: str = "auto",
                 force: bool = False, **flags):
        settings, compute = build(entry.settings, flags) if entry.settings else None, build(Compute, flags)
        r = _open(run, data_dir, device)
        for x, y in r.pairs(a, b, successive):
            _print(entry, entry.compute(r, [x, y], settings, compute, force))

    single = entry.targets == ("level",)
    command = on_solutions if single else on_pairs
    command.__doc__ = f"""{entry.help or entry.name} (a registered analysis, lthfast.landscape.registry).

    Args:
        run: the run folder, ROOT/imp_<hash>.
""" + ("""        solution: one solution, e.g. imp:2.
        strategy: every finished level of this strategy.
""" if single else """        a: first solution, e.g. imp:1.
        b: second solution, e.g. imp:2.
        successive: a strategy: every pair of its successive finished levels.
""")
    return with_flags(*classes, more=WHERE)(command)


def commands() -> dict:
    """Every `analyze` command: the dedicated ones, then one per other registered analysis."""
    return {**DEDICATED, **{name: _registered(entry) for name, entry in registry.ANALYSES.items()
                            if name not in DEDICATED}}
