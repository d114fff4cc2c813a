"""A new analysis is one module-level function plus one registry entry: the planner plans it
on its targets, `python -m lthfast analyze` runs it, and the report tabulates it."""
import json
import shutil
from pathlib import Path

import pytest

from lthfast.cli import main as cli
from lthfast.landscape import registry
from lthfast.landscape.runs import cached
from lthfast.report.markdown import write_report
from lthfast.store.layout import load_study_config
from lthfast.study.executors import Execution
from lthfast.study.plan import Study
from lthfast.study.scheduler import execute

FIXTURE = Path(__file__).parent / "fixtures" / "store_v1"


def weight_norm(run, solutions, settings, compute, force=False):
    """The toy analysis: the L2 norm of a solution's unpruned weights."""
    def measure():
        theta, mask = solutions[0].load()
        return {"norm": float(sum((theta[n].float()[mask[n]] ** 2).sum() for n in mask)) ** 0.5}
    return cached(run, "weight-norm", solutions, {}, measure, force)


ENTRY = registry.Analysis("weight-norm", weight_norm, lambda settings, study, calibration: 0.1, ("level",),
                          lambda result: {"norm": result["norm"]}, help="the norm of the unpruned weights")


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.ANALYSES, ENTRY.name, ENTRY)
    shutil.copytree(FIXTURE, tmp_path / "store")
    return tmp_path / "store"


def test_a_registered_analysis_is_planned_run_and_reported(root):
    study = Study(load_study_config(root), root)
    jobs = study.plan()
    new = [job for job in jobs if not job.done()]
    # one-parent is newer than the stored study too (lthfast.landscape.oneparent): planned first, at level 1;
    # the sublevel tables are computed again under the eps rule of the dense network.
    new = [job for job in new if job.kind != "sublevel"]
    assert [job.key for job in new] == ["seed0/R1/one-parent imp:0", "seed0/R1/weight-norm imp:0",
                                        "seed0/R1/weight-norm imp:1"]
    assert new[2].deps == ["seed0/R1/train imp:1"] and new[2].cost == 0.1
    execute(study, jobs, Execution())
    assert all(job.done() for job in jobs)
    write_report(root)
    results = json.loads((root / "report" / "results.json").read_text())
    rows = results["rewinds"]["1"]["analyses"]["weight-norm"]
    assert [row["solutions"] for row in rows] == [["imp:0"], ["imp:1"]]
    assert rows[1]["norm"]["mean"] < rows[0]["norm"]["mean"]  # pruning removed weights
    assert "The weight-norm analysis at R = 1" in (root / "report" / "REPORT.md").read_text()


def test_a_registered_analysis_is_an_analyze_command(root, capsys):
    run = root / "imp_b07083bfec37"
    assert cli.main(["analyze", "weight-norm", str(run), "--solution", "imp:1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("imp:1: norm ") and "weight-norm" in out
    assert cli.main(["analyze", "weight-norm", str(run), "--points", "3"]) == 2  # no such flag for it
