"""Masking layer two against a real PostgreSQL: the catalog snapshot and result-column lineage.

Three oracles: a hand-checked corpus; PostgreSQL's own result metadata (``ftable``/``ftablecol``), which must be
covered for every sensitive plain column reference; and canary values planted in the sensitive columns, which
must never show up in a result column whose lineage leaves their column out. Random compositions of corpus
pieces go through the same oracles, and random junk must never make lineage raise.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.policy.lineage import (
    OutputColumn,
    clear_lineage_cache,
    lineage_cache_info,
    may_change_catalog,
    result_lineage,
)
from bastion.targets.catalog import Catalog, load_catalog

SCHEMA = "lineage_t"
LONG_NAME = "t_" + "x" * 61 + "_cut_here"  # the server keeps the first 63 bytes
LONG_COLUMN = "a_column_whose_name_is_also_much_longer_than_sixty_three_bytes_in_total"

SETUP = f"""
CREATE SCHEMA {SCHEMA};
SET search_path = {SCHEMA};
CREATE TABLE customers (
    id int PRIMARY KEY, name text, email text, ssn text, phone text, card_number text, notes jsonb);
CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers, total numeric, status text);
CREATE TABLE "MixedCase" ("Secret" text, plain int);
CREATE TABLE dropped (a int, gone text, b text);
ALTER TABLE dropped DROP COLUMN gone;
CREATE TABLE events (id int, payload text, created date) PARTITION BY RANGE (created);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
INSERT INTO customers VALUES
    (1, 'Ann Example', 'canary.ann@example.com', '987-65-4321', '+1-555-0100-77', '4111111111111111',
     '{{"k": "note-canary-xyz", "a": "deep"}}'),
    (2, 'Bob Example', 'canary.bob@example.com', '876-54-3210', '+1-555-0199-88', '5500005555555559',
     '{{"k": "note-canary-bob"}}');
INSERT INTO orders VALUES (10, 1, 9.50, 'new'), (11, 2, 20.00, 'paid');
INSERT INTO "MixedCase" VALUES ('mixed-secret', 1);
INSERT INTO events VALUES (1, 'event-payload', '2024-05-01');
CREATE VIEW v_ssn_alias AS SELECT id, ssn AS tax_id FROM customers;
CREATE VIEW v_of_view AS SELECT tax_id AS t, id FROM v_ssn_alias;
CREATE VIEW v_join AS SELECT c.name, c.email, o.total, o.status FROM customers c JOIN orders o ON o.customer_id = c.id;
CREATE MATERIALIZED VIEW mv_cards AS SELECT id, card_number, upper(name) AS uname FROM customers;
CREATE FUNCTION get_ssn(int) RETURNS text LANGUAGE sql STABLE AS 'SELECT ssn FROM {SCHEMA}.customers WHERE id = $1';
CREATE FUNCTION full_info(customers) RETURNS text LANGUAGE sql STABLE AS 'SELECT $1.name || $1.ssn';
CREATE VIEW v_uses_func AS SELECT id, get_ssn(id) AS s FROM customers;
CREATE VIEW v_whole_row AS SELECT c.id, row_to_json(c) AS doc FROM customers c;
CREATE TABLE people (id int, ssn text, ssn_last4 text GENERATED ALWAYS AS (right(ssn, 4)) STORED);
INSERT INTO people (id, ssn) VALUES (1, '111-22-3333');
CREATE TABLE Ärger (Größe text);
INSERT INTO Ärger VALUES ('umlaut');
CREATE TABLE {LONG_NAME} ({LONG_COLUMN} text);
"""

SENSITIVE = {
    ("customers", "ssn"),
    ("customers", "email"),
    ("customers", "phone"),
    ("customers", "card_number"),
    ("customers", "notes"),
    ("MixedCase", "Secret"),
    ("people", "ssn"),
}
# Planted values: a result cell containing one (case-insensitively) derives from that column.
CANARIES = {
    ("customers", "ssn"): ["987-65-4321", "876-54-3210"],
    ("customers", "email"): ["canary.ann@example.com", "canary.bob@example.com"],
    ("customers", "phone"): ["+1-555-0100-77", "+1-555-0199-88"],
    ("customers", "card_number"): ["4111111111111111", "5500005555555559"],
    ("customers", "notes"): ["note-canary-xyz", "note-canary-bob"],
    ("MixedCase", "Secret"): ["mixed-secret"],
    ("people", "ssn"): ["111-22-3333"],
}
CUSTOMER_COLUMNS = ("id", "name", "email", "ssn", "phone", "card_number", "notes")
# What each view column derives from, in base columns, for PostgreSQL's view-level origins (hand-checked).
VIEW_BASE: dict[tuple[str, str], set[tuple[str, str]]] = {
    ("v_ssn_alias", "id"): {("customers", "id")},
    ("v_ssn_alias", "tax_id"): {("customers", "ssn")},
    ("v_of_view", "t"): {("customers", "ssn")},
    ("v_of_view", "id"): {("customers", "id")},
    ("v_join", "name"): {("customers", "name")},
    ("v_join", "email"): {("customers", "email")},
    ("v_join", "total"): {("orders", "total")},
    ("v_join", "status"): {("orders", "status")},
    ("mv_cards", "id"): {("customers", "id")},
    ("mv_cards", "card_number"): {("customers", "card_number")},
    ("mv_cards", "uname"): {("customers", "name")},
    ("v_uses_func", "id"): {("customers", "id")},
    ("v_uses_func", "s"): {("customers", "ssn")},  # through get_ssn(): lineage must say unknown
    ("v_whole_row", "id"): {("customers", "id")},
    ("v_whole_row", "doc"): {("customers", c) for c in CUSTOMER_COLUMNS},
}

C_ALL = {f"customers.{c}" for c in CUSTOMER_COLUMNS}
O_ALL = {f"orders.{c}" for c in ("id", "customer_id", "total", "status")}
UNKNOWN = None
E: set[str] = set()

# (sql, expected per output column: set of "table.column" (schema left out) or None = unknown, runnable?)
CORPUS: list[tuple[str, list[set[str] | None], bool]] = [
    ("SELECT id, name FROM customers WHERE id = 1", [{"customers.id"}, {"customers.name"}], True),
    ("SELECT name FROM customers", [{"customers.name"}], True),
    ("select NAME from CUSTOMERS", [{"customers.name"}], True),
    ("SELECT ssn AS tax_id, name AS n FROM customers", [{"customers.ssn"}, {"customers.name"}], True),
    (
        "SELECT lower(email), email || 'x', substr(ssn, 1, 3), reverse(ssn), "
        "encode(convert_to(ssn, 'UTF8'), 'base64'), md5(ssn) FROM customers",
        [{"customers.email"}, {"customers.email"}] + [{"customers.ssn"}] * 4,
        True,
    ),
    (
        "SELECT id::text, CAST(ssn AS varchar(20)), card_number::numeric FROM customers",
        [{"customers.id"}, {"customers.ssn"}, {"customers.card_number"}],
        True,
    ),
    (
        "SELECT CASE WHEN id > 1 THEN phone ELSE 'none' END FROM customers",
        [{"customers.id", "customers.phone"}],
        True,
    ),
    (
        "SELECT count(*), count(ssn), max(card_number), min(name) FROM customers",
        [E, {"customers.ssn"}, {"customers.card_number"}, {"customers.name"}],
        True,
    ),
    ("SELECT count(*) FILTER (WHERE ssn IS NOT NULL) FROM customers", [{"customers.ssn"}], True),
    ("SELECT c FROM customers c", [C_ALL], True),
    ("SELECT customers FROM customers", [C_ALL], True),
    ("SELECT row_to_json(c), to_jsonb(c), c::text FROM customers c", [C_ALL] * 3, True),
    ("SELECT (c).ssn FROM customers c", [C_ALL], True),
    (
        "SELECT json_agg(c), array_agg(ssn), string_agg(email, ',') FROM customers c",
        [C_ALL, {"customers.ssn"}, {"customers.email"}],
        True,
    ),
    (
        "SELECT jsonb_build_object('n', name, 'p', phone) FROM customers",
        [{"customers.name", "customers.phone"}],
        True,
    ),
    (
        "WITH x AS (SELECT ssn, name FROM customers) SELECT * FROM x",
        [{"customers.ssn"}, {"customers.name"}],
        True,
    ),
    (
        "WITH x(a, b) AS (SELECT ssn, name FROM customers) SELECT b, a FROM x",
        [{"customers.name"}, {"customers.ssn"}],
        True,
    ),
    ("SELECT s FROM (SELECT ssn AS s FROM customers) sub", [{"customers.ssn"}], True),
    (
        "SELECT name, (SELECT max(ssn) FROM customers c2 WHERE c2.id = c.id) FROM customers c",
        [{"customers.name"}, {"customers.ssn"}],
        True,
    ),
    ("SELECT name FROM customers WHERE ssn IN (SELECT ssn FROM customers)", [{"customers.name"}], True),
    (
        "SELECT name FROM customers UNION SELECT ssn FROM customers",
        [{"customers.name", "customers.ssn"}],
        True,
    ),
    (
        "SELECT name FROM customers UNION ALL SELECT status FROM orders",
        [{"customers.name", "orders.status"}],
        True,
    ),
    (
        "SELECT c.id, o.id FROM customers c JOIN orders o ON o.customer_id = c.id",
        [{"customers.id"}, {"orders.id"}],
        True,
    ),
    (
        "SELECT customers.id, status FROM customers JOIN orders ON orders.customer_id = customers.id",
        [{"customers.id"}, {"orders.status"}],
        True,
    ),
    ("SELECT id FROM customers NATURAL JOIN orders", [{"customers.id", "orders.id"}], True),
    (
        "SELECT a, b, x FROM customers AS c(a, b, x)",
        [{"customers.id"}, {"customers.name"}, {"customers.email"}],
        True,
    ),
    ("SELECT c.x, c.ssn FROM customers AS c(a, b, x)", [{"customers.email"}, {"customers.ssn"}], True),
    ("SELECT tax_id FROM v_ssn_alias", [{"customers.ssn"}], True),
    ("SELECT * FROM v_of_view", [{"customers.ssn"}, {"customers.id"}], True),
    ("SELECT name, total FROM v_join", [{"customers.name"}, {"orders.total"}], True),
    ("SELECT * FROM mv_cards", [{"customers.id"}, {"customers.card_number"}, {"customers.name"}], True),
    ("SELECT * FROM v_uses_func", [{"customers.id"}, UNKNOWN], True),
    ("SELECT doc FROM v_whole_row", [C_ALL], True),
    ("SELECT get_ssn(id) FROM customers", [UNKNOWN], True),
    ("SELECT name, get_ssn(id) FROM customers", [{"customers.name"}, UNKNOWN], True),
    ("SELECT c.name, c.full_info FROM customers c", [{"customers.name"}, UNKNOWN], True),
    ("SELECT ssn FROM no_such_table", [UNKNOWN], False),
    ("SELECT relname FROM pg_class LIMIT 1", [UNKNOWN], True),
    ("UPDATE customers SET name = name WHERE id = 1 RETURNING ssn", [{"customers.ssn"}], True),
    (
        "UPDATE orders SET status = (SELECT ssn FROM customers WHERE id = 1) WHERE id = 10 RETURNING status, total",
        [{"orders.status", "customers.ssn"}, {"orders.total"}],
        True,
    ),
    (
        "INSERT INTO orders (id, customer_id, status) SELECT 1000 + id, id, ssn FROM customers RETURNING status",
        [{"orders.status", "customers.ssn"}],
        True,
    ),
    ("DELETE FROM orders WHERE id = -1 RETURNING id, status", [{"orders.id"}, {"orders.status"}], True),
    ("SELECT 1", [E], True),
    ("SELECT now()", [E], True),
    ("SELECT g FROM generate_series(1, 3) g", [E], True),
    (
        "SELECT j.key, j.value FROM customers c, LATERAL jsonb_each(c.notes) j",
        [{"customers.notes"}, {"customers.notes"}],
        True,
    ),
    (
        "SELECT u FROM customers c, unnest(ARRAY[c.phone, c.email]) u",
        [{"customers.phone", "customers.email"}],
        True,
    ),
    ("SELECT * FROM (VALUES (1, 'a'), (2, 'b')) v(n, s)", [E, E], True),
    ("SELECT x.s FROM customers c, LATERAL (SELECT c.ssn AS s) x", [{"customers.ssn"}], True),
    (
        "WITH RECURSIVE r(n, s) AS (SELECT 1, name FROM customers WHERE id = 1 UNION ALL "
        "SELECT n + 1, s || ssn FROM r JOIN customers ON id = 1 WHERE n < 3) SELECT * FROM r",
        [E, {"customers.name", "customers.ssn"}],
        True,
    ),
    (
        "SELECT rank() OVER (ORDER BY ssn), first_value(name) OVER (PARTITION BY email) FROM customers",
        [{"customers.ssn"}, {"customers.name", "customers.email"}],
        True,
    ),
    ("SELECT name FROM customers ORDER BY ssn", [{"customers.name"}], True),
    ('SELECT "SSN" FROM customers', [UNKNOWN], False),
    ("SELECT notes->>'k', notes #>> '{a}' FROM customers", [{"customers.notes"}, {"customers.notes"}], True),
    ("SELECT t.id FROM customers t WHERE t.ssn LIKE '9%'", [{"customers.id"}], True),
    ("SELECT name AS ssn, ssn AS name FROM customers", [{"customers.name"}, {"customers.ssn"}], True),
    ("SELECT ssn AS x, name AS x FROM customers", [{"customers.ssn"}, {"customers.name"}], True),
    (
        "SELECT * FROM (SELECT ssn AS x, name AS x FROM customers) s",
        [{"customers.ssn"}, {"customers.name"}],
        True,
    ),
    ("SELECT payload FROM events_2024", [{"events_2024.payload", "events.payload"}], True),
    ("SELECT payload FROM events", [{"events.payload", "events_2024.payload"}], True),
    ("SELECT id, ssn_last4 FROM people", [{"people.id"}, {"people.ssn_last4", "people.ssn"}], True),
    ('SELECT "Secret", plain FROM "MixedCase"', [{"MixedCase.Secret"}, {"MixedCase.plain"}], True),
    ("SELECT * FROM dropped", [{"dropped.a"}, {"dropped.b"}], True),
    ("SELECT id, ctid, xmin FROM customers", [{"customers.id"}, E, E], True),
    (
        "SELECT name FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id)",
        [{"customers.name"}],
        True,
    ),
    ("SELECT ARRAY(SELECT ssn FROM customers)", [{"customers.ssn"}], True),
    ("SELECT (SELECT ssn FROM customers LIMIT 1) IS NULL", [{"customers.ssn"}], True),
    ("SELECT pg_catalog.upper(name) FROM customers", [{"customers.name"}], True),
    ("SELECT query_to_xml('select ssn from customers', true, false, '')", [UNKNOWN], True),
    ("SELECT user, current_user", [E, E], True),
    ("SELECT v.tax_id FROM v_ssn_alias v WHERE v.id = 1", [{"customers.ssn"}], True),
    (
        "WITH d AS (UPDATE customers SET name = name WHERE id = 2 RETURNING *) SELECT ssn, name FROM d",
        [{"customers.ssn"}, {"customers.name"}],
        True,
    ),
    (
        "WITH customers AS (SELECT ssn AS name FROM lineage_t.customers) SELECT name FROM customers",
        [{"customers.ssn"}],
        True,
    ),
    (
        "WITH c AS (SELECT ssn AS name FROM customers) SELECT name FROM lineage_t.customers",
        [{"customers.name"}],
        True,
    ),
    (
        "WITH customers AS (SELECT ssn AS name FROM customers) SELECT name FROM customers",  # inner: the table
        [{"customers.ssn"}],
        True,
    ),
    (
        "SELECT t.* FROM (SELECT ssn, name FROM customers) t(name, ssn)",
        [{"customers.ssn"}, {"customers.name"}],
        True,
    ),
    ("SELECT ROW(id, ssn)::text FROM customers", [{"customers.id", "customers.ssn"}], True),
    (
        "SELECT j.name, j.status FROM (customers c1 JOIN orders o1 ON o1.customer_id = c1.id) AS j",
        [{"customers.name"}, {"orders.status"}],
        True,
    ),
    (
        "SELECT id, name FROM customers c1 NATURAL JOIN (SELECT id, ssn AS name FROM customers) c2",
        [{"customers.id"}, {"customers.name", "customers.ssn"}],
        True,
    ),
    (
        "INSERT INTO orders (status, id) VALUES ((SELECT ssn FROM customers LIMIT 1), 999) RETURNING *",
        [{"orders.id"}, {"orders.customer_id"}, {"orders.total"}, {"orders.status", "customers.ssn"}],
        True,
    ),
    (
        "INSERT INTO orders AS o (id, status) VALUES (10, (SELECT email FROM customers LIMIT 1)) "
        "ON CONFLICT (id) DO UPDATE SET status = excluded.status || o.status RETURNING status",
        [{"orders.status", "customers.email"}],
        True,
    ),
    (
        "UPDATE orders o SET status = c.ssn FROM customers c WHERE c.id = o.customer_id RETURNING o.status, c.name",
        [{"orders.status", "customers.ssn"}, {"customers.name"}],
        True,
    ),
    (
        "UPDATE customers SET notes['x'] = to_jsonb(name) WHERE id = 1 RETURNING notes",
        [{"customers.notes", "customers.name"}],
        True,
    ),
    (
        "DELETE FROM orders o USING customers c WHERE c.id = o.customer_id AND o.id = 10 RETURNING c.ssn, o.id",
        [{"customers.ssn"}, {"orders.id"}],
        True,
    ),
    ("SELECT Größe FROM Ärger", [{"Ärger.größe"}], True),  # ASCII-only folding: Ä and ß stay, G folds
    (
        f"SELECT {LONG_COLUMN} FROM {LONG_NAME}",
        [{f"{LONG_NAME[:63]}.{LONG_COLUMN[:63]}"}],
        True,
    ),
    (
        "SELECT x FROM customers c, jsonb_array_elements_text(c.notes -> 'list') x",
        [{"customers.notes"}],
        True,
    ),
]
# SELECT * / TABLE / c.* spell out every customers column, in order.
C_COLS = [{f"customers.{c}"} for c in CUSTOMER_COLUMNS]
CORPUS += [
    ("SELECT * FROM customers", C_COLS, True),
    ("TABLE customers", C_COLS, True),
    ("SELECT c.* FROM customers c", C_COLS, True),
    ("SELECT (c).* FROM customers c", C_COLS, True),
    ("SELECT * FROM customers AS c(a, b, x)", C_COLS, True),
    (
        "SELECT * FROM customers c JOIN orders o USING (id)",
        [
            {"customers.id", "orders.id"},
            *C_COLS[1:],
            *({f"orders.{c}"} for c in ("customer_id", "total", "status")),
        ],
        True,
    ),
    (
        "SELECT * FROM customers c, orders o",
        [*C_COLS, *({f"orders.{c}"} for c in ("id", "customer_id", "total", "status"))],
        True,
    ),
]

NO_ROWS = [
    "CREATE TABLE t_new AS SELECT ssn FROM customers",
    "SELECT ssn INTO TEMP t_copy FROM customers",
    "UPDATE customers SET name = name",
    "SET search_path = public",
    "",
]
MARKERS = [
    "EXPLAIN SELECT ssn FROM customers",
    "SELECT ssn FROM customers; SELECT 1",
    "SELECT FROM WHERE (((",
]


@pytest.fixture(scope="module")
def conn(pg_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg_dsn, autocommit=True) as setup:
        setup.execute(SETUP)
    with psycopg.connect(pg_dsn, autocommit=True, options=f"-c search_path={SCHEMA}") as c:
        yield c


@pytest.fixture(scope="module")
def catalog(conn: psycopg.Connection[Any]) -> Catalog:
    return load_catalog(conn)


def short(sources: frozenset[tuple[str, str]] | None) -> set[str] | None:
    if sources is None:
        return None
    return {f"{table.split('.', 1)[1]}.{column}" for table, column in sources}


# -- catalog --------------------------------------------------------------------------------------------------


def test_catalog_reads_relations_columns_and_definitions(catalog: Catalog) -> None:
    kinds = {t.name: t.relkind for t in catalog.tables if t.schema == SCHEMA}
    assert kinds["customers"] == "r" and kinds["v_join"] == "v" and kinds["mv_cards"] == "m"
    assert kinds["events"] == "p" and kinds["events_2024"] == "r"
    assert catalog.columns("customers") == ["id", "name", "email", "ssn", "phone", "card_number", "notes"]
    assert catalog.columns("dropped") == ["a", "b"]  # dropped and system columns are not listed
    assert [c.attnum for c in catalog.resolve("dropped").columns] == [1, 3]
    assert catalog.resolve("customers").columns[6].type_name == "jsonb"
    view = catalog.resolve("v_ssn_alias")
    assert view is not None and view.definition and "ssn" in view.definition
    assert catalog.resolve("customers").definition is None
    assert "right" in catalog.resolve("people").columns[2].generated
    assert catalog.resolve("people").columns[1].generated is None
    events = catalog.resolve("events")
    assert [d.name for d in catalog.descendants(events)] == ["events_2024"]
    assert [p.name for p in catalog.ancestors(catalog.resolve("events_2024"))] == ["events"]
    assert catalog.by_oid(events.oid) is events
    assert catalog.search_path == (SCHEMA,)
    assert "pg_catalog" in catalog.effective_path


def test_catalog_resolves_names_like_the_server(catalog: Catalog) -> None:
    assert catalog.resolve("CUSTOMERS").name == "customers"
    assert catalog.resolve(f"{SCHEMA}.Customers").name == "customers"
    assert catalog.resolve([SCHEMA, '"customers"']).name == "customers"
    assert catalog.resolve('"CUSTOMERS"') is None
    assert catalog.resolve('"MixedCase"').name == "MixedCase"
    assert catalog.resolve("mixedcase") is None
    assert catalog.resolve(f'{catalog.database}.{SCHEMA}."MixedCase"').name == "MixedCase"
    assert catalog.resolve(f"otherdb.{SCHEMA}.customers") is None
    assert catalog.resolve("pg_class") is None and catalog.is_system("pg_class")
    assert catalog.is_system("information_schema.tables")
    assert not catalog.is_system("customers")


def test_catalog_lists_user_functions_and_builtins(catalog: Catalog) -> None:
    assert catalog.is_user_function("get_ssn")
    (fn,) = catalog.user_functions("get_ssn")
    assert (fn.schema, fn.volatility, fn.kind) == (SCHEMA, "s", "f")
    assert not catalog.is_user_function("lower")
    assert catalog.is_builtin_function("lower") and catalog.is_builtin_function("query_to_xml")


def test_catalog_loads_in_one_fast_query(conn: psycopg.Connection[Any]) -> None:
    load_catalog(conn)  # warm the server's caches
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        load_catalog(conn)
        samples.append(time.perf_counter() - start)
    assert statistics.median(samples) < 0.25, samples


# -- the corpus -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sql", "expected", "runnable"), CORPUS, ids=[q[:60] for q, _, _ in CORPUS])
def test_corpus_lineage(catalog: Catalog, sql: str, expected: list[set[str] | None], runnable: bool) -> None:
    got = result_lineage(sql, catalog)
    assert all(isinstance(c, OutputColumn) for c in got)
    assert [short(c.sources) for c in got] == expected, [(c.name, c.sources, c.reasons) for c in got]
    for column in got:
        if column.sources is None:
            assert column.reasons, column  # an unknown always says why


def test_whole_row_and_unknown_columns_say_why(catalog: Catalog) -> None:
    (col,) = result_lineage("SELECT row_to_json(c) FROM customers c", catalog)
    assert any("whole-row reference" in r for r in col.reasons)
    (col,) = result_lineage("SELECT get_ssn(1)", catalog)
    assert col.sources is None and "get_ssn" in col.reasons[0]
    (col,) = result_lineage("SELECT ssn FROM no_such_table", catalog)
    assert col.sources is None and "no_such_table" in col.reasons[0]


def test_output_names_follow_postgres(catalog: Catalog) -> None:
    names = [
        c.name
        for c in result_lineage(
            "SELECT id, ssn AS x, count(*), lower(name), 1 FROM customers GROUP BY 1, 2", catalog
        )
    ]
    assert names == ["id", "x", "count", "lower", "?column?"]
    dup = result_lineage("SELECT ssn AS x, name AS x FROM customers", catalog)
    assert [c.name for c in dup] == ["x", "x"]


@pytest.mark.parametrize("sql", NO_ROWS)
def test_statements_without_rows_have_no_columns(catalog: Catalog, sql: str) -> None:
    assert result_lineage(sql, catalog) == []


@pytest.mark.parametrize("sql", MARKERS)
def test_statements_not_understood_are_unknown(catalog: Catalog, sql: str) -> None:
    got = result_lineage(sql, catalog)
    assert got and all(c.sources is None and c.reasons for c in got)


def test_parsed_tree_input_is_not_modified(catalog: Catalog) -> None:
    import sqlglot

    tree = sqlglot.parse_one(
        "SELECT c.ssn, o.total FROM customers c JOIN orders o ON o.customer_id = c.id", dialect="postgres"
    )
    before = tree.sql("postgres")
    got = result_lineage(tree, catalog)
    assert [short(c.sources) for c in got] == [{"customers.ssn"}, {"orders.total"}]
    assert tree.sql("postgres") == before


def test_view_nesting_is_expanded_and_bounded(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE VIEW chain_0 AS SELECT ssn AS s0 FROM customers")
    for i in range(1, 40):
        conn.execute(f"CREATE VIEW chain_{i} AS SELECT s{i - 1} AS s{i} FROM chain_{i - 1}")
    fresh = load_catalog(conn)
    (shallow,) = result_lineage("SELECT s3 FROM chain_3", fresh)
    assert short(shallow.sources) == {"customers.ssn"}
    (deep,) = result_lineage("SELECT s39 FROM chain_39", fresh)
    assert deep.sources is None and deep.reasons


def test_may_change_catalog(catalog: Catalog) -> None:
    assert not may_change_catalog("SELECT c.name, lower(email) FROM customers c", catalog)
    assert not may_change_catalog("WITH x AS (SELECT 1) SELECT * FROM x UNION SELECT 2", catalog)
    for sql in (
        "SELECT get_ssn(1)",
        "SELECT set_config('search_path', 'public', false)",
        "CREATE TEMP TABLE customers AS SELECT 1",
        "SET search_path = public",
        "UPDATE orders SET status = status",
        "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d",
        "SELECT 1 INTO TEMP t",
        "SELECT 1; SELECT 2",
        "EXPLAIN ANALYZE SELECT 1",
    ):
        assert may_change_catalog(sql, catalog), sql


def test_a_stale_catalog_is_why_the_caller_reloads(pg_dsn: str) -> None:
    """A temporary table created after the snapshot shadows the catalogued one: reload sees it."""
    with psycopg.connect(pg_dsn, autocommit=True, options=f"-c search_path={SCHEMA}") as own:
        before = load_catalog(own)
        statement = f"CREATE TEMP TABLE customers AS SELECT ssn AS name FROM {SCHEMA}.customers"
        assert may_change_catalog(statement, before)
        own.execute(statement)
        after = load_catalog(own)
        assert before.resolve("customers").schema == SCHEMA
        assert after.resolve("customers").schema.startswith("pg_temp_")
        assert after.resolve("pg_temp.customers") is after.resolve("customers")
        (col,) = result_lineage("SELECT name FROM customers", after)
        assert next(iter(col.sources))[0].startswith("pg_temp_")


def test_cache_is_keyed_by_text_and_catalog(conn: psycopg.Connection[Any], catalog: Catalog) -> None:
    clear_lineage_cache()
    first = result_lineage("SELECT ssn FROM customers", catalog)
    again = result_lineage("  SELECT ssn FROM customers ;", catalog)
    assert first == again and lineage_cache_info()["hits"] == 1
    other = load_catalog(conn)
    result_lineage("SELECT ssn FROM customers", other)
    assert lineage_cache_info()["misses"] == 2
    again[0] = OutputColumn("tampered", None)  # results are copies: the cache cannot be poisoned by callers
    assert result_lineage("SELECT ssn FROM customers", catalog) == first


def test_simple_lineage_is_fast(catalog: Catalog) -> None:
    sql = "SELECT id, name FROM customers WHERE id = 5"
    result_lineage(sql, catalog, use_cache=False)
    samples = []
    for _ in range(50):
        start = time.perf_counter()
        result_lineage(sql, catalog, use_cache=False)
        samples.append(time.perf_counter() - start)
    assert statistics.median(samples) < 0.003, statistics.median(samples)  # bench/lineage.py: ~0.25 ms


# -- PostgreSQL as the oracle ---------------------------------------------------------------------------------


def run(conn: psycopg.Connection[Any], sql: str) -> tuple[list[tuple[int, int]], list[tuple[Any, ...]]]:
    """Execute (rolled back) and return each column's (ftable, ftablecol) and the rows."""
    with conn.transaction(force_rollback=True), conn.cursor() as cur:
        cur.execute(sql)
        result = cur.pgresult
        assert result is not None and cur.description is not None
        origins = [(result.ftable(i), result.ftablecol(i)) for i in range(result.nfields)]
        return origins, cur.fetchall()


def check_against_server(conn: psycopg.Connection[Any], catalog: Catalog, sql: str) -> list[OutputColumn]:
    """PostgreSQL's reported origins and the planted canaries must be covered by the lineage."""
    got = result_lineage(sql, catalog)
    origins, rows = run(conn, sql)
    if any(c.name == "*" and c.sources is None for c in got):
        return got  # count unknown: the caller masks every column
    assert len(got) == len(origins), (sql, got)
    for i, (column, (oid, attnum)) in enumerate(zip(got, origins, strict=True)):
        if column.sources is None:
            continue
        covered = {(t.split(".", 1)[1], c) for t, c in column.sources}
        if oid and attnum >= 0:  # negative: a system column (ctid, xmin, ...), which holds no user data
            table = catalog.by_oid(oid)
            assert table is not None, (sql, oid)
            if attnum == 0:  # a whole-row reference
                names = [c.name for c in table.columns]
            else:
                names = [next(c.name for c in table.columns if c.attnum == attnum)]
            base: set[tuple[str, str]] = set()
            for name in names:
                base |= VIEW_BASE[(table.name, name)] if table.is_view else {(table.name, name)}
            missing = (base & SENSITIVE) - covered
            assert not missing, (sql, i, missing, column)
        for sensitive, values in CANARIES.items():
            if sensitive in covered:
                continue
            for row in rows:
                cell = str(row[i]).lower()
                leaked = [v for v in values if v.lower() in cell]
                assert not leaked, f"{sql}: column {i} shows {sensitive} values but lineage is {column}"
    return got


@pytest.mark.parametrize(
    "sql", [q for q, _, runnable in CORPUS if runnable], ids=[q[:60] for q, _, r in CORPUS if r]
)
def test_corpus_covers_server_metadata_and_canaries(
    conn: psycopg.Connection[Any], catalog: Catalog, sql: str
) -> None:
    check_against_server(conn, catalog, sql)


# -- random compositions --------------------------------------------------------------------------------------

ITEMS = [
    "{c}.id", "{c}.name", "{c}.ssn", "{c}.email", "lower({c}.email)", "{c}.email || 'x'", "substr({c}.ssn, 1, 3)",
    "reverse({c}.ssn)", "md5({c}.ssn)", "upper({c}.card_number)", "{c}.phone::text",
    "CASE WHEN {c}.id > 1 THEN {c}.phone ELSE 'n/a' END", "row_to_json({c})", "{c}::text", "to_jsonb({c})",
    "coalesce({c}.notes->>'k', {c}.name)", "{c}.notes", "jsonb_build_object('p', {c}.phone)",
    "(SELECT max(o2.total) FROM orders o2 WHERE o2.customer_id = {c}.id)",
    "(SELECT string_agg(c2.ssn, ',') FROM customers c2 WHERE c2.id = {c}.id)", "(SELECT {c}.email)",
    "get_ssn({c}.id)", "1", "now()::date", "'lit'", "concat_ws('-', {c}.name, {c}.card_number)",
    "translate({c}.ssn, '0123456789', 'abcdefghij')", "encode(convert_to({c}.email, 'UTF8'), 'base64')",
    "length({c}.ssn)", "ARRAY[{c}.name, {c}.email]", "row_number() OVER (ORDER BY {c}.ssn)",
    "first_value({c}.email) OVER (PARTITION BY {c}.id)", "{c}.full_info", "format('%s!', {c}.phone)",
    "EXISTS (SELECT 1 FROM orders o3 WHERE o3.customer_id = {c}.id)", "ROW({c}.id, {c}.card_number)::text",
    "{c}.notes -> 'k'", "(SELECT j.value FROM jsonb_each_text({c}.notes) j LIMIT 1)",
    "{c}.id::text || {c}.ssn", "(SELECT {c}.ssn FROM orders LIMIT 1)", "jsonb_build_object('c', {c})",
    "(SELECT max(x) FROM unnest(ARRAY[{c}.phone, {c}.name]) x)",
]  # fmt: skip
SOURCES = [
    "customers",
    "(SELECT * FROM customers)",
    "(SELECT id, name, email, ssn, phone, card_number, notes FROM customers WHERE id > 0)",
    "customers_cte",
    "(SELECT * FROM customers UNION ALL SELECT * FROM customers)",
    "(TABLE customers)",
    "(SELECT c1.*, o1.total FROM customers c1 LEFT JOIN orders o1 ON o1.customer_id = c1.id)",
    "(SELECT * FROM customers c1 JOIN orders o1 USING (id))",
    "(SELECT id, name, phone AS email, ssn, email AS phone, card_number, notes FROM customers)",
]
# Renames in FROM: the item's column names no longer say where the data comes from.
RENAMES = ["", "(id, name, phone, ssn, email)", "(id, name, email, card_number, phone, ssn)"]
AGGREGATES = [
    "count(*)",
    "max({x}::text)",
    "min({x}::text)",
    "count({x})",
    "string_agg({x}::text, ',')",
    "json_agg({x})",
]
WRAPPERS = [
    "plain", "derived", "cte", "union", "aggregate", "scalar", "whole_row", "values_join", "join_orders",
    "rename_first", "lateral_outer", "recursive", "dml_cte",
]  # fmt: skip


def wrap(shape: str, inner: str, width: int, agg: str) -> str:
    names = [f"x{i}" for i in range(width)]
    cols = ", ".join(names)
    if shape == "derived":
        return f"SELECT * FROM ({inner}) s({cols})"
    if shape == "cte":
        return f"WITH w({cols}) AS ({inner}) SELECT {', '.join(reversed(names))} FROM w"
    if shape == "union":
        return f"SELECT * FROM ({inner}) u1 UNION ALL SELECT * FROM ({inner}) u2"
    if shape == "aggregate":
        return f"SELECT {agg.format(x='s.x0')} FROM ({inner}) s({cols})"
    if shape == "scalar" and width == 1:
        return f"SELECT ({inner} LIMIT 1) AS one"
    if shape == "whole_row":
        return f"SELECT to_json(s) FROM ({inner}) s"
    if shape == "values_join":
        return f"SELECT s.*, v.k FROM ({inner}) s CROSS JOIN (VALUES (1)) v(k)"
    if shape == "join_orders":
        return f"SELECT s.*, o.status FROM ({inner}) s({cols}) JOIN orders o ON o.id > 10"
    if shape == "rename_first":
        return f"SELECT * FROM ({inner}) s(renamed)"
    if shape == "lateral_outer":
        return f"SELECT t.* FROM orders o0, LATERAL ({inner} LIMIT 1) t"
    if shape == "recursive":
        return (
            f"WITH RECURSIVE r({cols}, n) AS (SELECT *, 1 FROM ({inner}) s UNION ALL "
            f"SELECT {cols}, n + 1 FROM r WHERE n < 2) SELECT {cols} FROM r"
        )
    if shape == "dml_cte":
        return (
            "WITH upd AS (UPDATE orders SET status = status WHERE id = 10 RETURNING status) "
            f"SELECT s.*, upd.status FROM ({inner}) s, upd"
        )
    return inner


@st.composite
def composed(draw: st.DrawFn) -> str:
    items = draw(st.lists(st.sampled_from(ITEMS), min_size=1, max_size=4))
    source = draw(st.sampled_from(SOURCES))
    rename = draw(st.sampled_from(RENAMES)) if source == "customers" else ""
    if draw(st.booleans()):
        select = "SELECT " + ", ".join(i.format(c="c") for i in items) + f" FROM {source} AS c{rename}"
    else:  # the same items, correlated into a LATERAL subquery
        inner = "SELECT " + ", ".join(i.format(c="c0") for i in items)
        select = f"SELECT l.* FROM {source} AS c0{rename}, LATERAL ({inner}) l"
    if "customers_cte" in source:
        select = "WITH customers_cte AS (SELECT * FROM customers) " + select
    width = len(items)
    shapes = draw(st.lists(st.sampled_from(WRAPPERS), max_size=3))
    shapes = [sh for i, sh in enumerate(shapes) if sh != "dml_cte" or i == len(shapes) - 1]  # top level only
    for shape in shapes:
        select = wrap(shape, select, width, draw(st.sampled_from(AGGREGATES)))
        if shape in ("aggregate", "whole_row"):
            width = 1
        elif shape in ("values_join", "join_orders", "dml_cte"):
            width += 1
    return select


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sql=composed())
def test_random_compositions_cover_server_metadata_and_canaries(
    conn: psycopg.Connection[Any], catalog: Catalog, sql: str
) -> None:
    try:
        check_against_server(conn, catalog, sql)
    except psycopg.Error:
        assert result_lineage(sql, catalog) is not None  # the server refused it; lineage still answered


PIECES = [
    *(q for q, _, _ in CORPUS), *ITEMS, *SOURCES, "SELECT", "FROM", "WHERE", "(", ")", ",", "*", "c.*", "UNION",
    "WITH", "AS", "LATERAL", "JOIN", "USING (id)", "RETURNING", ";", "'", '"', "$$", "--", "/*", "ROW(", "::",
]  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.sampled_from(PIECES), min_size=1, max_size=8), cut=st.integers(0, 400))
def test_random_junk_never_raises(catalog: Catalog, parts: list[str], cut: int) -> None:
    sql = " ".join(p.format(c="c") if "{c}" in p else p for p in parts)
    for text in (sql, sql[:cut]):
        got = result_lineage(text, catalog, use_cache=False)
        assert isinstance(got, list)
        for column in got:
            assert isinstance(column, OutputColumn)
            assert column.sources is None or isinstance(column.sources, frozenset)
