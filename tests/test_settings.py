"""Every setting declared once: a study is composed of its runs' and analyses' settings, its
flags are derived from them (prefixed where the part has a prefix), and a stored study reads
back equal, whether stored nested or in the earlier flat layout."""
import json
from dataclasses import fields

import pytest

from lthfast.config.analyses import CurveSettings, SharpnessSettings, VolumeSettings
from lthfast.config.runs import ImpConfig, TrainConfig
from lthfast.config.study import StudyConfig
from lthfast.foundations import settings
from lthfast.foundations.errors import LthError
from lthfast.study.presets import PRESETS, preset_config

FLAGS = {flag.name: flag for flag in settings.flat_fields(StudyConfig)}


def test_study_flags_come_from_the_parts_declarations_with_their_help_and_range():
    for part, prefix in ((TrainConfig, ""), (ImpConfig, ""), (CurveSettings, "curve_"), (VolumeSettings, "volume_"),
                         (SharpnessSettings, "sharpness_")):
        for field in fields(part):
            if "setting" not in field.metadata or prefix + field.name not in FLAGS:
                continue
            flag = FLAGS[prefix + field.name]
            assert flag.meta is field.metadata["setting"]  # the one declaration, not a copy
    # every flag of the earlier flat StudyConfig keeps its name
    for name in ("model", "width", "data", "data_dir", "train_subset", "seeds", "epochs", "batch_size", "lr",
                 "milestones", "levels", "prune_fraction", "rewind_iter", "rewind_zero", "strategies",
                 "rewind_zero_strategies", "eval_train_images", "eval_test_images", "bn_batches", "curve_points",
                 "curve_train_images", "curve_test_images", "volume_directions", "volume_train_images",
                 "volume_bisections", "volume_delta", "sharpness_images", "sharpness_products",
                 "sharpness_trace_samples", "geometry_seeds", "sharpness_levels", "eps_margin", "precision",
                 "device", "backend"):
        assert name in FLAGS, name
    # set per run or derived, never a flag of the study
    assert not {"seed", "data_seed", "eval_every", "curve_bn_batches"} & set(FLAGS)
    assert FLAGS["milestones"].default == (80, 120) and TrainConfig().milestones is None


def test_a_bad_value_names_the_prefixed_flag():
    with pytest.raises(LthError, match="--curve-points must be an integer >= 2"):
        preset_config("smoke", curve_points=1)
    with pytest.raises(LthError, match="--volume-delta must be a positive number"):
        preset_config("smoke", volume_delta=0.0)
    with pytest.raises(LthError, match="--prune-fraction must be in"):
        preset_config("smoke", prune_fraction=1.5)
    with pytest.raises(LthError, match="unknown study settings: curve_pints"):
        preset_config("smoke", curve_pints=3)


def test_parts_follow_the_study_values_and_each_run_gets_its_seed_and_rewind_point():
    config = preset_config("smoke", bn_batches=3, curve_points=5, seeds=(4, 7))
    assert config.curve.bn_batches == config.imp.bn_batches == 3 and config.curve.points == 5
    run = config.imp_config(7, 0)
    assert (run.train.seed, run.train.rewind_iter, run.train.eval_every) == (7, 0, config.train.epochs)
    assert run.bn_batches == 3 and run.train.model == "resnet8"


@pytest.mark.parametrize("name", list(PRESETS))
def test_a_stored_study_reads_back_equal_nested_and_flat(name):
    config = preset_config(name, precision="fp32")
    assert StudyConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    flat = json.loads(json.dumps(settings.to_flags(config)))  # the layout earlier versions stored
    assert StudyConfig.from_dict(flat) == config
    assert StudyConfig.from_dict({k: v for k, v in flat.items() if k != "precision"}).train.precision == "fp32"
