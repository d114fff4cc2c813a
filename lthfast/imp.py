"""Iterative magnitude pruning with rewinding, and the study's comparison strategies.

Run store (one folder per config and seed, named by a hash of the non-default config):

  ROOT/imp_<hash>/config.json            the ImpConfig
  ROOT/imp_<hash>/level_00/              the dense network theta_0 (shared by all strategies),
                                         with rewind.pt at iteration R
  ROOT/imp_<hash>/<strategy>/level_KK/   one pruned level: mask.pt (bit-packed), baseline.pt,
                                         baseline.json, the trainer's files, level.json when done
  ROOT/index.jsonl                       one line per finished level, with its key figures

Every step of a level is stored as soon as it is done and reused when the command
runs again, and the training inside a level resumes from its checkpoint.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from lthfast import pruning
from lthfast.config import TrainConfig
from lthfast.data import Dataset, fixed_sample
from lthfast.errors import LthError
from lthfast.models import create_model, parse_model_name, prunable_names
from lthfast.storage import atomic_torch_save, atomic_write_json, load_checkpoint, read_json

STRATEGIES = ("imp", "oneshot", "finetune", "reinit", "random-prune", "prune-large", "finetune-chain")
# Strategies that prune their own previous solution, and which weights they drop. finetune-chain
# is Renda et al.'s chained fine-tuning (an option of STUDY.md): prune the fine-tuned net each level.
CHAINS = {"imp": "smallest", "random-prune": "random", "prune-large": "largest",
          "finetune-chain": "smallest"}
FINETUNES = ("finetune", "finetune-chain")  # start from the baseline at the final learning rate
DEFAULT_REWIND_ITER = {"resnet": 2000, "vgg": 1000}


@dataclass
class ImpConfig:
    """What a chain of pruned networks depends on (levels and strategy are not part of it)."""
    train: TrainConfig
    prune_fraction: float = 0.2
    finetune_lr: float = 0.001
    fixed_data_order: bool = False  # one data order for every training instead of one per level
    eval_train_images: int = 10_000  # fixed, unaugmented training sample for train loss
    eval_test_images: int | None = None  # test images for baselines and solutions (None: all)
    bn_batches: int = 40  # augmented training batches to recompute BatchNorm statistics

    def __post_init__(self):
        if not isinstance(self.prune_fraction, (int, float)) or not 0 < self.prune_fraction < 1:
            raise LthError(f"--prune-fraction must be in (0, 1), got {self.prune_fraction!r}")
        if not isinstance(self.finetune_lr, (int, float)) or self.finetune_lr <= 0:
            raise LthError(f"--finetune-lr must be a positive number, got {self.finetune_lr!r}")
        for name in ("eval_train_images", "eval_test_images", "bn_batches"):
            value = getattr(self, name)
            if value is None and name == "eval_test_images":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LthError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.train.rewind_iter is None:
            family, _ = parse_model_name(self.train.model)
            self.train = dataclasses.replace(self.train, rewind_iter=DEFAULT_REWIND_ITER[family])

    def hashed_fields(self) -> dict:
        out = {"train": self.train.hashed_fields()}
        for f in fields(self):
            if f.name != "train" and getattr(self, f.name) != f.default:
                out[f.name] = getattr(self, f.name)
        return out

    def run_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.hashed_fields(), sort_keys=True).encode()).hexdigest()[:12]

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "train"}
        d["train"] = self.train.to_dict()
        return d


def check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise LthError(f"unknown strategy {strategy!r}; strategies: {', '.join(STRATEGIES)}")


def level_densities(prune_fraction: float, levels: int) -> list[float]:
    return [(1 - prune_fraction) ** k for k in range(levels + 1)]


class ImpRun:
    """The chain of levels of one config and seed, for every strategy, in one folder."""

    def __init__(self, config: ImpConfig, root: Path, data: Dataset, progress: bool | None = None,
                 on_iteration=None):
        self.config = config
        self.on_iteration = on_iteration  # passed to every training (progress hooks, tests)
        self.root = Path(root)
        self.dir = self.root / f"imp_{config.run_hash()}"
        self.data = data
        self.eval_sets = {"train": fixed_sample(data.train_x, data.train_y, config.eval_train_images),
                          "test": fixed_sample(data.test_x, data.test_y, config.eval_test_images)}
        self.progress = progress
        self._prepare()
        self.dense_names = prunable_names(create_model(config.train.model, config.train.width))

    # ------------------------------------------------------------------ folders
    def _prepare(self):
        path = self.dir / "config.json"
        if path.exists():
            if _hashed(read_json(path)) != self.config.hashed_fields():
                raise LthError(f"run folder {self.dir} holds a run of another config; "
                               "use another --root or remove that folder")
            return
        atomic_write_json(self.config.to_dict(), path)

    def level_dir(self, strategy: str, level: int, density: float | None = None) -> Path:
        if level == 0:
            return self.dir / "level_00"
        if density is not None:  # oneshot / reinit at a sparsity of their own
            return self.dir / strategy / f"density_{density:.6f}"
        return self.dir / strategy / f"level_{level:02d}"

    # ------------------------------------------------------------------ levels
    def train_config(self, strategy: str, level: int, **changes) -> TrainConfig:
        base = self.config.train
        if not self.config.fixed_data_order and base.data_seed is None and level > 0:
            # A fresh data order per training, seeded from seed, strategy and level.
            digest = hashlib.sha256(f"{base.seed}/{strategy}/{level}".encode()).hexdigest()
            changes.setdefault("data_seed", int(digest[:8], 16))
        return dataclasses.replace(base, **changes)

    def dense(self) -> Path:
        """Level 0: the dense network, with its rewind checkpoint."""
        from lthfast.trainer import train

        folder = self.level_dir("imp", 0)
        if self._finished(folder):
            return folder
        metrics = train(self.config.train, folder, self.data, progress=self.progress,
                        on_iteration=self.on_iteration)
        mask = pruning.dense_mask(load_checkpoint(folder / "final.pt"), self.dense_names)
        atomic_torch_save(pruning.pack(mask), folder / "mask.pt")
        self._finish_level(folder, "imp", 0, mask, metrics, baseline=None)
        return folder

    def level(self, strategy: str, level: int, density: float | None = None) -> Path:
        """Train (or find) level `level` of `strategy`; `density` only for oneshot/reinit
        at sparsities of their own (default: imp's density at that level)."""
        from lthfast.trainer import train

        check_strategy(strategy)
        if level == 0:
            return self.dense()
        if density is not None and strategy not in ("oneshot", "reinit"):
            raise LthError(f"--sparsities applies to oneshot and reinit, not {strategy}")
        folder = self.level_dir(strategy, level, density)
        if self._finished(folder):
            return folder
        parent_dir = self._parent(strategy, level, density)
        timer = _PhaseTimer()
        with timer("prune"):
            parent = load_checkpoint(parent_dir / "final.pt")
            mask = self._mask(strategy, level, folder, parent_dir, parent, density)
            baseline_weights = pruning.apply_mask_to_weights(parent, mask)
        with timer("baseline_eval"):
            baseline = self._baseline(folder, baseline_weights)
        with timer("rewind"):
            if strategy in FINETUNES:
                config = self.train_config(strategy, level, lr=self.config.finetune_lr, milestones=(),
                                           rewind_iter=None)
                start, start_iter = baseline_weights, 0
            elif strategy == "reinit":
                reinit_seed = self.config.train.seed + 1_000_003 * level
                config = self.train_config(strategy, level, rewind_iter=None)
                start, start_iter = create_model(config.model, config.width, seed=reinit_seed).state_dict(), 0
            else:
                config = self.train_config(strategy, level, rewind_iter=None)
                start = load_checkpoint(self.level_dir("imp", 0) / "rewind.pt")
                start_iter = self.config.train.rewind_iter
        metrics = train(config, folder, self.data, mask=mask, initial_weights=start,
                        start_iteration=start_iter, progress=self.progress, on_iteration=self.on_iteration)
        self._finish_level(folder, strategy, level, mask, metrics, baseline, timer)
        return folder

    def chain(self, strategy: str, levels: int, densities: list[float] | None = None) -> list[Path]:
        """Every level 0..levels of `strategy` (oneshot/reinit: at `densities` if given)."""
        check_strategy(strategy)
        folders = [self.dense()]
        if densities is not None and strategy in ("oneshot", "reinit"):
            for k, d in enumerate(densities, start=1):
                folders.append(self.level(strategy, k, density=d))
            return folders
        for k in range(1, levels + 1):
            folders.append(self.level(strategy, k))
        return folders

    # ------------------------------------------------------------------ pieces
    def _parent(self, strategy: str, level: int, density: float | None) -> Path:
        """The folder of theta_{k-1}: its own chain, imp's for finetune/reinit, dense for oneshot."""
        if strategy == "oneshot" or density is not None:
            return self.dense()
        source = strategy if strategy in CHAINS else "imp"
        return self.level(source, level - 1) if level > 1 else self.dense()

    def _mask(self, strategy, level, folder, parent_dir, parent, density):
        path = folder / "mask.pt"
        if path.exists():
            return pruning.unpack(load_checkpoint(path))
        if strategy in ("finetune", "reinit") and density is None:
            # Branches off imp: the same mask m_k, computed (and stored in imp's folder) without
            # training imp's level; parent_dir and parent already are imp's theta_{k-1}.
            mask = self._mask("imp", level, self.level_dir("imp", level), parent_dir, parent, None)
        else:
            parent_mask = pruning.unpack(load_checkpoint(parent_dir / "mask.pt"))
            total = pruning.total_count(parent_mask)
            if density is None:  # (1 - f)^k of the total, as pruning.target_kept
                density = (1 - self.config.prune_fraction) ** level
            target = round(total * density)
            if target < 1:
                raise LthError(f"density {density:.3g} leaves no weight of the {total} prunable ones")
            count = pruning.kept_count(parent_mask) - target
            if count < 0:
                raise LthError(f"density {density} is above the parent's density {pruning.density(parent_mask):.3g}")
            kind = "smallest" if strategy in ("oneshot", "reinit") else CHAINS[strategy]
            if kind == "random":
                mask = pruning.prune_random(parent_mask, count, seed=self.config.train.seed * 1_000_003 + level)
            else:
                # Weights are loaded on the CPU: its fastest backend, or the reference if asked for.
                backend = "torch" if self.config.train.backend == "torch" else "auto"
                mask = pruning.prune_magnitude(parent, parent_mask, count, largest=(kind == "largest"),
                                               backend=backend)
        atomic_torch_save(pruning.pack(mask), path)
        return mask

    def _baseline(self, folder: Path, weights: dict) -> dict:
        """Store the baseline's weights and evaluate them, with stored and recomputed BN statistics."""
        path = folder / "baseline.json"
        if path.exists():
            return read_json(path)
        atomic_torch_save(weights, folder / "baseline.pt")
        result = self._evaluate(weights, recompute_bn=False)
        result.update({f"{k}_bn_recomputed": v for k, v in self._evaluate(weights, recompute_bn=True).items()})
        atomic_write_json(result, path)
        return result

    def _evaluate(self, weights: dict, recompute_bn: bool, splits=("train", "test")) -> dict:
        from lthfast.trainer import build_model, evaluate, recompute_batchnorm, resolve_device, use_channels_last

        config = self.config.train
        device = resolve_device(config.device)
        channels_last = use_channels_last(config, device)
        model = build_model(config, device, weights)
        data = self.data.to(device)
        if recompute_bn:
            recompute_batchnorm(model, data, self.config.bn_batches, config.batch_size,
                                seed=config.seed, device=device, channels_last=channels_last, config=config)
        result = {}
        for split in splits:
            x, y = self.eval_sets[split]
            loss, accuracy = evaluate(model, x.to(device), y.to(device), config, device, channels_last)
            result[f"{split}_loss"], result[f"{split}_accuracy"] = loss, accuracy
        return result

    def _finish_level(self, folder, strategy, level, mask, metrics, baseline, timer=None):
        timer = timer or _PhaseTimer()
        with timer("final_eval"):
            # The trainer measured test accuracy on the whole test set; add the clean train loss.
            final = self._evaluate(load_checkpoint(folder / "final.pt"), recompute_bn=False, splits=("train",))
        with timer("record"):
            record = {
                "run": self.dir.name, "model": self.config.train.model, "seed": self.config.train.seed,
                "strategy": strategy, "level": level, "density": pruning.density(mask),
                "kept_weights": pruning.kept_count(mask),
                "layer_density": pruning.layer_densities(mask),
                "collapsed_layers": pruning.collapsed_layers(mask),
                "test_accuracy": metrics["test_accuracy"], "test_loss": metrics["test_loss"],
                "train_loss": final["train_loss"], "train_accuracy": final["train_accuracy"],
                "baseline": baseline,
                "train_seconds": metrics["train_seconds"],
                "folder": str(folder.relative_to(self.root)),
            }
        # Timings cover everything but writing level.json and the index line (about a millisecond).
        record["overhead_seconds"] = sum(timer.seconds.values())
        record["overhead_breakdown"] = dict(timer.seconds)
        atomic_write_json(record, folder / "level.json")
        append_index(self.root, record)

    def _finished(self, folder: Path) -> bool:
        """Whether the level in `folder` is done; a done level is (re)listed in the index, in
        case a kill came between writing level.json and appending its index line."""
        if not (folder / "level.json").exists():
            return False
        append_index(self.root, read_json(folder / "level.json"))
        return True


class _PhaseTimer:
    """Wall seconds per named phase of a level (the overhead outside training, level.json)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start


def _hashed(stored: dict) -> dict:
    stored = dict(stored)
    train = TrainConfig.from_dict(stored.pop("train"))
    return ImpConfig(train=train, **stored).hashed_fields()


# ----------------------------------------------------------------------------- index

def append_index(root: Path, record: dict) -> None:
    """Append a finished level to ROOT/index.jsonl (once: a re-run does not duplicate it)."""
    path = Path(root) / "index.jsonl"
    key = (record["run"], record["strategy"], record["folder"])
    if any((r["run"], r["strategy"], r["folder"]) == key for r in read_index(root)):
        return
    line = json.dumps({k: v for k, v in record.items() if k != "layer_density"}, sort_keys=True)
    torn = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with open(path, "a") as f:
        f.write(("\n" if torn else "") + line + "\n")
        f.flush()


def read_index(root: Path) -> list[dict]:
    path = Path(root) / "index.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:  # a line torn by a kill mid-write; its level.json is still there
            continue
    return records


def summary_table(root: Path) -> str:
    rows = sorted(read_index(root), key=lambda r: (r["model"], r["seed"], r["strategy"], -r["density"]))
    if not rows:
        raise LthError(f"no finished levels under {root}")
    header = ["model", "seed", "strategy", "level", "density", "test_acc", "train_loss", "baseline_train_loss"]
    lines = ["  ".join(f"{h:>19s}" if i == 7 else f"{h:>10s}" for i, h in enumerate(header))]
    for r in rows:
        base = r["baseline"]["train_loss"] if r.get("baseline") else float("nan")
        lines.append("  ".join([f"{r['model']:>10s}", f"{r['seed']:>10d}", f"{r['strategy']:>10s}",
                                f"{r['level']:>10d}", f"{r['density']:>10.4f}", f"{r['test_accuracy']:>10.4f}",
                                f"{r['train_loss']:>10.4f}", f"{base:>19.4f}"]))
    return "\n".join(lines)
