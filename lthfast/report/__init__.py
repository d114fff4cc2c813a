"""REPORT.md from the store: results, findings, published values, power, figures, markdown."""
