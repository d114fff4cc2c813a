"""What a study is: StudyConfig, composed of the settings of its IMP runs (ImpConfig with its
TrainConfig) and of its analyses (curve, volume, sharpness), each declared once where it
lives; the study adds only what is its own (seeds, levels, strategies, rewind points).

Flags are derived from the parts (lthfast.foundations.settings.nested): a TrainConfig field
keeps its name (`--epochs`), an analysis field takes its part's prefix (`--curve-points`).
Rewind points: the late one (`--rewind-iter`, default by model family) runs every strategy;
R = 0 (the original lottery-ticket reset) runs `rewind_zero_strategies`. Each (seed, rewind
point) is one IMP run folder ROOT/imp_<hash>. tests/test_settings.py checks the flags and
that a stored study reads back equal, in this layout and in the flat one before it.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass

import lthfast.data.registry as data_sets
from lthfast.config.analyses import CurveSettings, SharpnessSettings, VolumeSettings
from lthfast.config.runs import LEGACY_DEFAULTS, SEED_MAX, ImpConfig, TrainConfig
from lthfast.foundations import settings
from lthfast.foundations.errors import LthError
from lthfast.foundations.settings import nested, setting
from lthfast.models.families import prunable_count
from lthfast.pruning import strategies
from lthfast.pruning.masks import check_levels

# What a stored study meant by a setting it did not have yet: studies stored before instability
# measured none (so that opening them computes nothing new).
STUDY_LEGACY = {"instability_levels": ()}


@dataclass
class StudyConfig:
    """Every value of a study; a preset fills them, any flag overrides one."""
    # The recipe of every run; each run sets its own seed, rewind point and evaluation epochs.
    imp: ImpConfig = nested(ImpConfig, defaults={"milestones": (80, 120)},
                            skip=("seed", "data_seed", "eval_every"))
    # bn_batches of a curve follows --bn-batches: a baseline and a curve recompute alike.
    curve: CurveSettings = nested(CurveSettings, prefix="curve", skip=("bn_batches",))
    volume: VolumeSettings = nested(VolumeSettings, prefix="volume")
    sharpness: SharpnessSettings = nested(SharpnessSettings, prefix="sharpness")
    seeds: tuple = setting((0, 1, 2), "seeds, comma-separated.", kind="ints", minimum=0, maximum=SEED_MAX)
    levels: int = setting(16, "pruning levels (0.8^16 = 2.8% density).", minimum=1)
    rewind_zero: bool = setting(True, "also the R = 0 study.", kind="bool")
    strategies: tuple = setting(strategies.STUDY_STRATEGIES, "strategies at the late rewind point.", kind="strs")
    rewind_zero_strategies: tuple = setting(("imp",), "strategies at R = 0.", kind="strs")
    geometry_seeds: tuple | None = setting(None, "seeds whose IMP levels get volume and sharpness (default: all).",
                                           kind="ints", minimum=0, maximum=SEED_MAX)
    sharpness_levels: tuple | None = setting(None, "IMP levels with sharpness, -1 the last (default: all; empty: "
                                             "none; the costliest analysis).", kind="ints")
    eps_margin: float = setting(0.1, "relative margin of the sublevel threshold eps.", kind="float", minimum=0.0)
    instability_levels: tuple | None = setting(None, "levels whose instability the study measures (two copies "
                                               "from the level's start with different data orders; Frankle et al. "
                                               "2020), -1 the deepest (default: 0 and the deepest; empty: none).",
                                               kind="ints")
    connected_threshold: float = setting(0.02, "test-error barrier below which two networks are linearly connected "
                                         "and above which they are separated, each by a one-sided t test over seeds "
                                         "(Frankle et al. 2020; docs/protocol.md).", kind="float", positive=True,
                                         below=1)

    def __post_init__(self):
        settings.check(self)
        if self.curve.bn_batches != self.imp.bn_batches:
            self.curve = dataclasses.replace(self.curve, bn_batches=self.imp.bn_batches)
        for flag, chosen in (("--sharpness-levels", self.sharpness_levels),
                             ("--instability-levels", self.instability_levels)):
            if chosen is not None and not all(-self.levels - 1 <= k <= self.levels for k in chosen):
                raise LthError(f"{flag} must lie in 0..{self.levels} (or -1 for the last), got {chosen}")
        if not self.seeds:
            raise LthError("--seeds must name at least one seed")
        for s in self.strategies + self.rewind_zero_strategies:
            strategies.get(s)
        if "imp" not in self.strategies:
            raise LthError("--strategies must include imp: every other strategy is compared with it")
        self._check_plan()
        for seed in self.seeds:
            for rewind in self.rewinds():
                self.imp_config(seed, rewind)

    @property
    def train(self) -> TrainConfig:
        """The recipe every run of the study shares (its seed and rewind point are the run's)."""
        return self.imp.train

    @property
    def rewind_iter(self) -> int:
        """The late rewind point."""
        return self.imp.train.rewind_iter

    def _check_plan(self) -> None:
        """Plans that cannot finish fail now, before the first training."""
        t = self.train
        check_levels(prunable_count(t.model, t.width, t.num_classes), self.imp.prune_fraction, self.levels)
        total = t.epochs * math.ceil((t.train_subset or data_sets.get(t.data, t.data_dir).sizes[0]) / t.batch_size)
        if self.rewind_iter > total:
            raise LthError(f"--rewind-iter {self.rewind_iter} is past the end of training ({total} iterations)")
        strays = [s for s in self.geometry_seeds or () if s not in self.seeds]
        if strays:
            raise LthError(f"--geometry-seeds {', '.join(map(str, strays))} not among --seeds "
                           f"{', '.join(map(str, self.seeds))}")

    def instability_at(self) -> list[int]:
        """The levels of the instability pairs, at every rewind point."""
        chosen = (0, self.levels) if self.instability_levels is None else self.instability_levels
        return sorted({k % (self.levels + 1) for k in chosen})

    def rewinds(self) -> list[int]:
        return [self.rewind_iter] + ([0] if self.rewind_zero and self.rewind_iter != 0 else [])

    def strategies_at(self, rewind: int) -> tuple:
        return self.strategies if rewind == self.rewind_iter else self.rewind_zero_strategies

    def imp_config(self, seed: int, rewind: int) -> ImpConfig:
        """The run of `seed` at rewind point `rewind`; its test set is evaluated at the end only."""
        train = dataclasses.replace(self.train, seed=seed, rewind_iter=rewind, eval_every=self.train.epochs)
        return dataclasses.replace(self.imp, train=train)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "StudyConfig":
        """A stored study.json: nested as to_dict writes it, or flat (flag names) as earlier
        versions wrote it (fields they lacked take LEGACY_DEFAULTS; unknown ones are ignored)."""
        flat = {}
        for flag in settings.flat_fields(cls):
            if "imp" not in d:
                value = {**LEGACY_DEFAULTS, **STUDY_LEGACY, **d}.get(flag.name, flag)
            else:
                value = d if flag.name not in STUDY_LEGACY or flag.name in d else STUDY_LEGACY
                for name in flag.path:
                    value = value.get(name, flag) if isinstance(value, dict) else flag
            if value is not flag:
                flat[flag.name] = tuple(value) if isinstance(value, list) else value
        return settings.from_flags(cls, flat)
