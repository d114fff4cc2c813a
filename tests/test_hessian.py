"""Sharpness and distance against exact answers on small explicit cases."""
import math

import pytest
import torch

from lthfast.landscape.curves import l2_distance as distance
from lthfast.landscape.hessian import (
    extreme_eigenvalues,
    hessian_vector_product,
    hutchinson_trace,
)


def quadratic(matrix):
    """loss(w) = 1/2 w^T A w over one parameter 'w': its Hessian is exactly A."""
    return lambda params: 0.5 * params["w"] @ matrix @ params["w"]


def spd(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eigenvalues = torch.linspace(0.5, 10.0, n, dtype=torch.float64)
    return q @ torch.diag(eigenvalues) @ q.T, eigenvalues


def test_hessian_vector_product_of_a_quadratic_is_the_matrix_times_v():
    a, _ = spd(6)
    v = {"w": torch.randn(6, dtype=torch.float64)}
    hv = hessian_vector_product(quadratic(a), {"w": torch.randn(6, dtype=torch.float64)}, v)
    torch.testing.assert_close(hv["w"], a @ v["w"])


def test_extreme_eigenvalues_match_the_exact_ones():
    a, eigenvalues = spd(8)
    result = extreme_eigenvalues(quadratic(a), {"w": torch.zeros(8, dtype=torch.float64)}, tolerance=1e-10)
    assert result.largest == pytest.approx(float(eigenvalues.max()), rel=1e-6)
    assert result.smallest == pytest.approx(float(eigenvalues.min()), rel=1e-6)
    assert result.converged and result.residual_largest < 1e-9 and result.products > 1


def with_spectrum(values, seed=0):
    """A symmetric matrix with exactly these eigenvalues, in a random basis."""
    values = torch.tensor(values, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(len(values), len(values), generator=torch.Generator().manual_seed(seed),
                                       dtype=torch.float64))
    return q @ torch.diag(values) @ q.T


@pytest.mark.parametrize("spectrum", [[4.0, -3.96, 1.0, 0.5],   # the case power iteration called converged at -3.96
                                      [-3.96, 4.0, 0.2],
                                      [1.0, 1.0 - 1e-9, -1.0]])  # a tie and its opposite
def test_opposite_signs_of_nearly_equal_size_on_small_matrices(spectrum):
    a = with_spectrum(spectrum)
    result = extreme_eigenvalues(quadratic(a), {"w": torch.zeros(len(spectrum), dtype=torch.float64)})
    assert result.largest == pytest.approx(max(spectrum), rel=1e-9)
    assert result.smallest == pytest.approx(min(spectrum), rel=1e-9)
    assert result.converged


@pytest.mark.parametrize("top, bottom", [(4.0, -3.96), (0.58, -0.77), (5.0, -5.0 + 1e-6)])
def test_lanczos_finds_both_ends_of_a_large_spectrum(top, bottom):
    """Lanczos (not the dense path: 300 > lanczos_vectors + 1) on a bulk in [-0.3, 0.3] with
    the two ends of opposite sign and nearly equal size (or the negative end larger)."""
    values = [top, bottom] + torch.linspace(-0.3, 0.3, 298).tolist()
    a = with_spectrum(values, seed=1)
    result = extreme_eigenvalues(quadratic(a), {"w": torch.zeros(300, dtype=torch.float64)}, tolerance=1e-6,
                                 max_products=2000, lanczos_vectors=20)
    assert result.solver.startswith("Lanczos")
    assert result.largest == pytest.approx(top, rel=1e-5) and result.smallest == pytest.approx(bottom, rel=1e-5)
    assert result.converged and max(result.residual_largest, result.residual_smallest) < 1e-6
    assert result.products <= 2000 + 2


def test_a_budget_too_small_is_reported_as_not_converged():
    values = [1.0 + 1e-4 * k for k in range(300)]  # a crowded top: slow to converge
    a = with_spectrum(values, seed=2)
    result = extreme_eigenvalues(quadratic(a), {"w": torch.zeros(300, dtype=torch.float64)}, tolerance=1e-12,
                                 max_products=12, lanczos_vectors=8)
    assert not result.converged
    assert result.products <= 12 + 8 + 2  # the budget (one restart's granularity) and the two residuals


def test_hutchinson_trace_converges_to_the_exact_trace():
    a, eigenvalues = spd(10)
    result = hutchinson_trace(quadratic(a), {"w": torch.zeros(10, dtype=torch.float64)}, samples=2000)
    exact = float(eigenvalues.sum())
    assert abs(result.value - exact) < 4 * result.standard_error + 1e-9
    assert result.standard_error < 0.05 * exact


def test_pruned_weights_never_move_and_restrict_the_spectrum():
    a, _ = spd(6)
    mask = {"w": torch.tensor([True, False, True, True, False, True])}
    params = {"w": torch.zeros(6, dtype=torch.float64)}
    hv = hessian_vector_product(quadratic(a), params, {"w": torch.randn(6, dtype=torch.float64)}, mask)
    assert torch.all(hv["w"][~mask["w"]] == 0)
    kept = mask["w"].nonzero().flatten()
    sub = a[kept][:, kept]
    exact_top = float(torch.linalg.eigvalsh(sub).max())
    assert extreme_eigenvalues(quadratic(a), params, mask, tolerance=1e-12).largest == pytest.approx(exact_top,
                                                                                                   rel=1e-6)
    trace = hutchinson_trace(quadratic(a), params, mask, samples=3000)
    assert abs(trace.value - float(torch.trace(sub))) < 4 * trace.standard_error + 1e-9


def test_distance_over_unpruned_weights():
    a = {"w": torch.tensor([3.0, 0.0, 4.0]), "b": torch.tensor([1.0])}
    b = {"w": torch.tensor([0.0, 9.0, 0.0]), "b": torch.tensor([5.0])}
    mask = {"w": torch.tensor([True, False, True])}
    result = distance(a, b, mask)
    assert result["l2"] == pytest.approx(5.0) and result["relative"] == pytest.approx(1.0)
    assert distance(a, a)["l2"] == 0
    assert distance(a, b)["l2"] == pytest.approx(math.sqrt(9 + 81 + 16 + 16))


def test_model_hessian_in_chunks_equals_one_chunk_and_keeps_pruned_weights_still():
    from lthfast.landscape.hessian import model_loss
    from lthfast.models.families import create_model, prunable_names

    model = create_model("resnet8", width=4, seed=0).double()
    names = prunable_names(model)
    params = {n: p.detach() for n, p in model.named_parameters() if n in names}
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 3, 32, 32, generator=g, dtype=torch.float64), torch.randint(0, 10, (12,), generator=g)
    mask = {n: torch.rand(p.shape, generator=g) < 0.5 for n, p in params.items()}
    v = {n: torch.randn(p.shape, generator=g, dtype=torch.float64) for n, p in params.items()}
    whole = hessian_vector_product(model_loss(model, names, x, y, chunk_size=12), params, v, mask)
    chunks = hessian_vector_product(model_loss(model, names, x, y, chunk_size=5), params, v, mask)
    for n in params:
        torch.testing.assert_close(chunks[n], whole[n], rtol=1e-9, atol=1e-12)
        assert torch.all(whole[n][~mask[n]] == 0)
    assert any(torch.count_nonzero(whole[n]) > 0 for n in params)
