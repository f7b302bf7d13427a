"""Canonical JSON and hashing: one byte-exact encoding so hashes and signatures agree everywhere."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8; NaN/Infinity refused (not JSON).

    CPython's ASCII-only string encoder is several times faster than the UTF-8 one on long ASCII text (the
    masking evidence). Both give the same bytes when the ASCII output holds no `\\u` escape (no character
    outside ASCII, no control character); otherwise the UTF-8 encoder gives the canonical form.
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    if "\\u" in text:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_hash(value: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of value."""
    return sha256_hex(canonical_json(value))
