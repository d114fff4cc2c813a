"""The pruning strategies of docs/protocol.md, one table entry each.

An entry says, for level k of the strategy:
  parent  whose solution theta_{k-1} is pruned: "own" (its own level k-1: a chain),
          "imp" (imp's level k-1: a branch off imp) or "dense" (theta_0: one-shot);
          level 1 always prunes the dense network
  drops   which weights go: the "smallest", "largest" or "random" of those the parent
          keeps, down to density (1 - f)^k, or "imp-mask" (exactly imp's mask m_k)
  weights the weights training starts from (a function below: the rewind point, the
          pruned baseline b_k, or a fresh initialization), masked
  at      where in the schedule training starts: "rewind" (iteration R) or "zero"
  lr      "schedule" (the recipe's step schedule) or "finetune" (constant finetune_lr)

Adding a strategy is one entry (and a weights function if none below fits), e.g. a random
reinitialization of imp's mask trained from the late rewind point:
    Strategy("reinit-late", "imp", "imp-mask", fresh_init, "rewind", "schedule", "...")
The IMP driver (lthfast.imp.driver), the study planner (lthfast.study.plan) and the analyses
(lthfast.store.layout's parents) all read this table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from lthfast.foundations.errors import LthError
from lthfast.models.families import create_model


@dataclass(frozen=True)
class StartContext:
    """What a weights function may use: the level, the run's seed and lazy loaders."""
    level: int
    seed: int
    model: str
    width: int | None
    baseline: dict  # b_k = m_k * theta_{k-1}, the pruned parent (state dict)
    load_rewind: Callable[[], dict]  # the dense run's weights at the rewind point
    num_classes: int = 10  # of the data set, for a fresh initialization


def rewind_point(ctx: StartContext) -> dict:
    """The dense run's weights at iteration R (masked by the trainer): weight rewinding."""
    return ctx.load_rewind()


def pruned_baseline(ctx: StartContext) -> dict:
    """The pruned parent b_k itself: fine-tuning continues from where pruning left it."""
    return ctx.baseline


def fresh_init(ctx: StartContext) -> dict:
    """A new random initialization (its own seed per level; docs/protocol.md's reinit)."""
    return create_model(ctx.model, ctx.width, seed=ctx.seed + 1_000_003 * ctx.level,
                        num_classes=ctx.num_classes).state_dict()


@dataclass(frozen=True)
class Strategy:
    name: str
    parent: str  # "own", "imp" or "dense"
    drops: str  # "smallest", "largest", "random" or "imp-mask"
    weights: Callable[[StartContext], dict]
    at: str  # "rewind" or "zero"
    lr: str  # "schedule" or "finetune"
    description: str
    in_study: bool = True  # one of the study's six strategies
    own_densities: bool = False  # may be trained at densities of its own (imp --sparsities)

    def parent_of(self, level: int) -> tuple[str, int]:
        """(strategy, level) of the solution that level `level` prunes; level 0 is the dense network."""
        if level < 1:
            raise LthError("the dense network (level 0) has no parent")
        if level == 1 or self.parent == "dense":
            return "imp", 0
        return (self.name if self.parent == "own" else "imp"), level - 1

    def start_iteration(self, rewind_iter: int) -> int:
        return rewind_iter if self.at == "rewind" else 0


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("imp", "own", "smallest", rewind_point, "rewind", "schedule",
             "iterative: drop the 20% smallest remaining magnitudes of theta_k, rewind"),
    Strategy("oneshot", "dense", "smallest", rewind_point, "rewind", "schedule",
             "drop the smallest magnitudes of theta_0 straight to the density, rewind", own_densities=True),
    Strategy("finetune", "imp", "imp-mask", pruned_baseline, "zero", "finetune",
             "imp's mask m_k; train the baseline b_k at the final learning rate (Renda et al. 2020)"),
    Strategy("reinit", "imp", "imp-mask", fresh_init, "zero", "schedule",
             "imp's mask m_k; a fresh random initialization trained from iteration 0", own_densities=True),
    Strategy("random-prune", "own", "random", rewind_point, "rewind", "schedule",
             "iterative: drop 20% of the remaining weights at random, rewind"),
    Strategy("prune-large", "own", "largest", rewind_point, "rewind", "schedule",
             "iterative: drop the 20% largest remaining magnitudes, rewind"),
    Strategy("finetune-chain", "own", "smallest", pruned_baseline, "zero", "finetune",
             "Renda et al.'s chained fine-tuning: prune the fine-tuned network each level", in_study=False),
    Strategy("lr-rewind", "own", "smallest", pruned_baseline, "rewind", "schedule",
             "learning-rate rewinding (Renda et al. 2020): its own previous solution, masked, retrained with the "
             "original schedule from iteration R", in_study=False),
)}
STUDY_STRATEGIES = tuple(name for name, s in STRATEGIES.items() if s.in_study)


def get(name: str) -> Strategy:
    """The table entry of `name`; a one-line LthError naming the known ones otherwise."""
    if name not in STRATEGIES:
        raise LthError(f"unknown strategy {name!r}; strategies: {', '.join(STRATEGIES)}")
    return STRATEGIES[name]
