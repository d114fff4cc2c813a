"""Who works in a run store, and on which job: shared by any number of processes.

  ROOT/running/<host>-<pid>.json    a process working in the root (a study): a report
                                    written meanwhile says so
  ROOT/claims/<job>.lock            a job being computed: an OS file lock, freed when its
                                    owner ends or dies (filelock), with <job>.owner.json beside

Every lock is taken with a timeout (LOCK_TIMEOUT): a lock that another process holds and does
not free (it hangs), or one that does not answer at all (a network file system whose lock
service is down: the call itself then blocks), stops the command with one line that names the
lock's path, the time waited and the likely cause (tests/test_resources.py).
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from pathlib import Path

from filelock import FileLock, Timeout

from lthfast.foundations.errors import LthError
from lthfast.foundations.files import atomic_write_json

LOCK_TIMEOUT = 60.0  # seconds a lock may take: its holders keep it for a line's write, or answer at once


def acquire(lock: FileLock, wait: bool) -> bool:
    """lock.acquire (waiting for its holder if `wait`, else one try): whether it is held now;
    LthError if it is not decided within LOCK_TIMEOUT. The try runs in a thread, since on a
    network file system whose lock service does not answer the call itself never returns
    (`lock` is made with thread_local=False, so this thread can release it)."""
    outcome, start = {}, time.monotonic()

    def attempt():
        try:
            lock.acquire(timeout=LOCK_TIMEOUT if wait else 0)
            outcome["held"] = True
        except Timeout:
            outcome["held"] = False
        except BaseException as exc:  # handed to the caller
            outcome["error"] = exc
    thread = threading.Thread(target=attempt, daemon=True, name="lock")
    thread.start()
    thread.join(LOCK_TIMEOUT + 1)
    if "error" in outcome:
        raise outcome["error"]
    if thread.is_alive() or (wait and not outcome["held"]):
        raise LthError(f"the lock {lock.lock_file} did not answer within {time.monotonic() - start:.1f} s: "
                       "another process holds it and hangs, or the root is on a network file system whose locks "
                       "do not work (NFS without its lock service); end that process or fix the file system's "
                       "locking, then run the same command again")
    return outcome["held"]


@contextlib.contextmanager
def working(root: Path, what: str):
    """Mark this process as working in `root` for as long as the block runs."""
    marker = Path(root) / "running" / f"{socket.gethostname()}-{os.getpid()}.json"
    atomic_write_json({"what": what, "host": socket.gethostname(), "pid": os.getpid(),
                       "started": time.strftime("%Y-%m-%d %H:%M:%S")}, marker)
    try:
        yield
    finally:
        marker.unlink(missing_ok=True)


def alive(marker: dict) -> bool:
    """Whether the marked process still runs (on this host it is checked; a process on
    another host is trusted to be alive)."""
    if marker.get("host") != socket.gethostname():
        return True
    try:
        os.kill(marker["pid"], 0)  # signal 0: only asks whether the process exists
        return True
    except (OSError, KeyError, TypeError):
        return False


def working_now(root: Path) -> list[dict]:
    """The markers of the processes working in `root` that are still alive."""
    markers = []
    for path in sorted((Path(root) / "running").glob("*.json")):
        try:
            marker = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(marker, dict) and alive(marker):
            markers.append(marker)
    return markers


# ----------------------------------------------------------------------------- job claims

class Claim:
    """An exclusive, non-blocking claim on one job of a run store, shared by every process
    that works on the root (Ray workers, two studies, a report): an OS file lock (filelock,
    flock underneath) held for as long as the job runs, freed when it ends or when its owner
    dies, with the owner's identity beside it for whoever is waiting.

        with Claim(root, "imp_ab12/finetune/level_03") as claim:
            if claim.held:   # else another process runs it: wait until its result exists
                ...
    """

    def __init__(self, root: Path, name: str):
        safe = name.replace("/", "__").replace(":", "-").replace(" ", "_").replace(">", "")
        self.path = Path(root) / "claims" / f"{safe}.lock"
        self.owner_path = self.path.with_suffix(".owner.json")
        self.name, self.held = name, False
        self._lock = None

    def __enter__(self) -> "Claim":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(self.path, thread_local=False)
        if not acquire(self._lock, wait=False):
            return self
        self.held = True
        atomic_write_json({"job": self.name, "host": socket.gethostname(), "pid": os.getpid(),
                           "started": time.strftime("%Y-%m-%d %H:%M:%S")}, self.owner_path)
        return self

    def __exit__(self, *exc) -> None:
        if self.held:
            self.owner_path.unlink(missing_ok=True)
            self._lock.release()
            self.held = False

    def owner(self) -> dict | None:
        """Who holds the claim (as its owner wrote), or None."""
        try:
            return json.loads(self.owner_path.read_text())
        except (OSError, ValueError):
            return None


@contextlib.contextmanager
def exclusive(path: Path):
    """A blocking lock on `path` (e.g. the index while a line is appended), given up after
    LOCK_TIMEOUT with one line."""
    lock = FileLock(Path(path).with_name(Path(path).name + ".lock"), thread_local=False)
    acquire(lock, wait=True)
    try:
        yield
    finally:
        lock.release()


def free(root: Path, name: str) -> bool:
    """Whether nobody holds the claim on `name` now (its owner ended or died)."""
    with Claim(root, name) as claim:
        return claim.held


def journal(root: Path, names: list[str], seconds: float) -> None:
    """Record that this process computed these jobs: ROOT/journal.jsonl, one line a job (who,
    when, how long), appended under a lock so that no line is lost or torn."""
    path = Path(root) / "journal.jsonl"
    lines = "".join(json.dumps({"job": name, "host": socket.gethostname(), "pid": os.getpid(),
                                "ended": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": seconds}) + "\n"
                    for name in names)
    with exclusive(path):
        with open(path, "a") as f:
            f.write(lines)
