"""Flat parameter storage: a model's parameters and gradients as views into one buffer each.

With every parameter (and its gradient) living in one contiguous buffer, and a keep-mask
laid out the same way, one kernel call updates a whole model (ops.masked_sgd_) instead of
one small launch per tensor. Each view keeps its parameter's strides (channels_last or not),
so the flat buffer holds the parameters exactly as their storages did, one after another.

    flat = FlatParameters(model)            # after model.to(device, memory_format)
    flat.params, flat.grads                  # 1-D tensors of flat.numel entries
    flat.flat_mask({"conv.weight": keep})   # 1-D bool, True for every unpruned entry
    flat.slices["conv.weight"]               # (offset, numel) of a parameter in the buffer

A stack of K models of one architecture (lthfast.training.optim.StackedMaskedSGD) gives each model
one row of a [K, row] buffer (params=P[k], grads=G[k]), so that one kernel call updates
all K models.
"""
from __future__ import annotations

import torch


def _dense_strides(t: torch.Tensor) -> bool:
    return t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))


class FlatParameters:
    """Re-homes `model`'s parameters (and gradients) into one flat buffer each.

    The model must not be moved or re-laid out afterwards (`.to()` would allocate new
    storages and break the views). All parameters must share one dtype and device.

    params, grads: optional 1-D contiguous buffers (e.g. rows of a stack's [K, row]
    buffers) of the parameters' dtype and device, with exactly as many entries as the
    model has parameters, to live in; by default new ones. Called again on a
    model already re-homed, it moves the parameters (their current values) into the new
    buffers. ValueError for mixed dtypes or devices, odd layouts or buffers that do not fit.
    """

    def __init__(self, model: torch.nn.Module, params: torch.Tensor | None = None,
                 grads: torch.Tensor | None = None):
        named = [(n, p) for n, p in model.named_parameters()]
        if not named:
            raise ValueError("model has no parameters")
        dtypes = {p.dtype for _, p in named}
        devices = {p.device for _, p in named}
        if len(dtypes) != 1 or len(devices) != 1:
            raise ValueError(f"flat storage needs one dtype and device, got {dtypes} and {devices}")
        for n, p in named:
            if not _dense_strides(p):
                raise ValueError(f"parameter {n} is neither contiguous nor channels_last")
        self.names = [n for n, _ in named]
        self._params = named
        self.shapes = {n: p.shape for n, p in named}
        self.strides = {n: p.stride() for n, p in named}
        self.slices: dict[str, tuple[int, int]] = {}
        offset = 0
        for n, p in named:
            self.slices[n] = (offset, p.numel())
            offset += p.numel()
        self.numel = offset
        dtype, device = dtypes.pop(), devices.pop()
        if (params is None) != (grads is None):
            raise ValueError("give both params and grads buffers, or neither")
        if params is None:
            params = torch.empty(self.numel, dtype=dtype, device=device)
            grads = torch.zeros(self.numel, dtype=dtype, device=device)
        for what, buffer in (("params", params), ("grads", grads)):
            if buffer.dim() != 1 or buffer.numel() != self.numel or buffer.dtype != dtype \
                    or buffer.device != device or buffer.stride(0) != 1:
                raise ValueError(f"{what} buffer must be 1-D, contiguous, {dtype} on {device} with "
                                 f"{self.numel} entries; got {buffer.dtype} {tuple(buffer.shape)} on {buffer.device}")
        self.params, self.grads = params, grads
        with torch.no_grad():
            for n, p in named:
                view = self.view(self.params, n)
                view.copy_(p)
                p.data = view
                # backward accumulates in place into an existing .grad: into the flat buffer.
                p.grad = self.view(self.grads, n)
        self._grads = [p.grad for _, p in named]

    def view(self, flat: torch.Tensor, name: str) -> torch.Tensor:
        """Parameter `name`'s part of a flat buffer, shaped and strided like the parameter."""
        offset, size = self.slices[name]
        return flat[offset:offset + size].as_strided(self.shapes[name], self.strides[name])

    def flat_mask(self, mask: dict[str, torch.Tensor] | None) -> torch.Tensor:
        """A flat bool keep-mask over all parameters: entries not in `mask` are kept."""
        flat = torch.ones(self.numel, dtype=torch.bool, device=self.params.device)
        for name, keep in (mask or {}).items():
            if name not in self.slices:
                raise ValueError(f"mask names {name!r}, which the model does not have")
            if tuple(keep.shape) != tuple(self.shapes[name]):
                raise ValueError(f"mask for {name} has shape {tuple(keep.shape)}, "
                                 f"the parameter {tuple(self.shapes[name])}")
            self.view(flat, name).copy_(keep)
        return flat

    def zero_grad(self) -> None:
        self.grads.zero_()

    def check_gradients(self) -> None:
        """Raise if a gradient no longer lives in the flat buffer: `model.zero_grad()` (which
        sets .grad to None), `p.grad = ...` or backward(create_graph=True) replace it, and the
        flat update would then silently see zeros. Called every step: an identity check per
        parameter (no tensor made), the addresses compared only when that fails."""
        if all(p.grad is g for (_, p), g in zip(self._params, self._grads)):
            return
        for (name, p), g in zip(self._params, self._grads):
            if p.grad is None or p.grad.data_ptr() != g.data_ptr():
                raise RuntimeError(f"the gradient of {name} left the flat buffer; clear gradients with "
                                   "FlatParameters.zero_grad(), not model.zero_grad()")
        self._grads = [p.grad for _, p in self._params]  # the same memory under new tensor objects
