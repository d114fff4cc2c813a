"""Masks and global pruning (docs/protocol.md): one threshold over all prunable weights.

A mask maps each prunable weight's name to a bool tensor of its shape (True = kept).
Pruning works on the concatenation of all prunable weights in name order, so
"global" is literal: the `count` entries removed are the smallest (or largest, or
random) among everything the mask still keeps. Ties are broken by flat index, so
the result is unique and every backend can reproduce it exactly.
"""
from __future__ import annotations

import numpy as np
import torch

from lthfast import ops
from lthfast.foundations.errors import LthError

Mask = dict  # parameter name -> bool tensor of the parameter's shape (True = kept)


def dense_mask(weights: dict, names: list[str]) -> Mask:
    return {n: torch.ones_like(weights[n], dtype=torch.bool) for n in names}


def kept_count(mask: Mask) -> int:
    return sum(int(torch.count_nonzero(m)) for m in mask.values())


def total_count(mask: Mask) -> int:
    return sum(m.numel() for m in mask.values())


def density(mask: Mask) -> float:
    return kept_count(mask) / max(1, total_count(mask))


def layer_densities(mask: Mask) -> dict[str, float]:
    return {n: float(m.float().mean()) if m.numel() else 0.0 for n, m in mask.items()}


def collapsed_layers(mask: Mask) -> list[str]:
    """Layers left with no weight at all (global pruning of large weights can cause it)."""
    return [n for n, m in mask.items() if m.numel() and not m.any()]


def target_kept(total: int, fraction: float, level: int) -> int:
    """Weights kept at `level` when each level removes `fraction` of the remaining ones.

    Computed from the total, not level by level, so that the density after level k is
    (1 - fraction)^k to within one weight however many levels came before.
    """
    return round(total * (1.0 - fraction) ** level)


def check_levels(total: int, fraction: float, levels: int) -> None:
    """A one-line LthError, before any training, if `levels` levels of pruning `fraction`
    would leave no weight of `total`."""
    if target_kept(total, fraction, levels) < 1:
        last = next(k for k in range(levels + 1) if target_kept(total, fraction, k) < 1)
        raise LthError(f"--levels {levels} with --prune-fraction {fraction} leaves no weight of the {total:,} "
                       f"prunable ones from level {last} on; use at most {last - 1} levels")


def _flatten(mask: Mask, weights: dict | None = None):
    names = list(mask)
    flat_mask = torch.cat([mask[n].reshape(-1) for n in names]) if names else torch.zeros(0, dtype=torch.bool)
    flat_w = None
    if weights is not None:
        flat_w = torch.cat([weights[n].detach().reshape(-1).float().cpu() for n in names]) if names \
            else torch.zeros(0)
    return names, flat_mask.cpu(), flat_w


def _unflatten(names: list[str], flat_mask: torch.Tensor, like: Mask) -> Mask:
    out, offset = {}, 0
    for n in names:
        size = like[n].numel()
        out[n] = flat_mask[offset:offset + size].reshape(like[n].shape).clone()
        offset += size
    return out


def prune_magnitude(weights: dict, mask: Mask, count: int, largest: bool = False,
                    backend: str = "auto") -> Mask:
    """Remove `count` more weights, the globally smallest (largest=False) or largest, ties
    by position in the flat order (ops.magnitude_prune: the same mask on every backend)."""
    names, flat_mask, flat_w = _flatten(mask, weights)
    _check_count(count, int(torch.count_nonzero(flat_mask)))
    return _unflatten(names, ops.magnitude_prune(flat_w, flat_mask, count, largest, backend=backend), mask)


def prune_random(mask: Mask, count: int, seed: int) -> Mask:
    """Remove `count` kept weights chosen uniformly at random (seeded)."""
    names, flat_mask, _ = _flatten(mask)
    kept_index = torch.nonzero(flat_mask).flatten()
    _check_count(count, kept_index.numel())
    g = torch.Generator().manual_seed(seed)
    chosen = kept_index[torch.randperm(kept_index.numel(), generator=g)[:count]]
    flat_mask = flat_mask.clone()
    flat_mask[chosen] = False
    return _unflatten(names, flat_mask, mask)


def _check_count(count: int, kept: int) -> None:
    if count < 0:
        raise LthError(f"cannot prune a negative number of weights ({count})")
    if count > 0 and count >= kept:
        raise LthError(f"pruning {count} of the {kept} remaining weights would leave no weight")


def apply_mask_to_weights(weights: dict, mask: Mask) -> dict:
    """A copy of `weights` with the pruned entries set to exactly zero."""
    out = dict(weights)
    for n, m in mask.items():
        out[n] = torch.where(m.to(weights[n].device), weights[n], torch.zeros_like(weights[n]))
    return out


# ----------------------------------------------------------------------------- storage

def pack(mask: Mask) -> dict:
    """Bit-packed form (one bit a weight) with the shapes needed to unpack it."""
    return {n: {"shape": list(m.shape),
                "bits": torch.from_numpy(np.packbits(m.reshape(-1).cpu().numpy().astype(np.uint8)))}
            for n, m in mask.items()}


def unpack(packed: dict) -> Mask:
    out = {}
    for n, entry in packed.items():
        shape = tuple(entry["shape"])
        size = int(np.prod(shape)) if shape else 1
        bits = np.unpackbits(entry["bits"].numpy())[:size]
        out[n] = torch.from_numpy(bits.astype(bool)).reshape(shape)
    return out
