"""Baselines on one parent (docs/protocol.md, "Quantities"; lthfast.landscape.oneparent): IMP's
theta_{k-1} pruned to level k's density by smallest magnitude (IMP's own m_k and b_k), largest
magnitude and at random, with no training, evaluated as IMP evaluates its baselines."""
import types

import pytest
import torch

from lthfast.cli import main as cli
from lthfast.foundations.files import read_json
from lthfast.landscape import oneparent, registry
from lthfast.landscape.runs import AnalysisRun
from lthfast.pruning import masks as pruning
from lthfast.study.executors import Execution
from lthfast.study.plan import Study
from lthfast.study.presets import preset_config
from lthfast.study.scheduler import execute

ONE_SEED = dict(seeds=(0,), rewind_zero=False)  # the smoke preset: 2 levels, late rewind point R = 2


def closure(jobs, keys):
    """The jobs named and every job they depend on, in plan order."""
    by_key, wanted = {j.key: j for j in jobs}, set()

    def add(key):
        if key not in wanted:
            wanted.add(key)
            for dep in by_key[key].deps:
                add(dep)
    for key in keys:
        add(key)
    return [j for j in jobs if j.key in wanted]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """A planned smoke study run as far as its one-parent jobs need, and imp:2 and
    random-prune:1 besides (their stored masks and baselines are compared below)."""
    root = tmp_path_factory.mktemp("oneparent")
    study = Study(preset_config("smoke", **ONE_SEED), root)
    study.save_config()
    jobs = study.plan()
    chosen = [j.key for j in jobs if j.kind == "one-parent"] + ["seed0/R2/train imp:2",
                                                                 "seed0/R2/train random-prune:1"]
    execute(study, closure(jobs, chosen), Execution(stack_mode="loop"))
    return study, jobs, AnalysisRun(study.run_folder(0, 2), device="cpu")


def result(run, k):
    return oneparent.one_parent(run, [run.solution(f"imp:{k - 1}")])["result"]


def test_a_study_plans_one_parent_at_the_late_rewind_point_and_its_jobs_finish(smoke):
    _, jobs, _ = smoke
    planned = [j for j in jobs if j.kind == "one-parent"]
    assert [j.key for j in planned] == ["seed0/R2/one-parent imp:0", "seed0/R2/one-parent imp:1"]
    assert [j.deps for j in planned] == [["seed0/R2/train imp:0"], ["seed0/R2/train imp:1"]]  # no training of its own
    assert all(j.done() for j in planned)
    both = Study(preset_config("smoke"), "/nonexistent").plan()  # two seeds, both rewind points
    assert sorted(j.key for j in both if j.kind == "one-parent") == [
        f"seed{s}/R2/one-parent imp:{k}" for s in (0, 1) for k in (0, 1)]  # none at R = 0
    config = preset_config("smoke")  # a job's fixed cost + 4 networks x (2 x 128 images + 2 BN batches of 32)
    rates = types.SimpleNamespace(eval_image=1.0, bn_image=2.0, job_seconds=3.0)
    assert registry.get("one-parent").cost(None, config, rates) == 3 + 4 * (2 * 128 * 1 + 2 * 32 * 2)


@pytest.mark.parametrize("k", [1, 2])
def test_smallest_is_imps_own_mask_and_baseline(smoke, k):
    _, _, run = smoke
    masks = oneparent.load_masks(run, k)
    stored = run.solution(f"imp:{k}").load()[1]
    assert masks["smallest"].keys() == stored.keys()
    assert all(torch.equal(masks["smallest"][n], stored[n]) for n in stored)
    record, parent = (read_json(run.level("imp", j).record) for j in (k, k - 1))
    r = result(run, k)
    for key in ("train_loss", "train_accuracy", "train_loss_bn_recomputed", "train_accuracy_bn_recomputed"):
        assert r["baselines"]["smallest"][key] == record["baseline"][key], key  # the same evaluation, bit for bit
    assert r["parent"]["train_loss"] == parent["train_loss"]  # theta_{k-1} with its stored statistics
    assert r["baselines"]["smallest"]["collapsed_layers"] == record["collapsed_layers"]


@pytest.mark.parametrize("k", [1, 2])
def test_every_mask_keeps_imps_count_and_drops_what_its_rule_says(smoke, k):
    _, _, run = smoke
    weights, parent_mask = run.solution(f"imp:{k - 1}").load()
    kept = pruning.target_kept(pruning.total_count(parent_mask), run.config.prune_fraction, k)
    masks = oneparent.load_masks(run, k)
    assert kept == pruning.kept_count(run.solution(f"imp:{k}").load()[1])
    r = result(run, k)
    assert r["kept_weights"] == kept and r["level"] == k
    magnitude = torch.cat([weights[n].abs().flatten() for n in parent_mask])
    was_kept = torch.cat([parent_mask[n].flatten() for n in parent_mask])
    for rule, mask in masks.items():
        now = torch.cat([mask[n].flatten() for n in parent_mask])
        assert pruning.kept_count(mask) == kept == r["baselines"][rule]["kept_weights"], rule
        assert r["baselines"][rule]["density"] == pytest.approx(kept / pruning.total_count(parent_mask))
        assert not (now & ~was_kept).any(), rule  # only the parent's weights
        dropped = was_kept & ~now
        if rule == "largest":  # every kept weight is at most every dropped one
            assert magnitude[now].max() <= magnitude[dropped].min()
        if rule == "smallest":
            assert magnitude[now].min() >= magnitude[dropped].max()


def test_the_random_mask_is_seeded_reproducible_and_differs_from_the_others(smoke):
    _, _, run = smoke
    for k in (1, 2):
        first, again = oneparent.load_masks(run, k), oneparent.load_masks(run, k)
        assert all(torch.equal(first["random"][n], again["random"][n]) for n in first["random"])
        for other in ("smallest", "largest"):
            assert any(not torch.equal(first["random"][n], first[other][n]) for n in first["random"]), other
        assert result(run, k)["random_seed"] == run.config.train.seed * 1_000_003 + k
    # At k = 1 both prune the dense network with the same seed: random-prune's own m_1.
    stored = run.solution("random-prune:1").load()[1]
    assert all(torch.equal(oneparent.load_masks(run, 1)["random"][n], stored[n]) for n in stored)


def test_the_document_and_its_summary(smoke):
    _, _, run = smoke
    r = result(run, 2)
    assert set(r) == {"level", "prunable_weights", "kept_weights", "density", "random_seed", "train_images",
                      "bn_batches", "parent", "baselines"}
    assert r["train_images"] == run.config.eval_train_images and r["bn_batches"] == run.config.bn_batches
    assert set(r["baselines"]) == {"smallest", "largest", "random"}
    parent = r["parent"]
    for rule, b in r["baselines"].items():
        assert b["damage"] == b["train_loss_bn_recomputed"] - parent["train_loss_bn_recomputed"], rule
        assert isinstance(b["collapsed_layers"], list) and 0 <= b["train_accuracy"] <= 1
    summary = registry.get("one-parent").summary(r)
    assert summary == {"smallest_train_accuracy": r["baselines"]["smallest"]["train_accuracy_bn_recomputed"],
                       "largest_train_accuracy": r["baselines"]["largest"]["train_accuracy_bn_recomputed"],
                       "random_train_accuracy": r["baselines"]["random"]["train_accuracy_bn_recomputed"],
                       "smallest_damage": r["baselines"]["smallest"]["damage"],
                       "largest_damage": r["baselines"]["largest"]["damage"],
                       "random_damage": r["baselines"]["random"]["damage"],
                       "parent_train_loss": parent["train_loss_bn_recomputed"]}


def test_the_analyze_command_runs_on_a_stored_run(smoke, capsys):
    _, _, run = smoke
    stored = {k: read_json(p) for k, p in ((k, run.result_path("one-parent", [f"imp:{k - 1}"], {})) for k in (1, 2))}
    assert cli.main(["analyze", "one-parent", str(run.folder), "--successive", "imp", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[:2] for line in lines] == [["imp", "0"], ["imp", "1"]]
    assert all("smallest_train_accuracy" in line and "random_damage" in line for line in lines)
    args = ["analyze", "one-parent", str(run.folder), "--a", "imp:1", "--b", "imp:2", "--device", "cpu"]
    assert cli.main(args + ["--force"]) == 0  # computed again: the same numbers
    assert read_json(run.result_path("one-parent", ["imp:1"], {}))["result"] == stored[2]["result"]
    capsys.readouterr()
    for a, b, message in (("imp:0", "imp:2", "density of imp:1"), ("imp:1:baseline", "imp:2", "IMP solution")):
        assert cli.main(["analyze", "one-parent", str(run.folder), "--a", a, "--b", b, "--device", "cpu"]) == 2
        assert message in capsys.readouterr().err
