"""magnitude_prune (lthfast/ops/kernels/magnitude_prune/): every backend gives the reference's
mask exactly, the reference equals an independent full sort, and the torch.library
registration passes opcheck."""
import pytest
import torch

from lthfast import ops
from lthfast.ops import magnitude_prune, magnitude_prune_reference
from lthfast.ops.extension import cpp_ops, triton_available

FAST = [pytest.param("cpp", marks=pytest.mark.skipif(cpp_ops() is None, reason="C++ extension not built")),
        pytest.param("triton", marks=pytest.mark.skipif(not triton_available(), reason="no Triton"))]
SIZES = [0, 1, 7, 1025, 100_003]  # 1025 and 100,003: not multiples of any block size
VGG16_SIZE = 14_710_464  # prunable weights of VGG-16 (every conv, fc excluded)


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


def full_sort_mask(flat_w, flat_mask, count, largest):
    """Independent reference: numpy-free python sort of (key, index) pairs."""
    kept = [(abs(float(flat_w[i])), i) for i in range(len(flat_w)) if flat_mask[i]]
    kept.sort(key=(lambda t: (-t[0], t[1])) if largest else (lambda t: (t[0], t[1])))
    out = flat_mask.clone()
    for _, i in kept[:count]:
        out[i] = False
    return out


@pytest.mark.parametrize("size", [0, 1, 7, 1001])
@pytest.mark.parametrize("largest", [False, True])
def test_reference_prune_matches_a_full_sort_with_ties(size, largest):
    g = torch.Generator().manual_seed(size)
    w = torch.randint(-5, 6, (size,), generator=g).float()  # many ties
    mask = torch.rand(size, generator=g) < 0.7
    count = int(mask.sum()) // 3
    out = magnitude_prune_reference(w, mask, count, largest)
    assert torch.equal(out, full_sort_mask(w, mask, count, largest))
    assert int(out.sum()) == int(mask.sum()) - count and not (out & ~mask).any()


def test_reference_prune_rejects_too_large_counts():
    with pytest.raises(ValueError, match="cannot prune 4 entries: the mask keeps 3"):
        magnitude_prune(torch.ones(5), torch.tensor([1, 1, 1, 0, 0], dtype=torch.bool), 4, backend="torch")


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


def test_magnitude_prune_keeps_the_mask_shape_and_leaves_its_inputs_alone():
    w, mask = prune_inputs(6 * 7, seed=3)
    w, mask = w.view(6, 7), mask.view(6, 7)
    before = w.clone(), mask.clone()
    out = ops.magnitude_prune(w, mask, 5)
    assert out.shape == (6, 7) and out.dtype == torch.bool and int(out.sum()) == int(mask.sum()) - 5
    assert torch.equal(w, before[0]) and torch.equal(mask, before[1])


@pytest.mark.parametrize("backend", ["torch", *FAST])
@pytest.mark.parametrize("count", [0, 9])
def test_magnitude_prune_passes_opcheck(backend, count):
    """Schema (no mutation), fake tensor and AOT dispatch of torch.ops.lthfast.magnitude_prune."""
    w, mask = prune_inputs(37, seed=4)
    torch.library.opcheck(torch.ops.lthfast.magnitude_prune.default, (w, mask, count, True, backend))
