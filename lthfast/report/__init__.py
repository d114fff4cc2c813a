"""REPORT.md from the store: results, findings, published values, power, figures, markdown;
and export, the stored numbers as one table (`frame(root)`: a pandas DataFrame)."""
from lthfast.report.export import frame

__all__ = ["frame"]
