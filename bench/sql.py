"""The SQL pipeline against direct psycopg: per-statement latency, large masked results, classifier speed.

  1. 2,000 small queries: direct psycopg vs the whole pipeline (policy + masking + audit with the durable
     verdict event) — added latency p50 / p99, for a table without and with sensitive columns.
  2. 100,000 rows x 8 columns, 3 of them masked: the pipeline streaming every row vs a direct psycopg fetch
     (fetchall, and cursor.stream in chunks) — ratio, the floor (direct stream + only the evidence HMACs),
     and peak memory of the pipeline.
  3. Classifier throughput on a mixed corpus, cold (every statement distinct) and with repeats (cache).

Run: .venv/bin/python bench/sql.py     (PostgreSQL from BASTION_TEST_PG_DSN or 127.0.0.1:5432)
"""

from __future__ import annotations

import sys
import tempfile
import time
import tracemalloc
from itertools import islice
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from throwaway import throwaway_shop

from bastion.policy.sql import classify
from bastion.runtime import tune_gc
from bastion.sql_pipeline import SqlPipeline
from tests.shopdb import open_session, shop_config


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def small_queries(pipeline: SqlPipeline, direct: psycopg.Connection, template: str, n: int) -> None:
    ours, theirs = [], []
    cur = direct.cursor()
    for i in range(n):
        query = template.format(i + 1)  # every statement distinct: no cache helps
        t = time.perf_counter()
        rows = list(cur.stream(query))
        theirs.append(time.perf_counter() - t)
        t = time.perf_counter()
        for result in pipeline.run(query):
            result.close()
        ours.append(time.perf_counter() - t)
        assert rows is not None
    d50, d99, o50, o99 = (
        pct(v, p) * 1e3 for v, p in ((theirs, 0.5), (theirs, 0.99), (ours, 0.5), (ours, 0.99))
    )
    print(f"  {template.format('N')[:58]}")
    print(f"    direct p50 {d50:.3f} ms p99 {d99:.3f} | pipeline p50 {o50:.3f} ms p99 {o99:.3f}"
          f" | added p50 {o50 - d50:.3f} ms p99 {o99 - d99:.3f} ms")  # fmt: skip


def big_result(pipeline: SqlPipeline, direct: psycopg.Connection, query: str) -> None:
    cur = direct.cursor()
    runs: dict[str, list[float]] = {"stream": [], "fetchall": [], "pipeline": []}
    for _ in range(3):
        t = time.perf_counter()
        n_stream = sum(1 for _ in cur.stream(query, size=1000))
        runs["stream"].append(time.perf_counter() - t)
        t = time.perf_counter()
        cur.execute(query)
        n_all = len(cur.fetchall())
        runs["fetchall"].append(time.perf_counter() - t)
        t = time.perf_counter()
        n_ours = 0
        for result in pipeline.run(query):
            n_ours += len(result.rows)
            while result.more_available:
                n_ours += len(result.more(1000))
            result.close()
        runs["pipeline"].append(time.perf_counter() - t)
        assert n_stream == n_all == n_ours, (n_stream, n_all, n_ours)
    best = {k: min(v) for k, v in runs.items()}
    stream, fetchall, ours = best["stream"], best["fetchall"], best["pipeline"]
    floor = min(evidence_floor(pipeline, cur, query) for _ in range(3))
    print(f"  rows {n_ours}: direct stream {stream * 1e3:.1f} ms | direct fetchall {fetchall * 1e3:.1f} ms"
          f" | pipeline {ours * 1e3:.1f} ms")  # fmt: skip
    print(f"  ratio vs direct fetchall {ours / fetchall:.2f}x, vs direct stream {ours / stream:.2f}x")
    print(f"  floor, direct stream + only the evidence HMACs: {floor * 1e3:.1f} ms"
          f" ({floor / fetchall:.2f}x fetchall)")  # fmt: skip
    tracemalloc.start()
    for result in pipeline.run(query):
        while result.more_available:
            result.more(1000)
        result.close()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"  pipeline peak traced memory while streaming {n_ours} rows: {peak / 1e6:.1f} MB")


def evidence_floor(pipeline: SqlPipeline, cur: psycopg.Cursor, query: str) -> float:
    """The direct stream plus the part of masking that the evidence format fixes: the HMAC-SHA256 of each
    distinct masked value per batch (README "Masking"). The pipeline cannot be faster than this."""
    first = next(pipeline.run(query))
    masked = [d.index for d in first.masking if d.masked]
    first.close()
    assert pipeline.keys is not None
    audit_hmacs = pipeline.keys.audit_hmacs
    t = time.perf_counter()
    rows = cur.stream(query, size=1000)
    while batch := list(islice(rows, 1000)):
        columns = list(zip(*batch, strict=True))
        for i in masked:
            audit_hmacs([str(v).encode() for v in dict.fromkeys(columns[i]) if v is not None])
    return time.perf_counter() - t


def classifier(n: int) -> None:
    shapes = [
        "SELECT id, name FROM customers WHERE id = {}",
        "SELECT o.id, o.total, c.name FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id > {}",
        "WITH t AS (SELECT customer_id, sum(total) s FROM orders GROUP BY 1) SELECT * FROM t WHERE s > {}",
        "UPDATE orders SET status = 'shipped' WHERE id = {}",
        "DELETE FROM orders WHERE id = {}",
        "INSERT INTO orders (customer_id, total) VALUES ({}, 10)",
        "SELECT pg_read_file('/etc/passwd') -- {}",
        "EXPLAIN ANALYZE DELETE FROM orders WHERE id = {}",
        "SET search_path = x{}",
        "SELECT count(*) FROM orders WHERE status = 'new' AND total > {}",
    ]
    cold = [shapes[i % len(shapes)].format(i) for i in range(n)]
    classify.cache_clear()
    t = time.perf_counter()
    for text in cold:
        classify(text)
    cold_rate = n / (time.perf_counter() - t)
    warm = [shapes[i % len(shapes)].format(i % 200) for i in range(n)]
    classify.cache_clear()
    t = time.perf_counter()
    for text in warm:
        classify(text)
    warm_rate = n / (time.perf_counter() - t)
    print(f"  {n} statements: cold (all distinct) {cold_rate:,.0f}/s"
          f" | with repeats (200 distinct per shape) {warm_rate:,.0f}/s")  # fmt: skip


def main() -> None:
    tune_gc()  # as `bastion login` does
    with throwaway_shop() as shop:
        with shop.admin() as conn:
            conn.execute(
                "CREATE TABLE wide AS SELECT i AS id, 'Name ' || i AS name,"
                " 'user' || i || '@example.com' AS email,"
                " lpad(i::text, 9, '0') AS ssn, '+1 555 01' || lpad((i % 100)::text, 2, '0') AS phone,"
                " (i * 1.5)::numeric(12,2) AS total, 'shipped' AS status, now() AS created"
                " FROM generate_series(1, 100000) i"
            )
            conn.execute(f'GRANT SELECT ON wide TO "{shop.ro_user}"')
        with tempfile.TemporaryDirectory() as tmp:
            config = shop_config(Path(tmp), shop, extra='\n[[masking.columns]]\ncolumn = "wide.email"\n'
                                 '\n[[masking.columns]]\ncolumn = "wide.ssn"\n\n[[masking.columns]]\n'
                                 'column = "wide.phone"\nstyle = "partial"\n')  # fmt: skip
            session = open_session(config)
            pipeline = SqlPipeline(session, "pg-readonly")
            pipeline.open()
            direct = psycopg.connect(
                host=shop.host, port=shop.port, dbname=shop.dbname, user=shop.ro_user, autocommit=True
            )
            print("1. small queries, 2,000 each (added = pipeline - direct)")
            small_queries(pipeline, direct, "SELECT id, status, total FROM orders WHERE id = {}", 2000)
            small_queries(pipeline, direct, "SELECT id, name, email FROM customers WHERE id = {}", 2000)
            print("2. 100,000 rows x 8 columns, 3 masked")
            big_result(pipeline, direct, "SELECT * FROM wide")
            pipeline.close()
            session.end()
            direct.close()
        print("3. classifier throughput")
        classifier(20000)


if __name__ == "__main__":
    main()
