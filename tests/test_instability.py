"""Instability (Frankle et al. 2020): the two copies of a pair start from the same weights,
mask and point of the same schedule and differ only in their data order; the first copy is
the stored imp:L, the second is trained once, stored, and reused."""
import dataclasses
import json

import pytest
import torch

from lthfast.cli import main as cli
from lthfast.config.runs import ImpConfig, TrainConfig
from lthfast.config.study import StudyConfig
from lthfast.data.loading import load_dataset
from lthfast.foundations.files import load_checkpoint, load_tensors
from lthfast.imp.driver import ImpRun
from lthfast.landscape import registry
from lthfast.landscape.runs import AnalysisRun
from lthfast.pruning import masks as pruning
from lthfast.study.plan import Study
from lthfast.study.presets import preset_config

# 256 synthetic images, batch 64: 4 steps an epoch; rewind at iteration 2 of 12.
TRAIN = dict(model="resnet8", data="synthetic", train_subset=256, batch_size=64, epochs=3, rewind_iter=2,
             eval_batch_size=256)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    config = ImpConfig(train=TrainConfig(**TRAIN), eval_train_images=256, bn_batches=2)
    imp_run = ImpRun(config, tmp_path_factory.mktemp("instability"), load_dataset("synthetic", train_subset=256))
    imp_run.chain("imp", 1)
    return imp_run


@pytest.mark.parametrize("level", [0, 1])
def test_the_two_copies_differ_only_in_their_data_order(run, level):
    copy = run.prepare("instability", level)
    imp = run.train_config("imp", level, rewind_iter=None)
    assert copy.job.config.data_seed != imp.effective_data_seed
    assert dataclasses.replace(copy.job.config, data_seed=imp.data_seed) == imp  # same recipe, same schedule
    assert copy.job.start_iteration == TRAIN["rewind_iter"]  # where imp:L starts (level 0: where the dense run passes)
    rewind = load_checkpoint(run.run.level("imp", 0).rewind)
    assert all(torch.equal(copy.job.initial_weights[n], rewind[n]) for n in rewind)
    if level == 0:
        assert copy.mask is None
    else:
        mask = pruning.unpack(load_tensors(run.run.level("imp", level).mask))
        assert all(torch.equal(copy.mask[n], mask[n]) for n in mask)


def test_the_second_copy_is_trained_once_with_the_first_copys_mask(run):
    folder = run.instability_copy(1)
    first, second = load_tensors(run.run.level("imp", 1).final), load_tensors(folder / "final.pt")
    mask = pruning.unpack(load_tensors(run.run.level("imp", 1).mask))
    assert any(not torch.equal(first[n], second[n]) for n in mask)  # another data order, other weights
    assert all(torch.all(second[n][~mask[n]] == 0) for n in mask)
    stamp = (folder / "final.pt").stat().st_mtime_ns
    assert run.instability_copy(1) == folder and (folder / "final.pt").stat().st_mtime_ns == stamp  # reused


def test_a_networks_barrier_with_itself_is_zero(run):
    opened = AnalysisRun(run.dir, device="cpu")
    entry = registry.get("instability")
    same = entry.compute(opened, [opened.solution("imp:1"), opened.solution("imp:1")], entry.settings(points=3,
                         bn_batches=2, train_images=64, test_images=64), None)["result"]
    assert same["barrier_test_error"] == 0 and same["barrier_train_loss"] == pytest.approx(0, abs=1e-6)


def test_the_command_trains_the_pair_once_and_prints_its_barrier(run, capsys):
    args = ["analyze", "instability", str(run.dir), "--level", "0", "--points", "3", "--bn-batches", "2",
            "--train-images", "64", "--test-images", "64", "--device", "cpu"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("imp:0 -> instability:0: barrier train loss") and "/analysis/instability/" in out
    assert cli.main(["analyze", "instability", str(run.dir)]) == 2
    assert "give --level" in capsys.readouterr().err


def test_a_study_plans_the_pairs_at_level_0_and_the_deepest_by_default():
    def copies(config):
        return sorted(j.key for j in Study(config, "/nonexistent").plan() if j.strategy == "instability")
    assert copies(preset_config("smoke", seeds=(0,), rewind_zero=False)) == ["seed0/R2/train instability:0",
                                                                             "seed0/R2/train instability:2"]
    assert copies(preset_config("smoke", seeds=(0,), rewind_zero=False, instability_levels=(-1,))) == \
        ["seed0/R2/train instability:2"]
    assert copies(preset_config("smoke", instability_levels=())) == []
    stored = json.loads(json.dumps(preset_config("smoke").to_dict()))
    del stored["instability_levels"]  # a study stored before instability existed measured none
    assert StudyConfig.from_dict(stored).instability_at() == []
