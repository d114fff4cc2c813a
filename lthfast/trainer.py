"""The trainer: SGD with momentum on a step schedule, masks kept exactly zero, resumable.

A training lives in one folder (lthfast.store.Level names its files):
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
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from lthfast import ops, signals
from lthfast.config import TrainConfig
from lthfast.data import Dataset, EpochPlan, load_dataset
from lthfast.errors import Interrupted, LthError
from lthfast.evaluation import autocast, evaluate
from lthfast.hardware import channels_last as channels_last_on, device_name, resolve_device
from lthfast.models import DEFAULT_WIDTHS, create_model, parse_model_name
from lthfast.optim import MaskedSGD
from lthfast.pruning import Mask
from lthfast.storage import atomic_torch_save, atomic_write_json, load_checkpoint, read_json
from lthfast.store import Level, Store


def use_channels_last(config: TrainConfig, device: torch.device) -> bool:
    width = config.width or DEFAULT_WIDTHS[parse_model_name(config.model)[0]]
    return channels_last_on(width, device, config.channels_last)


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
    with autocast(config.precision, device):
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step(lr)
    return loss, logits


def train(config: TrainConfig, run_dir: Path, data: Dataset, mask: Mask | None = None,
          initial_weights: dict | None = None, start_iteration: int = 0,
          on_iteration: Callable[[int], None] | None = None, progress: bool | None = None) -> dict:
    """Train (or resume training) the run in `run_dir`; returns its metrics.

    initial_weights / start_iteration: start from these weights at this point of the
    schedule (IMP's rewinding); by default a fresh init from config.seed at iteration 0.
    on_iteration(it) is called after each completed step (progress hooks, tests).
    """
    files = Level(run_dir)
    if files.trained():
        return read_json(files.metrics)  # never train a finished run again, never overwrite its results
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

    if files.checkpoint.exists():
        ckpt = load_checkpoint(files.checkpoint)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state.update(ckpt["state"])

    def save_checkpoint():
        atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                           "state": state}, files.checkpoint)

    def save_weights(path):
        # Copies: on the CPU, parameters are views into one flat buffer, which torch.save would
        # otherwise write whole with every tensor.
        atomic_torch_save({k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()},
                          path)

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
            "device": str(device) if device.type == "cpu" else device_name(device),
            "backend": backend,
            "test_images": int(data.test_y.shape[0]),
            "history": state["history"],
        }, files.metrics)

    if config.rewind_iter is not None and config.rewind_iter == state["iteration"] \
            and not files.rewind.exists():
        save_weights(files.rewind)

    bar = _progress_bar(progress, total_iters, state["iteration"], files.folder.name)
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

    with signals.deferred(after="interrupted after a training finished and was saved; "
                                "run the same command to continue"):
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
            stopping = signals.stop_requested() is not None and state["iteration"] < total_iters
            if at_rewind or at_epoch_end or stopping:
                fold_running_sums()
                if at_rewind:
                    save_weights(files.rewind)
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
                                  f"checkpoint saved in {files.folder}; run the same command to resume")
    bar.close()
    if not state["history"] or "test_loss" not in state["history"][-1]:
        # No epoch ended here (training started at its last iteration): still measure the result.
        t = time.perf_counter()
        loss, accuracy = evaluate(model, data.test_x, data.test_y, config.precision, config.eval_batch_size,
                                  channels_last)
        state["history"].append({"epoch": config.epochs, "iteration": state["iteration"], "test_loss": loss,
                                 "test_accuracy": accuracy, "eval_seconds": time.perf_counter() - t})
    save_weights(files.final)
    write_metrics(finished=True)
    files.checkpoint.unlink(missing_ok=True)  # final.pt and metrics.json hold all that is needed now
    return read_json(files.metrics)


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
            model, data.test_x, data.test_y, config.precision, config.eval_batch_size, channels_last)
        entry["eval_seconds"] = time.perf_counter() - t
    state["history"].append(entry)
    state["epoch_loss"], state["epoch_correct"], state["epoch_seen"] = 0.0, 0, 0
    test = (f" test_loss {entry['test_loss']:.4f} test_acc {entry['test_accuracy']:.4f}"
            if "test_loss" in entry else "")
    bar.write(f"epoch {epoch + 1}/{total_iters // iters_per_epoch} lr {entry['lr']:.4g} "
              f"train_loss {entry['train_loss']:.4f} train_acc {entry['train_accuracy']:.4f}{test}",
              file=sys.stderr)


def _progress_bar(progress, total, initial, desc):
    # progress=None: a bar only when stderr is a terminal.
    return tqdm(total=total, initial=initial, desc=desc, unit="it", file=sys.stderr,
                disable=(None if progress is None else not progress), dynamic_ncols=True)


def train_run(config: TrainConfig, root: Path | str | None = None, progress: bool | None = None,
              on_iteration=None) -> Path:
    """Train the run of `config` under `root` (lthfast.store) unless it is finished; returns its folder."""
    files = Store(root).prepare_train_dir(config)
    if not files.trained():
        data = load_dataset(config.data, config.data_dir, config.train_subset, config.subset_seed)
        train(config, files.folder, data, progress=progress, on_iteration=on_iteration)
    return files.folder
