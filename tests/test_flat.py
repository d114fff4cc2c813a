"""Flat parameter storage and the masked SGD optimizer built on it."""
import pytest
import torch
import torch.nn.functional as F

from lthfast.models.families import create_model, prunable_names
from lthfast.ops.extension import cpp_ops
from lthfast.training.flat import FlatParameters
from lthfast.training.optim import MaskedSGD


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_parameters_and_gradients_are_views_of_one_buffer(memory_format):
    model = create_model("resnet8", seed=0).to(memory_format=memory_format)
    reference = create_model("resnet8", seed=0).to(memory_format=memory_format)
    flat = FlatParameters(model)
    assert flat.numel == sum(p.numel() for p in model.parameters())
    x, y = torch.randn(4, 3, 32, 32).contiguous(memory_format=memory_format), torch.tensor([0, 1, 2, 3])
    for net in (model, reference):
        F.cross_entropy(net(x), y).backward()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        offset, size = flat.slices[name]
        assert p.stride() == q.stride()  # layout kept
        assert p.data_ptr() == flat.params[offset:].data_ptr() and p.grad.data_ptr() == flat.grads[offset:].data_ptr()
        torch.testing.assert_close(p, q, rtol=0, atol=0)
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6)
    flat.zero_grad()
    assert all(torch.count_nonzero(p.grad) == 0 for p in model.parameters())


def test_flat_mask_keeps_unlisted_parameters():
    model = create_model("resnet8", seed=0).to(memory_format=torch.channels_last)
    flat = FlatParameters(model)
    name = prunable_names(model)[1]
    keep = torch.rand(flat.shapes[name]) < 0.5
    mask = flat.flat_mask({name: keep})
    assert torch.equal(flat.view(mask, name), keep)
    assert int(mask.sum()) == flat.numel - int((~keep).sum())
    with pytest.raises(ValueError, match="does not have"):
        flat.flat_mask({"nope.weight": keep})
    with pytest.raises(ValueError, match="shape"):
        flat.flat_mask({name: keep[:1]})


def test_mixed_dtypes_are_rejected():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2).double())
    with pytest.raises(ValueError, match="one dtype and device"):
        FlatParameters(model)


@pytest.mark.parametrize("backend", ["torch", pytest.param("cpp", marks=pytest.mark.skipif(
    cpp_ops() is None, reason="C++ extension not built"))])
def test_masked_sgd_trains_like_torch_sgd_with_the_mask(backend):
    model = create_model("resnet8", seed=0)
    reference = create_model("resnet8", seed=0)
    names = prunable_names(model)
    g = torch.Generator().manual_seed(1)
    mask = {n: torch.rand(dict(model.named_parameters())[n].shape, generator=g) < 0.3 for n in names}
    with torch.no_grad():
        for n, p in reference.named_parameters():
            if n in mask:
                p.masked_fill_(~mask[n], 0)
    optimizer = MaskedSGD(model, mask, momentum=0.9, weight_decay=1e-4, nesterov=True, backend=backend)
    torch_sgd = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4, nesterov=True)
    for step in range(3):
        x, y = torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step(0.05)
        torch_sgd.zero_grad()
        F.cross_entropy(reference(x), y).backward()
        torch_sgd.step()
        with torch.no_grad():
            for n, p in reference.named_parameters():
                if n in mask:
                    p.masked_fill_(~mask[n], 0)
                    torch_sgd.state[p]["momentum_buffer"].masked_fill_(~mask[n], 0)
    for (n, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=n)
        if n in mask:
            assert torch.all(p[~mask[n]] == 0)


def test_momentum_survives_a_resume_in_another_memory_layout():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 3, 32, 32, generator=g), torch.tensor([0, 1, 2, 3])
    first = create_model("resnet8", seed=0).to(memory_format=torch.channels_last)
    optimizer = MaskedSGD(first, None, momentum=0.9, weight_decay=0.0)
    optimizer.zero_grad()
    F.cross_entropy(first(x.contiguous(memory_format=torch.channels_last)), y).backward()
    optimizer.step(0.1)
    resumed = create_model("resnet8", seed=0)  # default layout this time
    again = MaskedSGD(resumed, None, momentum=0.9, weight_decay=0.0)
    again.load_state_dict(optimizer.state_dict())
    for name in optimizer.flat.names:
        assert torch.equal(again.flat.view(again.momentum_buffer, name),
                           optimizer.flat.view(optimizer.momentum_buffer, name)), name


def test_a_gradient_that_left_the_flat_buffer_is_an_error():
    model = create_model("resnet8", seed=0)
    optimizer = MaskedSGD(model, None, momentum=0.9, weight_decay=0.0)
    model.zero_grad()  # sets .grad to None: the flat buffer would silently see zeros
    with pytest.raises(RuntimeError, match="left the flat buffer"):
        optimizer.step(0.1)
