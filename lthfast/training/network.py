"""One network as training holds it: its model in the training's memory layout, its
learning rate at an iteration, its mask placed beside its weights, and CPU copies of its
state for saving. The trainer, the stack's members, IMP, the calibration and the analyses
all build and schedule a network through these (tests/test_trainer.py, tests/test_stack.py).
"""
from __future__ import annotations

import torch

from lthfast.config.runs import TrainConfig
from lthfast.foundations.errors import LthError
from lthfast.foundations.hardware import channels_last as channels_last_on
from lthfast.models.families import create_model, default_width
from lthfast.pruning.masks import Mask


def use_channels_last(config: TrainConfig, device: torch.device) -> bool:
    return channels_last_on(default_width(config.model, config.width), device, config.channels_last)


def build_model(config: TrainConfig, device: torch.device, weights: dict | None = None) -> torch.nn.Module:
    """The config's model on `device`, in the layout training uses, with `weights` if given
    (else initialized from config.seed); its output size is the data set's class count."""
    model = create_model(config.model, config.width, seed=config.seed,
                         num_classes=config.num_classes)
    if weights is not None:
        model.load_state_dict(weights)
    model.to(device)
    if use_channels_last(config, device):
        model.to(memory_format=torch.channels_last)
    return model


def learning_rate(config: TrainConfig, iteration: int, iters_per_epoch: int) -> float:
    """Step schedule (x gamma at each milestone epoch) with optional linear warmup."""
    lr = config.lr
    for milestone in config.lr_milestones:
        if iteration >= milestone * iters_per_epoch:
            lr *= config.gamma
    if config.warmup_iters and iteration < config.warmup_iters:
        lr *= (iteration + 1) / config.warmup_iters
    return lr


def place_mask(model: torch.nn.Module, mask: Mask | None) -> Mask:
    """Check `mask` against the model and give each entry its weight's device and memory
    layout (channels_last or not), so that kernels run over both storages in step."""
    if not mask:
        return {}
    params = dict(model.named_parameters())
    for name, m in mask.items():
        if name not in params:
            raise LthError(f"mask names {name!r}, which the model does not have")
        if tuple(m.shape) != tuple(params[name].shape) or m.dtype != torch.bool:
            raise LthError(f"mask for {name} must be bool of shape {tuple(params[name].shape)}, "
                           f"got {m.dtype} {tuple(m.shape)}")
    return {name: torch.empty_like(params[name], dtype=torch.bool).copy_(m) for name, m in mask.items()}


def cpu_copies(state: dict) -> dict:
    """Contiguous CPU copies of a state dict's tensors: parameters are views of a stack's
    flat buffer, which torch.save would otherwise write whole with every tensor."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}
