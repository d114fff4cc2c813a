"""`python -m lthfast study` and `python -m lthfast report`."""
from __future__ import annotations

import inspect
from dataclasses import fields
from pathlib import Path

from lthfast.errors import LthError

# Flags whose values are comma-separated lists.
_TUPLES = {"seeds": int, "milestones": int, "strategies": str, "rewind_zero_strategies": str, "geometry_seeds": int,
           "sharpness_levels": int}


def study(preset: str = "cpu", root: str | None = None, dry_run: bool = False, report: bool = True,
          progress: bool = False, **overrides):
    """Run the whole study of STUDY.md: every training and analysis, in dependency order,
    skipping what the run store already holds; then write ROOT/report/REPORT.md.

    Stop it at any moment (Ctrl-C) and run the same command again: it continues.

    Args:
        preset: paper-resnet20, paper-vgg16 (the full recipe, for a GPU), cpu (about an hour on 2 cores) or smoke (synthetic, minutes).
        root: folder of the study's runs (default ~/.cache/lthfast/runs, or $LTHFAST_ROOT).
        dry_run: print the plan, its job count and estimated cost (measured on this device), and stop.
        report: write the report at the end.
        progress: show a progress bar inside each training.
    Every field of the study's config is a flag that overrides the preset (lists comma-separated):
    """
    from lthfast.report import write_report
    from lthfast.runs import default_root
    from lthfast.study import Calibration, Study, dry_run_text, preset_config

    config = preset_config(preset, **{name: _parse(name, value) for name, value in overrides.items()})
    root = Path(root).expanduser() if root else default_root()
    plan_study = Study(config, root, Calibration.measure(config), progress=progress)
    jobs = plan_study.plan()
    if dry_run:
        print(dry_run_text(plan_study, jobs))
        return
    plan_study.save_config()
    plan_study.execute(jobs)
    if report:
        print(write_report(root))


def report(root: str | None = None):
    """Write ROOT/report/REPORT.md, its figures and results.json from a study's stored results.

    Args:
        root: the study's folder (default ~/.cache/lthfast/runs, or $LTHFAST_ROOT).
    """
    from lthfast.report import write_report
    from lthfast.runs import default_root

    print(write_report(Path(root).expanduser() if root else default_root()))


def _parse(name: str, value):
    if value is None or name not in _TUPLES:
        return value
    if isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    else:
        items = [v.strip() for v in str(value).split(",") if v.strip()]
    try:
        return tuple(_TUPLES[name](v) for v in items)
    except ValueError:
        raise LthError(f"--{name.replace('_', '-')} must be a comma-separated list, got {value!r}") from None


def _with_config_flags(command):
    """Every StudyConfig field becomes a keyword flag of `command` (default: the preset's)."""
    from lthfast.study import StudyConfig

    own = [p for p in inspect.signature(command).parameters.values() if p.kind != p.VAR_KEYWORD]
    extra = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None) for f in fields(StudyConfig)]
    command.__signature__ = inspect.Signature(own + extra)
    from lthfast.study import PRESETS

    def preset_values(f) -> str:
        values = {name: preset.get(f.name, f.default) for name, preset in PRESETS.items()}
        shown = lambda v: ",".join(map(str, v)) if isinstance(v, tuple) else v  # noqa: E731
        if len(set(map(str, values.values()))) == 1:
            return f"{shown(f.default)} in every preset"
        return "; ".join(f"{name}: {shown(v)}" for name, v in values.items())

    command.__doc__ += "\n".join(f"        {f.name}: {preset_values(f)}." for f in fields(StudyConfig)) + "\n"
    return command


study = _with_config_flags(study)
