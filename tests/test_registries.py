"""A new model family or data set is one module-level definition plus one registry entry:
registered from here (the package untouched), it trains through IMP and interpolates like a
built-in, and leaves the registries with this module's MonkeyPatch."""
import json

import pytest
import torch
from torch import nn

import lthfast.data
import lthfast.models
from lthfast.config.analyses import CurveSettings
from lthfast.config.runs import DEFAULT_REWIND_ITER, ImpConfig, TrainConfig
from lthfast.data import registry as data_registry
from lthfast.data.dataset import MEAN, Dataset
from lthfast.data.loading import load_dataset
from lthfast.data.registry import SIZES
from lthfast.foundations.errors import LthError
from lthfast.foundations.files import load_tensors
from lthfast.imp.driver import ImpRun
from lthfast.landscape import curves as analysis
from lthfast.landscape.runs import AnalysisRun
from lthfast.models import registry as model_registry
from lthfast.models.families import (
    DEFAULT_WIDTHS,
    create_model,
    parse_model_name,
    prunable_names,
)
from lthfast.pruning import masks as pruning
from lthfast.training.evaluation import evaluate
from lthfast.training.network import build_model, use_channels_last


class ToyCNN(nn.Module):
    """`toycnn<layers>`: layers x (conv-BN-ReLU), global average, one linear layer `fc`."""

    def __init__(self, layers: int, width: int, num_classes: int):
        super().__init__()
        blocks, channels = [], 3
        for _ in range(layers):
            blocks += [nn.Conv2d(channels, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            channels = width
        self.features = nn.Sequential(*blocks)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def toy_images(classes: int, num_train: int = 60, num_test: int = 30) -> Dataset:
    """A generated set: one flat color per class plus noise, labels cycling through the classes."""
    g = torch.Generator().manual_seed(classes)
    colors = torch.rand(classes, 3, 1, 1, generator=g)

    def make(n):
        y = torch.arange(n) % classes
        x = 0.7 * colors[y] + 0.3 * torch.rand(n, 3, 32, 32, generator=g)
        return (x * 255).round().to(torch.uint8), y
    return Dataset(*make(num_train), *make(num_test))


def check_layers(layers: int) -> None:
    if not 1 <= layers <= 4:
        raise LthError(f"toycnn has 1 to 4 layers, got {layers}")


@pytest.fixture(scope="module")
def toys():
    """toycnn, toy10 and toy3 registered for this module's tests, then gone."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(model_registry, "FAMILIES", dict(model_registry.FAMILIES))
        mp.setattr(data_registry, "DATA_SETS", dict(data_registry.DATA_SETS))
        lthfast.models.register("toycnn", pattern=r"toycnn(\d+)", build=ToyCNN, default_width=8, rewind_iter=2,
                                check_depth=check_layers, examples=("toycnn2",), prune_last_layer=False)
        for classes in (10, 3):
            lthfast.data.register(f"toy{classes}", load=lambda data_dir, cache_dir, c=classes: toy_images(c),
                                  num_classes=classes, sizes=(60, 30), description="a toy set")
        lthfast.data.register("gray", load=lambda data_dir, cache_dir: toy_images(3), num_classes=3, sizes=(60, 30),
                              mean=GRAY[0], std=GRAY[1], description="a toy set with its own statistics")
        yield


TRAIN = dict(model="toycnn2", train_subset=30, batch_size=10, epochs=2, eval_batch_size=64)
GRAY = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)  # the gray set's mean and std: not CIFAR-10's


def imp_run(root, data: str) -> ImpRun:
    # rewind_iter unset: the family's default (2) applies
    config = ImpConfig(train=TrainConfig(**TRAIN, data=data), eval_train_images=30, bn_batches=2)
    return ImpRun(config, root, load_dataset(data, train_subset=30))


@pytest.fixture(scope="module")
def toy_runs(toys, tmp_path_factory):
    """One IMP level of toycnn2 on each toy set: {data set: (run, level folders)}."""
    out = {}
    for data in ("toy10", "toy3", "gray"):
        run = imp_run(tmp_path_factory.mktemp(data), data)
        out[data] = run, run.chain("imp", 1)
    return out


def test_a_registered_model_family_trains_prunes_and_interpolates(toy_runs):
    run, folders = toy_runs["toy10"]
    assert run.config.train.rewind_iter == 2  # the family's late rewind point
    dense, pruned = (pruning.unpack(load_tensors(f / "mask.pt")) for f in folders)
    assert "fc.weight" not in pruned  # the family's rule: the last layer stays dense
    assert abs(pruning.kept_count(pruned) - 0.8 * pruning.total_count(dense)) <= 1
    opened = AnalysisRun(run.dir, device="cpu")
    curve = analysis.interpolation(opened, opened.solution("imp:0"), opened.solution("imp:1"),
                                   CurveSettings(points=3, bn="interpolate", train_images=30))["result"]
    for end, folder in ((0, folders[0]), (-1, folders[1])):
        record = json.loads((folder / "level.json").read_text())
        assert curve["train_loss"][end] == pytest.approx(record["train_loss"], rel=1e-5)
        assert curve["test_error"][end] == pytest.approx(1 - record["test_accuracy"], abs=1e-6)


def test_a_registered_data_set_with_three_classes_trains(toy_runs):
    _, folders = toy_runs["toy3"]
    for folder in folders:
        assert load_tensors(folder / "final.pt")["fc.weight"].shape == (3, 8)
        assert 0 <= json.loads((folder / "level.json").read_text())["test_accuracy"] <= 1
    subset = load_dataset("toy3", train_subset=7, subset_seed=1)
    assert torch.bincount(subset.train_y).tolist() == [3, 2, 2] and subset.num_classes == 3


def test_interpolation_on_a_data_set_with_three_classes(toy_runs):
    run, _ = toy_runs["toy3"]
    opened = AnalysisRun(run.dir, device="cpu")
    curve = analysis.interpolation(opened, opened.solution("imp:0"), opened.solution("imp:1"),
                                   CurveSettings(points=2, bn="interpolate", train_images=30))["result"]
    assert curve["alphas"] == [0.0, 1.0] and all(0 <= e <= 1 for e in curve["test_error"])


def test_registered_entries_are_read_everywhere_the_built_ins_are(toys):
    assert parse_model_name("ToyCNN3", width=4) == ("toycnn", 3)
    assert DEFAULT_WIDTHS["toycnn"] == 8 and DEFAULT_REWIND_ITER["toycnn"] == 2
    assert create_model("toycnn1", seed=0, num_classes=3)(torch.zeros(2, 3, 32, 32)).shape == (2, 3)
    assert create_model("resnet8", width=4, num_classes=3).fc.out_features == 3
    assert prunable_names(create_model("toycnn2")) == ["features.0.weight", "features.3.weight"]
    assert SIZES["toy3"] == (60, 30) and TrainConfig(data="toy3", model="toycnn1").data == "toy3"
    with pytest.raises(LthError, match="toycnn has 1 to 4 layers, got 7"):
        parse_model_name("toycnn7")
    with pytest.raises(LthError, match=r"known models: resnet20, .*toycnn2 \(any resnet<6n\+2> or "
                                       r"vgg<11\|13\|16\|19> or toycnn<n>\)"):
        parse_model_name("lenet5")
    with pytest.raises(LthError, match="--train-subset must be at least 3"):
        load_dataset("toy3", train_subset=2)


def test_the_built_in_entries():
    assert (DEFAULT_WIDTHS["resnet"], DEFAULT_WIDTHS["vgg"]) == (16, 64)
    assert (DEFAULT_REWIND_ITER["resnet"], DEFAULT_REWIND_ITER["vgg"]) == (2000, 1000)  # Frankle et al. 2020
    assert (SIZES["cifar10"], SIZES["synthetic"]) == ((50_000, 10_000), (1000, 500))
    assert list(model_registry.FAMILIES)[:2] == ["resnet", "vgg"]
    assert [(e.num_classes, e.mean) for e in map(lthfast.data.get, ("cifar10", "synthetic"))] == [(10, MEAN)] * 2
    assert load_dataset("synthetic").num_classes == 10


def test_unknown_data_set_lists_the_registered_ones(toys):
    known = "cifar10, cifar100, imagefolder, synthetic, toy10, toy3, gray"
    with pytest.raises(LthError, match=f"unknown data set 'nope'; known: {known}"):
        load_dataset("nope")
    with pytest.raises(LthError, match=f"--data must be one of {known}, got 'nope'"):
        TrainConfig(data="nope")


def test_a_data_set_with_other_statistics_trains_and_interpolates(toy_runs):
    """Training, IMP's evaluations and the analyses all normalize with the set's own statistics."""
    run, folders = toy_runs["gray"]
    data = load_dataset("gray", train_subset=30)
    assert (data.mean, data.std) == GRAY
    record = json.loads((folders[1] / "level.json").read_text())
    config = run.config.train  # evaluated as the trainer did: its precision and memory layout
    model = build_model(config, torch.device("cpu"), load_tensors(folders[1] / "final.pt"))
    layout = use_channels_last(config, torch.device("cpu"))
    own = evaluate(model, data.test_x, data.test_y, config.precision, 64, layout, *GRAY)
    assert own == (pytest.approx(record["test_loss"], rel=1e-5), pytest.approx(record["test_accuracy"]))
    cifar = evaluate(model, data.test_x, data.test_y, config.precision, 64, layout)  # CIFAR-10's statistics
    assert cifar[0] != pytest.approx(own[0], rel=1e-3)
    opened = AnalysisRun(run.dir, device="cpu")
    curve = analysis.interpolation(opened, opened.solution("imp:0"), opened.solution("imp:1"),
                                   CurveSettings(points=3, bn="interpolate", train_images=30))["result"]
    assert curve["train_loss"][-1] == pytest.approx(record["train_loss"], rel=1e-5)
    assert curve["test_error"][-1] == pytest.approx(1 - record["test_accuracy"], abs=1e-6)


def test_bad_registrations_are_refused(monkeypatch):
    monkeypatch.setattr(model_registry, "FAMILIES", dict(model_registry.FAMILIES))
    monkeypatch.setattr(data_registry, "DATA_SETS", dict(data_registry.DATA_SETS))
    fields = dict(build=ToyCNN, default_width=8, rewind_iter=2)
    with pytest.raises(ValueError, match="already registered"):
        lthfast.models.register("resnet", pattern=r"resnet(\d+)", **fields)
    with pytest.raises(ValueError, match="exactly one group"):
        lthfast.models.register("toy", pattern=r"toy\d+", **fields)
    with pytest.raises(ValueError, match="already registered"):
        lthfast.data.register("cifar10", load=lambda d, c: toy_images(3), num_classes=10, sizes=(1, 1))
    with pytest.raises(ValueError, match="num_classes"):
        lthfast.data.register("one", load=lambda d, c: toy_images(3), num_classes=1, sizes=(1, 1))
    with pytest.raises(ValueError, match="std of data set 'flat' must be 3 finite numbers"):
        lthfast.data.register("flat", load=lambda d, c: toy_images(3), num_classes=3, sizes=(1, 1), std=(0.2, 0, 0.2))


def test_a_registration_leaves_with_its_monkeypatch():
    families, data_sets = set(model_registry.FAMILIES), set(data_registry.DATA_SETS)
    before = create_model("resnet8", width=4, seed=1).state_dict()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(model_registry, "FAMILIES", dict(model_registry.FAMILIES))
        mp.setattr(data_registry, "DATA_SETS", dict(data_registry.DATA_SETS))
        lthfast.models.register("scratch", pattern=r"scratch(\d+)", build=ToyCNN, default_width=4, rewind_iter=0)
        lthfast.data.register("scratch", load=lambda d, c: toy_images(10), num_classes=10, sizes=(60, 30))
        assert parse_model_name("scratch1") == ("scratch", 1) and "scratch" in SIZES
        during = create_model("resnet8", width=4, seed=1).state_dict()
        assert all(torch.equal(before[k], during[k]) for k in before)
    assert set(model_registry.FAMILIES) == families and set(data_registry.DATA_SETS) == data_sets
    with pytest.raises(LthError, match="unknown model 'scratch1'"):
        parse_model_name("scratch1")
    with pytest.raises(LthError, match="--data must be one of"):
        TrainConfig(data="scratch")
