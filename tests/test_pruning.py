import pytest
import torch

from lthfast.foundations.errors import LthError
from lthfast.models.families import create_model, prunable_names
from lthfast.pruning.masks import (
    apply_mask_to_weights,
    collapsed_layers,
    dense_mask,
    density,
    kept_count,
    layer_densities,
    pack,
    prune_magnitude,
    prune_random,
    target_kept,
    total_count,
    unpack,
)


def resnet_weights(seed=0):
    model = create_model("resnet20", seed=seed)
    return dict(model.state_dict()), prunable_names(model)


def test_iterative_density_is_0_8_to_the_k_within_one_weight():
    weights, names = resnet_weights()
    mask = dense_mask(weights, names)
    total = total_count(mask)
    for level in range(1, 13):
        count = kept_count(mask) - target_kept(total, 0.2, level)
        new = prune_magnitude(weights, mask, count)
        assert all(not (new[n] & ~mask[n]).any() for n in names)  # masks only shrink
        mask = new
        assert abs(kept_count(mask) - total * 0.8 ** level) <= 1


def test_prune_smallest_and_largest_remove_the_right_magnitudes():
    weights, names = resnet_weights()
    mask = dense_mask(weights, names)
    count = total_count(mask) // 5
    small = prune_magnitude(weights, mask, count)
    large = prune_magnitude(weights, mask, count, largest=True)
    removed_small = torch.cat([weights[n][~small[n]].abs() for n in names])
    kept_small = torch.cat([weights[n][small[n]].abs() for n in names])
    assert removed_small.max() <= kept_small.min()
    removed_large = torch.cat([weights[n][~large[n]].abs() for n in names])
    kept_large = torch.cat([weights[n][large[n]].abs() for n in names])
    assert removed_large.min() >= kept_large.max()
    assert kept_count(small) == kept_count(large) == total_count(mask) - count


def test_random_prune_is_seeded_and_exact():
    weights, names = resnet_weights()
    mask = dense_mask(weights, names)
    a, b, c = prune_random(mask, 1000, seed=1), prune_random(mask, 1000, seed=1), prune_random(mask, 1000, seed=2)
    assert all(torch.equal(a[n], b[n]) for n in names)
    assert not all(torch.equal(a[n], c[n]) for n in names)
    assert kept_count(a) == total_count(mask) - 1000


def test_pruning_everything_is_an_error():
    weights, names = resnet_weights()
    mask = dense_mask(weights, names)
    with pytest.raises(LthError, match="would leave no weight"):
        prune_magnitude(weights, mask, total_count(mask))
    with pytest.raises(LthError, match="would leave no weight"):
        prune_random(mask, total_count(mask) + 5, seed=0)


def test_layer_collapse_is_flagged():
    mask = {"a": torch.tensor([True, False]), "b": torch.zeros(3, dtype=torch.bool)}
    assert collapsed_layers(mask) == ["b"]
    assert layer_densities(mask) == {"a": 0.5, "b": 0.0}
    assert density(mask) == pytest.approx(0.2)


def test_pack_unpack_round_trip_and_size():
    weights, names = resnet_weights()
    mask = prune_random(dense_mask(weights, names), 12345, seed=0)
    packed = pack(mask)
    assert sum(e["bits"].numel() for e in packed.values()) <= total_count(mask) // 8 + len(names)
    back = unpack(packed)
    assert all(torch.equal(back[n], mask[n]) for n in names)


def test_apply_mask_to_weights_zeroes_exactly_the_pruned_entries():
    weights, names = resnet_weights()
    mask = prune_magnitude(weights, dense_mask(weights, names), 5000)
    masked = apply_mask_to_weights(weights, mask)
    for n in names:
        assert torch.equal(masked[n][~mask[n]], torch.zeros(int((~mask[n]).sum())))
        assert torch.equal(masked[n][mask[n]], weights[n][mask[n]])
