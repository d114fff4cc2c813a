"""A study's jobs on several processes: stacked trainings, local worker processes, a Ray
cluster, a worker killed mid-training, and two studies on one root at once. Every way ends
with the numbers one process computes alone, and every job runs once."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lthfast.study.dryrun import waves
from lthfast.study.executors import Execution
from lthfast.study.plan import Study
from lthfast.study.presets import preset_config
from lthfast.study.scheduler import batches, execute

# One seed, one level, the smoke preset's tiny ResNet: every job kind in seconds.
SMALL = dict(seeds=(0,), levels=1, rewind_zero=False, volume_directions=1, sharpness_levels=(), instability_levels=())


def stored(root):
    """{relative path: numbers} of every finished level and analysis result under root."""
    out = {}
    for path in sorted(Path(root).glob("imp_*/**/*.json")):
        record = json.loads(path.read_text())
        if path.name == "level.json":
            out[str(path.relative_to(root))] = {k: record[k] for k in ("test_accuracy", "train_loss", "baseline")}
        elif "analysis" in path.parts:
            out[str(path.relative_to(root))] = {k: v for k, v in record["result"].items() if "seconds" not in k}
    return out


def journal(root):
    return [json.loads(line)["job"] for line in (Path(root) / "journal.jsonl").read_text().splitlines()]


def run(root, execution=None, **overrides):
    """The study in this process with one thread, as each worker below runs (two workers on
    two cores, Ray's one CPU a task): floating-point sums, and so the stored numbers, are
    exact across executors at one thread count (across thread counts they agree to within
    rounding, about 1e-5 in a loss)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        study = Study(preset_config("smoke", **{**SMALL, **overrides}), root)
        study.save_config()
        execute(study, study.plan(), execution)
    finally:
        torch.set_num_threads(threads)
    return study


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    root = tmp_path_factory.mktemp("alone")
    run(root, Execution(stack=1))
    return root


def test_stacks_of_four_store_the_numbers_of_stacks_of_one(alone, tmp_path):
    run(tmp_path, Execution(stack=4, stack_mode="loop"))
    assert stored(tmp_path) == stored(alone)  # loop: bit-identical
    grouped = tmp_path / "grouped"
    run(grouped, Execution(stack=4, stack_mode="grouped"))
    got, expected = stored(grouped), stored(alone)
    assert got.keys() == expected.keys()
    for key in expected:  # grouped: within the stated tolerance of lthfast.training.stack
        if key.endswith("level.json"):
            assert got[key]["test_accuracy"] == pytest.approx(expected[key]["test_accuracy"], abs=0.05), key


def test_ready_trainings_form_stacks_spread_over_the_free_slots(alone):
    jobs = Study(preset_config("smoke", **SMALL), alone).plan()
    trainings = [j for j in jobs if j.kind == "train" and j.level == 1]
    assert len(trainings) == 6
    assert [len(b) for b in batches(trainings, slots=1, stack=4)] == [4]
    assert [len(b) for b in batches(trainings, slots=2, stack=4)] == [3, 3]
    # one of two slots free: it takes its half, the other half waits for the busy slot
    assert [len(b) for b in batches(trainings, slots=1, stack=4, all_slots=2)] == [3]
    analyses = [j for j in jobs if j.kind not in ("train", "share")][:3]
    assert [len(b) for b in batches(trainings[:1] + analyses, slots=3, stack=4)] == [1, 1, 1]


def test_a_shared_dense_network_runs_alone_before_the_trainings_and_takes_no_wave(alone):
    jobs = Study(preset_config("smoke", **{**SMALL, "rewind_zero": True}), alone).plan()
    shares = [j for j in jobs if j.kind == "share"]
    assert shares and all(j.rewind == 0 and j.level == 0 and len(j.deps) == 1 for j in shares)
    trainings = [j for j in jobs if j.kind == "train" and j.level == 1 and j.rewind != 0]
    # One slot: the share first, alone; the trainings form their stack once it is done (so a
    # stack's make-up never depends on when the share finished, and a kill changes nothing).
    assert batches(trainings + shares[:1], slots=1, stack=4) == [shares[:1]]
    # Two slots: the other slot takes its half of the trainings, as when one slot is busy.
    assert [len(b) for b in batches(trainings + shares[:1], slots=2, stack=4)] == [1, min(4, -(-len(trainings) // 2))]
    wave = waves(jobs)
    zero = [j for j in jobs if j.kind == "train" and j.rewind == 0 and j.level == 1]
    late = [j for j in jobs if j.kind == "train" and j.rewind != 0 and j.level == 1]
    assert {wave[j.key] for j in zero} == {wave[j.key] for j in late} == {1}


def test_two_local_workers_store_the_same_numbers_and_run_every_job_once(alone, tmp_path):
    run(tmp_path, Execution(workers=2, stack=2, stack_mode="loop"))
    assert stored(tmp_path) == stored(alone)
    names = journal(tmp_path)
    assert len(names) == len(set(names)) == len(Study(preset_config("smoke", **SMALL), tmp_path).plan())


def study_command(root, *extra):
    return subprocess.Popen([sys.executable, "-m", "lthfast", "study", "--preset", "smoke", "--seeds", "0",
                             "--levels", "1", "--norewind-zero", "--volume-directions", "1", "--sharpness-levels", "",
                             "--instability-levels", "", "--root", str(root), "--noreport", "--stack-mode", "loop", *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_two_studies_on_one_root_at_once_both_finish_and_every_job_runs_once(alone, tmp_path):
    procs = [study_command(tmp_path, "--stack", "1") for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert stored(tmp_path) == stored(alone)
    names = journal(tmp_path)
    assert len(names) == len(set(names)), [n for n in names if names.count(n) > 1]


def test_a_worker_killed_in_the_middle_of_a_training_costs_only_that_job(tmp_path):
    """SIGKILL to the worker process while it trains (its claim shows who it is): the pool
    starts anew, the job resumes from its checkpoint, and the numbers are the same."""
    reference = tmp_path.parent / "reference"
    run(reference, Execution(stack=1), epochs=6)
    proc = study_command(tmp_path, "--workers", "2", "--stack", "1", "--epochs", "6")
    deadline, killed = time.time() + 300, None
    while time.time() < deadline and proc.poll() is None and killed is None:
        for owner in (tmp_path / "claims").glob("*__imp__*.owner.json") if (tmp_path / "claims").exists() else []:
            try:
                info = json.loads(owner.read_text())
            except ValueError:
                continue
            checkpoints = list(tmp_path.glob("imp_*/imp/level_01/checkpoint.pt")) + \
                list(tmp_path.glob("imp_*/level_00/checkpoint.pt"))
            if info["pid"] != proc.pid and checkpoints:
                os.kill(info["pid"], signal.SIGKILL)
                killed = info
                break
        time.sleep(0.05)
    out, err = proc.communicate(timeout=600)
    assert killed is not None, err
    assert proc.returncode == 0, err
    assert stored(tmp_path) == stored(reference)


def test_ray_runs_the_study_with_a_custom_resource_for_gpus(alone, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, resources={"fake_gpu": 2}, include_dashboard=False, ignore_reinit_error=True)
    try:
        run(tmp_path, Execution(executor="ray", address="auto", cpus_per_job=1, gpus_per_job=0.5,
                                gpu_resource="fake_gpu", stack=2, stack_mode="loop"))
    finally:
        ray.shutdown()
    assert stored(tmp_path) == stored(alone)
    names = journal(tmp_path)
    assert len(names) == len(set(names))


def test_a_study_grown_in_its_root_recomputes_what_depends_on_the_new_trainings(tmp_path):
    """A stored result whose inputs the new trainings change (the sublevel table covers every
    level) is checked again once they are made, not counted as stored from the start."""
    small = {**SMALL, "volume_directions": 1, "strategies": ("imp",)}
    run(tmp_path, Execution(stack=1), **small)
    grown = preset_config("smoke", **{**small, "levels": 2})
    execute(Study(grown, tmp_path), Study(grown, tmp_path).plan(), Execution(stack=1))
    assert all(job.done() for job in Study(grown, tmp_path).plan())
