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
    text = _ASCII.encode(value)
    if "\\u" in text:
        text = _UTF8.encode(value)
    return text.encode("utf-8")


# Built once: json.dumps with non-default options builds a new encoder on every call, which costs more than
# encoding the small values of an audit record.
_ASCII = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
_UTF8 = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_hash(value: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of value."""
    return sha256_hex(canonical_json(value))
