"""Command line: `python -m lthfast COMMAND --flag value ...` (Fire).

Flags are derived from the config dataclasses (lthfast.flags); the commands only build
configs, call the library and print. User mistakes are printed as one line `error: ...`
with exit status 2; a signal stops a command with one line and exit status 130.
"""
from __future__ import annotations

import inspect
import sys
import warnings

import fire

from lthfast import signals, store, strategies
from lthfast.cli_analyze import ANALYSES
from lthfast.cli_study import report, study
from lthfast.config import ImpConfig, TrainConfig
from lthfast.data import load_dataset
from lthfast.errors import Interrupted, LthError
from lthfast.flags import build, parse_list, with_flags
from lthfast.imp import ImpRun
from lthfast.settings import integer, number
from lthfast.trainer import train_run


@with_flags(TrainConfig)
def train(root: str | None = None, progress: bool | None = None, **flags):
    """Train one network; prints the run folder as the last line.

    The run folder, under ROOT, is named by a hash of the config: running the same
    command again finds the finished run (no training) or resumes an interrupted one.

    Args:
        root: folder of runs (default ~/.cache/lthfast/runs, or $LTHFAST_ROOT).
        progress: show a progress bar (default: when stderr is a terminal).
    """
    print(train_run(build(TrainConfig, flags), root, progress=progress))


@with_flags(ImpConfig, TrainConfig)
def imp(strategy: str = "imp", levels: int = 12, sparsities=None, root: str | None = None,
        progress: bool | None = None, **flags):
    """Train the chain of pruned networks of one strategy (STUDY.md); prints the run folder.

    Level 0 (the dense network and its rewind point, iteration --rewind-iter: default 2000
    for ResNet, 1000 for VGG) is shared by every strategy of the same config. Re-running
    skips finished levels and resumes inside an interrupted one. Every train flag applies.

    Args:
        strategy: imp, oneshot, finetune, reinit, random-prune, prune-large or finetune-chain (Renda et al.'s chained fine-tuning).
        levels: pruning levels after the dense level 0 (density (1-PRUNE_FRACTION)^k at level k).
        sparsities: oneshot/reinit only: comma-separated fractions of prunable weights to remove, e.g. 0.5,0.8 (default: imp's levels).
        root: folder of runs (default ~/.cache/lthfast/runs, or $LTHFAST_ROOT).
        progress: show a progress bar (default: when stderr is a terminal).
    """
    strategies.get(strategy)
    levels = integer("--levels", levels, minimum=1)
    config = build(ImpConfig, flags, train=build(TrainConfig, flags))
    densities = None
    if sparsities is not None:
        values = [number("--sparsities", s) for s in parse_list(sparsities, "floats")]
        for s in values:
            if s >= 1:
                raise LthError(f"sparsity {s} leaves no weight; sparsities are fractions in [0, 1)")
            if s < 0:
                raise LthError(f"sparsity {s} is negative; sparsities are fractions in [0, 1)")
        densities = [1 - s for s in values]
    t = config.train
    run = ImpRun(config, root or store.default_root(), load_dataset(t.data, t.data_dir, t.train_subset, t.subset_seed),
                 progress=progress)
    run.chain(strategy, levels, densities)
    print(run.dir)


def summary(root: str | None = None):
    """Print one table of every finished level under ROOT: model, seed, strategy, level,
    density, test accuracy, train loss, baseline train loss.

    Args:
        root: folder of runs (default ~/.cache/lthfast/runs, or $LTHFAST_ROOT).
    """
    print(store.Store(root).summary_table())


COMMANDS = {"train": train, "imp": imp, "summary": summary, "analyze": ANALYSES, "study": study, "report": report}


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
    argv = sys.argv[1:] if argv is None else argv
    warnings.simplefilter("once")
    signals.install()  # from here on a signal is one line and exit 130, whenever it comes
    try:
        _check_flags(argv)
        fire.Fire(COMMANDS, command=argv, name="lthfast")
    except LthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 130 if isinstance(exc, Interrupted) else 2
    except fire.core.FireExit as exc:
        return exc.code
    except KeyboardInterrupt as exc:  # a signal outside a training or job: nothing is half-written
        name = str(exc) or "SIGINT"
        print(f"error: interrupted ({name}); run the same command again to continue", file=sys.stderr)
        return 130
    finally:
        signals.uninstall()
    return 0
