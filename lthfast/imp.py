"""Iterative magnitude pruning with rewinding, and the study's comparison strategies.

Each level of a strategy (lthfast.strategies) is three steps, each stored as soon as it is
done (lthfast.store) and reused when the command runs again:

    mask, baseline = prune(parent solution)      # the strategy's parent and the weights it drops
    evaluate(baseline)                           # stored and recomputed BatchNorm statistics
    train(start weights, mask, from iteration)   # the strategy's start; resumes from its checkpoint
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
import warnings
from pathlib import Path

from lthfast import pruning, strategies
from lthfast.config import ImpConfig, TrainConfig
from lthfast.data import Dataset, fixed_sample
from lthfast.errors import LthError
from lthfast.evaluation import evaluate, recompute_batchnorm
from lthfast.hardware import resolve_device
from lthfast.models import create_model, prunable_names
from lthfast.storage import atomic_torch_save, atomic_write_json, load_checkpoint, read_json
from lthfast.store import Level, Store, readable
from lthfast.strategies import StartContext
from lthfast.trainer import build_model, train, use_channels_last


class ImpRun:
    """Trains the levels of every strategy of one ImpConfig into its run folder (lthfast.store.Run)."""

    def __init__(self, config: ImpConfig, root: Path | str, data: Dataset, progress: bool | None = None,
                 on_iteration=None):
        self.config = config
        self.on_iteration = on_iteration  # passed to every training (progress hooks, tests)
        self.store = Store(root)
        self.run = self.store.run(config)
        self.dir = self.run.folder
        self.data = data
        self.eval_sets = {"train": fixed_sample(data.train_x, data.train_y, config.eval_train_images),
                          "test": fixed_sample(data.test_x, data.test_y, config.eval_test_images)}
        self.progress = progress
        self.dense_names = prunable_names(create_model(config.train.model, config.train.width))

    def level_dir(self, strategy: str, level: int, density: float | None = None) -> Path:
        return self.run.level_dir(strategy, level, density)

    def train_config(self, strategy: str, level: int, **changes) -> TrainConfig:
        """The recipe of one training: a fresh data order per training (seeded from seed,
        strategy and level) unless fixed, and the strategy's learning rate."""
        base = self.config.train
        if not self.config.fixed_data_order and base.data_seed is None and level > 0:
            digest = hashlib.sha256(f"{base.seed}/{strategy}/{level}".encode()).hexdigest()
            changes.setdefault("data_seed", int(digest[:8], 16))
        return dataclasses.replace(base, **changes)

    # ------------------------------------------------------------------ levels
    def dense(self) -> Path:
        """Level 0: the dense network, with its rewind checkpoint."""
        files = self.run.level("imp", 0)
        if self._finished(files):
            return files.folder
        metrics = train(self.config.train, files.folder, self.data, progress=self.progress,
                        on_iteration=self.on_iteration)
        mask = pruning.dense_mask(load_checkpoint(files.final), self.dense_names)
        atomic_torch_save(pruning.pack(mask), files.mask)
        self._finish_level(files, "imp", 0, mask, metrics, baseline=None)
        return files.folder

    def level(self, strategy: str, level: int, density: float | None = None) -> Path:
        """Train (or find) level `level` of `strategy`; `density` only for strategies that may
        train at densities of their own (default: imp's density at that level)."""
        entry = strategies.get(strategy)
        if level == 0:
            return self.dense()
        if density is not None and not entry.own_densities:
            raise LthError(f"--sparsities applies to oneshot and reinit, not {strategy}")
        files = self.run.level(strategy, level, density)
        if self._finished(files):
            return files.folder
        parent_dir = self.dense() if density is not None else self.level(*entry.parent_of(level))
        timer = _PhaseTimer()
        with timer("prune"):
            parent = load_checkpoint(Level(parent_dir).final)
            mask = self._mask(entry, level, files, Level(parent_dir), parent, density)
            baseline_weights = pruning.apply_mask_to_weights(parent, mask)
        with timer("baseline_eval"):
            baseline = self._baseline(files, baseline_weights)
        with timer("rewind"):
            changes = {"rewind_iter": None}
            if entry.lr == "finetune":
                changes.update(lr=self.config.finetune_lr, milestones=())
            config = self.train_config(strategy, level, **changes)
            context = StartContext(level, self.config.train.seed, config.model, config.width, baseline_weights,
                                   lambda: load_checkpoint(self.run.level("imp", 0).rewind))
            start = entry.weights(context)
        metrics = train(config, files.folder, self.data, mask=mask, initial_weights=start,
                        start_iteration=entry.start_iteration(self.config.train.rewind_iter),
                        progress=self.progress, on_iteration=self.on_iteration)
        self._finish_level(files, strategy, level, mask, metrics, baseline, timer)
        return files.folder

    def chain(self, strategy: str, levels: int, densities: list[float] | None = None) -> list[Path]:
        """Every level 0..levels of `strategy` (or, where the strategy allows, at `densities`)."""
        entry = strategies.get(strategy)
        folders = [self.dense()]
        if densities is not None and entry.own_densities:
            return folders + [self.level(strategy, k, density=d) for k, d in enumerate(densities, start=1)]
        return folders + [self.level(strategy, k) for k in range(1, levels + 1)]

    # ------------------------------------------------------------------ pieces
    def _mask(self, entry: strategies.Strategy, level: int, files: Level, parent_files: Level, parent: dict,
              density: float | None) -> pruning.Mask:
        if readable(files.mask):
            return pruning.unpack(load_checkpoint(files.mask))
        if entry.drops == "imp-mask" and density is None:
            # imp's mask m_k, computed (and stored in imp's folder) without training imp's level;
            # parent_files and parent already are imp's theta_{k-1}.
            mask = self._mask(strategies.get("imp"), level, self.run.level("imp", level), parent_files, parent, None)
        else:
            parent_mask = pruning.unpack(load_checkpoint(parent_files.mask))
            total = pruning.total_count(parent_mask)
            target = pruning.target_kept(total, self.config.prune_fraction, level) if density is None \
                else round(total * density)
            if target < 1:
                wanted = (1 - self.config.prune_fraction) ** level if density is None else density
                raise LthError(f"density {wanted:.3g} leaves no weight of the {total} prunable ones")
            count = pruning.kept_count(parent_mask) - target
            if count < 0:
                raise LthError(f"density {density} is above the parent's density {pruning.density(parent_mask):.3g}")
            drops = "smallest" if density is not None else entry.drops
            if drops == "random":
                mask = pruning.prune_random(parent_mask, count, seed=self.config.train.seed * 1_000_003 + level)
            else:
                # Weights are loaded on the CPU: its fastest backend, or the reference if asked for.
                backend = "torch" if self.config.train.backend == "torch" else "auto"
                mask = pruning.prune_magnitude(parent, parent_mask, count, largest=(drops == "largest"),
                                               backend=backend)
        atomic_torch_save(pruning.pack(mask), files.mask)
        return mask

    def _baseline(self, files: Level, weights: dict) -> dict:
        """Store the baseline's weights and evaluate them, with stored and recomputed BN statistics."""
        if readable(files.baseline_eval) and readable(files.baseline):
            return read_json(files.baseline_eval)
        atomic_torch_save(weights, files.baseline)
        result = self._evaluate(weights, recompute_bn=False)
        result.update({f"{k}_bn_recomputed": v for k, v in self._evaluate(weights, recompute_bn=True).items()})
        atomic_write_json(result, files.baseline_eval)
        return result

    def _evaluate(self, weights: dict, recompute_bn: bool, splits=("train", "test")) -> dict:
        config = self.config.train
        device = resolve_device(config.device)
        channels_last = use_channels_last(config, device)
        model = build_model(config, device, weights)
        if recompute_bn:
            recompute_batchnorm(model, self.data.to(device), self.config.bn_batches, config.batch_size,
                                seed=config.seed, channels_last=channels_last, precision=config.precision)
        result = {}
        for split in splits:
            x, y = self.eval_sets[split]
            loss, accuracy = evaluate(model, x.to(device), y.to(device), config.precision, config.eval_batch_size,
                                      channels_last)
            result[f"{split}_loss"], result[f"{split}_accuracy"] = loss, accuracy
        return result

    def _finish_level(self, files: Level, strategy, level, mask, metrics, baseline, timer=None):
        timer = timer or _PhaseTimer()
        with timer("final_eval"):
            # The trainer measured test accuracy on the whole test set; add the clean train loss.
            final = self._evaluate(load_checkpoint(files.final), recompute_bn=False, splits=("train",))
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
                "folder": str(files.folder.relative_to(self.store.root)),
                "test_images": metrics.get("test_images", len(self.data.test_y)),
                "eval_images": {split: len(y) for split, (_, y) in self.eval_sets.items()},
            }
        # Timings cover everything but writing level.json and the index line (about a millisecond).
        record["overhead_seconds"] = sum(timer.seconds.values())
        record["overhead_breakdown"] = dict(timer.seconds)
        atomic_write_json(record, files.record)
        self.store.append_index(record)

    def _finished(self, files: Level) -> bool:
        """Whether the level is done (damaged files are moved aside first, to be computed
        again); a done level is (re)listed in the index, in case a kill came between writing
        level.json and appending its index line."""
        moved = files.repair()
        if moved:
            warnings.warn(f"{files.folder}: damaged or incomplete files set aside and computed again: "
                          f"{', '.join(p.name for p in moved)}")
        if not files.finished():
            return False
        self.store.append_index(files.read_record())
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
