"""The one hash of lthfast's names: run folders, analysis results, caches and seeds derive
from it, so changing it renames every stored result (tests/test_old_stores.py opens stores
written before and finds everything)."""
from __future__ import annotations

import hashlib
import json


def digest(value, length: int = 64) -> str:
    """The first `length` hex digits of the SHA-256 of `value`: a str as its UTF-8 text, any
    other JSON value as JSON with sorted keys. TypeError if `value` is not JSON."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
