"""Named studies: each preset is a set of flag values (any flag given with it overrides one).
What each preset costs and decided where it was run is in the README ("The main job"), with
the command that measured it; the reasons for each value stand beside it here."""
from __future__ import annotations

from lthfast.config.study import StudyConfig
from lthfast.foundations import settings
from lthfast.foundations.errors import LthError
from lthfast.pruning.strategies import STUDY_STRATEGIES

PRESETS = {
    # docs/protocol.md's recipe: 160 epochs, levels to 2.8% density, 3 seeds, every strategy and
    # learning-rate rewinding beside them (Renda et al. 2020's recommended method). For a GPU.
    "paper-resnet20": dict(model="resnet20", strategies=STUDY_STRATEGIES + ("lr-rewind",)),
    "paper-vgg16": dict(model="vgg16", strategies=STUDY_STRATEGIES + ("lr-rewind",)),
    # A quick check of the whole path on a 2-core CPU: ResNet-20 on a 5,000-image
    # class-balanced subset, 4 epochs, 3 levels (density 0.51), one seed, which cannot decide
    # a finding (one seed has no noise estimate). No sharpness: no finding's test uses it, and
    # `python -m lthfast analyze sharpness` computes it on demand.
    "cpu": dict(model="resnet20", train_subset=5000, epochs=4, milestones=(3,), levels=3, seeds=(0,),
                rewind_iter=40, eval_train_images=1000, eval_test_images=2000, bn_batches=8,
                curve_points=9, curve_train_images=1000, curve_test_images=1000,
                volume_directions=8, volume_train_images=500, volume_bisections=6, sharpness_levels=()),
    # The cpu recipe sized to decide: 10 epochs (milestones at 50% and 80%, as the paper's 80
    # and 120 of 160) so that IMP and fine-tuning separate, 3 seeds, and evaluation samples
    # large enough that their binomial noise does not hide the effects `python -m lthfast
    # power` measured on the cpu preset with 3 seeds: an accuracy on 1,000 images varies by up
    # to 1.6 points, so the train sample is the whole subset, the test sample all 10,000
    # images, and the curves use twice the cpu preset's images.
    "cpu-3seed": dict(model="resnet20", train_subset=5000, epochs=10, milestones=(5, 8), levels=3, seeds=(0, 1, 2),
                      rewind_iter=40, eval_train_images=5000, eval_test_images=None, bn_batches=8,
                      curve_points=9, curve_train_images=2000, curve_test_images=2000,
                      volume_directions=8, volume_train_images=500, volume_bisections=6, sharpness_levels=()),
    # Converged networks on a 2-core CPU (docs/protocol.md, "Deciding a finding": the findings are
    # statements about trained networks, >= 98% train accuracy). Sized by a pilot on a 2-core
    # Intel Xeon (AMX-BF16), README "The main job": with augmentation ResNet-20 reached 70% train
    # accuracy on 2,000 images in 40 epochs, so 98% is out of reach in the time; without it, 1,000
    # images reach 99.6% in 30 epochs (milestones 15 and 24). 5 levels (density 0.33), 5 seeds,
    # every strategy, lr-rewind and the instability copies; R = 24, 10% of training as in cpu.
    "cpu-converged": dict(model="resnet20", train_subset=1000, augment=False, epochs=30, milestones=(15, 24),
                          levels=5, seeds=(0, 1, 2, 3, 4), rewind_iter=24,
                          strategies=STUDY_STRATEGIES + ("lr-rewind",), eval_train_images=1000,
                          eval_test_images=None, bn_batches=8, curve_points=9, curve_train_images=1000,
                          curve_test_images=2000, volume_directions=8, volume_train_images=500,
                          volume_bisections=6, sharpness_levels=()),
    # Synthetic data and a tiny ResNet: every job of the study in minutes, for tests.
    "smoke": dict(model="resnet8", width=8, data="synthetic", train_subset=128, epochs=2, batch_size=32,
                  milestones=(1,), levels=2, seeds=(0, 1), rewind_iter=2, eval_train_images=128,
                  eval_test_images=128, bn_batches=2, curve_points=3, curve_train_images=64, curve_test_images=64,
                  volume_directions=2, volume_train_images=64, volume_bisections=2, sharpness_images=64,
                  sharpness_products=30, sharpness_trace_samples=2),
}


def preset_config(name: str, **overrides) -> StudyConfig:
    """The preset `name` with `overrides` (flag names; None keeps the preset's value);
    LthError for an unknown preset or a bad value."""
    if name not in PRESETS:
        raise LthError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    unknown = set(overrides) - {flag.name for flag in settings.flat_fields(StudyConfig)}
    if unknown:
        raise LthError(f"unknown study settings: {', '.join(sorted(unknown))}")
    return settings.from_flags(StudyConfig, {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}})
