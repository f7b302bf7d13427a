"""The false-positive corpus: ordinary reads on pg-readonly are allowed, and what is not sensitive stays visible.

Each query runs through the pipeline and, directly, as the admin (no bastion); the rows must be equal — so no
column was masked and no value detector redacted anything — and the verdict must be allow, the class read.
A `shipments` table holds the kind of ordinary values a shop has (order and invoice numbers, prices, dates,
timestamps, UUIDs, tracking numbers, SKUs, barcodes, versions), which the detectors must leave alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bastion.policy.sql import SqlClass
from bastion.policy.verdict import Verdict
from bastion.session import Session
from bastion.sql_pipeline import SqlPipeline, StatementResult
from tests.shopdb import Shop, create_shop, open_session, shop_config

SHIPMENTS = """
CREATE TABLE shipments (
    id            int PRIMARY KEY,
    order_number  text,
    invoice       text,
    price         text,
    amount        numeric(12, 2),
    shipped_on    text,
    shipped_at    timestamptz,
    tracking      text,
    sku           text,
    barcode       text,
    ref           uuid,
    ref_text      text,
    version       text,
    quantity      int,
    info          jsonb
);
INSERT INTO shipments VALUES
 (1, 'SO-2024-000123', 'INV-20240315-0042', '1299.99', 1299.99, '2024-03-15', '2024-03-15 10:20:30+00',
  '1Z999AA10123456784', 'SKU-4711-XL', '4006381333931', 'c9bf9e57-1685-4c89-bafb-ff5af830be8a',
  '123e4567-e89b-12d3-a456-426614174000', '2.14.3', 3,
  '{"carrier": "UPS", "weight_kg": 1.25, "items": ["SKU-4711-XL", "SKU-0815-S"], "order": "SO-2024-000123"}'),
 (2, 'SO-2024-000124', 'INV-20240316-0043', '$1,234.56', 1234.56, '16/03/2024', '2024-03-16 08:00:00+00',
  '9400111899223344556677', 'SKU-0815-S', '9780201379624', '7d444840-9dc0-11d1-b245-5ffdce74fad2',
  'f47ac10b-58cc-4372-a567-0e02b2c3d479', '15.2', 1,
  '{"carrier": "USPS", "dims_cm": [30, 20, 10], "note": "leave at door"}'),
 (3, 'PO#7788-2024', 'A-1001', '0.99', 0.99, 'March 17, 2024', '2024-03-17 23:59:59+00',
  'JD014600003141592653', 'SKU-2024-03-17', '0012345678905', '00000000-0000-0000-0000-000000000000',
  'e4eaaaf2-d142-11e1-b3e4-080027620cdd', '2024.03.17', 12,
  '{"carrier": "DHL", "eta": "2024-03-20", "order_total": "1299.99"}');
"""


@dataclass(frozen=True)
class Read:
    """An ordinary read; `compare=False` when its rows legitimately differ between two sessions."""

    id: str
    sql: str
    compare: bool = True


READS: list[Read] = [
    Read("orders-by-status", "SELECT id, status, total FROM orders WHERE status = 'shipped' ORDER BY id"),
    Read("aggregates", "SELECT status, count(*), sum(total), avg(total), min(total), max(total) FROM orders "
         "GROUP BY status ORDER BY status"),
    Read("join-name-totals", "SELECT c.name, sum(o.total) AS total FROM customers c JOIN orders o "
         "ON o.customer_id = c.id GROUP BY c.name ORDER BY c.name"),
    Read("join-name-status", "SELECT c.name, o.total, o.status FROM customers c JOIN orders o "
         "ON o.customer_id = c.id ORDER BY o.id"),
    Read("count-star", "SELECT count(*) FROM customers"),
    Read("count-orders", "SELECT count(*) AS n, count(DISTINCT status) AS statuses FROM orders"),
    Read("names-ids", "SELECT id, name FROM customers ORDER BY id"),
    Read("duplicate-ids", "SELECT c.id, o.id, o.total FROM customers c JOIN orders o ON o.customer_id = c.id "
         "ORDER BY o.id"),
    Read("duplicate-ids-implicit-join", "SELECT c.id, o.id FROM customers c, orders o "
         "WHERE o.customer_id = c.id ORDER BY 1"),
    Read("filter-on-sensitive", "SELECT name FROM customers WHERE ssn IS NOT NULL AND email LIKE '%@%' ORDER BY name"),
    Read("order-by-sensitive-not-shown", "SELECT id, name FROM customers ORDER BY email"),
    Read("name-functions", "SELECT upper(name) AS shout, length(name) AS n FROM customers ORDER BY id"),
    Read("correlated-count", "SELECT name, (SELECT count(*) FROM orders o WHERE o.customer_id = c.id) AS n "
         "FROM customers c ORDER BY name"),
    Read("exists", "SELECT name FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id) "
         "ORDER BY name"),
    Read("dates", "SELECT date_trunc('month', DATE '2024-03-15') AS m, extract(year FROM DATE '2024-03-15') AS y, "
         "age(DATE '2024-03-15', DATE '2020-01-01') AS a, to_char(DATE '2024-03-15', 'YYYY-MM-DD') AS s, "
         "DATE '2024-03-15' + 30 AS later, make_date(2024, 3, 15) AS d"),
    Read("now", "SELECT now()::date = current_date AS today, now() - interval '1 day' < now() AS earlier"),
    Read("cte", "WITH t AS (SELECT status, total FROM orders) SELECT status, sum(total) FROM t GROUP BY status "
         "ORDER BY status"),
    Read("cte-filter", "WITH big AS (SELECT * FROM orders WHERE total > 10) SELECT count(*) FROM big"),
    Read("cte-recursive", "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) "
         "SELECT n FROM r"),
    Read("cte-join-names", "WITH t AS (SELECT customer_id, sum(total) AS s FROM orders GROUP BY customer_id) "
         "SELECT c.name, t.s FROM t JOIN customers c ON c.id = t.customer_id ORDER BY c.name"),
    Read("explain", "EXPLAIN SELECT * FROM orders"),
    Read("explain-json", "EXPLAIN (FORMAT JSON) SELECT * FROM orders WHERE status = 'shipped'"),
    Read("explain-customers", "EXPLAIN SELECT name FROM customers WHERE id = 1"),
    Read("explain-analyze-select", "EXPLAIN ANALYZE SELECT count(*) FROM orders", compare=False),
    Read("show-search-path", "SHOW search_path"),
    Read("show-server-version", "SHOW server_version"),
    Read("show-timezone", "SHOW TimeZone"),
    Read("values", "VALUES (1, 'a'), (2, 'b')"),
    Read("values-from", "SELECT * FROM (VALUES (1, 'x'), (2, 'y')) v(a, b) ORDER BY a"),
    Read("generate-series", "SELECT generate_series(1, 5) AS n"),
    Read("generate-series-dates", "SELECT d::date FROM generate_series(DATE '2024-01-01', DATE '2024-01-05', "
         "interval '1 day') AS d"),
    Read("arithmetic", "SELECT o.id, o.total * 1.2 AS gross, round(o.total) AS r FROM orders o ORDER BY o.id"),
    Read("string-agg-ids", "SELECT status, string_agg(id::text, ',' ORDER BY id) FROM orders GROUP BY status"),
    Read("json-agg-orders", "SELECT json_agg(o ORDER BY o.id) FROM orders o"),
    Read("row-to-json-orders", "SELECT row_to_json(o) FROM orders o ORDER BY o.id"),
    Read("star-orders", "SELECT * FROM orders ORDER BY id"),
    Read("table-orders", "TABLE orders"),
    Read("window", "SELECT id, total, sum(total) OVER (ORDER BY id) AS running FROM orders ORDER BY id"),
    Read("union-ids", "SELECT id FROM orders UNION SELECT id FROM customers ORDER BY 1"),
    Read("case", "SELECT id, CASE WHEN total > 20 THEN 'big' ELSE 'small' END AS size FROM orders ORDER BY id"),
    Read("shipments", "SELECT * FROM shipments ORDER BY id"),
    Read("shipments-json", "SELECT json_agg(s ORDER BY s.id) FROM shipments s"),
    Read("shipments-text", "SELECT s::text FROM shipments s ORDER BY s.id"),
    Read("shipments-info", "SELECT info->>'carrier', info->'items', info FROM shipments ORDER BY id"),
    Read("uuids", "SELECT gen_random_uuid() IS NOT NULL AS ok, '123e4567-e89b-12d3-a456-426614174000'::uuid AS u, "
         "'c9bf9e57-1685-4c89-bafb-ff5af830be8a'::text AS t"),
    Read("literals", "SELECT 1234567.89::numeric AS n, '2024-03-15'::date AS d, "
         "'2024-03-15 10:20:30'::timestamp AS ts, 'SO-2024-000123' AS order_number, 4111 AS small"),
    Read("version", "SELECT version()"),
    Read("barcodes", "SELECT '5449000000996' AS coke, '3017620422003' AS nutella, '9783161484100' AS isbn"),
    Read("barcode-gs1-example", "SELECT '5901234123457' AS ean13"),
    Read("catalog", "SELECT relname FROM pg_class WHERE relname IN ('orders', 'customers') ORDER BY 1"),
    Read("current-user", "SELECT current_user = session_user AS same, current_database() IS NOT NULL AS db"),
    Read("pg-catalog-functions", "SELECT pg_catalog.lower(status) AS s, pg_catalog.upper(status) AS u, "
         "pg_catalog.length(status) AS n FROM orders ORDER BY id"),
    Read("pg-catalog-operator", "SELECT id OPERATOR(pg_catalog.+) 1 AS next_id FROM orders ORDER BY id"),
    Read("xpath", "SELECT (xpath('/order/@id', '<order id=\"SO-7\"><sku>A-1</sku></order>'::xml))::text[] AS ids, "
         "xpath_exists('/order/sku', '<order><sku>A-1</sku></order>'::xml) AS has_sku"),
]  # fmt: skip


@dataclass
class Env:
    shop: Shop
    admin: psycopg.Connection[Any]
    session: Session
    pipeline: SqlPipeline


@pytest.fixture(scope="module")
def env(pg_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """The shop plus `shipments`; one session on pg-readonly and an admin connection for the direct runs."""
    shops = create_shop(pg_dsn)
    shop = next(shops)
    with shop.admin() as admin:
        admin.execute(SHIPMENTS)
        admin.execute(sql.SQL("GRANT SELECT ON shipments TO {}").format(sql.Identifier(shop.ro_user)))
    session = open_session(shop_config(tmp_path_factory.mktemp("false-positives"), shop))
    pipeline = SqlPipeline(session, "pg-readonly")
    pipeline.open()
    admin = shop.admin()
    try:
        yield Env(shop, admin, session, pipeline)
    finally:
        admin.close()
        pipeline.close()
        session.end()
        next(shops, None)


def run(pipeline: SqlPipeline, query: str) -> tuple[StatementResult, list[tuple[Any, ...]]]:
    """The single statement's result and every row (streams fetched to the end)."""
    results = []
    rows: list[tuple[Any, ...]] = []
    for result in pipeline.run(query):
        rows = list(result.rows)
        while result.more_available:
            batch = result.more()
            if not batch:
                break
            rows += batch
        result.close()
        results.append(result)
    assert len(results) == 1, [r.status for r in results]
    return results[0], rows


_XFAIL: dict[str, str] = {}


def _params() -> list[Any]:
    return [
        pytest.param(
            r, id=r.id, marks=[pytest.mark.xfail(strict=True, reason=_XFAIL[r.id])] if r.id in _XFAIL else []
        )
        for r in READS
    ]


@pytest.mark.parametrize("read", _params())
def test_ordinary_read_is_allowed_and_shown_in_clear(env: Env, read: Read) -> None:
    """Allowed, run, nothing masked, and the same rows (same column names) as the admin gets directly: no
    layer touched a value."""
    result, rows = run(env.pipeline, read.sql)
    assert result.decision.verdict is Verdict.ALLOW, result.decision.reasons
    assert result.decision.classification.sql_class is SqlClass.READ
    assert result.status == "ok", result.error
    assert rows, "no rows: nothing was compared"
    assert [d.name for d in result.masking if d.masked] == [], result.masking
    if read.compare:
        # The admin's session has no statement_timeout from a policy; nothing compared here depends on it.
        cursor = env.admin.execute(read.sql)
        direct = cursor.fetchall()
        assert result.columns == [c.name for c in cursor.description or []]
        assert rows == direct


def test_non_sensitive_values_appear_in_clear(env: Env) -> None:
    """Names, ids, totals and statuses read next to the sensitive table show their real values (read from
    the database directly, not written down here)."""
    _, rows = run(env.pipeline, "SELECT c.id, c.name, o.id, o.total, o.status FROM customers c "
                  "JOIN orders o ON o.customer_id = c.id ORDER BY o.id")  # fmt: skip
    direct = env.admin.execute(
        "SELECT c.id, c.name, o.id, o.total, o.status FROM customers c JOIN orders o ON o.customer_id = c.id "
        "ORDER BY o.id"
    ).fetchall()
    assert len(rows) == len(direct) >= 3
    names = {row[1] for row in direct}
    assert names and names == {row[1] for row in rows}
    assert all(isinstance(row[3], type(direct[0][3])) for row in rows)
