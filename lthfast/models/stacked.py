"""K networks of one architecture as one module: channels times K, grouped convolutions.

`stack_model(model, k)` rebuilds a model so that every layer holds K independent copies:
a convolution with C_in -> C_out channels becomes one with K*C_in -> K*C_out channels and
groups=K (the first convolution reads the shared image, so it only widens its output),
BatchNorm over C channels becomes BatchNorm over K*C (statistics stay per network and
channel), and a linear layer becomes a batched matmul. The model's own forward code runs
unchanged on the wider tensors, so one pass over a batch evaluates (or trains) all K
networks, and its output [B, K * classes] splits into K logits.

Parameter k of the stacked model holds network k's tensors in its k-th slice, so a stack
of parameter points [K, *shape] loads with a reshape (a view, no copy).

Training K networks this way (lthfast.training.engines, "grouped"): each network reads its
own images, so the first convolution is grouped too (stack_model(..., shared_input=False):
input [B, K * 3, H, W]). The K networks stay K plain models whose parameters are views of
a stack's flat buffer; each step the stacked model runs on `member_parameters` (the
members' tensors stacked: autograd hands each member its part of the gradient) through
torch.func.functional_call, and `share_batchnorm` makes each member's BatchNorm running
statistics views of the stacked model's, so that both update the same numbers.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

IMAGE_CHANNELS = 3


class StackedLinear(nn.Module):
    """K independent linear layers on [B, K * in] -> [B, K * out]."""

    def __init__(self, k: int, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.k, self.in_features, self.out_features = k, in_features, out_features
        self.weight = nn.Parameter(torch.empty(k, out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(k, out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], self.k, self.in_features)
        y = torch.einsum("bki,koi->bko", x, self.weight)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(x.shape[0], self.k * self.out_features)


def _stacked_layer(layer: nn.Module, k: int, shared_input: bool) -> nn.Module | None:
    """The layer for k networks; shared_input: a convolution that reads one image for all."""
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            raise ValueError("stacking grouped convolutions is not supported")
        return nn.Conv2d(layer.in_channels * (1 if shared_input else k), layer.out_channels * k,
                         layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                         groups=1 if shared_input else k, bias=layer.bias is not None)
    if isinstance(layer, nn.BatchNorm2d):
        return nn.BatchNorm2d(layer.num_features * k, layer.eps, layer.momentum, layer.affine,
                              layer.track_running_stats)
    if isinstance(layer, nn.Linear):
        return StackedLinear(k, layer.in_features, layer.out_features, layer.bias is not None)
    if next(layer.parameters(recurse=False), None) is not None:
        raise ValueError(f"cannot stack a {type(layer).__name__} with parameters")
    return None


def stack_model(model: nn.Module, k: int, shared_input: bool = True) -> nn.Module:
    """A module that runs `k` networks of `model`'s architecture at once (weights unset).

    shared_input: the K networks read the same images [B, 3, H, W] (evaluation); False:
    network k reads channels 3k..3k+2 of [B, K * 3, H, W] (training on K batches).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    stacked = copy.deepcopy(model)
    first_conv = shared_input
    for _, parent in list(stacked.named_modules()):
        for name, child in list(parent.named_children()):
            shared = first_conv and isinstance(child, nn.Conv2d) and child.in_channels == IMAGE_CHANNELS
            replacement = _stacked_layer(child, k, shared)
            if isinstance(child, nn.Conv2d):
                first_conv = False
            if replacement is not None:
                setattr(parent, name, replacement)
    stacked.k = k
    return stacked


def load_points(stacked: nn.Module, points: dict[str, torch.Tensor]) -> None:
    """Copy stacked tensors [K, *shape] (parameters and BN buffers) into `stacked`."""
    state = stacked.state_dict()
    with torch.no_grad():
        for name, value in points.items():
            if name.endswith("num_batches_tracked"):
                continue
            state[name].copy_(value.reshape(state[name].shape))


def split_logits(logits: torch.Tensor, k: int) -> torch.Tensor:
    """[B, K * classes] -> [B, K, classes]."""
    return logits.reshape(logits.shape[0], k, -1)


def stack_inputs(images: list[torch.Tensor]) -> torch.Tensor:
    """K batches [B, 3, H, W] (one per network, same B) -> [B, K * 3, H, W], in the first's layout."""
    x = torch.cat(images, dim=1)
    if images[0].is_contiguous(memory_format=torch.channels_last):
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def member_parameters(stacked: nn.Module, members: list[nn.Module], channels_last: bool) -> dict:
    """{name: the stacked model's parameter `name` made of the members' own (a differentiable
    copy: the gradient flows back into each member's parameter, and its .grad)}."""
    shapes = {name: p.shape for name, p in stacked.named_parameters()}
    params = [dict(m.named_parameters()) for m in members]
    out = {}
    for name, shape in shapes.items():
        value = torch.stack([p[name] for p in params]).reshape(shape)
        if channels_last and value.dim() == 4:
            value = value.contiguous(memory_format=torch.channels_last)
        out[name] = value
    return out


def share_batchnorm(stacked: nn.Module, members: list[nn.Module]) -> torch.Tensor:
    """Give the stacked model's BatchNorm layers the members' running statistics and make
    each member's running_mean / running_var a view of its slice of them (a forward of
    either updates the same numbers). Returns the members' num_batches_tracked as one int64
    tensor [K, layers] whose rows the members' counters are views of: a forward of the
    stacked model counts for every member with one `counters.add_(1)`."""
    k = len(members)
    stacked_bns = [m for m in stacked.modules() if isinstance(m, nn.BatchNorm2d)]
    member_bns = [[m for m in net.modules() if isinstance(m, nn.BatchNorm2d)] for net in members]
    if any(len(bns) != len(stacked_bns) for bns in member_bns):
        raise ValueError("the members do not have the stacked model's BatchNorm layers")
    with torch.no_grad():
        counters = torch.stack([torch.stack([bn.num_batches_tracked for bn in bns]) for bns in member_bns])
        for layer, target in enumerate(stacked_bns):
            for stat in ("running_mean", "running_var"):
                joined = torch.cat([getattr(bns[layer], stat) for bns in member_bns])
                setattr(target, stat, joined)
                width = joined.numel() // k
                for i, bns in enumerate(member_bns):
                    setattr(bns[layer], stat, joined[i * width:(i + 1) * width])
            for i, bns in enumerate(member_bns):
                bns[layer].num_batches_tracked = counters[i, layer]
    return counters
