"""canonical_json takes a fast path for ASCII output; it must give exactly the canonical UTF-8 form."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.canonical import canonical_json

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=25,
)


def reference(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


@settings(max_examples=400, deadline=None)
@given(JSON)
def test_same_bytes_as_the_utf8_encoder(value: Any) -> None:
    assert canonical_json(value) == reference(value)


def test_escapes_and_non_ascii_take_the_utf8_form() -> None:
    for value in ["é", "\\u00e9", "a\x01b", "\u2028", {"k\u00fc": "\\"}, ["x" * 5000, "ß"]]:
        assert canonical_json(value) == reference(value)
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()


def test_nan_and_infinity_are_refused() -> None:
    import pytest

    for value in (float("nan"), {"a": float("inf")}, [1.0, float("-inf")]):
        with pytest.raises(ValueError):
            canonical_json(value)
