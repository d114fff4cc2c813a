"""One training inside a stack (lthfast.training.stack): its folder's files, its place in its own
schedule, its data order, its sums and its checkpoints, exactly as a single training
(lthfast.training.trainer) keeps them.

A training lives in one folder (lthfast.store.level.Level names its files):
  checkpoint.pt    latest state: {"model": state dict, "optimizer": {"momentum": {name: tensor}},
                   "state": iteration, partial-epoch sums, history, timings}
  rewind.pt        weights at config.rewind_iter (the rewind point of IMP), if asked
  final.pt         weights at the end
  metrics.json     per-epoch history; "finished": true once the run is complete
Checkpoints are written at the member's epoch ends, at its rewind point and on a stop
signal; a member's files are the same whether it trained alone or in a stack, so either
resumes the other's checkpoint. A grouped stack's members save together, as one commit
(save_together): each checkpoint first goes to checkpoint.pt.next with the group's token
("commit" in the checkpoint: the members' folders and iterations), and only once every
member's is written are they renamed over checkpoint.pt; before a stack resumes,
store.level.settle finishes such a save or undoes it (lthfast.store.level, "Group commits").
"""
from __future__ import annotations

import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from lthfast.config.runs import TrainConfig
from lthfast.data.dataset import Dataset, EpochPlan, normalize
from lthfast.foundations.errors import LthError
from lthfast.foundations.files import (
    atomic_torch_save,
    atomic_write_json,
    load_checkpoint,
    read_json,
)
from lthfast.foundations.hardware import device_name
from lthfast.models.families import check_output
from lthfast.pruning.masks import Mask
from lthfast.store.level import CHECKPOINTS, Level, commit_token, settle
from lthfast.training.evaluation import evaluate
from lthfast.training.network import (
    build_model,
    cpu_copies,
    learning_rate,
    place_mask,
    use_channels_last,
)


@dataclass
class TrainJob:
    """One training of a stack: its config, its folder, and where it starts.

    mask: {name: bool tensor} kept entries of the prunable weights (None: dense).
    initial_weights: a state dict to start from (None: a fresh init from config.seed).
    start_iteration: the schedule position of those weights (IMP's rewinding; 0 for a fresh start).
    """
    config: TrainConfig
    folder: Path
    mask: Mask | None = None
    initial_weights: dict | None = None
    start_iteration: int = 0


class Member:
    """The bookkeeping of one job in a stack; `model` is its plain network (its parameters
    become views of the stack's flat buffer once the stack's optimizer is built)."""

    def __init__(self, index: int, job: TrainJob, data: Dataset, device: torch.device, backend: str):
        self.index, self.job, self.config = index, job, job.config
        self.files = Level(job.folder)
        self.device, self.backend = device, backend
        self.channels_last = use_channels_last(self.config, device)
        self.iters_per_epoch = math.ceil(data.num_train / self.config.batch_size)
        self.total_iters = self.config.epochs * self.iters_per_epoch
        if not 0 <= job.start_iteration <= self.total_iters:
            raise LthError(f"start iteration {job.start_iteration} is outside the schedule (0..{self.total_iters})")
        if self.config.rewind_iter is not None and self.config.rewind_iter > self.total_iters:
            raise LthError(f"--rewind-iter {self.config.rewind_iter} is past the end of training "
                           f"({self.total_iters} iterations)")
        self.model = build_model(self.config, device, job.initial_weights)
        # A model whose output is not (1, classes) on one of the data's images stops here, before training.
        check_output(self.model, normalize(data.train_x[:1].to(device), self.channels_last, data.mean, data.std),
                     data.num_classes, self.config.model)
        self.mask = place_mask(self.model, job.mask)
        # threads: CPU kernels reduce in an order that depends on the thread count, so a training's
        # bits depend on it (README, "Reliability"); it is recorded with the level.
        self.state = {"iteration": job.start_iteration, "epoch_loss": 0.0, "epoch_correct": 0, "epoch_seen": 0,
                      "history": [], "train_seconds": 0.0, "images_trained": 0, "threads": torch.get_num_threads()}
        self.test_images = int(data.test_y.shape[0])
        self._plan, self._plan_epoch = None, None
        self.segment_start = time.perf_counter()

    @property
    def iteration(self) -> int:
        return self.state["iteration"]

    @property
    def done(self) -> bool:
        return self.state["iteration"] >= self.total_iters

    @property
    def name(self) -> str:
        return self.files.folder.name

    # ------------------------------------------------------------------ start
    def resume(self, optimizer, row: int) -> None:
        """Load the folder's checkpoint (if any) into the model and optimizer row; then save
        the rewind weights if training starts at the rewind point."""
        if self.files.checkpoint.exists():
            ckpt = load_checkpoint(self.files.checkpoint)
            self.model.load_state_dict(ckpt["model"])
            optimizer.load_member_state_dict(row, ckpt["optimizer"])
            self.state.update(ckpt["state"])
            started, now = self.state.get("threads"), torch.get_num_threads()
            if started is not None and started != now:
                # A process's thread count is shared by every training in it (a worker of the local
                # pool, a stack), so it is not changed for one of them: said once, and recorded.
                self.state["threads_resumed"] = now
                warnings.warn(f"a training started with {started} CPU threads resumes with {now}: its "
                              "result may differ in the last bits from an uninterrupted training (bit-"
                              "reproducibility holds at equal threads and kernel backend)")
        rewind = self.config.rewind_iter
        if rewind is not None and rewind == self.iteration and not self.files.rewind.exists():
            self.save_weights(self.files.rewind)

    # ------------------------------------------------------------------ a step
    def batch(self, data: Dataset):
        """This member's next batch (x [B, 3, 32, 32] float, y [B]): a pure function of its
        data seed and iteration, as in a single run."""
        epoch, index = divmod(self.iteration, self.iters_per_epoch)
        if self._plan_epoch != epoch:
            self._plan = EpochPlan(data.num_train, self.config.batch_size, self.config.effective_data_seed,
                                   epoch, self.device, self.config.augment)
            self._plan_epoch = epoch
        return self._plan.batch(data, index, self.channels_last)

    def lr(self) -> float:
        return learning_rate(self.config, self.iteration, self.iters_per_epoch)

    def advance(self, images: int) -> None:
        self.state["epoch_seen"] += images
        self.state["images_trained"] += images
        self.state["iteration"] += 1

    def at_rewind(self) -> bool:
        return self.config.rewind_iter is not None and self.iteration == self.config.rewind_iter

    def at_epoch_end(self) -> bool:
        return self.iteration % self.iters_per_epoch == 0

    def fold(self, running_row: torch.Tensor) -> None:
        """Move this member's device sums [loss * n, correct] and its training time so far
        into `state` (one sync), and zero the sums."""
        loss_sum, correct = running_row.tolist()
        running_row.zero_()
        self.state["epoch_loss"] += loss_sum
        self.state["epoch_correct"] += int(correct)
        self.state["train_seconds"] += time.perf_counter() - self.segment_start

    # ------------------------------------------------------------------ files
    def save_weights(self, path: Path) -> None:
        atomic_torch_save(cpu_copies(self.model.state_dict()), path)

    def save_checkpoint(self, optimizer, row: int, commit: dict | None = None) -> None:
        """checkpoint.pt; with a group's commit token, its side file (save_together)."""
        content = {"model": cpu_copies(self.model.state_dict()), "optimizer": optimizer.member_state_dict(row),
                   "state": self.state}
        if commit is None:
            atomic_torch_save(content, self.files.checkpoint)
        else:
            atomic_torch_save({**content, "commit": commit}, self.files.checkpoint_next)

    def write_metrics(self, finished: bool) -> None:
        state, last = self.state, (self.state["history"][-1] if self.state["history"] else {})
        atomic_write_json({
            "finished": finished,
            "iteration": state["iteration"],
            "total_iterations": self.total_iters,
            "iterations_per_epoch": self.iters_per_epoch,
            "train_loss": last.get("train_loss"),
            "train_accuracy": last.get("train_accuracy"),
            "test_loss": last.get("test_loss"),
            "test_accuracy": last.get("test_accuracy"),
            "train_seconds": state["train_seconds"],
            "images_per_second": state["images_trained"] / max(state["train_seconds"], 1e-9),
            "device": str(self.device) if self.device.type == "cpu" else device_name(self.device),
            "backend": self.backend,
            "threads": state.get("threads"),
            **({"threads_resumed": state["threads_resumed"]} if "threads_resumed" in state else {}),
            "test_images": self.test_images,
            "history": state["history"],
        }, self.files.metrics)

    def end_epoch(self, data: Dataset, lr: float, write) -> None:
        """Close the epoch that just ended: its history entry (test evaluation when due)."""
        state, config = self.state, self.config
        epoch = state["iteration"] // self.iters_per_epoch - 1
        entry = {
            "epoch": epoch + 1,
            "iteration": state["iteration"],
            "lr": lr,  # of the epoch's last step
            "train_loss": state["epoch_loss"] / max(1, state["epoch_seen"]),
            "train_accuracy": state["epoch_correct"] / max(1, state["epoch_seen"]),
            "images_per_second": state["images_trained"] / max(state["train_seconds"], 1e-9),
        }
        if (epoch + 1) % config.eval_every == 0 or state["iteration"] == self.total_iters:
            t = time.perf_counter()
            entry["test_loss"], entry["test_accuracy"] = evaluate(
                self.model, data.test_x, data.test_y, config.precision, config.eval_batch_size, self.channels_last,
                data.mean, data.std)
            entry["eval_seconds"] = time.perf_counter() - t
        state["history"].append(entry)
        state["epoch_loss"], state["epoch_correct"], state["epoch_seen"] = 0.0, 0, 0
        test = (f" test_loss {entry['test_loss']:.4f} test_acc {entry['test_accuracy']:.4f}"
                if "test_loss" in entry else "")
        write(f"epoch {epoch + 1}/{config.epochs} lr {entry['lr']:.4g} train_loss {entry['train_loss']:.4f} "
              f"train_acc {entry['train_accuracy']:.4f}{test}")

    def finish(self, data: Dataset) -> dict:
        """Training is over: the final evaluation if no epoch ended here, final.pt, the
        finished metrics.json, the checkpoint removed. Returns the metrics."""
        history = self.state["history"]
        if not history or "test_loss" not in history[-1]:
            # No epoch ended here (training started at its last iteration): still measure the result.
            t = time.perf_counter()
            loss, accuracy = evaluate(self.model, data.test_x, data.test_y, self.config.precision,
                                      self.config.eval_batch_size, self.channels_last, data.mean, data.std)
            history.append({"epoch": self.config.epochs, "iteration": self.iteration, "test_loss": loss,
                            "test_accuracy": accuracy, "eval_seconds": time.perf_counter() - t})
        self.save_weights(self.files.final)
        self.write_metrics(finished=True)
        self.files.checkpoint.unlink(missing_ok=True)  # final.pt and metrics.json hold all that is needed now
        return read_json(self.files.metrics)


def save_together(members: list[Member], optimizer) -> None:
    """Every member's checkpoint as one commit (a grouped stack, whose rounding depends on who
    steps together): all side files first, each with the same token; the last one written is
    the commit point, then each is renamed over checkpoint.pt (store.level.settle, which
    open_stack runs again before a stack resumes)."""
    folders, iterations = [m.files.folder for m in members], [m.iteration for m in members]
    for row, m in enumerate(members):
        m.save_checkpoint(optimizer, row, commit_token(m.files.folder, folders, iterations=iterations))
    settle([m.files for m in members], CHECKPOINTS, undo=True)  # the commit point is behind


def stderr_writer(bar, prefix: str = ""):
    """Lines printed above a progress bar (tqdm's write), on stderr."""
    return lambda line: bar.write(prefix + line, file=sys.stderr)
