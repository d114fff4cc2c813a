"""The trainer: SGD with momentum on a step schedule, masks kept exactly zero, resumable.

A run lives in one folder:
  config.json      the full config
  checkpoint.pt    latest state (weights, momentum, iteration, partial-epoch sums, history)
  rewind.pt        weights at config.rewind_iter (the rewind point of IMP), if asked
  final.pt         weights at the end
  metrics.json     per-epoch history; "finished": true once the run is complete

Everything a step depends on (learning rate, data order, augmentation) is a pure
function of the config and the iteration, so resuming from a checkpoint at any
iteration ends with the same weights as an uninterrupted run.
"""
from __future__ import annotations

import math
import signal
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from lthfast import ops
from lthfast.config import TrainConfig
from lthfast.data import Dataset, EpochPlan, iterate_eval
from lthfast.errors import Interrupted, LthError
from lthfast.models import create_model
from lthfast.optim import MaskedSGD
from lthfast.pruning import Mask
from lthfast.storage import atomic_torch_save, atomic_write_json, load_checkpoint, read_json



def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)  # the config checked the form
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LthError("--device cuda asked for, but no CUDA device is available")
    return device


def use_channels_last(config: TrainConfig, device: torch.device) -> bool:
    # Measured faster on this project's CPU (bench/train_throughput.py) and usual on GPUs.
    # Except below width 8 on the CPU: oneDNN's channels_last backward hangs or dies with a
    # bus error there (torch 2.14.1, ResNet-8 at width 4).
    if config.channels_last is None:
        from lthfast.models import DEFAULT_WIDTHS, parse_model_name

        width = config.width or DEFAULT_WIDTHS[parse_model_name(config.model)[0]]
        return device.type != "cpu" or width >= 8
    return bool(config.channels_last)


def build_model(config: TrainConfig, device: torch.device, weights: dict | None = None) -> torch.nn.Module:
    """The config's model on `device`, in the layout training uses, with `weights` if given
    (else initialized from config.seed)."""
    model = create_model(config.model, config.width, seed=config.seed)
    if weights is not None:
        model.load_state_dict(weights)
    model.to(device)
    if use_channels_last(config, device):
        model.to(memory_format=torch.channels_last)
    return model


def learning_rate(config: TrainConfig, iteration: int, iters_per_epoch: int) -> float:
    """Step schedule (x gamma at each milestone epoch) with optional linear warmup."""
    lr = config.lr
    for milestone in config.lr_milestones:
        if iteration >= milestone * iters_per_epoch:
            lr *= config.gamma
    if config.warmup_iters and iteration < config.warmup_iters:
        lr *= (iteration + 1) / config.warmup_iters
    return lr


def autocast(config: TrainConfig, device: torch.device):
    if config.precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def place_mask(model: torch.nn.Module, mask: Mask | None) -> Mask:
    """Check `mask` against the model and give each entry its weight's device and memory
    layout (channels_last or not), so that kernels run over both storages in step."""
    if not mask:
        return {}
    params = dict(model.named_parameters())
    for name, m in mask.items():
        if name not in params:
            raise LthError(f"mask names {name!r}, which the model does not have")
        if tuple(m.shape) != tuple(params[name].shape) or m.dtype != torch.bool:
            raise LthError(f"mask for {name} must be bool of shape {tuple(params[name].shape)}, "
                           f"got {m.dtype} {tuple(m.shape)}")
    return {name: torch.empty_like(params[name], dtype=torch.bool).copy_(m) for name, m in mask.items()}


def train_step(model, optimizer: MaskedSGD, x, y, lr: float, config: TrainConfig, device):
    """One SGD step on (x, y) that leaves every pruned weight (and its momentum) exactly zero."""
    with autocast(config, device):
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step(lr)
    return loss, logits


@torch.no_grad()
def evaluate(model, x, y, config: TrainConfig, device, channels_last: bool) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `model` (in eval mode) on (x, y)."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # (loss, correct): one sync at the end
    with autocast(config, device):
        for xb, yb in iterate_eval(x, y, config.eval_batch_size, channels_last):
            logits = model(xb).float()
            sums[0] += F.cross_entropy(logits, yb, reduction="sum").double()
            sums[1] += (logits.argmax(1) == yb).sum()
    model.train(was_training)
    loss_sum, correct = sums.tolist()
    n = max(1, x.shape[0])
    return loss_sum / n, correct / n


@torch.no_grad()
def recompute_batchnorm(model, data: Dataset, num_batches: int, batch_size: int, seed: int,
                        device, channels_last: bool, config: TrainConfig) -> None:
    """Reset BatchNorm running statistics and re-estimate them as an exact average over a
    fixed set of augmented training batches (STUDY.md: pruned or interpolated weights
    make stored statistics stale). `model` may be a list of models: each batch is then
    drawn once and fed to all of them."""
    models = model if isinstance(model, (list, tuple)) else [model]
    bns = [m for net in models for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved_momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: every batch counts equally
    was_training = [net.training for net in models]
    for net in models:
        net.train()
    plan = EpochPlan(data.num_train, batch_size, seed, 0, device)
    with autocast(config, device):
        for index in range(min(num_batches, plan.num_batches)):
            x, _ = plan.batch(data, index, channels_last)
            for net in models:
                net(x)
    for bn, momentum in zip(bns, saved_momenta):
        bn.momentum = momentum
    for net, training in zip(models, was_training):
        net.train(training)


class _StopRequest:
    """Turns SIGINT/SIGTERM into a flag checked between steps, so a checkpoint is saved first."""

    def __init__(self):
        self.signal = None

    def __call__(self, signum, frame):
        self.signal = signum


@contextmanager
def _graceful_stop():
    stop = _StopRequest()
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, stop)
    try:
        yield stop
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    if stop.signal is not None:
        # The signal came after the last step: the run finished and is saved, but its caller
        # (an IMP chain, a study) must stop too instead of swallowing it.
        raise Interrupted("interrupted after a training finished and was saved; run the same command to continue")


def train(config: TrainConfig, run_dir: Path, data: Dataset, mask: Mask | None = None,
          initial_weights: dict | None = None, start_iteration: int = 0,
          on_iteration: Callable[[int], None] | None = None, progress: bool | None = None) -> dict:
    """Train (or resume training) the run in `run_dir`; returns its metrics.

    initial_weights / start_iteration: start from these weights at this point of the
    schedule (IMP's rewinding); by default a fresh init from config.seed at iteration 0.
    on_iteration(it) is called after each completed step (progress hooks, tests).
    """
    run_dir = Path(run_dir)
    if (run_dir / "final.pt").exists() and (run_dir / "metrics.json").exists():
        metrics = read_json(run_dir / "metrics.json")
        if metrics.get("finished"):
            return metrics  # never train a finished run again, never overwrite its results
    device = resolve_device(config.device)
    try:
        backend = ops.runnable_backend(config.backend, device)
    except ValueError as exc:
        raise LthError(f"--backend {config.backend}: {exc}") from None
    channels_last = use_channels_last(config, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    data = data.to(device)

    model = build_model(config, device, initial_weights)
    optimizer = MaskedSGD(model, place_mask(model, mask), config.momentum, config.weight_decay,
                          config.nesterov, backend)

    iters_per_epoch = math.ceil(data.num_train / config.batch_size)
    total_iters = config.epochs * iters_per_epoch
    if not 0 <= start_iteration <= total_iters:
        raise LthError(f"start iteration {start_iteration} is outside the schedule (0..{total_iters})")
    if config.rewind_iter is not None and config.rewind_iter > total_iters:
        raise LthError(f"--rewind-iter {config.rewind_iter} is past the end of training "
                       f"({total_iters} iterations)")
    state = {"iteration": start_iteration, "epoch_loss": 0.0, "epoch_correct": 0, "epoch_seen": 0,
             "history": [], "train_seconds": 0.0, "images_trained": 0}

    checkpoint_path = run_dir / "checkpoint.pt"
    if checkpoint_path.exists():
        ckpt = load_checkpoint(checkpoint_path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state.update(ckpt["state"])

    def save_checkpoint():
        atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                           "state": state}, checkpoint_path)

    def save_weights(name):
        # Copies: on the CPU, parameters are views into one flat buffer, which torch.save would
        # otherwise write whole with every tensor.
        atomic_torch_save({k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()},
                          run_dir / name)

    def write_metrics(finished: bool):
        last = state["history"][-1] if state["history"] else {}
        atomic_write_json({
            "finished": finished,
            "iteration": state["iteration"],
            "total_iterations": total_iters,
            "iterations_per_epoch": iters_per_epoch,
            "train_loss": last.get("train_loss"),
            "train_accuracy": last.get("train_accuracy"),
            "test_loss": last.get("test_loss"),
            "test_accuracy": last.get("test_accuracy"),
            "train_seconds": state["train_seconds"],
            "images_per_second": state["images_trained"] / max(state["train_seconds"], 1e-9),
            "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
            "backend": backend,
            "history": state["history"],
        }, run_dir / "metrics.json")

    if config.rewind_iter is not None and config.rewind_iter == state["iteration"] \
            and not (run_dir / "rewind.pt").exists():
        save_weights("rewind.pt")

    bar = _progress_bar(progress, total_iters, state["iteration"], run_dir.name)
    model.train()
    plan, plan_epoch = None, None
    # Running sums of this epoch's (loss * n, correct) stay on the device: no sync per step.
    running = torch.zeros(2, dtype=torch.float64, device=device)
    segment_start = time.perf_counter()

    def fold_running_sums():
        """Move the device sums and the training time so far into `state` (one sync)."""
        nonlocal segment_start
        loss_sum, correct = running.tolist()
        running.zero_()
        state["epoch_loss"] += loss_sum
        state["epoch_correct"] += int(correct)
        state["train_seconds"] += time.perf_counter() - segment_start

    with _graceful_stop() as stop:
        while state["iteration"] < total_iters:
            it = state["iteration"]
            epoch, batch_index = divmod(it, iters_per_epoch)
            if plan_epoch != epoch:
                plan = EpochPlan(data.num_train, config.batch_size, config.effective_data_seed,
                                 epoch, device)
                plan_epoch = epoch
            x, y = plan.batch(data, batch_index, channels_last)
            lr = learning_rate(config, it, iters_per_epoch)
            loss, logits = train_step(model, optimizer, x, y, lr, config, device)
            running[0] += loss.detach().double() * y.shape[0]
            running[1] += (logits.argmax(1) == y).sum()
            state["epoch_seen"] += y.shape[0]
            state["images_trained"] += y.shape[0]
            state["iteration"] = it + 1
            bar.update(1)
            at_rewind = config.rewind_iter is not None and state["iteration"] == config.rewind_iter
            at_epoch_end = state["iteration"] % iters_per_epoch == 0
            stopping = stop.signal is not None and state["iteration"] < total_iters
            if at_rewind or at_epoch_end or stopping:
                fold_running_sums()
                if at_rewind:
                    save_weights("rewind.pt")
                if at_epoch_end:
                    _end_epoch(state, config, model, data, device, channels_last, epoch,
                               total_iters, iters_per_epoch, lr, bar)
                save_checkpoint()
                if at_epoch_end:
                    write_metrics(finished=False)
                segment_start = time.perf_counter()
            if on_iteration is not None:
                on_iteration(state["iteration"])
            if stopping:
                bar.close()
                raise Interrupted(f"interrupted at iteration {state['iteration']}/{total_iters}; "
                                  f"checkpoint saved in {run_dir}; run the same command to resume")
    bar.close()
    if not state["history"] or "test_loss" not in state["history"][-1]:
        # No epoch ended here (training started at its last iteration): still measure the result.
        t = time.perf_counter()
        loss, accuracy = evaluate(model, data.test_x, data.test_y, config, device, channels_last)
        state["history"].append({"epoch": config.epochs, "iteration": state["iteration"], "test_loss": loss,
                                 "test_accuracy": accuracy, "eval_seconds": time.perf_counter() - t})
    save_weights("final.pt")
    write_metrics(finished=True)
    checkpoint_path.unlink(missing_ok=True)  # final.pt and metrics.json hold all that is needed now
    return read_json(run_dir / "metrics.json")


def _end_epoch(state, config, model, data, device, channels_last, epoch, total_iters,
               iters_per_epoch, lr, bar):
    entry = {
        "epoch": epoch + 1,
        "iteration": state["iteration"],
        "lr": lr,  # of the epoch's last step
        "train_loss": state["epoch_loss"] / max(1, state["epoch_seen"]),
        "train_accuracy": state["epoch_correct"] / max(1, state["epoch_seen"]),
        "images_per_second": state["images_trained"] / max(state["train_seconds"], 1e-9),
    }
    last_epoch = state["iteration"] == total_iters
    if (epoch + 1) % config.eval_every == 0 or last_epoch:
        t = time.perf_counter()
        entry["test_loss"], entry["test_accuracy"] = evaluate(
            model, data.test_x, data.test_y, config, device, channels_last)
        entry["eval_seconds"] = time.perf_counter() - t
    state["history"].append(entry)
    state["epoch_loss"], state["epoch_correct"], state["epoch_seen"] = 0.0, 0, 0
    test = (f" test_loss {entry['test_loss']:.4f} test_acc {entry['test_accuracy']:.4f}"
            if "test_loss" in entry else "")
    bar.write(f"epoch {epoch + 1}/{total_iters // iters_per_epoch} lr {entry['lr']:.4g} "
              f"train_loss {entry['train_loss']:.4f} train_acc {entry['train_accuracy']:.4f}{test}",
              file=sys.stderr)


def _progress_bar(progress, total, initial, desc):
    from tqdm import tqdm
    # progress=None: a bar only when stderr is a terminal.
    return tqdm(total=total, initial=initial, desc=desc, unit="it", file=sys.stderr,
                disable=(None if progress is None else not progress), dynamic_ncols=True)
