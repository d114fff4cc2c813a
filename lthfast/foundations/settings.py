"""Typed settings: every config field declared once, with its help, type and range.

A config class (TrainConfig, ImpConfig, the analysis settings, StudyConfig) declares each
field with `setting(default, help, kind=..., minimum=...)`. From that one declaration:
  check(obj)        validates and normalizes every field (numpy scalars become plain
                    Python numbers, lists become tuples), with a one-line LthError that
                    names the flag as the user types it (`--curve-points`)
  flags(cls)        the command-line flags, their defaults and help (lthfast.cli.main)

Numbers must be finite and within their stated range; a field's range is part of its
declaration, so the CLI, the Python API and stored configs are checked alike.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import numbers

import numpy as np

from lthfast.foundations.errors import LthError

KINDS = ("int", "float", "str", "bool", "ints", "floats", "strs")


def setting(default, help: str, kind: str = "int", minimum=None, maximum=None, positive: bool = False,
            below: float | None = None, choices: tuple | None = None, optional: bool = False, flag: str | None = None,
            unique: bool = True, error: str | None = None):
    """A dataclass field with its help, kind (one of KINDS) and range.

    minimum/maximum: inclusive bounds; positive: > 0; below: < this value (exclusive);
    choices: the allowed values (str kinds); optional: None is allowed (and means the help's default).
    flag: the flag's name if not the field's (e.g. a preset's); unique: a list may not repeat a value;
    error: the message's tail for any bad value, if the generic one would not say what is meant."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    meta = dict(help=help, kind=kind, minimum=minimum, maximum=maximum, positive=positive, below=below,
                choices=choices, optional=optional or default is None, flag=flag, unique=unique, error=error)
    return dataclasses.field(default=default, metadata={"setting": meta})


_PREFIX = contextvars.ContextVar("settings_prefix", default="")


def flag_name(field: dataclasses.Field) -> str:
    meta = field.metadata.get("setting", {})
    return "--" + (_PREFIX.get() + (meta.get("flag") or field.name)).replace("_", "-")


@contextlib.contextmanager
def _prefixed(prefix: str):
    """Errors raised while a nested part is built name its flags with the owner's prefix."""
    token = _PREFIX.set(_PREFIX.get() + (prefix + "_" if prefix else ""))
    try:
        yield
    finally:
        _PREFIX.reset(token)


def nested(cls, prefix: str = "", defaults: dict | None = None, skip: tuple = ()):
    """A dataclass field holding settings of class `cls` (itself made of `setting` fields).

    prefix: its flags are PREFIX_FIELD ("" keeps the part's names); defaults: the owner's
    defaults for the part's fields, by flag name (a part's own nested parts included);
    skip: the part's fields that are not the owner's flags (the owner sets or derives them)."""
    meta = dict(cls=cls, prefix=prefix, defaults=dict(defaults or {}), skip=tuple(skip))
    return dataclasses.field(default_factory=lambda: from_flags(cls, meta["defaults"]),
                             metadata={"nested": meta})


@dataclasses.dataclass(frozen=True)
class Flag:
    """One flag of a config: its name (underscores, prefixes included), where its value goes
    (field names from the owner down), its declaration and its default in the owner."""
    name: str
    path: tuple
    field: dataclasses.Field
    meta: dict
    default: object


def flat_fields(cls) -> list[Flag]:
    """Every flag of `cls` in declaration order, nested parts expanded; ValueError if two
    flags share a name (a declaration error)."""
    out = []
    for field in dataclasses.fields(cls):
        if "nested" in field.metadata:
            part = field.metadata["nested"]
            lead = part["prefix"] + "_" if part["prefix"] else ""
            out += [Flag(lead + f.name, (field.name,) + f.path, f.field, f.meta, part["defaults"].get(f.name, f.default))
                    for f in flat_fields(part["cls"]) if f.name not in part["skip"]]
        elif "setting" in field.metadata:
            out.append(Flag(field.name, (field.name,), field, field.metadata["setting"], field.default))
    names = [f.name for f in out]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{cls.__name__} declares the flags {repeated} twice")
    return out


def from_flags(cls, values: dict, **fixed):
    """An instance of `cls` from flat flag values (flag name -> value; a missing one takes its
    declared default, nested parts are built the same way); `fixed`: fields set directly."""
    kwargs = dict(fixed)
    for field in dataclasses.fields(cls):
        if field.name in kwargs:
            continue
        if "nested" in field.metadata:
            part = field.metadata["nested"]
            lead = part["prefix"] + "_" if part["prefix"] else ""
            own = {**part["defaults"], **{k[len(lead):]: v for k, v in values.items() if k.startswith(lead)}}
            with _prefixed(part["prefix"]):
                kwargs[field.name] = from_flags(part["cls"], own)
        elif field.name in values:
            kwargs[field.name] = values[field.name]
    return cls(**kwargs)


def to_flags(obj) -> dict:
    """Flag name -> value of a config instance (its nested parts' flags included): the
    inverse of from_flags."""
    out = {}
    for flag in flat_fields(type(obj)):
        value = obj
        for name in flag.path:
            value = getattr(value, name)
        out[flag.name] = value
    return out


def _range_text(meta: dict, noun: str) -> str:
    low, high, below = meta["minimum"], meta["maximum"], meta["below"]
    if meta["positive"] and below is not None:
        return f"in (0, {below:g})"
    parts = []
    if meta["positive"]:
        return f"a positive {noun}" + (f" <= {high}" if high is not None else "")
    if low is not None:
        parts.append(f">= {low}")
    if high is not None:
        parts.append(f"<= {high}")
    if below is not None:
        parts.append(f"< {below:g}")
    return f"a{'n' if noun[0] in 'aeiou' else ''} {noun} " + " and ".join(parts) if parts else f"a {noun}"


def integer(flag: str, value, minimum=None, maximum=None):
    """`value` as a Python int within [minimum, maximum], or a one-line LthError naming `flag`."""
    meta = dict(minimum=minimum, maximum=maximum, positive=False, below=None)
    return _check_one(flag, value, "int", meta)


def number(flag: str, value, minimum=None, maximum=None, positive: bool = False, below=None):
    """`value` as a finite Python float within the range, or a one-line LthError naming `flag`."""
    meta = dict(minimum=minimum, maximum=maximum, positive=positive, below=below)
    return _check_one(flag, value, "float", meta)


def _check_one(flag: str, value, kind: str, meta: dict):
    if isinstance(value, np.generic):  # numpy scalars from the Python API: plain Python values
        value = value.item()
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise LthError(f"{flag} must be {_range_text(meta, 'integer')}, got {value!r}")
        value = int(value)
    elif kind == "float":
        if isinstance(value, str):  # the command line's "nan", "inf" are words to Fire
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise LthError(f"{flag} must be {_range_text(meta, 'number')}, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise LthError(f"{flag} must be a finite number, got {value!r}")
    elif kind == "bool":
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, (bool, numbers.Integral)) or value not in (0, 1):
            raise LthError(f"{flag} must be true or false, got {value!r}")
        return bool(value)
    else:  # str
        if meta.get("choices") and value not in meta["choices"]:
            raise LthError(f"{flag} must be one of {', '.join(map(str, meta['choices']))}, got {value!r}")
        if not isinstance(value, str):
            raise LthError(f"{flag} must be text, got {value!r}")
        return value
    low, high, below = meta["minimum"], meta["maximum"], meta["below"]
    if (low is not None and value < low) or (high is not None and value > high) \
            or (meta["positive"] and value <= 0) or (below is not None and value >= below):
        noun = "integer" if kind == "int" else "number"
        raise LthError(f"{flag} must be {_range_text(meta, noun)}, got {value!r}")
    return value


def check(obj) -> None:
    """Validate and normalize, in place, every `setting` field of the dataclass `obj`."""
    for field in dataclasses.fields(obj):
        meta = field.metadata.get("setting")
        if meta is None:
            continue
        try:
            _check_field(obj, field, meta)
        except LthError:
            if meta.get("error") is None:
                raise
            raise LthError(f"{flag_name(field)} {meta['error']}; got {getattr(obj, field.name)!r}") from None


def _check_field(obj, field: dataclasses.Field, meta: dict) -> None:
    value = getattr(obj, field.name)
    flag = flag_name(field)
    if value is None:
        if not meta["optional"]:
            raise LthError(f"{flag} must be given")
        return
    kind = meta["kind"]
    if kind in ("ints", "floats", "strs"):
        items = value if isinstance(value, (tuple, list)) else (value,)
        try:
            value = tuple(_check_one(flag, v, kind[:-1] if kind != "strs" else "str", meta) for v in items)
        except LthError:
            noun = {"ints": "integer", "floats": "number", "strs": "name"}[kind]
            what = _range_text(meta, noun).split(" ", 1)[1].replace(noun, noun + "s", 1)
            raise LthError(f"{flag} must be a comma-separated list of {what}, got {value!r}") from None
        repeated = sorted({v for v in value if value.count(v) > 1}, key=str)
        if meta.get("unique", True) and repeated:
            raise LthError(f"{flag} lists {', '.join(map(str, repeated))} more than once: {value!r}")
    else:
        value = _check_one(flag, value, kind, meta)
    object.__setattr__(obj, field.name, value)  # frozen dataclasses too


def hashed(obj, legacy_defaults: dict | None = None, skip=()) -> dict:
    """The fields of `obj` that differ from their defaults (as open_lth): adding a field with
    a default keeps old hashes. legacy_defaults: the value a field had before it existed or
    before its default changed (so that old runs keep their names)."""
    out = {}
    for field in dataclasses.fields(obj):
        if field.name in skip:
            continue
        value = getattr(obj, field.name)
        default = (legacy_defaults or {}).get(field.name, field.default)
        if value != default:
            out[field.name] = list(value) if isinstance(value, tuple) else value
    return out
