"""Every bad input is one line naming the flag as the user typed it, exit status 2, before
any work starts: numbers that are not ordinary numbers, words and flags that would be
dropped, impossible plans, and files that cannot be read or written."""
import errno
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lthfast.cli import main as cli
from lthfast.config.analyses import CurveSettings, SharpnessSettings, VolumeSettings
from lthfast.config.runs import ImpConfig, TrainConfig
from lthfast.data.loading import load_dataset
from lthfast.foundations import files as storage
from lthfast.foundations.errors import LthError
from lthfast.foundations.files import load_tensors
from lthfast.study.presets import preset_config
from lthfast.training.trainer import train

FIXTURE = Path(__file__).parent / "fixtures" / "store_v0"
SMALL = ["--model", "resnet8", "--width", "8", "--data", "synthetic", "--train-subset", "64", "--batch-size", "32",
         "--epochs", "1"]


def one_line_error(capsys, *argv) -> str:
    """Run the CLI in this process; the single stderr line of its error (exit status 2)."""
    assert cli.main(list(argv)) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("argv, message", [
    (["train", "--lr", "1e999"], "--lr must be a finite number, got inf"),
    (["train", "--lr", "nan"], "--lr must be a finite number, got nan"),
    (["train", "--momentum", "-0.5"], "--momentum must be a number >= 0.0"),
    (["train", "--epochs", "0"], "--epochs must be an integer >= 1"),
    (["train", "--epochs", "2.5"], "--epochs must be an integer >= 1"),
    (["train", "--seed", "100000000000000000000"], "--seed must be an integer >= 0 and <= 4294967295"),
    (["train", "--width", "100000"], "use a smaller --width"),
    (["train", "--batch-size", "-1"], "--batch-size must be an integer >= 1"),
    (["train", "--milestones", "3,3"], "--milestones must be positive epoch numbers like 80,120, each once"),
    (["train", "--device", "tpu"], "--device must be auto, cpu or cuda"),
    (["imp", "--prune-fraction", "nan"], "--prune-fraction must be"),
    (["imp", "--finetune-lr", "0"], "--finetune-lr must be a positive number"),
    (["imp", "--eval-train-images", "0"], "--eval-train-images must be an integer >= 1"),
    (["imp", "--strategy", "oneshot", "--sparsities", "0.5,nan"], "--sparsities must be a finite number"),
    (["imp", "--levels", "1e999"], "--levels must be an integer >= 1"),
    (["study", "--preset", "smoke", "--curve-points", "1"], "--curve-points must be an integer >= 2"),
    (["study", "--preset", "smoke", "--volume-delta", "inf"], "--volume-delta must be a finite number"),
    (["study", "--preset", "smoke", "--sharpness-images", "0"], "--sharpness-images must be an integer >= 1"),
    (["study", "--preset", "smoke", "--lr", "-1"], "--lr must be a number >= 0.0"),
    (["study", "--preset", "smoke", "--eps-margin", "nan"], "--eps-margin must be a finite number"),
    (["study", "--preset", "smoke", "--seeds", "0,1e30"], "--seeds must be a comma-separated list of integers"),
    (["analyze", "interpolate", "nowhere", "--points", "1"], "--points must be an integer >= 2"),
    (["analyze", "interpolate", "nowhere", "--test-images", "-5"], "--test-images must be an integer >= 1"),
    (["analyze", "volume", "nowhere", "--delta", "0"], "--delta must be a positive number"),
    (["analyze", "volume", "nowhere", "--initial", "inf"], "--initial must be a finite number"),
    (["analyze", "sharpness", "nowhere", "--tolerance", "-1"], "--tolerance must be a positive number"),
    (["analyze", "sharpness", "nowhere", "--products", "2"], "--products must be an integer >= 4"),
    (["analyze", "sublevel", "nowhere", "--eps", "-1"], "--eps must be a positive number"),
    (["analyze", "sublevel", "nowhere", "--eps-margin", "inf"], "--eps-margin must be a finite number"),
])
def test_numbers_that_are_not_ordinary_numbers(capsys, tmp_path, argv, message):
    root = [] if argv[0] == "analyze" else ["--root", str(tmp_path / "root")]
    assert message in one_line_error(capsys, *argv, *root)
    assert not (tmp_path / "root").exists()  # checked before any work


def test_numpy_scalars_from_the_python_api_become_plain_numbers(tmp_path):
    config = TrainConfig(model="resnet8", width=8, data="synthetic", train_subset=64, batch_size=32,
                         epochs=np.int64(2), lr=np.float64(0.05), seed=np.int32(3), nesterov=np.bool_(True),
                         milestones=(np.int64(1),))
    assert type(config.lr) is float and type(config.epochs) is int and type(config.nesterov) is bool
    assert type(config.milestones[0]) is int
    imp = ImpConfig(train=config, prune_fraction=np.float32(0.5))
    assert type(imp.prune_fraction) is float
    assert isinstance(SharpnessSettings(images=np.int64(64)).images, int)
    assert isinstance(VolumeSettings(delta=np.float64(0.2)).delta, float)
    assert isinstance(CurveSettings(points=np.int16(3)).points, int)

    class Stop(Exception):
        pass

    def stop_at_3(iteration):
        if iteration == 3:
            raise Stop

    data = load_dataset("synthetic", train_subset=64)
    with pytest.raises(Stop):
        train(config, tmp_path, data, on_iteration=stop_at_3)
    load_tensors(tmp_path / "checkpoint.pt")  # weights_only=True reads it: nothing but plain values inside
    assert train(config, tmp_path, data)["finished"]


@pytest.mark.parametrize("argv, message", [
    (["train", "--epochs", "1", "extra"], "unexpected argument 'extra'"),
    (["imp", "stray"], "unexpected argument 'stray'"),
    (["analyze", "distance", "run-folder", "another"], "unexpected argument 'another'"),
    (["imp", "-l", "5"], "short flags such as -l are not accepted"),
    (["study", "-p", "smoke"], "short flags such as -p are not accepted"),
    (["train", "--epochs"], "--epochs needs a value"),
    (["imp", "--strategy", "imp", "--sparsities", "0.5"], "--sparsities applies to oneshot and reinit, not imp"),
    (["study", "--preset", "smoke", "--seeds", "0,0"], "--seeds lists 0 more than once"),
    (["study", "--preset", "smoke", "--strategies", "imp,imp"], "--strategies lists imp more than once"),
    (["study", "--preset", "smoke", "--geometry-seeds", "7"], "--geometry-seeds 7 not among --seeds"),
    (["imp", "--levels", "100", "--prune-fraction", "0.5"], "leaves no weight"),
    (["study", "--preset", "smoke", "--levels", "40", "--prune-fraction", "0.5"], "leaves no weight"),
    (["study", "--preset", "smoke", "--rewind-iter", "100000"], "--rewind-iter 100000 is past the end of training"),
])
def test_arguments_that_would_be_dropped_or_plans_that_cannot_finish(capsys, tmp_path, argv, message):
    root = [] if argv[0] == "analyze" else ["--root", str(tmp_path / "root")]
    assert message in one_line_error(capsys, *argv, *root)
    assert not (tmp_path / "root").exists()


def test_a_boolean_flag_followed_by_false_means_false():
    assert cli._check_flags(["train", "--nesterov", "false", "--epochs", "2"]) == \
        ["train", "--nonesterov", "--epochs", "2"]
    assert cli._check_flags(["study", "--dry-run", "--noreport"]) == ["study", "--dry-run", "--noreport"]


def bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (and holds almost nothing)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + \
        chunk(b"IEND", b"")


@pytest.mark.parametrize("size, message", [((20000, 20000), "decompression bomb"), ((64, 64), "is 64x64"),
                                           ((40000, 1), "is 40000x1")])
def test_an_image_folder_with_a_huge_or_wrong_header(capsys, tmp_path, size, message):
    for split in ("train", "test"):
        for c in range(10):
            folder = tmp_path / "data" / split / f"class{c}"
            folder.mkdir(parents=True)
            Image.new("RGB", (32, 32)).save(folder / "0001.png")
    (tmp_path / "data" / "train" / "class3" / "0002.png").write_bytes(bomb_png(*size))
    line = one_line_error(capsys, "train", "--data-dir", str(tmp_path / "data"), "--root", str(tmp_path / "root"))
    assert "0002.png" in line and message in line


def test_a_root_that_is_a_file(capsys, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    for command in (["train", *SMALL], ["summary"], ["report"], ["study", "--preset", "smoke"]):
        assert f"--root {tmp_path / 'file'} is a file, not a folder" in \
            one_line_error(capsys, *command, "--root", str(tmp_path / "file"))


@pytest.mark.parametrize("code, cause", [(errno.ENOSPC, "No space left on device"), (errno.EACCES, "Permission denied"),
                                         (errno.EROFS, "Read-only file system")])
def test_a_full_disk_or_a_read_only_root_names_the_path_and_keeps_finished_work(capsys, tmp_path, monkeypatch, code,
                                                                                 cause):
    """The first training finishes; the second one's writes fail. One line names the file and
    the cause, the finished run is untouched and no temporary file is left behind."""
    root = tmp_path / "root"
    assert cli.main(["train", *SMALL, "--root", str(root)]) == 0
    capsys.readouterr()
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    real_fsync = os.fsync

    def failing_fsync(fd):
        raise OSError(code, os.strerror(code), os.readlink(f"/proc/self/fd/{fd}"))
    monkeypatch.setattr(storage.os, "fsync", failing_fsync)
    line = one_line_error(capsys, "train", *SMALL, "--seed", "1", "--root", str(root))
    monkeypatch.setattr(storage.os, "fsync", real_fsync)
    assert cause in line and str(root) in line
    assert all(p.read_bytes() == data for p, data in before.items())
    assert not [p for p in root.rglob("*.tmp")]


def test_a_disk_that_fills_while_a_checkpoint_is_written_names_the_file(capsys, tmp_path, monkeypatch):
    """A full disk fails inside the write itself (with no file name; torch's own writer used to
    turn it into 'RuntimeError: unexpected pos' on a 64 KiB tmpfs): one line, the file, the cause."""
    root = tmp_path / "root"
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            if len(data) > 4096:  # small JSON files fit, a checkpoint does not
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)
    monkeypatch.setattr(storage.os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    assert cli.main(["train", *SMALL, "--root", str(root)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]  # after the epoch's progress line
    assert len(errors) == 1 and "Traceback" not in err, err
    assert "No space left on device" in errors[0] and str(root) in errors[0] and ".pt" in errors[0], errors[0]
    assert not [p for p in root.rglob("*.tmp")]


def test_a_report_on_a_root_without_permission(capsys, tmp_path, monkeypatch):
    root = tmp_path / "legacy"
    shutil.copytree(FIXTURE, root)

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(root / "report"))
    monkeypatch.setattr(storage.tempfile, "mkstemp", denied)
    line = one_line_error(capsys, "report", "--root", str(root))
    assert f"{root / 'report'}: Permission denied" in line


def test_library_calls_raise_the_same_errors():
    with pytest.raises(LthError, match="--curve-points must be an integer >= 2"):
        preset_config("smoke", curve_points=1)
    with pytest.raises(LthError, match="--lr must be a finite number"):
        TrainConfig(lr=float("inf"))
