import json

import pytest
import torch

from lthfast.config.runs import ImpConfig, TrainConfig
from lthfast.data.loading import load_dataset
from lthfast.foundations.errors import LthError
from lthfast.foundations.files import load_tensors
from lthfast.imp.driver import ImpRun
from lthfast.pruning import masks as pruning
from lthfast.store.layout import Store

# 256 synthetic images, batch 64: 4 steps an epoch; rewind at iteration 2 of 12.
TRAIN = dict(model="resnet8", data="synthetic", train_subset=256, batch_size=64, epochs=3,
             rewind_iter=2, eval_batch_size=256)


def make_run(root, on_iteration=None, **train_overrides):
    config = ImpConfig(train=TrainConfig(**{**TRAIN, **train_overrides}), eval_train_images=256, bn_batches=2)
    data = load_dataset("synthetic", train_subset=256)
    return ImpRun(config, root, data, on_iteration=on_iteration)


def mask_of(folder):
    return pruning.unpack(load_tensors(folder / "mask.pt"))


def level_record(folder):
    return json.loads((folder / "level.json").read_text())


@pytest.fixture(scope="module")
def imp_chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("imp")
    run = make_run(root)
    return root, run, run.chain("imp", 3)


def test_density_is_0_8_to_the_k_and_masks_only_shrink(imp_chain):
    _, _, folders = imp_chain
    total = pruning.total_count(mask_of(folders[0]))
    previous = None
    for k, folder in enumerate(folders):
        mask = mask_of(folder)
        assert abs(pruning.kept_count(mask) - total * 0.8 ** k) <= 1
        assert level_record(folder)["kept_weights"] == pruning.kept_count(mask)
        if previous is not None:
            assert all(not (mask[n] & ~previous[n]).any() for n in mask)
        previous = mask


def test_pruned_weights_are_zero_after_retraining(imp_chain):
    _, _, folders = imp_chain
    for folder in folders[1:]:
        final = load_tensors(folder / "final.pt")
        for name, keep in mask_of(folder).items():
            assert torch.all(final[name][~keep] == 0), (folder, name)


def test_imp_prunes_the_smallest_weights_of_the_previous_solution(imp_chain):
    _, _, folders = imp_chain
    theta_1 = load_tensors(folders[1] / "final.pt")
    m1, m2 = mask_of(folders[1]), mask_of(folders[2])
    expected = pruning.prune_magnitude(theta_1, m1, pruning.kept_count(m1) - pruning.kept_count(m2))
    assert all(torch.equal(expected[n], m2[n]) for n in m2)


def test_baseline_is_the_previous_solution_under_the_new_mask(imp_chain):
    _, _, folders = imp_chain
    theta_1 = load_tensors(folders[1] / "final.pt")
    baseline = load_tensors(folders[2] / "baseline.pt")
    for name, keep in mask_of(folders[2]).items():
        assert torch.equal(baseline[name], torch.where(keep, theta_1[name], torch.zeros_like(theta_1[name])))
    record = level_record(folders[2])["baseline"]
    for key in ("train_loss", "test_accuracy", "train_loss_bn_recomputed", "test_accuracy_bn_recomputed"):
        assert isinstance(record[key], float)


def test_oneshot_equals_pruning_theta_0_and_prune_large_the_largest(imp_chain):
    root, run, folders = imp_chain
    theta_0 = load_tensors(folders[0] / "final.pt")
    dense = mask_of(folders[0])
    for k, folder in enumerate(run.chain("oneshot", 2)[1:], start=1):
        count = pruning.kept_count(dense) - pruning.target_kept(pruning.total_count(dense), 0.2, k)
        expected = pruning.prune_magnitude(theta_0, dense, count)
        assert all(torch.equal(expected[n], mask_of(folder)[n]) for n in dense)
    large = mask_of(run.level("prune-large", 1))
    removed = torch.cat([theta_0[n][~large[n]].abs() for n in large])
    kept = torch.cat([theta_0[n][large[n]].abs() for n in large])
    assert removed.min() >= kept.max()


def test_finetune_and_reinit_branch_off_imp_with_its_masks(imp_chain):
    _, run, folders = imp_chain
    for strategy in ("finetune", "reinit"):
        folder = run.level(strategy, 2)
        assert all(torch.equal(mask_of(folder)[n], mask_of(folders[2])[n]) for n in mask_of(folder))
    summary = Store(imp_chain[0]).summary_table()
    assert "finetune" in summary and "reinit" in summary


def test_finetune_chain_prunes_its_own_finetuned_solutions(imp_chain):
    _, run, folders = imp_chain
    first, second = run.chain("finetune-chain", 2)[1:]
    # Level 1 prunes theta_0 as imp does; level 2 prunes finetune-chain's own level 1.
    assert all(torch.equal(mask_of(first)[n], mask_of(folders[1])[n]) for n in mask_of(first))
    parent = load_tensors(first / "final.pt")
    parent_mask = mask_of(first)
    count = pruning.kept_count(parent_mask) - pruning.target_kept(pruning.total_count(parent_mask), 0.2, 2)
    expected = pruning.prune_magnitude(parent, parent_mask, count)
    assert all(torch.equal(expected[n], mask_of(second)[n]) for n in expected)
    # Trained from iteration 0 (not the rewind point) at the constant fine-tuning rate.
    history = json.loads((second / "metrics.json").read_text())["history"]
    assert history[0]["iteration"] == 4 and {h["lr"] for h in history} == {0.001}


def test_random_prune_is_seeded(tmp_path, imp_chain):
    _, run, _ = imp_chain
    a = mask_of(run.level("random-prune", 1))
    b = mask_of(make_run(tmp_path).level("random-prune", 1))
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_rewinding_restores_the_rewind_checkpoint_exactly(tmp_path):
    # Rewind point at the very end: retraining takes no step, so the level's final weights
    # are exactly what rewinding produced.
    run = make_run(tmp_path, epochs=1, rewind_iter=4)
    folders = run.chain("imp", 1)
    rewind = load_tensors(folders[0] / "rewind.pt")
    final = load_tensors(folders[1] / "final.pt")
    mask = mask_of(folders[1])
    for name in final:
        expected = rewind[name] if name not in mask else torch.where(mask[name], rewind[name], torch.zeros_like(rewind[name]))
        assert torch.equal(final[name], expected), name


class Crash(Exception):
    pass


def test_kill_in_the_middle_of_a_level_resumes_to_the_same_weights(tmp_path):
    whole = make_run(tmp_path / "whole").chain("imp", 2)

    def crash(it):
        if crash.armed and it == 7:
            raise Crash
    crash.armed = False
    run = make_run(tmp_path / "crashed", on_iteration=crash)
    run.chain("imp", 1)
    crash.armed = True
    with pytest.raises(Crash):
        run.level("imp", 2)
    crash.armed = False
    resumed = make_run(tmp_path / "crashed").chain("imp", 2)
    a, b = load_tensors(whole[2] / "final.pt"), load_tensors(resumed[2] / "final.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert len([r for r in Store(tmp_path / "crashed").read_index() if r["strategy"] == "imp"]) == 3


def test_bad_config_values(tmp_path):
    with pytest.raises(LthError, match="--prune-fraction must be in \\(0, 1\\)"):
        ImpConfig(train=TrainConfig(**TRAIN), prune_fraction=1.5)
    with pytest.raises(LthError, match="unknown strategy 'magic'"):
        make_run(tmp_path).level("magic", 1)


def test_default_rewind_points():
    assert ImpConfig(train=TrainConfig(model="resnet20")).train.rewind_iter == 2000
    assert ImpConfig(train=TrainConfig(model="vgg16")).train.rewind_iter == 1000


def test_root_holding_another_config_is_an_error(tmp_path):
    run = make_run(tmp_path)
    (run.dir / "config.json").write_text(json.dumps(make_run(tmp_path / "other", seed=5).config.to_dict()))
    with pytest.raises(LthError, match="holds a run of another config"):
        make_run(tmp_path)


def test_index_is_mended_after_a_kill_between_level_and_index(imp_chain):
    root, run, _ = imp_chain
    index = root / "index.jsonl"
    lines = index.read_text().splitlines()
    imp_lines = [line for line in lines if '"strategy": "imp"' in line]
    # Lose the last imp line as a kill after level.json would, and tear the line before it.
    kept = [line for line in lines if line != imp_lines[-1]]
    index.write_text("\n".join(kept) + "\n" + '{"run": "torn')
    run.chain("imp", 3)
    records = [r for r in Store(root).read_index() if r["strategy"] == "imp"]
    assert sorted(r["level"] for r in records) == [0, 1, 2, 3]


TIMINGS = {"eval_seconds", "images_per_second"}  # wall-clock fields of a history entry


def _tensors_equal(a, b):
    a, b = load_tensors(a), load_tensors(b)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_r0_shares_the_late_runs_dense_network_and_gets_what_training_it_would(tmp_path):
    data = load_dataset("synthetic", train_subset=256)
    config = lambda rewind: ImpConfig(train=TrainConfig(**{**TRAIN, "rewind_iter": rewind}),  # noqa: E731
                                      eval_train_images=256, bn_batches=2)
    ImpRun(config(2), tmp_path / "shared", data).dense()
    steps = []
    shared = ImpRun(config(0), tmp_path / "shared", data, on_iteration=steps.append, dense_from=config(2))
    own = ImpRun(config(0), tmp_path / "own", data)  # trains its dense network itself
    for run in (shared, own):
        run.level("imp", 1)
    assert len(steps) == 12  # level 1's 3 epochs of 4 steps: the dense network was not trained again
    a, b = shared.run.level("imp", 0), own.run.level("imp", 0)
    for name in ("final", "rewind"):
        assert _tensors_equal(getattr(a, name), getattr(b, name)), name
    ma, mb = mask_of(a.folder), mask_of(b.folder)
    assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)
    assert _tensors_equal(shared.run.level("imp", 1).final, own.run.level("imp", 1).final)
    ra, rb = level_record(a.folder), level_record(b.folder)
    for key in ("test_accuracy", "test_loss", "train_loss", "density"):
        assert ra[key] == rb[key], key
    history = lambda files: [{k: v for k, v in e.items() if k not in TIMINGS}  # noqa: E731
                             for e in json.loads(files.metrics.read_text())["history"]]
    assert history(a) == history(b)


def test_a_dense_network_of_another_recipe_is_never_shared(tmp_path):
    data = load_dataset("synthetic", train_subset=256)
    late = ImpConfig(train=TrainConfig(**TRAIN), eval_train_images=256, bn_batches=2)
    ImpRun(late, tmp_path, data).dense()
    other_seed = ImpConfig(train=TrainConfig(**{**TRAIN, "rewind_iter": 0, "seed": 7}), eval_train_images=256,
                           bn_batches=2)
    with pytest.raises(LthError, match="another recipe"):
        ImpRun(other_seed, tmp_path, data, dense_from=late).dense()
