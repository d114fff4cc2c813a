"""What a study is: StudyConfig (every value of STUDY.md's study), its presets, and the
configs of the IMP runs and analyses it implies. The planner (lthfast.study) runs it; the
report (lthfast.report) reads what it stored.

Rewind points: the late one (rewind_iter, default 2000 for ResNet and 1000 for VGG) runs
every strategy; R = 0 (the original lottery-ticket reset) runs `rewind_zero_strategies`.
Each (seed, rewind point) is one IMP run folder ROOT/imp_<hash>.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from lthfast import settings, strategies
from lthfast.analysis import CurveSettings
from lthfast.config import DEFAULT_REWIND_ITER, LEGACY_DEFAULTS, PRECISIONS, SEED_MAX, ImpConfig, TrainConfig
from lthfast.errors import LthError
from lthfast.hardware import resolve_precision
from lthfast.geometry import SharpnessSettings, VolumeSettings
from lthfast.data import SIZES
from lthfast.models import parse_model_name, prunable_count
from lthfast.pruning import check_levels
from lthfast.ops import BACKENDS
from lthfast.settings import setting
from lthfast.storage import read_json
from lthfast.store import Store


@dataclass
class StudyConfig:
    """Every value of a study; a preset fills them, any flag overrides one."""
    model: str = setting("resnet20", "resnet20 or vgg16 (any resnet<6n+2>, vgg11/13/16/19).", kind="str")
    width: int | None = setting(None, "base width (ResNet default 16, VGG 64).", minimum=1)
    data: str = setting("cifar10", "cifar10 or synthetic.", kind="str", choices=("cifar10", "synthetic"))
    data_dir: str | None = setting(None, "CIFAR-10 in ImageFolder layout (default: torchvision's download).",
                                   kind="str")
    train_subset: int | None = setting(None, "class-balanced training subset (default: all 50,000).", minimum=10)
    seeds: tuple = setting((0, 1, 2), "seeds, comma-separated.", kind="ints", minimum=0, maximum=SEED_MAX)
    epochs: int = setting(160, "training epochs.", minimum=1)
    batch_size: int = setting(128, "images per step.", minimum=1)
    lr: float = setting(0.1, "peak learning rate.", kind="float", minimum=0.0)
    milestones: tuple | None = setting((80, 120), "epochs where the lr drops x0.1.", kind="ints", minimum=1)
    levels: int = setting(16, "pruning levels (0.8^16 = 2.8% density).", minimum=1)
    prune_fraction: float = setting(0.2, "fraction of the remaining weights pruned per level.", kind="float",
                                    positive=True, below=1)
    rewind_iter: int | None = setting(None, "the late rewind point (default: 2000 for ResNet, 1000 for VGG).",
                                      minimum=0)
    rewind_zero: bool = setting(True, "also the R = 0 study.", kind="bool")
    strategies: tuple = setting(strategies.STUDY_STRATEGIES, "strategies at the late rewind point.", kind="strs")
    rewind_zero_strategies: tuple = setting(("imp",), "strategies at R = 0.", kind="strs")
    eval_train_images: int = setting(10_000, "fixed training sample of every stored train loss.", minimum=1)
    eval_test_images: int | None = setting(None, "test images of baselines and solutions (default: all).", minimum=1)
    bn_batches: int = setting(40, "training batches for recomputed BatchNorm statistics.", minimum=1)
    curve_points: int = setting(21, "interpolation grid points.", minimum=2)
    curve_train_images: int = setting(10_000, "training images of each curve.", minimum=1)
    curve_test_images: int | None = setting(None, "test images of each curve (default: all).", minimum=1)
    volume_directions: int = setting(64, "random directions of each volume.", minimum=1)
    volume_train_images: int = setting(10_000, "training images of each volume.", minimum=1)
    volume_bisections: int = setting(10, "bisections of each basin radius.", minimum=0)
    volume_delta: float = setting(0.1, "loss rise that bounds a basin.", kind="float", positive=True)
    sharpness_images: int = setting(4096, "training images of each sharpness.", minimum=1)
    sharpness_products: int = setting(200, "Hessian-vector products of each eigenvalue pair, at most.", minimum=4)
    sharpness_trace_samples: int = setting(50, "Rademacher vectors of each trace.", minimum=1)
    geometry_seeds: tuple | None = setting(None, "seeds whose IMP levels get volume and sharpness (default: all).",
                                           kind="ints", minimum=0, maximum=SEED_MAX)
    sharpness_levels: tuple | None = setting(None, "IMP levels with sharpness, -1 the last (default: all; empty: "
                                             "none; the costliest analysis).", kind="ints")
    eps_margin: float = setting(0.1, "relative margin of the sublevel threshold eps.", kind="float", minimum=0.0)
    precision: str = setting("auto", "fp32, bf16 or auto (bf16 where the device runs it natively); stored resolved.",
                             kind="str", choices=PRECISIONS)
    device: str = setting("auto", "auto, cpu or cuda[:N].", kind="str")
    backend: str = setting("auto", "kernel backend.", kind="str", choices=BACKENDS)

    def __post_init__(self):
        settings.check(self)
        parse_model_name(self.model, self.width)
        self.precision = resolve_precision(self.precision, self.device)
        if self.sharpness_levels is not None and not all(-self.levels - 1 <= k <= self.levels
                                                         for k in self.sharpness_levels):
            raise LthError(f"--sharpness-levels must lie in 0..{self.levels} (or -1 for the last), "
                           f"got {self.sharpness_levels}")
        if not self.seeds:
            raise LthError("--seeds must name at least one seed")
        for s in self.strategies + self.rewind_zero_strategies:
            strategies.get(s)
        if "imp" not in self.strategies:
            raise LthError("--strategies must include imp: every other strategy is compared with it")
        if self.rewind_iter is None:
            self.rewind_iter = DEFAULT_REWIND_ITER[parse_model_name(self.model, self.width)[0]]
        self._check_plan()
        # Settings are checked where they are used; build them once here so a bad value fails now.
        self.curve_settings(), self.volume_settings(), self.sharpness_settings()
        for seed in self.seeds:
            for rewind in self.rewinds():
                self.imp_config(seed, rewind)

    def _check_plan(self) -> None:
        """Plans that cannot finish fail now, before the first training."""
        check_levels(prunable_count(self.model, self.width), self.prune_fraction, self.levels)
        total = self.epochs * math.ceil((self.train_subset or SIZES[self.data][0]) / self.batch_size)
        if self.rewind_iter > total:
            raise LthError(f"--rewind-iter {self.rewind_iter} is past the end of training ({total} iterations)")
        strays = [s for s in self.geometry_seeds or () if s not in self.seeds]
        if strays:
            raise LthError(f"--geometry-seeds {', '.join(map(str, strays))} not among --seeds "
                           f"{', '.join(map(str, self.seeds))}")

    def rewinds(self) -> list[int]:
        return [self.rewind_iter] + ([0] if self.rewind_zero and self.rewind_iter != 0 else [])

    def strategies_at(self, rewind: int) -> tuple:
        return self.strategies if rewind == self.rewind_iter else self.rewind_zero_strategies

    def imp_config(self, seed: int, rewind: int) -> ImpConfig:
        train = TrainConfig(model=self.model, width=self.width, data=self.data, data_dir=self.data_dir,
                            train_subset=self.train_subset, epochs=self.epochs, batch_size=self.batch_size,
                            lr=self.lr, milestones=self.milestones, seed=seed, rewind_iter=rewind,
                            eval_every=self.epochs, precision=self.precision, device=self.device,
                            backend=self.backend)
        return ImpConfig(train=train, prune_fraction=self.prune_fraction, eval_train_images=self.eval_train_images,
                         eval_test_images=self.eval_test_images, bn_batches=self.bn_batches)

    def curve_settings(self) -> CurveSettings:
        return CurveSettings(points=self.curve_points, bn_batches=self.bn_batches,
                             train_images=self.curve_train_images, test_images=self.curve_test_images)

    def volume_settings(self) -> VolumeSettings:
        return VolumeSettings(directions=self.volume_directions, delta=self.volume_delta,
                              train_images=self.volume_train_images, bisections=self.volume_bisections)

    def sharpness_settings(self) -> SharpnessSettings:
        return SharpnessSettings(images=self.sharpness_images, products=self.sharpness_products,
                                 trace_samples=self.sharpness_trace_samples)

    def analysis_settings(self, what: str) -> dict:
        """The settings (as stored) of the study's analyses of kind `what`."""
        made = {"interpolate": self.curve_settings, "prune-path": self.curve_settings,
                "volume": self.volume_settings, "sharpness": self.sharpness_settings}
        return asdict(made[what]()) if what in made else {}

    def run_folder(self, root, seed: int, rewind: int):
        return Store(root).run_folder(self.imp_config(seed, rewind))

    def to_dict(self) -> dict:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "StudyConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in {**LEGACY_DEFAULTS, **d}.items()
                      if k in known})


PRESETS = {
    # STUDY.md's recipe: 160 epochs, levels to 2.8% density, 3 seeds. Meant for a GPU.
    "paper-resnet20": dict(model="resnet20"),
    "paper-vgg16": dict(model="vgg16"),
    # A 2-core CPU in under an hour: ResNet-20 on a 5,000-image class-balanced subset, 4 epochs,
    # 3 levels (density 0.51), one seed: too little to decide a finding (one seed has no noise
    # estimate), a quick check of the whole path. No sharpness: a Hessian-vector product over
    # STUDY.md's 4,096 images costs about a minute here, it cost 26% of this preset's time and
    # no finding's test uses it (`python -m lthfast analyze sharpness` computes it on demand).
    "cpu": dict(model="resnet20", train_subset=5000, epochs=4, milestones=(3,), levels=3, seeds=(0,),
                rewind_iter=40, eval_train_images=1000, eval_test_images=2000, bn_batches=8,
                curve_points=9, curve_train_images=1000, curve_test_images=1000,
                volume_directions=8, volume_train_images=500, volume_bisections=6, sharpness_levels=()),
    # Decides at CPU scale: the cpu preset's recipe for 10 epochs (milestones at 50% and 80%,
    # as the paper's 80/120 of 160), 3 seeds, and every evaluation on more images. Sized by
    # `python -m lthfast power --root R --seeds 3` on the cpu preset run with seeds 0,1,2
    # (bf16, Intel Xeon with AMX, 2 cores): 28 of 40 comparisons exceed two standard errors
    # with 3 seeds; those of findings 4, 5 and 7 do not (z 1.0 to 1.1: e.g. the baseline train
    # accuracy of imp:2 - oneshot:2, +1.57 points with a seed spread of 2.4). That spread is
    # the evaluation sample's: an accuracy on 1,000 images has a binomial standard deviation of
    # up to 1.6 points, 2.2 for a difference of two, and on 2,000 test images 1.1 (1.6): so the
    # train sample is the whole 5,000-image subset, the test sample all 10,000 images, and the
    # curves use twice the cpu preset's images, which cuts that noise by sqrt(5) where it
    # dominates; 10 epochs instead of 4 let IMP and fine-tuning separate. Run to the end with
    # --workers 2 on a quiet 2-core Xeon with AMX (CPU model 167): 54.5 minutes, 6 of 7 findings
    # decided at R = 40 (the cpu preset: 3 of 7); README gives the verdicts.
    "cpu-3seed": dict(model="resnet20", train_subset=5000, epochs=10, milestones=(5, 8), levels=3, seeds=(0, 1, 2),
                      rewind_iter=40, eval_train_images=5000, eval_test_images=None, bn_batches=8,
                      curve_points=9, curve_train_images=2000, curve_test_images=2000,
                      volume_directions=8, volume_train_images=500, volume_bisections=6, sharpness_levels=()),
    # Synthetic data and a tiny ResNet: every job of the study in minutes, for tests.
    "smoke": dict(model="resnet8", width=8, data="synthetic", train_subset=128, epochs=2, batch_size=32,
                  milestones=(1,), levels=2, seeds=(0, 1), rewind_iter=2, eval_train_images=128,
                  eval_test_images=128, bn_batches=2, curve_points=3, curve_train_images=64, curve_test_images=64,
                  volume_directions=2, volume_train_images=64, volume_bisections=2, sharpness_images=64,
                  sharpness_products=30, sharpness_trace_samples=2),
}


def preset_config(name: str, **overrides) -> StudyConfig:
    if name not in PRESETS:
        raise LthError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return StudyConfig(**{**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}})


def load_study_config(root) -> StudyConfig:
    path = Store(root).study_config
    if not path.exists():
        raise LthError(f"no study under {root} (no study.json); run `python -m lthfast study` first")
    return StudyConfig.from_dict(read_json(path))
