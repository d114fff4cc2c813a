"""Atomic file writes and safe checkpoint loading.

Every file is written to a temporary name in the same folder, flushed to disk and
then renamed over the target, so a run killed at any moment leaves either the old
file or the new one, never a torn one.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import torch

from lthfast.foundations.errors import LthError


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide results from other users
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # a full disk, a read-only folder: name the file it was writing
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path)) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj, path: Path) -> None:
    """torch.save into memory, then the bytes to disk: torch's own writer turns a failed
    write (a full disk) into a RuntimeError without its cause; a plain write keeps the OSError."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    _atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def atomic_write_json(obj, path: Path) -> None:
    _atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()))


def atomic_write_bytes(write, path: Path) -> None:
    """write(f) into a unique temporary file beside `path`, then rename it over `path`."""
    _atomic_write(path, write)


def atomic_write_text(text: str, path: Path) -> None:
    _atomic_write(path, lambda f: f.write(text.encode()))


def load_tensors(path: Path):
    """torch.load with weights_only=True: a checkpoint can never run code."""
    return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint(path: Path):
    try:
        return load_tensors(path)
    except Exception as exc:
        raise LthError(f"checkpoint {path} is unreadable or corrupt ({type(exc).__name__}); "
                       "delete it to start that part again") from None


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise LthError(f"cannot read {path}: {exc}") from None
