"""A damaged run store is repaired or explained: a level counts as finished only when all its
files are present and readable; otherwise the damaged files are moved aside and the same
command computes them again, with the same results (runs are deterministic). The index is
derived data: bad lines are skipped with one warning, and `repair` rebuilds it."""
import json
import shutil
import warnings

import pytest
import torch

from lthfast.cli import main as cli
from lthfast.config.runs import ImpConfig, TrainConfig
from lthfast.data.loading import load_dataset
from lthfast.foundations.errors import LthError
from lthfast.foundations.files import load_tensors, read_json
from lthfast.imp.driver import ImpRun
from lthfast.store import layout as store

TRAIN = dict(model="resnet8", width=8, data="synthetic", train_subset=64, batch_size=32, epochs=2, rewind_iter=1)


def make(root):
    config = ImpConfig(train=TrainConfig(**TRAIN), eval_train_images=64, eval_test_images=64, bn_batches=1)
    return ImpRun(config, root, load_dataset("synthetic", train_subset=64))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    run = make(root)
    run.chain("imp", 2)
    run.chain("finetune", 1)
    return root, run.dir.name


def numbers(root, name):
    """Every level's key numbers and final weights."""
    out = {}
    for record in sorted((root / name).rglob("level.json")):
        r = read_json(record)
        out[str(record.parent.relative_to(root))] = (r["test_accuracy"], r["train_loss"], r["baseline"])
        final = load_tensors(record.parent / "final.pt")
        out[str(record.parent.relative_to(root)) + "/final"] = [v.tolist() for v in final.values()]
    return out


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


CASES = {
    "final.pt truncated": lambda level1, dense: truncate(level1 / "final.pt"),
    "rewind.pt truncated": lambda level1, dense: truncate(dense / "rewind.pt"),
    "final.pt deleted": lambda level1, dense: (level1 / "final.pt").unlink(),
    "level_00/final.pt deleted": lambda level1, dense: (dense / "final.pt").unlink(),
    "rewind.pt deleted": lambda level1, dense: (dense / "rewind.pt").unlink(),
    "baseline.pt deleted": lambda level1, dense: (level1 / "baseline.pt").unlink(),
    "mask.pt deleted": lambda level1, dense: (level1 / "mask.pt").unlink(),
    "mask.pt truncated": lambda level1, dense: truncate(level1 / "mask.pt"),
    "metrics.json deleted": lambda level1, dense: (level1 / "metrics.json").unlink(),
    "level.json is {}": lambda level1, dense: (level1 / "level.json").write_text("{}"),
    "level.json undecodable": lambda level1, dense: (level1 / "level.json").write_bytes(b"\xff\xfe\x00garbage"),
    "baseline.json is {}": lambda level1, dense: (level1 / "baseline.json").write_text("{}"),
    "config.json is {}": lambda level1, dense: (level1.parent.parent / "config.json").write_text("{}"),
    "config.json undecodable": lambda level1, dense: (level1.parent.parent / "config.json").write_bytes(b"\x80\x81"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_damaged_level_is_computed_again_with_the_same_results(reference, tmp_path, case):
    ref_root, name = reference
    root = tmp_path / "root"
    shutil.copytree(ref_root, root)
    CASES[case](root / name / "imp" / "level_01", root / name / "level_00")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = make(root)
        run.chain("imp", 2)
        run.chain("finetune", 1)
    assert numbers(root, name) == numbers(ref_root, name)
    assert any("set aside" in str(w.message) or "written again" in str(w.message) for w in caught), case
    if "deleted" not in case:  # a damaged file is kept for inspection, never read again
        assert list((root / name).rglob("*.damaged-*"))


def test_a_truncated_checkpoint_is_set_aside_and_the_training_starts_again(reference, tmp_path):
    ref_root, name = reference
    root = tmp_path / "root"
    shutil.copytree(ref_root, root)
    level = root / name / "imp" / "level_02"
    shutil.copy(level / "final.pt", level / "checkpoint.pt")
    truncate(level / "checkpoint.pt")
    for path in ("final.pt", "metrics.json", "level.json"):
        (level / path).unlink()
    make(root).chain("imp", 2)
    assert numbers(root, name) == numbers(ref_root, name)


def test_a_damaged_config_is_explained_where_it_cannot_be_rewritten(reference, tmp_path, capsys):
    ref_root, name = reference
    root = tmp_path / "root"
    shutil.copytree(ref_root, root)
    (root / name / "config.json").write_text("{}")
    with pytest.raises(LthError, match="damaged or not an IMP config .* the `imp` or `study` command"):
        store.Run.open(root / name)
    assert cli.main(["analyze", "sublevel", str(root / name)]) == 2
    assert "writes it again" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [b"{}\n", b"\xff\xfe not json\n", b'{"run": "x"}\n'])
def test_bad_index_lines_are_skipped_with_one_warning_and_repair_rebuilds_the_index(reference, tmp_path, capsys, bad):
    ref_root, _ = reference
    root = tmp_path / "root"
    shutil.copytree(ref_root, root)
    good = (root / "index.jsonl").read_bytes()
    (root / "index.jsonl").write_bytes(bad + good + bad + b'{"torn by a kill": tr')
    with pytest.warns(UserWarning, match="damaged line"):
        records = store.Store(root).read_index()
    assert len(records) == len(good.splitlines())
    assert cli.main(["summary", "--root", str(root)]) == 0
    assert cli.main(["repair", "--root", str(root)]) == 0
    assert "index rebuilt: 4 finished levels" in capsys.readouterr().out
    rebuilt = [json.loads(line) for line in (root / "index.jsonl").read_bytes().splitlines()]
    assert sorted(r["folder"] for r in rebuilt) == sorted(json.loads(line)["folder"] for line in good.splitlines())


def test_repair_sets_aside_what_is_damaged_and_the_command_then_recomputes_it(reference, tmp_path, capsys):
    ref_root, name = reference
    root = tmp_path / "root"
    shutil.copytree(ref_root, root)
    truncate(root / name / "imp" / "level_02" / "final.pt")
    assert cli.main(["repair", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "set aside: " in out and "level_02/final.pt" in out and "index rebuilt: 3 finished levels" in out
    make(root).chain("imp", 2)
    assert numbers(root, name) == numbers(ref_root, name)
    assert torch.equal(load_tensors(root / name / "imp" / "level_02" / "final.pt")["fc.weight"],
                       load_tensors(ref_root / name / "imp" / "level_02" / "final.pt")["fc.weight"])
