"""The layout the README's Architecture section draws: one package a concept, each importing
only packages below it (so no two import each other), few modules at the top, no file over
about 400 lines, and the config package light enough to load without the compute layers."""
import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lthfast"
# Packages from the bottom (README, "Architecture"): a package may import itself and those below.
PACKAGES = ["foundations", "ops", "data", "models", "pruning", "config", "store", "training", "imp",
            "landscape", "study", "report", "cli"]
TOP = ["__init__", "__main__"]  # the only modules at lthfast's top level
RANK = {name: rank for rank, name in enumerate(PACKAGES + TOP)}


def unit(path: Path) -> str:
    """The package (or top-level module) a source file belongs to."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def imported(path: Path) -> set[str]:
    """The lthfast packages `path` imports, at top level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lthfast":
            parts = node.module.split(".")
            names.update([parts[1]] if len(parts) > 1 else [alias.name for alias in node.names])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[1] for a in node.names if a.name.startswith("lthfast."))
    return names - {"_C", "_cuda"}  # the compiled extensions sit beside the packages


def test_no_package_imports_one_above_it():
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 30
    for path in sources:
        own = unit(path)
        assert own in RANK, f"{path} is in no package of the architecture"
        for name in imported(path):
            assert name in RANK, f"{path} imports lthfast.{name}, which is in no package"
            assert RANK[name] <= RANK[own], f"{own} (rank {RANK[own]}) imports {name} (rank {RANK[name]})"
    assert not any("study" in imported(p) for p in (PACKAGE / "report").rglob("*.py"))  # reads the store


def test_the_top_level_holds_packages_and_at_most_eight_modules():
    modules = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert modules == sorted(TOP) and len(modules) <= 8
    packages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert packages == sorted(PACKAGES)


def test_the_readme_draws_the_same_packages_in_the_same_order():
    readme = (PACKAGE.parent / "README.md").read_text()
    section = readme.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    drawn = [line.split()[0].rstrip("/") for line in section.splitlines()
             if line.startswith("    ") and line.split() and line.split()[0].rstrip("/") in RANK]
    assert drawn == list(reversed(PACKAGES)), drawn


def test_no_file_is_over_about_400_lines():
    for path in list(PACKAGE.rglob("*.py")) + list(PACKAGE.parent.glob("tests/*.py")):
        assert len(path.read_text().splitlines()) <= 420, path


def test_the_config_package_loads_without_plots_eigensolvers_or_the_trainer():
    """Reading a study's config (report, power) must not pay for the compute layers."""
    code = ("import sys, lthfast.config.study, lthfast.config.analyses; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'scipy') "
            "or m.startswith(('lthfast.training', 'lthfast.landscape', 'lthfast.study', 'lthfast.store'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
