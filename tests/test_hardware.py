"""lthfast.foundations.hardware.keep_freed_memory: glibc's malloc keeps a step's blocks."""
import os
import platform
import subprocess
import sys

import pytest

from lthfast.foundations import hardware

# A fresh process allocates an 8 MiB tensor and reports how much of it glibc mmapped (mallinfo2's
# hblkhd grows by the block when malloc hands it to the system instead of its heap).
PROBE = """
import ctypes, sys, torch
from lthfast.foundations import hardware
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6"); libc.mallinfo2.restype = Info
kept = hardware.keep_freed_memory() if sys.argv[1] == "keep" else None
before = libc.mallinfo2().hblkhd
t = torch.empty(8 << 20, dtype=torch.uint8)
print(kept, libc.mallinfo2().hblkhd - before)
"""


def _probe(mode: str, **env) -> tuple[str, int]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env={**environ, "LTHFAST_MALLOC": "", **env}).stdout.split()
    return out[0], int(out[1])


glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="glibc's malloc only")


@glibc
def test_keep_freed_memory_sets_glibc_thresholds_once():
    assert _probe("plain") == ("None", pytest.approx(8 << 20, rel=0.01))  # control: mmapped by default
    kept, mapped = _probe("keep")
    assert kept == "True" and mapped == 0


@glibc
@pytest.mark.parametrize("env", [{"LTHFAST_MALLOC": "0"}, {"MALLOC_ARENA_MAX": "2"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}])
def test_keep_freed_memory_leaves_a_users_malloc_settings_alone(env):
    kept, mapped = _probe("keep", **env)
    assert kept == "False" and mapped >= 8 << 20


def test_keep_freed_memory_is_a_no_op_off_glibc(monkeypatch):
    monkeypatch.setattr(hardware.platform, "libc_ver", lambda: ("", ""))
    assert hardware.keep_freed_memory() is False
