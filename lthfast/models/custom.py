"""Your own model: `package.module:factory` or `path/to/file.py:factory` wherever a model name
is accepted (TrainConfig.model, so `train`, `imp` and `study`), resolved on demand into a
family of lthfast.models.registry (`factory=True`), so it is built, counted, pruned and
hashed through the same entry as resnet20's.

    factory(num_classes: int) -> nn.Module   # float32 images (B, 3, H, W) -> logits (B, num_classes)

The module is imported by name (`package.module`, found on sys.path as usual, the current
folder first under `python -m`), or from a file (a path ending in .py or holding a slash,
relative to the current folder). It may declare, at module level:
  PRUNABLE     a list of parameter names, or a function (model) -> such a list: the prunable
               weights (default: the weight of every convolution and linear layer);
  REWIND_ITER  IMP's late rewind point in iterations (default 0: the initialization;
               --rewind-iter overrides it).

Seeds: the factory is called under torch.manual_seed(seed) (the config's seed; the caller's
random state is restored after) and its own initialization is kept, so a seed gives the same
weights every time. Width: a factory model has none; --width is ignored. Memory layout:
NCHW unless --channels-last true (TrainConfig), so a model may `view` its activations.

Errors (one-line LthError, before any training): a name that is not `target:factory`, no
such module or file, a module that fails to import, no such attribute or not a callable, a
factory that raises (naming the exception), a result that is not an nn.Module, a PRUNABLE
that names no parameter; the output size is checked on one example before training
(lthfast.models.families.check_output).

Invariants (tests/test_custom.py): a name resolves to one entry per process (`forget` drops
them, for tests that rewrite a factory's file); the run hash covers the name and the shapes
of the model's state (test_the_run_hash_follows_the_factorys_shapes).
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from torch import nn

from lthfast.foundations.errors import LthError
from lthfast.foundations.hashing import digest
from lthfast.models.registry import ModelFamily, add_resolver

FORM = "package.module:factory or path/to/file.py:factory"
NO_WIDTH = 1  # a factory model's stand-in default width (positive, as every family's); it is never read
_ENTRIES: dict[str, ModelFamily] = {}
_FILE_MODULES: list[str] = []  # sys.modules names of the files imported here


def _line(exc: BaseException) -> str:
    """`Type: message`, its message cut to its first line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _is_file(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target


def _import(name: str, target: str):
    """The module `target` names: a dotted module name, or a .py file path."""
    if _is_file(target):
        path = Path(target).expanduser()
        if not path.is_file():
            raise LthError(f"model {name!r}: no file {path} (relative paths start at {Path.cwd()})")
        module_name = "lthfast_model_" + digest(str(path.resolve()), 12)
        if module_name in sys.modules:
            return sys.modules[module_name]
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # classes defined there pickle and deep-copy by it
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]
            raise LthError(f"model {name!r}: importing {path} raised {_line(exc)}") from None
        _FILE_MODULES.append(module_name)
        return module
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name and (target == exc.name or target.startswith(exc.name + ".")):
            raise LthError(f"model {name!r}: no module named {target!r} (searched sys.path: the current "
                           "folder under python -m, installed packages)") from None
        raise LthError(f"model {name!r}: importing {target} raised {_line(exc)}") from None
    except Exception as exc:
        raise LthError(f"model {name!r}: importing {target} raised {_line(exc)}") from None


def _prunable_rule(name: str, declared):
    """The family's `prunable` from the module's PRUNABLE (None: the default rule)."""
    if declared is None:
        def default(model: nn.Module) -> list[str]:
            return [f"{n}.weight" for n, m in model.named_modules()
                    if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
        return default
    if not callable(declared) and (isinstance(declared, str) or not all(isinstance(n, str) for n in declared)):
        raise LthError(f"model {name!r}: PRUNABLE must be a list of parameter names or a function (model) -> "
                       f"names, got {declared!r}")

    def prunable(model: nn.Module) -> list[str]:
        try:
            names = list(declared(model) if callable(declared) else declared)
        except Exception as exc:
            raise LthError(f"model {name!r}: PRUNABLE(model) raised {_line(exc)}") from None
        params = dict(model.named_parameters())
        for n in names:
            if n not in params:
                raise LthError(f"model {name!r}: PRUNABLE names {n!r}, which is not a parameter of the model")
        if len(set(names)) != len(names):
            raise LthError(f"model {name!r}: PRUNABLE names a parameter more than once: {names!r}")
        return names
    return prunable


def _family(name: str) -> ModelFamily:
    target, _, attribute = name.rpartition(":")
    if not target or not attribute.isidentifier():
        raise LthError(f"model {name!r}: expected {FORM}")
    module = _import(name, target)
    factory = getattr(module, attribute, None)
    if factory is None:
        raise LthError(f"model {name!r}: {target} has no attribute {attribute!r}")
    if not callable(factory):
        raise LthError(f"model {name!r}: {target}.{attribute} is a {type(factory).__name__}, not a callable")
    rewind_iter = getattr(module, "REWIND_ITER", 0)
    if not isinstance(rewind_iter, int) or isinstance(rewind_iter, bool) or rewind_iter < 0:
        raise LthError(f"model {name!r}: REWIND_ITER must be an int >= 0, got {rewind_iter!r}")

    def build(depth: int, width: int, num_classes: int) -> nn.Module:
        try:
            model = factory(num_classes)
        except Exception as exc:
            raise LthError(f"model factory {name} raised {_line(exc)}") from None
        if not isinstance(model, nn.Module):
            raise LthError(f"model factory {name} returned a {type(model).__name__}, not a torch.nn.Module")
        return model

    return ModelFamily(name=name, pattern="", build=build, default_width=NO_WIDTH, rewind_iter=rewind_iter,
                       form=FORM, factory=True, prunable=_prunable_rule(name, getattr(module, "PRUNABLE", None)))


def resolve(name: str) -> ModelFamily | None:
    """The family of a factory name (one per name and process), None for a name without a
    colon; LthError (one line) for a factory that cannot be found or imported."""
    if ":" not in name:
        return None
    if name not in _ENTRIES:
        _ENTRIES[name] = _family(name)
    return _ENTRIES[name]


def forget() -> None:
    """Drop every resolved factory and the files imported for them: the next lookup imports
    again (a test that rewrites a factory's file)."""
    _ENTRIES.clear()
    while _FILE_MODULES:
        sys.modules.pop(_FILE_MODULES.pop(), None)


add_resolver(FORM, resolve)
