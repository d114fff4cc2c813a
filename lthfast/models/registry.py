"""The table of model families: a model name (`resnet20`, `vgg16`, ...) finds its family here.

A family is one module (lthfast.models.resnet, lthfast.models.vgg) ending with one
`register(...)` call; everything that depends on the family (which class is built, the
default width, the late rewind point, whether the last layer is pruned, the error for a
bad depth) is read from its entry, never from an if/else on the family's name.

A name with a colon (`package.module:factory`, `path/to/file.py:factory`) is no pattern's:
the resolvers (lthfast.models.custom adds one) build its family on demand, so it is looked up,
built, counted and pruned through the same entry as a registered family's.

Invariants:
  - a name with a colon is a resolver's; any other maps to the first registered family whose
    pattern matches the whole lowercased name; the unknown-name error lists every family's
    examples and forms (tests/test_models.py::test_bad_model_names);
  - the entry of a family registered outside the package (a test) behaves as a built-in's
    (tests/test_registries.py::test_a_registered_model_family_trains_prunes_and_interpolates).

Tests register a family for their own duration by replacing FAMILIES with a copy first:
    monkeypatch.setattr(lthfast.models.registry, "FAMILIES", dict(lthfast.models.registry.FAMILIES))
so every lookup here reads the module-level FAMILIES at call time (the views below included).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable

from torch import nn

from lthfast.foundations.errors import LthError
from lthfast.foundations.views import View

NUM_CLASSES = 10  # CIFAR-10's: the class count a model gets when none is given


@dataclass(frozen=True)
class ModelFamily:
    """One family of models.

    name: the family's name ("resnet"): the key of FAMILIES and what parse_model_name returns.
    pattern: a regular expression with exactly one group, matched against the whole lowercased
        model name; the group (digits) is the integer `depth` passed to `build` ("resnet(\\d+)").
    build: (depth, width, num_classes) -> an uninitialized nn.Module taking float32 images
        (B, 3, H, W) to logits (B, num_classes); lthfast.models.families.initialize initializes it.
    default_width: the width used when none is given.
    rewind_iter: the late rewind point (iterations) of IMP when none is given.
    check_depth: raises a one-line LthError for a depth the family cannot build (None: any depth).
    examples: model names listed by the unknown-name error ("resnet20", "resnet32").
    form: how the family's names look, for that error ("resnet<6n+2>").
    prune_last_layer: whether the final linear layer ("fc.weight") is prunable by default.
    factory: built by a user's factory (lthfast.models.custom): it has no width (ignored), it is
        built under the seed and keeps its own initialization, and its shapes are hashed.
    prunable: (model) -> the names of its prunable weights, where the family has its own rule
        (None: every conv and linear weight, less "fc.weight" unless prune_last_layer).
    """
    name: str
    pattern: str
    build: Callable[[int, int, int], nn.Module]
    default_width: int
    rewind_iter: int
    check_depth: Callable[[int], None] | None = None
    examples: tuple[str, ...] = ()
    form: str = ""
    prune_last_layer: bool = True
    factory: bool = False
    prunable: Callable[[nn.Module], list[str]] | None = None


FAMILIES: dict[str, ModelFamily] = {}
# (form, resolve): resolve(name) -> the family of a name with a colon, or None if not its form.
RESOLVERS: list[tuple[str, Callable[[str], ModelFamily | None]]] = []


def add_resolver(form: str, resolve: Callable[[str], ModelFamily | None]) -> None:
    """Let `resolve` build the family of names with a colon; `form` describes them for the
    unknown-name error ("package.module:factory")."""
    RESOLVERS.append((form, resolve))


def register(name: str, *, pattern: str, build: Callable[[int, int, int], nn.Module], default_width: int,
             rewind_iter: int, check_depth: Callable[[int], None] | None = None, examples: tuple[str, ...] = (),
             form: str = "", prune_last_layer: bool = True) -> ModelFamily:
    """Add a family to FAMILIES (fields as ModelFamily's) and return its entry.

    Errors: ValueError if the name is taken, the pattern does not compile or has other than
    one group, or default_width or rewind_iter is not a non-negative int (width: positive)."""
    if name in FAMILIES:
        raise ValueError(f"model family {name!r} is already registered")
    try:
        groups = re.compile(pattern).groups
    except re.error as exc:
        raise ValueError(f"pattern {pattern!r} of model family {name!r} does not compile: {exc}") from None
    if groups != 1:
        raise ValueError(f"pattern {pattern!r} of model family {name!r} must have exactly one group (the depth)")
    if not isinstance(default_width, int) or isinstance(default_width, bool) or default_width < 1:
        raise ValueError(f"default_width of model family {name!r} must be a positive int, got {default_width!r}")
    if not isinstance(rewind_iter, int) or isinstance(rewind_iter, bool) or rewind_iter < 0:
        raise ValueError(f"rewind_iter of model family {name!r} must be an int >= 0, got {rewind_iter!r}")
    entry = ModelFamily(name, pattern, build, default_width, rewind_iter, check_depth, tuple(examples),
                        form or name + "<n>", prune_last_layer)
    FAMILIES[name] = entry
    return entry


def lookup(name: str) -> tuple[ModelFamily, int]:
    """(family entry, depth) of a model name such as resnet20 or vgg16.

    Errors: LthError (one line) for a name no family matches, listing the known models,
    or the family's own error for a depth it cannot build, or a resolver's (a factory name
    that does not import: lthfast.models.custom). A resolver's family has depth 0."""
    if ":" in str(name):
        for _, resolve in RESOLVERS:
            entry = resolve(str(name))
            if entry is not None:
                return entry, 0
    lowered = str(name).lower()
    for family in FAMILIES.values():
        match = re.fullmatch(family.pattern, lowered)
        if match:
            depth = int(match.group(1))
            if family.check_depth is not None:
                family.check_depth(depth)
            return family, depth
    known = [example for family in FAMILIES.values() for example in family.examples]
    forms = " or ".join(family.form for family in FAMILIES.values())
    others = "".join(f", or {form}" for form, _ in RESOLVERS)
    raise LthError(f"unknown model {name!r}; known models: {', '.join(known)} (any {forms}){others}")


def family_of(model: nn.Module) -> ModelFamily | None:
    """The entry of the family that built `model` (lthfast.models.families.create_model tags
    the models it builds), or None for a model built otherwise."""
    tag = getattr(model, "lthfast_family", None)
    if isinstance(tag, str) and tag not in FAMILIES and ":" in tag:
        return lookup(tag)[0]
    return FAMILIES.get(tag)


DEFAULT_WIDTHS: Mapping[str, int] = View(lambda: FAMILIES, "default_width")      # {"resnet": 16, "vgg": 64}
DEFAULT_REWIND_ITER: Mapping[str, int] = View(lambda: FAMILIES, "rewind_iter")   # {"resnet": 2000, "vgg": 1000}
