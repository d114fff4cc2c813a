"""The trainer: SGD with momentum on a step schedule, masks kept exactly zero, resumable.

A training lives in one folder (lthfast.store.level.Level names its files; lthfast.training.member
describes them): checkpoint.pt, rewind.pt, final.pt and metrics.json.

Everything a step depends on (learning rate, data order, augmentation) is a pure
function of the config and the iteration, so resuming from a checkpoint at any
iteration ends with the same weights as an uninterrupted run.

A single training is a stack of one (lthfast.training.stack, mode loop): one code path trains one
network or K of them together.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from lthfast.config.runs import TrainConfig
from lthfast.data.dataset import Dataset
from lthfast.data.loading import load_dataset
from lthfast.pruning.masks import Mask
from lthfast.store.layout import Store
from lthfast.training.engines import forward_loss
from lthfast.training.optim import MaskedSGD
from lthfast.training.stack import TrainJob, train_stack


def train_step(model, optimizer: MaskedSGD, x, y, lr: float, config: TrainConfig, device):
    """One SGD step on (x, y) that leaves every pruned weight (and its momentum) exactly zero."""
    loss, logits = forward_loss(model, x, y, config.precision, device)
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
    job = TrainJob(config, Path(run_dir), mask, initial_weights, start_iteration)
    hook = None if on_iteration is None else (lambda _, iteration: on_iteration(iteration))
    return train_stack([job], data, mode="loop", progress=progress, on_iteration=hook)[0]


def train_run(config: TrainConfig, root: Path | str | None = None, progress: bool | None = None,
              on_iteration=None) -> Path:
    """Train the run of `config` under `root` (lthfast.store.layout) unless it is finished; returns its folder."""
    files = Store(root).prepare_train_dir(config)
    if not files.trained():
        data = load_dataset(config.data, config.data_dir, config.train_subset, config.subset_seed)
        train(config, files.folder, data, progress=progress, on_iteration=on_iteration)
    return files.folder
