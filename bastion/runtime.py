"""Process-wide settings for bastion's own processes (login shells, demo, shipper).

sqlglot builds many small objects per statement; with CPython's default GC thresholds the young-generation
collections that follow cost as much as the parse itself (classification ran at ~6.6k statements/s with
the defaults, ~12k/s with these). A login is a short-lived process with a bounded heap, so collecting less
often is the right trade.
"""

from __future__ import annotations

import gc

GC_THRESHOLDS = (50_000, 50, 100)


def tune_gc() -> None:
    gc.set_threshold(*GC_THRESHOLDS)
