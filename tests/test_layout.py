"""The layout the README's ARCHITECTURE section draws: no module imports one above it, no
file over about 400 lines, and the run store of the previous layout still opens."""
import ast
import shutil
from pathlib import Path

import pytest

from lthfast import store, strategies
from lthfast.data import load_dataset
from lthfast.imp import ImpRun
from lthfast.report import write_report
from lthfast.study import Study
from lthfast.study_config import load_study_config

PACKAGE = Path(__file__).resolve().parents[1] / "lthfast"
# Layers from the bottom (README, "Architecture"): a module may import its own layer and those below.
LAYERS = [
    ["errors", "settings", "storage", "signals", "hardware", "stats", "claims", "published"],
    ["kernels", "extension"],
    ["ops"],
    ["models", "data", "flat", "pruning", "config", "stacked"],
    ["store", "strategies", "optim", "evaluation", "plots"],
    ["stack_member", "stack_engines", "stack_auto", "stack", "trainer", "landscape", "hessian", "volume"],
    ["imp", "analysis", "calibration"],
    ["geometry", "sublevel"],
    ["study_config", "results", "findings", "figures", "report", "study", "power", "executors"],
    ["flags", "cli_analyze", "cli_study", "cli", "__main__", "__init__"],
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]  # lthfast/kernels/<op>/... all belong to "kernels"


def imported(path: Path) -> set[str]:
    """The lthfast modules `path` imports, at top level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lthfast":
            parts = node.module.split(".")
            if len(parts) > 1:
                names.add(parts[1])
            else:
                names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[1] for a in node.names if a.name.startswith("lthfast."))
    return names


def test_no_module_imports_one_above_it():
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 30
    for path in sources:
        own = module_name(path)
        assert own in RANK, f"{path} is in no layer of the architecture"
        for name in imported(path):
            assert name in RANK, f"{path} imports lthfast.{name}, which is in no layer"
            assert RANK[name] <= RANK[own], f"{own} (layer {RANK[own]}) imports {name} (layer {RANK[name]})"
    assert "study" not in imported(PACKAGE / "report.py")  # the report reads the store, not the planner


def test_no_file_is_over_about_400_lines():
    for path in list(PACKAGE.rglob("*.py")) + list(PACKAGE.parent.glob("tests/*.py")):
        assert len(path.read_text().splitlines()) <= 420, path


@pytest.fixture
def legacy(tmp_path):
    """A run store written by lthfast at 4027e92, before the store module (tests/fixtures)."""
    root = tmp_path / "legacy"
    shutil.copytree(Path(__file__).parent / "fixtures" / "store_v0", root)
    return root


def test_a_store_of_the_previous_layout_opens_and_nothing_is_recomputed(legacy):
    config = load_study_config(legacy)
    jobs = Study(config, legacy).plan()
    assert len(jobs) == 15
    # Every training and analysis is found, but sharpness: its power iteration was replaced by
    # Lanczos (issue 12), so its stored results have other settings and are computed again.
    assert [job.key for job in jobs if not job.done()] == [job.key for job in jobs if job.kind == "sharpness"] != []
    run = store.Run.open(next(legacy.glob("imp_*")))
    assert run.levels("imp") == [0, 1] and run.levels("finetune") == [0, 1]
    assert run.solution("finetune:1:baseline").weights.exists()
    assert "finetune" in store.Store(legacy).summary_table()
    results = write_report(legacy).parent / "results.json"
    assert results.exists() and '"verdict"' in results.read_text()


def test_a_new_strategy_is_one_table_entry(legacy, monkeypatch):
    """Random reinitialization of imp's mask trained from the late rewind point: one entry."""
    entry = strategies.Strategy("reinit-late", "imp", "imp-mask", strategies.fresh_init, "rewind", "schedule",
                                "imp's mask m_k, a fresh initialization, trained from the rewind point")
    monkeypatch.setitem(strategies.STRATEGIES, "reinit-late", entry)
    config, steps = load_study_config(legacy), []
    imp_run = ImpRun(config.imp_config(0, config.rewind_iter), legacy, load_dataset("synthetic", train_subset=64),
                     on_iteration=steps.append)
    imp_run.level("reinit-late", 1)
    run = store.Run.open(imp_run.dir)
    assert run.levels("reinit-late") == [0, 1]
    new, imp = run.solution("reinit-late:1").load(), run.solution("imp:1").load()
    assert all((new[1][n] == imp[1][n]).all() for n in imp[1])  # imp's mask m_1
    assert steps == [2]  # trained from the rewind point (iteration 1) to the end (iteration 2) only
