"""SGD over a model's flat parameter buffer with a keep-mask: one fused kernel a step.

The model's parameters and gradients are re-homed into one flat buffer each
(lthfast.flat), so that ops.masked_sgd_ updates the whole model in a single pass:
torch.optim.SGD's update, then the pruned weights and their momentum set to exactly zero.
"""
from __future__ import annotations

import torch

from lthfast import ops
from lthfast.flat import FlatParameters


class MaskedSGD:
    """SGD with momentum, weight decay and optional Nesterov (dampening 0, like open_lth's
    recipe) on `model`, whose pruned entries (False in `mask`) stay exactly zero.

    Build it after the model has its weights, device and memory layout: it takes over the
    parameters' storage and zeroes the pruned entries at once.
    """

    def __init__(self, model: torch.nn.Module, mask: dict[str, torch.Tensor] | None, momentum: float,
                 weight_decay: float, nesterov: bool = False, backend: str = "auto"):
        self.flat = FlatParameters(model)
        self.keep = self.flat.flat_mask(mask)
        self.momentum_buffer = torch.zeros_like(self.flat.params)  # zero: the first-step rule
        self.momentum, self.weight_decay, self.nesterov = momentum, weight_decay, nesterov
        self.backend = backend
        ops.apply_mask_(self.flat.params, self.keep, backend=backend)

    def zero_grad(self) -> None:
        self.flat.zero_grad()

    def step(self, lr: float) -> None:
        self.flat.check_gradients()
        ops.masked_sgd_(self.flat.params, self.flat.grads, self.momentum_buffer, self.keep, lr,
                        self.momentum, self.weight_decay, self.nesterov, backend=self.backend)

    def state_dict(self) -> dict:
        # Per parameter in its logical (contiguous) layout: a resume may use another memory
        # layout (channels_last is not part of a run's identity), so raw flat order won't do.
        return {"momentum": {n: self.flat.view(self.momentum_buffer, n).contiguous() for n in self.flat.names}}

    def load_state_dict(self, state: dict) -> None:
        if "momentum" in state:
            for name in self.flat.names:
                self.flat.view(self.momentum_buffer, name).copy_(state["momentum"][name])
            return
        # A torch.optim.SGD state dict (checkpoints of lthfast <= 0.1): buffers by parameter index.
        buffers = state.get("state", {})
        for index, name in enumerate(self.flat.names):
            buffer = buffers.get(index, {}).get("momentum_buffer")
            view = self.flat.view(self.momentum_buffer, name)
            view.copy_(buffer) if buffer is not None else view.zero_()
