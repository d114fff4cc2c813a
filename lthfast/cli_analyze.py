"""`python -m lthfast analyze WHAT RUN ...`: the landscape analyses of STUDY.md on a run folder.

Each prints one line per result (its key numbers, the seconds it took or "stored", and
its JSON file) and writes PNG figures beside the JSON files. Solutions are named as
lthfast.analysis.SOLUTION_FORMS says, e.g. imp:3, imp:3:baseline or a level folder.
"""
from __future__ import annotations

from pathlib import Path

from lthfast import analysis
from lthfast.errors import LthError


def _open(run, data_dir, device) -> analysis.Run:
    if run is None:
        raise LthError("name the run folder (ROOT/imp_<hash>) as the first argument")
    return analysis.Run(run, data_dir=data_dir, device=device)


def _curve_line(doc: dict) -> str:
    r = doc["result"]
    a, b = doc["solutions"]
    return (f"{a} -> {b}: barrier train loss {r['barrier_train_loss']:.4f}, test error "
            f"{r['barrier_test_error']:.4f} (train loss {r['train_loss'][0]:.4f} .. max "
            f"{max(r['train_loss']):.4f} .. {r['train_loss'][-1]:.4f}; {doc['wall_seconds']:.1f} s, {doc['path']})")


def _figure_path(documents: list[dict], stem: str) -> Path:
    """Beside the first result, named by what the figure shows and the settings hash."""
    first = Path(documents[0]["path"])
    return first.with_name(f"{stem}__{first.stem.rsplit('__', 1)[-1]}.png")


def interpolate(run=None, a=None, b=None, successive=None, points: int = 21, bn: str = "recompute",
                bn_batches: int = 40, train_images: int = 10_000, test_images: int | None = None, seed: int = 0,
                batch_size: int = 256, backend: str = "auto", stack: str = "auto", data_dir=None,
                device: str = "auto", force: bool = False):
    """The curve and barrier between two solutions, or between every pair of successive
    levels of a strategy (--successive imp), all grid points evaluated together.

    Args:
        run: the run folder, ROOT/imp_<hash>.
        a: first solution (a = 0), e.g. imp:1.
        b: second solution (a = 1), e.g. imp:2.
        successive: a strategy: curves between each pair of its successive finished levels.
        points: grid points from a = 0 to a = 1.
        bn: BatchNorm statistics at each point: recompute (from fixed augmented training batches) or interpolate.
        bn_batches: training batches for recomputed statistics.
        train_images: fixed, unaugmented training sample for train loss and accuracy.
        test_images: test images (default: all).
        seed: seed of the BatchNorm batches.
        batch_size: evaluation batch size.
        backend: interpolation kernel: auto, torch, cpp, cuda or triton.
        stack: grouped (K networks as one model), loop, or auto (grouped on a GPU).
        data_dir: CIFAR-10 folder, if not the one the run was trained from.
        device: auto, cpu or cuda[:N].
        force: compute again even if a stored result exists.
    """
    r = _open(run, data_dir, device)
    settings = analysis.CurveSettings(points, bn, bn_batches, train_images, test_images, seed)
    compute = analysis.Compute(batch_size, backend, stack)
    if successive is not None:
        pairs = analysis.successive_pairs(r, successive)
    elif a is not None and b is not None:
        pairs = [(r.solution(a), r.solution(b))]
    else:
        raise LthError("give --a and --b, or --successive STRATEGY")
    documents = [analysis.interpolation(r, x, y, settings, compute, force) for x, y in pairs]
    for doc in documents:
        print(_curve_line(doc))
    stem = f"successive-{successive}" if successive else Path(documents[0]["path"]).stem.rsplit("__", 1)[0]
    from lthfast import plots

    title = f"{r.folder.name}: {'successive ' + successive + ' levels' if successive else a + ' → ' + b}"
    print("figure:", plots.curves(documents, _figure_path(documents, stem), title))


def prune_path(run=None, level=None, strategy=None, points: int = 21, bn: str = "recompute", bn_batches: int = 40,
               train_images: int = 10_000, test_images: int | None = None, seed: int = 0, batch_size: int = 256,
               backend: str = "auto", stack: str = "auto", data_dir=None, device: str = "auto",
               force: bool = False):
    """The curve from theta_{k-1} to the baseline b_k = m_k * theta_{k-1} of level k: does
    pruning leave the sublevel set? For one level (--level imp:2) or every level of a
    strategy (--strategy imp).

    Args:
        run: the run folder, ROOT/imp_<hash>.
        level: STRATEGY:K, the pruning step into level K.
        strategy: every finished level of this strategy.
        points: grid points.
        bn: recompute or interpolate BatchNorm statistics.
        bn_batches: training batches for recomputed statistics.
        train_images: fixed training sample.
        test_images: test images (default: all).
        seed: seed of the BatchNorm batches.
        batch_size: evaluation batch size.
        backend: interpolation kernel.
        stack: grouped, loop or auto.
        data_dir: CIFAR-10 folder, if not the run's.
        device: auto, cpu or cuda[:N].
        force: compute again even if stored.
    """
    r = _open(run, data_dir, device)
    settings = analysis.CurveSettings(points, bn, bn_batches, train_images, test_images, seed)
    compute = analysis.Compute(batch_size, backend, stack)
    if strategy is not None:
        steps = [(strategy, k) for k in r.levels(strategy) if k > 0]
    elif level is not None:
        solution = r.solution(level)
        if solution.strategy is None or not solution.level:
            raise LthError(f"--level names a pruned level as STRATEGY:K with K >= 1, got {level!r}")
        steps = [(solution.strategy, solution.level)]
    else:
        raise LthError("give --level STRATEGY:K or --strategy STRATEGY")
    if not steps:
        raise LthError(f"{strategy} has no finished pruned level in {r.folder}")
    documents = [analysis.prune_path(r, s, k, settings, compute, force) for s, k in steps]
    for doc in documents:
        print(_curve_line(doc))
    from lthfast import plots

    stem = f"prune-path-{strategy}" if strategy else Path(documents[0]["path"]).stem.rsplit("__", 1)[0]
    print("figure:", plots.curves(documents, _figure_path(documents, stem), f"{r.folder.name}: pruning paths"))


def sublevel(run=None, eps: float | None = None, eps_margin: float = 0.1, force: bool = False):
    """Train loss of every solution and baseline of the run (all strategies), the threshold
    eps and which lie in the sublevel set S(eps) = {theta: train loss <= eps}.

    Args:
        run: the run folder, ROOT/imp_<hash>.
        eps: the threshold; default: the largest train loss among IMP solutions up to the last matching level, times (1 + EPS_MARGIN).
        eps_margin: relative margin of the default eps.
        force: compute again even if stored.
    """
    r = _open(run, None, "cpu")  # the table is read from the stored levels: no data, no device
    doc = analysis.sublevel(r, eps, eps_margin, force)
    result = doc["result"]
    print(f"eps = {result['eps']:.4f} ({result['eps_rule']}; train loss on {result['train_images']} fixed "
          "training images, stored BN statistics unless noted)")
    print(f"{'solution':>22s} {'density':>8s} {'train_loss':>10s} {'in S(eps)':>9s} {'loss, BN recomputed':>20s} {'in S(eps)':>9s}")
    for row in result["rows"]:
        recomputed = (f"{row['train_loss_bn_recomputed']:>20.4f} {str(row['inside_bn_recomputed']):>9s}"
                      if "train_loss_bn_recomputed" in row else "")
        print(f"{row['label']:>22s} {row['density']:>8.4f} {row['train_loss']:>10.4f} {str(row['inside']):>9s} "
              f"{recomputed}")
    from lthfast import plots

    print("json:", doc["path"])
    print("figure:", plots.sublevel(result, Path(doc["path"]).with_suffix(".png"), f"{r.folder.name}: sublevel set"))


def _solutions(r: analysis.Run, solution, strategy) -> list[analysis.Solution]:
    if strategy is not None:
        return [r.solution(f"{strategy}:{k}") for k in r.levels(strategy)]
    if solution is not None:
        return [r.solution(solution)]
    raise LthError("give --solution (e.g. imp:2) or --strategy STRATEGY (every level)")


def _level_figure(r, documents, stem, series, errors, title):
    from lthfast import plots

    levels = [int(doc["solutions"][0].split(":")[1]) for doc in documents]
    return plots.per_level(levels, series, _figure_path(documents, stem), title, errors)


def volume(run=None, solution=None, strategy=None, directions: int = 64, delta: float = 0.1,
           filter_normalized: bool = False, train_images: int = 10_000, initial: float = 0.05,
           bisections: int = 10, bn: str = "stored", seed: int = 0, batch_size: int = 256, backend: str = "auto",
           stack: str = "auto", data_dir=None, device: str = "auto", force: bool = False):
    """Basin radii along random Gaussian directions within the unpruned weights (all
    directions evaluated together), their mean and spread, the dimension and the log-volume.

    Args:
        run: the run folder, ROOT/imp_<hash>.
        solution: one solution, e.g. imp:2.
        strategy: every finished level of this strategy (and a per-level figure).
        directions: random directions.
        delta: the radius is where the train loss first exceeds loss(theta) + DELTA.
        filter_normalized: scale each filter of a direction to the solution's filter norm (default: the whole direction to the norm of the unpruned weights).
        train_images: fixed training sample for the loss.
        initial: first bracket end (in units of the direction).
        bisections: bisection steps after bracketing (relative precision 2^-BISECTIONS).
        bn: BatchNorm statistics along a direction: stored (the solution's) or recompute.
        seed: seed of the directions.
        batch_size: evaluation batch size.
        backend: kernel backend.
        stack: grouped, loop or auto.
        data_dir: CIFAR-10 folder, if not the run's.
        device: auto, cpu or cuda[:N].
        force: compute again even if stored.
    """
    r = _open(run, data_dir, device)
    settings = analysis.VolumeSettings(directions, delta, filter_normalized, train_images, initial, bisections, bn, seed)
    compute = analysis.Compute(batch_size, backend, stack)
    documents = [analysis.volume(r, s, settings, compute, force) for s in _solutions(r, solution, strategy)]
    for doc in documents:
        v = doc["result"]
        print(f"{doc['solutions'][0]}: radius {v['radius_mean']:.4f} +- {v['radius_std']:.4f} over "
              f"{len(v['radii'])} directions, dimension {v['dimension']}, log-volume {v['log_volume']:.1f}, "
              f"loss {v['base_loss']:.4f} ({doc['wall_seconds']:.1f} s, {doc['path']})")
    if strategy is not None:
        series = {"log-volume": [d["result"]["log_volume"] for d in documents],
                  "mean radius": [d["result"]["radius_mean"] for d in documents]}
        errors = {"mean radius": [d["result"]["radius_std"] for d in documents]}
        print("figure:", _level_figure(r, documents, f"volume-{strategy}", series, errors,
                                       f"{r.folder.name}: volume of the {strategy} minima"))


def sharpness(run=None, solution=None, strategy=None, images: int = 4096, iterations: int = 100,
              tolerance: float = 1e-3, trace_samples: int = 50, seed: int = 0, data_dir=None, device: str = "auto",
              force: bool = False):
    """Top Hessian eigenvalue (power iteration) and trace (Hutchinson) within the unpruned
    weights, on a fixed training sample, with the iterations and convergence figures.

    Args:
        run: the run folder, ROOT/imp_<hash>.
        solution: one solution, e.g. imp:2.
        strategy: every finished level of this strategy (and a per-level figure).
        images: fixed training sample (STUDY.md: at least 4,096; smaller ones are unstable).
        iterations: power iterations, at most.
        tolerance: stop when successive eigenvalue estimates differ by less than this (relative).
        trace_samples: Rademacher vectors for the trace.
        seed: seed of the start vector and the Rademacher vectors.
        data_dir: CIFAR-10 folder, if not the run's.
        device: auto, cpu or cuda[:N].
        force: compute again even if stored.
    """
    r = _open(run, data_dir, device)
    settings = analysis.SharpnessSettings(images, iterations, tolerance, trace_samples, seed)
    documents = [analysis.sharpness(r, s, settings, force=force) for s in _solutions(r, solution, strategy)]
    for doc in documents:
        v = doc["result"]
        print(f"{doc['solutions'][0]}: top eigenvalue {v['top_eigenvalue']:.3f} ({v['eigen_iterations']} iterations, "
              f"last relative change {v['eigen_relative_change']:.1e}), trace {v['trace']:.1f} +- "
              f"{v['trace_standard_error']:.1f} ({v['trace_samples']} samples), {v['images']} images "
              f"({doc['wall_seconds']:.1f} s, {doc['path']})")
    if strategy is not None:
        series = {"top eigenvalue": [d["result"]["top_eigenvalue"] for d in documents],
                  "trace": [d["result"]["trace"] for d in documents]}
        errors = {"trace": [d["result"]["trace_standard_error"] for d in documents]}
        print("figure:", _level_figure(r, documents, f"sharpness-{strategy}", series, errors,
                                       f"{r.folder.name}: sharpness of the {strategy} minima"))


def distance(run=None, a=None, b=None, successive=None, force: bool = False):
    """L2 distance between two solutions over the unpruned weights, and relative to ||A||.

    Args:
        run: the run folder, ROOT/imp_<hash>.
        a: first solution, e.g. imp:1.
        b: second solution, e.g. imp:2.
        successive: a strategy: distances between its successive finished levels.
        force: compute again even if stored.
    """
    r = _open(run, None, "cpu")
    if successive is not None:
        pairs = analysis.successive_pairs(r, successive)
    elif a is not None and b is not None:
        pairs = [(r.solution(a), r.solution(b))]
    else:
        raise LthError("give --a and --b, or --successive STRATEGY")
    for x, y in pairs:
        doc = analysis.distance(r, x, y, force)
        v = doc["result"]
        print(f"{x.label} -> {y.label}: L2 {v['l2']:.4f}, relative {v['relative']:.4f} over {v['dimension']} "
              f"weights ({doc['path']})")


ANALYSES = {"interpolate": interpolate, "prune-path": prune_path, "sublevel": sublevel, "volume": volume,
            "sharpness": sharpness, "distance": distance}
