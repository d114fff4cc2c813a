"""masked_sgd_ and magnitude_prune: every backend against the plain-PyTorch reference."""
import pytest
import torch

from lthfast import ops
from lthfast.extension import cpp_ops, triton_available

FAST = [pytest.param("cpp", marks=pytest.mark.skipif(cpp_ops() is None, reason="C++ extension not built")),
        pytest.param("triton", marks=pytest.mark.skipif(not triton_available(), reason="no Triton"))]
SIZES = [0, 1, 7, 1025, 100_003]  # 1025 and 100,003: not multiples of any block size
VGG16_SIZE = 14_710_464  # prunable weights of VGG-16 (every conv, fc excluded)


def sgd_inputs(size, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    p, grad, buf = (torch.randn(size, generator=g).to(dtype) for _ in range(3))
    mask = torch.rand(size, generator=g) < 0.6
    return p, grad, buf, mask


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("nesterov", [False, True])
def test_masked_sgd_matches_reference(backend, size, dtype, nesterov):
    p, grad, buf, mask = sgd_inputs(size, dtype, seed=size)
    hyper = dict(lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=nesterov)
    expected_p, expected_buf = p.clone(), buf.clone()
    ops.masked_sgd_(expected_p, grad, expected_buf, mask, backend="torch", **hyper)
    ops.masked_sgd_(p, grad, buf, mask, backend=backend, **hyper)
    # Kernels keep intermediates in float32; bf16 tensors may then differ by one rounding.
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(p, expected_p, **tol)
    torch.testing.assert_close(buf, expected_buf, **tol)
    assert torch.equal(p[~mask], torch.zeros_like(p[~mask])) and torch.equal(buf[~mask], torch.zeros_like(buf[~mask]))


@pytest.mark.parametrize("backend", ["torch", *FAST])
@pytest.mark.parametrize("nesterov", [False, True])
def test_masked_sgd_is_torch_sgd_then_the_mask(backend, nesterov):
    """Three steps from a zero buffer equal torch.optim.SGD (first-step rule included)
    followed by zeroing the pruned weights and buffer entries."""
    p, _, _, mask = sgd_inputs(1031, torch.float32, seed=3)
    p = p.masked_fill(~mask, 0)
    reference = torch.nn.Parameter(p.clone())
    opt = torch.optim.SGD([reference], lr=0.05, momentum=0.9, weight_decay=1e-4, nesterov=nesterov)
    buf = torch.zeros_like(p)
    g = torch.Generator().manual_seed(4)
    for _ in range(3):
        grad = torch.randn(p.shape, generator=g)
        reference.grad = grad.clone()
        opt.step()
        with torch.no_grad():
            reference.masked_fill_(~mask, 0)
            opt.state[reference]["momentum_buffer"].masked_fill_(~mask, 0)
        ops.masked_sgd_(p, grad, buf, mask, 0.05, 0.9, 1e-4, nesterov, backend=backend)
    exact = backend == "torch"
    torch.testing.assert_close(p, reference.detach(), rtol=0 if exact else 1e-6, atol=0 if exact else 1e-6)
    torch.testing.assert_close(buf, opt.state[reference]["momentum_buffer"],
                               rtol=0 if exact else 1e-6, atol=0 if exact else 1e-6)


@pytest.mark.skipif(cpp_ops() is None, reason="C++ extension not built")
def test_masked_sgd_cpp_on_a_vgg16_sized_buffer():
    p, grad, buf, mask = sgd_inputs(VGG16_SIZE, torch.float32, seed=16)
    expected_p, expected_buf = p.clone(), buf.clone()
    ops.masked_sgd_(expected_p, grad, expected_buf, mask, 0.1, 0.9, 1e-4, backend="torch")
    ops.masked_sgd_(p, grad, buf, mask, 0.1, 0.9, 1e-4, backend="cpp")
    torch.testing.assert_close(p, expected_p, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(buf, expected_buf, rtol=1e-6, atol=1e-6)


def _bad_sgd_calls():
    p, g, b, m = sgd_inputs(5, torch.float32, seed=0)
    return [
        ((p, g[:4], b, m), {}, "entries"),
        ((p, g, b, m.float()), {}, "bool"),
        ((p.double(), g.double(), b.double(), m), {}, "dtype"),
        ((p, g.bfloat16(), b, m), {}, "dtype"),
        ((p, g, torch.zeros(5, device="meta"), m), {}, "mixed devices"),
        ((p, g, torch.zeros(10)[::2], m), {}, "contiguous"),
        ((p, g, b, m), {"lr": -1.0}, "lr"),
        ((p, g, b, m), {"backend": "gpu"}, "backend"),
    ]


@pytest.mark.parametrize("args,kwargs,message", _bad_sgd_calls())
def test_masked_sgd_rejects_bad_arguments(args, kwargs, message):
    hyper = {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0, **kwargs}
    before = args[0].clone()
    with pytest.raises(ValueError, match=message):
        ops.masked_sgd_(*args, **hyper)
    assert torch.equal(args[0], before)  # nothing ran


# ----------------------------------------------------------------------------- magnitude_prune

def prune_inputs(size, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(size, generator=g)
    w[::3] = (w[::3] * 4).round() / 4  # many exact ties, and zeros of both signs
    w[::7] = -w[::7]
    return w.to(dtype), torch.rand(size, generator=g) < 0.7


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("largest", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_magnitude_prune_gives_the_reference_mask(backend, size, largest, dtype):
    w, mask = prune_inputs(size, seed=size, dtype=dtype)
    kept = int(mask.sum())
    for count in sorted({0, min(1, kept), kept // 3, kept}):
        expected = ops.magnitude_prune(w, mask, count, largest, backend="torch")
        assert int(expected.sum()) == kept - count
        assert torch.equal(ops.magnitude_prune(w, mask, count, largest, backend=backend), expected)


@pytest.mark.parametrize("backend", FAST)
def test_magnitude_prune_breaks_ties_by_index(backend):
    w = torch.full((1000,), 0.5)
    w[500:] = -0.5  # the same magnitude everywhere
    mask = torch.ones(1000, dtype=torch.bool)
    for largest in (False, True):
        out = ops.magnitude_prune(w, mask, 300, largest, backend=backend)
        assert not out[:300].any() and out[300:].all()


def test_magnitude_prune_reference_removes_the_smallest_or_largest():
    w, mask = prune_inputs(2001, seed=1)
    for largest in (False, True):
        out = ops.magnitude_prune(w, mask, 500, largest, backend="torch")
        removed, kept = w[mask & ~out].abs(), w[out].abs()
        assert (removed.max() <= kept.min()) if not largest else (removed.min() >= kept.max())


@pytest.mark.skipif(cpp_ops() is None, reason="C++ extension not built")
def test_magnitude_prune_cpp_on_a_vgg16_sized_buffer():
    w, mask = prune_inputs(VGG16_SIZE, seed=16)
    count = int(mask.sum()) // 5
    for largest in (False, True):
        expected = ops.magnitude_prune(w, mask, count, largest, backend="torch")
        assert torch.equal(ops.magnitude_prune(w, mask, count, largest, backend="cpp"), expected)


@pytest.mark.parametrize("args,message", [
    ((torch.randn(5), torch.ones(5, dtype=torch.bool), 6), "keeps 5"),
    ((torch.randn(5), torch.ones(5, dtype=torch.bool), -1), "cannot prune"),
    ((torch.randn(5), torch.ones(5, dtype=torch.bool), 2.0), "integer"),
    ((torch.randn(5), torch.ones(4, dtype=torch.bool), 1), "entries"),
    ((torch.randn(5), torch.ones(5), 1), "bool"),
    ((torch.arange(5), torch.ones(5, dtype=torch.bool), 1), "float32 or bfloat16"),
    ((torch.randn(5, device="meta"), torch.ones(5, dtype=torch.bool), 1), "mixed devices"),
])
def test_magnitude_prune_rejects_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        ops.magnitude_prune(*args)


# ----------------------------------------------------------------------------- lerp_points

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
