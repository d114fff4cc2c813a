"""Group commits (lthfast.store.level, "Group commits"): what several folders save as one is
whole or absent after a kill at any moment, so that a killed grouped stack resumes
bit-identically, as a loop stack does (tests/kill_campaign.py --stack-mode grouped checks it
with random kills of a whole study; these tests aim at the two windows directly).

  saving     a grouped stack's members save together (lthfast.training.member.save_together):
             a kill after some members' side files, or after some renames, must resume every
             member from the same joint save.
  recording  a stack's levels are recorded together (lthfast.imp.driver.record_together): a
             kill after some records must not let the scheduler form other stacks next.
"""
import dataclasses

import pytest
import torch

import lthfast.store.level as level_module
import lthfast.training.member as member_module
from lthfast.config.runs import TrainConfig
from lthfast.data.dataset import Dataset
from lthfast.data.loading import load_dataset
from lthfast.foundations.files import atomic_torch_save, atomic_write_json, load_tensors, read_json
from lthfast.store.level import Level, commit_records
from lthfast.study.executors import Execution
from lthfast.study.plan import Study
from lthfast.study.presets import preset_config
from lthfast.study.scheduler import execute
from lthfast.training.stack import TrainJob, train_stack

BASE = dict(model="resnet8", width=8, data="synthetic", train_subset=120, batch_size=32, eval_batch_size=256,
            precision="fp32", device="cpu")


class Crash(Exception):
    """Stands for a SIGKILL: nothing after it runs (no handler of lthfast writes on the way out)."""


def data():
    full = load_dataset("synthetic", train_subset=120)
    return Dataset(full.train_x, full.train_y, full.test_x[:100], full.test_y[:100])


def jobs(root):
    """Two members at different places in their epochs (4 steps an epoch, the last partial):
    a from 0 to 12 with its rewind point at 6, b from 2 to 16. They save together whenever one
    of them saves: at a's iterations 2, 4, 6, 8, 10, 12 (b's 4, 6, 8, ...); then b trains alone."""
    return [TrainJob(TrainConfig(**BASE, seed=0, epochs=3, rewind_iter=6), root / "a"),
            TrainJob(TrainConfig(**BASE, seed=1, epochs=4, data_seed=7), root / "b", start_iteration=2)]


def same_files(mine, theirs):
    for job, other in zip(mine, theirs):
        for name in ("final.pt", "rewind.pt"):
            if (other.folder / name).exists():
                a, b = load_tensors(job.folder / name), load_tensors(other.folder / name)
                assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), (job.folder, name)
        drop = ("train_seconds", "images_per_second", "eval_seconds")
        strip = [{k: ([{f: v for f, v in h.items() if f not in drop} for h in val] if k == "history" else val)
                  for k, val in read_json(j.folder / "metrics.json").items() if k not in drop} for j in (job, other)]
        assert strip[0] == strip[1], job.folder


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    root = tmp_path_factory.mktemp("whole")
    train_stack(jobs(root), data(), mode="grouped")
    return jobs(root)


@pytest.mark.parametrize("moment", ["writing", "renaming"])
def test_a_grouped_stack_killed_inside_a_joint_save_resumes_from_one_commit_bit_identically(
        tmp_path, monkeypatch, whole, moment):
    crashed = jobs(tmp_path)
    saves = []  # the joint save at a's iteration 6 (b's 8): a's rewind point and b's epoch end
    real_save, real_promote = member_module.Member.save_checkpoint, member_module.CHECKPOINTS.promote

    def save(self, optimizer, row, commit=None):
        if commit is not None and row == 0:
            saves.append(self.iteration)
        if moment == "writing" and saves == [2, 4, 6] and row == 1:
            raise Crash  # a's side file written, b's not
        real_save(self, optimizer, row, commit)

    def promote(level):
        real_promote(level)
        if moment == "renaming" and saves == [2, 4, 6]:
            raise Crash  # a's renamed over its checkpoint, b's still beside it

    monkeypatch.setattr(member_module.Member, "save_checkpoint", save)
    monkeypatch.setattr(member_module, "CHECKPOINTS", dataclasses.replace(member_module.CHECKPOINTS, promote=promote))
    with pytest.raises(Crash):
        train_stack(crashed, data(), mode="grouped")
    monkeypatch.undo()
    a, b = (Level(j.folder) for j in crashed)
    if moment == "writing":
        assert a.checkpoint_next.exists() and not b.checkpoint_next.exists()
        assert not a.rewind.exists()  # it follows the commit
    else:
        assert not a.checkpoint_next.exists() and b.checkpoint_next.exists()
    before = {j.folder.name: load_tensors(Level(j.folder).checkpoint)["state"]["iteration"] for j in crashed}
    assert before == ({"a": 4, "b": 6} if moment == "writing" else {"a": 6, "b": 6})

    steps = []
    train_stack(crashed, data(), mode="grouped", on_iteration=lambda index, iteration: steps.append((index, iteration)))
    # Both members resume from the same joint save: the last whole one (writing) or the one being renamed.
    assert steps[:2] == ([(0, 5), (1, 7)] if moment == "writing" else [(0, 7), (1, 9)])
    assert not any(Level(j.folder).checkpoint_next.exists() for j in crashed)
    same_files(crashed, whole)


def finished_level(folder):
    """A level 0 whose trainer's files and mask are there: only its record is missing."""
    files = Level(folder, kind="dense")
    atomic_torch_save({"w": torch.zeros(1)}, files.final)
    atomic_torch_save({"w": torch.ones(1, dtype=torch.bool)}, files.mask)
    atomic_write_json({"finished": True}, files.metrics)
    return files


@pytest.mark.parametrize("written", [0, 1, 2])
def test_a_stacks_records_are_finished_all_or_none(tmp_path, monkeypatch, written):
    levels = [finished_level(tmp_path / name) for name in ("x", "y", "z")]
    records = [(files, {"level": 0, "name": files.folder.name}) for files in levels]
    writes = []

    def write(obj, path):
        if len(writes) == written:
            raise Crash
        writes.append(path.name)
        atomic_write_json(obj, path)

    monkeypatch.setattr(level_module, "atomic_write_json", write)
    with pytest.raises(Crash):
        commit_records(records)
    monkeypatch.undo()
    assert writes == ["level.json.next"] * written and not any(f.finished() for f in levels)
    commit_records(records)  # the command run again records them again
    assert all(f.finished() and f.read_record() == r for f, r in records)
    assert not any(f.record_next.exists() for f in levels)


def test_a_kill_during_promotion_leaves_every_record_finished(tmp_path, monkeypatch):
    levels = [finished_level(tmp_path / name) for name in ("x", "y", "z")]
    records = [(files, {"level": 0, "name": files.folder.name}) for files in levels]
    real = level_module.atomic_write_json

    def write(obj, path):
        if path.name == "level.json" and (tmp_path / "x" / "level.json").exists():
            raise Crash  # x promoted, y and z still side files
        real(obj, path)

    monkeypatch.setattr(level_module, "atomic_write_json", write)
    with pytest.raises(Crash):
        commit_records(records)
    monkeypatch.undo()
    assert levels[1].record_next.exists() and not levels[1].record.exists()
    assert all(f.finished() and f.read_record() == r for f, r in records)  # finished() promotes them
    assert not any(f.record_next.exists() for f in levels)


def two_level_study(root):
    """imp and random-prune (each its own chain) at one rewind point: the stacks are [imp:0],
    [imp:1, random-prune:1] and [imp:2, random-prune:2], trained grouped."""
    config = preset_config("smoke", seeds=(0,), strategies=("imp", "random-prune"), rewind_zero=False,
                           instability_levels=(), sharpness_levels=())
    study = Study(config, root)
    return study, [j for j in study.plan() if j.kind == "train"]


def test_a_kill_between_a_stacks_records_forms_the_same_next_stacks(tmp_path, monkeypatch):
    study, trainings = two_level_study(tmp_path / "whole")
    execute(study, trainings, Execution(stack_mode="grouped"))

    killed, trainings = two_level_study(tmp_path / "killed")
    real, records = level_module.atomic_write_json, []

    def write(obj, path):
        if path.name.startswith("level.json") and "level_01" in str(path):
            records.append(path)
            if len(records) == 2:
                raise Crash  # imp:1's record written, random-prune:1's not
        real(obj, path)

    monkeypatch.setattr(level_module, "atomic_write_json", write)
    with pytest.raises(Crash):
        execute(killed, trainings, Execution(stack_mode="grouped"))
    monkeypatch.undo()
    # Neither level 1 is finished: imp:2 waits for random-prune:1 instead of training without random-prune:2.
    assert not any(j.done() for j in trainings if j.level == 1)
    execute(killed, trainings, Execution(stack_mode="grouped"))
    for level in (1, 2):
        for strategy in ("imp", "random-prune"):
            mine, theirs = (s.imp_run(0, s.config.rewind_iter).level_dir(strategy, level) for s in (killed, study))
            a, b = load_tensors(mine / "final.pt"), load_tensors(theirs / "final.pt")
            assert all(torch.equal(a[k], b[k]) for k in a), (strategy, level)
