"""Command line: `python -m lthfast COMMAND --flag value ...` (Fire).

User mistakes are printed as one line `error: ...` with exit status 2.
"""
from __future__ import annotations

import inspect
import sys
import warnings
from dataclasses import fields
from pathlib import Path

from lthfast.config import TrainConfig

C = TrainConfig  # flag defaults are read from the config's, so they live in one place
from lthfast.errors import Interrupted, LthError


def train(model: str = C.model, data: str = C.data, data_dir: str | None = C.data_dir,
          train_subset: int | None = C.train_subset, subset_seed: int = C.subset_seed,
          epochs: int = C.epochs, batch_size: int = C.batch_size, lr: float = C.lr,
          momentum: float = C.momentum, nesterov: bool = C.nesterov,
          weight_decay: float = C.weight_decay, milestones=C.milestones, gamma: float = C.gamma,
          warmup_iters: int = C.warmup_iters, seed: int = C.seed, data_seed: int | None = C.data_seed,
          precision: str = C.precision, channels_last: bool | None = C.channels_last,
          rewind_iter: int | None = C.rewind_iter, eval_every: int = C.eval_every,
          eval_batch_size: int = C.eval_batch_size, width: int | None = C.width,
          device: str = C.device, backend: str = C.backend, root: str | None = None,
          progress: bool | None = None):
    """Train one network; prints the run folder as the last line.

    The run folder, under ROOT, is named by a hash of the config: running the same
    command again finds the finished run (no training) or resumes an interrupted one.

    Args:
        model: resnet20 (resnet<6n+2>) or vgg16 (vgg11/13/16/19).
        data: cifar10 or synthetic (a small generated set, for tests).
        data_dir: CIFAR-10 in ImageFolder layout (train/<class>/*.jpg, test/<class>/*.jpg); default: torchvision's download into the cache folder.
        train_subset: train on a seeded, class-balanced subset of this many images.
        subset_seed: seed of that subset (kept apart from --seed so that seeds share it).
        epochs: training epochs.
        batch_size: images per step.
        lr: peak learning rate.
        momentum: SGD momentum.
        nesterov: use Nesterov momentum.
        weight_decay: L2 weight decay.
        milestones: epochs where the lr is multiplied by GAMMA, e.g. 80,120; default: half and three quarters of EPOCHS.
        gamma: lr factor at each milestone.
        warmup_iters: linear lr warmup over this many iterations (0: none).
        seed: seed of the initialization, and of the data order unless DATA_SEED is given.
        data_seed: seed of data order and augmentation.
        precision: fp32 or bf16 (autocast).
        channels_last: memory layout; default: channels_last (measured faster).
        rewind_iter: also save the weights at this iteration (rewind.pt), for IMP's rewinding.
        eval_every: evaluate the test set every this many epochs (and at the end).
        eval_batch_size: batch size of evaluation.
        width: base width (ResNet default 16, VGG 64).
        device: auto, cpu or cuda[:N].
        backend: kernels: auto, torch (reference), cpp (CPU), cuda or triton.
        root: folder of runs (default ~/.cache/lthfast/runs, or $LTHFAST_ROOT).
        progress: show a progress bar (default: when stderr is a terminal).
    """
    from lthfast.runs import train_run

    run_dir = train_run(_train_config(locals()), root, progress=progress)
    print(run_dir)


def _train_config(flags: dict) -> TrainConfig:
    """The TrainConfig named by the train flags among `flags`."""
    flags = {f.name: flags[f.name] for f in fields(TrainConfig)}
    milestones = flags["milestones"]
    if isinstance(milestones, (int, str)) and not isinstance(milestones, bool):
        flags["milestones"] = _parse_int_list("milestones", milestones)
    return TrainConfig(**flags)


def _with_train_flags(command):
    """Give `command` (which takes **train_flags) the train flags in its signature and help,
    so that Fire lists and checks them."""
    own = [p for p in inspect.signature(command).parameters.values() if p.kind != p.VAR_KEYWORD]
    shared = [p for p in inspect.signature(train).parameters.values() if p.name not in {q.name for q in own}]
    command.__signature__ = inspect.Signature(own + [p.replace(kind=p.KEYWORD_ONLY) for p in shared])
    train_args = train.__doc__.split("Args:\n", 1)[1]
    command.__doc__ = command.__doc__.rstrip() + "\n" + train_args
    return command


@_with_train_flags
def imp(strategy: str = "imp", levels: int = 12, prune_fraction: float = 0.2, sparsities=None,
        finetune_lr: float = 0.001, fixed_data_order: bool = False, eval_train_images: int = 10_000,
        eval_test_images: int | None = None, bn_batches: int = 40, **train_flags):
    """Train the chain of pruned networks of one strategy (STUDY.md); prints the run folder.

    Level 0 (the dense network and its rewind point, iteration --rewind-iter: default 2000
    for ResNet, 1000 for VGG) is shared by every strategy of the same config. Re-running
    skips finished levels and resumes inside an interrupted one. Every train flag applies.

    Args:
        strategy: imp, oneshot, finetune, reinit, random-prune, prune-large or
                finetune-chain (Renda et al.'s chained fine-tuning).
        levels: pruning levels after the dense level 0 (density (1-PRUNE_FRACTION)^k at level k).
        prune_fraction: fraction of the remaining prunable weights removed per level.
        sparsities: oneshot/reinit only: comma-separated fractions of prunable weights to remove, e.g. 0.5,0.8 (default: imp's levels).
        finetune_lr: constant learning rate of fine-tuning.
        fixed_data_order: one data order for every training (default: one per strategy and level).
        eval_train_images: size of the fixed, unaugmented training sample for train loss.
        eval_test_images: test images for evaluating baselines and solutions (default: all).
        bn_batches: augmented training batches used to recompute a baseline's BatchNorm statistics.
    """
    from lthfast.data import load_dataset
    from lthfast.imp import ImpConfig, ImpRun, check_strategy
    from lthfast.runs import default_root

    check_strategy(strategy)
    _positive_int_flag("levels", levels)
    root = train_flags.pop("root", None)
    progress = train_flags.pop("progress", None)
    defaults = {name: p.default for name, p in inspect.signature(train).parameters.items()}
    config = ImpConfig(train=_train_config({**defaults, **train_flags}), prune_fraction=prune_fraction,
                       finetune_lr=finetune_lr, fixed_data_order=fixed_data_order,
                       eval_train_images=eval_train_images, eval_test_images=eval_test_images,
                       bn_batches=bn_batches)
    densities = None
    if sparsities is not None:
        values = _parse_float_list("sparsities", sparsities)
        for s in values:
            if s >= 1:
                raise LthError(f"sparsity {s} leaves no weight; sparsities are fractions in [0, 1)")
            if s < 0:
                raise LthError(f"sparsity {s} is negative; sparsities are fractions in [0, 1)")
        densities = [1 - s for s in values]
    t = config.train
    data = load_dataset(t.data, t.data_dir, t.train_subset, t.subset_seed)
    run = ImpRun(config, root or default_root(), data, progress=progress)
    run.chain(strategy, levels, densities)
    print(run.dir)


def summary(root: str | None = None):
    """Print one table of every finished level under ROOT: model, seed, strategy, level,
    density, test accuracy, train loss, baseline train loss."""
    from lthfast.imp import summary_table
    from lthfast.runs import default_root

    print(summary_table(Path(root).expanduser() if root else default_root()))


def _positive_int_flag(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LthError(f"--{name} must be an integer >= 1, got {value!r}")


def _parse_float_list(name, value):
    values = value if isinstance(value, (tuple, list)) else str(value).split(",")
    try:
        return [float(v) for v in values if str(v).strip()]
    except ValueError:
        raise LthError(f"--{name} must be comma-separated numbers, got {value!r}") from None




def _parse_int_list(name, value):
    if isinstance(value, int):
        return (value,)
    try:
        return tuple(int(v) for v in str(value).split(",") if v.strip())
    except ValueError:
        raise LthError(f"--{name} must be comma-separated integers, got {value!r}") from None


def _analyses():
    from lthfast.cli_analyze import ANALYSES

    return ANALYSES


def _study_commands():
    from lthfast.cli_study import report, study

    return {"study": study, "report": report}


COMMANDS = {"train": train, "imp": imp, "summary": summary, "analyze": _analyses(), **_study_commands()}


def _check_flags(argv: list[str]) -> None:
    """Reject unknown commands and flags with one line, before Fire prints its usage dump."""
    if not argv or argv[0] in ("-h", "--help", "--helpfull"):
        return
    command = argv[0]
    if command not in COMMANDS:
        raise LthError(f"unknown command {command!r}; commands: {', '.join(COMMANDS)}")
    target, rest = COMMANDS[command], argv[1:]
    if isinstance(target, dict):  # a group: `analyze WHAT ...`
        if not rest or rest[0] in ("-h", "--help"):
            return
        if rest[0] not in target:
            raise LthError(f"unknown {command} {rest[0]!r}; one of: {', '.join(target)}")
        target, rest = target[rest[0]], rest[1:]
    params = inspect.signature(target).parameters
    for arg in rest:
        if arg in ("--", "-h", "--help"):
            return
        if arg.startswith("--"):
            name = arg[2:].split("=", 1)[0].replace("-", "_")
            if name.startswith("no") and name[2:] in params:
                continue
            if name not in params:
                raise LthError(f"unknown flag --{arg[2:].split('=', 1)[0]} for {command}; "
                               f"see `python -m lthfast {command} --help`")


def main(argv: list[str] | None = None) -> int:
    import fire

    argv = sys.argv[1:] if argv is None else argv
    warnings.simplefilter("once")
    try:
        _check_flags(argv)
        fire.Fire(COMMANDS, command=argv, name="lthfast")
    except LthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 130 if isinstance(exc, Interrupted) else 2
    except fire.core.FireExit as exc:
        return exc.code
    except KeyboardInterrupt:  # outside a training (which saves and raises Interrupted): nothing half-written
        print("error: interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    return 0
