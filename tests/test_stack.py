"""Stacked training (lthfast.training.stack): K trainings together equal K separate runs.

The trainings run on the default device (CUDA where there is one: bench/gpu_check.py runs
this file on a GPU); the single-step comparisons and the CPU-only checks pin the CPU.

Three jobs of ResNet-8 (width 8) on 120 synthetic images at batch 32 (4 steps an epoch,
the last one partial), with different masks, seeds, data orders, start iterations,
learning rates and lengths:
  a  seed 0, iterations 0..24, lr 0.1 with milestones, rewind point 6
  b  seed 1, iterations 6..28 from other start weights (as IMP's rewinding), lr 0.1: its
     partial batches fall on other steps than a's (grouped mode's loop steps)
  c  seed 2, iterations 0..12, constant lr 0.001: leaves the stack after 12 steps
"""
import os
import signal

import pytest
import torch

from lthfast import ops
from lthfast.config.runs import TrainConfig
from lthfast.data.dataset import Dataset, EpochPlan
from lthfast.data.loading import load_dataset
from lthfast.foundations.errors import Interrupted, LthError
from lthfast.foundations.files import load_tensors, read_json
from lthfast.models.families import create_model, prunable_names
from lthfast.training.auto import choose_mode
from lthfast.training.engines import make_engine
from lthfast.training.network import place_mask
from lthfast.training.optim import StackedMaskedSGD
from lthfast.training.stack import TrainJob, train_stack
from lthfast.training.trainer import train

BASE = dict(model="resnet8", width=8, data="synthetic", train_subset=120, batch_size=32, eval_batch_size=256,
            precision="fp32")
# Grouped mode computes the same sums in another order: every step agrees with loop's within
# rounding (test_grouped_follows_loop_step_by_step). Over many steps at lr 0.1 from a fresh
# start rounding differences grow: the training is chaotic (a ReLU input that crosses zero
# makes the gradient jump), and a single run whose start is nudged by 1e-7 drifts further
# than the grouped stack does. Measured (fp32, CPU) after 20-28 steps: grouped vs alone
# 9e-4 (weights), 3e-4 (BatchNorm statistics), 5e-3 (momentum); alone vs alone nudged
# 3e-3 to 1e-2; at lr 0.001 both ~1e-7. Hence a bound of 10x the measured after 20 steps.
GROUPED_AFTER_20 = dict(rtol=0, atol=5e-2)
GROUPED_ONE_STEP = dict(rtol=0, atol=5e-6)

def data():
    full = load_dataset("synthetic", train_subset=120)
    return Dataset(full.train_x, full.train_y, full.test_x[:100], full.test_y[:100])  # evaluations are cheap


def random_mask(seed, density):
    model = create_model("resnet8", 8)
    params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(params[n].shape, generator=g) < density for n in prunable_names(model)}


def three_jobs(root):
    return [
        TrainJob(TrainConfig(**BASE, seed=0, epochs=6, rewind_iter=6), root / "a", random_mask(1, 0.3)),
        TrainJob(TrainConfig(**BASE, seed=1, epochs=7, data_seed=11), root / "b", random_mask(2, 0.5),
                 create_model("resnet8", 8, seed=5).state_dict(), start_iteration=6),
        TrainJob(TrainConfig(**BASE, seed=2, epochs=3, lr=0.001, milestones=()), root / "c", random_mask(3, 0.2)),
    ]


SNAPSHOTS = {0: 20, 1: 26}  # checkpoints after 20 steps of the stack: a at iteration 20, b at 26 (stack)


def snapshot_hook(jobs, store, crash_at_step=None):
    """on_iteration for a stack: copies a's and b's checkpoint.pt after the stack's 20th step
    (b's is at iteration 24 alone, 26 in a stack that saves jointly) and raises at a step."""
    def hook(index, iteration):
        step = iteration - jobs[index].start_iteration
        if index in SNAPSHOTS and step == 20 and (jobs[index].folder / "checkpoint.pt").exists():
            store[index] = load_tensors(jobs[index].folder / "checkpoint.pt")
        if crash_at_step is not None and index == 0 and step == crash_at_step:
            raise Crash(step)
    return hook


class Crash(Exception):
    pass


def strip_timings(metrics):
    drop = ("train_seconds", "images_per_second", "eval_seconds")
    return {k: ([{f: v for f, v in h.items() if f not in drop} for h in val] if k == "history" else val)
            for k, val in metrics.items() if k not in drop}


def assert_states(a, b, exact, **tolerance):
    assert a.keys() == b.keys()
    for k in a:
        if exact or not a[k].is_floating_point():
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], msg=k, **tolerance)


@pytest.fixture(scope="module")
def separate(tmp_path_factory):
    """The three jobs trained one at a time by the single trainer, and a's and b's
    checkpoints at their 20th step (a: iteration 20; b: iteration 24, its last epoch end)."""
    root = tmp_path_factory.mktemp("separate")
    jobs, snapshots = three_jobs(root), {}
    for index, job in enumerate(jobs):
        def hook(iteration, index=index, job=job):
            if index in SNAPSHOTS and iteration == job.start_iteration + 20:
                snapshots[index] = load_tensors(job.folder / "checkpoint.pt")
        train(job.config, job.folder, data(), job.mask, job.initial_weights, job.start_iteration,
              on_iteration=hook)
    return jobs, snapshots


@pytest.mark.parametrize("mode", ["loop", "grouped"])
def test_a_stack_equals_separate_runs_and_resumes_bit_identically(tmp_path, separate, mode):
    alone, alone_snapshots = separate
    exact = mode == "loop"
    whole_jobs, snapshots = three_jobs(tmp_path / "whole"), {}
    whole = train_stack(whole_jobs, data(), mode=mode, on_iteration=snapshot_hook(whole_jobs, snapshots))
    assert [m["iteration"] for m in whole] == [24, 28, 12] and all(m["finished"] for m in whole)

    # After 20 steps: weights, BatchNorm statistics and momentum as the separate runs had them.
    assert_states(snapshots[0]["model"], alone_snapshots[0]["model"], exact, **GROUPED_AFTER_20)
    assert_states(snapshots[0]["optimizer"]["momentum"], alone_snapshots[0]["optimizer"]["momentum"], exact,
                  **GROUPED_AFTER_20)
    if exact:  # a's sums and history as alone; b saved at its own epoch end (iteration 24), as alone
        assert strip_timings(snapshots[0]["state"]) == strip_timings(alone_snapshots[0]["state"])
        assert snapshots[1]["state"]["iteration"] == alone_snapshots[1]["state"]["iteration"] == 24
        assert_states(snapshots[1]["model"], alone_snapshots[1]["model"], True)
        assert_states(snapshots[1]["optimizer"]["momentum"], alone_snapshots[1]["optimizer"]["momentum"], True)
    else:  # grouped: b also saved when a did (iteration 26), so that a resume restarts this very stack
        assert snapshots[1]["state"]["iteration"] == 26

    # The end: every file of every member, as trained alone.
    for job, other in zip(whole_jobs, alone):
        for name in ("final.pt",) + (("rewind.pt",) if job.config.rewind_iter is not None else ()):
            assert_states(load_tensors(job.folder / name), load_tensors(other.folder / name), exact,
                          **GROUPED_AFTER_20)
        mine, theirs = read_json(job.folder / "metrics.json"), read_json(other.folder / "metrics.json")
        assert mine.keys() == theirs.keys() and not (job.folder / "checkpoint.pt").exists()
        if exact:
            assert strip_timings(mine) == strip_timings(theirs)
        for name, keep in job.mask.items():  # pruned weights exactly zero in every member
            assert torch.all(load_tensors(job.folder / "final.pt")[name][~keep] == 0), name
    for name, keep in whole_jobs[0].mask.items():
        assert torch.all(snapshots[0]["optimizer"]["momentum"][name][~keep] == 0), name

    # Killed after 22 steps (a at iteration 22, b at its end 28 but not yet saved as finished,
    # c finished), then resumed: bit-identical to the uninterrupted stack.
    crashed_jobs = three_jobs(tmp_path / "crashed")
    with pytest.raises(Crash):
        train_stack(crashed_jobs, data(), mode=mode, on_iteration=snapshot_hook(crashed_jobs, {}, crash_at_step=22))
    assert [(j.folder / "final.pt").exists() for j in crashed_jobs] == [False, False, True]
    steps = []
    resumed = train_stack(crashed_jobs, data(), mode=mode, on_iteration=lambda i, it: steps.append((i, it)))
    # a from its last checkpoint: its epoch end (20) in loop mode; in grouped mode the one it
    # saved with b at b's last epoch end (22). c is not trained again.
    assert steps[0] == (0, 21 if exact else 23) and 2 not in {i for i, _ in steps}
    for job, other in zip(crashed_jobs, whole_jobs):
        assert_states(load_tensors(job.folder / "final.pt"), load_tensors(other.folder / "final.pt"), True)
    assert [strip_timings(m) for m in resumed] == [strip_timings(m) for m in whole]


@pytest.mark.parametrize("mode", ["grouped"])  # the stop path is the same code in every mode
def test_a_stack_stopped_by_a_signal_resumes_bit_identically(tmp_path, mode):
    jobs = three_jobs(tmp_path / "whole")[:2]
    for job in jobs:
        job.config = TrainConfig(**{**job.config.to_dict(), "epochs": 3 if job.start_iteration == 0 else 4})
    train_stack(jobs, data(), mode=mode)
    stopped = [TrainJob(j.config, tmp_path / "stopped" / j.folder.name, j.mask, j.initial_weights, j.start_iteration)
               for j in jobs]

    def signal_at(index, iteration):
        if index == 0 and iteration == 4:  # the next step ends mid-epoch for both members (a 5, b 11)
            os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(Interrupted, match="checkpoints of 2 trainings saved"):
        train_stack(stopped, data(), mode=mode, on_iteration=signal_at)
    assert [load_tensors(j.folder / "checkpoint.pt")["state"]["iteration"] for j in stopped] == [5, 11]
    train_stack(stopped, data(), mode=mode)
    for job, other in zip(stopped, jobs):
        assert_states(load_tensors(job.folder / "final.pt"), load_tensors(other.folder / "final.pt"), True)


def test_grouped_follows_loop_step_by_step():
    """Three epochs of three members (lrs 0.1, 0.05, 0.001; the second member half an epoch
    ahead), the grouped stack set to the loop stack's exact state (weights, momentum,
    BatchNorm statistics) before each step: a grouped step agrees with the loop step within
    rounding, and a step with partial batches at some members (run as loop) exactly."""
    dataset, cpu = data(), torch.device("cpu")
    stacks = {}
    for mode in ("loop", "grouped"):
        models = [create_model("resnet8", 8, seed=s).to(memory_format=torch.channels_last) for s in range(3)]
        masks = [place_mask(m, random_mask(s, 0.4)) for s, m in enumerate(models)]
        optimizer = StackedMaskedSGD(models, masks, 0.9, 1e-4, False, "auto")
        stacks[mode] = (models, optimizer, make_engine(mode, models, optimizer, "fp32", cpu, True, 32))
    assert type(stacks["grouped"][2]).__name__ == "GroupedEngine"
    (loop_models, loop_sgd, loop), (models, sgd, grouped) = stacks["loop"], stacks["grouped"]
    kinds = set()
    for step in range(12):
        with torch.no_grad():
            sgd.params.copy_(loop_sgd.params)
            sgd.momentum_buffers.copy_(loop_sgd.momentum_buffers)
            for mine, theirs in zip(models, loop_models):
                for a, b in zip(mine.buffers(), theirs.buffers()):
                    a.copy_(b)
        batches = [EpochPlan(120, 32, seed, step // 4, cpu).batch(dataset, (step + phase) % 4, True)
                   for seed, phase in enumerate((0, 2, 0))]
        outputs = [engine.step(batches, [0.1, 0.05, 0.001]) for engine in (loop, grouped)]
        exact = len({y.shape[0] for _, y in batches}) > 1
        kinds.add(exact)
        for k in range(3):
            state = {**models[k].state_dict(), **sgd.member_state_dict(k)["momentum"]}
            want = {**loop_models[k].state_dict(), **loop_sgd.member_state_dict(k)["momentum"]}
            assert_states(state, want, exact, **GROUPED_ONE_STEP)
        torch.testing.assert_close(outputs[1][0], outputs[0][0], rtol=0, atol=0 if exact else 1e-6)
        assert torch.equal(outputs[1][1], outputs[0][1])
    assert kinds == {True, False}  # grouped steps and loop steps both taken
    assert int(models[0].bn.num_batches_tracked) == 12


def test_the_whole_stack_takes_one_masked_sgd_call_a_step_with_a_rate_per_member(tmp_path, monkeypatch):
    calls = []
    real = ops.masked_sgd_

    def counting(params, grads, momentum_buf, mask, lr, *args, **kwargs):
        calls.append((params.numel(), lr.tolist() if isinstance(lr, torch.Tensor) else lr))
        return real(params, grads, momentum_buf, mask, lr, *args, **kwargs)
    monkeypatch.setattr(ops, "masked_sgd_", counting)
    jobs = three_jobs(tmp_path)
    for job, lr in zip(jobs, (0.1, 0.05, 0.001)):  # a: iterations 0..4, b: 6..8, c: 0..4
        job.config = TrainConfig(**{**job.config.to_dict(), "epochs": 1 + job.start_iteration // 4, "lr": lr,
                                    "milestones": (), "rewind_iter": None})
    train_stack(jobs, data(), mode="loop")
    row = -(-sum(p.numel() for p in create_model("resnet8", 8).parameters()) // 16) * 16
    assert [numel for numel, _ in calls] == [3 * row, 3 * row, 2 * row, 2 * row]  # b left after 2 steps
    assert calls[0][1] == pytest.approx([0.1, 0.05, 0.001]) and calls[2][1] == pytest.approx([0.1, 0.001])


def test_a_finished_member_is_not_trained_again(tmp_path):
    jobs = three_jobs(tmp_path)
    done = jobs[2]
    train(done.config, done.folder, data(), done.mask)
    before = (done.folder / "final.pt").stat().st_mtime_ns, read_json(done.folder / "metrics.json")
    first = TrainConfig(**{**jobs[0].config.to_dict(), "epochs": 1, "rewind_iter": None})
    short = [TrainJob(first, jobs[0].folder, jobs[0].mask), done]
    seen = set()
    results = train_stack(short, data(), mode="loop", on_iteration=lambda i, it: seen.add(i))
    assert seen == {0} and results[1] == before[1]
    assert (done.folder / "final.pt").stat().st_mtime_ns == before[0]


@pytest.mark.parametrize("field,value", [("model", "resnet14"), ("width", 16), ("batch_size", 16),
                                         ("precision", "bf16"), ("momentum", 0.5), ("train_subset", 200)])
def test_jobs_that_cannot_share_a_stack_are_rejected(tmp_path, field, value):
    jobs = three_jobs(tmp_path)[:2]
    jobs[1].config = TrainConfig(**{**jobs[1].config.to_dict(), field: value})
    jobs[1].mask = None
    with pytest.raises(LthError, match=f"must share {field}"):
        train_stack(jobs, data(), mode="loop")
    assert not any((j.folder / "checkpoint.pt").exists() for j in jobs)


def test_two_jobs_in_one_folder_are_rejected(tmp_path):
    jobs = three_jobs(tmp_path)[:2]
    jobs[1].folder = jobs[0].folder
    with pytest.raises(LthError, match="share one folder"):
        train_stack(jobs, data(), mode="loop")


@pytest.mark.parametrize("mode", ["streams", "graph"])
def test_cuda_modes_are_an_error_on_the_cpu(tmp_path, mode):
    jobs = three_jobs(tmp_path)[:2]
    for job in jobs:
        job.config = TrainConfig(**{**job.config.to_dict(), "device": "cpu"})
    with pytest.raises(LthError, match=f"stack mode '{mode}' needs a CUDA device"):
        train_stack(jobs, data(), mode=mode)


def test_auto_measures_once_per_shape_and_caches_its_choice(tmp_path, monkeypatch):
    import lthfast.training.auto as auto
    config = TrainConfig(**{**BASE, "batch_size": 16})
    mode = choose_mode(config, 2, torch.device("cpu"))
    cache = read_json(tmp_path / "cache" / "stack_modes.json")
    (entry,) = cache.values()
    seconds = entry["seconds_per_step"]
    assert set(seconds) == {"loop", "grouped"} and mode == entry["mode"]
    assert mode == ("grouped" if seconds["grouped"] <= 0.9 * seconds["loop"] else "loop")  # loop unless clearly slower
    monkeypatch.setattr(auto, "time_steps", lambda *a, **k: pytest.fail("measured twice"))
    assert choose_mode(config, 2, torch.device("cpu")) == mode
    assert choose_mode(config, 1, torch.device("cpu")) == "loop"


def test_compiled_forward_plumbing(tmp_path):
    """compile= runs each forward through torch.compile (here its eager backend: the
    plumbing, not inductor, whose compile time is for a GPU check) and trains the same."""
    results = {}
    for compile_ in (False, "eager"):
        job = three_jobs(tmp_path / str(compile_))[2]
        job.config = TrainConfig(**{**job.config.to_dict(), "epochs": 1})  # 3 full batches, 1 partial
        train_stack([job], data(), mode="loop", compile=compile_)
        results[compile_] = load_tensors(job.folder / "final.pt")
    assert_states(results[False], results["eager"], True)  # the eager backend runs the traced graph's very ops
