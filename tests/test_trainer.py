import json

import pytest
import torch

from lthfast.config.runs import TrainConfig
from lthfast.data.loading import load_dataset
from lthfast.foundations.errors import LthError
from lthfast.foundations.files import load_tensors, read_json
from lthfast.models.families import create_model, prunable_names
from lthfast.ops.extension import cpp_ops
from lthfast.store.layout import Store
from lthfast.training.network import learning_rate
from lthfast.training.trainer import train, train_run

# 256 synthetic images at batch 64: 4 steps an epoch, a few seconds a run on a laptop CPU.
SMALL = dict(model="resnet8", data="synthetic", train_subset=256, batch_size=64, epochs=3,
             eval_batch_size=256)


def small_config(**overrides):
    return TrainConfig(**{**SMALL, **overrides})


def small_data():
    return load_dataset("synthetic", train_subset=256)


def weights(path):
    return load_tensors(path)


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def random_mask(config, density=0.3, seed=0):
    model = create_model(config.model)
    params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(params[n].shape, generator=g) < density for n in prunable_names(model)}


class Crash(Exception):
    pass


def crash_at(iteration):
    def hook(it):
        if it == iteration:
            raise Crash(it)
    return hook


def test_masked_weights_stay_exactly_zero(tmp_path):
    config = small_config()
    mask = random_mask(config)
    train(config, tmp_path, small_data(), mask=mask)
    final = weights(tmp_path / "final.pt")
    for name, keep in mask.items():
        assert torch.all(final[name][~keep] == 0), name
        assert torch.count_nonzero(final[name][keep]) == keep.sum(), name  # kept weights trained


def test_weight_files_hold_each_tensor_once(tmp_path):
    config = small_config(epochs=1)
    train(config, tmp_path, small_data())
    numel = sum(p.numel() for p in create_model(config.model).state_dict().values())
    # parameters are views of one flat buffer: a saved view must not drag the whole buffer along
    assert (tmp_path / "final.pt").stat().st_size < 4 * numel * 1.3 + 50_000


def test_a_backend_that_cannot_run_here_is_a_one_line_error(tmp_path):
    with pytest.raises(LthError, match="--backend cuda"):
        train(small_config(backend="cuda", device="cpu"), tmp_path, small_data())


def test_momentum_of_pruned_entries_stays_zero(tmp_path):
    config = small_config(epochs=2)
    mask = random_mask(config, seed=4)
    with pytest.raises(Crash):
        train(config, tmp_path, small_data(), mask=mask, on_iteration=crash_at(5))
    momentum = load_tensors(tmp_path / "checkpoint.pt")["optimizer"]["momentum"]
    for name, keep in mask.items():
        assert torch.all(momentum[name][~keep] == 0), name
        assert torch.count_nonzero(momentum[name][keep]) > 0.9 * keep.sum(), name  # kept entries move


@pytest.mark.parametrize("crash_iteration", [3, 5, 8])  # mid-epoch, mid-epoch, epoch boundary
def test_resume_after_a_crash_ends_with_the_same_weights(tmp_path, crash_iteration):
    config = small_config(rewind_iter=6)
    mask = random_mask(config)
    data = small_data()
    train(config, tmp_path / "whole", data, mask=mask)
    with pytest.raises(Crash):
        train(config, tmp_path / "crashed", data, mask=mask, on_iteration=crash_at(crash_iteration))
    assert not (tmp_path / "crashed" / "final.pt").exists()
    metrics = train(config, tmp_path / "crashed", data, mask=mask)
    assert metrics["finished"] and metrics["iteration"] == 12
    assert_same_weights(weights(tmp_path / "whole" / "final.pt"), weights(tmp_path / "crashed" / "final.pt"))
    assert_same_weights(weights(tmp_path / "whole" / "rewind.pt"), weights(tmp_path / "crashed" / "rewind.pt"))
    whole = read_json(tmp_path / "whole" / "metrics.json")
    assert [h["train_loss"] for h in whole["history"]] == [h["train_loss"] for h in metrics["history"]]


def test_the_threads_that_trained_are_recorded_and_a_resume_with_others_says_so(tmp_path):
    """Bit-reproducibility holds at equal threads and backend (README, "Reliability"): the
    metrics name both, and a training resumed with another thread count says so once and
    records it."""
    config, data, threads = small_config(), small_data(), torch.get_num_threads()
    metrics = train(config, tmp_path / "whole", data)
    assert metrics["threads"] == threads and metrics["backend"] and "threads_resumed" not in metrics
    with pytest.raises(Crash):
        train(config, tmp_path / "crashed", data, on_iteration=crash_at(5))
    other = 1 if threads > 1 else 2
    torch.set_num_threads(other)
    try:
        with pytest.warns(UserWarning, match=f"started with {threads} CPU threads resumes with {other}"):
            metrics = train(config, tmp_path / "crashed", data)
    finally:
        torch.set_num_threads(threads)
    assert metrics["threads"] == threads and metrics["threads_resumed"] == other


def test_same_seed_same_metrics_and_another_seed_differs(tmp_path):
    runs = [train_run(small_config(seed=s), tmp_path / str(i)) for i, s in enumerate((7, 7, 8))]
    metrics = [read_json(r / "metrics.json") for r in runs]
    keys = ("train_loss", "test_loss", "test_accuracy")
    assert [metrics[0][k] for k in keys] == [metrics[1][k] for k in keys]
    assert metrics[0]["train_loss"] != metrics[2]["train_loss"]
    assert_same_weights(weights(runs[0] / "final.pt"), weights(runs[1] / "final.pt"))


def test_rewind_point_zero_is_the_initialization(tmp_path):
    config = small_config(rewind_iter=0, epochs=1)
    train(config, tmp_path, small_data())
    init = create_model(config.model, seed=config.seed).state_dict()
    assert_same_weights(init, weights(tmp_path / "rewind.pt"))


def test_finished_run_is_not_trained_again(tmp_path):
    config = small_config(epochs=1)
    run = train_run(config, tmp_path)
    steps = []
    assert train_run(config, tmp_path, on_iteration=steps.append) == run
    assert steps == []
    metrics = read_json(run / "metrics.json")
    assert {"test_accuracy", "test_loss", "train_loss", "history"} <= metrics.keys()
    assert len(metrics["history"]) == 1 and not (run / "checkpoint.pt").exists()


def test_run_folder_of_another_config_is_an_error(tmp_path):
    config, other = small_config(epochs=1), small_config(epochs=2)
    target = Store(tmp_path).train_dir(other)
    target.mkdir(parents=True)
    (target / "config.json").write_text(json.dumps(config.to_dict()))  # as if two configs collided
    with pytest.raises(LthError, match="holds a run of another config"):
        train_run(other, tmp_path)


def test_corrupt_checkpoint_is_a_one_line_error(tmp_path):
    config = small_config()
    with pytest.raises(Crash):
        train(config, tmp_path, small_data(), on_iteration=crash_at(5))
    (tmp_path / "checkpoint.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(LthError, match="checkpoint .* is unreadable or corrupt"):
        train(config, tmp_path, small_data())


def test_mask_of_wrong_shape_is_an_error(tmp_path):
    with pytest.raises(LthError, match="mask for conv.weight"):
        train(small_config(), tmp_path, small_data(), mask={"conv.weight": torch.ones(3, dtype=torch.bool)})


def test_learning_rate_schedule():
    config = TrainConfig(epochs=160)
    assert config.lr_milestones == (80, 120)
    assert TrainConfig(epochs=15).lr_milestones == (8, 11)
    assert learning_rate(config, 80 * 391 - 1, 391) == pytest.approx(0.1)
    assert learning_rate(config, 80 * 391, 391) == pytest.approx(0.01)
    assert learning_rate(config, 120 * 391, 391) == pytest.approx(0.001)
    warm = TrainConfig(warmup_iters=10)
    assert learning_rate(warm, 0, 391) == pytest.approx(0.01)
    assert learning_rate(warm, 9, 391) == pytest.approx(0.1)


def test_backends_agree(tmp_path):
    config = small_config(epochs=1)
    mask = random_mask(config)
    results = {}
    backends = ("torch", "cpp", "triton") if cpp_ops() is not None else ("torch", "triton")  # cpp: if built
    for backend in backends:
        train(TrainConfig(**{**SMALL, "epochs": 1, "backend": backend}), tmp_path / backend,
              small_data(), mask=mask)
        results[backend] = weights(tmp_path / backend / "final.pt")
    for backend in backends[1:]:
        for k in results["torch"]:
            torch.testing.assert_close(results[backend][k], results["torch"][k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("field,value,message", [
    ("epochs", 0, "--epochs must be an integer >= 1"),
    ("lr", -1.0, "--lr must be a number"),
    ("precision", "fp8", "--precision must be one of"),
    ("milestones", (0, 3), "--milestones"),
    ("train_subset", 5, "--train-subset must be an integer >= 10"),
    ("model", "resnet21", "6n\\+2"),
])
def test_bad_config_values(field, value, message):
    with pytest.raises(LthError, match=message):
        small_config(**{field: value})


def test_rewind_past_the_end_is_an_error(tmp_path):
    with pytest.raises(LthError, match="past the end"):
        train(small_config(rewind_iter=1000), tmp_path, small_data())


def test_run_hash_depends_on_results_not_on_where_they_run():
    base = TrainConfig()
    assert TrainConfig(device="cpu", backend="torch", channels_last=False).run_hash() == base.run_hash()
    assert TrainConfig(data_dir="/a").run_hash() == TrainConfig(data_dir="/b").run_hash()
    assert TrainConfig(data_dir="/a").run_hash() != base.run_hash()  # folder copy vs torchvision
    assert TrainConfig(seed=1).run_hash() != base.run_hash()
    assert TrainConfig(epochs=15).run_hash() != base.run_hash()


def test_training_from_a_rewind_point_resumes_exactly(tmp_path):
    """IMP's retraining: rewind weights, a mask, the schedule from iteration R on."""
    data = small_data()
    dense = small_config(rewind_iter=5)
    train(dense, tmp_path / "dense", data)
    rewind = weights(tmp_path / "dense" / "rewind.pt")
    mask = random_mask(dense, density=0.5)
    steps = []
    kwargs = dict(mask=mask, initial_weights=rewind, start_iteration=5)
    whole = train(dense, tmp_path / "whole", data, on_iteration=steps.append, **kwargs)
    assert steps == list(range(6, 13)) and whole["iteration"] == 12
    with pytest.raises(Crash):
        train(dense, tmp_path / "crashed", data, on_iteration=crash_at(10), **kwargs)
    train(dense, tmp_path / "crashed", data, **kwargs)
    assert_same_weights(weights(tmp_path / "whole" / "final.pt"), weights(tmp_path / "crashed" / "final.pt"))
