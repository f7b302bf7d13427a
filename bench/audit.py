"""Audit append latency, against the floor: a plain os.write (+ os.fdatasync) of the same bytes.

    .venv/bin/python bench/audit.py [N] [--dir DIR]

durable append      one decision event: record written + ONE fdatasync of the log + head slot pwrite (signed)
non-durable append  record written only (made durable by the next durable append, checkpoint or sync())
Periodic checkpoints (every 100 events) are included, as in production; they show in p99. The durable
append and the plain write+fdatasync are measured interleaved, so disk drift hits both alike. Not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bastion.audit.log import AuditLog
from bastion.audit.signing import generate_key, load_private_key
from bastion.audit.verify import verify_log
from bastion.canonical import canonical_json

PAYLOAD = {"statement": "SELECT * FROM orders WHERE id = 42", "verdict": "allow", "connection": "prod-db"}


def timed(op: Callable[[], object]) -> float:
    start = time.perf_counter()
    op()
    return time.perf_counter() - start


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def row(name: str, ours: list[float], floor_name: str, floor: list[float]) -> None:
    o50, o99, f50, f99 = pct(ours, 50), pct(ours, 99), pct(floor, 50), pct(floor, 99)
    print(
        f"{name:<22} p50 {o50 * 1e3:7.3f} ms  p99 {o99 * 1e3:7.3f} ms   "
        f"{floor_name:<20} p50 {f50 * 1e3:7.3f} ms  p99 {f99 * 1e3:7.3f} ms   "
        f"ratio p50 {o50 / f50:5.2f}x  (+{(o50 - f50) * 1e3:.3f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=2000, help="appends per measurement")
    parser.add_argument("--dir", help="directory for the temporary log (default: the system temp dir)")
    args = parser.parse_args()
    n = args.n
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        generate_key(root / "key")
        log = AuditLog(root / "audit.jsonl", "bench", load_private_key(root / "key"), checkpoint_every=100)

        def durable() -> None:
            log.append("sql.verdict", PAYLOAD, session="s-bench", user="alice")

        def lazy() -> None:
            log.append("sql.verdict", PAYLOAD, session="s-bench", user="alice", durable=False)

        for _ in range(50):  # warm up: files open, caches filled
            durable()
        rec = log.append("sql.verdict", PAYLOAD, session="s-bench", user="alice")
        line = canonical_json(rec) + b"\n"  # the same bytes an append writes
        fd = os.open(root / "plain.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

        def plain_sync() -> None:
            os.write(fd, line)
            os.fdatasync(fd)

        def plain() -> None:
            os.write(fd, line)

        d_ours: list[float] = []
        d_plain: list[float] = []
        for _ in range(n):
            d_plain.append(timed(plain_sync))
            d_ours.append(timed(durable))
        l_ours = [timed(lazy) for _ in range(n)]
        l_plain = [timed(plain) for _ in range(n)]
        sync_cost = [timed(lambda: (lazy(), log.sync())) for _ in range(min(n, 500))]
        os.close(fd)

        print(f"audit append latency, {n} appends each, record {len(line)} bytes, log in {tmp}")
        row("durable append", d_ours, "write+fdatasync", d_plain)
        row("non-durable append", l_ours, "write", l_plain)
        row("non-durable + sync()", sync_cost, "write+fdatasync", d_plain)
        print(f"durable mean {statistics.fmean(d_ours) * 1e3:.3f} ms (includes periodic checkpoints)")
        report = verify_log(root / "audit.jsonl", load_private_key(root / "key").public_key())
        print(f"verify: ok={report.ok} events={report.events} checkpoints={report.checkpoints}")


if __name__ == "__main__":
    main()
