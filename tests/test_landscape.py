"""Stacked models and batched interpolation against one-network-at-a-time evaluation."""
import pytest
import torch

from lthfast.config.runs import TrainConfig
from lthfast.data.synthetic import synthetic
from lthfast.landscape.points import EvalSettings, barrier, interpolate
from lthfast.models.families import create_model
from lthfast.models.stacked import load_points, split_logits, stack_model
from lthfast.training.evaluation import evaluate, recompute_batchnorm

CPU = torch.device("cpu")


@pytest.mark.parametrize("name,width", [("resnet8", None), ("vgg11", 8)])
@pytest.mark.parametrize("train_mode", [False, True])
def test_stacked_model_equals_its_networks_one_by_one(name, width, train_mode):
    networks = [create_model(name, width, seed=s).train(train_mode) for s in range(3)]
    stacked = stack_model(networks[0], 3).train(train_mode)
    states = [n.state_dict() for n in networks]
    load_points(stacked, {k: torch.stack([s[k] for s in states]) for k in states[0]})
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        out = split_logits(stacked(x), 3)
        for i, network in enumerate(networks):
            torch.testing.assert_close(out[:, i], network(x), rtol=1e-4, atol=1e-5)


def pointwise_curve(theta_a, theta_b, alphas, data, bn):
    config = TrainConfig(model="resnet8")
    losses, accuracies = [], []
    for a in alphas:
        model = create_model("resnet8")
        model.load_state_dict({n: torch.lerp(theta_a[n], theta_b[n], a) if theta_a[n].is_floating_point()
                               else theta_a[n] for n in theta_a})
        model.to(memory_format=torch.channels_last)
        if bn == "recompute":
            recompute_batchnorm(model, data, 2, 64, 0, True, "fp32")
        loss, accuracy = evaluate(model, data.test_x, data.test_y, "fp32", config.eval_batch_size, True)
        losses.append(loss)
        accuracies.append(accuracy)
    return losses, accuracies


@pytest.mark.parametrize("bn", ["recompute", "interpolate"])
@pytest.mark.parametrize("chunk", [None, 2])
@pytest.mark.parametrize("stack", ["grouped", "loop"])
def test_batched_curve_equals_point_by_point_evaluation(bn, chunk, stack):
    data = synthetic(256, 200)
    theta_a = create_model("resnet8", seed=0).state_dict()
    theta_b = create_model("resnet8", seed=1).state_dict()
    alphas = [0.0, 0.3, 0.5, 0.8, 1.0]
    settings = EvalSettings(bn=bn, bn_batches=2, bn_batch_size=64, batch_size=64, chunk=chunk, stack=stack)
    curve = interpolate(theta_a, theta_b, alphas, "resnet8", None, data, data.test_x, data.test_y, settings)
    losses, accuracies = pointwise_curve(theta_a, theta_b, alphas, data, bn)
    assert curve["alphas"] == pytest.approx(alphas)
    torch.testing.assert_close(torch.tensor(curve["loss"]), torch.tensor(losses), rtol=1e-5, atol=1e-5)
    assert curve["accuracy"] == pytest.approx(accuracies, abs=1 / 200 + 1e-9)  # a near-tie may flip one image


def test_barrier_between_a_solution_and_itself_is_zero():
    data = synthetic(256, 100)
    theta = create_model("resnet8", seed=0).state_dict()
    alphas = [i / 4 for i in range(5)]
    curve = interpolate(theta, theta, alphas, "resnet8", None, data, data.test_x, data.test_y,
                        EvalSettings(bn_batches=2, bn_batch_size=64))
    assert barrier(curve["loss"], alphas) == pytest.approx(0, abs=1e-6)


def test_barrier_definition():
    assert barrier([1.0, 3.0, 2.0], [0.0, 0.5, 1.0]) == pytest.approx(1.5)
    assert barrier([1.0, 1.0, 2.0], [0.0, 0.5, 1.0]) == pytest.approx(0.0)  # below the chord: the ends count
    with pytest.raises(ValueError, match="a = 0 to a = 1"):
        barrier([1.0, 2.0], [0.0, 0.5])
    with pytest.raises(ValueError, match="bn must be one of"):
        EvalSettings(bn="stored-ish")
    with pytest.raises(ValueError, match="stack must be one of"):
        EvalSettings(stack="vmap")


@pytest.mark.parametrize("stack", ["grouped", "loop"])
def test_points_along_directions_equal_point_by_point(stack):
    from lthfast.landscape.points import along_directions

    data = synthetic(256, 100)
    theta = create_model("resnet8", seed=0).state_dict()
    g = torch.Generator().manual_seed(0)
    names = ["conv.weight", "fc.weight"]
    directions = {n: torch.randn((3, *theta[n].shape), generator=g) for n in names}
    steps = [0.0, 0.1, 0.5]
    settings = EvalSettings(bn="interpolate", stack=stack)  # stored statistics: theta's
    curve = along_directions(theta, directions, steps, "resnet8", None, data, data.test_x, data.test_y, settings)
    config = TrainConfig(model="resnet8")
    for k, t in enumerate(steps):
        model = create_model("resnet8")
        model.load_state_dict({n: v + t * directions[n][k] if n in directions else v for n, v in theta.items()})
        model.to(memory_format=torch.channels_last)
        loss, _ = evaluate(model, data.test_x, data.test_y, "fp32", config.eval_batch_size, True)
        assert curve["loss"][k] == pytest.approx(loss, rel=1e-5, abs=1e-5)
