"""Per-cell cost of the value detectors, as the masking layer pays it.

  clean            short ordinary text ('shipped', 'Name 123'): must return at the prefilter
  numeric clean    dates, timestamps, order numbers, UUIDs, IPs, prices: pass the prefilter, find nothing
  dirty            one finding per cell (email, card, SSN, IBAN, phone), default replacement
  dirty+callback   the same with a replacement callback, as bastion.policy.masking passes one
  int ids          bigint cells, mostly below the 13 digits a card needs
  column gate      column_may_match over a whole column of clean text, per cell
  rows             8 columns x N rows the way Masker scans them: column gate, then scan_value per cell of
                   the columns that may match (1 email column in 8; 1 row in 50 has a card in its note)

Budget: ~2 µs per row for everything masking does; targets here are <= 0.3 µs per clean cell and
<= 3 µs per dirty cell.

Run: .venv/bin/python bench/detectors.py [CELLS]   (default 200000)
"""

from __future__ import annotations

import datetime as dt
import random
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from bastion.policy.detectors import Detection, column_may_match, redact_error, scan_value

CLEAN = ["shipped", "Name 123", "Alice Smith", "pending", "Berlin", "Widget XL v2", "ok", "note: call back"]
NUMERIC = [
    "2024-05-01T12:34:56Z",
    "ORD-2024-000123",
    "1234567.89",
    "550e8400-e29b-41d4-a716-446655440000",
    "192.168.100.200",
    "12:34:56.123456",
    "v1.22.333-build.4567",
    "INV 2024 0001 2345",
]
DIRTY = [
    "alice.smith+news@example.co.uk",
    "card 4111 1111 1111 1111",
    "SSN 123-45-6789",
    "DE89 3704 0044 0532 0130 00",
    "+44 20 7946 0958",
    "call (555) 234-5678",
    "5500-0000-0000-0004",
    "Key (ssn)=(123456789) already exists.",
]
INT_IDS = [7, 123456, 9876543210, 1234567890123, 4111111111111112, 42, 100000000001, 2**40]


def replacement(found: Detection, text: str) -> str:
    """What masking's callback does, minus the HMAC: slice the finding out of the text."""
    text[found.start : found.end]
    return f"[{found.kind}]"


def per_cell(cells: Sequence[object], fn: Callable[[Any], object]) -> float:
    start = time.perf_counter()
    for cell in cells:
        fn(cell)
    return (time.perf_counter() - start) / len(cells)


def fill(samples: list[Any], n: int) -> list[Any]:
    """n cells cycling through samples; fresh str objects, as psycopg returns them."""
    return [("".join(list(s)) if isinstance(s, str) else s) for s in (samples * (n // len(samples) + 1))[:n]]


def table(rows: int) -> list[tuple[Any, ...]]:
    """id, email, status, created, amount, note, attrs (jsonb), order_no."""
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    rng = random.Random(0)
    out = []
    for i in range(rows):
        note = "card 4111 1111 1111 1111 on file" if i % 50 == 0 else f"call back on day {i % 28}"
        out.append(
            (
                i,
                f"user{i}@example.com",
                ("shipped", "pending", "cancelled")[i % 3],
                start + dt.timedelta(seconds=i),
                Decimal(i) / 100,
                note,
                {
                    "tier": "gold",
                    "visits": i % 100,
                    "ref": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                },
                f"ORD-2024-{i:06d}",
            )
        )
    return out


def scan_rows(rows: list[tuple[Any, ...]]) -> None:
    """Masker._scan_column, without the bookkeeping."""
    for column in zip(*rows, strict=True):
        if column_may_match(column):
            for value in column:
                if value is not None:
                    scan_value(value, replacement)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    print(f"detectors, {n} cells each (best of 3)")
    for name, samples, fn in (
        ("clean", CLEAN, scan_value),
        ("numeric clean", NUMERIC, scan_value),
        ("dirty", DIRTY, scan_value),
        ("dirty+callback", DIRTY, lambda v: scan_value(v, replacement)),
        ("int ids", INT_IDS, scan_value),
    ):
        cells = fill(samples, n)
        best = min(per_cell(cells, fn) for _ in range(3))
        print(f"  scan_value        {name:<15} {best * 1e6:6.3f} µs/cell")
    column = fill(CLEAN, n)
    best = min(per_cell([column], column_may_match) for _ in range(3)) / n
    print(f"  column_may_match  clean text      {best * 1e6:6.3f} µs/cell")
    message = 'duplicate key value violates unique constraint "users_email_key" DETAIL: Key (email)=(a@b.io)'
    best = min(per_cell([message] * (n // 10), redact_error) for _ in range(3))
    print(f"  redact_error      one email       {best * 1e6:6.3f} µs/message")
    rows = table(n // 8)
    start = time.perf_counter()
    scan_rows(rows)
    elapsed = time.perf_counter() - start
    print(f"  rows (8 columns, {len(rows)} rows)       {elapsed / len(rows) * 1e6:6.3f} µs/row")


if __name__ == "__main__":
    main()
