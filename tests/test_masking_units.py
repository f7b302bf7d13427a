"""Masker and mask keys without a database: the fast paths must give exactly what the plain definitions give."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
from decimal import Decimal
from typing import Any

import pytest

from bastion.policy import masking
from bastion.policy.masking import (
    FULL_MASK,
    ColumnDecision,
    Masker,
    MaskKeys,
    _HmacSha256,
    _never_detected,
    apply_style,
    decide_columns,
)

SECRET = b"unit-test masking secret, 32+ bytes"
AUDIT_KEY = hmac.digest(SECRET, b"bastion masking audit v1", "sha256")


def reference_hmac(value: bytes) -> bytes:
    return hmac.digest(AUDIT_KEY, value, "sha256")[:16]


def text_of(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


@pytest.mark.parametrize("builtin", [True, False], ids=["builtin-sha256", "hashlib-sha256"])
@pytest.mark.parametrize("key_size", [16, 32, 64, 65, 200])
def test_hmac_is_stdlib_hmac_sha256(key_size: int, builtin: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not builtin:  # the fallback when CPython has no built-in SHA-256 module
        monkeypatch.setattr(masking, "_SHA256", hashlib.sha256)
    key = bytes(range(256))[:key_size]
    ours = _HmacSha256(key)
    messages = [b"", b"a", "ünïcode@example.com".encode(), b"x" * 55, b"y" * 56, b"z" * 64, b"w" * 1000]
    for message in messages:
        assert ours.digest(message) == hmac.digest(key, message, "sha256")
    assert ours.digests16(messages) == b"".join(hmac.digest(key, m, "sha256")[:16] for m in messages)


def test_audit_records_are_truncated_hmac_sha256_under_the_derived_key() -> None:
    keys = MaskKeys(SECRET)
    values = [f"user{i}@example.com" for i in range(50)]
    assert keys.audit_hmac(values[0]) == reference_hmac(values[0].encode()).hex()
    joined = base64.b64decode(keys.audit_hmacs(v.encode() for v in values))
    assert joined == b"".join(reference_hmac(v.encode()) for v in values)
    assert keys.pseudonym("a") == keys.pseudonym("a") != keys.pseudonym("b")
    assert keys.pseudonym("a") != MaskKeys(b"another secret of 16+ bytes").pseudonym("a")


def reference_apply(
    decisions: list[ColumnDecision], keys: MaskKeys | None, rows: list[tuple[Any, ...]]
) -> tuple[list[tuple[Any, ...]], dict[int, bytes]]:
    """Masking cell by cell, as its definition reads (masked columns only)."""
    out = [list(row) for row in rows]
    evidence: dict[int, bytes] = {}
    for d in decisions:
        if not d.masked:
            continue
        distinct: dict[Any, Any] = {}
        for row in rows:
            value = row[d.index]
            if value is not None:
                key = value if isinstance(value, int | str | bytes) else repr(value)
                distinct.setdefault(key, value)
        evidence[d.index] = b"".join(reference_hmac(text_of(v)) for v in distinct.values())
        for i, row in enumerate(rows):
            value = row[d.index]
            out[i][d.index] = None if value is None else apply_style(d.style or "full", value, keys)
    return [tuple(row) for row in out], evidence


@pytest.mark.parametrize("style", ["full", "partial", "pseudonym"])
def test_masker_gives_what_the_definition_gives(style: str) -> None:
    rng = random.Random(7)
    pool: list[Any] = [None, "", "short", "a longer value 1234", "ünïcode ✓ value", "a longer value 1234"]
    numbers: list[Any] = [None, 0, 7, 123456789, Decimal("12.50"), Decimal("12.5"), 2.5]
    mixed: list[Any] = [None, "text value", 42, b"raw bytes here", Decimal("1.0")]
    rows = [(i, rng.choice(pool), rng.choice(numbers), rng.choice(mixed)) for i in range(300)]
    decisions = [ColumnDecision(0, "id", masked=False, detect=False)] + [
        ColumnDecision(i, name, masked=True, style=style) for i, name in ((1, "t"), (2, "n"), (3, "m"))
    ]
    keys = MaskKeys(SECRET)
    masker = Masker(decisions, keys)
    for start in range(0, len(rows), 100):
        batch = rows[start : start + 100]
        got, evidence = masker.apply(batch)
        want, want_evidence = reference_apply(decisions, keys, batch)
        assert got == want
        assert {i: base64.b64decode(v) for i, v in evidence.masked_values.items()} == want_evidence
        for index in (1, 2, 3):
            assert evidence.masked_counts[index] == sum(row[index] is not None for row in batch)
    assert masker.totals.rows == len(rows)


def test_full_mask_keeps_nulls_and_shows_nothing_else() -> None:
    masker = Masker([ColumnDecision(0, "ssn", masked=True, style="full")], None)
    rows, _ = masker.apply([("123-45-6789",), (None,), ("078-05-1120",)])
    assert rows == [(FULL_MASK,), (None,), (FULL_MASK,)]
    rows, _ = masker.apply([("123-45-6789",), ("078-05-1120",)])
    assert rows == [(FULL_MASK,), (FULL_MASK,)]


def test_clean_batch_of_a_scan_only_result_is_passed_through() -> None:
    masker = Masker([ColumnDecision(0, "name", masked=False), ColumnDecision(1, "n", masked=False)], None)
    rows = [("Ada", 1), ("Grace", 2)]
    out, evidence = masker.apply(rows)
    assert out is rows and not evidence.detector_hits
    out, evidence = masker.apply([("mail ada@example.org", 1), ("Grace", 2)])
    assert out == [("mail [email]", 1), ("Grace", 2)] and evidence.detector_hits == {0: {"email": 1}}


def numeric(precision: int, scale: int) -> int:
    """PostgreSQL's typmod of numeric(precision, scale)."""
    return ((precision << 16) | (scale & 0x7FF)) + 4


@pytest.mark.parametrize(
    ("modifier", "name", "never"),
    [
        (numeric(12, 2), "total", True),  # below 10**10: no card, no SSN
        (numeric(14, 2), "amount", True),  # 12 integer digits: still no card
        (numeric(13, 0), "amount", False),  # 13 digits: may be a card
        (numeric(20, 4), "amount", False),
        (numeric(12, 0), "ssn", False),  # nine digits fit: an SSN under an SSN-named column
        (numeric(9, 0), "ssn_number", False),
        (numeric(8, 0), "ssn", True),
        (numeric(5, -7), "amount", True),  # negative scale (PostgreSQL 15+): 12 integer digits
        (numeric(5, -8), "amount", False),  # 13
        (-1, "amount", False),  # unconstrained numeric
    ],
)
def test_numeric_columns_skip_detectors_only_when_no_value_can_match(
    modifier: int, name: str, never: bool
) -> None:
    assert _never_detected(1700, modifier, name) is never


def test_type_modifiers_reach_the_decision_and_wide_numbers_are_still_scanned() -> None:
    decisions = decide_columns(
        ["total", "big", "id", "note"],
        origins=[[], [], [], []],
        lineage=None,
        reads_sensitive=False,
        rules=[],
        roles=[],
        type_oids=[1700, 1700, 20, 25],
        type_modifiers=[numeric(12, 2), numeric(20, 0), -1, -1],
    )
    assert [d.detect for d in decisions] == [False, True, True, True]
    masker = Masker(decisions, MaskKeys(SECRET))
    rows, evidence = masker.apply([(Decimal("1.50"), Decimal("4111111111111111"), 4111111111111111, "x")])
    assert rows == [(Decimal("1.50"), "[card]", "[card]", "x")]
    assert evidence.detector_hits == {1: {"card": 1}, 2: {"card": 1}}


def test_ssn_named_column_outside_the_rules_is_still_caught() -> None:
    """Nine bare digits count as an SSN under an SSN-named column (text, int4 or int8), never elsewhere."""
    decisions = decide_columns(
        ["ssn", "tax_ssn", "order_no", "employee_ssn"],
        origins=[[], [], [], []],
        lineage=None,
        reads_sensitive=False,
        rules=[],
        roles=[],
        type_oids=[25, 23, 23, 20],
        type_modifiers=[-1, -1, -1, -1],
    )
    assert [d.detect for d in decisions] == [True, True, False, True]
    masker = Masker(decisions, MaskKeys(SECRET))
    rows, evidence = masker.apply([("536221234", 536221234, 536221234, 536221234), (None, 7, 8, None)])
    assert rows == [("[ssn]", "[ssn]", 536221234, "[ssn]"), (None, 7, 8, None)]
    assert evidence.detector_hits == {0: {"ssn": 1}, 1: {"ssn": 1}, 3: {"ssn": 1}}


@pytest.mark.parametrize(
    ("bare", "index_width", "style"),
    [
        (False, 1, "full"),  # derived (not named bare): never partial, whatever the table's name
        (True, 1, "partial"),
        (True, 12, "partial"),  # a column past the table name's length keeps its style when bare
    ],
)
def test_partial_style_only_for_a_bare_column(bare: bool, index_width: int, style: str) -> None:
    """The table name ("emp") must not stand in for the per-column bare flags."""
    from bastion.config import MaskRule

    names = [f"c{i}" for i in range(index_width - 1)] + ["ssn"]
    origins = [[] for _ in names[:-1]] + [[("hr", "emp", "ssn")]]
    lineage = [frozenset() for _ in names[:-1]] + [frozenset({("hr.emp", "ssn")})]
    rule = MaskRule("hr.emp.ssn", "hr", "emp", "ssn", "partial", ())
    decisions = decide_columns(
        names,
        origins=origins,
        lineage=lineage,
        reads_sensitive=True,
        rules=[rule],
        roles=[],
        bare=[True] * (len(names) - 1) + [bare],
    )
    assert decisions[-1].masked and decisions[-1].style == style
