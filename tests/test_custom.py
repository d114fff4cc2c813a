"""Your own models and data sets (README, "Your own models and data sets"): a factory named
`module:factory` or `file.py:factory` runs through a study; a 100-class ImageFolder trains
through IMP with its own statistics; a bad factory, or one whose output does not fit the data
set, is one line and exit status 2 before any training; the run hash follows the factory's
shapes; CIFAR-100's entry loads through torchvision's (here faked) download."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import lthfast.data
from lthfast.cli.main import main
from lthfast.config.runs import ImpConfig, TrainConfig
from lthfast.data import cifar100
from lthfast.data.loading import load_dataset
from lthfast.foundations.errors import LthError
from lthfast.foundations.files import load_tensors
from lthfast.imp.driver import ImpRun
from lthfast.models import custom
from lthfast.models.families import create_model, prunable_names
from lthfast.report.markdown import write_report
from lthfast.study.executors import Execution
from lthfast.study.plan import Study
from lthfast.study.presets import preset_config
from lthfast.study.scheduler import execute

HERE = Path(__file__).resolve().parent
NOT_CALLABLE = 3


class Tiny(nn.Module):
    """One strided conv-BN-ReLU, the global average, one linear layer."""

    def __init__(self, num_classes: int, channels: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.conv(x))).mean((2, 3)))


def tiny(num_classes):
    return Tiny(num_classes)


def raising(num_classes):
    raise RuntimeError("no GPU here\nsecond line")


def not_a_module(num_classes):
    return "a network"


def wrong_output(num_classes):
    return Tiny(num_classes + 1)


@pytest.fixture(autouse=True)
def _importable(monkeypatch):
    """This module is importable by name (`test_custom:tiny`), and factories are resolved anew."""
    monkeypatch.syspath_prepend(str(HERE))
    custom.forget()
    yield
    custom.forget()


def test_a_custom_model_runs_through_a_smoke_study(tmp_path):
    config = preset_config("smoke", model="test_custom:tiny", seeds=(0,), levels=1, train_subset=64,
                           eval_train_images=64, eval_test_images=64)
    assert config.train.width is None and config.train.channels_last is False  # the preset's width is ignored
    study = Study(config, tmp_path)
    study.save_config()
    execute(study, study.plan(), Execution(stack_mode="loop"))
    report = write_report(tmp_path)
    assert Path(report).exists()
    records = [json.loads(line) for line in (tmp_path / "index.jsonl").read_text().splitlines()]
    assert records and {r["model"] for r in records} == {"test_custom:tiny"}
    weights = load_tensors(next(tmp_path.glob("imp_*/imp/level_01/final.pt")))
    assert weights["fc.weight"].shape == (10, 4)


def write_images(root: Path, classes: int, per_class: dict, size: int = 32) -> Path:
    rng = np.random.default_rng(classes)
    for split, count in per_class.items():
        for c in range(classes):
            folder = root / split / f"class{c:03d}"
            folder.mkdir(parents=True)
            for i in range(count):
                base = rng.integers(0, 256, 3)  # one color per image, plus noise
                pixels = np.clip(base + rng.integers(-40, 40, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def hundred(tmp_path_factory):
    """100 classes, 2 training and 1 test image each, 32x32: an ImageFolder and a CIFAR-100 copy."""
    return write_images(tmp_path_factory.mktemp("hundred"), 100, {"train": 2, "test": 1})


def test_a_100_class_image_folder_trains_one_level(hundred, tmp_path):
    data = load_dataset("imagefolder", str(hundred))
    pixels = np.stack([np.asarray(Image.open(p)) for p in sorted(hundred.glob("train/*/*.png"))]) / 255.0
    assert data.num_classes == 100 and data.train_x.shape == (200, 3, 32, 32)
    assert data.mean == pytest.approx(tuple(pixels.mean((0, 1, 2))), abs=1e-12)
    assert data.std == pytest.approx(tuple(pixels.std((0, 1, 2))), abs=1e-12)
    assert load_dataset("imagefolder", str(hundred)).mean == data.mean  # from the cache: the same floats
    train = TrainConfig(model="test_custom:tiny", data="imagefolder", data_dir=str(hundred), batch_size=50, epochs=1,
                        eval_batch_size=100)
    assert train.num_classes == 100 and "data_identity" in train.hashed_fields()
    run = ImpRun(ImpConfig(train=train, eval_train_images=100, bn_batches=1), tmp_path, data)
    _, pruned = run.chain("imp", 1)
    assert load_tensors(pruned / "final.pt")["fc.weight"].shape == (100, 4)
    record = json.loads((pruned / "level.json").read_text())
    assert 0 <= record["test_accuracy"] <= 1 and record["density"] < 1
    with pytest.raises(LthError, match="--data imagefolder reads its images from --data-dir"):
        TrainConfig(data="imagefolder")


def test_an_image_folder_of_mixed_sizes_is_one_line(tmp_path):
    folder = write_images(tmp_path / "mixed", 2, {"train": 1, "test": 1}, size=8)
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(folder / "test" / "class001" / "1.png")
    with pytest.raises(LthError, match=r"image .*1.png is 8x9; the images of .* are 8x8"):
        load_dataset("imagefolder", str(folder))


def test_the_cifar100_entry(hundred, tmp_path, monkeypatch):
    entry = lthfast.data.get("cifar100")
    assert (entry.num_classes, entry.sizes) == (100, (50_000, 10_000))
    assert (entry.mean, entry.std) == ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
    import torchvision

    class FakeCIFAR100:  # torchvision's interface: .data uint8 (N, 32, 32, 3), .targets
        def __init__(self, root, train, download):
            folder = Path(root) / "cifar-100-python"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / ("train" if train else "test")).write_bytes(b"batches")
            n = 300 if train else 100
            self.data = np.full((n, 32, 32, 3), 7 if train else 9, np.uint8)
            self.targets = [i % 100 for i in range(n)]
    monkeypatch.setattr(torchvision.datasets, "CIFAR100", FakeCIFAR100)
    data = load_dataset("cifar100", train_subset=200)
    assert data.num_classes == 100 and data.train_x.shape == (200, 3, 32, 32) and int(data.test_x[0, 0, 0, 0]) == 9
    assert torch.bincount(data.train_y).tolist() == [2] * 100 and data.mean == cifar100.MEAN
    assert list((tmp_path / "cache" / "data").glob("cifar100-torchvision-*.pt"))
    copy = load_dataset("cifar100", str(hundred))  # an ImageFolder copy
    assert (copy.num_classes, copy.num_train, copy.std) == (100, 200, cifar100.STD)
    with pytest.raises(LthError, match="holds 2 class folders; CIFAR-100 needs 100"):
        load_dataset("cifar100", str(write_images(tmp_path / "two", 2, {"train": 1, "test": 1})))


@pytest.mark.parametrize("model,message", [
    ("no_such_package.nets:build", "no module named 'no_such_package.nets'"),
    ("nowhere/net.py:build", "no file nowhere/net.py"),
    ("test_custom:missing", "test_custom has no attribute 'missing'"),
    ("test_custom:NOT_CALLABLE", "test_custom.NOT_CALLABLE is a int, not a callable"),
    ("test_custom:raising", "model factory test_custom:raising raised RuntimeError: no GPU here"),
    ("test_custom:not_a_module", "returned a str, not a torch.nn.Module"),
    ("test_custom:", "expected package.module:factory or path/to/file.py:factory"),
    ("test_custom:wrong_output", "gives output (1, 11) for one image; the data set has 10 classes"),
])
def test_a_bad_factory_is_one_line_before_any_training(model, message, tmp_path, capsys):
    status = main(["imp", "--model", model, "--data", "synthetic", "--train-subset", "20", "--epochs", "1",
                   "--levels", "1", "--stack", "1", "--root", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert not list(tmp_path.rglob("*.pt")) and "epoch" not in err  # nothing trained


def test_a_factory_file_that_fails_to_import_is_one_line(tmp_path, capsys):
    (tmp_path / "broken.py").write_text("def build(num_classes):\n    return (\n")
    assert main(["train", "--model", f"{tmp_path}/broken.py:build", "--data", "synthetic"]) == 2
    assert "broken.py raised SyntaxError" in capsys.readouterr().err


def factory_file(path: Path, channels: int, comment: str = "", prunable: str = "") -> str:
    path.write_text(f"# {comment}\nfrom torch import nn\n{prunable}\n\n"
                    "def build(num_classes):\n"
                    f"    return nn.Sequential(nn.Conv2d(3, {channels}, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),\n"
                    f"                         nn.Linear({channels}, num_classes))\n")
    custom.forget()
    return f"{path}:build"


def test_the_run_hash_follows_the_factorys_shapes(tmp_path):
    name = factory_file(tmp_path / "net.py", 4)
    config = TrainConfig(model=name, data="synthetic", width=8)
    first = config.run_hash()
    assert config.width is None and set(config.hashed_fields()) >= {"model", "model_shapes"}
    factory_file(tmp_path / "net.py", 4, comment="the same layers, another text")
    assert TrainConfig(model=name, data="synthetic").run_hash() == first
    factory_file(tmp_path / "net.py", 6)
    assert TrainConfig(model=name, data="synthetic").run_hash() != first
    assert "model_shapes" not in TrainConfig(model="resnet8", data="synthetic").hashed_fields()


def test_a_factory_model_is_seeded_and_names_its_prunable_weights(tmp_path):
    name = factory_file(tmp_path / "net.py", 4)
    state = torch.random.get_rng_state()
    a, b, c = (create_model(name, seed=s).state_dict() for s in (3, 3, 4))
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random state is kept
    assert all(torch.equal(a[k], b[k]) for k in a) and not torch.equal(a["0.weight"], c["0.weight"])
    assert prunable_names(create_model(name)) == ["0.weight", "3.weight"]  # every conv and linear weight
    name = factory_file(tmp_path / "last.py", 4, prunable="PRUNABLE = ['0.weight']")
    assert prunable_names(create_model(name)) == ["0.weight"]
    name = factory_file(tmp_path / "bad.py", 4, prunable="PRUNABLE = ['conv.weight']")
    with pytest.raises(LthError, match="PRUNABLE names 'conv.weight', which is not a parameter"):
        TrainConfig(model=name, data="synthetic")
