"""Argument checks shared by the ops on flat buffers (masked_sgd_, magnitude_prune).

They read only metadata (sizes, dtypes, devices, strides), never values, so that
torch.compile traces them without a graph break; checks of values run inside the ops.
"""
from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float32, torch.bfloat16)  # what the SGD and pruning kernels store


def check_flat(mask: torch.Tensor, **tensors: torch.Tensor) -> None:
    """Flat-buffer arguments: one size, one device, contiguous, a bool mask. ValueError otherwise."""
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got {mask.dtype}")
    for name, t in {**tensors, "mask": mask}.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a tensor, got {type(t).__name__}")
        if t.numel() != mask.numel():
            raise ValueError(f"{name} has {t.numel()} entries, the mask {mask.numel()}: buffers differ in size")
        if t.device != mask.device:
            raise ValueError(f"{name} is on {t.device}, the mask on {mask.device}: mixed devices")
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous")


def flat(t: torch.Tensor) -> torch.Tensor:
    """A contiguous tensor as 1-D (itself when already 1-D)."""
    return t if t.dim() == 1 else t.view(-1)
