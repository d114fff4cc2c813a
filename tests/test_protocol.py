"""docs/protocol.md documents what the code decides by, read from the code itself:

  - every numeric threshold of the findings' modules (THRESHOLD_MODULES), found by parsing
    their source: module-level numeric constants, numbers inside comparisons (`x > 2 * se`,
    `len(seeds) < 2`), numeric factors of a multiplication or division (`2 * c["se"]`) and
    numeric parameter defaults (`eps_margin=0.1`). Each must appear in a row of the
    protocol's "Thresholds" table that names its module (`findings`, `stats`, ...) and, for a
    named constant, the constant's name. 0 and +-1 are left out: identities, signs and
    emptiness tests, never thresholds;
  - every strategy of lthfast.pruning.strategies.STRATEGIES, with its table fields;
  - every preset of PRESETS (lthfast.study.presets; lthfast.config.study before it moved);
  - every field of the settings dataclasses of lthfast.config.analyses, with its default;
  - the seven findings and the four verdicts.

The last tests add a threshold, a strategy, a preset and a settings field that the protocol
does not describe, and check that the checks above report each of them.
"""
from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
from pathlib import Path

from lthfast.config import analyses
from lthfast.foundations import stats
from lthfast.pruning import strategies
from lthfast.report import findings

PROTOCOL = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
THRESHOLD_MODULES = ("lthfast.report.findings", "lthfast.foundations.stats", "lthfast.landscape.sublevel")
PRESET_MODULES = ("lthfast.study.presets", "lthfast.config.study")  # the first that has PRESETS
TRIVIAL = {0, 1, -1}
WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten"}


# ----------------------------------------------------------------------------- the document

def protocol() -> str:
    return PROTOCOL.read_text(encoding="utf-8")


def section(text: str, title: str) -> str:
    """The text under the heading whose title starts with `title`, up to the next heading of
    the same or a higher level."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"(#+)\s+(.*)", line)
        if match and match.group(2).strip().lower().startswith(title.lower()):
            level, body = len(match.group(1)), []
            for rest in lines[i + 1:]:
                heading = re.match(r"(#+)\s", rest)
                if heading and len(heading.group(1)) <= level:
                    break
                body.append(rest)
            return "\n".join(body)
    raise AssertionError(f"docs/protocol.md has no section {title!r}")


def table_rows(text: str) -> list[dict]:
    """The rows of every markdown table in `text`, as {header: cell} (cells stripped, the
    first column also under the key 0)."""
    rows, header = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = [c.lower() for c in cells]
        elif not all(set(c) <= set("-: ") for c in cells):
            rows.append({0: cells[0], **dict(zip(header, cells))})
    return rows


def _plain(cell: str) -> str:
    return cell.replace("`", "").replace("*", "").strip()


# ----------------------------------------------------------------------------- thresholds

def _number(node: ast.AST):
    """The value of a numeric literal (or a negated one), else None; bools are not numbers."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _number(node.operand)
        return None if value is None else (-value if isinstance(node.op, ast.USub) else value)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    return None


def _numbers_within(node: ast.AST):
    """Numeric literals anywhere inside `node`, except subscript indices (x[0], x[-1])."""
    value = _number(node)
    if value is not None:
        yield value, node.lineno
        return
    for name, child in ast.iter_fields(node):
        if isinstance(node, ast.Subscript) and name == "slice":
            continue
        for item in child if isinstance(child, list) else [child]:
            if isinstance(item, ast.AST):
                yield from _numbers_within(item)


def collect_thresholds(source: str, module: str) -> set[tuple]:
    """(value, module's short name, constant name or None, line) of every threshold-like
    number in `source` (see the module docstring)."""
    short = module.rsplit(".", 1)[-1]
    tree = ast.parse(source)
    found = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
            if isinstance(node, ast.AnnAssign) and node.value is not None else []
        value = _number(node.value) if targets else None
        if value is not None:
            for target in targets:
                if isinstance(target, ast.Name):
                    found.add((value, short, target.id, node.lineno))
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                found |= {(v, short, None, line) for v, line in _numbers_within(operand)}
        elif isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Div)):
            found |= {(v, short, None, node.lineno) for side in (node.left, node.right)
                      if (v := _number(side)) is not None}
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            defaults = node.args.defaults + [d for d in node.args.kw_defaults if d is not None]
            found |= {(v, short, None, d.lineno) for d in defaults if (v := _number(d)) is not None}
    return {t for t in found if t[0] not in TRIVIAL}


def code_thresholds() -> set[tuple]:
    out = set()
    for module in THRESHOLD_MODULES:
        out |= collect_thresholds(inspect.getsource(importlib.import_module(module)), module)
    return out


def number_forms(value) -> list[str]:
    """Regular expressions for the ways the protocol may write `value`: 0.02 as 0.02 or 2%,
    2 as 2 or two, 10000 as 10000, 10,000 or 10_000, 0.001 as 0.001 or 1e-3. The sign is
    the side of a comparison, not part of a threshold: -2 (standard errors) is written 2."""
    value = abs(value)
    texts = {f"{value:g}", repr(value), f"{value:.12f}".rstrip("0").rstrip(".")}
    if float(value).is_integer():
        whole = int(value)
        texts |= {str(whole), f"{whole:,}", f"{whole:_}"}
    else:
        mantissa, exponent = f"{value:e}".split("e")
        texts.add(f"{float(mantissa):g}e{int(exponent)}")
    if 0 < abs(value) < 1:
        texts.add(f"{value * 100:g}%")
    forms = [r"(?<![\w.])" + re.escape(t) + (r"(?![\w%]|\.\d)" if not t.endswith("%") else "") for t in texts]
    if float(value).is_integer() and int(value) in WORDS:
        forms.append(r"(?i)\b" + WORDS[int(value)] + r"\b")
    return forms


def written(value, text: str) -> bool:
    return any(re.search(form, text) for form in number_forms(value))


def undocumented_thresholds(thresholds: set[tuple], text: str) -> list[str]:
    rows = ["|".join(str(c) for k, c in row.items() if k != 0)
            for row in table_rows(section(text, "Thresholds"))]
    missing = []
    for value, short, name, line in sorted(thresholds, key=lambda t: (t[1], t[3])):
        if not any(f"`{short}`" in row and written(value, row) and (name is None or name in row) for row in rows):
            what = f"{name} = {value}" if name else str(value)
            missing.append(f"{what} ({short}.py line {line}) is in no row of the Thresholds table naming `{short}`")
    return missing


# ----------------------------------------------------------------------------- tables

def undocumented_strategies(text: str) -> list[str]:
    rows = {_plain(r[0]): r for r in table_rows(section(text, "Strategies"))}
    missing = []
    for name, entry in strategies.STRATEGIES.items():
        row = rows.get(name)
        if row is None:
            missing.append(f"strategy {name} has no row in the Strategies table")
            continue
        expected = {"parent": entry.parent, "drops": entry.drops, "weights": entry.weights.__name__,
                    "at": entry.at, "lr": entry.lr, "in the study": "yes" if entry.in_study else "no"}
        for column, value in expected.items():
            cell = _plain(row.get(column, ""))
            if not re.match(re.escape(value) + r"\b", cell):
                missing.append(f"strategy {name}: column {column!r} says {cell!r}, the code {value!r}")
    return missing


def presets() -> dict:
    for module in PRESET_MODULES:
        try:
            found = getattr(importlib.import_module(module), "PRESETS", None)
        except ImportError:
            continue
        if found is not None:
            return found
    raise AssertionError(f"no PRESETS in {', '.join(PRESET_MODULES)}")


def undocumented_presets(text: str) -> list[str]:
    names = {_plain(r[0]) for r in table_rows(section(text, "Presets"))}
    return [f"preset {name} has no row in the Presets table" for name in presets() if name not in names]


def settings_classes(module=analyses) -> list[type]:
    return [c for _, c in inspect.getmembers(module, inspect.isclass)
            if c.__module__ == module.__name__ and dataclasses.is_dataclass(c)]


def default_forms(value) -> list[str]:
    if value is None or isinstance(value, bool):
        return [re.escape(str(value))]
    if isinstance(value, str):
        return [r"(?<![\w-])" + re.escape(value) + r"(?![\w-])"]
    return number_forms(value)


def undocumented_settings(text: str, classes: list[type]) -> list[str]:
    rows = {_plain(r[0]): r for r in table_rows(text)}
    missing = []
    for cls in classes:
        for f in dataclasses.fields(cls):
            key = f"{cls.__name__}.{f.name}"
            row = rows.get(key)
            if row is None:
                missing.append(f"{key} has no row in the analysis settings table")
                continue
            cell = _plain(row.get("default", ""))
            first = re.split(r"\s*\(", cell, maxsplit=1)[0]  # the value, before any remark
            if not any(re.fullmatch(form, first) or re.match(form + r"(\s|$)", first)
                       for form in default_forms(f.default)):
                missing.append(f"{key}: the table's default is {cell!r}, the code's {f.default!r}")
    return missing


# ----------------------------------------------------------------------------- tests

def test_the_protocol_ships_with_the_package():
    text = protocol()
    for title in ("Recipe", "Pruning and rewinding", "Strategies", "Quantities", "Findings", "Deciding a finding",
                  "Thresholds", "Presets"):
        section(text, title)


def test_every_threshold_of_the_findings_is_documented():
    thresholds = code_thresholds()
    assert any(name == "CONNECTED" for _, _, name, _ in thresholds), "the collector lost a known constant"
    assert any(name == "PROVISIONAL_BELOW" for _, _, name, _ in thresholds), "the collector lost a known constant"
    assert undocumented_thresholds(thresholds, protocol()) == []


def test_every_strategy_is_documented_with_its_table_entry():
    assert undocumented_strategies(protocol()) == []


def test_every_preset_is_documented():
    assert undocumented_presets(protocol()) == []


def test_every_analysis_setting_is_documented_with_its_default():
    classes = settings_classes()
    assert {c.__name__ for c in classes} >= {"CurveSettings", "VolumeSettings", "SharpnessSettings"}
    assert undocumented_settings(protocol(), classes) == []


def test_every_finding_and_verdict_is_documented():
    text = protocol()
    described = section(text, "Findings")
    assert len(findings.FINDINGS) >= 7
    for number in range(1, len(findings.FINDINGS) + 1):
        assert f"**Finding {number}.**" in described
    deciding = section(text, "Deciding a finding")
    for verdict in (stats.SUPPORTS, stats.DOES_NOT, stats.CANNOT_TELL, stats.NOT_MEASURED):
        assert f"**{verdict}**" in deciding


def test_the_protocol_sends_no_reader_outside_the_repository():
    assert not re.search(r"\.\./|/work/|shared/", protocol())


# ------------------------------------------------ the checks fail on what the protocol lacks

def test_a_new_threshold_is_reported():
    source = inspect.getsource(findings) + (
        "\nSTRICTER = 0.37\n\n"
        "def _new_rule(c, z):\n"
        "    return c['difference'] > 3 * c['se'] or z >= 1.5 or c['difference'] < STRICTER\n"
    )
    thresholds = collect_thresholds(source, "lthfast.report.findings")
    missing = "\n".join(undocumented_thresholds(thresholds, protocol()))
    assert "STRICTER = 0.37" in missing
    assert re.search(r"^3 \(findings", missing, re.M) and re.search(r"^1\.5 \(findings", missing, re.M)
    # a documented value in another module's row does not count for this one
    moved = collect_thresholds("def f(d):\n    return d > 0.02\n", "lthfast.landscape.sublevel")
    assert undocumented_thresholds(moved, protocol())


def test_a_new_strategy_is_reported(monkeypatch):
    monkeypatch.setitem(strategies.STRATEGIES, "lr-rewind", strategies.Strategy(
        "lr-rewind", "own", "smallest", strategies.pruned_baseline, "rewind", "schedule", "learning-rate rewinding"))
    assert any("lr-rewind" in m for m in undocumented_strategies(protocol()))


def test_a_changed_strategy_is_reported(monkeypatch):
    changed = dataclasses.replace(strategies.STRATEGIES["finetune"], lr="schedule")
    monkeypatch.setitem(strategies.STRATEGIES, "finetune", changed)
    assert any("finetune" in m and "'lr'" in m for m in undocumented_strategies(protocol()))


def test_a_new_preset_is_reported(monkeypatch):
    monkeypatch.setitem(presets(), "gpu-3seed", dict(model="resnet20"))
    assert undocumented_presets(protocol()) == ["preset gpu-3seed has no row in the Presets table"]


def test_a_new_or_changed_setting_is_reported():
    extra = dataclasses.make_dataclass("CurveSettings", [("points", int, dataclasses.field(default=31)),
                                                         ("smoothing", float, dataclasses.field(default=0.5))])
    missing = undocumented_settings(protocol(), [extra])
    assert any(m.startswith("CurveSettings.points:") for m in missing)
    assert "CurveSettings.smoothing has no row in the analysis settings table" in missing
