import os

# Triton kernels run on the CPU through the interpreter; set before triton is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")
# Eager steps throughout (lthfast.training.engines.resolve_compile): a compiled ResNet-20 step would
# cost each test process a compile; tests/test_step_sync.py checks the default's rule itself.
os.environ.setdefault("LTHFAST_COMPILE", "0")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own data cache and run root: nothing leaks between tests."""
    monkeypatch.setenv("LTHFAST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LTHFAST_ROOT", str(tmp_path / "runs"))
