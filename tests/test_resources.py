"""Requests beyond the machine and services that do not answer (issue 23, kinds 1 and 2): each
is one line (exit 2) before any job, or within seconds; more CPU workers than cores is one
warning, and the study proceeds (lthfast.study.resources says why). Each test fails if its
check is removed: the command then reaches planning (Reached), hangs past a deadline that
frees what it waits for (and then succeeds), or prints no line."""
import importlib.util
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
import types
import warnings

import pytest
import torch

import lthfast.cli.study
from lthfast.cli.main import main
from lthfast.foundations import hardware
from lthfast.foundations.errors import LthError
from lthfast.store import claims
from lthfast.study import resources

GIB = 2 ** 30


class Reached(Exception):
    """The command got past its checks to planning (where a job would be next)."""


@pytest.fixture
def stops_at_planning(monkeypatch):
    def reached(*args, **kwargs):
        raise Reached()
    monkeypatch.setattr(lthfast.cli.study.Calibration, "load_or_measure", reached)


@pytest.fixture
def machine(monkeypatch):
    """A CPU machine of 2 cores and 4 GiB free, whose interpreter takes 300 MiB."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(hardware, "cpu_cores", lambda: 2)
    monkeypatch.setattr(hardware, "free_memory", lambda device: 4 * GIB)
    monkeypatch.setattr(resources, "interpreter_bytes", lambda: 300 * 2 ** 20)


def study(tmp_path, *flags):
    return main(["study", "--preset", "smoke", "--device", "cpu", "--root", str(tmp_path), *flags])


def one_error_line(capsys, *words):
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for word in words:
        assert word in err, err
    return err


# ----------------------------------------------------------------------------- the machine

def test_more_workers_than_cores_warn_once_and_proceed(machine, stops_at_planning, tmp_path):
    with pytest.warns(UserWarning) as record, pytest.raises(Reached):
        study(tmp_path, "--workers", "3", "--dry-run")
    lines = [str(w.message) for w in record if "CPU cores" in str(w.message)]
    assert len(lines) == 1 and "--workers 3" in lines[0] and "2 CPU cores" in lines[0], lines


def test_workers_beyond_the_memory_are_one_line_before_any_job(machine, stops_at_planning, tmp_path, capsys):
    assert study(tmp_path, "--workers", "16", "--dry-run") == 2
    err = one_error_line(capsys, "--workers 16", "4.0 GiB of free memory", "the most that fits is ")
    fits = int(err.split("the most that fits is ")[1].split()[0])
    assert 1 <= fits < 16
    with pytest.raises(Reached), warnings.catch_warnings(record=True):  # the largest value named fits (past the cores)
        study(tmp_path, "--workers", str(fits), "--dry-run")


@pytest.mark.parametrize("flag, fits_text", [("--stack", "the largest stack that fits is "),
                                             ("--batch-size", "the largest batch size that fits is ")])
def test_a_stack_or_batch_size_beyond_the_memory_is_one_line_before_any_job(flag, fits_text, machine,
                                                                           stops_at_planning, tmp_path, capsys):
    huge = "100000" if flag == "--stack" else "10000000"
    assert study(tmp_path, flag, huge, "--dry-run") == 2
    err = one_error_line(capsys, f"{flag} {huge}", "4.0 GiB of free cpu memory", fits_text)
    fits = err.split(fits_text)[1].split()[0]
    with pytest.raises(Reached):  # the largest value named fits
        study(tmp_path, flag, fits, "--dry-run")


@pytest.fixture
def cluster(monkeypatch):
    """A Ray module whose cluster has one node of 2 CPUs and 1 GPU (nothing started)."""
    fake = types.SimpleNamespace(is_initialized=lambda: False, init=lambda **kwargs: None,
                                 nodes=lambda: [{"Alive": True, "Resources": {"CPU": 2.0, "GPU": 1.0}}])
    monkeypatch.setitem(sys.modules, "ray", fake)
    return fake


@pytest.mark.parametrize("flag, value, fits", [("--gpus-per-job", "2", "1"), ("--cpus-per-job", "4", "2")])
def test_a_job_beyond_the_cluster_is_one_line_before_any_job(machine, cluster, stops_at_planning, tmp_path, capsys,
                                                              flag, value, fits):
    assert study(tmp_path, "--executor", "ray", "--address", "auto", flag, value) == 2
    one_error_line(capsys, f"{flag} {value} is more", "the Ray cluster at auto", f"the most that fits is {fits}")
    with pytest.raises(Reached):
        study(tmp_path, "--executor", "ray", "--address", "auto", flag, fits)


# ----------------------------------------------------------------------------- what does not answer

@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (pip install -e '.[ray]')")
def test_a_refused_ray_address_fails_in_seconds_with_one_line(tmp_path):
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "lthfast", "study", "--preset", "smoke", "--executor", "ray",
                           "--address", "127.0.0.1:1", "--root", str(tmp_path)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "OMP_NUM_THREADS": "1"})
    seconds = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "127.0.0.1:1" in proc.stderr and "refused" in proc.stderr, proc.stderr
    assert seconds < 15, seconds


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (pip install -e '.[ray]')")
def test_a_ray_address_that_accepts_but_does_not_answer_is_given_up_with_one_line(tmp_path):
    silent = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    address = f"127.0.0.1:{silent.getsockname()[1]}"
    start = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", "lthfast", "study", "--preset", "smoke", "--executor", "ray",
                               "--address", address, "--connect-timeout", "3", "--root", str(tmp_path)],
                              capture_output=True, text=True, timeout=60, env={**os.environ, "OMP_NUM_THREADS": "1"})
    finally:
        silent.close()
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and address in proc.stderr and "within 3 s" in proc.stderr, proc.stderr
    assert time.monotonic() - start < 30


def waited(message: str) -> float:
    """The seconds a lock's message says it waited."""
    return float(re.search(r"within ([0-9.]+) s", message).group(1))


def hold(path):
    """A process holding the file lock at `path` until it is killed."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from filelock import FileLock
        lock = FileLock({str(path)!r})
        lock.acquire()
        print("held", flush=True)
        time.sleep(120)""")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_lock_that_another_process_keeps_is_one_line_naming_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(claims, "LOCK_TIMEOUT", 1.0)
    holder = hold(tmp_path / "index.jsonl.lock")
    release = threading.Timer(15, holder.kill)  # without the timeout, repair waits until then, and succeeds
    release.start()
    try:
        start = time.monotonic()
        assert main(["repair", "--root", str(tmp_path)]) == 2
        assert time.monotonic() - start < 10
    finally:
        release.cancel()
        holder.kill()
        holder.wait()
        holder.stdout.close()
    err = one_error_line(capsys, f"the lock {tmp_path / 'index.jsonl.lock'}", "network file system")
    assert 1.0 <= waited(err) < 10, err


def test_a_lock_call_that_never_returns_is_given_up(monkeypatch, tmp_path):
    """A network file system whose lock service is down: the lock call itself does not return."""
    monkeypatch.setattr(claims, "LOCK_TIMEOUT", 0.5)
    answered = threading.Event()

    class Unanswered(claims.FileLock):
        def acquire(self, *args, **kwargs):
            answered.wait(10)  # then, as if answered: without the timeout, the claim is held
            return super().acquire(*args, **kwargs)
    monkeypatch.setattr(claims, "FileLock", Unanswered)
    start = time.monotonic()
    try:
        with pytest.raises(LthError) as error:
            with claims.Claim(tmp_path, "imp_ab12/imp/level_01"):
                pass
    finally:
        answered.set()
    assert time.monotonic() - start < 5
    message = str(error.value)
    assert "\n" not in message and str(tmp_path / "claims") in message and 0.5 <= waited(message) < 5, message


def test_a_download_that_does_not_answer_is_given_up_with_one_line(monkeypatch, tmp_path):
    torchvision = pytest.importorskip("torchvision")
    from lthfast.data import cifar10, sources
    silent = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/cifar-10-python.tar.gz"
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", url)
    monkeypatch.setattr(sources, "DOWNLOAD_TIMEOUT", 1.0)
    monkeypatch.setenv("no_proxy", "*")
    hang_up = threading.Timer(15, silent.close)  # without the timeout the download waits until then
    hang_up.start()
    start = time.monotonic()
    try:
        with pytest.raises(LthError) as error:
            cifar10.load(None, tmp_path)
    finally:
        hang_up.cancel()
        silent.close()
    assert time.monotonic() - start < 10
    message = str(error.value)
    assert "\n" not in message and url in message and "no answer for 1 s" in message, message
