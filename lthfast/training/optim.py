"""SGD over flat parameter buffers with a keep-mask: one fused kernel a step, for one
model or a stack of K models of one architecture.

The models' parameters and gradients are re-homed into flat buffers (lthfast.training.flat): for
K models, row k of [K, row] buffers holds model k's parameters, gradients, momentum and
keep-mask, member-major, so that ops.masked_sgd_ updates the whole stack in a single
pass (with one learning rate per member where they differ): torch.optim.SGD's update,
then the pruned weights and their momentum set to exactly zero.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from lthfast import ops
from lthfast.foundations.hardware import to_device
from lthfast.training.flat import FlatParameters

# Rows of a stack start 64-byte aligned (16 float32), as a buffer of its own would: a member
# then computes exactly as it would alone. The padding is masked (kept at zero).
ROW_ALIGN = 16


class StackedMaskedSGD:
    """SGD with momentum, weight decay and optional Nesterov (dampening 0, like open_lth's
    recipe) on K models of one architecture, whose pruned entries (False in their masks)
    stay exactly zero.

    models: K modules with the same parameter names, shapes and memory layouts, on one
    device, one dtype (float32 or bfloat16). masks: K dicts {name: bool tensor of the
    parameter's shape} (None or {}: all kept). Build it after the models have their weights,
    device and layout: it takes over the parameters' storage and zeroes the pruned entries at
    once. ValueError if the models differ or a mask does not fit.

    Buffers, [K, row] each (row = the parameter count n, rounded up to ROW_ALIGN entries when
    K > 1; the padding is pruned): params, grads, momentum_buffers (the parameters' dtype),
    keeps (bool). flats[k] is model k's FlatParameters over params[k, :n].
    """

    def __init__(self, models: Sequence[torch.nn.Module], masks: Sequence[dict | None], momentum: float,
                 weight_decay: float, nesterov: bool = False, backend: str = "auto"):
        if not models or len(models) != len(masks):
            raise ValueError(f"need one mask per model, got {len(models)} models and {len(masks)} masks")
        first = list(models[0].named_parameters())
        numel = sum(p.numel() for _, p in first)
        row = numel if len(models) == 1 else -(-numel // ROW_ALIGN) * ROW_ALIGN
        like = first[0][1]
        self.momentum, self.weight_decay, self.nesterov, self.backend = momentum, weight_decay, nesterov, backend
        self.params = torch.zeros(len(models), row, dtype=like.dtype, device=like.device)
        self.grads = torch.zeros_like(self.params)
        self.momentum_buffers = torch.zeros_like(self.params)  # zero: the first-step rule
        self.keeps = torch.zeros(len(models), row, dtype=torch.bool, device=like.device)
        self.flats = []
        for k, (model, mask) in enumerate(zip(models, masks)):
            self._check_like(first, model)
            self.flats.append(FlatParameters(model, self.params[k, :numel], self.grads[k, :numel]))
            self.keeps[k, :numel] = self.flats[k].flat_mask(mask)
        self.numel = numel
        self._lr_values, self._lr_tensor = None, None
        ops.apply_mask_(self.params.view(-1), self.keeps.view(-1), backend=backend)

    @staticmethod
    def _check_like(first, model) -> None:
        named = list(model.named_parameters())
        if [(n, p.shape, p.stride()) for n, p in named] != [(n, p.shape, p.stride()) for n, p in first]:
            raise ValueError("the models of a stack must have the same parameters, shapes and memory layouts")

    @property
    def k(self) -> int:
        return self.params.shape[0]

    def zero_grad(self) -> None:
        self.grads.zero_()

    def member_lr(self, lrs: Sequence[float]):
        """The lr argument of masked_sgd_: a float when all members share it, else a float32
        tensor [K] on the device (rebuilt only when the rates change)."""
        lrs = tuple(float(lr) for lr in lrs)
        if len(lrs) != self.k:
            raise ValueError(f"need {self.k} learning rates, got {len(lrs)}")
        if not all(math.isfinite(lr) and lr >= 0 for lr in lrs):  # checked here, on the host: the op need not
            raise ValueError(f"learning rates must be finite and non-negative, got {lrs}")
        if all(lr == lrs[0] for lr in lrs):
            return lrs[0]
        if lrs != self._lr_values:
            self._lr_tensor = to_device(torch.tensor(lrs, dtype=torch.float32), self.params.device)
            self._lr_values = lrs
        return self._lr_tensor

    def step(self, lr: float | Sequence[float]) -> None:
        """One masked SGD step of every member: lr is one rate for all, or K rates."""
        for flat in self.flats:
            flat.check_gradients()
        rate = self.member_lr([lr] * self.k if isinstance(lr, (int, float)) else lr)
        ops.masked_sgd_(self.params.view(-1), self.grads.view(-1), self.momentum_buffers.view(-1),
                        self.keeps.view(-1), rate, self.momentum, self.weight_decay, self.nesterov,
                        backend=self.backend, lr_checked=True)

    def member_state_dict(self, k: int) -> dict:
        """Member k's momentum per parameter, as copies in logical (contiguous) layout: a resume
        may use another memory layout, and a view would drag the whole stack's buffer along."""
        flat = self.flats[k]
        return {"momentum": {n: flat.view(self.momentum_buffers[k, :self.numel], n).clone(
            memory_format=torch.contiguous_format) for n in flat.names}}

    def load_member_state_dict(self, k: int, state: dict) -> None:
        flat, buffer = self.flats[k], self.momentum_buffers[k, :self.numel]
        if "momentum" in state:
            for name in flat.names:
                flat.view(buffer, name).copy_(state["momentum"][name])
            return
        # A torch.optim.SGD state dict (checkpoints of lthfast <= 0.1): buffers by parameter index.
        buffers = state.get("state", {})
        for index, name in enumerate(flat.names):
            saved = buffers.get(index, {}).get("momentum_buffer")
            view = flat.view(buffer, name)
            view.copy_(saved) if saved is not None else view.zero_()

    def subset(self, members: Sequence[int], models: Sequence[torch.nn.Module]) -> "StackedMaskedSGD":
        """A stack of the given members (row indices) only, with their weights, momentum and
        masks; `models` are those members' models, re-homed into the new, smaller buffers."""
        new = object.__new__(StackedMaskedSGD)
        new.momentum, new.weight_decay, new.nesterov = self.momentum, self.weight_decay, self.nesterov
        new.backend, new.numel = self.backend, self.numel
        index = torch.tensor(list(members), device=self.params.device)
        new.params = self.params.index_select(0, index)
        new.grads = torch.zeros_like(new.params)
        new.momentum_buffers = self.momentum_buffers.index_select(0, index)
        new.keeps = self.keeps.index_select(0, index)
        new.flats = [FlatParameters(model, new.params[k, :self.numel], new.grads[k, :self.numel])
                     for k, model in enumerate(models)]
        new._lr_values, new._lr_tensor = None, None
        return new


class MaskedSGD(StackedMaskedSGD):
    """StackedMaskedSGD of one model: `flat` its FlatParameters, `keep` and
    `momentum_buffer` 1-D views of its row, step(lr) with one float."""

    def __init__(self, model: torch.nn.Module, mask: dict[str, torch.Tensor] | None, momentum: float,
                 weight_decay: float, nesterov: bool = False, backend: str = "auto"):
        super().__init__([model], [mask], momentum, weight_decay, nesterov, backend)

    @property
    def flat(self) -> FlatParameters:
        return self.flats[0]

    @property
    def momentum_buffer(self) -> torch.Tensor:
        return self.momentum_buffers[0]

    @property
    def keep(self) -> torch.Tensor:
        return self.keeps[0]

    def state_dict(self) -> dict:
        return self.member_state_dict(0)

    def load_state_dict(self, state: dict) -> None:
        self.load_member_state_dict(0, state)
