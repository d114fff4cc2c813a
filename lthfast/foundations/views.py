"""Read-only views of a registry (a module-level {name: entry} dict): what other modules and
settings read as a plain mapping stays current when an entry is registered later, or when a
test swaps the registry for a copy (tests/test_registries.py)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Callable


class View(Mapping):
    """{name: entry}, or {name: one field of the entry}; `table` returns the registry's dict
    at each access. Iterating yields the names, so a View serves as a setting's `choices`."""

    def __init__(self, table: Callable[[], dict], field: str | None = None):
        self._table, self._field = table, field

    def __getitem__(self, name):
        entry = self._table()[name]
        return entry if self._field is None else getattr(entry, self._field)

    def __iter__(self):
        return iter(list(self._table()))

    def __len__(self) -> int:
        return len(self._table())

    def __repr__(self) -> str:
        return repr(dict(self))
