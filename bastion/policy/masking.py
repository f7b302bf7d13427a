"""Masking of result columns: which columns, how, and the evidence of it.

A column is masked when the server says it comes from a sensitive column, when lineage traces it to one, or
when the query reads sensitive data and the column cannot be proven clean (unknown lineage, whole-row
references, opaque functions). What stays visible still passes the value detectors, cell by cell.

Evidence never holds an original value, nor a plain hash of one (an SSN's SHA-256 falls to brute force in
seconds): each masked value is recorded as HMAC-SHA256 under a key derived from the configured secret,
truncated to 128 bits. Pseudonyms use a second derived key, so a token on screen says nothing about the
audit record. The work is column-wise over batches of rows, because it runs on every row a user sees.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import importlib
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from bastion.config import MaskingSettings, MaskRule, read_secret
from bastion.policy import detectors

FULL_MASK = "••••••"
_STRICTNESS = {"full": 0, "pseudonym": 1, "partial": 2}  # lower is stricter

# Types whose values cannot carry the detectors' kinds of data (numbers too short, dates, flags, ids).
_NO_DETECT_TYPES = frozenset(
    {16, 21, 23, 26, 700, 701, 1082, 1083, 1114, 1184, 1186, 1266, 2950, 869, 650, 829, 774}
)
_NUMERIC = 1700
_MAY_HOLD_NINE_DIGITS = frozenset({23, 700, 701})  # int4, float4, float8


def _never_detected(type_oid: int, type_modifier: int, name: str) -> bool:
    """Whether no value of this type can hold a finding. numeric(p, s) holds fewer than 10**(p-s): with at
    most 12 integer digits never a card (13+), with at most 8 never an SSN (which only counts under an
    SSN-named column). Unconstrained numeric (modifier -1) is scanned."""
    if type_oid in _NO_DETECT_TYPES:
        # int4 and floats hold nine digits: an SSN-named one is scanned (int2, bools, dates never hold one)
        return not (type_oid in _MAY_HOLD_NINE_DIGITS and detectors.names_ssn(name))
    if type_oid != _NUMERIC or type_modifier < 4:
        return False
    packed = type_modifier - 4  # PostgreSQL's NUMERIC_TYPMOD_PRECISION / _SCALE (scale may be negative)
    integer_digits = ((packed >> 16) & 0xFFFF) - (((packed & 0x7FF) ^ 1024) - 1024)
    return integer_digits <= 8 or (integer_digits <= 12 and not detectors.names_ssn(name))


# ---------------------------------------------------------------- keys


class MaskKeys:
    """HMAC keys derived from the configured secret: one for audit records, one for pseudonyms."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the masking HMAC key must be at least 16 bytes")
        self._audit = _HmacSha256(hmac.digest(secret, b"bastion masking audit v1", "sha256"))
        self._pseudonym = _HmacSha256(hmac.digest(secret, b"bastion masking pseudonym v1", "sha256"))

    @classmethod
    def from_settings(cls, settings: MaskingSettings) -> MaskKeys | None:
        if settings.hmac_key_file is None:
            return None
        return cls(read_secret(settings.hmac_key_file).encode("utf-8"))

    def audit_hmac(self, value: Any) -> str:
        """128-bit HMAC-SHA256 of the value's text, hex: what masking records keep."""
        return self._audit.digest(_as_bytes(value))[:16].hex()

    def audit_hmacs(self, encoded: Iterable[bytes]) -> str:
        """audit_hmac of many values as one base64 string of the concatenated 16-byte digests.

        One string per column and batch keeps audit events small and fast to encode (100,000 masked values
        would otherwise be 100,000 JSON strings, each hashed and encoded three times by the log).
        """
        return base64.b64encode(self._audit.digests16(encoded)).decode("ascii")

    def pseudonym(self, value: Any) -> str:
        token = base64.b32encode(self._pseudonym.digest(_as_bytes(value))[:10]).decode("ascii").lower()
        return f"tok_{token}"


def _sha256_constructor() -> Callable[..., Any]:
    """CPython's built-in SHA-256 when it has one: for messages this short OpenSSL's per-call EVP overhead
    costs more than the hashing (HMACs of 100,000 masked values: ~40% less time). Checked against hashlib."""
    for name in ("_sha2", "_sha256"):
        try:
            constructor = getattr(importlib.import_module(name), "sha256", None)
            if constructor is not None and constructor(b"abc").digest() == hashlib.sha256(b"abc").digest():
                return constructor  # type: ignore[no-any-return]
        except Exception:  # noqa: S112 - a missing or odd module: fall back to hashlib
            continue
    return hashlib.sha256


_SHA256 = _sha256_constructor()


class _HmacSha256:
    """HMAC-SHA256 (RFC 2104) with the padded key states computed once: a copy of each per message."""

    def __init__(self, key: bytes) -> None:
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        block = key.ljust(64, b"\0")
        self._inner = _SHA256(bytes(b ^ 0x36 for b in block))
        self._outer = _SHA256(bytes(b ^ 0x5C for b in block))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()  # type: ignore[no-any-return]

    def digests16(self, messages: Iterable[bytes]) -> bytes:
        """The first 16 bytes of each message's HMAC, concatenated: one loop, no call per message."""
        inner_copy, outer_copy = self._inner.copy, self._outer.copy
        out: list[bytes] = []
        append = out.append
        for message in messages:
            inner = inner_copy()
            inner.update(message)
            outer = outer_copy()
            outer.update(inner.digest())
            append(outer.digest()[:16])
        return b"".join(out)


_is_present = functools.partial(operator.is_not, None)


def _value_key(value: Any) -> Any:
    """A hashable key per distinct value: numbers and text as they are, anything else by its repr."""
    return value if isinstance(value, int | str | bytes) else repr(value)


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, memoryview):
        return value.tobytes()
    return str(value).encode("utf-8")


# ---------------------------------------------------------------- styles


def apply_style(style: str, value: Any, keys: MaskKeys | None) -> Any:
    """The masked form of one non-null value."""
    if style == "partial":
        text = value if isinstance(value, str) else str(value)
        tail = text[-4:]
        return f"••••{tail}" if len(text) > 8 else FULL_MASK
    if style == "pseudonym" and keys is not None:
        return keys.pseudonym(value)
    return FULL_MASK


def strictest(styles: Iterable[str]) -> str:
    return min(styles, key=_STRICTNESS.__getitem__, default="full")


# ---------------------------------------------------------------- rules


def matching_rules(rules: Sequence[MaskRule], schema: str, table: str, column: str) -> list[MaskRule]:
    return [rule for rule in rules if rule.matches(schema, table, column)]


def split_table(name: str) -> tuple[str, str]:
    schema, _, table = name.rpartition(".")
    return (schema or "public"), table


# ---------------------------------------------------------------- the plan for one result


@dataclass
class ColumnDecision:
    """How one result column is shown, and why."""

    index: int
    name: str
    masked: bool
    style: str | None = None
    reasons: list[str] = field(default_factory=list)
    exempt_by: list[str] = field(default_factory=list)  # roles that lifted a rule for this user
    detect: bool = True

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "column": self.name, "masked": self.masked}
        if self.masked:
            out["style"] = self.style
        if self.reasons:
            out["reasons"] = self.reasons
        if self.exempt_by:
            out["exempt_by"] = self.exempt_by
        return out


def decide_columns(
    names: Sequence[str],
    *,
    origins: Sequence[Sequence[tuple[str, str, str]]],
    lineage: Sequence[frozenset[tuple[str, str]] | None] | None,
    reads_sensitive: bool,
    rules: Sequence[MaskRule],
    roles: Iterable[str],
    type_oids: Sequence[int] | None = None,
    lineage_reason: str = "",
    type_modifiers: Sequence[int] | None = None,
    bare: Sequence[bool] | None = None,
) -> list[ColumnDecision]:
    """Combine the server's origin report, lineage and the fail-closed rule into one decision per column.

    origins[i]: the (schema, table, column) names the server reports for a plain column reference (with
    partition/inheritance ancestors), empty for expressions.
    lineage[i]: base columns ("schema.table", column) the value may derive from; None = unknown; a
    lineage list of the wrong length (or None) counts as unknown for every column.
    bare[i]: the statement names the column itself (no expression). Partial and pseudonym styles apply only
    to such a plain source column: on a piece or transform of the value, `partial` shows other characters
    than the last four (substr, reverse, lpad…), so anything derived is masked in full.
    """
    role_set = set(roles)
    if lineage is not None and len(lineage) != len(names):
        lineage, lineage_reason = None, "lineage and result columns disagree"
    out = []
    for index, name in enumerate(names):
        decision = ColumnDecision(index, name, masked=False)
        hits: list[tuple[MaskRule, str]] = []
        for origin in origins[index] if index < len(origins) else ():
            hits += [
                (rule, f"server: from {origin[1]}.{origin[2]}") for rule in matching_rules(rules, *origin)
            ]
        sources = lineage[index] if lineage is not None else None
        if sources is not None:
            for table, column in sorted(sources):
                schema, table_name = split_table(table)
                hits += [
                    (rule, f"derived from {table_name}.{column}")
                    for rule in matching_rules(rules, schema, table_name, column)
                ]
        enforced = []
        for rule, why in hits:
            exempt = sorted(role_set.intersection(rule.exempt_roles))
            if exempt:
                decision.exempt_by.extend(r for r in exempt if r not in decision.exempt_by)
                decision.reasons.append(f"{why} ({rule.pattern}), exempt for role {', '.join(exempt)}")
            else:
                enforced.append(rule)
                if why not in decision.reasons:
                    decision.reasons.append(why)
        if enforced:
            style = strictest(rule.style for rule in enforced)
            if style != "full" and not _plain_source(index, origins, sources, bare):
                style = "full"
                decision.reasons.append("derived from the column, not the column itself: masked in full")
            decision.masked, decision.style = True, style
        elif hits:
            decision.detect = False  # every rule is lifted for this role: detectors must not undo that
        elif sources is None and reads_sensitive and not hits:
            decision.masked, decision.style = True, "full"
            decision.reasons.append(
                "cannot be proven clean: "
                + (lineage_reason or "unknown lineage")
                + " in a query reading sensitive data"
            )
        if type_oids is not None and index < len(type_oids):
            modifier = type_modifiers[index] if type_modifiers and index < len(type_modifiers) else -1
            if _never_detected(type_oids[index], modifier, name):
                decision.detect = False
        out.append(decision)
    return out


def _plain_source(
    index: int,
    origins: Sequence[Sequence[tuple[str, str, str]]],
    sources: frozenset[tuple[str, str]] | None,
    bare: Sequence[bool] | None,
) -> bool:
    """The result column is the stored column as it is: the statement names it bare, the server reports
    it as a table column, and lineage finds nothing else in it."""
    if bare is None or index >= len(bare) or not bare[index] or index >= len(origins):
        return False
    origin = {(schema, table, column) for schema, table, column in origins[index]}
    if not origin or not sources:
        return False
    return all((*split_table(table), column) in origin for table, column in sources)


# ---------------------------------------------------------------- applying it to rows


@dataclass
class BatchEvidence:
    """What masking did to one batch: per masked column the HMACs of distinct originals; detector hits."""

    rows: int = 0
    masked_values: dict[int, str] = field(default_factory=dict)  # base64 of concatenated 16-byte HMACs
    masked_counts: dict[int, int] = field(default_factory=dict)
    detector_hits: dict[int, dict[str, int]] = field(default_factory=dict)
    detector_hmacs: dict[int, list[str]] = field(default_factory=dict)


class Masker:
    """Applies column decisions and detectors to batches of rows, column-wise."""

    def __init__(
        self, decisions: list[ColumnDecision], keys: MaskKeys | None, *, detectors_on: bool = True
    ) -> None:
        self.decisions = decisions
        self.keys = keys
        self.detectors_on = detectors_on
        self.masked = [d for d in decisions if d.masked]
        self.scanned = [d for d in decisions if not d.masked and d.detect and detectors_on]
        self.totals = BatchEvidence()

    @property
    def idle(self) -> bool:
        return not self.masked and not self.scanned

    def apply(self, rows: list[tuple[Any, ...]]) -> tuple[list[tuple[Any, ...]], BatchEvidence]:
        evidence = BatchEvidence(rows=len(rows))
        self.totals.rows += len(rows)
        if not rows or self.idle:
            return rows, evidence
        columns = list(zip(*rows, strict=True))
        changed = False
        for decision in self.masked:
            columns[decision.index] = self._mask_column(decision, columns[decision.index], evidence)
            changed = True
        for decision in self.scanned:
            values = columns[decision.index]
            scanned = self._scan_column(decision, values, evidence)
            if scanned is not values:
                columns[decision.index] = scanned
                changed = True
        # rows are rebuilt only when a cell changed: a clean batch of a scan-only result goes out as it came
        return (list(zip(*columns, strict=True)) if changed else rows), evidence

    def _mask_column(
        self, decision: ColumnDecision, values: Sequence[Any], evidence: BatchEvidence
    ) -> list[Any]:
        """Masked values, plus the 128-bit HMAC of each distinct original (base64, 16 bytes per value).

        Text columns (the usual case) take a fast path: distinct values via a dict, the loops in C.
        """
        style = decision.style or "full"
        keys = self.keys
        present = list(filter(_is_present, values))
        text_column = set(map(type, present)) <= {str}  # checked in C, not per value in Python
        distinct: dict[Any, Any]
        if text_column:
            distinct = dict.fromkeys(present)  # value -> None; the keys are the originals
        else:
            distinct = {}
            for v in present:
                distinct.setdefault(_value_key(v), v)
        if keys is not None:
            encoded = map(str.encode, distinct) if text_column else map(_as_bytes, distinct.values())
            evidence.masked_values[decision.index] = keys.audit_hmacs(encoded)
        if style == "full":
            if len(present) == len(values):
                out = [FULL_MASK] * len(values)
            else:
                out = [None if v is None else FULL_MASK for v in values]
        elif text_column:
            shown = {v: apply_style(style, v, keys) for v in distinct}
            out = list(map(shown.get, values))  # None is no key: NULL stays NULL
        else:
            shown = {key: apply_style(style, v, keys) for key, v in distinct.items()}
            out = [None if v is None else shown[_value_key(v)] for v in values]
        evidence.masked_counts[decision.index] = len(present)
        self.totals.masked_counts[decision.index] = self.totals.masked_counts.get(decision.index, 0) + len(
            present
        )
        return out

    def _scan_column(
        self, decision: ColumnDecision, values: Sequence[Any], evidence: BatchEvidence
    ) -> Sequence[Any]:
        # A column named like an SSN makes nine bare digits count (text or number), as the detectors' doc
        # promises: its name goes along as context, and the small-number shortcut does not apply.
        context = decision.name if detectors.names_ssn(decision.name) else None
        if context is None and (_small_numbers(values) or not detectors.column_may_match(values)):
            return values  # proven clean; an SSN-named column (rare) is scanned cell by cell
        out = list(values)
        hits: dict[str, int] = {}
        hmacs: list[str] = []
        for i, value in enumerate(values):
            if value is None:
                continue
            new, kinds = detectors.scan_value(
                value, replace=self._detector_replacement(hmacs), context=context
            )
            if kinds:
                out[i] = new
                for kind in kinds:
                    hits[kind] = hits.get(kind, 0) + 1
        if hits:
            evidence.detector_hits[decision.index] = hits
            evidence.detector_hmacs[decision.index] = hmacs
            total = self.totals.detector_hits.setdefault(decision.index, {})
            for kind, n in hits.items():
                total[kind] = total.get(kind, 0) + n
            return out
        return values

    def _detector_replacement(self, hmacs: list[str]) -> Callable[[detectors.Detection, str], str]:
        keys = self.keys

        def replace(found: detectors.Detection, text: str) -> str:
            if keys is not None:
                hmacs.append(keys.audit_hmac(text[found.start : found.end]))
            return f"[{found.kind}]"

        return replace


def _small_numbers(values: Sequence[Any]) -> bool:
    """A column of numbers too small to be a card number: nothing for the detectors (checked in C)."""
    types = set(map(type, values))
    types.discard(type(None))
    if not types or not types <= _NUMBER_TYPES:
        return False
    present = list(filter(_is_present, values))
    try:
        return min(present) > -_CARD_FLOOR and max(present) < _CARD_FLOOR
    except (TypeError, ArithmeticError):
        return False


_CARD_FLOOR = 10**12  # the shortest card numbers have 13 digits
_NUMBER_TYPES = frozenset((int, Decimal, float))


def redact_error(message: str) -> str:
    """Server error messages go through the detectors too: they can echo a value."""
    return detectors.redact(message)[0]
