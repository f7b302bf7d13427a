"""Core overheads as ratios against doing the same thing directly.

  audit append (durable)   vs  appending the same bytes with write + fsync
  PostgresStore.add_session vs direct psycopg INSERT of the same row (autocommit)
  TinyDBStore.add_session   vs direct psycopg INSERT (what a single host pays for embedded state)

Run: .venv/bin/python bench/core.py [N]   (PostgreSQL from BASTION_TEST_PG_DSN or 127.0.0.1:5432)
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from throwaway import throwaway_database

from bastion.audit.log import AuditLog
from bastion.audit.signing import generate_key, load_private_key
from bastion.canonical import canonical_json
from bastion.store import PostgresStore, TinyDBStore
from bastion.store.base import SessionRecord


def per_op(n: int, op: Callable[[int], None]) -> float:
    start = time.perf_counter()
    for i in range(n):
        op(i)
    return (time.perf_counter() - start) / n


def report(name: str, ours: float, direct: float) -> None:
    print(f"{name:<44} {ours * 1e3:8.3f} ms  direct {direct * 1e3:8.3f} ms  ratio {ours / direct:6.2f}x")


def session(i: int) -> SessionRecord:
    return SessionRecord(f"s-{i}-{secrets.token_hex(4)}", "bench", "alice", "SHA256:x", "tui", time.time())


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_key(root / "key")
        log = AuditLog(root / "audit.jsonl", "bench", load_private_key(root / "key"), checkpoint_every=100)
        payload = {"statement": "SELECT * FROM orders WHERE id = 42", "verdict": "allow"}
        ours = per_op(n, lambda i: log.append("statement", payload, session="s", user="alice"))
        line = canonical_json({"seq": 1, "payload": payload, "prev": "0" * 64, "hash": "0" * 64}) + b"\n"
        fd = os.open(root / "plain.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

        def plain(_: int) -> None:
            os.write(fd, line)
            os.fsync(fd)

        direct = per_op(n, plain)
        os.close(fd)
        report("audit append, durable (vs write+fsync)", ours, direct)

        with throwaway_database() as dsn:
            store = PostgresStore(dsn)
            store.add_session(session(-1))  # schema creation outside the timing
            ours = per_op(n, lambda i: store.add_session(session(i)))
            store.close()
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("CREATE TABLE plain (id text primary key, body jsonb)")
                body = psycopg.types.json.Jsonb({"user": "alice"})
                insert = "INSERT INTO plain VALUES (%s, %s)"
                direct = per_op(n, lambda i: conn.execute(insert, (f"p{i}", body)))
            report("PostgresStore.add_session (vs psycopg INSERT)", ours, direct)
            tiny = TinyDBStore(root / "state.json")
            ours = per_op(min(n, 200), lambda i: tiny.add_session(session(i)))
            report("TinyDBStore.add_session (vs psycopg INSERT)", ours, direct)


if __name__ == "__main__":
    main()
