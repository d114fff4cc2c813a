"""REPORT.md from the store: results, findings, published values, power, figures, markdown;
and export, the stored numbers as one table (`frame(root)`: a pandas DataFrame)."""
import importlib

__all__ = ["frame"]


def __getattr__(name):
    # `lthfast.report.frame` on first use: the report's own modules import this package
    # (`from lthfast.report import figures`) without paying for the export's imports.
    if name == "frame":
        return importlib.import_module("lthfast.report.export").frame
    raise AttributeError(f"module 'lthfast.report' has no attribute {name!r}")
