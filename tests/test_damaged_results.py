"""Every file lthfast writes is checked when read (lthfast issue 23): a damaged analysis result,
sublevel table, calibration or auto-mode cache, or report results.json is set aside
(`*.damaged-*`, kept) and computed again with the same numbers by the command that reads
it; a damaged study.json, which nothing can compute again, is named in one line with the
study command that writes it again; `repair` sets aside every kind. Level files:
tests/test_damaged_store.py."""
import json
import shutil
import subprocess
import sys

import pytest
import torch

from lthfast.cli import main as cli
from lthfast.config.runs import TrainConfig
from lthfast.config.study import StudyConfig
from lthfast.data.dataset import default_cache_dir
from lthfast.foundations import settings
from lthfast.report.markdown import write_report
from lthfast.study import calibration
from lthfast.study.calibration import Calibration
from lthfast.study.executors import Execution
from lthfast.study.plan import Study
from lthfast.study.presets import preset_config
from lthfast.study.scheduler import execute
from lthfast.training import auto

SEEDS = (0,)


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garbage(path):
    size = max(path.stat().st_size, 16)
    path.write_bytes((b"\x00\xde\xad garbage {[" * size)[:size])


DAMAGE = {"truncated": truncate, "emptied": lambda path: path.write_bytes(b""), "garbage": garbage,
          "not an object": lambda path: path.write_text("[1, 2, 3]\n")}


def study_of(root):
    return Study(preset_config("smoke", seeds=SEEDS), root)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """A finished smoke study (one seed) and its report, computed once."""
    root = tmp_path_factory.mktemp("smoke")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LTHFAST_CACHE", str(tmp_path_factory.mktemp("cache")))
        study = study_of(root)
        study.save_config()
        execute(study, study.plan(), Execution(stack_mode="loop"))  # loop: bit-identical however stacked
        write_report(root)
    return root


@pytest.fixture
def root(smoke, tmp_path):
    copy = tmp_path / "root"
    shutil.copytree(smoke, copy)
    return copy


def result_file(root, what):
    """The stored result of `what` (the first one), for the analysis kinds."""
    return sorted(root.glob(f"imp_*/analysis/{what}/*.json"))[0]


def numbers(path):
    document = json.loads(path.read_text())
    return document["what"], document["solutions"], document["settings"], document["result"]


def aside(path):
    return sorted(path.parent.glob(path.name + ".damaged-*"))


def report_numbers(root):
    results = json.loads((root / "report" / "results.json").read_text())
    return {k: results[k] for k in ("config", "sizes", "rewinds", "noise_seeds", "findings")}


# ------------------------------------------------------------------ analysis results and the sublevel table

@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("what", ["interpolate", "sublevel"])
def test_a_damaged_analysis_result_is_set_aside_and_computed_again(root, what, damage):
    path = result_file(root, what)
    before = numbers(path)
    DAMAGE[damage](path)
    study = study_of(root)
    made = "sublevel" if what == "sublevel" else path.stem
    [job] = [j for j in study.plan() if j.claim == f"{path.parent.parent.parent.name}/{made}"]
    with pytest.warns(UserWarning, match=f"{path.name} was damaged and is set aside .* computed again"):
        job.run()  # what the study and `analyze` run: lthfast.landscape.runs.cached
    assert numbers(path) == before
    assert len(aside(path)) == 1


def test_the_report_sets_a_damaged_result_aside_and_the_study_computes_it_again(root, smoke, capsys):
    path = result_file(root, "interpolate")
    before = numbers(path)
    truncate(path)
    with pytest.warns(UserWarning, match="was damaged and is set aside .* `python -m lthfast study --root .*` with "
                                         "the preset and flags that made it computes it again"):
        write_report(root)  # the report only reads: the damaged result is missing from it
    assert aside(path) and not path.exists()
    study = study_of(root)
    execute(study, study.plan(), Execution(stack_mode="loop"))
    assert numbers(path) == before
    write_report(root)
    assert report_numbers(root) == report_numbers(smoke)


@pytest.mark.parametrize("reader", ["power", "export"])
def test_power_and_export_set_a_damaged_result_aside_too(root, reader):
    """Every reader of the stored numbers opens them through report.results.Collector, which sets
    damaged analysis results aside first: no reader stops on one."""
    from lthfast.report import export, power
    path = result_file(root, "sublevel" if reader == "export" else "interpolate")  # export reads the table itself
    truncate(path)
    with pytest.warns(UserWarning, match="was damaged and is set aside"):
        export.write(root) if reader == "export" else power.table(root, 3)
    assert aside(path) and not path.exists()


# ------------------------------------------------------------------ the report's results.json

@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_results_json_is_set_aside_and_the_report_writes_it_again(root, smoke, damage):
    path = root / "report" / "results.json"
    DAMAGE[damage](path)
    write_report(root)
    assert report_numbers(root) == report_numbers(smoke)
    assert len(aside(path)) == 1


# ------------------------------------------------------------------ study.json

@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_study_json_is_named_in_one_line_with_the_command_that_writes_it(root, damage, capsys):
    path = root / "study.json"
    original = json.loads(path.read_text())
    DAMAGE[damage](path)
    done = subprocess.run([sys.executable, "-m", "lthfast", "report", "--root", str(root)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    [line] = [line for line in done.stderr.splitlines() if not line.startswith("warning: ")]
    assert line.startswith(f"error: {path} was damaged and is set aside as study.json.damaged-")
    assert len(aside(path)) == 1 and not path.exists()
    # It names the study command, and where the last report kept the flags that give the same study back.
    results = root / "report" / "results.json"
    assert line.endswith(f"`python -m lthfast study --root {root}` with the preset and flags that made it (the last "
                         f'report\'s: {results}, "config") writes it again')
    kept = settings.from_flags(StudyConfig, json.loads(results.read_text())["config"])
    assert json.loads(json.dumps(kept.to_dict())) == original
    # Run again (the file is set aside now), and without a report to take the flags from.
    results.unlink()
    assert cli.main(["report", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "study.json was damaged" in err
    assert err.endswith(f"`python -m lthfast study --root {root}` with the preset and flags that made it writes it "
                        "again\n")


# ------------------------------------------------------------------ the calibration and auto-mode caches

def fake_measure(measured):
    def measure(train, device, threads=None, hvp_images=None):
        measured.append(train.model)
        return Calibration(0.5, 0.01, 0.02, {"train_step": 0.1, "eval": 0.1, "hvp": 0.1}, "cpu", False,
                           "2024-01-01 00:00:00")
    return measure


def calibrated(monkeypatch):
    measured = []
    monkeypatch.setattr(calibration, "measure", fake_measure(measured))
    first = Calibration.load_or_measure(preset_config("smoke", seeds=SEEDS))
    [path] = (default_cache_dir() / "calibration").glob("*.json")
    return first, path, measured


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_calibration_is_set_aside_and_measured_again(monkeypatch, damage):
    first, path, measured = calibrated(monkeypatch)
    before = path.read_bytes()
    assert Calibration.load_or_measure(preset_config("smoke", seeds=SEEDS)) == first and len(measured) == 1
    DAMAGE[damage](path)
    with pytest.warns(UserWarning, match="was damaged and is set aside .* measured again"):
        again = Calibration.load_or_measure(preset_config("smoke", seeds=SEEDS))
    assert again == first and len(measured) == 2
    assert path.read_bytes() == before and len(aside(path)) == 1


def chosen(monkeypatch):
    """auto's choice for a stack of two, measured by fakes (grouped takes half loop's time)."""
    monkeypatch.setattr(auto, "stack_steps", lambda config, k, mode, device, *args, **kwargs: mode)
    monkeypatch.setattr(auto, "time_steps", lambda step, steps, warmup, device: {"loop": 1.0, "grouped": 0.5}[step])
    return auto.choose_mode(TrainConfig(model="resnet8", width=8, data="synthetic"), 2, torch.device("cpu"))


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_auto_mode_cache_is_set_aside_and_measured_again(monkeypatch, damage):
    assert chosen(monkeypatch) == "grouped"
    path = default_cache_dir() / "stack_modes.json"
    before = path.read_bytes()
    DAMAGE[damage](path)
    with pytest.warns(UserWarning, match="was damaged and is set aside .* measured again"):
        assert chosen(monkeypatch) == "grouped"
    assert path.read_bytes() == before and len(aside(path)) == 1


# ------------------------------------------------------------------ repair

KINDS = {
    "analysis result": lambda root: result_file(root, "interpolate"),
    "sublevel table": lambda root: result_file(root, "sublevel"),
    "study.json": lambda root: root / "study.json",
    "results.json": lambda root: root / "report" / "results.json",
    "calibration": lambda root: sorted((default_cache_dir() / "calibration").glob("*.json"))[0],
    "auto-mode cache": lambda root: default_cache_dir() / "stack_modes.json",
    "level file": lambda root: sorted(root.glob("imp_*/imp/level_01/level.json"))[0],
}
SAYS = {"analysis result": "the `study` or `analyze` command", "sublevel table": "the `study` or `analyze` command",
        "study.json": "`python -m lthfast study --root", "results.json": "`python -m lthfast report --root",
        "calibration": "measured again", "auto-mode cache": "measured again", "level file": "`imp` or `study`"}


@pytest.mark.parametrize("kind", KINDS)
def test_repair_sets_aside_each_kind_and_says_so(root, monkeypatch, capsys, kind):
    calibrated(monkeypatch)
    chosen(monkeypatch)
    path = KINDS[kind](root)
    DAMAGE["truncated"](path)
    assert cli.main(["repair", "--root", str(root)]) == 0
    out = capsys.readouterr().out.splitlines()
    [moved] = aside(path)
    [line] = [line for line in out if line.startswith("set aside: ")]
    assert moved.name in line and SAYS[kind] in line
    assert out[-1].startswith("index rebuilt: ") and out[-1].endswith("(1 damaged files set aside)")
    assert cli.main(["repair", "--root", str(root)]) == 0  # nothing is left to set aside
    assert "set aside: " not in capsys.readouterr().out


def test_repair_then_the_study_computes_a_damaged_result_again(root, capsys):
    path = result_file(root, "sublevel")
    before = numbers(path)
    garbage(path)
    assert cli.main(["repair", "--root", str(root)]) == 0
    assert "sublevel" in capsys.readouterr().out and not path.exists()
    study = study_of(root)
    execute(study, study.plan(), Execution(stack_mode="loop"))
    assert numbers(path) == before
