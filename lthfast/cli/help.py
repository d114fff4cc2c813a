"""Help text for every command, written from the command's signature and docstring and from the
settings' one declaration (lthfast.foundations.settings: help, default, range), so that it
shows exactly the flag forms the command line accepts (lthfast.cli.main._check_flags):
`--flag-name VALUE` or `--flag-name=VALUE`, and `--flag` / `--noflag` for a boolean; never a
short form, which the command line refuses. tests/test_cli.py parses every command's help
and feeds each flag it lists back to the parser.
"""
from __future__ import annotations

import inspect
import textwrap

from lthfast.foundations import settings

PROGRAM = "python -m lthfast"


def _summary(doc: str | None) -> str:
    """The docstring before its Args section, as one paragraph per blank-line block."""
    text = inspect.cleandoc(doc or "").split("\nArgs:")[0].strip()
    return "\n\n".join(" ".join(block.split()) for block in text.split("\n\n") if block.strip())


def _arg_help(doc: str | None) -> dict[str, str]:
    """{parameter: its help} from the docstring's Args section (continuation lines joined)."""
    lines = inspect.cleandoc(doc or "").split("\nArgs:", 1)
    out, name = {}, None
    for line in (lines[1].splitlines() if len(lines) > 1 else []):
        stripped = line.strip()
        head, sep, rest = stripped.partition(": ")
        if sep and head.isidentifier() and len(line) - len(line.lstrip()) <= 4:
            name, out[head] = head, rest
        elif name and stripped:
            out[name] += " " + stripped
    return out


def _range(meta: dict) -> str:
    """A setting's accepted values, from its declaration."""
    kind = meta["kind"]
    words = {"int": "an integer", "float": "a number", "str": "text", "ints": "comma-separated integers",
             "floats": "comma-separated numbers", "strs": "comma-separated names"}.get(kind, "")
    bounds = []
    if meta.get("choices"):
        words = "one of " + ", ".join(map(str, meta["choices"]))
    if meta.get("minimum") is not None:
        bounds.append(f">= {meta['minimum']}")
    if meta.get("positive"):
        bounds.append("> 0")
    if meta.get("below") is not None:
        bounds.append(f"< {meta['below']}")
    if meta.get("maximum") is not None:
        bounds.append(f"<= {meta['maximum']}")
    return " ".join([words] + bounds).strip()


def _default(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value)) or "empty"
    return str(value)


def is_bool(param: inspect.Parameter) -> bool:
    """Whether a command parameter is a boolean flag (--flag / --noflag; lthfast.cli.main parses it so)."""
    return isinstance(param.default, bool) or "bool" in str(param.annotation)


def flag_forms(target) -> list[tuple[str, str]]:
    """(how the flag is written, its help line) for every parameter of a command."""
    metas = {f.name: f.meta for cls in getattr(target, "flag_classes", ()) for f in settings.flat_fields(cls)}
    helps = _arg_help(target.__doc__)
    out = []
    for name, param in inspect.signature(target).parameters.items():
        if param.kind == param.VAR_KEYWORD:
            continue
        flag = "--" + name.replace("_", "-")
        form = f"{flag} / --no{name.replace('_', '-')}" if is_bool(param) else f"{flag} {name.upper()}"
        text = helps.get(name) or (metas[name]["help"] if name in metas else "")
        extra = [f"default: {_default(param.default)}"]
        if name in metas and (accepted := _range(metas[name])):
            extra.append(accepted)
        out.append((form, f"{text} ({'; '.join(extra)})".strip()))
    return out


def command_help(path: str, target, positional: int = 0) -> str:
    """The help of one command (`path` as typed after `python -m lthfast`)."""
    params = [n for n, p in inspect.signature(target).parameters.items() if p.kind != p.VAR_KEYWORD]
    leading = " ".join(f"[{n.upper()}]" for n in params[:positional])
    lines = [f"usage: {PROGRAM} {path} {leading + ' ' if leading else ''}[--flag VALUE ...]", ""]
    lines += [textwrap.fill(block, 100) for block in _summary(target.__doc__).split("\n\n")] + [""]
    if positional:
        lines += [f"{', '.join(n.upper() for n in params[:positional])} may also be given as the first value, "
                  "without its flag.", ""]
    lines.append("flags (every flag also as --flag=VALUE; no short forms):")
    for form, text in flag_forms(target):
        lines.append(f"  {form}")
        lines += textwrap.wrap(text, 96, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines)


def group_help(path: str, commands: dict) -> str:
    """The commands of `python -m lthfast` or of a group (`analyze`), one line each."""
    lines = [f"usage: {PROGRAM} {path + ' ' if path else ''}COMMAND [--flag VALUE ...]", "",
             "commands (`" + f"{PROGRAM} {path + ' ' if path else ''}COMMAND --help` for its flags):"]
    for name, target in commands.items():
        first = "a group of commands" if isinstance(target, dict) else \
            _summary(target.__doc__).split("\n\n")[0].split(". ")[0].split(";")[0]
        lines += textwrap.wrap(first.rstrip("."), 96, initial_indent=f"  {name:10s} ", subsequent_indent=" " * 13)
    return "\n".join(lines)
