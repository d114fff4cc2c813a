"""Baselines on one parent (docs/protocol.md, "Quantities"; the study notes' "Baselines on one
parent", findings 5 and 6): IMP's solution theta_{k-1} pruned three ways to the density of
level k, with no training, and each baseline's damage.

From the parent theta_{k-1} (the stored solution imp:{k-1}: its final weights and its mask
m_{k-1}) three masks keep the same number of weights as IMP's level k (round(total x
(1 - prune_fraction)^k) of all prunable weights, lthfast.pruning.masks.target_kept), by one
global ranking over the weights m_{k-1} keeps:

  smallest   drops the smallest magnitudes: IMP's own m_k, and the baseline is IMP's b_k
  largest    drops the largest magnitudes
  random     drops uniformly at random, with seed `seed x 1,000,003 + k` (the one the
             random-prune strategy draws its level k with, so at k = 1, where both prune
             the dense network, it is random-prune's m_1)

Each baseline is mask x theta_{k-1}. The baselines and the parent are evaluated on the run's
fixed, unaugmented training sample (`eval_train_images`) by IMP's own evaluation
(lthfast.training.evaluation.evaluate_weights, the one behind each level's baseline.json): with the
stored BatchNorm statistics, and with statistics recomputed from `bn_batches` augmented
training batches. damage = baseline train loss - parent train loss, both with BatchNorm
recomputed. Losses are mean cross-entropy in nats, accuracies fractions in [0, 1], densities
kept / total prunable weights.

The stored document (lthfast.landscape.runs.cached, what "one-parent", named by the parent):
  level, prunable_weights, kept_weights, density, random_seed, train_images, bn_batches
  parent:    solution, kept_weights, density, train_loss, train_accuracy,
             train_loss_bn_recomputed, train_accuracy_bn_recomputed
  baselines: {smallest, largest, random} -> kept_weights, density, collapsed_layers (names),
             train_loss, train_accuracy, train_loss_bn_recomputed,
             train_accuracy_bn_recomputed, damage

tests/test_oneparent.py checks that the smallest mask is IMP's stored m_k and its evaluation
the stored baseline's, the largest and random masks, the command and the study's jobs.
"""
from __future__ import annotations

import dataclasses

from lthfast.data.dataset import fixed_sample
from lthfast.foundations.errors import LthError
from lthfast.landscape.runs import AnalysisRun, cached
from lthfast.pruning import masks as pruning
from lthfast.store.level import Solution
from lthfast.training.evaluation import evaluate_weights

WHAT = "one-parent"
RULES = ("smallest", "largest", "random")  # which weights each baseline drops


def random_seed(seed: int, level: int) -> int:
    """The seed of the random mask at `level`: random-prune's (lthfast.imp.driver, `_mask`)."""
    return seed * 1_000_003 + level


def masks(weights: dict, parent_mask: pruning.Mask, level: int, prune_fraction: float, seed: int,
          backend: str = "auto") -> dict[str, pruning.Mask]:
    """{rule: mask} of the parent (weights, parent_mask) pruned to the kept count of `level`,
    as lthfast.imp.driver's `_mask` prunes a level of its own chain."""
    total = pruning.total_count(parent_mask)
    target = pruning.target_kept(total, prune_fraction, level)
    if target < 1:
        raise LthError(f"level {level} leaves no weight of the {total} prunable ones")
    count = pruning.kept_count(parent_mask) - target
    if count < 0:
        raise LthError(f"the parent keeps {pruning.kept_count(parent_mask)} weights, fewer than level {level}'s "
                       f"{target}")
    return {"smallest": pruning.prune_magnitude(weights, parent_mask, count, largest=False, backend=backend),
            "largest": pruning.prune_magnitude(weights, parent_mask, count, largest=True, backend=backend),
            "random": pruning.prune_random(parent_mask, count, seed=random_seed(seed, level))}


def _parent(solutions: list[Solution]) -> tuple[Solution, int]:
    """(theta_{k-1}, k) from [imp:{k-1}] (the study's target) or [imp:{k-1}, imp:k] (`analyze
    one-parent RUN --a imp:K-1 --b imp:K` or `--successive imp`: the pruning step into k)."""
    parent = solutions[0]
    if parent.strategy != "imp" or parent.label != f"imp:{parent.level}" or len(solutions) > 2:
        raise LthError(f"one-parent prunes an IMP solution imp:K-1 to level K's density, got "
                       f"{' and '.join(s.label for s in solutions)}; give --a imp:K-1 --b imp:K or --successive imp")
    level = parent.level + 1
    if len(solutions) == 2 and solutions[1].label != f"imp:{level}":
        raise LthError(f"one-parent from {parent.label} prunes to the density of imp:{level}, not "
                       f"{solutions[1].label}")
    return parent, level


def _evaluator(run: AnalysisRun):
    """(evaluate, images): IMP's evaluation of a level's baseline on the run's fixed training
    sample (lthfast.training.evaluation.evaluate_weights), on the analysis's device (weights ->
    {train_loss, train_accuracy, and both _bn_recomputed}), and the sample's size."""
    config = run.config
    train = dataclasses.replace(config.train, device=str(run.device))
    sets = {"train": fixed_sample(run.data.train_x, run.data.train_y, config.eval_train_images)}

    def evaluate(weights: dict) -> dict:
        result = evaluate_weights(train, weights, run.data, sets, config.bn_batches, recompute_bn=False)
        result.update({f"{k}_bn_recomputed": v for k, v in evaluate_weights(
            train, weights, run.data, sets, config.bn_batches, recompute_bn=True).items()})
        return result

    return evaluate, len(sets["train"][1])


def _run_masks(run: AnalysisRun, weights: dict, parent_mask: pruning.Mask, level: int) -> dict[str, pruning.Mask]:
    backend = "torch" if run.config.train.backend == "torch" else "auto"  # as the driver prunes
    return masks(weights, parent_mask, level, run.config.prune_fraction, run.config.train.seed, backend)


def load_masks(run: AnalysisRun, level: int) -> dict[str, pruning.Mask]:
    """The three masks at `level` from the stored imp:{level-1}, as one_parent builds them."""
    parent, level = _parent([run.solution(f"imp:{level - 1}")])
    return _run_masks(run, *parent.load(), level)


def one_parent(run: AnalysisRun, solutions: list[Solution], settings=None, compute=None, force: bool = False) -> dict:
    """The three baselines of imp:{k-1} at level k's density and the parent, evaluated (the
    module's docstring gives the document). `settings` and `compute` are unused: the sample,
    the BatchNorm batches and the precision are the run's own, as for IMP's baselines."""
    parent, level = _parent(solutions)

    def measure():
        weights, parent_mask = parent.load()
        chosen = _run_masks(run, weights, parent_mask, level)
        evaluate, images = _evaluator(run)
        at_parent = {"solution": parent.label, "kept_weights": pruning.kept_count(parent_mask),
                 "density": pruning.density(parent_mask), **evaluate(weights)}
        baselines = {}
        for rule, mask in chosen.items():
            numbers = evaluate(pruning.apply_mask_to_weights(weights, mask))
            baselines[rule] = {"kept_weights": pruning.kept_count(mask), "density": pruning.density(mask),
                               "collapsed_layers": pruning.collapsed_layers(mask), **numbers,
                               "damage": numbers["train_loss_bn_recomputed"] - at_parent["train_loss_bn_recomputed"]}
        first = chosen["smallest"]
        return {"level": level, "prunable_weights": pruning.total_count(first),
                "kept_weights": pruning.kept_count(first), "density": pruning.density(first),
                "random_seed": random_seed(run.config.train.seed, level), "train_images": images,
                "bn_batches": run.config.bn_batches, "parent": at_parent, "baselines": baselines}

    return cached(run, WHAT, [parent], {}, measure, force)


def cost(settings, study, calibration) -> float:
    """Seconds of one job: the parent and three baselines, each evaluated on the training
    sample twice (stored and recomputed BatchNorm), the recomputation's batches besides."""
    networks, imp = len(RULES) + 1, study.imp
    return calibration.job_seconds + networks * (2 * imp.eval_train_images * calibration.eval_image
                                                 + imp.bn_batches * study.train.batch_size * calibration.bn_image)


def summary(result: dict) -> dict:
    """Train accuracy of each baseline (BatchNorm recomputed), its damage, and the parent's
    train loss (BatchNorm recomputed, the damage's reference)."""
    b = result["baselines"]
    return {**{f"{rule}_train_accuracy": b[rule]["train_accuracy_bn_recomputed"] for rule in RULES},
            **{f"{rule}_damage": b[rule]["damage"] for rule in RULES},
            "parent_train_loss": result["parent"]["train_loss_bn_recomputed"]}
