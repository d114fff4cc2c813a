"""`python -m lthfast study` and `python -m lthfast report`. Every StudyConfig field is a
flag (lthfast.cli.flags) whose default is the preset's; the help lists each preset's value."""
from __future__ import annotations

from lthfast.cli.flags import build, values, with_flags
from lthfast.config.study import StudyConfig
from lthfast.foundations import settings
from lthfast.report.markdown import write_report
from lthfast.store.layout import Store
from lthfast.study import resources
from lthfast.study.calibration import Calibration
from lthfast.study.dryrun import plan_text
from lthfast.study.executors import Execution, job_threads
from lthfast.study.plan import Study
from lthfast.study.presets import PRESETS, preset_config
from lthfast.study.scheduler import execute

STUDY_FLAGS = {flag.name for flag in settings.flat_fields(StudyConfig)}


def _preset_values(flag: settings.Flag) -> str:
    """The flag's help and its value in each preset."""
    chosen = {name: preset.get(flag.name, flag.default) for name, preset in PRESETS.items()}
    shown = lambda v: ",".join(map(str, v)) if isinstance(v, tuple) else v  # noqa: E731
    if len(set(map(str, chosen.values()))) == 1:
        where = f"{shown(flag.default)} in every preset"
    else:
        where = "; ".join(f"{name}: {shown(v)}" for name, v in chosen.items())
    return f"{flag.meta['help']} ({where})."


@with_flags(StudyConfig, Execution, defaults={name: None for name in STUDY_FLAGS},
            help_for=lambda flag: _preset_values(flag) if flag.name in STUDY_FLAGS else flag.meta["help"])
def study(preset: str = "cpu", root: str | None = None, dry_run: bool = False, report: bool = True,
          progress: bool = False, **flags):
    """Run the whole study of docs/protocol.md: every training and analysis, in dependency order,
    skipping what the run store already holds; then write ROOT/report/REPORT.md.

    Stop it at any moment (Ctrl-C) and run the same command again: it continues.
    Every field of the study's config is a flag that overrides the preset (lists comma-separated).

    Args:
        preset: paper-resnet20, paper-vgg16 (the full recipe, for a GPU), cpu (about an hour on 2 cores) or smoke (synthetic, minutes).
        root: folder of the study's runs (default ~/.cache/lthfast/runs, or $LTHFAST_ROOT).
        dry_run: print the plan, its job count and estimated cost (measured on this device), and stop.
        report: write the report at the end.
        progress: show a progress bar inside each training.
    """
    config = preset_config(preset, **values(StudyConfig, flags, keep_none=False))
    execution = build(Execution, flags)
    resources.check_local(config, execution)  # what this machine cannot hold: one line, before planning
    if execution.executor == "ray" and not dry_run:
        resources.connect_ray(execution)  # a cluster that does not answer, or lacks what a job asks: one line, now
    root = Store(root).root
    plan_study = Study(config, root, Calibration.load_or_measure(config, job_threads(execution)), progress=progress)
    jobs = plan_study.plan()
    if dry_run:
        print(plan_text(plan_study, jobs, execution))
        return
    plan_study.save_config()
    execute(plan_study, jobs, execution)
    if report:
        print(write_report(root))


def report(root: str | None = None):
    """Write ROOT/report/REPORT.md, its figures and results.json from a study's stored results.

    Args:
        root: the study's folder (default ~/.cache/lthfast/runs, or $LTHFAST_ROOT).
    """
    print(write_report(Store(root).root))
