"""apply_mask_ (lthfast/ops/kernels/apply_mask/) against its reference on every backend, its
torch.library registration, and the backend selection shared by all ops
(lthfast/ops/kernels/backends.py)."""
import ast
from pathlib import Path

import pytest
import torch

from lthfast import ops
from lthfast.ops.extension import cpp_ops, triton_available

BACKENDS = ["torch",
            pytest.param("cpp", marks=pytest.mark.skipif(cpp_ops() is None, reason="C++ extension not built")),
            pytest.param("triton", marks=pytest.mark.skipif(not triton_available(), reason="no Triton"))]
SIZES = [0, 1, 7, 1023, 1025, 100_003]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_apply_mask_matches_reference(backend, size, dtype):
    g = torch.Generator().manual_seed(size)
    x = torch.randn(size, generator=g).to(dtype)
    x[::5] = float("nan")  # pruned NaNs must still become exactly zero
    mask = torch.rand(size, generator=g) < 0.6
    expected = torch.where(mask, x, torch.zeros_like(x))
    out = x.clone()
    ops.apply_mask_(out, mask, backend=backend)
    assert torch.equal(out[~mask], torch.zeros_like(out[~mask]))
    torch.testing.assert_close(out, expected, equal_nan=True, rtol=0, atol=0)
    reference = x.clone()
    assert ops.apply_mask_reference_(reference, mask) is reference
    torch.testing.assert_close(out, reference, equal_nan=True, rtol=0, atol=0)


@pytest.mark.skipif(cpp_ops() is None, reason="C++ extension not built")
def test_apply_mask_cpp_vgg16_sized_buffer():
    x = torch.randn(14_724_042)
    mask = torch.rand(x.numel()) < 0.2
    expected = x * mask
    ops.apply_mask_(x, mask, backend="cpp")
    assert torch.equal(x, expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_apply_mask_on_a_conv_weight_in_either_layout(backend, memory_format):
    w = torch.randn(16, 3, 3, 3).to(memory_format=memory_format)
    mask = (torch.rand(16, 3, 3, 3) < 0.5).to(memory_format=memory_format)
    expected = w * mask
    ops.apply_mask_(w, mask, backend=backend)
    assert torch.equal(w, expected) and w.is_contiguous(memory_format=memory_format)


@pytest.mark.parametrize("tensor,mask,message", [
    (torch.randn(5), torch.ones(6, dtype=torch.bool), "shapes differ"),
    (torch.randn(5), torch.ones(5), "bool"),
    (torch.arange(5), torch.ones(5, dtype=torch.bool), "floating point"),
    (torch.randn(4, 4).t(), torch.ones(4, 4, dtype=torch.bool), "same strides"),
    (torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last), torch.ones(2, 3, 4, 5, dtype=torch.bool),
     "same strides"),
])
def test_apply_mask_rejects_bad_arguments(tensor, mask, message):
    with pytest.raises(ValueError, match=message):
        ops.apply_mask_(tensor, mask)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_apply_mask_passes_opcheck(backend, memory_format):
    """Schema (mutates `tensor` only), fake tensor and AOT dispatch of torch.ops.lthfast.apply_mask_."""
    g = torch.Generator().manual_seed(1)
    tensor = torch.randn(2, 3, 5, 7, generator=g).to(memory_format=memory_format)
    mask = (torch.rand(2, 3, 5, 7, generator=g) < 0.5).to(memory_format=memory_format)
    torch.library.opcheck(torch.ops.lthfast.apply_mask_.default, (tensor, mask, backend))


# ----------------------------------------------------------------------------- backends (every op)

def test_unknown_backend_is_a_value_error():
    with pytest.raises(ValueError, match="backend must be one of"):
        ops.apply_mask_(torch.randn(3), torch.ones(3, dtype=torch.bool), backend="fortran")


def test_backends_are_owned_by_the_ops_layer():
    assert ops.BACKENDS == ("auto", "torch", "cpp", "triton", "cuda")
    ops.check_backend("triton")
    with pytest.raises(ValueError, match="backend must be one of auto, torch, cpp, triton, cuda"):
        ops.check_backend("gpu")


def test_kernels_import_no_higher_layer():
    """lthfast.ops and lthfast/ops/kernels import only the kernels and the extension modules, so
    that config (which imports BACKENDS from ops) and the trainer may import them freely."""
    root = Path(__file__).resolve().parents[1] / "lthfast"
    allowed = ("lthfast.ops", "lthfast._C", "lthfast._cuda")
    for path in sorted((root / "ops").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for name in names:
                assert not name.startswith("lthfast") or name.startswith(allowed), f"{path} imports {name}"


def test_auto_picks_the_extension_on_cpu_when_built():
    expected = "cpp" if cpp_ops() is not None else "torch"
    assert ops.resolve_backend("auto", torch.device("cpu")) == expected


def test_runnable_backend_says_why_a_backend_cannot_run(monkeypatch):
    with pytest.raises(ValueError, match="runs on CUDA tensors"):
        ops.runnable_backend("cuda", torch.device("cpu"))
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    if triton_available():
        with pytest.raises(ValueError, match="needs TRITON_INTERPRET=1"):
            ops.runnable_backend("triton", torch.device("cpu"))
    assert ops.runnable_backend("torch", torch.device("meta")) == "torch"


def test_missing_extension_warns_once_and_falls_back_to_torch(monkeypatch):
    import sys
    import warnings

    from lthfast.ops import extension

    extension.cpp_ops.cache_clear()
    monkeypatch.setitem(sys.modules, "lthfast._C", None)  # import now raises ImportError
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert ops.resolve_backend("auto", torch.device("cpu")) == "torch"
            x = torch.randn(5)
            ops.apply_mask_(x, torch.tensor([True, False, True, False, True]))
            assert x[1] == 0 and x[3] == 0
        assert len([w for w in caught if "C++ extension is not available" in str(w.message)]) == 1
        with pytest.raises(ValueError, match="extension was not built"):
            ops.apply_mask_(torch.randn(2), torch.ones(2, dtype=torch.bool), backend="cpp")
    finally:
        extension.cpp_ops.cache_clear()
