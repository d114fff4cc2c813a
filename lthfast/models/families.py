"""Models by name: build, initialize, name the prunable weights and count parameters, for
every family of lthfast.models.registry (CIFAR ResNets and VGGs, any family registered, and
factory names `package.module:factory`, lthfast.models.custom).

Models are plain nn.Modules built from a name (`resnet20`, `vgg16`, ...) so that a stacked
(K networks at once) variant can be built from the same plan. Nothing here names a family:
the registry's entry of the name decides the class, the default width and the last layer.

Invariants: create_model's weights are a function of (name, width, seed, num_classes) alone,
whatever else is registered (tests/test_models.py::test_seeded_init_is_reproducible_and_seed_dependent,
tests/test_registries.py::test_a_registration_leaves_with_its_monkeypatch); a factory model's
too: it is built under the seed (tests/test_custom.py::test_a_factory_model_is_seeded_and_names_its_prunable_weights).
"""
from __future__ import annotations

import functools

import torch
from torch import nn

import lthfast.models.custom  # noqa: F401  (resolves factory names)
import lthfast.models.registry as registry
from lthfast.foundations import hardware
from lthfast.foundations.errors import LthError
from lthfast.foundations.hashing import digest
from lthfast.models.registry import (  # noqa: F401
    DEFAULT_REWIND_ITER,
    DEFAULT_WIDTHS,
    NUM_CLASSES,
    ModelFamily,
)
from lthfast.models.resnet import BasicBlock, CifarResNet  # noqa: F401  (registers the family)
from lthfast.models.vgg import VGG_PLANS, CifarVGG  # noqa: F401  (registers the family)


def known_models() -> list[str]:
    """Every registered family's example names (resnet20, ..., vgg19)."""
    return [example for family in registry.FAMILIES.values() for example in family.examples]


def _resolve(name: str, width: int | None) -> tuple[ModelFamily, int]:
    entry, depth = registry.lookup(name)
    if width is not None and (isinstance(width, bool) or not isinstance(width, int) or width < 1):
        raise LthError(f"--width must be a positive integer, got {width!r}")
    return entry, depth


def parse_model_name(name: str, width: int | None = None) -> tuple[str, int]:
    """(family, depth) of a model name such as resnet20 or vgg16 (a factory name: (the name,
    0)), or a one-line LthError (unknown name, a depth the family cannot build, a width that
    is not a positive int, a factory that cannot be imported)."""
    entry, depth = _resolve(name, width)
    return entry.name, depth


def family(name: str) -> ModelFamily:
    """The registry entry of a model name (errors as parse_model_name's)."""
    return registry.lookup(name)[0]


def default_width(name: str, width: int | None = None) -> int:
    """`width`, or the model's family default when it is None (a factory model: always its
    stand-in default, since it has no width)."""
    entry = family(name)
    return entry.default_width if entry.factory else width or entry.default_width


def initialize(model: nn.Module) -> None:
    """open_lth's default init: kaiming-normal conv/linear weights, BN scale uniform in [0, 1)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight)
            nn.init.zeros_(module.bias)


def _build(entry: ModelFamily, depth: int, width: int | None, num_classes: int) -> nn.Module:
    model = entry.build(depth, width or entry.default_width, num_classes)
    model.lthfast_family = entry.name  # prunable_names reads the family's rule through it
    return model


def create_model(name: str, width: int | None = None, seed: int | None = None,
                 num_classes: int = NUM_CLASSES) -> nn.Module:
    """Build and initialize a model by name; `seed` makes the initialization reproducible.

    The model maps float32 images (B, 3, H, W) (32x32 for the built-in families) to logits
    (B, num_classes). A factory model is built under torch.manual_seed(seed) and keeps its own
    initialization; the caller's random state is restored. Errors: as parse_model_name's, and
    a factory's (lthfast.models.custom)."""
    entry, depth = _resolve(name, width)
    if entry.factory:
        if seed is None:
            return _build(entry, depth, width, num_classes)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return _build(entry, depth, width, num_classes)
    model = _build(entry, depth, width, num_classes)
    if seed is None:
        initialize(model)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            initialize(model)
    return model


@torch.no_grad()
def check_output(model: nn.Module, image: torch.Tensor, num_classes: int, name: str) -> None:
    """One forward pass of one normalized image (float32 (1, 3, H, W), on the model's device)
    in eval mode (no state changes: BatchNorm statistics, the mode and the random state stay):
    a one-line LthError unless the model gives logits of shape (1, num_classes)."""
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            out = model(image)
    except Exception as exc:
        text = (str(exc).strip().splitlines() or [""])[0]
        raise LthError(f"model {name} fails on one {image.shape[2]}x{image.shape[3]} image of the data set: "
                       f"{type(exc).__name__}: {text}") from None
    finally:
        model.train(was_training)
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (1, num_classes):
        raise LthError(f"model {name} gives output {shape} for one image; the data set has {num_classes} "
                       f"classes, so it must be (1, {num_classes}): the factory's last layer must have "
                       "num_classes outputs")


def prunable_names(model: nn.Module, prune_last_layer: bool | None = None) -> list[str]:
    """Names of the prunable weights: every conv and linear weight (shortcuts included).

    prune_last_layer None: the family's rule (VGG keeps its final linear layer "fc.weight"
    dense, as open_lth; ResNet prunes it; a factory model: its module's PRUNABLE, see
    lthfast.models.custom); a model not built by create_model prunes it."""
    if prune_last_layer is None:
        entry = registry.family_of(model)
        if entry is not None and entry.prunable is not None:
            return entry.prunable(model)
        prune_last_layer = entry.prune_last_layer if entry is not None else True
    names = [f"{name}.weight" for name, module in model.named_modules()
             if isinstance(module, (nn.Conv2d, nn.Linear))]
    if not prune_last_layer:
        names = [n for n in names if n != "fc.weight"]
    return names


def _shapeless(entry: ModelFamily, depth: int, width: int | None, num_classes: int) -> nn.Module:
    """The model on the meta device (shapes only: nothing is allocated); a factory that
    cannot build there is built on the CPU, the caller's random state restored."""
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            return _build(entry, depth, width, num_classes)
    except Exception:
        if not entry.factory:
            raise
    with torch.random.fork_rng(devices=[]):
        return _build(entry, depth, width, num_classes)


@functools.lru_cache(maxsize=None)
def _counts(entry: ModelFamily, depth: int, width: int | None, num_classes: int) -> tuple[int, int, str]:
    model = _shapeless(entry, depth, width, num_classes)
    params = dict(model.named_parameters())
    shapes = [[n, list(t.shape)] for n, t in model.state_dict().items()]
    return (sum(p.numel() for p in params.values()), sum(params[n].numel() for n in prunable_names(model)),
            digest(shapes, 16))


def _counts_of(name: str, width: int | None, num_classes: int) -> tuple[int, int, str]:
    entry, depth = _resolve(name, width)
    # The entry is part of the cache key: a family registered anew is counted anew.
    return _counts(entry, depth, width, num_classes)


def architecture(name: str, width: int | None = None, num_classes: int = NUM_CLASSES) -> str:
    """16 hex digits of a hash of the model's state: every parameter's and buffer's name and
    shape (built without allocating them); what a factory model's run hash holds beside its
    name (lthfast.config.runs.TrainConfig.hashed_fields)."""
    return _counts_of(name, width, num_classes)[2]


def parameter_count(name: str, width: int | None = None, num_classes: int = NUM_CLASSES) -> int:
    """Parameters of the model (counted without allocating them)."""
    return _counts_of(name, width, num_classes)[0]


def prunable_count(name: str, width: int | None = None, num_classes: int = NUM_CLASSES) -> int:
    """Prunable weights of the model (prunable_names), counted without allocating them."""
    return _counts_of(name, width, num_classes)[1]


# Training holds about 4 bytes x (weights, gradients, momentum, a checkpoint copy) per parameter.
BYTES_PER_PARAMETER = 16


def check_size(name: str, width: int | None = None, num_classes: int = NUM_CLASSES) -> None:
    """A one-line LthError if the model's training state alone cannot fit in this machine's
    memory (physical RAM, plus the largest GPU's), before anything is allocated."""
    needed = parameter_count(name, width, num_classes) * BYTES_PER_PARAMETER
    available = hardware.total_memory()
    if needed > available:
        smaller = "model" if family(name).factory else "--width"
        raise LthError(f"{name} at width {width} has {needed // BYTES_PER_PARAMETER:,} parameters: its training "
                       f"state alone needs {needed / 2**30:,.0f} GiB, more than this machine's "
                       f"{available / 2**30:,.0f} GiB; use a smaller {smaller}")


def __getattr__(name: str):
    if name == "KNOWN_MODELS":  # the registered families' examples, current at every access
        return known_models()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
