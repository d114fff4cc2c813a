"""Several processes on one root: reports written at once, a report written while a study
runs, and signals at any moment of a command (one line, exit status 130)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lthfast.report.markdown import write_report
from lthfast.store import claims

FIXTURE = Path(__file__).parent / "fixtures" / "store_v0"


@pytest.fixture
def legacy(tmp_path):
    root = tmp_path / "legacy"
    shutil.copytree(FIXTURE, root)
    return root


def lthfast(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "lthfast", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_two_reports_at_once_both_finish(legacy):
    for _ in range(3):
        procs = [lthfast("report", "--root", str(legacy)) for _ in range(2)]
        outs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
    text = (legacy / "report" / "REPORT.md").read_text()
    assert text.count("**R = 1: ") == 7  # a verdict per finding
    assert not [p for p in (legacy / "report").rglob("*") if ".tmp" in p.name]


def test_a_report_written_while_a_study_runs_says_so(legacy):
    with claims.working(legacy, "study (15 jobs)"):
        text = write_report(legacy).read_text()
    assert "Written while a study was still running in this root" in text.split("## The seven findings")[0]
    assert "Written while a study" not in write_report(legacy).read_text()  # the marker left with the study


def test_a_marker_of_a_process_that_is_gone_is_ignored(legacy):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    marker = legacy / "running" / "gone.json"
    marker.parent.mkdir()
    marker.write_text(json.dumps({"what": "study", "host": socket.gethostname(), "pid": int(dead.stdout),
                                  "started": "then"}))
    assert claims.working_now(legacy) == []


@pytest.mark.parametrize("delay", [0.3, 1.0, 2.5])
def test_a_signal_at_start_up_is_one_line_and_exit_130(tmp_path, delay):
    """SIGTERM while lthfast imports torch, while the CLI starts, or while calibrating (the
    first few tens of milliseconds, while the Python interpreter itself starts, are before any
    handler can exist)."""
    proc = lthfast("study", "--preset", "smoke", "--dry-run", "--root", str(tmp_path / "r"),
                   env={**os.environ, "LTHFAST_CACHE": str(tmp_path / "cache")})
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the dry run finished before the signal")
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("error: interrupted (SIGTERM)"), err


def test_a_signal_held_by_a_deferred_block_that_never_checks_it_still_ends_with_130(capsys, monkeypatch):
    """The audit saw `study --dry-run` exit 0 after a SIGTERM: a signal that a deferred block
    (or a library's `except BaseException`) held without acting on it must still stop the
    command with one line and exit 130."""
    from lthfast.cli import main as cli
    from lthfast.foundations import signals

    def probe():
        with signals.deferred():  # no `after`, no check: the signal is only recorded
            os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setitem(cli.COMMANDS, "probe", probe)
    assert cli.main(["probe"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: interrupted (SIGTERM); run the same command again to continue"], err
    assert signals.stop_requested() is None  # forgotten after the command
