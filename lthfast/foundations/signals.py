"""Stopping on SIGINT/SIGTERM without losing finished work or a signal.

One handler for the whole process, one flag. Inside a `deferred()` block (a training, a
study's job loop) a signal only sets the flag, and the block stops at its next safe point
(`stop_requested()`: after a step whose checkpoint is saved, after a job); blocks nest and
share the flag, so a signal is never swallowed between them. Outside every block the
handler raises Stopped at once (nothing is half-written there), which the CLI
turns into one line and exit status 130.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

from lthfast.foundations.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_state = {"depth": 0, "signal": None, "previous": None}


class Stopped(BaseException):
    """A signal outside every deferred block: it unwinds the command at once (BaseException,
    so that no `except Exception` swallows it; not KeyboardInterrupt, which Python turns into
    death by SIGINT when it ends a program)."""


def _handler(signum, frame):
    _state["signal"] = signum
    if _state["depth"] == 0:
        raise Stopped(signal.Signals(signum).name)


def install() -> None:
    """Route SIGINT and SIGTERM through lthfast's handler (main thread only; idempotent)."""
    if _state["previous"] is None and threading.current_thread() is threading.main_thread():
        _state["previous"] = {sig: signal.signal(sig, _handler) for sig in SIGNALS}


def uninstall() -> None:
    """Restore the handlers that were there before install(), and forget any signal."""
    if _state["previous"] is not None:
        for sig, handler in _state["previous"].items():
            signal.signal(sig, handler)
        _state["previous"] = None
    _state["signal"] = None


def stop_requested() -> str | None:
    """The name of the signal received (e.g. "SIGINT"), or None."""
    return signal.Signals(_state["signal"]).name if _state["signal"] is not None else None


@contextmanager
def deferred(after: str | None = None):
    """Signals inside the block only set the flag, which the block checks at safe points.

    after: if given and a signal arrived by the end of the block, raise Interrupted(after)
    (e.g. a training that finished and saved: its caller must stop too)."""
    owner = _state["previous"] is None and threading.current_thread() is threading.main_thread()
    if owner:  # a library call outside the CLI: the handler lives as long as the block
        install()
    _state["depth"] += 1
    try:
        yield
        name = stop_requested()
    finally:
        _state["depth"] -= 1
        if owner:
            uninstall()
    if after and name:
        raise Interrupted(f"{after} ({name})")
