"""Command line: `python -m lthfast COMMAND --flag value ...` (Fire).

User mistakes are printed as one line `error: ...` with exit status 2.
"""
from __future__ import annotations

import inspect
import sys
import warnings
from dataclasses import fields

from lthfast.config import TrainConfig

C = TrainConfig  # flag defaults are read from the config's, so they live in one place
from lthfast.errors import LthError


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
        backend: kernels: auto, torch (reference), cpp or triton.
        root: folder of runs (default ~/.cache/lthfast/runs, or $LTHFAST_ROOT).
        progress: show a progress bar (default: when stderr is a terminal).
    """
    from lthfast.runs import train_run

    if isinstance(milestones, (int, str)) and not isinstance(milestones, bool):
        milestones = _parse_int_list("milestones", milestones)
    flags = dict(locals())
    config = TrainConfig(**{f.name: flags[f.name] for f in fields(TrainConfig)})
    run_dir = train_run(config, root, progress=progress)
    print(run_dir)


def _parse_int_list(name, value):
    if isinstance(value, int):
        return (value,)
    try:
        return tuple(int(v) for v in str(value).split(",") if v.strip())
    except ValueError:
        raise LthError(f"--{name} must be comma-separated integers, got {value!r}") from None


COMMANDS = {"train": train}


def _check_flags(argv: list[str]) -> None:
    """Reject unknown commands and flags with one line, before Fire prints its usage dump."""
    if not argv or argv[0] in ("-h", "--help", "--helpfull"):
        return
    command = argv[0]
    if command not in COMMANDS:
        raise LthError(f"unknown command {command!r}; commands: {', '.join(COMMANDS)}")
    params = inspect.signature(COMMANDS[command]).parameters
    for arg in argv[1:]:
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
        return 130 if type(exc).__name__ == "Interrupted" else 2
    except fire.core.FireExit as exc:
        return exc.code
    return 0
