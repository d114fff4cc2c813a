"""Basin radii and volume against the analytic answers of a quadratic bowl."""
import math

import pytest
import torch

from lthfast.landscape.volume import basin_radii, log_volume, random_directions


def test_radii_of_a_quadratic_bowl_match_the_analytic_ones():
    # loss(theta + r d_i) = 1 + r^2 c_i / 2: exceeds 1 + delta at r = sqrt(2 delta / c_i)
    curvature = torch.tensor([0.5, 2.0, 8.0, 100.0], dtype=torch.float64)
    calls = []

    def losses_at(index, steps):
        calls.append(index.numel())
        return 1 + steps ** 2 * curvature[index] / 2

    radii = basin_radii(losses_at, 4, base_loss=1.0, delta=0.1, bisections=30)
    torch.testing.assert_close(radii, torch.sqrt(0.2 / curvature), rtol=1e-6, atol=0)
    assert max(calls) == 4  # the directions are evaluated together


def test_a_flat_direction_has_infinite_radius():
    radii = basin_radii(lambda index, steps: torch.zeros(index.numel()), 2, 0.0, max_brackets=5)
    assert torch.isinf(radii).all()


def test_log_volume_of_a_ball():
    n, r = 7, 0.3
    exact = n / 2 * math.log(math.pi) - math.lgamma(n / 2 + 1) + n * math.log(r)
    assert log_volume(torch.full((5,), r), n) == pytest.approx(exact)
    # mixed radii: log of the mean of r_i^n
    mixed = log_volume(torch.tensor([0.1, 0.2]), 3)
    assert mixed == pytest.approx(math.log(4 / 3 * math.pi * (0.1 ** 3 + 0.2 ** 3) / 2))


def test_directions_stay_in_the_unpruned_weights_at_theta_scale():
    g = torch.Generator().manual_seed(0)
    theta = {"a": torch.randn(4, 3, generator=g), "b": torch.randn(5, generator=g)}
    mask = {"a": torch.rand(4, 3, generator=g) < 0.5, "b": torch.ones(5, dtype=torch.bool)}
    d = random_directions(theta, mask, 6, seed=1)
    assert all(torch.all(d[n][:, ~mask[n]] == 0) for n in mask)
    theta_norm = math.sqrt(sum(float(((theta[n] * mask[n]) ** 2).sum()) for n in mask))
    norms = torch.sqrt(sum((d[n].reshape(6, -1) ** 2).sum(1) for n in mask))
    torch.testing.assert_close(norms, torch.full((6,), theta_norm), rtol=1e-5, atol=0)
    f = random_directions(theta, mask, 2, seed=1, filter_normalized=True)
    rows = (theta["a"] * mask["a"]).norm(dim=1)
    torch.testing.assert_close(f["a"].norm(dim=2), rows.expand(2, 4), rtol=1e-5, atol=1e-6)
    assert torch.equal(random_directions(theta, mask, 6, seed=1)["a"], d["a"])  # seeded


def test_radii_on_a_real_model_bracket_the_loss_level():
    from lthfast.data.synthetic import synthetic
    from lthfast.landscape.points import EvalSettings, along_directions
    from lthfast.landscape.volume import model_losses_at
    from lthfast.models.families import create_model, prunable_names

    data = synthetic(64, 64)
    model = create_model("resnet8", width=4, seed=0)
    theta = model.state_dict()
    mask = {n: torch.ones_like(theta[n], dtype=torch.bool) for n in prunable_names(model)}
    directions = random_directions(theta, mask, 3, seed=0)
    settings = EvalSettings(bn="interpolate")
    losses_at = model_losses_at(theta, directions, "resnet8", 4, data, data.test_x, data.test_y, settings)
    base = float(losses_at(torch.tensor([0]), torch.tensor([0.0]))[0])
    radii = basin_radii(losses_at, 3, base, delta=0.1, initial=0.05, bisections=4)
    assert torch.isfinite(radii).all() and (radii > 0).all()
    above = along_directions(theta, {n: d for n, d in directions.items()}, radii * 1.1, "resnet8", 4, data,
                             data.test_x, data.test_y, settings)["loss"]
    assert all(loss > base + 0.1 for loss in above)  # past the radius (by > the bracket width): above the level
