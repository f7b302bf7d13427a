"""Masking layer two: what lineage and the catalog snapshot cost, against running the statement directly.

  load_catalog                      one round trip, small schema and a 600-relation / 100-view schema
  result_lineage, uncached          per statement of a mixed corpus (parse + resolve + qualify + walk)
  result_lineage, cached            the same statements again (LRU keyed by text and catalog)
  direct                            psycopg execute + fetch of the same statement (rolled back), the baseline

Run: .venv/bin/python bench/lineage.py [N]   (PostgreSQL from BASTION_TEST_PG_DSN or 127.0.0.1:5432)
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import psycopg
from throwaway import throwaway_database

from bastion.policy.lineage import clear_lineage_cache, result_lineage
from bastion.targets.catalog import Catalog, load_catalog

SETUP = """
CREATE TABLE customers (
    id int PRIMARY KEY, name text, email text, ssn text, phone text, card_number text, notes jsonb);
CREATE TABLE orders (id int PRIMARY KEY, customer_id int, total numeric, status text);
INSERT INTO customers SELECT g, 'n' || g, g || '@example.com', '987-65-' || g, '555-' || g,
    '4111111111111111', jsonb_build_object('k', g) FROM generate_series(1, 50) g;
INSERT INTO orders SELECT g, 1 + g % 50, g * 1.5, 'new' FROM generate_series(1, 200) g;
CREATE VIEW v_ssn AS SELECT id, ssn AS tax_id FROM customers;
CREATE VIEW v_of_view AS SELECT tax_id AS t, id FROM v_ssn;
CREATE VIEW v_join AS SELECT c.name, c.email, o.total FROM customers c JOIN orders o ON o.customer_id = c.id;
CREATE FUNCTION get_ssn(int) RETURNS text LANGUAGE sql STABLE AS 'SELECT ssn FROM customers WHERE id = $1';
"""

BIG = """
CREATE SCHEMA big;
DO $$ BEGIN
  FOR i IN 1..600 LOOP
    EXECUTE format('CREATE TABLE big.t%s (id int, a text, b text, c int, d timestamptz, e jsonb, f numeric,
                    g text, h text, i bool)', i);
  END LOOP;
  FOR i IN 1..100 LOOP
    EXECUTE format('CREATE VIEW big.v%s AS SELECT id, a, upper(g) AS g FROM big.t%s WHERE c > 1', i, i);
  END LOOP;
END $$;
"""

SIMPLE = "SELECT id, name FROM customers WHERE id = 5"
CORPUS = [
    SIMPLE,
    "SELECT * FROM customers WHERE id = 7",
    "SELECT c.name, o.total FROM customers c JOIN orders o ON o.customer_id = c.id WHERE o.status = 'new'",
    "SELECT lower(email), substr(ssn, 1, 3), md5(ssn) FROM customers WHERE id < 10",
    "SELECT count(*), max(card_number), string_agg(name, ',') FROM customers",
    "SELECT row_to_json(c) FROM customers c WHERE id = 3",
    "WITH x(a, b) AS (SELECT ssn, name FROM customers) SELECT b, a FROM x",
    "SELECT name FROM customers UNION SELECT status FROM orders",
    "SELECT name, (SELECT max(total) FROM orders o WHERE o.customer_id = c.id) FROM customers c",
    "SELECT * FROM v_of_view",
    "SELECT name, total FROM v_join WHERE total > 10",
    "SELECT j.key, j.value FROM customers c, LATERAL jsonb_each(c.notes) j",
    "SELECT rank() OVER (ORDER BY ssn), name FROM customers",
    "SELECT name, get_ssn(id) FROM customers",
    "UPDATE orders SET status = status WHERE id = 1 RETURNING id, status",
]


def per_op(n: int, op: Callable[[], object]) -> float:
    """Median seconds per call over n calls (after one warm-up)."""
    op()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        op()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def direct(conn: psycopg.Connection[Any], statement: str) -> Callable[[], object]:
    def run() -> object:
        with conn.transaction(force_rollback=True), conn.cursor() as cur:
            cur.execute(statement)
            return cur.fetchall()

    return run


def report_catalog(relations: int, cold: float, warm: float) -> None:
    print(f"load_catalog, {relations} relations: cold {cold * 1e3:.2f} ms, warm {warm * 1e3:.2f} ms")


def cold_load(dsn: str) -> tuple[Catalog, float]:
    """load_catalog on a new session (server caches cold), timed without the connect."""
    with psycopg.connect(dsn, autocommit=True) as fresh:
        start = time.perf_counter()
        catalog = load_catalog(fresh)
        return catalog, time.perf_counter() - start


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with throwaway_database() as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SETUP)
        catalog, cold = cold_load(dsn)  # a fresh session, as at login
        warm = per_op(20, lambda: load_catalog(conn))
        report_catalog(len(catalog.tables), cold, warm)

        print(f"\n{'statement':<72} {'uncached':>9} {'cached':>8} {'direct':>8} {'ratio':>6}")
        totals = [0.0, 0.0, 0.0]
        for statement in CORPUS:
            uncached = per_op(n, lambda s=statement: result_lineage(s, catalog, use_cache=False))
            clear_lineage_cache()
            cached = per_op(n, lambda s=statement: result_lineage(s, catalog))
            baseline = per_op(min(n, 100), direct(conn, statement))
            totals = [totals[0] + uncached, totals[1] + cached, totals[2] + baseline]
            shown = statement if len(statement) <= 70 else statement[:67] + "..."
            print(
                f"{shown:<72} {uncached * 1e3:7.3f}ms {cached * 1e6:6.1f}us {baseline * 1e3:6.3f}ms"
                f" {uncached / baseline:5.2f}x"
            )
        k = len(CORPUS)
        print(
            f"{'mean over the corpus':<72} {totals[0] / k * 1e3:7.3f}ms {totals[1] / k * 1e6:6.1f}us"
            f" {totals[2] / k * 1e3:6.3f}ms {totals[0] / totals[2]:5.2f}x"
        )
        simple = per_op(n * 5, lambda: result_lineage(SIMPLE, catalog, use_cache=False))
        print(f"\nsimple statement ({SIMPLE}), uncached: {simple * 1e3:.3f} ms (target <= 0.5 ms)")

        conn.execute(BIG)
        big, cold = cold_load(dsn)
        warm = per_op(10, lambda: load_catalog(conn))
        report_catalog(len(big.tables), cold, warm)


if __name__ == "__main__":
    main()
