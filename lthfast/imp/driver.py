"""Iterative magnitude pruning with rewinding, and the study's comparison strategies.

Each level of a strategy (lthfast.pruning.strategies) is three steps, each stored as soon as it is
done (lthfast.store.layout) and reused when the command runs again:

    mask, baseline = prune(parent solution)      # the strategy's parent and the weights it drops
    evaluate(baseline)                           # stored and recomputed BatchNorm statistics
    train(start weights, mask, from iteration)   # the strategy's start; resumes from its checkpoint
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from lthfast.config.runs import ImpConfig, TrainConfig
from lthfast.data.dataset import Dataset, fixed_sample
from lthfast.foundations.errors import LthError
from lthfast.foundations.files import (
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
    load_checkpoint,
    read_json,
)
from lthfast.foundations.hashing import digest
from lthfast.models.families import create_model, prunable_names
from lthfast.pruning import masks as pruning
from lthfast.pruning import strategies
from lthfast.pruning.strategies import StartContext
from lthfast.store.layout import COPIES, Run, Store
from lthfast.store.level import Level, commit_records, readable
from lthfast.training.evaluation import evaluate_weights
from lthfast.training.network import build_model, cpu_copies
from lthfast.training.stack import TrainJob, train_stack


class ImpRun:
    """Trains the levels of every strategy of one ImpConfig into its run folder (lthfast.store.layout.Run)."""

    def __init__(self, config: ImpConfig, root: Path | str, data: Dataset, progress: bool | None = None,
                 on_iteration=None, dense_from: ImpConfig | None = None):
        """dense_from: the same recipe and seed at a late rewind point, for a run at R = 0: its
        dense network, once trained, is this run's too (see share_dense)."""
        self.config = config
        self.dense_from = dense_from
        self.on_iteration = on_iteration  # passed to every training (progress hooks, tests)
        self.store = Store(root)
        self.run = self.store.run(config)
        self.dir = self.run.folder
        self.data = data
        self.eval_sets = {"train": fixed_sample(data.train_x, data.train_y, config.eval_train_images),
                          "test": fixed_sample(data.test_x, data.test_y, config.eval_test_images)}
        self.progress = progress
        self.dense_names = prunable_names(create_model(config.train.model, config.train.width,
                                                       num_classes=data.num_classes))

    def level_dir(self, strategy: str, level: int, density: float | None = None) -> Path:
        return self.run.level_dir(strategy, level, density)

    def train_config(self, strategy: str, level: int, **changes) -> TrainConfig:
        """The recipe of one training: a fresh data order per training (seeded from seed,
        strategy and level) unless fixed, and the strategy's learning rate."""
        base = self.config.train
        if not self.config.fixed_data_order and base.data_seed is None and level > 0:
            changes.setdefault("data_seed", int(digest(f"{base.seed}/{strategy}/{level}", 8), 16))
        return dataclasses.replace(base, **changes)

    # ------------------------------------------------------------------ levels
    def dense(self) -> Path:
        """Level 0: the dense network, with its rewind checkpoint."""
        return self.level("imp", 0)

    def level(self, strategy: str, level: int, density: float | None = None) -> Path:
        """Train (or find) level `level` of `strategy`, and first the levels it prunes from;
        `density` only for strategies that may train at densities of their own (default:
        imp's density at that level)."""
        if level > 0:
            entry = strategies.get(strategy)
            self.dense() if density is not None else self.level(*entry.parent_of(level))
        train_together([(self, strategy, level, density)], stack=1, mode="loop")
        return self.run.level_dir(strategy, level, density)

    def chain(self, strategy: str, levels: int, densities: list[float] | None = None, stack: int = 1,
              mode: str = "auto") -> list[Path]:
        """Every level 0..levels of `strategy` (or, where the strategy allows, at `densities`),
        in waves: the levels whose parents are finished train together, up to `stack` a stack
        (oneshot's levels all prune the dense network; finetune's and reinit's branch off imp)."""
        entry = strategies.get(strategy)
        if densities is not None and entry.own_densities:
            targets = [(strategy, k, d) for k, d in enumerate(densities, start=1)]
        else:
            targets = [(strategy, k, None) for k in range(1, levels + 1)]
        self.dense()
        for s, k, _ in targets:  # the chains these levels branch off (imp's, for finetune and reinit)
            if k > 1 and entry.parent == "imp" and strategy != "imp":
                self.level("imp", k - 1)
        # _finished: damaged files set aside, and a finished level listed in the index if a kill lost its line
        while pending := [(s, k, d) for s, k, d in targets if not self._finished(self.run.level(s, k, d))]:
            ready = [(self, s, k, d) for s, k, d in pending if d is not None or k == 1 or entry.parent != "own"
                     or self.run.level(s, k - 1).finished()]
            train_together(ready, stack, mode)
        return [self.run.level_dir("imp", 0)] + [self.run.level_dir(s, k, d) for s, k, d in targets]

    def prepare(self, strategy: str, level: int, density: float | None = None) -> "Prepared | None":
        """Everything a level needs before its training, its parent being finished: the mask,
        the evaluated baseline and the start (strategies table); None if the level is finished."""
        if strategy == COPIES:
            return self._prepare_copy(level)
        files = self.run.level(strategy, level, density)
        if self._finished(files):
            return None
        timer = _PhaseTimer()
        if level == 0:
            prepared = Prepared(self, "imp", 0, files, None, None, timer, TrainJob(self.config.train, files.folder))
            return None if self.share_dense(prepared) else prepared
        entry = strategies.get(strategy)
        parent_files = self.run.level("imp", 0) if density is not None else self.run.level(*entry.parent_of(level))
        if not parent_files.finished():
            raise LthError(f"{strategy}:{level} prunes {parent_files.folder}, which is not finished")
        with timer("prune"):
            parent = load_checkpoint(parent_files.final)
            mask = self._mask(entry, level, files, parent_files, parent, density)
            baseline_weights = pruning.apply_mask_to_weights(parent, mask)
        with timer("baseline_eval"):
            baseline = self._baseline(files, baseline_weights)
        with timer("rewind"):
            changes = {"rewind_iter": None}
            if entry.lr == "finetune":
                changes.update(lr=self.config.finetune_lr, milestones=())
            config = self.train_config(strategy, level, **changes)
            context = StartContext(level, self.config.train.seed, config.model, config.width, baseline_weights,
                                   lambda: load_checkpoint(self.run.level("imp", 0).rewind), self.data.num_classes)
            start = entry.weights(context)
        job = TrainJob(config, files.folder, mask, start, entry.start_iteration(self.config.train.rewind_iter))
        return Prepared(self, strategy, level, files, mask, baseline, timer, job)

    def _prepare_copy(self, level: int) -> "Prepared | None":
        """The second copy of the instability pair at `level` (Frankle et al. 2020): imp:level's
        start (the dense run's weights at the rewind point R, under imp's mask m_level), from
        iteration R on imp's schedule, with another data order and augmentation; None if it is
        trained. The first copy is imp:level itself (at level 0 the dense run, which passes R
        with its momentum, where a rewound training starts without). tests/test_instability.py."""
        files = self.run.copy(level)
        if files.repair():
            warnings.warn(f"{files.folder}: damaged files set aside; the copy is trained again")
        if files.trained():
            return None
        source = self.run.level("imp", level)
        if not source.finished():
            raise LthError(f"the instability pair at level {level} starts where imp:{level} does, which is not "
                           f"finished in {self.dir}")
        mask = None if level == 0 else pruning.unpack(load_checkpoint(source.mask))
        order = int(digest(f"{self.config.train.seed}/{COPIES}/{level}", 8), 16)
        config = self.train_config("imp", level, rewind_iter=None, data_seed=order)
        job = TrainJob(config, files.folder, mask, load_checkpoint(self.run.level("imp", 0).rewind),
                       self.config.train.rewind_iter)
        return Prepared(self, COPIES, level, files, mask, None, _PhaseTimer(), job)

    def instability_copy(self, level: int) -> Path:
        """Train (or find) the second copy of the instability pair at `level`; its folder."""
        train_together([(self, COPIES, level, None)], stack=1, mode="loop")
        return self.run.copy(level).folder

    def finish(self, prepared: "Prepared", metrics: dict) -> None:
        """level.json and the index line of a trained level (level 0: its dense mask too); an
        instability copy is the trainer's files alone."""
        record_together([(prepared, metrics)])

    def record(self, prepared: "Prepared", metrics: dict) -> dict | None:
        """The level.json of a trained level, not written yet (level 0's dense mask is); None for
        an instability copy, which is the trainer's files alone."""
        if prepared.strategy == COPIES:
            return None
        mask = prepared.mask
        if prepared.level == 0:
            mask = pruning.dense_mask(load_checkpoint(prepared.files.final), self.dense_names)
            atomic_torch_save(pruning.pack(mask), prepared.files.mask)
        return self._record(prepared.files, prepared.strategy, prepared.level, mask, metrics, prepared.baseline,
                            prepared.timer)

    def share_dense(self, prepared: "Prepared") -> bool:
        """At R = 0, take the dense network of `dense_from` instead of training it again, if
        that run has finished it: the two trainings differ only in where they save rewind.pt,
        so their weights and metrics are the same (tests/test_imp.py checks bit equality), and
        the weights at iteration 0 are the seed's initialization. False: train it here."""
        source = self.dense_from and Run(self.store.run_folder(self.dense_from), self.dense_from).level("imp", 0)
        if self.config.train.rewind_iter != 0 or not source or not source.finished():
            return False
        if dataclasses.replace(self.dense_from.train, rewind_iter=0) != self.config.train or \
                dataclasses.replace(self.dense_from, train=self.config.train) != self.config:
            raise LthError(f"{source.folder} is another recipe than {self.dir}: its dense network cannot be shared")
        files = prepared.files
        files.folder.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(cpu_copies(build_model(self.config.train, torch.device("cpu")).state_dict()), files.rewind)
        for name in ("final", "metrics"):
            atomic_write_bytes(lambda f, name=name: f.write(getattr(source, name).read_bytes()), getattr(files, name))
        self.finish(prepared, read_json(files.metrics))
        return True

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
        return evaluate_weights(self.config.train, weights, self.data, {s: self.eval_sets[s] for s in splits},
                                self.config.bn_batches, recompute_bn)

    def _record(self, files: Level, strategy, level, mask, metrics, baseline, timer=None) -> dict:
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
                # what the bits depend on beyond the config (README, "Reliability")
                "backend": metrics.get("backend"), "threads": metrics.get("threads"),
                **({"threads_resumed": metrics["threads_resumed"]} if "threads_resumed" in metrics else {}),
                "folder": str(files.folder.relative_to(self.store.root)),
                "test_images": metrics.get("test_images", len(self.data.test_y)),
                "eval_images": {split: len(y) for split, (_, y) in self.eval_sets.items()},
            }
        # Timings cover everything but writing level.json and the index line (about a millisecond).
        record["overhead_seconds"] = sum(timer.seconds.values())
        record["overhead_breakdown"] = dict(timer.seconds)
        return record

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


@dataclass
class Prepared:
    """A level ready to train: its run, files, mask, evaluated baseline, timings and job."""
    run: ImpRun
    strategy: str
    level: int
    files: Level
    mask: pruning.Mask | None
    baseline: dict | None
    timer: _PhaseTimer
    job: TrainJob


def record_together(trained: list[tuple["Prepared", dict]]) -> None:
    """Record trained levels (Prepared, metrics) as one (lthfast.store.level.commit_records): a
    kill while they are recorded leaves all of them finished or none, so that the scheduler
    forms the same next stacks whenever it came (a level recorded alone would free its
    children to train in other stacks than an uninterrupted run forms); then their index lines."""
    records = [(p, record) for p, metrics in trained if (record := p.run.record(p, metrics)) is not None]
    if records:
        commit_records([(p.files, record) for p, record in records])
    for p, record in records:
        p.run.store.append_index(record)


def train_together(levels: list[tuple], stack: int, mode: str = "auto", compile: bool | str = "auto") -> None:
    """Train the levels (ImpRun, strategy, level, density), whose parents are finished, in
    stacks of at most `stack` trainings (lthfast.training.stack; across strategies, chains and seeds
    of one dataset and recipe), then record each stack's levels as one (record_together). A
    level another process finishes first, or that is finished already, is skipped."""
    prepared = [p for run, strategy, level, density in levels if (p := run.prepare(strategy, level, density))]
    # Members at the same place in their epochs share full batches (grouped mode runs those steps as one).
    prepared.sort(key=lambda p: (p.job.start_iteration, str(p.files.folder)))
    for start in range(0, len(prepared), max(1, stack)):
        chunk = prepared[start:start + max(1, stack)]
        first = chunk[0].run

        def hook(index, iteration, chunk=chunk):
            if chunk[index].run.on_iteration is not None:
                chunk[index].run.on_iteration(iteration)
        metrics = train_stack([p.job for p in chunk], first.data, mode=mode if len(chunk) > 1 else "loop",
                              compile=compile, progress=first.progress, on_iteration=hook)
        record_together(list(zip(chunk, metrics)))
