"""The run store: the one module that knows where lthfast keeps what.

  ROOT/
    index.jsonl                     one line per finished level (derived: level.json holds the same)
    study.json                      the StudyConfig of `python -m lthfast study`
    report/                         REPORT.md, results.json, figures/
    train_<hash>/                   one training (`python -m lthfast train`): config.json + a level's
                                    trainer files
    imp_<hash>/                     one ImpConfig (model, recipe, seed, rewind point), every strategy
      config.json
      level_00/                     theta_0, the dense network every strategy shares (+ rewind.pt)
      <strategy>/level_KK/          level K of a strategy
      <strategy>/density_D/         oneshot or reinit at a density of its own
      analysis/<what>/<solutions>__<settings hash>.json   one analysis result (+ its .png)

  A level folder: checkpoint.pt, rewind.pt, final.pt, metrics.json (the trainer's), then
  mask.pt, baseline.pt, baseline.json and, last, level.json (IMP's: the level is finished).

Hashes (lthfast.config.runs.config_hash) name run folders by their config, so the same
command finds its own results. Writers go through lthfast.foundations.files (atomic files).
"""
from __future__ import annotations

import json
import os
import shlex
import warnings
from pathlib import Path

from lthfast.config.runs import ImpConfig, TrainConfig
from lthfast.config.study import StudyConfig
from lthfast.foundations.errors import LthError
from lthfast.foundations.files import (
    atomic_write_json,
    atomic_write_text,
    read_json,
)
from lthfast.foundations.hashing import digest
from lthfast.pruning import strategies
from lthfast.store import claims
from lthfast.store.level import Level, Solution, readable, set_aside, set_aside_damaged, slug

SOLUTION_FORMS = ("STRATEGY:LEVEL (e.g. imp:3; level 0 is the dense network), STRATEGY:LEVEL:baseline, "
                  "instability:LEVEL (the second copy of an instability pair), or a level folder")
# RUN/instability/level_KK: the second copy of the instability pair at level k (its first is imp:k).
COPIES = "instability"


def whole_result(document: dict) -> bool:
    """An analysis result as lthfast.landscape.runs.cached writes it: what its readers need."""
    return "result" in document


def whole_study(document: dict) -> bool:
    """study.json in any form StudyConfig.from_dict reads (nested, or the earlier flat one)."""
    return "seeds" in document and "levels" in document


def default_root() -> Path:
    return Path(os.environ.get("LTHFAST_ROOT", Path.home() / ".cache" / "lthfast" / "runs"))


def settings_hash(settings: dict) -> str:
    """10 hex digits naming an analysis result's settings."""
    return digest(settings, 10)


def claim_folder(folder: Path, config, from_dict, empty: bool = False) -> None:
    """Write the config into its run folder (named by its hash), or check that the config
    there is the same; a damaged config.json is written again (the folder's name says which
    config it held). empty: a folder without config.json must be empty."""
    path = folder / "config.json"
    damaged = path.exists() and not readable(path)
    if damaged:
        warnings.warn(f"{path} was damaged and is written again (the old one is {set_aside(path).name})")
    if path.exists():
        if from_dict(read_json(path)).hashed_fields() != config.hashed_fields():
            raise LthError(f"run folder {folder} holds a run of another config; use another --root or remove that "
                           "folder")
    elif empty and not damaged and folder.exists() and any(folder.iterdir()):
        raise LthError(f"run folder {folder} exists without config.json; remove it or use another --root")
    else:
        atomic_write_json(config.to_dict(), path)


# ----------------------------------------------------------------------------- one IMP run

class Run:
    """One imp_<hash> folder: an ImpConfig, every strategy's levels and their analyses."""

    def __init__(self, folder: str | Path, config: ImpConfig):
        self.folder = Path(folder).expanduser()
        self.config = config

    @classmethod
    def open(cls, folder: str | Path) -> "Run":
        """The run stored in `folder`; a one-line LthError if it is not one."""
        folder = Path(folder).expanduser()
        path = folder / "config.json"
        if not path.exists():
            raise LthError(f"{folder} is not an IMP run folder (no config.json); pass the imp_<hash> "
                           "folder that `python -m lthfast imp` printed")
        try:
            return cls(folder, ImpConfig.from_dict(read_json(path)))
        except LthError as exc:
            raise LthError(f"{path} is damaged or not an IMP config ({exc}); the `imp` or `study` command that "
                           "made this run writes it again") from None

    @classmethod
    def create(cls, root: str | Path, config: ImpConfig) -> "Run":
        """The run of `config` under `root`, its config.json written (or checked) now."""
        run = cls(Path(root).expanduser() / f"imp_{config.run_hash()}", config)
        claim_folder(run.folder, config, ImpConfig.from_dict)
        return run

    @property
    def root(self) -> Path:
        return self.folder.parent

    # ------------------------------------------------------------------ levels
    def level_dir(self, strategy: str, level: int, density: float | None = None) -> Path:
        if level == 0:
            return self.folder / "level_00"
        if density is not None:  # oneshot / reinit at a density of their own
            return self.folder / strategy / f"density_{density:.6f}"
        return self.folder / strategy / f"level_{level:02d}"

    def level(self, strategy: str, level: int, density: float | None = None) -> Level:
        dense = level == 0
        return Level(self.level_dir(strategy, level, density), "dense" if dense else "pruned",
                     rewind=dense and self.config.train.rewind_iter is not None)

    def copy(self, level: int) -> Level:
        """The second copy of the instability pair at `level`: a training's files only."""
        return Level(self.folder / COPIES / f"level_{level:02d}", "train")

    def levels(self, strategy: str) -> list[int]:
        """The finished levels of `strategy`, dense level 0 first."""
        strategies.get(strategy)
        found = [0] if self.level("imp", 0).finished() else []
        folder = self.folder / strategy
        if folder.is_dir():
            found += sorted(int(p.name[6:]) for p in folder.glob("level_[0-9][0-9]")
                            if self.level(strategy, int(p.name[6:])).finished())
        return found

    def strategies(self) -> list[str]:
        return [s for s in strategies.STRATEGIES if len(self.levels(s)) > 1]

    def record(self, strategy: str, level: int) -> dict:
        return self.level(strategy, level).read_record()

    # ------------------------------------------------------------------ solutions
    def solution(self, spec: str) -> Solution:
        """The solution named by `spec` (SOLUTION_FORMS); a clear error if it does not exist."""
        spec = str(spec)
        parts = spec.split(":")
        if len(parts) == 2 and parts[0] == COPIES and parts[1].isdigit():
            level = int(parts[1])
            if not self.copy(level).trained():
                raise LthError(f"no instability copy at level {level} in {self.folder}; `python -m lthfast analyze "
                               f"instability {self.folder} --level {level}` trains it")
            return Solution(spec, self.copy(level).final, self.level("imp", level).mask, COPIES, level)
        if len(parts) in (2, 3) and parts[0] in strategies.STRATEGIES:
            strategy, level_text, *rest = parts
            if rest not in ([], ["baseline"]) or not level_text.isdigit():
                raise LthError(f"cannot read solution {spec!r}; name it as {SOLUTION_FORMS}")
            level = int(level_text)
            if level == 0:
                strategy = "imp"  # the dense network is every strategy's level 0
            files = self.level(strategy, level)
            if not files.finished():
                finished = self.levels(strategy)
                raise LthError(f"no finished level {level} of {strategy} in {self.folder} "
                               f"(finished: {', '.join(map(str, finished)) or 'none'})")
            if rest:
                if level == 0:
                    raise LthError("the dense network (level 0) has no baseline")
                return Solution(f"{strategy}:{level}:baseline", files.baseline, files.mask, strategy, level)
            return Solution(f"{strategy}:{level}", files.final, files.mask, strategy, level)
        path = Path(spec).expanduser()
        files = Level(path)
        if path.is_dir() and files.final.exists() and files.mask.exists():
            return Solution(str(path), files.final, files.mask)
        if path.exists():
            raise LthError(f"{path} is not a finished level folder (it needs final.pt and mask.pt)")
        raise LthError(f"no solution {spec!r}; name it as {SOLUTION_FORMS}")

    def parent(self, strategy: str, level: int) -> Solution:
        """theta_{k-1}, the solution whose pruning gives level k's baseline (strategies table)."""
        source, k = strategies.get(strategy).parent_of(level)
        return self.solution(f"{source}:{k}")

    # ------------------------------------------------------------------ analyses
    def result_path(self, what: str, solutions: list[str], settings: dict) -> Path:
        """Where the analysis `what` of the named solutions (labels or slugs) under `settings` lives."""
        name = "__".join(slug(s) for s in solutions)
        return self.folder / "analysis" / what / f"{name}__{settings_hash(settings)}.json"

    def seed_runs(self) -> list["Run"]:
        """The runs beside this one whose config differs from it in the seed alone (this one
        included): the seeds a standard deviation over seeds is taken over."""
        def key(config: ImpConfig) -> dict:
            fields = config.hashed_fields()
            fields["train"] = {k: v for k, v in fields["train"].items() if k != "seed"}
            return fields

        own, runs = key(self.config), []
        for path in sorted(self.root.glob("imp_*/config.json")):
            try:
                other = self if path.parent == self.folder else Run.open(path.parent)
            except LthError:
                continue
            if key(other.config) == own:
                runs.append(other)
        return runs


# ----------------------------------------------------------------------------- the root

class Store:
    """A root folder of runs."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root or default_root()).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise LthError(f"--root {self.root} is a file, not a folder")
        self.index = self.root / "index.jsonl"
        self.study_config = self.root / "study.json"
        self.report = self.root / "report"

    def run(self, config: ImpConfig) -> Run:
        """The run of `config` (created if new)."""
        return Run.create(self.root, config)

    def run_folder(self, config: ImpConfig) -> Path:
        return self.root / f"imp_{config.run_hash()}"

    def train_dir(self, config: TrainConfig) -> Path:
        return self.root / f"train_{config.run_hash()}"

    def prepare_train_dir(self, config: TrainConfig) -> Level:
        """The training's folder with config.json, or a check that the one there matches."""
        folder = self.train_dir(config)
        claim_folder(folder, config, TrainConfig.from_dict, empty=True)
        files = Level(folder, "train", rewind=config.rewind_iter is not None)
        moved = files.repair()
        if moved:
            warnings.warn(f"{folder}: damaged files set aside and computed again: {', '.join(p.name for p in moved)}")
        return files

    # ------------------------------------------------------------------ index
    INDEX_KEYS = ("run", "model", "seed", "strategy", "level", "density", "test_accuracy", "train_loss", "folder")

    def append_index(self, record: dict) -> None:
        """Append a finished level to the index (once: a re-run does not duplicate it)."""
        key = (record["run"], record["strategy"], record["folder"])
        line = json.dumps({k: v for k, v in record.items() if k != "layer_density"}, sort_keys=True)
        self.root.mkdir(parents=True, exist_ok=True)
        with claims.exclusive(self.index):  # many writers: no line lost, torn or written twice
            if any((r["run"], r["strategy"], r["folder"]) == key for r in self.read_index(warn=False)):
                return
            torn = self.index.exists() and self.index.stat().st_size > 0 and \
                not self.index.read_bytes().endswith(b"\n")
            with open(self.index, "a") as f:
                f.write(("\n" if torn else "") + line + "\n")
                f.flush()

    def read_index(self, warn: bool = True) -> list[dict]:
        """The index's records. The index is derived data (level.json holds the same): a damaged
        line is skipped, with one warning that names the command rebuilding it."""
        if not self.index.exists():
            return []
        records, damaged = [], 0
        for line in self.index.read_bytes().splitlines():
            try:
                record = json.loads(line)
                if isinstance(record, dict) and all(k in record for k in self.INDEX_KEYS):
                    records.append(record)
                    continue
            except ValueError:  # torn by a kill mid-write, or undecodable bytes
                pass
            damaged += 1 if line.strip() else 0
        if damaged and warn:
            warnings.warn(f"{self.index}: {damaged} damaged line(s) skipped; "
                          f"`python -m lthfast repair --root {self.root}` rebuilds the index from the level folders")
        return records

    def set_aside_damaged_results(self, remedy: str) -> list[Path]:
        """Set aside every damaged analysis result under the root, one warning each that names
        `remedy` (what computes it again): for a command that only reads them (the report)."""
        moved = set_aside_damaged(sorted(self.root.glob("imp_*/analysis/*/*.json")), whole_result)
        for path in moved:
            warnings.warn(f"{path.with_name(path.name.split('.damaged-')[0])} was damaged and is set aside as "
                          f"{path.name}; {remedy}")
        return moved

    def repair(self) -> dict:
        """Set aside every damaged file under the root (level files, run configs, analysis results,
        trainings, study.json, the report's results.json), each with what writes it again, and
        rebuild the index from the finished levels' level.json. Returns {"moved": ["PATH: what
        writes it again"] (PATH: where it went), "unchecked": [a run that cannot be read], "levels": n}."""
        moved, unchecked, records = [], [], []

        def note(paths, remedy):
            moved.extend(f"{p.relative_to(self.root)}: {remedy}" for p in paths)

        for folder in sorted({p.parent for p in self.root.glob("imp_*/config.json*")}):
            note(set_aside_damaged([folder / "config.json"]), "the `imp` or `study` command of the run writes it again")
            try:
                run = Run.open(folder)
            except LthError as exc:
                unchecked.append(f"{folder.name}: {exc}")
                continue
            levels = [run.level("imp", 0)]
            for strategy in strategies.STRATEGIES:
                found = sorted((folder / strategy).glob("level_[0-9][0-9]"))
                levels += [run.level(strategy, int(p.name[6:])) for p in found if p.name != "level_00"]
                levels += [Level(p, "pruned") for p in sorted((folder / strategy).glob("density_*")) if p.is_dir()]
            for files in levels:
                note(files.repair(), "the `imp` or `study` command of this level computes it again")
                if files.finished():
                    records.append(files.read_record())
            for p in sorted((folder / COPIES).glob("level_[0-9][0-9]")):
                note(run.copy(int(p.name[6:])).repair(), "the `study` or `analyze instability` command trains it again")
            note(set_aside_damaged(sorted(folder.glob("analysis/*/*.json")), whole_result),
                 "the `study` or `analyze` command that made it computes it again")
        for folder in sorted({p.parent for p in self.root.glob("train_*/config.json*")}):
            note(Level(folder, "train").repair(), "the `train` command writes it again")  # config.json too
        aside = set_aside_damaged([self.study_config], whole_study)
        note(aside, aside and study_command(self.root, reported_flags(self.root) is not None) + " writes it again")
        note(set_aside_damaged([self.report / "results.json"]),
             f"`python -m lthfast report --root {shlex.quote(str(self.root))}` writes it again")
        lines = "".join(json.dumps({k: v for k, v in r.items() if k != "layer_density"}, sort_keys=True) + "\n"
                        for r in records)
        with claims.exclusive(self.index):
            atomic_write_text(lines, self.index)
        return {"moved": moved, "unchecked": unchecked, "levels": len(records)}

    def summary_table(self) -> str:
        """Every finished level under the root as one text table."""
        rows = sorted(self.read_index(), key=lambda r: (r["model"], r["seed"], r["strategy"], -r["density"]))
        if not rows:
            raise LthError(f"no finished levels under {self.root}")
        header = ["model", "seed", "strategy", "level", "density", "test_acc", "train_loss", "baseline_train_loss"]
        lines = ["  ".join(f"{h:>19s}" if i == 7 else f"{h:>10s}" for i, h in enumerate(header))]
        for r in rows:
            base = r["baseline"]["train_loss"] if r.get("baseline") else float("nan")
            lines.append("  ".join([f"{r['model']:>10s}", f"{r['seed']:>10d}", f"{r['strategy']:>10s}",
                                    f"{r['level']:>10d}", f"{r['density']:>10.4f}", f"{r['test_accuracy']:>10.4f}",
                                    f"{r['train_loss']:>10.4f}", f"{base:>19.4f}"]))
        return "\n".join(lines)


def load_study_config(root) -> StudyConfig:
    """The study under `root`. study.json cannot be computed from the runs: a damaged one is set
    aside and named in a one-line LthError with the study command that writes it again."""
    path = Store(root).study_config
    aside = sorted(path.parent.glob(path.name + ".damaged-*"))
    if not path.exists() and not aside:
        raise LthError(f"no study under {root} (no study.json); run `python -m lthfast study` first")
    if path.exists():
        if readable(path, whole_study):
            return StudyConfig.from_dict(read_json(path))
        aside += set_aside_damaged([path], whole_study)
    raise LthError(f"{path} was damaged and is set aside as {aside[-1].name} (the runs cannot give it back); "
                   f"{study_command(root, reported_flags(root) is not None)} writes it again")


def reported_flags(root) -> dict | None:
    """The study's flags as the last report kept them (ROOT/report/results.json), or None."""
    try:
        flags = json.loads((Store(root).report / "results.json").read_bytes()).get("config")
    except (OSError, ValueError, AttributeError):
        return None
    return flags if isinstance(flags, dict) else None


def study_command(root, kept: bool = False) -> str:
    """The study command that writes study.json under `root` again, for a message (its flags
    need the presets, which are above the store); kept: the last report kept its flags."""
    root = Path(root).expanduser()
    where = f" (the last report's: {root / 'report' / 'results.json'}, \"config\")" if kept else ""
    return f"`python -m lthfast study --root {shlex.quote(str(root))}` with the preset and flags that made it{where}"
