"""Value detectors: the third masking layer, the last wall when lineage fails.

Every text, JSON and array cell of a result and every server error message passes through here; what is
found is replaced. Recall matters, but so does precision: false positives on order numbers, prices, dates,
UUIDs, IPs or ids make engineers route around the bastion. So every kind needs structure, not just digits:

- ``email``: ``local@domain.tld`` found from each ``@`` (up to 64 local-part characters back, so no
  quadratic scan); the TLD is letters only, and common file extensions (``icon@2x.png``) are not TLDs.
- ``card``: 13-19 digits, bare or in groups of 3-8 joined by one consistent single space or dash, Luhn-valid,
  with a known IIN and a length that brand issues: Visa 4 (13/16/19), Mastercard 51-55 and 2221-2720 (16),
  Amex 34/37 (15), Discover 6011/644-649/65, JCB 3528-3589, Diners 300-305/36/38 (14-19), UnionPay 62,
  Maestro 50/56-69 (13-19). Never part of a longer number or a decimal, never right after ``+`` (a phone).
- ``ssn``: ``AAA-GG-SSSS`` or ``AAA GG SSSS``, area not 000/666/900-999, group not 00, serial not 0000, and
  not inside a longer chain of numbers. Nine bare digits are an SSN only with evidence: a keyword right
  before them (``ssn``, ``social security``, ``soc sec``; e.g. PostgreSQL's ``Key (ssn)=(123456789)``) or
  a column / JSON key naming an SSN. Without it, nine bare digits are far more often an id or a phone.
- ``iban``: country code in the length table (SEPA, GB and the other IBAN countries), check digits 02-98,
  BBAN of the exact length, mod-97 == 1; compact or spaced every four.
- ``phone``: ``+CC`` E.164 with 8-15 digits and single separators (space, dash, dot, parentheses); a compact
  ``+digits`` needs 10-15 digits, since ``+12345678`` is more often a signed amount. NANP only as
  ``(NXX) NXX-XXXX``, ``NXX-NXX-XXXX`` or ``NXX.NXX.XXXX`` (N = 2-9, optional leading ``1``). Never bare
  digit runs, dates, times, IPs or decimals; no national formats without ``+`` outside NANP.

Bare numbers (int, Decimal, float cells) are checked for cards only: a positive whole number of 13-19 digits
with IIN and Luhn. Most bigint ids (sequences, epoch-millisecond or snowflake ids starting with 1) fail the
IIN check; ~10% of 13-19 digit ids starting with 3-6 pass Luhn, the accepted cost. An int below 10**12
returns at once. Nine-digit numbers are SSNs only under an SSN-named column (``context=``) or JSON key:
elsewhere every nine-digit id would be one. Phones are never looked for in numbers: without a ``+`` or
punctuation a phone is indistinguishable from an id.

Overlapping findings are merged (their union is replaced) so no fragment of either stays visible, and the
masked text is scanned again until nothing new appears (``x@y.ccX123-45-6789`` shows an SSN once the email
is gone), which makes ``redact`` idempotent. Only ASCII digits count; full-width digits are not recognised.

Speed: every cell goes through ``scan_value``. A cell with no ``@``, no ``+`` and no region of nine digits
close together returns after one regex search that skips to digits in C; the exact patterns run only on
those regions, and the most common shapes (a bare run, one separator throughout, ``(NXX) NXX-XXXX``) are
settled in plain Python with no further regex. ``column_may_match`` proves a whole text column clean with
one search. The IBAN check assumes a run of 9 digits in the BBAN, true of every country's real IBANs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

__all__ = [
    "KINDS",
    "Detection",
    "Replace",
    "column_may_match",
    "detect",
    "names_ssn",
    "redact",
    "redact_error",
    "scan_value",
]

EMAIL = "email"
CARD = "card"
SSN = "ssn"
IBAN = "iban"
PHONE = "phone"
KINDS = (EMAIL, CARD, SSN, IBAN, PHONE)


@dataclass(frozen=True, slots=True)
class Detection:
    """One finding: its kind and the [start, end) span in the text it was found in."""

    kind: str
    start: int
    end: int


#: ``replace(detection, text)`` gets the WHOLE text the detection's positions refer to (so
#: ``text[detection.start:detection.end]`` is the finding) and returns what is shown instead of the finding.
Replace = Callable[[Detection, str], str]

_Span = tuple[int, int, str]

# ---------------------------------------------------------------- prefilter

# Bytes: every kind except email needs at least 7 ASCII digits (UTF-8 keeps ASCII bytes as they are), so
# bytes with fewer and no '@' are clean without decoding. Unrolled: a repeated group is slower.
_GATE_BYTES = re.compile(rb"[^0-9]*+[0-9]" * 7)
_CARD_MIN = 10**12  # below this an integer has at most 12 digits: no card
_CARD_MAX = 10**19

# ---------------------------------------------------------------- email

# An email is up to 64 local-part characters, '@', a dotted domain with a letters-only TLD. Searched from at
# most 64 characters before an '@', the leftmost match starts where the local part does; when the '@' is
# further into the text, the local part is found backwards instead (a forward search would try every
# position of those 64). Possessive repeats only on single classes: Python 3.11.2 mishandles them on groups.
_DOMAIN_PATTERN = r"[^\W_][\w-]*(?:\.[\w-]+)*\.([^\W\d_]{2,63}+)"
_EMAIL = re.compile(r"[\w.%+-]{1,64}+@" + _DOMAIN_PATTERN)
_DOMAIN = re.compile(_DOMAIN_PATTERN)
_LOCAL_REVERSED = re.compile(r"[\w.%+-]{0,64}")
_NOT_TLDS = frozenset(
    ("png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tif", "tiff", "pdf", "css", "js", "mjs",
     "cjs", "json", "html", "htm", "txt", "csv", "tsv", "log", "xml", "yaml", "yml", "toml", "ini", "cfg",
     "conf", "ts", "tsx", "jsx", "gz", "tgz", "bak", "tmp", "lock")
)  # fmt: skip


def _find_emails(text: str, out: list[_Span]) -> None:
    """From each '@' (str.find, in C): the local part before it, the domain after it."""
    find = text.find
    pos = 0
    at = find("@")
    while at != -1:
        low = max(pos, at - 64)
        if at - low <= 24:
            m = _EMAIL.search(text, low)
            if m is None:
                return
            start = m.start()
            at = find("@", start)  # the match's own '@', maybe a later one (the local part has none)
            domain_end = m.end()
            tld = m.group(1)
        else:
            domain = _DOMAIN.match(text, at + 1)
            if domain is None:
                at = find("@", at + 1)
                continue
            start = at - _LOCAL_REVERSED.match(text[low:at][::-1]).end()  # type: ignore[union-attr]
            domain_end = domain.end()
            tld = domain.group(1)
        if tld.lower() in _NOT_TLDS:  # 'icon@2x.png'
            pos = at + 1
        else:
            while start < at and text[start] in ".+-%":
                start += 1
            if start < at:
                out.append((start, domain_end, EMAIL))
            pos = domain_end
        at = find("@", pos)


# ---------------------------------------------------------------- card, SSN, NANP phone: digit shapes

# Every card, SSN and NANP phone, and every IBAN's BBAN in practice, holds a region of >= 9 digits joined by
# at most 3 of ' ().-'. The exact patterns run only on those regions, with endpos one past the region so
# their lookaheads still see the real next character (lookbehinds see before pos anyway). Clean text with
# dates, times, UUIDs or prices mostly has none. Starts at a digit and unrolled: both matter for speed.
_REGION = re.compile(r"[0-9]" + r"[ ().\-]{0,3}+[0-9]" * 8 + r"[0-9 ().\-]*+")
# An E.164 number has >= 8 digits with at most two separator characters between them.
_E164_HINT = re.compile(r"\+[1-9](?:[ ().\-]{0,2}[0-9]){7}")


def _may_match(text: str) -> bool:
    """The prefilter: no '@', no '+' and no region means nothing to find. A region search is cheaper than a
    digit count on ordinary text, since it skips to digits in C. Cells joined with NUL (which no region
    spans) get the same answer in one search."""
    return (
        "@" in text
        or _REGION.search(text) is not None
        or ("+" in text and _E164_HINT.search(text) is not None)
    )


# One pass over a region for cards, SSNs and NANP phones. A card candidate is the whole run of digit groups
# joined by single spaces/dashes (not glued to letters, '+' or a decimal point, and starting where the run
# starts), matched inside a lookahead so it consumes nothing: SSNs and phones inside the run are still seen.
_DIGIT_KINDS = re.compile(
    r"""
      (?<![0-9A-Za-z+])(?<![0-9][.\ -])
      (?=(?P<card>[0-9]++(?:[\ -][0-9]++)*)(?![0-9A-Za-z]|\.[0-9]))
    | (?<![0-9A-Za-z])(?<![0-9][-.])
      (?P<ssn_dashed>[0-9]{3}-[0-9]{2}-[0-9]{4})(?![0-9A-Za-z]|[-.][0-9])
    | (?<![0-9A-Za-z])(?<![0-9][\ .])
      (?P<ssn_spaced>[0-9]{3}\ [0-9]{2}\ [0-9]{4})(?![0-9A-Za-z]|[\ .][0-9])
    | (?<![0-9A-Za-z])(?<![0-9][-.])
      (?P<nanp>(?:1[-.\ ])?
        (?:\([2-9][0-9]{2}\)\ ?[2-9][0-9]{2}[-.\ ]|[2-9][0-9]{2}(?P<sep>[-.])[2-9][0-9]{2}(?P=sep))
        [0-9]{4})(?![0-9A-Za-z]|[-.][0-9])
    """,
    re.VERBOSE,
)
_DIGITS = re.compile(r"[0-9]+")
_LUHN_DOUBLE = bytes.maketrans(b"0123456789", b"0246813579")  # digit -> digit sum of its double


def _luhn(digits: str) -> bool:
    """Luhn over ASCII digits, in C: byte sums instead of a Python loop."""
    raw = digits.encode("ascii")
    return (sum(raw[-1::-2] + raw[-2::-2].translate(_LUHN_DOUBLE)) - 48 * len(raw)) % 10 == 0


# Only Visa ever issued 13-digit numbers; Maestro/UnionPay/Discover start at 16 (Maestro 12-19 in theory,
# 13-15 never seen in the field). Allowing 13 for 5x/6x flagged one EAN-13 barcode in ten (GS1 prefixes).
_ANY_LENGTH = frozenset(range(16, 20))
# Card lengths by the first two digits; None where the IIN needs three or four digits (30, 35, 22-27).
_IIN: dict[str, frozenset[int] | None] = {
    **{f"4{d}": frozenset((13, 16, 19)) for d in "0123456789"},  # Visa
    **{f"5{d}": frozenset((16,)) for d in "12345"},  # Mastercard
    **{f"5{d}": _ANY_LENGTH for d in "06789"},  # Maestro
    **{f"6{d}": _ANY_LENGTH for d in "0123456789"},  # Discover 6011/644-649/65, UnionPay 62, Maestro
    "34": frozenset((15,)),  # Amex
    "37": frozenset((15,)),
    "36": frozenset(range(14, 20)),  # Diners
    "38": frozenset(range(14, 20)),
    "30": None,  # Diners 300-305
    "35": None,  # JCB 3528-3589
    **{f"2{d}": None for d in "234567"},  # Mastercard 2221-2720
}
_NO_IIN: frozenset[int] = frozenset()


def _is_card(d: str) -> bool:
    """A length that the brand of the IIN issues, then Luhn."""
    n = len(d)
    if n < 13 or n > 19:
        return False
    prefix = d[:2]
    lengths = _IIN.get(prefix, _NO_IIN)
    if lengths is None:
        if prefix == "30":
            ok = d[2] <= "5" and n >= 14
        elif prefix == "35":
            ok = "3528" <= d[:4] <= "3589" and n >= 16
        else:
            ok = "2221" <= d[:4] <= "2720" and n == 16
        return ok and _luhn(d)
    return n in lengths and _luhn(d)


def _region_kinds(text: str, start: int, end: int, out: list[_Span]) -> None:
    """Cards, SSNs and NANP phones in one region: common shapes in plain Python, the rest by _DIGIT_KINDS.

    The fast path covers a region that is bare digits, '(NXX) NXX-XXXX', or uses one single separator
    throughout, with no letter right before or after; it finds what _DIGIT_KINDS would.
    """
    length = len(text)
    before = text[start - 1] if start else " "
    if before == "+":
        return  # the digits of an E.164 number (_find_e164s); cards and SSNs never follow a '+'
    core = text[start:end].rstrip(" ().-")
    core_end = start + len(core)
    glued = core_end < length and text[core_end].isalnum()
    if core.isdigit():
        if 13 <= len(core) <= 19 and not glued and not before.isalnum() and _is_card(core):
            out.append((start, core_end, CARD))
        return
    if before == "(" or "(" in core or ")" in core:
        if before == "(" and not glued and _nanp_in_parentheses(text, start, core):
            out.append((start - 1, core_end, PHONE))
        else:
            _find_digit_kinds(text, start - 1 if before == "(" else start, min(end + 1, length), out)
        return
    if "-" in core:
        sep = "-"
        mixed = " " in core or "." in core
    elif " " in core:
        sep = " "
        mixed = "." in core
    else:
        sep = "."
        mixed = False
    parts = core.split(sep)
    if mixed or "" in parts:  # several kinds of separator, or one doubled
        _find_digit_kinds(text, start, min(end + 1, length), out)
        return
    if before.isalnum():
        # 'a716-446655440000' (a UUID): every candidate inside would start after digit + separator, which
        # no pattern allows when there is only one kind of separator.
        return
    if glued:
        # '4111 1111 1111 1111 22x': only a card can end before the glued last group.
        if sep != ".":
            _card_run(core[: core.rindex(sep)], start, out)
        return
    count = len(parts)
    digits = len(core) - count + 1
    if count == 3 and sep != "." and len(parts[0]) == 3 and len(parts[1]) == 2 and len(parts[2]) == 4:
        if _ssn_ok(parts[0], parts[1], parts[2]):
            out.append((start, core_end, SSN))
    elif sep != " " and (count == 3 or (count == 4 and parts[0] == "1")) and digits == 7 + count:
        # NXX-NXX-XXXX, NXX.NXX.XXXX, 1-NXX-NXX-XXXX: ten digits (after the '1') in groups of 3, 3, 4
        if len(parts[-1]) == 4 and len(parts[-2]) == 3 and parts[-3][0] >= "2" and parts[-2][0] >= "2":
            out.append((start, core_end, PHONE))
    elif sep != "." and digits >= 13:  # fewer digits: no window of groups can be a card either
        lengths = list(map(len, parts))
        if digits <= 19 and min(lengths) >= 3 and max(lengths) <= 8 and _is_card(core.replace(sep, "")):
            out.append((start, core_end, CARD))
        else:
            _card_windows(core, start, out)


def _nanp_in_parentheses(text: str, start: int, core: str) -> bool:
    """'(NXX) NXX-XXXX' exactly, the '(' just before start, nothing numeric glued on before it."""
    if len(core) not in (13, 12) or core[3] != ")" or core[0] < "2":
        return False
    rest = core[5:] if core[4] == " " else core[4:]
    if len(rest) != 8 or rest[3] not in "-. " or rest[0] < "2":
        return False
    if not (core[:3].isdigit() and rest[:3].isdigit() and rest[4:].isdigit()):
        return False
    head = text[max(0, start - 3) : start - 1]
    return not (head[-1:].isalnum() or (len(head) == 2 and head[0].isdigit() and head[1] in "-."))


def _find_digit_kinds(text: str, pos: int, endpos: int, out: list[_Span]) -> None:
    for m in _DIGIT_KINDS.finditer(text, pos, endpos):
        kind = m.lastgroup
        if kind == "card":
            start, end = m.span("card")
            if end - start >= 13:
                _card_run(m.group("card"), start, out)
        elif kind == "nanp":
            out.append((m.start(), m.end(), PHONE))
        else:
            ssn = m.group()
            if _ssn_ok(ssn[:3], ssn[4:6], ssn[7:]):
                out.append((m.start(), m.end(), SSN))


def _card_run(run: str, offset: int, out: list[_Span]) -> None:
    """A bare run is a card or not; in a grouped run, the longest window of whole groups that is one."""
    if run.isdigit():
        if len(run) <= 19 and _is_card(run):
            out.append((offset, offset + len(run), CARD))
        return
    sep = " " if " " in run else "-"
    if ("-" if sep == " " else " ") not in run:  # one separator throughout: most often the run is the card
        parts = run.split(sep)
        compact = "".join(parts)
        if len(compact) < 13:
            return  # no window of it can be a card either
        lengths = list(map(len, parts))
        if len(compact) <= 19 and min(lengths) >= 3 and max(lengths) <= 8 and _is_card(compact):
            out.append((offset, offset + len(run), CARD))
            return
    _card_windows(run, offset, out)


def _card_windows(run: str, offset: int, out: list[_Span]) -> None:
    """Each longest window of whole groups (3-8 digits, one separator) that is a card, left to right."""
    groups = [g.span() for g in _DIGITS.finditer(run)]
    count = len(groups)
    i = 0
    while i < count:
        best = -1
        first_start, first_end = groups[i]
        size = first_end - first_start
        if size >= 13:
            if size <= 19 and _is_card(run[first_start:first_end]):
                best = i
        elif 3 <= size <= 8 and i + 1 < count:
            total = size
            sep = run[first_end]
            for j in range(i + 1, count):
                g_start, g_end = groups[j]
                size = g_end - g_start
                if size < 3 or size > 8 or run[g_start - 1] != sep:
                    break
                total += size
                if total > 19:
                    break
                if total >= 13 and _is_card(run[first_start:g_end].replace(sep, "")):
                    best = j
        if best >= 0:
            out.append((offset + first_start, offset + groups[best][1], CARD))
            i = best + 1
        else:
            i += 1


def _ssn_ok(area: str, group: str, serial: str) -> bool:
    return area != "000" and area != "666" and area[0] != "9" and group != "00" and serial != "0000"


def _ssn_digits_ok(d: str) -> bool:
    return _ssn_ok(d[:3], d[3:5], d[5:])


# ---------------------------------------------------------------- SSN by keyword

_SSN_WORD = r"(?<![0-9A-Za-z\[])(?:ssn|social[ _-]?security|soc[ _.-]{0,2}sec)"  # '[ssn]' is our own token
_SSN_CONTEXT = re.compile(
    _SSN_WORD + r"[A-Za-z_]*[^0-9A-Za-z\n]{0,6}"  # 'ssn_number": "', ')=(', ': '
    r"(?:(?:is|was|no|nr|num|number|of)[^0-9A-Za-z\n]{1,4})?([0-9]{9})(?![0-9])",
    re.IGNORECASE,
)
_SSN_NAME = re.compile(_SSN_WORD, re.IGNORECASE)
_SSN_WHOLE = re.compile(r"\s*([0-9]{9})\s*\Z")


def _find_ssn_context(text: str, pos: int, endpos: int, out: list[_Span]) -> None:
    """Nine bare digits in the region after a keyword that ends at most 40 characters before it."""
    window = max(0, pos - 40)
    lower = text[window:pos].lower()
    if "ssn" not in lower and "soc" not in lower:
        return
    for m in _SSN_CONTEXT.finditer(text, window, endpos):
        if m.start(1) >= pos and _ssn_digits_ok(m.group(1)):
            out.append((m.start(1), m.end(1), SSN))


# ---------------------------------------------------------------- E.164 phone

# '+', then digit groups joined by one separator or one next to a parenthesis: '+44 20 7946 0958',
# '+1 (555) 234-5678', '+44 (0)20 7946 0958', '+33.1.23.45.67.89'.
_E164 = re.compile(
    r"\+[1-9][0-9]*+(?:(?:[ .\-]\(?|\)[ .\-]?|\()[0-9]++)*"
)  # no possessive group: 3.11.2 gets it wrong
_PHONE_PART = re.compile(r"[0-9]+|[^0-9]+")
_DECIMAL_OR_DATE = re.compile(r"\+[0-9]+\.[0-9]+|\+[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _find_e164s(text: str, out: list[_Span]) -> None:
    find = text.find
    plus = find("+")
    while plus != -1:
        if plus == 0 or not (text[plus - 1].isalnum() or text[plus - 1] == "+"):
            _find_e164(text, plus, out)
        plus = find("+", plus + 1)


def _find_e164(text: str, start: int, out: list[_Span]) -> None:
    """8-15 digits after the '+'; a longer run keeps its leading whole groups up to 15 digits."""
    m = _E164.match(text, start)
    if m is None:
        return
    span = m.group()
    end = m.end()
    opened = span.count("(")
    digits = len(span) - 1 - span.count(" ") - span.count("-") - span.count(".") - opened - span.count(")")
    if digits > 15 or opened != span.count(")"):
        end, digits = _e164_prefix(text, start, end)
        span = text[start:end]
    if digits < 8:
        return
    if span[1:].isdigit():
        if digits < 10:  # '+12345678' is more often a signed amount
            return
    elif ("." in span or "-" in span) and _DECIMAL_OR_DATE.fullmatch(span):
        return
    if end < len(text) and (text[end].isalnum() or text[end] == "+"):
        return
    out.append((start, end, PHONE))


def _e164_prefix(text: str, start: int, end: int) -> tuple[int, int]:
    """The longest run of whole groups from start with at most 15 digits and no open parenthesis."""
    digits = 0
    depth = 0
    best_end = -1
    best_digits = 0
    for part in _PHONE_PART.finditer(text, start + 1, end):
        piece = part.group()
        if piece[0].isdigit():
            digits += len(piece)
            if digits > 15:
                break
            if depth == 0:
                best_end, best_digits = part.end(), digits
        else:
            depth += piece.count("(") - piece.count(")")
            if depth not in (0, 1):
                break
    return best_end, best_digits


# ---------------------------------------------------------------- IBAN

_IBAN_LENGTHS = {
    # SEPA
    "AD": 24, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "EE": 20,
    "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GI": 23, "GR": 27, "HR": 21, "HU": 28, "IE": 22, "IS": 26,
    "IT": 27, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MT": 31, "NL": 18, "NO": 15, "PL": 28,
    "PT": 25, "RO": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "VA": 22,
    # other IBAN countries
    "AE": 23, "AL": 28, "AZ": 28, "BA": 20, "BH": 22, "BR": 29, "BY": 28, "CR": 22, "DO": 28, "EG": 29,
    "FO": 18, "GE": 22, "GL": 18, "GT": 28, "IL": 23, "IQ": 23, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MU": 30, "PK": 24, "PS": 29, "QA": 29, "RS": 22,
    "SA": 24, "SC": 31, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VG": 24, "XK": 20,
}  # fmt: skip
_IBAN = re.compile(
    r"(?<![0-9A-Za-z])[A-Za-z]{2}[0-9]{2}"  # country, check digits
    r"(?:\ ?[0-9A-Za-z]{4}){2,8}(?:\ ?[0-9A-Za-z]{1,3})?(?![0-9A-Za-z])"  # BBAN, compact or spaced by 4
)
_IBAN_LETTERS = {ord(c): str(ord(c) - 55) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}
_IBAN_COUNTRY_DIGITS = {country: country.translate(_IBAN_LETTERS) for country in _IBAN_LENGTHS}


# Where an IBAN holding the region at pos would start: its country code and check digits, then groups up to
# pos ('DE|89 3704 ...', 'NL91 ABNA |0417 ...', 'GB82WEST|1234...'), within 20 characters.
_IBAN_HEAD = re.compile(r"(?<![0-9A-Za-z])[A-Za-z]{2}(?:[0-9]{2}[ 0-9A-Za-z]*)?\Z")


def _find_iban(text: str, pos: int, out: list[_Span]) -> int:
    """The IBAN that the region at pos belongs to, if any; returns where it ends (or -1).

    The region starts right after a letter ('DE|89 3704 ...', 'GB82WEST|1234...', 'IT60 X|054 ...'), or
    after a spaced four-character group after 'CCDD ' ('NL91 ABNA |0417 ...').
    """
    before = text[pos - 1]
    if before.isalpha():
        head = _IBAN_HEAD.search(text, max(0, pos - 20), pos)
        while head is not None:  # 'to DE12 or DE89 3704 ...': the leftmost head may not be the one
            end = _iban_at(text, head.start(), out)
            if end >= 0:
                return end
            head = _IBAN_HEAD.search(text, head.start() + 1, pos)
        return -1
    if before == " " and pos >= 10 and text[pos - 6] == " " and text[pos - 5 : pos - 1].isalnum():
        start = pos - 10
        if text[start : start + 2].isalpha() and text[start + 2 : start + 4].isdigit():
            return _iban_at(text, start, out)
    return -1


def _iban_at(text: str, start: int, out: list[_Span]) -> int:
    m = _IBAN.match(text, start)
    if m is None:
        return -1
    end = _iban_end(text, start, m.end())
    if end >= 0:
        out.append((start, end, IBAN))
    return end


def _iban_end(text: str, start: int, end: int) -> int:
    """End of the valid IBAN at start, or -1: exact length, ending at a group boundary, mod-97 == 1."""
    country = text[start : start + 2].upper()
    length = _IBAN_LENGTHS.get(country)
    check = text[start + 2 : start + 4]
    if length is None or check in ("00", "01", "99"):
        return -1
    need = length - 4
    compact = text[start + 4 : end].replace(" ", "")
    if len(compact) < need:
        return -1
    if len(compact) > need:
        # 'BE68 5390 0754 7034 SEPA': the run of groups is longer than the IBAN, which must end at a space.
        end = start + 4
        seen = 0
        while seen < need:
            if text[end] != " ":
                seen += 1
            end += 1
        if text[end] != " ":
            return -1
    bban = compact[:need]
    if not bban.isdigit():
        bban = bban.upper().translate(_IBAN_LETTERS)
    if int(bban + _IBAN_COUNTRY_DIGITS[country] + check) % 97 != 1:
        return -1
    return end


# ---------------------------------------------------------------- detection


def _scan_once(text: str, region: re.Match[str] | None = None, searched: bool = False) -> list[_Span]:
    """Every finding, overlaps included; region is the first region when the caller has searched already."""
    found: list[_Span] = []
    if "@" in text:
        _find_emails(text, found)
    if "+" in text:
        _find_e164s(text, found)
    search = _REGION.search
    if not searched:
        region = search(text)
    iban_end = -1
    length = len(text)
    while region is not None:
        start, end = region.span()
        _region_kinds(text, start, end, found)
        if start > 0:
            if start >= iban_end:
                iban_end = _find_iban(text, start, found)
            if text[start : start + 9].isdigit() and (start + 9 == length or not text[start + 9].isdigit()):
                _find_ssn_context(text, start, min(end + 1, length), found)
        region = search(text, end)
    return found


def _merge(spans: list[_Span]) -> list[_Span]:
    """Sorted, non-overlapping: overlaps become their union, named after the earliest (longest) finding."""
    spans.sort(key=lambda s: (s[0], -s[1]))
    merged = [spans[0]]
    for start, end, kind in spans[1:]:
        last_start, last_end, last_kind = merged[-1]
        if start < last_end:
            if end > last_end:
                merged[-1] = (last_start, end, last_kind)
        else:
            merged.append((start, end, kind))
    return merged


_MAX_ROUNDS = 8


def _detect(
    text: str, ssn_field: bool = False, region: re.Match[str] | None = None, searched: bool = False
) -> tuple[list[_Span], str]:
    """All findings in text and the default-redacted text; found again on the masked text until nothing
    new shows (see module doc)."""
    found = _scan_once(text, region, searched)
    if ssn_field and (whole := _SSN_WHOLE.match(text)) is not None and _ssn_digits_ok(whole.group(1)):
        found.append((whole.start(1), whole.end(1), SSN))
    if not found:
        return found, text
    if len(found) > 1:
        found = _merge(found)
    for _ in range(_MAX_ROUNDS):
        masked = _mask(text, found)
        if not _may_match(masked):
            return found, masked
        more = _scan_once(masked)
        if not more:
            return found, masked
        segments = _segments(text, found)
        more = [(_to_original(s, segments, True), _to_original(e, segments, False), k) for s, e, k in more]
        found = _merge(found + more)
    return found, _mask(text, found)


def _mask(text: str, spans: list[_Span]) -> str:
    if len(spans) == 1:
        start, end, kind = spans[0]
        return text[:start] + "[" + kind + "]" + text[end:]
    return _apply(text, spans, None, [])


_Segment = tuple[int, int, int, int, bool]


def _segments(text: str, spans: list[_Span]) -> list[_Segment]:
    """(masked_start, masked_end, orig_start, orig_end, is_token) for each piece of the masked text."""
    segments: list[_Segment] = []
    pos = 0
    at = 0
    for start, end, kind in spans:
        if start > pos:
            segments.append((at, at + start - pos, pos, start, False))
            at += start - pos
        size = len(kind) + 2
        segments.append((at, at + size, start, end, True))
        at += size
        pos = end
    segments.append((at, at + len(text) - pos, pos, len(text), False))
    return segments


def _to_original(position: int, segments: list[_Segment], is_start: bool) -> int:
    """A masked-text position in the original; inside a token it widens to cover the token's original."""
    for m_start, m_end, o_start, o_end, is_token in segments:
        if position < m_end or (position == m_end and not is_start):
            if is_token:
                return o_start if is_start else o_end
            return o_start + (position - m_start)
    return segments[-1][3]


def _apply(text: str, spans: list[_Span], replace: Replace | None, kinds: list[str]) -> str:
    parts: list[str] = []
    pos = 0
    for start, end, kind in spans:
        parts.append(text[pos:start])
        parts.append("[" + kind + "]" if replace is None else replace(Detection(kind, start, end), text))
        kinds.append(kind)
        pos = end
    parts.append(text[pos:])
    return "".join(parts)


def detect(text: str) -> list[Detection]:
    """Findings in text, sorted by start and non-overlapping."""
    if not _may_match(text):
        return []
    return [Detection(kind, start, end) for start, end, kind in _detect(text)[0]]


def redact(text: str, replace: Replace | None = None) -> tuple[str, list[Detection]]:
    """Text with every finding replaced (default ``[kind]``), and the findings in the ORIGINAL text."""
    if not _may_match(text):
        return text, []
    spans, masked = _detect(text)
    if not spans:
        return text, []
    if replace is not None:
        masked = _apply(text, spans, replace, [])
    return masked, [Detection(kind, start, end) for start, end, kind in spans]


def redact_error(message: str) -> str:
    """Server error messages echo values (``Key (email)=(...) already exists``): same detectors."""
    return redact(message)[0]


# ---------------------------------------------------------------- result cells

_INERT, _TEXT, _BYTES, _NUMBER, _CONTAINER = range(5)
_CATEGORIES: dict[type, int] = {}


def _category(cls: type) -> int:
    """What scan_value does with values of this type; cached, since it is asked for every cell."""
    category = _CATEGORIES.get(cls)
    if category is None:
        if issubclass(cls, bool):
            category = _INERT
        elif issubclass(cls, str):
            category = _TEXT
        elif issubclass(cls, bytes | bytearray | memoryview):
            category = _BYTES
        elif issubclass(cls, int | float | Decimal):
            category = _NUMBER
        elif issubclass(cls, dict | list | tuple):
            category = _CONTAINER
        else:
            category = _INERT  # None, datetimes, UUIDs, IP addresses, ranges: no free text in them
        _CATEGORIES[cls] = category
    return category


def _scan_text(text: str, replace: Replace | None, kinds: list[str], ssn_field: bool) -> str:
    """text redacted (the same object when nothing is found); each finding's kind appended to kinds."""
    if "@" in text or "+" in text:
        spans, masked = _detect(text, ssn_field)
    else:
        region = _REGION.search(text)  # the prefilter, and the first region for the scan
        if region is None:
            return text
        spans, masked = _detect(text, ssn_field, region, True)
    if not spans:
        return text
    return _replaced(text, spans, masked, replace, kinds)


def _replaced(text: str, spans: list[_Span], masked: str, replace: Replace | None, kinds: list[str]) -> str:
    if not spans:
        return text
    if replace is not None:
        return _apply(text, spans, replace, kinds)
    for span in spans:
        kinds.append(span[2])
    return masked


def _scan_bytes(
    value: bytes | bytearray | memoryview, replace: Replace | None, kinds: list[str], ssn_field: bool
) -> object:
    """Bytes stay bytes unless something is found; then the redacted text replaces them."""
    data = value if type(value) is bytes else bytes(value)
    if b"@" not in data and _GATE_BYTES.match(data) is None:  # UTF-8 keeps ASCII bytes as they are
        return value
    text = data.decode("utf-8", "replace")
    redacted = _scan_text(text, replace, kinds, ssn_field)
    return value if redacted is text else redacted


def _number_kind(value: int | float | Decimal, ssn_field: bool) -> str | None:
    """Cards (13-19 digits, IIN, Luhn) in any positive whole number; SSNs only under an SSN name."""
    if isinstance(value, float):
        if not (value.is_integer() and 0 < value < 1e19):  # also False for NaN and infinities
            return None
        n = int(value)
    elif isinstance(value, Decimal):
        if not value.is_finite() or value <= 0:
            return None
        exponent = value.adjusted()  # digits before the point, minus one
        if exponent > 18 or (exponent < 12 and not ssn_field) or value != value.to_integral_value():
            return None
        n = int(value)
    else:
        n = int(value)
    if n <= 0:
        return None
    if _CARD_MIN <= n < _CARD_MAX and _is_card(str(n)):
        return CARD
    if ssn_field and n < 10**9 and _ssn_digits_ok(f"{n:09d}"):
        return SSN
    return None


def _scan_number(
    value: int | float | Decimal, replace: Replace | None, kinds: list[str], ssn_field: bool
) -> object:
    """A number found is replaced whole, by text: the detection spans all of str(value)."""
    kind = _number_kind(value, ssn_field)
    if kind is None:
        return value
    kinds.append(kind)
    if replace is None:
        return "[" + kind + "]"
    text = str(value)
    return replace(Detection(kind, 0, len(text)), text)


def _scan_leaf(
    category: int, value: Any, replace: Replace | None, kinds: list[str], ssn_field: bool
) -> object:
    if category == _TEXT:
        return _scan_text(value, replace, kinds, ssn_field)
    if category == _NUMBER:
        return _scan_number(value, replace, kinds, ssn_field)
    if category == _BYTES:
        return _scan_bytes(value, replace, kinds, ssn_field)
    return value


_SSN_KEYS: dict[str, bool] = {}


def names_ssn(name: str) -> bool:
    """Does a JSON key or column name name an SSN? Cached: the same keys come back on every row."""
    hit = _SSN_KEYS.get(name)
    if hit is None:
        if len(_SSN_KEYS) >= 4096:
            _SSN_KEYS.clear()
        hit = _SSN_KEYS[name] = _SSN_NAME.search(name) is not None
    return hit


_MAX_RECURSION = 100


def _walk(value: Any, replace: Replace | None, kinds: list[str], ssn_field: bool, depth: int) -> object:
    """A JSON document or array, recursively while shallow (cheaper than _scan_tree's frames)."""
    if depth > _MAX_RECURSION:
        return _scan_tree(value, replace, kinds, ssn_field)
    depth += 1
    changed = False
    items: list[Any] = []
    if isinstance(value, dict):
        for key, item in value.items():
            new_key = key
            field = ssn_field
            if isinstance(key, str):
                new_key = _scan_text(key, replace, kinds, False)  # a JSON key can be an email
                if new_key is not key:
                    changed = True
                if not field:
                    field = names_ssn(key)
            new_item = _walk_item(item, replace, kinds, field, depth)
            if new_item is not item:
                changed = True
            items.append((new_key, new_item))
        return _rebuild(value, items) if changed else value
    for item in value:
        new_item = _walk_item(item, replace, kinds, ssn_field, depth)
        if new_item is not item:
            changed = True
        items.append(new_item)
    return _rebuild(value, items) if changed else value


def _walk_item(value: Any, replace: Replace | None, kinds: list[str], ssn_field: bool, depth: int) -> object:
    cls = type(value)
    if cls is str:
        return _scan_text(value, replace, kinds, ssn_field)
    if value is None or (cls is int and value < _CARD_MIN and not ssn_field):
        return value
    category = _category(cls)
    if category == _CONTAINER:
        return _walk(value, replace, kinds, ssn_field, depth)
    return _scan_leaf(category, value, replace, kinds, ssn_field)


class _Frame:
    """One container being rebuilt by _scan_tree."""

    __slots__ = ("changed", "is_dict", "items", "key", "out", "source", "ssn_field")

    def __init__(self, source: Any, ssn_field: bool, key: object) -> None:
        self.source = source
        self.is_dict = isinstance(source, dict)
        self.items = iter(source.items()) if self.is_dict else iter(source)
        self.out: list[Any] = []
        self.changed = False
        self.ssn_field = ssn_field
        self.key = key  # this container's (possibly redacted) key in its parent dict


def _scan_tree(root: Any, replace: Replace | None, kinds: list[str], ssn_field: bool) -> object:
    """Containers nested deeper than recursion should go, without recursion; as _walk does otherwise."""
    stack = [_Frame(root, ssn_field, None)]
    while True:
        frame = stack[-1]
        descended = False
        for item in frame.items:
            if frame.is_dict:
                key, value = item
                new_key = key
                child_field = frame.ssn_field
                if isinstance(key, str):
                    new_key = _scan_text(key, replace, kinds, False)
                    if new_key is not key:
                        frame.changed = True
                    if not child_field:
                        child_field = names_ssn(key)
            else:
                value = item
                new_key = None
                child_field = frame.ssn_field
            category = _category(type(value))
            if category == _CONTAINER:
                stack.append(_Frame(value, child_field, new_key))
                descended = True
                break
            new_value = _scan_leaf(category, value, replace, kinds, child_field)
            if new_value is not value:
                frame.changed = True
            frame.out.append((new_key, new_value) if frame.is_dict else new_value)
        if descended:
            continue
        stack.pop()
        result = _rebuild(frame.source, frame.out) if frame.changed else frame.source
        if not stack:
            return result
        parent = stack[-1]
        if result is not frame.source:
            parent.changed = True
        parent.out.append((frame.key, result) if parent.is_dict else result)


def _rebuild(source: Any, items: list[Any]) -> object:
    """Same container type; redacted dict keys that collide get '#2', '#3'... so no entry is lost."""
    cls = type(source)
    if isinstance(source, dict):
        out: dict[Any, Any] = {}
        for key, value in items:
            if key in out:
                n = 2
                while f"{key}#{n}" in out:
                    n += 1
                key = f"{key}#{n}"
            out[key] = value
        if cls is dict:
            return out
        try:
            return cls(out)
        except Exception:
            return out
    if cls is list:
        return items
    if cls is tuple:
        return tuple(items)
    try:
        return cls(*items) if hasattr(source, "_fields") else cls(items)
    except Exception:
        return items if isinstance(source, list) else tuple(items)


def scan_value(
    value: object, replace: Replace | None = None, *, context: str | None = None
) -> tuple[object, list[str]]:
    """One result cell: the value with findings replaced, and the kind of each finding, in order.

    Text, JSON (dict keys too) and arrays, nested, keep their shape, and parts with no finding are returned
    as they are (no copy); bytes stay bytes unless something is found, then they become the redacted text; a
    number found becomes replacement text. ``context`` is the column name: when it names an SSN, nine bare
    digits count (as they do under an SSN-named JSON key). Other types are returned unchanged.
    """
    cls = type(value)
    if cls is str and context is None:
        if "@" not in value and "+" not in value:  # type: ignore[operator]
            region = _REGION.search(value)  # type: ignore[arg-type]
            if region is None:
                return value, []
            spans, masked = _detect(value, False, region, True)  # type: ignore[arg-type]
        else:
            spans, masked = _detect(value)  # type: ignore[arg-type]
        if not spans:
            return value, []
        kinds: list[str] = []
        return _replaced(value, spans, masked, replace, kinds), kinds  # type: ignore[arg-type]
    if cls is int and value < _CARD_MIN and context is None:  # type: ignore[operator]
        return value, []
    kinds = []
    ssn_field = context is not None and names_ssn(context)
    category = _category(cls)
    if category == _CONTAINER:
        return _walk(value, replace, kinds, ssn_field, 0), kinds
    return _scan_leaf(category, value, replace, kinds, ssn_field), kinds


def column_may_match(values: Iterable[object]) -> bool:
    """Could scan_value change any of these cells? False is exact; a column of text costs one search.

    Text cells are joined with NUL (which no finding spans) and go through the same prefilter at once.
    """
    if not isinstance(values, list | tuple):
        values = list(values)
    try:
        joined = "\x00".join(values)  # type: ignore[arg-type]
    except TypeError:
        texts: list[str] = []
        for value in values:
            cls = type(value)
            if cls is str:
                texts.append(value)  # type: ignore[arg-type]
            elif value is None or (cls is int and value < _CARD_MIN):  # type: ignore[operator]
                continue
            else:
                category = _category(cls)
                if category == _TEXT:
                    texts.append(value)  # type: ignore[arg-type]
                elif category == _NUMBER:
                    if _number_kind(value, False) is not None:  # type: ignore[arg-type]
                        return True
                elif category != _INERT:
                    return True  # bytes, JSON, arrays: scan_value looks inside
        joined = "\x00".join(texts)
    return _may_match(joined)
