"""Command-line flags derived from the config dataclasses (lthfast.foundations.settings), so that each
default and help text lives in one place: the field's declaration.

    @with_flags(CurveSettings, Compute)
    def interpolate(run=None, a=None, **flags): ...
        settings = build(CurveSettings, flags)

Fire reads the command's signature (its own parameters, then every field of the classes)
and the help from its docstring's Args section, which gets one line per field.
"""
from __future__ import annotations

import inspect

from lthfast.foundations import settings

LIST_ITEM = {"ints": int, "floats": float, "strs": str}


def with_flags(*classes, defaults: dict | None = None, skip: tuple = (), help_for=None, more: str = ""):
    """Decorator: the command takes, besides its own parameters, a keyword flag per setting
    field of `classes` (the first class to declare a name wins); `defaults` replaces the
    field defaults shown and passed; help_for(field) may replace a field's help line; `more`:
    help lines of own parameters shared by several commands."""
    def wrap(command):
        own = [p for p in inspect.signature(command).parameters.values() if p.kind != p.VAR_KEYWORD]
        names = {p.name for p in own} | set(skip)
        extra, helps = [], []
        for cls in classes:
            for flag in settings.flat_fields(cls):
                if flag.name in names:
                    continue
                names.add(flag.name)
                default = (defaults or {}).get(flag.name, flag.default)
                annotation = bool if flag.meta["kind"] == "bool" else inspect.Parameter.empty  # --flag / --noflag
                extra.append(inspect.Parameter(flag.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                               annotation=annotation))
                helps.append(f"        {flag.name}: {help_for(flag) if help_for else flag.meta['help']}")
        command.__signature__ = inspect.Signature(own + extra)
        command.__doc__ = "\n".join([command.__doc__.rstrip()] + ([more] if more else []) + helps) + "\n"
        command.flag_classes = classes
        return command
    return wrap


def parse_list(value, kind: str):
    """A comma-separated flag value (Fire may already have made it a tuple, or a number) as a
    tuple; items that do not convert are kept as given, for the config to name the problem."""
    if value is None:
        return None
    items = list(value) if isinstance(value, (tuple, list)) else \
        [value] if not isinstance(value, str) else [v.strip() for v in value.split(",") if v.strip()]
    out = []
    for item in items:
        try:
            out.append(LIST_ITEM[kind](item) if isinstance(item, str) else item)
        except ValueError:
            out.append(item)
    return tuple(out)


def values(cls, flags: dict, keep_none: bool = True) -> dict:
    """The flags among `flags` that are flags of `cls`, list flags parsed."""
    out = {}
    for flag in settings.flat_fields(cls):
        if flag.name not in flags or (flags[flag.name] is None and not keep_none):
            continue
        kind = flag.meta["kind"]
        out[flag.name] = parse_list(flags[flag.name], kind) if kind in LIST_ITEM else flags[flag.name]
    return out


def build(cls, flags: dict, **extra):
    """An instance of `cls` from the flags (and `extra` fields set directly)."""
    return settings.from_flags(cls, values(cls, flags), **extra)
