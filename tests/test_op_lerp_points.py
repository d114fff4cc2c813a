"""lerp_points (lthfast/ops/kernels/lerp_points/): every backend against the reference, exact at
both ends, and the torch.library registration (lerp_points, lerp_points_out) under opcheck."""
import pytest
import torch

from lthfast import ops
from lthfast.ops.extension import cpp_ops, triton_available

FAST = [pytest.param("cpp", marks=pytest.mark.skipif(cpp_ops() is None, reason="C++ extension not built")),
        pytest.param("triton", marks=pytest.mark.skipif(not triton_available(), reason="no Triton"))]
SIZES = [0, 1, 7, 1025, 100_003]  # 1025 and 100,003: not multiples of any block size


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("size", SIZES)
def test_lerp_points_matches_reference_and_hits_both_ends_exactly(backend, size):
    g = torch.Generator().manual_seed(size)
    a, b = torch.randn(size, generator=g), torch.randn(size, generator=g)
    alphas = torch.tensor([0.0, 0.05, 0.5, 0.95, 1.0, -0.5, -0.2, 1.5])  # extrapolation too
    expected = ops.lerp_points(a, b, alphas, backend="torch")
    out = ops.lerp_points(a, b, alphas, backend=backend)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(out[0], a) and torch.equal(out[4], b)
    into = torch.empty(len(alphas), size)
    assert ops.lerp_points(a, b, alphas, out=into, backend=backend) is into
    torch.testing.assert_close(into, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", ["torch", *FAST])
def test_lerp_points_of_no_alphas_is_empty(backend):
    a, b = torch.randn(5), torch.randn(5)
    out = ops.lerp_points(a, b, torch.zeros(0), backend=backend)
    assert out.shape == (0, 5) and out.dtype == torch.float32


def test_lerp_points_reference_is_torch_lerp_row_by_row():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, generator=g), torch.randn(7, generator=g)
    alphas = torch.tensor([0.25, 0.75])
    out = ops.lerp_points_reference(a, b, alphas)
    assert torch.equal(out[0], torch.lerp(a, b, 0.25)) and torch.equal(out[1], torch.lerp(a, b, 0.75))


@pytest.mark.parametrize("args,message", [
    ((torch.randn(5), torch.randn(6), torch.zeros(2)), "differ"),
    ((torch.randn(5), torch.randn(5).double(), torch.zeros(2)), "float32"),
    ((torch.randn(5, 1), torch.randn(5, 1), torch.zeros(2)), "1-D"),
    ((torch.randn(5), torch.randn(5), torch.zeros(2, 1)), "alphas"),
    ((torch.randn(5), torch.randn(5, device="meta"), torch.zeros(2)), "mixed devices"),
])
def test_lerp_points_rejects_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        ops.lerp_points(*args)


def test_lerp_points_rejects_a_bad_out():
    with pytest.raises(ValueError, match="out must be a contiguous"):
        ops.lerp_points(torch.randn(5), torch.randn(5), torch.zeros(2), out=torch.empty(2, 4))


@pytest.mark.parametrize("backend", ["torch", *FAST])
def test_lerp_points_passes_opcheck(backend):
    """Schema, fake tensor and AOT dispatch of torch.ops.lthfast.lerp_points (a new [K, n]
    tensor) and torch.ops.lthfast.lerp_points_out (mutates out only)."""
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(37, generator=g), torch.randn(37, generator=g)
    alphas = torch.tensor([0.0, 0.3, 1.0, 1.5])
    torch.library.opcheck(torch.ops.lthfast.lerp_points.default, (a, b, alphas, backend))
    torch.library.opcheck(torch.ops.lthfast.lerp_points_out.default, (a, b, alphas, torch.empty(4, 37), backend))
