"""An extension built for another torch is refused (setup.py's stamp beside it names the torch it
was built against): lthfast warns once and runs on plain PyTorch instead of loading it."""
import importlib.machinery
import importlib.util
import warnings

import torch

from lthfast.ops.kernels import backends


def fake_extension(monkeypatch, tmp_path, stamp):
    """lthfast._C found at a file in tmp_path, with `stamp` (None: none) beside it."""
    origin = tmp_path / "_C.fake.so"
    origin.write_bytes(b"")
    if stamp is not None:
        (tmp_path / "_C.fake.so.torch").write_text(stamp + "\n")
    spec = importlib.machinery.ModuleSpec("lthfast._C", None, origin=str(origin))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: spec if name == "lthfast._C" else real_find_spec(name, *a))
    imported = []
    monkeypatch.setattr(importlib, "import_module", lambda name: imported.append(name) or "module")
    return imported


def test_an_extension_built_for_another_torch_is_refused_with_one_warning(monkeypatch, tmp_path):
    imported = fake_extension(monkeypatch, tmp_path, "0.0.1")
    backends.cpp_ops.cache_clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert backends.cpp_ops() is None
            assert backends.resolve_backend("auto", torch.device("cpu")) == "torch"
        messages = [str(w.message) for w in caught]
        assert len(messages) == 1 and f"built against torch 0.0.1, this is torch {torch.__version__}" in messages[0]
        assert "setup.py build_ext --inplace" in messages[0]
        assert imported == []  # never loaded
    finally:
        backends.cpp_ops.cache_clear()


def test_an_extension_built_for_this_torch_or_unstamped_is_imported(monkeypatch, tmp_path):
    for folder, stamp in (("this", torch.__version__), ("unstamped", None)):
        (tmp_path / folder).mkdir()
        imported = fake_extension(monkeypatch, tmp_path / folder, stamp)
        assert backends._import_extension("_C") == "module" and imported == ["lthfast._C"]
