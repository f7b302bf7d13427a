"""Value detectors: what they must find in real formats, what ordinary data they must leave alone, and the
properties the masking layer relies on (never raises, idempotent, shape kept, the column gate is exact)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bastion.policy.detectors as detectors_module
from bastion.policy.detectors import (
    KINDS,
    Detection,
    column_may_match,
    detect,
    redact,
    redact_error,
    scan_value,
)

# ---------------------------------------------------------------- samples

EMAILS = [
    "alice@example.com",
    "ALICE.SMITH@EXAMPLE.COM",
    "bob+newsletter@mail.example.co.uk",
    "first.last-name_99@sub.domain.example.org",
    "x@b.io",
    "jörg.müller@beispiel.de",
]
CARDS = [  # brand test numbers, all Luhn-valid
    "4111111111111111",  # Visa 16
    "4012888888881881",
    "4222222222222",  # Visa 13
    "5555555555554444",  # Mastercard
    "5105105105105100",
    "2221000000000009",  # Mastercard 2-series
    "378282246310005",  # Amex 15
    "371449635398431",
    "6011111111111117",  # Discover
    "6011000990139424",
    "3530111333300000",  # JCB
    "3566002020360505",
    "30569309025904",  # Diners 14
    "38520000023237",
    "6200000000000005",  # UnionPay
    "6759649826438453",  # Maestro
    "5018000000000009",
]
FORMATTED_CARDS = [
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "5555 5555 5555 4444",
    "3782 822463 10005",  # Amex 4-6-5
    "3782-822463-10005",
    "6011 0009 9013 9424",
    "3056 930902 5904",  # Diners 4-6-4
]
IBANS = [
    "DE89 3704 0044 0532 0130 00",
    "GB82 WEST 1234 5698 7654 32",
    "GB29 NWBK 6016 1331 9268 19",
    "FR14 2004 1010 0505 0001 3M02 606",
    "FR76 3000 6000 0112 3456 7890 189",
    "NL91 ABNA 0417 1643 00",
    "ES91 2100 0418 4502 0005 1332",
    "IT60 X054 2811 1010 0000 0123 456",
    "BE68 5390 0754 7034",
    "AT61 1904 3002 3457 3201",
    "CH93 0076 2011 6238 5295 7",
    "NO93 8601 1117 947",
    "PL61 1090 1014 0000 0712 1981 2874",
    "IE29 AIBK 9311 5212 3456 78",
    "MT84 MALT 0110 0001 2345 MTLC AST0 01S",
    "PT50 0002 0123 1234 5678 9015 4",
    "SE45 5000 0000 0583 9825 7466",
    "FI21 1234 5600 0007 85",
    "DK50 0040 0440 1162 43",
    "LU28 0019 4006 4475 0000",
]
SSNS = ["123-45-6789", "123 45 6789", "078-05-1120", "665-01-0001", "899-99-9999"]
PHONES = [
    "+44 20 7946 0958",
    "+1 (415) 555-2671",
    "+14155552671",
    "+49 30 901820",
    "+33 1 23 45 67 89",
    "+33.1.23.45.67.89",
    "+44 (0)20 7946 0958",
    "+81-3-1234-5678",
    "+353 1 234 5678",
    "(415) 555-2671",
    "(415)555-2671",
    "415-555-2671",
    "415.555.2671",
    "1-415-555-2671",
]
POSITIVES = (
    [(e, "email") for e in EMAILS]
    + [(c, "card") for c in CARDS + FORMATTED_CARDS]
    + [(i, "iban") for i in IBANS]
    + [(s, "ssn") for s in SSNS]
    + [(p, "phone") for p in PHONES]
)

# Ordinary data that must come back untouched.
NEGATIVES = [
    # cards: Luhn-invalid, unknown IIN, wrong length, part of a longer number, decimals
    "4111111111111112",
    "4111 1111 1111 1112",
    "1234567890123",
    "9999999999999995",
    "41111111111111111",  # Visa 17 digits
    "378282246310005.00",
    "12345678901234567890",
    "0.4111111111111111",
    # SSN invalid ranges and chains
    "000-12-3456",
    "666-12-3456",
    "900-12-3456",
    "999-45-6789",
    "123-00-4567",
    "123-45-0000",
    "123-45-67890",
    "12-123-45-6789",
    "123-45-6789-01",
    "123456789",
    # IBAN: bad checksum, unknown country, wrong length
    "DE89 3704 0044 0532 0130 01",
    "DE89370400440532013001",
    "XX89 3704 0044 0532 0130 00",
    "DE89 3704 0044 0532 0130",
    # order numbers, prices, dates, times, ids
    "ORD-2024-000123",
    "INV 2024 0001 2345",
    "1234.56",
    "$1,234,567.89",
    "EUR 1.234.567,89",
    "-12345678.90",
    "2024-05-01",
    "2024-05-01T12:34:56Z",
    "2024-05-01T12:34:56.123456+05:30",
    "2024-05-01 12:34:56.789+00",
    "20240501123456",
    "12:34:56",
    "1714566896123",
    "1714566896123456",
    "550e8400-e29b-41d4-a716-446655440000",
    "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
    "123e4567-e89b-12d3-a456-426614174000",
    "192.168.100.200",
    "10.0.0.1:5432",
    "2001:db8::8a2e:370:7334",
    "1.2.3",
    "v10.22.333-rc.4567",
    "1234567890",
    "9876543210",
    "d41d8cd98f00b204e9800998ecf8427e",
    "da39a3ee5e6b4b0d3255bfef95601890afd80709",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    # phones: bare runs, invalid NANP, signed amounts, decimals, exponent notation
    "4155552671",
    "123-456-7890",
    "415-155-2671",
    "415-555-267",
    "+12345678",
    "+3.14159265",
    "+2024-05-01",
    "1.5e+10",
    "x+14155552671",
    # emails that are not
    "icon@2x.png",
    "user@localhost",
    "postgres@10.0.0.1",
    "@dataclass",
    "pkg@1.2.3",
    "Name 123",
    "shipped",
    "",
]


def luhn_ok(digits: str) -> bool:
    """Reference Luhn, written independently of the module."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        n = int(char)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    """Reference mod-97, written independently of the module."""
    compact = iban.replace(" ", "").upper()
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def kinds_of(text: str) -> list[str]:
    return [d.kind for d in detect(text)]


# ---------------------------------------------------------------- true positives


def test_samples_are_valid() -> None:
    assert all(luhn_ok(c) for c in CARDS)
    assert all(luhn_ok(c.replace(" ", "").replace("-", "")) for c in FORMATTED_CARDS)
    assert all(iban_ok(i) for i in IBANS)


@pytest.mark.parametrize(("value", "kind"), POSITIVES)
def test_found_alone(value: str, kind: str) -> None:
    assert detect(value) == [Detection(kind, 0, len(value))]


@pytest.mark.parametrize(("value", "kind"), POSITIVES)
def test_found_inside_text(value: str, kind: str) -> None:
    for template in ("contact: {} (primary)", "{}\n", "id=7, value={}; done", '{{"v": "{}"}}', "[{}]"):
        text = template.format(value)
        start = text.index(value)
        assert detect(text) == [Detection(kind, start, start + len(value))], text


@pytest.mark.parametrize("iban", IBANS)
def test_iban_compact_and_lower_case(iban: str) -> None:
    compact = iban.replace(" ", "")
    assert kinds_of(compact) == ["iban"]
    assert kinds_of(f"IBAN: {compact.lower()}.") == ["iban"]


def test_iban_spaced_lower_case_and_after_a_decoy() -> None:
    assert kinds_of("nl91 abna 0417 1643 00") == ["iban"]
    assert redact("Pay DE12 to DE89 3704 0044 0532 0130 00 now")[0] == "Pay DE12 to [iban] now"
    assert redact("to DE12 or DE89370400440532013000")[0] == "to DE12 or [iban]"


def test_iban_followed_by_more_groups_ends_at_its_length() -> None:
    text = "BE68 5390 0754 7034 SEPA 2024"
    assert detect(text) == [Detection("iban", 0, 19)]


@pytest.mark.parametrize(
    "text",
    [
        "SSN: 123456789",
        "ssn=123456789",
        "social security number 123456789",
        "Soc. Sec. 123456789",
        'ERROR: duplicate key value violates unique constraint "people_ssn_key" DETAIL: Key (ssn)=(123456789)',
        '{"customer_ssn": "123456789"}',
    ],
)
def test_bare_ssn_with_keyword(text: str) -> None:
    found = detect(text)
    assert [d.kind for d in found] == ["ssn"]
    assert text[found[0].start : found[0].end] == "123456789"


def test_bare_nine_digits_need_evidence() -> None:
    assert detect("order 123456789 shipped") == []
    assert detect("ssn 000123456") == []  # area 000
    assert detect("ssn 1234567890") == []  # ten digits
    assert scan_value("123456789") == ("123456789", [])
    assert scan_value("123456789", context="customer_ssn") == ("[ssn]", ["ssn"])
    assert scan_value(123456789, context="SSN") == ("[ssn]", ["ssn"])
    assert scan_value(12345678, context="ssn") == ("[ssn]", ["ssn"])  # leading zero lost in an integer
    assert scan_value(123456789, context="order_id") == (123456789, [])
    assert scan_value({"ssn": 123456789, "id": 123456789}) == ({"ssn": "[ssn]", "id": 123456789}, ["ssn"])


def test_card_windows_inside_longer_runs() -> None:
    assert kinds_of("qty 12 4111 1111 1111 1111") == ["card"]
    assert redact("12 4111 1111 1111 1111")[0] == "12 [card]"
    assert redact("4111 1111 1111 1111 22x")[0] == "[card] 22x"
    assert redact("4111111111111111,4012888888881881")[0] == "[card],[card]"
    assert redact("4111 1111 1111 1111 4012 8888 8888 1881")[0] == "[card] [card]"


def test_several_kinds_in_one_text() -> None:
    text = "Alice <alice@example.com>, card 4111-1111-1111-1111, SSN 123-45-6789, tel +44 20 7946 0958"
    assert kinds_of(text) == ["email", "card", "ssn", "phone"]
    assert redact(text)[0] == "Alice <[email]>, card [card], SSN [ssn], tel [phone]"


def test_email_edges() -> None:
    assert redact("mailto:bob@example.com.")[0] == "mailto:[email]."
    assert redact("...john@example.com")[0] == "...[email]"
    assert redact("git@github.com:org/repo.git")[0] == "[email]:org/repo.git"
    assert redact("a@b.com@c.org")[0] == "[email]@c.org"
    local = "x" * 100
    masked = redact(f"{local}@example.com")[0]  # a local part longer than 64 is still caught (its tail)
    assert masked.endswith("[email]") and "@" not in masked


def test_found_only_after_a_neighbour_is_masked() -> None:
    # The SSN is glued to the email's domain; once the email is masked it stands alone.
    assert redact("x@b.ccX123-45-6789") == (
        "[email][ssn]",
        [Detection("email", 0, 7), Detection("ssn", 7, 18)],
    )


# ---------------------------------------------------------------- true negatives


@pytest.mark.parametrize("text", NEGATIVES)
def test_ordinary_data_untouched(text: str) -> None:
    assert detect(text) == []
    assert redact(text) == (text, [])
    assert scan_value(text) == (text, [])


@given(st.uuids())
def test_uuids_untouched(value: uuid.UUID) -> None:
    assert detect(str(value)) == []
    assert detect(str(value).upper()) == []
    assert scan_value(value) == (value, [])


@given(st.ip_addresses())
def test_ip_addresses_untouched(value: Any) -> None:
    assert detect(str(value)) == []


@given(st.datetimes(timezones=st.just(dt.UTC)))
def test_timestamps_untouched(value: dt.datetime) -> None:
    assert detect(value.isoformat()) == []
    assert detect(str(value)) == []


@given(st.decimals(min_value=-(10**9), max_value=10**9, places=2))
def test_prices_untouched(value: Decimal) -> None:
    assert detect(str(value)) == []
    assert detect(f"{value:,}") == []


@given(st.integers(min_value=0, max_value=10**12 - 1))
def test_integers_below_thirteen_digits_untouched(value: int) -> None:
    assert scan_value(value) == (value, [])
    assert detect(str(value)) == []


# ---------------------------------------------------------------- redact


def test_redact_positions_refer_to_the_original() -> None:
    text = "a: alice@example.com b: 4111 1111 1111 1111 c: DE89 3704 0044 0532 0130 00"
    out, found = redact(text)
    assert out == "a: [email] b: [card] c: [iban]"
    assert [text[d.start : d.end] for d in found] == [
        "alice@example.com",
        "4111 1111 1111 1111",
        "DE89 3704 0044 0532 0130 00",
    ]
    assert found == detect(text)


def test_replace_gets_the_detection_and_the_whole_text() -> None:
    seen: list[tuple[Detection, str]] = []

    def replace(found: Detection, text: str) -> str:
        seen.append((found, text))
        return f"<{found.kind}:{len(text[found.start : found.end])}>"

    text = "to bob@example.org or +1 (415) 555-2671"
    out, found = redact(text, replace)
    assert out == "to <email:15> or <phone:17>"
    assert [d for d, _ in seen] == found
    assert all(t == text for _, t in seen)


def test_redact_error() -> None:
    message = (
        'duplicate key value violates unique constraint "users_email_key"\n'
        "DETAIL:  Key (email)=(Alice.Smith@Example.COM) already exists."
    )
    assert redact_error(message).endswith("Key (email)=([email]) already exists.")
    assert redact_error('relation "orders" does not exist') == 'relation "orders" does not exist'


# ---------------------------------------------------------------- scan_value


def test_scan_value_json_document() -> None:
    doc = {
        "user": {"email": "a@x.io", "tags": ["vip", "b@y.io"], "age": 42, "ok": True, "none": None},
        "cards": [[4111111111111111, "4012 8888 8888 1881"], []],
        "carol@example.com": {"note": "key is an email"},
        "price": 1234.56,
    }
    new, kinds = scan_value(doc)
    assert new == {
        "user": {"email": "[email]", "tags": ["vip", "[email]"], "age": 42, "ok": True, "none": None},
        "cards": [["[card]", "[card]"], []],
        "[email]": {"note": "key is an email"},
        "price": 1234.56,
    }
    assert sorted(kinds) == ["card", "card", "email", "email", "email"]
    assert doc["user"]["email"] == "a@x.io"  # the original is not modified


def test_scan_value_keeps_unchanged_parts_and_types() -> None:
    clean = {"a": [1, 2, {"b": "c"}], "d": ("x", 1)}
    new, kinds = scan_value(clean)
    assert new is clean and kinds == []
    record = ("alice@example.com", 7, ("nested", "bob@example.com"))
    new, kinds = scan_value(record)
    assert new == ("[email]", 7, ("nested", "[email]")) and isinstance(new, tuple)
    assert kinds == ["email", "email"]


def test_scan_value_colliding_redacted_keys_keep_every_entry() -> None:
    new, kinds = scan_value({"a@x.com": 1, "b@x.com": 2, "[email]": 3})
    assert new == {"[email]": 1, "[email]#2": 2, "[email]#3": 3}
    assert kinds == ["email", "email"]


def test_scan_value_numbers() -> None:
    assert scan_value(4111111111111111) == ("[card]", ["card"])
    assert scan_value(378282246310005) == ("[card]", ["card"])
    assert scan_value(Decimal("4111111111111111")) == ("[card]", ["card"])
    assert scan_value(Decimal("4111111111111111.00")) == ("[card]", ["card"])
    assert scan_value(4111111111111111.0) == ("[card]", ["card"])
    for value in (
        4111111111111112,  # Luhn
        1234567890123,  # no IIN
        1714566896123456,  # epoch microseconds
        -4111111111111111,  # negative: an amount, not a card
        Decimal("4111111111111111.5"),
        Decimal("NaN"),
        Decimal("1E+400"),
        float("inf"),
        float("nan"),
        1e300,
        10**400,
        True,
        0,
    ):
        new, kinds = scan_value(value)
        assert kinds == [] and (new is value or new == value or value != value)


def test_scan_value_number_replacement_gets_its_text() -> None:
    calls: list[tuple[Detection, str]] = []

    def replace(found: Detection, text: str) -> str:
        calls.append((found, text))
        return "X"

    assert scan_value(4111111111111111, replace) == ("X", ["card"])
    assert calls == [(Detection("card", 0, 16), "4111111111111111")]


def test_scan_value_bytes() -> None:
    clean = b"plain bytes 123"
    assert scan_value(clean)[0] is clean
    assert scan_value(b"mail alice@example.com") == ("mail [email]", ["email"])
    assert scan_value(bytearray(b"4111 1111 1111 1111")) == ("[card]", ["card"])
    assert scan_value(memoryview(b"ssn 123-45-6789")) == ("ssn [ssn]", ["ssn"])
    assert scan_value(b"\xff\xfe alice@example.com \xc3") == ("\ufffd\ufffd [email] \ufffd", ["email"])
    binary = bytes(range(256)) * 4
    assert scan_value(binary)[0] is binary


def test_scan_value_other_types_unchanged() -> None:
    for value in (
        None,
        True,
        dt.date(2024, 5, 1),
        dt.datetime(2024, 5, 1, 12, 34),
        uuid.uuid4(),
        dt.timedelta(1),
    ):
        new, kinds = scan_value(value)
        assert new is value and kinds == []


def test_scan_value_deeply_nested() -> None:
    doc: Any = "alice@example.com"
    for _ in range(5000):
        doc = [doc]
    new, kinds = scan_value(doc)
    assert kinds == ["email"]
    for _ in range(5000):
        new = new[0]
    assert new == "[email]"


def test_scan_value_with_the_masking_layers_replacement() -> None:
    """As bastion.policy.masking uses it: the callback slices the finding out of the text it is given."""
    originals: list[str] = []

    def replace(found: Detection, text: str) -> str:
        originals.append(text[found.start : found.end])
        return f"[{found.kind}]"

    new, kinds = scan_value(
        ["x alice@example.com y", {"k": 4111111111111111}, b"DE89370400440532013000"], replace
    )
    assert new == ["x [email] y", {"k": "[card]"}, "[iban]"]
    assert kinds == ["email", "card", "iban"]
    assert originals == ["alice@example.com", "4111111111111111", "DE89370400440532013000"]


# ---------------------------------------------------------------- column gate


def test_column_may_match() -> None:
    assert not column_may_match(["shipped", "Name 123", None, "12:34", "v1.2.3"])
    assert not column_may_match(["2024-05-01", "12:34:56", "6ba7b810-9dad-11d1-80b4-00c04fd430c8"])
    assert column_may_match(["2024-05-01 12:34:56"])  # ten digits close together: scanned, found clean
    assert column_may_match(["shipped", "alice@example.com"])
    assert column_may_match(["x", "4111 1111 1111 1111"])
    assert not column_may_match([1, 2, None, True, 1234567890123, dt.date(2024, 1, 1)])
    assert column_may_match([1, 4111111111111111])
    assert column_may_match([{"a": 1}])
    assert column_may_match([b"x"])
    assert not column_may_match(iter(["a", "b"]))
    assert not column_may_match([])
    # nine digits split over two cells are not a region of nine digits in one cell
    assert not column_may_match(["12345", "6789"])
    assert column_may_match(["x", "+1 234 5678"])  # an E.164 number needs only eight digits


CHARS = "0123456789" * 3 + " -.()+@:,/_abcxyzDEGBNLSsn\n"
digit_heavy = st.text(alphabet=CHARS, max_size=60)


@settings(max_examples=300)
@given(st.lists(digit_heavy | st.text(max_size=20), max_size=8))
def test_column_gate_is_exact(values: list[str]) -> None:
    if not column_may_match(values):
        assert all(scan_value(v) == (v, []) for v in values)


# ---------------------------------------------------------------- properties


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.decimals(allow_nan=True)
    | st.text()
    | digit_heavy
    | st.binary(max_size=30),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=10) | digit_heavy, children, max_size=4)
        | st.tuples(children, children)
    ),
    max_leaves=25,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_scan_value_never_raises_and_keeps_shape(value: Any) -> None:
    new, kinds = scan_value(value)
    assert all(k in KINDS for k in kinds)
    assert shape(new) == shape(value)
    again, more = scan_value(new)
    assert more == [] and repr(again) == repr(new)  # repr: NaN and sNaN do not compare equal


def shape(value: Any) -> Any:
    """Container types and sizes, leaves reduced to 'leaf': what scan_value must keep."""
    if isinstance(value, dict):
        return ("dict", len(value), sorted((shape(v) for v in value.values()), key=repr))
    if isinstance(value, list | tuple):
        return (type(value).__name__, [shape(v) for v in value])
    return "leaf"


@settings(max_examples=400)
@given(st.text() | digit_heavy)
def test_text_properties(text: str) -> None:
    found = detect(text)
    assert all(a.end <= b.start for a, b in itertools.pairwise(found))
    assert all(0 <= d.start < d.end <= len(text) and d.kind in KINDS for d in found)
    out, redacted_found = redact(text)
    assert redacted_found == found
    assert redact(out) == (out, [])  # idempotent: nothing left to find
    assert redact_error(text) == out
    if not found:
        assert out == text


SAMPLES = [v for v, _ in POSITIVES] + ["SSN 123456789"]
# Ordinary data, less the negatives holding what a sample shows as found inside a longer number
# ('123-45-67890'), or without the sample's context ('123456789' is an SSN only after 'SSN').
FOUND_IN_SAMPLES = [s[d.start : d.end] for s in SAMPLES for d in detect(s)]
FILLER = [f for f in NEGATIVES if not any(s in f for s in FOUND_IN_SAMPLES)] + ["the", "Order", "id", "paid"]
documents = st.lists(st.sampled_from(SAMPLES) | st.sampled_from(FILLER) | st.text(max_size=6), max_size=10)


@settings(max_examples=400)
@given(documents, st.sampled_from([", ", " | ", "\n", "; "]))
def test_documents_lose_every_finding(parts: list[str], joiner: str) -> None:
    text = joiner.join(parts)
    out, found = redact(text)
    for d in found:
        assert text[d.start : d.end] not in out
    for part in parts:
        if part in SAMPLES:
            assert part not in out
    assert redact(out) == (out, [])


@settings(max_examples=300)
@given(st.text(alphabet="0123456789" * 4 + " -.()ax,", min_size=5, max_size=50))
def test_fast_path_matches_the_reference_pattern(text: str) -> None:
    """The per-region shortcuts give exactly what the one regex over the whole text gives."""
    fast: list[tuple[int, int, str]] = []
    for m in detectors_module._REGION.finditer(text):
        detectors_module._region_kinds(text, m.start(), m.end(), fast)
    reference: list[tuple[int, int, str]] = []
    detectors_module._find_digit_kinds(text, 0, len(text), reference)
    assert sorted(set(fast)) == sorted(set(reference))


def test_json_round_trip_of_a_result_row() -> None:
    row = json.loads('{"id": 7, "contact": {"mail": "Bob@Example.com", "phones": ["+49 30 901820"]}}')
    new, kinds = scan_value(row)
    assert new == {"id": 7, "contact": {"mail": "[email]", "phones": ["[phone]"]}}
    assert kinds == ["email", "phone"]
