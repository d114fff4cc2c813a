"""`python -m lthfast export` and lthfast.report.frame: a study's stored numbers as one table,
checked against the stored smoke study tests/fixtures/store_v1 (one seed, every strategy at
R = 1, imp at R = 0, every analysis stored) read here directly, file by file, and against
the column list of the README ("Results as a table")."""
import csv
import io
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lthfast.foundations.errors import LthError
from lthfast.report import export, frame

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "store_v1"
LATE, ZERO = "imp_b07083bfec37", "imp_cedd3f373bd5"  # the fixture's runs at R = 1 and R = 0


@pytest.fixture
def root(tmp_path):
    copy = tmp_path / "study"
    shutil.copytree(FIXTURE, copy)
    return copy


def readme_columns() -> list[str]:
    """The columns the README documents, in its order: the first cell of each table row."""
    section = (REPO / "README.md").read_text().split("### Results as a table", 1)[1].split("\n#", 1)[0]
    return [line.split("`")[1] for line in section.splitlines() if line.startswith("| `")]


def read_table(path: Path) -> tuple[list[str], list[dict]]:
    text = path.read_text()
    return next(csv.reader(io.StringIO(text))), list(csv.DictReader(io.StringIO(text)))


def stored(root: Path, run: str, what: str, name: str) -> dict:
    """The one stored result of analysis `what` on the solutions `name` (a file-name stem)."""
    (path,) = (root / run / "analysis" / what).glob(f"{name}__*.json")
    return json.loads(path.read_text())["result"]


def row_of(rows, rewind, strategy, level) -> dict:
    (row,) = [r for r in rows if (r["rewind_iter"], r["strategy"], r["level"]) == (str(rewind), strategy, str(level))]
    return row


def number(cell: str):
    return None if cell == "" else float(cell)


def test_the_columns_are_the_documented_ones(root):
    documented = readme_columns()
    assert len(documented) == len(set(documented)) > 20
    assert list(export.COLUMNS) == documented
    header, _ = read_table(export.write(root))
    assert header == documented


def test_one_row_per_stored_level(root):
    """Counted here from the level folders: one row per level.json, the dense one included."""
    expected = set()
    for record_path in root.glob("imp_*/**/level.json"):
        record = json.loads(record_path.read_text())
        run = json.loads((root / record_path.relative_to(root).parts[0] / "config.json").read_text())
        expected.add((str(record["seed"]), str(run["train"]["rewind_iter"]), record["strategy"], str(record["level"])))
    path = export.write(root)
    assert path == root / "report" / "results.csv"
    _, rows = read_table(path)
    found = [(r["seed"], r["rewind_iter"], r["strategy"], r["level"]) for r in rows]
    assert len(found) == len(set(found)) == len(expected) == 9
    assert set(found) == expected
    assert [r["strategy"] for r in rows if r["level"] == "0"] == ["imp", "imp"]  # once per rewind point


def test_the_numbers_are_the_stored_records_and_analyses(root):
    _, rows = read_table(export.write(root))
    for rewind, run, strategy in [(1, LATE, "imp"), (1, LATE, "finetune"), (1, LATE, "random-prune"), (0, ZERO, "imp")]:
        record = json.loads((root / run / strategy / "level_01" / "level.json").read_text())
        row = row_of(rows, rewind, strategy, 1)
        for key in ("density", "test_accuracy", "test_loss", "train_accuracy", "train_loss"):
            assert number(row[key]) == record[key], (strategy, key)
        for key, value in record["baseline"].items():
            assert number(row[f"baseline_{key}"]) == value, (strategy, key)

    late = row_of(rows, 1, "imp", 1)
    curve, dist = stored(root, LATE, "interpolate", "imp-0__imp-1"), stored(root, LATE, "distance", "imp-0__imp-1")
    assert number(late["successive_barrier_train_loss"]) == curve["barrier_train_loss"]
    assert number(late["successive_barrier_test_error"]) == curve["barrier_test_error"]
    assert number(late["successive_l2_distance"]) == dist["l2"]
    assert number(late["successive_relative_distance"]) == dist["relative"]
    path = stored(root, LATE, "prune-path", "imp-0__imp-1-baseline")
    assert number(late["prune_path_barrier_train_loss"]) == path["barrier_train_loss"]
    assert number(late["prune_path_barrier_test_error"]) == path["barrier_test_error"]
    escape = stored(root, LATE, "interpolate", "imp-1-baseline__imp-1")
    assert number(late["from_baseline_barrier_test_error"]) == escape["barrier_test_error"] > 0
    assert number(late["from_baseline_l2_distance"]) == stored(root, LATE, "distance", "imp-1-baseline__imp-1")["l2"]
    volume, sharp = stored(root, LATE, "volume", "imp-1"), stored(root, LATE, "sharpness", "imp-1")
    assert (number(late["radius_mean"]), number(late["log_volume"])) == (volume["radius_mean"], volume["log_volume"])
    assert (number(late["top_eigenvalue"]), number(late["hessian_trace"])) == (sharp["top_eigenvalue"], sharp["trace"])

    finetune = row_of(rows, 1, "finetune", 1)
    escape = stored(root, LATE, "distance", "imp-1-baseline__finetune-1")
    assert (number(finetune["from_baseline_l2_distance"]), number(finetune["from_baseline_relative_distance"])) \
        == (escape["l2"], escape["relative"])
    assert finetune["successive_barrier_test_error"] == finetune["radius_mean"] == ""  # imp's analyses only

    dense = row_of(rows, 1, "imp", 0)
    assert number(dense["radius_mean"]) == stored(root, LATE, "volume", "imp-0")["radius_mean"]
    assert dense["baseline_train_loss"] == dense["successive_l2_distance"] == dense["top_eigenvalue"] == ""

    zero = row_of(rows, 0, "imp", 1)  # R = 0: the successive curve only (the study plans no other there)
    assert number(zero["successive_barrier_train_loss"]) == \
        stored(root, ZERO, "interpolate", "imp-0__imp-1")["barrier_train_loss"]
    assert number(zero["successive_l2_distance"]) == stored(root, ZERO, "distance", "imp-0__imp-1")["l2"]
    assert zero["prune_path_barrier_test_error"] == zero["from_baseline_l2_distance"] == zero["radius_mean"] == ""


def test_in_sublevel_set_is_the_stored_sublevel_table(root):
    from lthfast.landscape import sublevel
    from lthfast.landscape.runs import AnalysisRun
    # The fixture's tables were stored under the earlier eps rule: the study computes them again
    # (eps from the dense network), and the export reads that table, not the stale one.
    tables = {run: sublevel.table(AnalysisRun(root / run, device="cpu"))["path"] for run in (LATE, ZERO)}
    _, rows = read_table(export.write(root))
    for rewind, run in [(1, LATE), (0, ZERO)]:
        assert len(list((root / run / "analysis" / "sublevel").glob("run__*.json"))) == 2  # the stale one kept
        table = json.loads(Path(tables[run]).read_text())["result"]
        solutions = {row["label"]: row["inside"] for row in table["rows"] if row["kind"] == "solution"}
        mine = [r for r in rows if r["rewind_iter"] == str(rewind)]
        assert {f"{r['strategy']}:{r['level']}": r["in_sublevel_set"] for r in mine} == \
            {label: str(int(inside)) for label, inside in solutions.items()}


def test_frame_is_the_same_table(root):
    pandas = pytest.importorskip("pandas")
    table = frame(root)
    assert isinstance(table, pandas.DataFrame)
    assert list(table.columns) == list(export.COLUMNS)
    _, rows = read_table(export.write(root))
    assert len(table) == len(rows) == 9
    for (_, got), row in zip(table.iterrows(), rows):
        for column in export.COLUMNS:
            if column == "strategy":
                assert got[column] == row[column]
            elif row[column] == "":
                assert math.isnan(got[column]), column
            else:
                assert got[column] == float(row[column]), column


def test_frame_without_pandas_is_one_line_naming_the_extra(root, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` now raises ImportError
    with pytest.raises(LthError) as caught:
        frame(root)
    message = str(caught.value)
    assert "pip install -e '.[pandas]'" in message and "\n" not in message


def test_importing_the_export_loads_no_plotting():
    code = "import sys, lthfast.report.export; from lthfast.report import frame; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def lthfast(*args):
    return subprocess.run([sys.executable, "-m", "lthfast", "export", *args], capture_output=True, text=True,
                          check=False, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_the_command_writes_the_table_and_prints_its_path(root, tmp_path):
    result = lthfast("--root", str(root))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(root / "report" / "results.csv")
    assert (root / "report" / "results.csv").read_text() == export.csv_text(root)
    out = tmp_path / "tables" / "mine.csv"
    result = lthfast("--root", str(root), "--out", str(out))
    assert result.returncode == 0 and result.stdout.strip() == str(out) and out.exists()


def test_the_command_rejects_bad_input_with_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = lthfast("--root", str(empty))
    assert result.returncode == 2
    assert result.stderr.startswith("error: no study under") and len(result.stderr.strip().splitlines()) == 1
    assert not (empty / "report").exists()
    shutil.copytree(FIXTURE, tmp_path / "study")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = lthfast("--root", str(tmp_path / "study"), "--out", str(blocker / "results.csv"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot write") and len(result.stderr.strip().splitlines()) == 1
