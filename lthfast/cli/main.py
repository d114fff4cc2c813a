"""Command line: `python -m lthfast COMMAND --flag value ...` (Fire).

Flags are derived from the config dataclasses (lthfast.cli.flags); the commands only build
configs, call the library and print. User mistakes are printed as one line `error: ...`
with exit status 2; a signal stops a command with one line and exit status 130.
"""
from __future__ import annotations

import inspect
import sys
import warnings

import fire

from lthfast.cli import analyze, help
from lthfast.cli.flags import build, parse_list, with_flags
from lthfast.cli.study import report, study
from lthfast.config.runs import ImpConfig, TrainConfig
from lthfast.data.loading import load_dataset
from lthfast.foundations import signals
from lthfast.foundations.errors import Interrupted, LthError
from lthfast.foundations.hardware import keep_freed_memory, resolve_device
from lthfast.foundations.settings import integer, number
from lthfast.imp.driver import ImpRun
from lthfast.models.families import prunable_count
from lthfast.pruning import strategies
from lthfast.pruning.masks import check_levels
from lthfast.report.export import write as write_table
from lthfast.report.power import table as power_table
from lthfast.report.power import text as power_text
from lthfast.store import layout as store
from lthfast.study.executors import Execution
from lthfast.study.resources import check_memory
from lthfast.training.auto import stack_capacity
from lthfast.training.trainer import train_run


@with_flags(TrainConfig)
def train(root: str | None = None, progress: bool | None = None, **flags):
    """Train one network; prints the run folder as the last line.

    The run folder, under ROOT, is named by a hash of the config: running the same
    command again finds the finished run (no training) or resumes an interrupted one.

    Args:
        root: folder of runs (default ~/.cache/lthfast/runs, or $LTHFAST_ROOT).
        progress: show a progress bar (default: when stderr is a terminal).
    """
    config = build(TrainConfig, flags)
    check_memory(config)  # a --batch-size beyond the device's memory: one line before any work
    print(train_run(config, root, progress=progress))


@with_flags(ImpConfig, TrainConfig)
def imp(strategy: str = "imp", levels: int = 12, sparsities=None, stack: int | None = None, stack_mode: str = "auto",
        root: str | None = None, progress: bool | None = None, **flags):
    """Train the chain of pruned networks of one strategy (docs/protocol.md); prints the run folder.

    Level 0 (the dense network and its rewind point, iteration --rewind-iter: default 2000
    for ResNet, 1000 for VGG) is shared by every strategy of the same config. Re-running
    skips finished levels and resumes inside an interrupted one. Every train flag applies.

    Args:
        strategy: imp, oneshot, finetune, reinit, random-prune, prune-large or finetune-chain (Renda et al.'s chained fine-tuning).
        levels: pruning levels after the dense level 0 (density (1-PRUNE_FRACTION)^k at level k).
        sparsities: oneshot/reinit only: comma-separated fractions of prunable weights to remove, e.g. 0.5,0.8 (default: imp's levels).
        stack: levels that can train at once (oneshot's, finetune's, reinit's) train together, at most this many (default: as many as the device's free memory holds).
        stack_mode: auto (measured), loop, grouped, streams or graph (CUDA).
        root: folder of runs (default ~/.cache/lthfast/runs, or $LTHFAST_ROOT).
        progress: show a progress bar (default: when stderr is a terminal).
    """
    entry = strategies.get(strategy)
    levels = integer("--levels", levels, minimum=1)
    config = build(ImpConfig, flags, train=build(TrainConfig, flags))
    densities = None
    if sparsities is not None and not entry.own_densities:
        allowed = [s for s, e in strategies.STRATEGIES.items() if e.own_densities]
        raise LthError(f"--sparsities applies to {' and '.join(allowed)}, not {strategy}")
    if sparsities is None:
        check_levels(prunable_count(config.train.model, config.train.width, config.train.num_classes),
                     config.prune_fraction, levels)
    else:
        values = [number("--sparsities", s) for s in parse_list(sparsities, "floats")]
        for s in values:
            if s >= 1:
                raise LthError(f"sparsity {s} leaves no weight; sparsities are fractions in [0, 1)")
            if s < 0:
                raise LthError(f"sparsity {s} is negative; sparsities are fractions in [0, 1)")
        densities = [1 - s for s in values]
    t = config.train
    execution = Execution(stack=stack, stack_mode=stack_mode)
    check_memory(t, execution.stack)  # --batch-size and --stack against the device's memory, before any work
    run = ImpRun(config, root or store.default_root(), load_dataset(t.data, t.data_dir, t.train_subset, t.subset_seed),
                 progress=progress)
    run.chain(strategy, levels, densities, stack=execution.stack or stack_capacity(t, resolve_device(t.device)),
              mode=execution.stack_mode)
    print(run.dir)


def summary(root: str | None = None):
    """Print one table of every finished level under ROOT: model, seed, strategy, level,
    density, test accuracy, train loss, baseline train loss.

    Args:
        root: folder of runs (default ~/.cache/lthfast/runs, or $LTHFAST_ROOT).
    """
    print(store.Store(root).summary_table())


def repair(root: str | None = None):
    """Check every file under ROOT (levels, run configs, analysis results, study.json, the
    report's results.json) and in the cache folder (calibrations, auto's stack modes, decoded
    data): set damaged ones aside, one line each with the command that computes it again (with
    the same results), and rebuild ROOT/index.jsonl from the finished levels.

    Args:
        root: folder of runs (default ~/.cache/lthfast/runs, or $LTHFAST_ROOT).
    """
    from lthfast.data.dataset import default_cache_dir
    from lthfast.store.level import set_aside_damaged
    from lthfast.study import calibration
    from lthfast.training import auto

    done = store.Store(root).repair()
    cached = [(calibration.set_aside_damaged_cache(), "measured again when a study needs it"),
              (auto.set_aside_damaged_cache(), "measured again when a stack needs it"),
              (set_aside_damaged(sorted((default_cache_dir() / "data").glob("*.pt"))), "decoded again when loaded")]
    moved = done["moved"] + [f"{path}: {remedy}" for paths, remedy in cached for path in paths]
    for line in moved:
        print(f"set aside: {line}")
    for line in done["unchecked"]:
        print(f"not checked: {line}")
    print(f"index rebuilt: {done['levels']} finished levels ({len(moved)} damaged files set aside)")


def power(root: str | None = None, seeds: int = 3):
    """For every comparison the findings make in the study under ROOT: the measured effect,
    its seed-to-seed spread, and whether it would pass the findings' one-sided t test at 0.05
    with SEEDS seeds (to size a study from a smaller one).

    Args:
        root: the study's folder (default ~/.cache/lthfast/runs, or $LTHFAST_ROOT).
        seeds: seeds of the study being sized (at least 2: a t test needs a spread).
    """
    seeds = integer("--seeds", seeds, minimum=2)
    print(power_text(power_table(store.Store(root).root, seeds), seeds))


def export(root: str | None = None, out: str | None = None):
    """Write the study under ROOT as one CSV table, one row per stored level (seed, rewind
    point, strategy, level: records, baselines, sublevel membership, barriers, distances,
    basin radii; the README's "Results as a table" names every column); prints its path.

    Args:
        root: the study's folder (default ~/.cache/lthfast/runs, or $LTHFAST_ROOT).
        out: the CSV file to write (default ROOT/report/results.csv).
    """
    print(write_table(root, out))


COMMANDS = {"train": train, "imp": imp, "summary": summary, "analyze": analyze.commands(), "study": study, "report": report,
            "repair": repair, "power": power, "export": export}


POSITIONAL = {"analyze": 1}  # `analyze WHAT RUN`: the run folder; every other value is a --flag


def _check_flags(argv: list[str]) -> list[str]:
    """Reject unknown commands, unknown or short flags and stray words with one line, before
    Fire prints its usage dump or binds a stray word to some parameter; returns argv with
    `--flag true|false` of a boolean flag written as Fire reads it (--flag / --noflag)."""
    if not argv or argv[0] in ("-h", "--help", "--helpfull"):
        return argv
    command = argv[0]
    if command not in COMMANDS:
        raise LthError(f"unknown command {command!r}; commands: {', '.join(COMMANDS)}")
    target, rest, head = COMMANDS[command], argv[1:], argv[:1]
    if isinstance(target, dict):  # a group: `analyze WHAT ...`
        if not rest or rest[0] in ("-h", "--help"):
            return argv
        if rest[0] not in target:
            raise LthError(f"unknown {command} {rest[0]!r}; one of: {', '.join(target)}")
        target, rest, head = target[rest[0]], rest[1:], argv[:2]
    params = inspect.signature(target).parameters
    out, positional, i = list(head), 0, 0
    while i < len(rest):
        arg, i = rest[i], i + 1
        if arg in ("--", "-h", "--help"):
            return out + rest[i - 1:]
        if arg.startswith("--"):
            flag = arg[2:].split("=", 1)[0]
            name = flag.replace("-", "_")
            if name not in params and name.startswith("no") and name[2:] in params and help.is_bool(params[name[2:]]):
                out.append(arg)  # --noflag
                continue
            if name not in params:
                raise LthError(f"unknown flag --{flag} for {command}; see `python -m lthfast {command} --help`")
            if "=" in arg:
                out.append(arg)
            elif help.is_bool(params[name]):
                word = rest[i].lower() if i < len(rest) else ""
                if word in ("true", "false"):  # `--flag false`: Fire would pass the word itself, which is true
                    i += 1
                out.append(f"--{'no' if word == 'false' else ''}{flag}")
            elif i < len(rest) and (not rest[i].startswith("--") or _number(rest[i])):
                out += [arg, rest[i]]
                i += 1
            else:
                raise LthError(f"--{flag} needs a value")
            continue
        if arg.startswith("-") and len(arg) > 1 and not _number(arg):
            raise LthError(f"short flags such as {arg} are not accepted (they can be ambiguous); "
                           f"write the whole --flag, see `python -m lthfast {command} --help`")
        positional += 1
        if positional > POSITIONAL.get(command, 0):
            raise LthError(f"unexpected argument {arg!r} for {command}: values follow a --flag; "
                           f"see `python -m lthfast {command} --help`")
        out.append(arg)
    return out


def _help(argv: list[str]) -> str | None:
    """The help asked for by argv (lthfast.cli.help), or None: a command's help lists exactly
    the flag forms _check_flags accepts."""
    if not argv or argv[0] in ("-h", "--help", "--helpfull"):
        return help.group_help("", COMMANDS)
    target, rest, path = COMMANDS.get(argv[0]), argv[1:], argv[0]
    if isinstance(target, dict):
        if not rest or rest[0] in ("-h", "--help"):
            return help.group_help(path, target)
        target, rest, path = target.get(rest[0]), rest[1:], f"{path} {rest[0]}"
    words = rest[:rest.index("--")] if "--" in rest else rest
    if target is None or not {"-h", "--help"} & set(words):
        return None
    return help.command_help(path, target, POSITIONAL.get(argv[0], 0))


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _interrupted(name: str) -> int:
    print(f"error: interrupted ({name}); run the same command again to continue", file=sys.stderr)
    return 130


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    warnings.simplefilter("once")
    warnings.formatwarning = lambda message, *args, **kwargs: f"warning: {message}\n"  # one line each
    signals.install()  # from here on a signal is one line and exit 130, whenever it comes
    keep_freed_memory()  # steps reuse freed memory instead of faulting it in again
    COMMANDS["analyze"] = analyze.commands()  # analyses registered since import included
    try:
        if (text := _help(list(argv))) is not None:
            print(text)
            return 0
        fire.Fire(COMMANDS, command=_check_flags(list(argv)), name="lthfast")
        name = signals.stop_requested()
        if name:  # a signal some deferred block (or a library's `except BaseException`) held: still a stop
            return _interrupted(name)
    except LthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 130 if isinstance(exc, Interrupted) else 2
    except OSError as exc:  # a full disk, a read-only or missing folder: the file and the cause
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}; finished results are kept, run the same command again "
              "once this is fixed", file=sys.stderr)
        return 2
    except fire.core.FireExit as exc:
        return exc.code
    except (signals.Stopped, KeyboardInterrupt) as exc:  # a signal outside a training or job: nothing half-written
        return _interrupted(str(exc) or "SIGINT")
    finally:
        signals.uninstall()
    return 0
