import pytest
import torch

from lthfast.foundations.errors import LthError
from lthfast.models.families import create_model, parse_model_name, prunable_names


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_match_open_lth():
    assert count(create_model("resnet20")) == 272_474
    # open_lth's VGG-16 has 14.73M with conv biases; ours drops them (BN follows every conv).
    assert 14_700_000 < count(create_model("vgg16")) < 14_750_000


@pytest.mark.parametrize("name", ["resnet20", "resnet8", "vgg11", "vgg16"])
def test_forward_shape_in_both_layouts(name):
    model = create_model(name, seed=0).eval()
    x = torch.randn(3, 3, 32, 32)
    out = model(x)
    out_cl = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert out.shape == (3, 10)
    torch.testing.assert_close(out, out_cl, rtol=1e-4, atol=1e-4)


def test_width_option_scales_channels():
    assert create_model("resnet20", width=32).conv.out_channels == 32
    assert create_model("vgg11", width=32).features[0].out_channels == 32


def test_seeded_init_is_reproducible_and_seed_dependent():
    a, b, c = (create_model("resnet20", seed=s).state_dict() for s in (1, 1, 2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv.weight"], c["conv.weight"])


def test_init_is_kaiming_normal_and_bn_uniform():
    model = create_model("vgg16", seed=0)
    w = model.features[3].weight  # 64 -> 64 conv, fan_in 576
    assert abs(w.std().item() - (2 / 576) ** 0.5) < 0.002
    bn = model.features[1].weight
    assert 0 <= bn.min() and bn.max() < 1


def test_prunable_weights():
    resnet = prunable_names(create_model("resnet20"))
    assert "fc.weight" in resnet and "conv.weight" in resnet
    assert any("shortcut.0.weight" in n for n in resnet)
    assert not any("bn" in n or n.endswith("bias") for n in resnet)
    vgg = prunable_names(create_model("vgg16"))
    assert "fc.weight" not in vgg and len(vgg) == 13


@pytest.mark.parametrize("name,fragment", [("resnet21", r"6n\+2"), ("vgg15", "11, 13, 16, 19"),
                                           ("lenet", "known models: resnet20")])
def test_bad_model_names(name, fragment):
    with pytest.raises(LthError, match=fragment):
        parse_model_name(name)


def test_a_factory_name_is_a_family_of_the_registry():
    """examples/custom_cnn.py (the README's): its factory, PRUNABLE and REWIND_ITER are read
    through the same lookup as resnet20's; the unknown-name error names the factory form."""
    from pathlib import Path

    from lthfast.models.registry import lookup

    name = f"{Path(__file__).resolve().parents[1] / 'examples' / 'custom_cnn.py'}:build"
    entry, depth = lookup(name)
    assert (entry.factory, entry.rewind_iter, depth) == (True, 1, 0)
    model = create_model(name, seed=0, num_classes=100)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    assert prunable_names(model) == ["features.0.weight", "features.4.weight", "features.8.weight"]
    with pytest.raises(LthError, match=r"\), or package\.module:factory or path/to/file\.py:factory"):
        parse_model_name("lenet")
