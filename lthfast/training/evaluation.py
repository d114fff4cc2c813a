"""Evaluation of trained or pruned networks: loss and accuracy on a fixed sample, and
BatchNorm statistics recomputed from training batches.

Both take the numeric precision ("fp32" or "bf16" autocast), not a whole training config:
IMP, the analyses and the trainer call them alike. Both normalize with the data set's own
statistics (recompute_batchnorm through its EpochPlan batches, evaluate through its mean and
std arguments; tests/test_registries.py::test_a_data_set_with_other_statistics_trains_and_interpolates).
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F

from lthfast.data.dataset import MEAN, STD, Dataset, EpochPlan, iterate_eval


def autocast(precision: str, device: torch.device):
    """bfloat16 autocast for precision "bf16", nothing for "fp32"."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, precision: str, batch_size: int,
             channels_last: bool, mean: tuple = MEAN, std: tuple = STD) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `model` (in eval mode) on uint8 images x [N, 3, H, W]
    and int64 labels y [N], normalized with the data set's per-channel mean and std (Dataset.mean,
    .std: every caller in the package passes its data's; the defaults are CIFAR-10's);
    (nan-free) zeros for N = 0."""
    device = x.device
    was_training = model.training
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # (loss, correct): one sync at the end
    with autocast(precision, device):
        for xb, yb in iterate_eval(x, y, batch_size, channels_last, mean, std):
            logits = model(xb).float()
            sums[0] += F.cross_entropy(logits, yb, reduction="sum").double()
            sums[1] += (logits.argmax(1) == yb).sum()
    model.train(was_training)
    loss_sum, correct = sums.tolist()
    n = max(1, x.shape[0])
    return loss_sum / n, correct / n


@torch.no_grad()
def recompute_batchnorm(model, data: Dataset, num_batches: int, batch_size: int, seed: int,
                        channels_last: bool, precision: str = "fp32", augment: bool = True) -> None:
    """Reset BatchNorm running statistics and re-estimate them as an exact average over a
    fixed set of training batches, augmented as in training (`augment`, the run's
    TrainConfig.augment) (docs/protocol.md: pruned or interpolated weights make
    stored statistics stale). `model` may be a list of models: each batch is then drawn
    once and fed to all of them. `data` must be on the models' device."""
    models = model if isinstance(model, (list, tuple)) else [model]
    device = data.train_x.device
    bns = [m for net in models for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved_momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: every batch counts equally
    was_training = [net.training for net in models]
    for net in models:
        net.train()
    plan = EpochPlan(data.num_train, batch_size, seed, 0, device, augment)
    with autocast(precision, device):
        for index in range(min(num_batches, plan.num_batches)):
            x, _ = plan.batch(data, index, channels_last)
            for net in models:
                net(x)
    for bn, momentum in zip(bns, saved_momenta):
        bn.momentum = momentum
    for net, training in zip(models, was_training):
        net.train(training)


def evaluate_weights(train, weights: dict, data: Dataset, sets: dict, bn_batches: int, recompute_bn: bool) -> dict:
    """{SPLIT_loss, SPLIT_accuracy} of the network `weights` of `train`'s (a TrainConfig) model
    on each fixed sample of `sets` ({split: (x uint8 (N, 3, H, W), y int64 (N,))}), with its
    stored BatchNorm statistics or with statistics recomputed from `bn_batches` training
    batches (recompute_batchnorm, seeded by train.seed): how IMP evaluates a level's baseline
    and solution (lthfast.imp.driver) and the baselines on one parent (lthfast.landscape.oneparent).
    Losses in nats (mean cross-entropy), accuracies in [0, 1]."""
    from lthfast.foundations.hardware import resolve_device
    from lthfast.training.network import build_model, use_channels_last
    device = resolve_device(train.device)
    channels_last = use_channels_last(train, device)
    model = build_model(train, device, weights)
    if recompute_bn:
        recompute_batchnorm(model, data.to(device), bn_batches, train.batch_size, seed=train.seed,
                            channels_last=channels_last, precision=train.precision, augment=train.augment)
    result = {}
    for split, (x, y) in sets.items():
        loss, accuracy = evaluate(model, x.to(device), y.to(device), train.precision, train.eval_batch_size,
                                  channels_last, data.mean, data.std)
        result[f"{split}_loss"], result[f"{split}_accuracy"] = loss, accuracy
    return result
