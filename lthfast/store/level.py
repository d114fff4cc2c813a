"""A level folder and its files, and a stored solution (weights with their mask): what a
training writes, what counts as finished, and how damaged files are set aside so that the
command that made them computes them again (tests/test_damaged_store.py); read_checked does the
same for any JSON file lthfast writes and reads back (tests/test_damaged_results.py).

  A level folder: checkpoint.pt, rewind.pt, final.pt, metrics.json (the trainer's), then
  mask.pt, baseline.pt, baseline.json and, last, level.json (IMP's: the level is finished).

Group commits: files that several folders write as one (a grouped stack's joint checkpoints,
lthfast.training.member.save_together; a stack's level records, commit_records) are first
written beside their place as side files (checkpoint.pt.next, level.json.next) that carry the
group's commit token (commit_token); the last side file written is the commit point. A side
file takes its place only once every folder of its group holds that commit, so a kill at any
moment leaves each group either wholly committed or wholly as it was before
(tests/test_group_commit.py).
"""
from __future__ import annotations

import json
import os
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from lthfast.foundations.files import atomic_write_json, load_checkpoint, read_json
from lthfast.foundations.hashing import digest
from lthfast.pruning import masks as pruning


def slug(spec: str) -> str:
    """A named solution ("imp:2:baseline") as a file-name part ("imp-2-baseline")."""
    return spec.replace(":", "-")


def readable(path: Path, valid=None) -> bool:
    """Present and whole: a torch file is a complete zip archive (a truncated one has lost its
    directory at the end), a JSON file parses to a non-empty object (for which valid(document),
    if given, is true: the keys its readers need)."""
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return False
        if path.suffix == ".pt":
            return zipfile.is_zipfile(path)
        return _whole(json.loads(path.read_bytes()), valid)
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        return False


def _whole(document, valid) -> bool:
    try:
        return isinstance(document, dict) and bool(document) and (valid is None or bool(valid(document)))
    except (KeyError, TypeError, ValueError, AttributeError):
        return False


def set_aside(path: Path) -> Path:
    """Rename a damaged file out of the way (kept for inspection, never read again)."""
    target = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    os.replace(path, target)
    return target


def read_checked(path: Path, remedy: str, valid=None) -> dict | None:
    """The JSON object stored in `path`, or None: none is there, or it was damaged (torn, empty,
    not an object, or valid(document) false) and is now set aside, with one warning that names
    the file and `remedy`, what writes it again ("computed again now")."""
    try:
        document = json.loads(Path(path).read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:  # torn, empty or undecodable (UnicodeDecodeError is a ValueError)
        document = None
    if _whole(document, valid):
        return document
    moved = set_aside_damaged([Path(path)], valid)
    if moved:
        warnings.warn(f"{path} was damaged and is set aside as {moved[0].name}; {remedy}")
    return None


def set_aside_damaged(paths, valid=None) -> list[Path]:
    """Set aside each of `paths` that is present but not readable(path, valid); returns where
    they went (a file another process set aside or replaced meanwhile is left alone)."""
    moved = []
    for path in paths:
        if Path(path).exists() and not readable(Path(path), valid):
            try:
                moved.append(set_aside(Path(path)))
            except FileNotFoundError:
                pass
    return moved


class Level:
    """The files of one level folder (or of a plain training's run folder).

    A level is finished only when level.json and every file it needs are present and
    readable; `repair()` moves damaged files aside so that the missing parts are computed
    again (runs are deterministic: the same results come back)."""

    def __init__(self, folder: Path, kind: str = "pruned", rewind: bool = False):
        """kind: "pruned" (a pruned level), "dense" (level 0) or "train" (a plain training's
        folder: the trainer's files only); rewind: the level must hold rewind.pt."""
        self.folder = Path(folder)
        self.checkpoint = self.folder / "checkpoint.pt"
        self.checkpoint_next = self.folder / "checkpoint.pt.next"  # a grouped stack's save until it commits
        self.rewind = self.folder / "rewind.pt"
        self.final = self.folder / "final.pt"
        self.metrics = self.folder / "metrics.json"
        self.mask = self.folder / "mask.pt"
        self.baseline = self.folder / "baseline.pt"
        self.baseline_eval = self.folder / "baseline.json"
        self.record = self.folder / "level.json"
        self.record_next = self.folder / "level.json.next"  # a stack's record until all its levels' are written
        # What a finished level holds besides the trainer's final.pt and metrics.json.
        self.needs = ([] if kind == "train" else [self.mask, self.record]) \
            + ([self.baseline, self.baseline_eval] if kind == "pruned" else []) + ([self.rewind] if rewind else [])

    def trained(self) -> bool:
        """The trainer's part is done: final.pt and a metrics.json that says finished."""
        return readable(self.final) and readable(self.metrics) and read_json(self.metrics).get("finished", False)

    def finished(self) -> bool:
        self._promote_record()
        return self.trained() and all(readable(p) for p in self.needs)

    def _promote_record(self) -> None:
        """level.json.next becomes level.json once its group is committed (commit_records): every
        level of the stack is finished, or none is, whenever a kill came. A reader may look while
        the writer still writes the group: an incomplete group is left as it is."""
        settle([self], RECORDS, undo=False)

    def read_record(self) -> dict:
        return read_json(self.record)

    def repair(self) -> list[Path]:
        """Move aside every present but unreadable file, and level.json if the level is not
        whole (so that it is finished again); returns the files moved aside."""
        moved = []
        for path in sorted(self.folder.glob("*.pt")) + sorted(self.folder.glob("*.json")):
            if not readable(path):
                moved.append(set_aside(path))
        if self.record.exists() and not self.finished():
            moved.append(set_aside(self.record))
        if self.metrics.exists() and not self.final.exists() and read_json(self.metrics).get("finished"):
            moved.append(set_aside(self.metrics))  # "finished" without its weights: train again
        if self.rewind in self.needs and not self.rewind.exists() and self.final.exists():
            # Only a training writes the rewind point: train again from the start.
            moved += [set_aside(p) for p in (self.final, self.metrics, self.checkpoint) if p.exists()]
        return moved


def commit_token(own: Path, folders: list[Path], **facts) -> dict:
    """What each side file of one group commit carries: an id, the same in every one of them
    (the group's folders and `facts`, e.g. each member's iteration), and the group's folders
    relative to `own` (a store moved as a whole still finds them)."""
    absolute = [str(Path(f).resolve()) for f in folders]
    return {"id": digest([absolute, facts], 16),
            "folders": [os.path.relpath(f, Path(own).resolve()) for f in absolute]}


def group_of(own: Path, token: dict) -> list[Level]:
    """The folders of the group whose commit token `own` holds."""
    return [Level(Path(own) / relative) for relative in token["folders"]]


def commit_records(records: list[tuple[Level, dict]]) -> None:
    """Write the level.json of several levels (a stack's, lthfast.imp.driver.train_together) as
    one: each first to level.json.next with the group's token; once the last is written every
    level is finished (Level.finished promotes a committed side file), and each is promoted."""
    if len(records) == 1:
        level, record = records[0]
        atomic_write_json(record, level.record)
        return
    folders = [level.folder for level, _ in records]
    for level, record in records:
        atomic_write_json({"record": record, "commit": commit_token(level.folder, folders)}, level.record_next)
    for level, record in records:  # the commit point is behind: the rest is what any reader would do
        atomic_write_json(record, level.record)
        level.record_next.unlink(missing_ok=True)


@dataclass(frozen=True)
class GroupFile:
    """A file that group commits write: its side file in a level, the commit token a side file
    carries (None: unreadable, or promoted meanwhile), whether a level holds commit `id` (in its
    side file or in its place) and how a level's side file takes its place."""
    side: Callable[[Level], Path]
    token: Callable[[Path], dict | None]
    holds: Callable[[Level, str], bool]
    promote: Callable[[Level], None]


def settle(levels: list[Level], kind: GroupFile, undo: bool) -> None:
    """Each level's side file of `kind` takes its place where every level of its group holds its
    commit, and is deleted otherwise when `undo` (no writer can be at work: a stack about to
    resume, lthfast.training.stack.open_stack) or left for its writer (a reader's look). One
    decision per commit. tests/test_group_commit.py kills writers at every moment."""
    decided: dict[str, bool] = {}
    for level in levels:
        side = kind.side(level)
        if not side.exists():
            continue
        token = kind.token(side)
        if token is None:
            if undo:
                side.unlink(missing_ok=True)  # unreadable: never a commit
            continue
        if token["id"] not in decided:
            decided[token["id"]] = all(kind.holds(g, token["id"]) for g in group_of(level.folder, token))
        if decided[token["id"]]:
            kind.promote(level)
        elif undo:
            side.unlink(missing_ok=True)


def _record_token(path: Path) -> dict | None:
    side = _side_record(path)
    return side and side["commit"]


def _promote_record(level: Level) -> None:
    side = _side_record(level.record_next)
    if side is not None and not readable(level.record):  # a record written since (alone) stays
        atomic_write_json(side["record"], level.record)
    level.record_next.unlink(missing_ok=True)


def _side_record(path: Path) -> dict | None:
    """A level.json.next's {"record", "commit"}, or None (absent, or promoted meanwhile)."""
    try:
        side = json.loads(path.read_bytes())
        return side if isinstance(side.get("record"), dict) and isinstance(side["commit"]["id"], str) else None
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return None


def checkpoint_token(path: Path) -> dict | None:
    """The commit token a checkpoint carries (None: absent, unreadable, or a single save's);
    memory-mapped, so that only its small pickle is read."""
    try:
        token = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("commit")
        return token if isinstance(token, dict) and isinstance(token.get("id"), str) else None
    except Exception:  # absent, torn or not a checkpoint: holds no commit
        return None


def _id(token: dict | None) -> str | None:
    return token and token["id"]


# A level.json held by a level is finished whatever commit wrote it; a checkpoint carries its own.
RECORDS = GroupFile(lambda level: level.record_next, _record_token,
                    lambda level, id: readable(level.record) or _id(_record_token(level.record_next)) == id,
                    _promote_record)
CHECKPOINTS = GroupFile(lambda level: level.checkpoint_next, checkpoint_token,
                        lambda level, id: id in (_id(checkpoint_token(level.checkpoint_next)),
                                                 _id(checkpoint_token(level.checkpoint))),
                        lambda level: os.replace(level.checkpoint_next, level.checkpoint))


@dataclass(frozen=True)
class Solution:
    """A stored set of weights with its mask."""
    label: str  # how results and figures name it: "imp:3", "imp:3:baseline", or the folder
    weights: Path  # final.pt or baseline.pt
    mask: Path  # mask.pt of its level
    strategy: str | None = None
    level: int | None = None

    @property
    def slug(self) -> str:
        if self.strategy is None:
            return "path-" + digest(str(self.weights.resolve()), 8)
        return slug(self.label)

    def load(self) -> tuple[dict, dict]:
        """(state dict, keep-mask over the prunable weights)."""
        return load_checkpoint(self.weights), pruning.unpack(load_checkpoint(self.mask))
