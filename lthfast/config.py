"""Typed training config, its validation and the hash that names its run folder.

The hash covers the fields that change results and differ from their defaults
(as open_lth), so adding a new field with a default keeps old run names valid.
Fields that only say where or how fast to run (device, kernel backend, memory
layout, evaluation batch size) are left out of it: they change results only
within floating-point tolerance. The data folder's path is left out too (the
same data may live anywhere), but whether the data came from a folder or from
torchvision's download is kept: the JPEG copy's pixels differ slightly.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, fields

from lthfast.errors import LthError

BACKENDS = ("auto", "torch", "cpp", "triton", "cuda")
NOT_HASHED = {"device", "backend", "channels_last", "eval_batch_size", "data_dir"}
PRECISIONS = ("fp32", "bf16")


def _positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise LthError(f"--{name.replace('_', '-')} must be an integer >= {minimum}, got {value!r}")


def _number(name, value, minimum=0.0):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= minimum:
        raise LthError(f"--{name.replace('_', '-')} must be a number >= {minimum}, got {value!r}")


@dataclass
class TrainConfig:
    """One training run: model, data, recipe (STUDY.md's defaults) and seed."""
    model: str = "resnet20"
    width: int | None = None
    data: str = "cifar10"
    data_dir: str | None = None
    train_subset: int | None = None
    subset_seed: int = 0
    epochs: int = 160
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    milestones: tuple | None = None  # epochs; None: half and three quarters of the run
    gamma: float = 0.1
    warmup_iters: int = 0
    seed: int = 0
    data_seed: int | None = None  # None: derived from seed
    precision: str = "fp32"
    channels_last: bool | None = None  # None: where it is faster (CPU)
    rewind_iter: int | None = None  # keep a checkpoint of this iteration
    eval_every: int = 1  # epochs between test-set evaluations (the last epoch always)
    eval_batch_size: int = 256
    device: str = "auto"
    backend: str = "auto"

    def __post_init__(self):
        self.validate()

    def validate(self):
        from lthfast.models import parse_model_name

        for name in ("epochs", "batch_size", "eval_every", "eval_batch_size"):
            _positive_int(name, getattr(self, name))
        for name in ("seed", "subset_seed", "warmup_iters"):
            _positive_int(name, getattr(self, name), minimum=0)
        for name in ("data_seed", "rewind_iter"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name), minimum=0)
        if self.train_subset is not None:
            _positive_int("train_subset", self.train_subset, minimum=10)
        for name in ("lr", "momentum", "weight_decay", "gamma"):
            _number(name, getattr(self, name))
        if self.precision not in PRECISIONS:
            raise LthError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(self.device)):
            raise LthError(f"--device must be auto, cpu or cuda[:N], got {self.device!r}")
        if self.backend not in BACKENDS:
            raise LthError(f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.data not in ("cifar10", "synthetic"):
            raise LthError(f"--data must be cifar10 or synthetic, got {self.data!r}")
        if self.milestones is not None:
            ms = self.milestones if isinstance(self.milestones, (tuple, list)) else (self.milestones,)
            if not all(isinstance(m, int) and not isinstance(m, bool) and 0 < m for m in ms):
                raise LthError(f"--milestones must be positive epoch numbers like 80,120; got {self.milestones!r}")
            self.milestones = tuple(sorted(ms))
        parse_model_name(self.model, self.width)

    # -------------------------------------------------------------- derived values
    @property
    def lr_milestones(self) -> tuple:
        """Milestone epochs; by default 80,120 of 160 epochs, scaled to the run's length."""
        if self.milestones is not None:
            return self.milestones
        return (round(self.epochs * 0.5), round(self.epochs * 0.75))

    @property
    def effective_data_seed(self) -> int:
        return self.seed if self.data_seed is None else self.data_seed

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hashed_fields(self) -> dict:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in NOT_HASHED and value != f.default:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        if self.data == "cifar10" and self.data_dir is not None:
            out["data_source"] = "image-folder"
        return out

    def run_hash(self) -> str:
        blob = json.dumps(self.hashed_fields(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise LthError(f"unknown config fields: {', '.join(sorted(unknown))}")
        d = dict(d)
        if isinstance(d.get("milestones"), list):
            d["milestones"] = tuple(d["milestones"])
        return cls(**d)
