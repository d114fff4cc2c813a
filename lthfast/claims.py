"""Who works in a run store: markers of the processes working in a root (a study), so that a
report written meanwhile can say so.

  ROOT/running/<host>-<pid>.json    one per working process, removed when it ends
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

from lthfast.storage import atomic_write_json


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
