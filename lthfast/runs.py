"""Run folders: one per training config, named by the config's hash, under a root.

The same command finds its finished run and does not train again; an unfinished
one resumes from its checkpoint. A folder of the same name holding another config
is an error, never overwritten.
"""
from __future__ import annotations

import os
from pathlib import Path

from lthfast.config import TrainConfig
from lthfast.data import load_dataset
from lthfast.errors import LthError
from lthfast.storage import atomic_write_json, read_json


def default_root() -> Path:
    return Path(os.environ.get("LTHFAST_ROOT", Path.home() / ".cache" / "lthfast" / "runs"))


def run_dir_for(config: TrainConfig, root: Path | str | None = None) -> Path:
    return Path(root or default_root()).expanduser() / f"train_{config.run_hash()}"


def prepare_run_dir(config: TrainConfig, run_dir: Path) -> None:
    """Create the folder with config.json, or check that the one there matches."""
    config_path = run_dir / "config.json"
    if config_path.exists():
        stored = TrainConfig.from_dict(read_json(config_path))
        if stored.hashed_fields() != config.hashed_fields():
            raise LthError(f"run folder {run_dir} holds a run of another config; "
                           "use another --root or remove that folder")
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        raise LthError(f"run folder {run_dir} exists without config.json; remove it or use another --root")
    atomic_write_json(config.to_dict(), config_path)


def is_finished(run_dir: Path) -> bool:
    metrics = run_dir / "metrics.json"
    return metrics.exists() and read_json(metrics).get("finished", False)


def train_run(config: TrainConfig, root: Path | str | None = None, progress: bool | None = None,
              on_iteration=None) -> Path:
    """Train the run of `config` under `root` unless it is finished; returns its folder."""
    from lthfast.trainer import train  # heavy imports only when training

    run_dir = run_dir_for(config, root)
    prepare_run_dir(config, run_dir)
    if is_finished(run_dir):
        return run_dir
    data = load_dataset(config.data, config.data_dir, config.train_subset, config.subset_seed)
    train(config, run_dir, data, progress=progress, on_iteration=on_iteration)
    return run_dir
