"""The command line as a user meets it: subprocesses, exit codes, one-line errors."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lthfast.foundations.files import load_tensors

SMALL = ["--model", "resnet8", "--data", "synthetic", "--train-subset", "256", "--batch-size", "64"]


def lthfast(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "lthfast", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_train_prints_run_folder_and_writes_metrics(tmp_path):
    result = lthfast("train", *SMALL, "--epochs", "2", "--root", str(tmp_path), "--seed", "0")
    assert result.returncode == 0, result.stderr
    run = Path(result.stdout.strip().splitlines()[-1])
    assert run.parent == tmp_path and run.name.startswith("train_")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["finished"] and len(metrics["history"]) == 2
    for key in ("test_accuracy", "test_loss", "train_loss"):
        assert isinstance(metrics[key], float)
    again = lthfast("train", *SMALL, "--epochs", "2", "--root", str(tmp_path), "--seed", "0")
    assert again.stdout.strip().splitlines()[-1] == str(run)
    assert "epoch 1/2" not in again.stderr  # found, not trained again


def test_help_describes_every_flag():
    top = lthfast("--help")
    assert top.returncode == 0 and "train" in top.stdout
    sub = lthfast("train", "--help")
    assert sub.returncode == 0
    for flag in ("model", "data-dir", "train-subset", "epochs", "milestones", "warmup-iters",
                 "rewind-iter", "precision", "backend", "root", "seed"):
        assert f"  --{flag} " in sub.stdout, flag
    assert "(default: 160; an integer >= 1)" in sub.stdout  # --epochs: its declaration's default and range


def _every_command():
    from lthfast.cli import analyze
    from lthfast.cli import main as cli
    cli.COMMANDS["analyze"] = analyze.commands()
    for name, target in cli.COMMANDS.items():
        yield from ([[name, sub] for sub in target] if isinstance(target, dict) else [[name]])


def test_help_lists_exactly_the_flag_forms_the_command_line_accepts():
    """Every flag form a command's help shows is accepted by the parser, every parameter is
    shown, and no short form (which the parser refuses) appears."""
    import inspect
    import re

    from lthfast.cli import main as cli
    commands = list(_every_command())
    assert len(commands) > 12
    for path in commands:
        text = cli._help(path + ["--help"])
        forms = re.findall(r"^  (--[a-z0-9-]+)(?: / (--no[a-z0-9-]+)| ([A-Z0-9_]+))$", text, re.M)
        target = cli.COMMANDS[path[0]] if len(path) == 1 else cli.COMMANDS[path[0]][path[1]]
        params = [n for n, p in inspect.signature(target).parameters.items() if p.kind != p.VAR_KEYWORD]
        assert [flag[2:].replace("-", "_") for flag, _, _ in forms] == params, path
        assert not re.search(r"^\s+-[A-Za-z]", text, re.M), (path, "a short flag in the help")
        for flag, negative, _ in forms:
            if negative:
                for argv in ([flag], [negative], [flag, "false"]):
                    cli._check_flags(path + argv)
            else:
                cli._check_flags(path + [flag, "1"])
                cli._check_flags(path + [f"{flag}=1"])
        with pytest.raises(cli.LthError, match="short flags"):
            cli._check_flags(path + ["-r", "x"])


@pytest.mark.parametrize("args,message", [
    (["train", "--model", "alexnet"], "unknown model 'alexnet'; known models: resnet20"),
    (["train", "--epochs", "-3"], "--epochs must be an integer >= 1"),
    (["train", "--data-dir", "/nonexistent/cifar"], "data folder /nonexistent/cifar does not exist"),
    (["train", "--precision", "fp16"], "--precision must be one of auto, fp32, bf16"),
    (["train", "--milestones", "a,b"], "--milestones must be positive epoch numbers"),
    (["train", "--bogus", "1"], "unknown flag --bogus"),
    (["train", "--device", "tpu"], "--device must be auto, cpu or cuda"),
    (["fly"], "unknown command 'fly'"),
    (["imp", "--prune-fraction", "1.2"], "--prune-fraction must be in (0, 1)"),
    (["imp", "--levels", "0"], "--levels must be an integer >= 1"),
    (["imp", "--strategy", "oneshot", "--sparsities", "0.5,1.0"], "sparsity 1.0 leaves no weight"),
    (["imp", "--strategy", "lottery"], "unknown strategy 'lottery'"),
    (["summary"], "no finished levels under"),
])
def test_bad_input_is_one_line_error(args, message, tmp_path):
    result = lthfast(*args, "--root", str(tmp_path)) if args[0] != "fly" else lthfast(*args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"error: {lines[0][7:]}"] and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def start_train(root, epochs):
    return subprocess.Popen([sys.executable, "-m", "lthfast", "train", *SMALL, "--epochs", str(epochs),
                             "--root", str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_for(path, proc, timeout=120):
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, "run ended before it could be stopped"
        assert time.time() < deadline
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_resumes_to_the_same_weights(tmp_path, sig):
    whole = lthfast("train", *SMALL, "--epochs", "5", "--root", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    proc = start_train(tmp_path / "killed", 5)
    (run,) = [Path(whole.stdout.strip().splitlines()[-1]).name]
    wait_for(tmp_path / "killed" / run / "checkpoint.pt", proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGTERM:  # a graceful stop saves a checkpoint and says how to resume
        assert proc.returncode == 130 and "run the same command to resume" in err
    assert not (tmp_path / "killed" / run / "final.pt").exists()
    resumed = lthfast("train", *SMALL, "--epochs", "5", "--root", str(tmp_path / "killed"))
    assert resumed.returncode == 0, resumed.stderr
    a = load_tensors(tmp_path / "whole" / run / "final.pt")
    b = load_tensors(tmp_path / "killed" / run / "final.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_every_config_field_is_a_train_flag_with_the_same_default():
    import inspect
    from dataclasses import fields

    from lthfast.cli.main import train
    from lthfast.config.runs import TrainConfig

    params = inspect.signature(train).parameters
    for f in fields(TrainConfig):
        assert f.name in params and params[f.name].default == f.default, f.name
