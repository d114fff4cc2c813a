"""masked_sgd_ (lthfast/ops/kernels/masked_sgd/): every backend against the plain-PyTorch
reference and torch.optim.SGD, one learning rate per member, the torch.library
registration (opcheck) and a ResNet-20 step with the op under torch.compile."""
import numpy as np
import pytest
import torch

from lthfast import ops
from lthfast.ops.extension import cpp_ops, triton_available

CPP = pytest.param("cpp", marks=pytest.mark.skipif(cpp_ops() is None, reason="C++ extension not built"))
TRITON = pytest.param("triton", marks=pytest.mark.skipif(not triton_available(), reason="no Triton"))
FAST = [CPP, TRITON]
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


def float32_sgd(p, grad, buf, mask, lr, momentum, weight_decay, nesterov):
    """The kernels' arithmetic in numpy float32, every operation rounded on its own (no FMA);
    lr: a float or one float32 per entry. Returns the new (params, buffer) in p's dtype."""
    f32 = np.float32
    param, g, b = (t.float().numpy() for t in (p, grad, buf))
    lr, momentum, weight_decay = (np.asarray(v, dtype=f32) for v in (lr, momentum, weight_decay))
    g = g + weight_decay * param
    b = momentum * b + g
    step = g + momentum * b if nesterov else b
    updated = param - lr * step
    keep = mask.numpy()
    return tuple(torch.from_numpy(np.where(keep, v, f32(0))).to(p.dtype) for v in (updated, b))


# Triton's interpreter rounds float32 to bfloat16 toward zero (the GPU rounds to nearest
# even, as the numpy model does), so its bfloat16 stores are checked only within tolerance.
@pytest.mark.parametrize("backend,dtype", [pytest.param(*b.values, d, marks=b.marks) for b, d in (
    (CPP, torch.float32), (CPP, torch.bfloat16), (TRITON, torch.float32))])
@pytest.mark.parametrize("nesterov", [False, True])
def test_masked_sgd_kernels_round_every_float32_operation(backend, dtype, nesterov):
    """The fast backends compute exactly the float32 arithmetic of the contract (cuda.cuh),
    bit for bit: the scalar-lr path and the per-member path alike."""
    p, grad, buf, mask = sgd_inputs(3 * 1031, dtype, seed=11)
    for lr in (0.1, torch.tensor([0.1, 0.0, 0.37])):
        got_p, got_buf = p.clone(), buf.clone()
        ops.masked_sgd_(got_p, grad, got_buf, mask, lr, 0.9, 5e-4, nesterov, backend=backend)
        rates = lr.repeat_interleave(1031).numpy() if isinstance(lr, torch.Tensor) else lr
        want_p, want_buf = float32_sgd(p, grad, buf, mask, rates, 0.9, 5e-4, nesterov)
        assert torch.equal(got_p, want_p) and torch.equal(got_buf, want_buf)


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


# ----------------------------------------------------------------------------- one lr per member

@pytest.mark.parametrize("backend", ["torch", *FAST])
@pytest.mark.parametrize("members,segment", [(1, 1), (1, 1031), (3, 1), (3, 7), (3, 1031)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("nesterov", [False, True])
def test_member_lr_equals_separate_calls(backend, members, segment, dtype, nesterov):
    """lr[k] for the k-th of K equal segments: bit for bit K calls of their own."""
    p, grad, buf, mask = sgd_inputs(members * segment, dtype, seed=members * segment)
    lr = torch.tensor([0.1, 0.0, 0.37][:members])
    got_p, got_buf = p.clone(), buf.clone()
    assert ops.masked_sgd_(got_p, grad, got_buf, mask, lr, 0.9, 5e-4, nesterov, backend=backend) is got_p
    for k in range(members):
        part = slice(k * segment, (k + 1) * segment)
        want_p, want_buf = p[part].clone(), buf[part].clone()
        ops.masked_sgd_(want_p, grad[part].clone(), want_buf, mask[part].clone(), float(lr[k]), 0.9, 5e-4,
                        nesterov, backend=backend)
        assert torch.equal(got_p[part], want_p) and torch.equal(got_buf[part], want_buf)


@pytest.mark.skipif(cpp_ops() is None, reason="C++ extension not built")
def test_member_lr_cpp_splits_members_across_threads():
    """Above the parallel threshold each thread walks its share member by member: 3
    threads over 5 members of an odd size start and end mid-member."""
    members, segment = 5, 20_011
    p, grad, buf, mask = sgd_inputs(members * segment, torch.float32, seed=5)
    lr = torch.tensor([0.3, 0.1, 0.0, 0.7, 0.05])
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        got_p, got_buf = p.clone(), buf.clone()
        ops.masked_sgd_(got_p, grad, got_buf, mask, lr, 0.9, 5e-4, backend="cpp")
    finally:
        torch.set_num_threads(threads)
    want_p, want_buf = float32_sgd(p, grad, buf, mask, lr.repeat_interleave(segment).numpy(), 0.9, 5e-4, False)
    assert torch.equal(got_p, want_p) and torch.equal(got_buf, want_buf)


@pytest.mark.parametrize("lr,message", [
    (torch.full((3, 1), 0.1), "1-D"),
    (torch.tensor([0.1, float("nan"), 0.1]), "finite"),
    (torch.tensor([0.1, float("inf"), 0.1]), "finite"),
    (torch.tensor([0.1, -0.5, 0.1]), "non-negative"),
    (torch.full((4,), 0.1), "do not divide"),
    (torch.zeros(0), "do not divide"),
    (torch.full((3,), 0.1, dtype=torch.float64), "float32"),
    (torch.full((3,), 0.1, device="meta"), "mixed devices"),
])
@pytest.mark.parametrize("backend", ["torch", *FAST])
def test_member_lr_rejects_bad_rates(lr, message, backend):
    p, g, b, m = sgd_inputs(6, torch.float32, seed=0)
    before = p.clone(), b.clone()
    with pytest.raises(ValueError, match=message):
        ops.masked_sgd_(p, g, b, m, lr, 0.9, 0.0, backend=backend)
    assert torch.equal(p, before[0]) and torch.equal(b, before[1])  # nothing ran


# ----------------------------------------------------------------------------- torch.library, torch.compile

@pytest.mark.parametrize("backend", ["torch", *FAST])
@pytest.mark.parametrize("member_lr", [None, torch.tensor([0.1, 0.0, 0.2])])
@pytest.mark.parametrize("lr_checked", [False, True])
def test_masked_sgd_passes_opcheck(backend, member_lr, lr_checked):
    """Schema (mutates params and momentum_buf only), fake tensor and AOT dispatch of
    torch.ops.lthfast.masked_sgd_, with one lr and with one per member."""
    p, grad, buf, mask = sgd_inputs(3 * 13, torch.float32, seed=2)
    torch.library.opcheck(torch.ops.lthfast.masked_sgd_.default,
                          (p, grad, buf, mask, 0.1, member_lr, 0.9, 5e-4, True, backend, lr_checked))


@pytest.mark.skipif(cpp_ops() is None, reason="C++ extension not built")
def test_resnet20_step_with_the_op_under_torch_compile_matches_eager():
    """Three ResNet-20 training steps (real forward and backward, masked SGD on the model's
    flat buffers) with the optimizer step compiled by inductor as one graph
    (fullgraph=True) holding torch.ops.lthfast.masked_sgd_: the weights equal eager's, and
    a new lr each step does not recompile each step (lr stays a graph input)."""
    import torch.nn.functional as F
    from torch._dynamo.testing import CompileCounterWithBackend

    from lthfast.models.families import create_model, prunable_names
    from lthfast.training.optim import MaskedSGD

    def build():
        model = create_model("resnet20", seed=0)
        g = torch.Generator().manual_seed(1)
        prunable = set(prunable_names(model))
        mask = {n: torch.rand(p.shape, generator=g) < 0.5 for n, p in model.named_parameters() if n in prunable}
        return model, MaskedSGD(model, mask, momentum=0.9, weight_decay=5e-4, backend="cpp")

    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 10, (4,), generator=g)

    def train(step):
        model, opt = build()
        for lr in (0.1, 0.05, 0.02):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.flat.check_gradients()  # backward wrote into the flat buffer
            step(opt, lr)
        return opt.flat.params, opt.momentum_buffer

    def sgd_step(params, grads, momentum_buf, keep, lr):
        return ops.masked_sgd_(params, grads, momentum_buf, keep, lr, 0.9, 5e-4, False, backend="cpp")

    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(sgd_step, backend=counter, fullgraph=True)
    eager_params, eager_buf = train(lambda opt, lr: opt.step(lr))
    params, buf = train(lambda opt, lr: compiled(opt.flat.params, opt.flat.grads, opt.momentum_buffer,
                                                 opt.keep, lr))
    assert 1 <= counter.frame_count <= 2  # the first lr is specialized, the second made dynamic
    assert any("lthfast.masked_sgd_" in str(node.target) for gm in counter.graphs for node in gm.graph.nodes)
    assert (params - eager_params).abs().max().item() <= 1e-6
    assert (buf - eager_buf).abs().max().item() <= 1e-6
