"""The SQL bypass corpus: statements that must never run unreviewed through a readonly or guarded connection.

Shared data, not tests: tests/test_sql_bypass.py runs every entry through the classifier and the real
pipeline on PostgreSQL, tests/test_policy_check_cli.py through `bastion policy check`, and
tests/test_classifier_fuzz.py mutates them. Add an entry for every bypass found (or imagined) — the corpus only
ever grows.

Conventions:
- `{tmp}` in an entry is replaced by a directory the test creates (world-writable, so that the only thing
  standing between a COPY/lo_export and a file is the bastion); the test asserts nothing appears in it.
- Objects the statements name exist in the shop database (orders, customers, orders_id_seq), so a statement
  that got through would really do damage rather than fail on a missing name.
- `guarded="block"`: the design says the guarded preset blocks it outright (session control, dangerous,
  DCL, unknown). `guarded="held"`: needs_approval or block are both fine (writes, DDL).
- `read="ok"` / `read="error"`: a legitimate read that only looks like a trick (a `;` inside a comment or a
  string); both presets allow it and the server answers ok, or refuses it (a name that does not exist).
  `read="privileged"`: a plan-only EXPLAIN of a write; the server plans it for the guarded role, which holds
  the write privilege, and refuses the readonly role, which does not — either way nothing runs.
- `empty=True`: no statement at all (only comments, semicolons, whitespace): nothing may run.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    """One corpus input, with what the bastion must do with it."""

    id: str
    sql: str
    category: str
    guarded: str = "held"  # "block" | "held"
    read: str | None = None  # None | "ok" | "error" | "privileged"
    empty: bool = False

    def text(self, tmp: str = "/tmp/bastion-corpus") -> str:
        return self.sql.replace("{tmp}", tmp)


_ENTRIES: list[Entry] = []


def _add(category: str, guarded: str, *items: tuple[str, str]) -> None:
    for ident, sql in items:
        _ENTRIES.append(Entry(f"{category}:{ident}", sql, category, guarded=guarded))


def _reads(category: str, outcome: str, *items: tuple[str, str]) -> None:
    for ident, sql in items:
        _ENTRIES.append(Entry(f"{category}:{ident}", sql, category, read=outcome))


# ---------------------------------------------------------------- writable CTEs
_add(
    "writable-cte",
    "held",
    ("delete", "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d"),
    ("update", "WITH u AS (UPDATE orders SET total = 0 RETURNING id) SELECT count(*) FROM u"),
    ("insert", "WITH i AS (INSERT INTO orders (customer_id, total) VALUES (1, 1) RETURNING id) SELECT 1"),
    ("unreferenced", "WITH d AS (DELETE FROM orders) SELECT 1"),
    (
        "nested",
        "WITH a AS (WITH b AS (UPDATE orders SET total = 0 RETURNING id) SELECT * FROM b) SELECT * FROM a",
    ),
    ("in-from-subquery", "SELECT * FROM (WITH d AS (DELETE FROM orders RETURNING id) SELECT id FROM d) s"),
    ("in-scalar-subquery", "SELECT (WITH d AS (DELETE FROM orders RETURNING id) SELECT count(*) FROM d)"),
    ("in-where", "SELECT 1 WHERE EXISTS (WITH d AS (DELETE FROM orders RETURNING 1) SELECT * FROM d)"),
    (
        "merge",
        "WITH m AS (MERGE INTO orders o USING customers c ON o.customer_id = c.id "
        "WHEN MATCHED THEN DELETE) SELECT 1",
    ),
    ("recursive", "WITH RECURSIVE d AS (DELETE FROM orders RETURNING id) SELECT * FROM d"),
    ("explain-analyze", "EXPLAIN ANALYZE WITH d AS (DELETE FROM orders RETURNING id) SELECT * FROM d"),
    ("union", "SELECT 1 UNION ALL (WITH d AS (DELETE FROM orders RETURNING 1) SELECT * FROM d)"),
    (
        "lateral",
        "SELECT * FROM customers c, LATERAL (WITH d AS (DELETE FROM orders RETURNING 1) SELECT * FROM d) x",
    ),
    ("insert-select", "INSERT INTO orders (customer_id, total) SELECT id, 1 FROM customers"),
    ("with-then-delete", "WITH x AS (SELECT 1) DELETE FROM orders"),
    (
        "with-then-update",
        "WITH x AS (SELECT id FROM orders) UPDATE orders SET total = 0 WHERE id IN (SELECT id FROM x)",
    ),
    (
        "with-then-insert",
        "WITH x AS (SELECT 1 AS c) INSERT INTO orders (customer_id, total) SELECT c, 1 FROM x",
    ),
    ("cte-named-like-table", "WITH orders AS (SELECT 1 AS id) DELETE FROM public.orders"),
)

# ---------------------------------------------------------------- smuggling behind ;
_add(
    "smuggle",
    "block",
    ("commit-drop", "COMMIT; DROP TABLE orders"),
    ("rollback-delete", "ROLLBACK; DELETE FROM orders"),
    ("end-truncate", "END; TRUNCATE orders"),
    ("abort-delete", "ABORT; DELETE FROM orders"),
    ("begin-delete-commit", "BEGIN; DELETE FROM orders; COMMIT"),
    ("commit-set-rw", "COMMIT; SET default_transaction_read_only = off; DELETE FROM orders"),
)
_add(
    "smuggle",
    "held",
    ("select-drop", "SELECT 1; DROP TABLE orders"),
    ("select-delete-no-space", "SELECT 1;DELETE FROM orders"),
    ("read-then-write", "SELECT count(*) FROM orders; UPDATE orders SET total = 0"),
    ("many-reads-then-drop", "SELECT 1; " * 50 + "DROP TABLE orders"),
)

# ---------------------------------------------------------------- comments and quoting
_add(
    "comments",
    "held",
    ("nested-close", "SELECT 1 /* /* */ */; DROP TABLE orders"),
    ("line-comment-newline", "SELECT 1 --\n; DELETE FROM orders"),
    ("line-comment-cr", "SELECT 1 -- note\r; DELETE FROM orders"),
    ("leading-block", "/* harmless */ DELETE FROM orders"),
    ("leading-line", "-- harmless\nDELETE FROM orders"),
    ("inside", "DELETE /* ; */ FROM /* orders; SELECT 1 */ orders"),
    ("between-words", "DROP/**/TABLE/**/orders"),
    ("nested-deep", "SELECT 1 /* a /* b /* c */ b */ a */; DELETE FROM orders"),
    ("after-write", "DELETE FROM orders -- ; SELECT 1"),
    ("hint-style", "/*+ READ ONLY */ UPDATE orders SET total = 0"),
)
_add(
    "quoting",
    "held",
    ("quoted-table", 'DELETE FROM "orders"'),
    ("quoted-schema-table", 'DELETE FROM "public"."orders" WHERE "id" = 1'),
    ("quoted-semicolon-then-write", 'SELECT * FROM ";"; DELETE FROM orders'),
    ("standard-backslash", "SELECT 'a\\'; DROP TABLE orders; --'"),
    ("standard-double-backslash", "SELECT 'a\\\\'; DROP TABLE orders"),
    ("doubled-quote", "SELECT 'it''s'; DROP TABLE orders"),
    ("e-string-backslash", "SELECT E'\\\\'; DROP TABLE orders; --'"),
    ("e-string-lower", "SELECT e'\\''; DROP TABLE orders; --'"),
    ("e-string-octal", "SELECT E'\\073'; DELETE FROM orders"),
    ("dollar", "SELECT $$a$$; DROP TABLE orders"),
    ("dollar-tag", "SELECT $x$ $$ $x$; DELETE FROM orders"),
    ("dollar-in-identifier", "SELECT 1 AS a$b$; DROP TABLE orders; --$b$"),
    ("unicode-string", "SELECT U&'\\0041' ; DROP TABLE orders"),
    ("unicode-uescape", "SELECT U&'!0041' UESCAPE '!'; DELETE FROM orders"),
    ("unicode-uescape-semicolon", "SELECT U&'a' UESCAPE ';'; DROP TABLE orders"),
    ("bit-string", "SELECT B'01'; DROP TABLE orders"),
    ("hex-string", "SELECT X'1f'; DROP TABLE orders"),
    ("national", "SELECT N'x'; DROP TABLE orders"),
    ("keyword-identifier-write", 'UPDATE orders SET "status" = \'delete\' WHERE "id" = 1'),
)
_add(
    "quoting",
    "block",
    ("unicode-identifier-function", "SELECT U&\"pg_read_fil\\0065\"('/etc/hostname')"),
    ("unicode-identifier-uescape", "SELECT U&\"pg_read_fil!0065\" UESCAPE '!' ('/etc/hostname')"),
    ("unicode-identifier-table-function", "SELECT * FROM U&\"pg_ls_di\\0072\"('.')"),
    ("quoted-function", "SELECT \"pg_read_file\"('/etc/hostname')"),
    ("psql-backslash-semicolon", "SELECT 1 \\; DROP TABLE orders"),
    ("psql-variable", "SELECT :'x'; DROP TABLE orders"),
    ("unterminated-string", "SELECT 'unterminated ; DROP TABLE orders"),
    ("unterminated-comment", "SELECT 1 /* unterminated ; DROP TABLE orders"),
    ("unterminated-dollar", "SELECT $$unterminated ; DROP TABLE orders"),
    ("unterminated-identifier", 'SELECT "unterminated ; DROP TABLE orders'),
)
_reads(
    "quoting-read",
    "ok",
    ("comment-hides-write", "SELECT 1 -- ; DROP TABLE orders"),
    ("nested-comment-hides-write", "SELECT 1 /* nested /* comment */ ; DROP TABLE orders; */"),
    ("formfeed-does-not-end-comment", "SELECT 1 --\fx; DROP TABLE orders"),
    ("delete-identifier", 'SELECT "delete" FROM (SELECT 1 AS "delete") t'),
    ("keyword-aliases", 'SELECT 1 AS "select", 2 AS "delete", 3 AS "drop table orders" FROM orders'),
    ("dollar-hides-write", "SELECT $$; DROP TABLE orders; $$"),
    ("dollar-tag-hides-write", "SELECT $tag$ $$ ; DROP TABLE orders $tag$"),
    ("dollar-tag-case", "SELECT $a$ $A$; DROP TABLE orders; $a$"),
    ("e-string-hides-write", "SELECT E'\\'; DROP TABLE orders; --'"),
    ("unicode-string-read", "SELECT U&'d!0061ta' UESCAPE '!'"),
    ("quoted-semicolon-alias", 'SELECT 1 AS "x;y", $q$; DELETE FROM orders; $q$ AS z'),
    ("table-statement", "TABLE orders"),
)
_reads(
    "quoting-read",
    "error",
    ("semicolon-identifier", 'SELECT "a;b" FROM orders'),
    ("delete-table", 'SELECT * FROM "delete"'),
    ("statement-as-identifier", 'SELECT "DELETE FROM orders" FROM orders'),
)

# ---------------------------------------------------------------- DO blocks
_add(
    "do",
    "block",
    ("dollar", "DO $$ BEGIN DELETE FROM orders; END $$"),
    ("tagged", "DO $body$ BEGIN EXECUTE 'DROP TABLE orders'; END $body$"),
    ("language", "DO LANGUAGE plpgsql $x$ BEGIN PERFORM pg_sleep(0); END $x$"),
    ("language-after", "DO $$ BEGIN UPDATE orders SET total = 0; END $$ LANGUAGE plpgsql"),
    ("e-string", "DO E'BEGIN DELETE FROM orders; END'"),
    ("plain-string", "DO 'BEGIN TRUNCATE orders; END'"),
    ("lower", "do $$begin delete from orders; end$$"),
)

# ---------------------------------------------------------------- EXPLAIN ANALYZE runs its statement
_EXPLAIN_FORMS = {
    "analyze": "EXPLAIN ANALYZE",
    "analyse": "EXPLAIN ANALYSE",
    "paren": "EXPLAIN (ANALYZE)",
    "paren-true": "EXPLAIN (ANALYZE true)",
    "paren-on": "EXPLAIN (ANALYZE on)",
    "format-json-analyze-1": "EXPLAIN (FORMAT JSON, ANALYZE 1)",
    "lower-analyse-verbose": "explain (analyse, verbose)",
    "verbose-analyze": "EXPLAIN VERBOSE ANALYZE",
    "analyze-verbose": "EXPLAIN ANALYZE VERBOSE",
    "paren-yes": "EXPLAIN (ANALYZE yes)",
    "paren-quoted-true": "EXPLAIN (ANALYZE 'true')",
    "quoted-option": 'EXPLAIN ("analyze")',
    "repeated-last-true": "EXPLAIN (ANALYZE false, ANALYZE)",
    "repeated-last-false": "EXPLAIN (ANALYZE, ANALYZE false)",
    "comment-between": "EXPLAIN /* plan */ ANALYZE",
    "no-space": "explain(analyze)",
    "buffers": "EXPLAIN (ANALYZE, BUFFERS, TIMING off, COSTS false)",
}
for _form, _prefix in _EXPLAIN_FORMS.items():
    _add("explain-analyze", "held", (f"{_form}-delete", f"{_prefix} DELETE FROM orders"))
_add(
    "explain-analyze",
    "held",
    ("update", "EXPLAIN ANALYZE UPDATE orders SET total = 0"),
    ("insert", "EXPLAIN ANALYZE INSERT INTO orders (customer_id, total) VALUES (1, 1)"),
    ("ctas", "EXPLAIN ANALYZE CREATE TABLE stolen AS SELECT * FROM customers"),
    ("select-into", "EXPLAIN ANALYZE SELECT * INTO stolen FROM customers"),
    ("merge", "EXPLAIN ANALYZE MERGE INTO orders o USING customers c ON o.customer_id = c.id "
     "WHEN MATCHED THEN UPDATE SET total = 0"),
    ("for-update", "EXPLAIN ANALYZE SELECT * FROM orders FOR UPDATE"),
)  # fmt: skip
_add(
    "explain-analyze",
    "block",
    ("nextval", "EXPLAIN ANALYZE SELECT nextval('orders_id_seq')"),
    ("read-file", "EXPLAIN (ANALYZE) SELECT pg_read_file('/etc/hostname')"),
    ("execute", "EXPLAIN ANALYZE EXECUTE p"),
    ("unclosed-options", "EXPLAIN (ANALYZE DELETE FROM orders"),
)
_reads(
    "explain-read",
    "privileged",
    ("plain-delete", "EXPLAIN DELETE FROM orders"),
    ("analyze-false", "EXPLAIN (ANALYZE false) DELETE FROM orders"),
    ("analyze-off-json", "EXPLAIN (ANALYZE off, FORMAT JSON) UPDATE orders SET total = 0"),
)
_reads("explain-read", "ok", ("costs-off", "EXPLAIN (COSTS off) SELECT * FROM orders"))

# ---------------------------------------------------------------- prepared statements and cursors
_add(
    "prepare",
    "block",
    ("prepare-delete", "PREPARE p AS DELETE FROM orders"),
    ("prepare-select", "PREPARE q(int) AS SELECT * FROM orders WHERE id = $1"),
    ("execute", "EXECUTE p"),
    ("execute-args", "EXECUTE q(1)"),
    ("deallocate", "DEALLOCATE p"),
    ("deallocate-all", "DEALLOCATE ALL"),
    ("deallocate-prepare", "DEALLOCATE PREPARE ALL"),
    ("ctas-execute", "CREATE TABLE stolen AS EXECUTE q(1)"),
    ("declare", "DECLARE c CURSOR WITH HOLD FOR SELECT * FROM customers"),
    ("fetch", "FETCH ALL FROM c"),
    ("move", "MOVE FORWARD 1 IN c"),
    ("close", "CLOSE ALL"),
)

# ---------------------------------------------------------------- session and transaction control
_add(
    "session",
    "block",
    ("set-read-write", "SET default_transaction_read_only = off"),
    ("set-to", "SET default_transaction_read_only TO false"),
    ("set-local", "SET LOCAL default_transaction_read_only = off"),
    ("set-session", "SET SESSION default_transaction_read_only TO off"),
    ("set-quoted", 'SET "default_transaction_read_only" = off'),
    ("set-transaction-read-only-var", "SET transaction_read_only = off"),
    ("set-role", "SET ROLE postgres"),
    ("set-local-role", "SET LOCAL ROLE postgres"),
    ("set-session-role", "SET SESSION ROLE postgres"),
    ("set-role-none", "SET ROLE NONE"),
    ("set-session-authorization", "SET SESSION AUTHORIZATION postgres"),
    ("set-session-authorization-default", "SET SESSION AUTHORIZATION DEFAULT"),
    ("set-search-path", "SET search_path = evil, public"),
    ("set-search-path-default", "SET search_path TO DEFAULT"),
    ("set-statement-timeout", "SET statement_timeout = 0"),
    ("set-time-zone", "SET TIME ZONE 'UTC'"),
    ("set-comment", "SET/**/ROLE postgres"),
    ("set-lower", "set role postgres"),
    ("reset-all", "RESET ALL"),
    ("reset-read-only", "RESET default_transaction_read_only"),
    ("reset-role", "RESET ROLE"),
    ("reset-session-authorization", "RESET SESSION AUTHORIZATION"),
    ("set-config", "SELECT set_config('default_transaction_read_only', 'off', false)"),
    ("set-config-catalog", "SELECT pg_catalog.set_config('search_path', 'evil', false)"),
    ("set-config-from", "SELECT * FROM set_config('statement_timeout', '0', false)"),
    ("set-config-public", "SELECT public.set_config('statement_timeout', '0', false)"),
    ("set-config-db-qualified", "SELECT shop.pg_catalog.set_config('search_path', 'evil', false)"),
    ("set-config-nested", "SELECT 1 WHERE (SELECT set_config('search_path', 'evil', true)) IS NOT NULL"),
    ("begin", "BEGIN"),
    ("begin-read-write", "BEGIN READ WRITE"),
    ("begin-transaction-read-write", "BEGIN TRANSACTION READ WRITE"),
    ("begin-isolation-read-write", "BEGIN ISOLATION LEVEL SERIALIZABLE, READ WRITE"),
    ("start-transaction-read-write", "START TRANSACTION READ WRITE"),
    ("start-transaction", "START TRANSACTION"),
    ("set-transaction-read-write", "SET TRANSACTION READ WRITE"),
    ("set-session-characteristics", "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE"),
    ("commit", "COMMIT"),
    ("commit-and-chain", "COMMIT AND CHAIN"),
    ("rollback", "ROLLBACK"),
    ("end", "END"),
    ("abort", "ABORT"),
    ("savepoint", "SAVEPOINT s"),
    ("release", "RELEASE SAVEPOINT s"),
    ("rollback-to", "ROLLBACK TO SAVEPOINT s"),
    ("prepare-transaction", "PREPARE TRANSACTION 'x'"),
    ("commit-prepared", "COMMIT PREPARED 'x'"),
    ("rollback-prepared", "ROLLBACK PREPARED 'x'"),
    ("discard-all", "DISCARD ALL"),
    ("discard-plans", "DISCARD PLANS"),
    ("listen", "LISTEN ch"),
    ("unlisten", "UNLISTEN *"),
    ("notify", "NOTIFY ch, 'x'"),
    ("pg-notify", "SELECT pg_notify('ch', 'x')"),
    ("load", "LOAD 'plpgsql'"),
)

# ---------------------------------------------------------------- COPY
_add(
    "copy",
    "block",
    ("to-program", "COPY orders TO PROGRAM 'touch {tmp}/program-ran'"),
    ("from-program", "COPY orders FROM PROGRAM 'touch {tmp}/program-ran'"),
    ("lower-to-program", "copy orders to program 'id > {tmp}/id.txt'"),
    ("query-to-program", "COPY (SELECT * FROM customers) TO PROGRAM 'cat > {tmp}/c.txt'"),
    ("to-file", "COPY orders TO '{tmp}/orders.csv'"),
    ("to-file-csv", "COPY orders TO '{tmp}/orders2.csv' WITH (FORMAT csv, HEADER)"),
    ("query-to-file", "COPY (SELECT * FROM customers) TO '{tmp}/customers.csv'"),
    ("binary-old-syntax", "COPY BINARY orders TO '{tmp}/orders.bin'"),
    ("old-csv-syntax", "COPY orders TO '{tmp}/orders3.csv' CSV"),
    ("from-file", "COPY orders FROM '{tmp}/in.csv'"),
    ("from-etc", "COPY orders (status) FROM '/etc/hostname'"),
    ("to-stdout", "COPY customers TO STDOUT"),
    ("query-to-stdout", "COPY (SELECT * FROM customers) TO STDOUT"),
    ("csv-to-stdout", "COPY orders TO STDOUT WITH (FORMAT csv)"),
    ("delete-returning-to-stdout", "COPY (DELETE FROM orders RETURNING *) TO STDOUT"),
    ("psql-copy", "\\copy orders to '{tmp}/psql.csv'"),
)
_add("copy", "held", ("from-stdin", "COPY orders FROM STDIN"))

# ---------------------------------------------------------------- functions that run SQL from strings
_add(
    "sql-from-string",
    "block",
    ("query-to-xml-delete", "SELECT query_to_xml('DELETE FROM orders RETURNING *', true, false, '')"),
    ("query-to-xml-read", "SELECT query_to_xml('SELECT ssn FROM customers', true, false, '')"),
    ("query-to-xml-schema", "SELECT query_to_xml_and_xmlschema('SELECT 1', true, false, '')"),
    ("table-to-xml", "SELECT table_to_xml('customers', true, false, '')"),
    ("schema-to-xml", "SELECT schema_to_xml('public', true, false, '')"),
    ("database-to-xml", "SELECT database_to_xml(true, false, '')"),
    ("cursor-to-xml", "SELECT cursor_to_xml('c', 1, true, false, '')"),
    ("ts-stat", "SELECT * FROM ts_stat('SELECT to_tsvector(ssn) FROM customers')"),
    ("ts-rewrite", "SELECT ts_rewrite('a'::tsquery, 'SELECT ''a''::tsquery, ''b''::tsquery')"),
    ("dblink-exec", "SELECT dblink_exec('dbname=postgres', 'DROP TABLE orders')"),
    ("dblink", "SELECT * FROM dblink('dbname=postgres', 'SELECT 1') AS t(x int)"),
    ("dblink-public", "SELECT public.dblink_exec('dbname=postgres', 'DROP TABLE orders')"),
    ("dblink-connect", "SELECT dblink_connect('c', 'dbname=postgres')"),
    ("xpath-wrap", "SELECT xpath('//x', query_to_xml('DELETE FROM orders RETURNING 1', true, false, ''))"),
    ("field-of-call", "SELECT (query_to_xml('DELETE FROM orders RETURNING 1', true, false, '')) IS NULL"),
)

# ---------------------------------------------------------------- server files, large objects, other sessions
_add(
    "server-files",
    "block",
    ("read-file", "SELECT pg_read_file('/etc/hostname')"),
    ("read-file-catalog", "SELECT pg_catalog.pg_read_file('/etc/hostname')"),
    ("read-file-upper", "SELECT PG_READ_FILE('/etc/hostname')"),
    ("read-file-db-qualified", "SELECT shop.pg_catalog.pg_read_file('/etc/hostname')"),
    ("read-file-attribute", "SELECT ('/etc/hostname'::text).pg_read_file"),
    ("read-file-attribute-column", "SELECT (t.p).pg_read_file FROM (SELECT '/etc/hostname'::text AS p) t"),
    ("read-binary-file", "SELECT pg_read_binary_file('/etc/hostname')"),
    ("ls-dir", "SELECT * FROM pg_ls_dir('.')"),
    ("ls-dir-rows-from", "SELECT * FROM ROWS FROM (pg_ls_dir('.'))"),
    ("stat-file", "SELECT (pg_stat_file('/etc/hostname')).size"),
    ("ls-logdir", "SELECT * FROM pg_ls_logdir()"),
    ("ls-waldir", "SELECT * FROM pg_ls_waldir()"),
    ("lo-import", "SELECT lo_import('/etc/hostname')"),
    ("lo-export", "SELECT lo_export(lo_from_bytea(0, 'x'), '{tmp}/lo.bin')"),
    ("lo-from-bytea", "SELECT lo_from_bytea(0, 'x')"),
    ("lo-create", "SELECT lo_create(0)"),
    ("lo-put", "SELECT lo_put(1, 0, 'x')"),
    ("lo-unlink", "SELECT lo_unlink(1)"),
    ("lo-in-from", "SELECT * FROM lo_import('/etc/hostname') AS t"),
    ("terminate", "SELECT pg_terminate_backend(pg_backend_pid())"),
    ("terminate-all", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"),
    ("cancel", "SELECT pg_cancel_backend(pg_backend_pid())"),
    ("reload-conf", "SELECT pg_reload_conf()"),
    ("rotate-logfile", "SELECT pg_rotate_logfile()"),
    ("stat-reset", "SELECT pg_stat_reset()"),
)

# ---------------------------------------------------------------- side effects on shared state
_add(
    "side-effects",
    "block",
    ("nextval", "SELECT nextval('orders_id_seq')"),
    ("nextval-regclass", "SELECT nextval('orders_id_seq'::regclass)"),
    ("nextval-public", "SELECT public.nextval('orders_id_seq')"),
    ("nextval-attribute", "SELECT ('orders_id_seq'::regclass).nextval"),
    ("nextval-in-where", "SELECT * FROM orders WHERE id < nextval('orders_id_seq')"),
    ("nextval-order-by", "SELECT * FROM orders ORDER BY nextval('orders_id_seq')"),
    ("nextval-lateral", "SELECT * FROM orders, LATERAL (SELECT nextval('orders_id_seq')) n"),
    ("setval", "SELECT setval('orders_id_seq', 1000)"),
    ("next-value-for", "SELECT NEXT VALUE FOR orders_id_seq"),
    ("advisory-lock", "SELECT pg_advisory_lock(1)"),
    ("advisory-lock-shared", "SELECT pg_advisory_lock_shared(1)"),
    ("try-advisory-lock", "SELECT pg_try_advisory_lock(1)"),
    ("advisory-xact-lock", "SELECT pg_advisory_xact_lock(1)"),
    ("advisory-unlock-all", "SELECT pg_advisory_unlock_all()"),
    ("advisory-lock-attribute", "SELECT (1::bigint).pg_advisory_lock"),
    ("txid-current", "SELECT txid_current()"),
    ("txid-current-from", "SELECT * FROM txid_current()"),
    ("pg-current-xact-id", "SELECT pg_current_xact_id()"),
    ("setseed", "SELECT setseed(0.5)"),
    ("setseed-catalog", "SELECT pg_catalog.setseed(0.5)"),
)

# ---------------------------------------------------------------- user functions named after built-ins
# The `app` schema defines generate_series, unnest and an operator + whose functions write (see
# tests/test_sql_bypass.py): a schema qualifier other than pg_catalog names a user function, never the built-in.
_add(
    "user-functions",
    "held",
    ("from-generate-series", "SELECT * FROM app.generate_series(1, 2)"),
    ("from-generate-series-alias", "SELECT g FROM app.generate_series(1, 2) AS g"),
    ("from-db-qualified", "SELECT * FROM shop.app.generate_series(1, 2)"),
    ("from-quoted-schema", 'SELECT * FROM "app".generate_series(1, 2)'),
    ("rows-from", "SELECT * FROM ROWS FROM (app.generate_series(1, 2))"),
    ("rows-from-second", "SELECT * FROM ROWS FROM (generate_series(1, 2), app.unnest(ARRAY[1]))"),
    ("lateral", "SELECT * FROM orders o, LATERAL app.generate_series(1, o.id) g"),
    ("from-unnest", "SELECT * FROM app.unnest(ARRAY[1])"),
    ("operator", "SELECT 1 OPERATOR(app.+) 2"),
    ("operator-in-where", "SELECT id FROM orders WHERE id OPERATOR(app.+) 1 > 0"),
)
_add(
    "locks",
    "held",
    ("lock-table", "LOCK TABLE orders"),
    ("lock-mode", "LOCK orders IN ACCESS EXCLUSIVE MODE"),
    ("lock-nowait", "LOCK TABLE ONLY orders, customers IN SHARE MODE NOWAIT"),
    ("for-update", "SELECT * FROM orders FOR UPDATE"),
    ("for-share", "SELECT * FROM orders FOR SHARE"),
    ("for-no-key-update", "SELECT * FROM orders FOR NO KEY UPDATE"),
    ("for-key-share", "SELECT * FROM orders FOR KEY SHARE"),
    ("for-update-of", "SELECT * FROM orders o JOIN customers c ON c.id = o.customer_id FOR UPDATE OF o"),
    ("for-update-skip-locked", "SELECT * FROM orders FOR UPDATE SKIP LOCKED"),
    ("for-update-nowait", "SELECT * FROM orders FOR UPDATE NOWAIT"),
    ("for-update-subquery", "SELECT * FROM (SELECT * FROM orders FOR UPDATE) s"),
    ("for-update-cte", "WITH l AS (SELECT * FROM orders FOR UPDATE) SELECT * FROM l"),
    ("for-update-lower", "select * from orders for update"),
)

# ---------------------------------------------------------------- code, extensions, server configuration
_add(
    "code",
    "held",
    ("create-function", "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ DELETE FROM orders RETURNING 1 $$"),
    ("replace-builtin-name", "CREATE OR REPLACE FUNCTION lower(text) RETURNS text LANGUAGE sql AS 'SELECT $1'"),
    ("create-procedure", "CREATE PROCEDURE p() LANGUAGE sql AS $$ DELETE FROM orders $$"),
    ("security-definer", "CREATE FUNCTION g() RETURNS int SECURITY DEFINER LANGUAGE sql AS 'SELECT 1'"),
    ("alter-function", "ALTER FUNCTION bump(orders) SECURITY DEFINER"),
    ("drop-function", "DROP FUNCTION bump(orders)"),
    ("create-trigger", "CREATE TRIGGER t BEFORE DELETE ON orders FOR EACH ROW EXECUTE FUNCTION f()"),
    ("create-rule", "CREATE RULE r AS ON INSERT TO orders DO INSTEAD NOTHING"),
    ("create-operator", "CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = int4eq)"),
    ("create-cast", "CREATE CAST (text AS int) WITH INOUT"),
    ("create-type", "CREATE TYPE mood AS ENUM ('ok')"),
    ("create-domain", "CREATE DOMAIN d AS int CHECK (VALUE > 0)"),
    ("create-aggregate", "CREATE AGGREGATE a(int) (SFUNC = int4pl, STYPE = int)"),
)  # fmt: skip
_add(
    "code",
    "block",
    ("call", "CALL p()"),
    ("call-qualified", "CALL public.p()"),
    ("create-extension", "CREATE EXTENSION adminpack"),
    ("create-extension-if", "CREATE EXTENSION IF NOT EXISTS dblink SCHEMA public"),
    ("drop-extension", "DROP EXTENSION dblink"),
    ("alter-extension", "ALTER EXTENSION dblink UPDATE"),
    ("create-language", "CREATE LANGUAGE plperlu"),
    ("create-event-trigger", "CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION f()"),
    ("alter-system", "ALTER SYSTEM SET log_statement = 'none'"),
    ("alter-system-reset", "ALTER SYSTEM RESET ALL"),
    ("create-server", "CREATE SERVER s FOREIGN DATA WRAPPER dblink_fdw OPTIONS (dbname 'postgres')"),
    ("import-foreign-schema", "IMPORT FOREIGN SCHEMA public FROM SERVER s INTO public"),
    ("create-publication", "CREATE PUBLICATION pub FOR ALL TABLES"),
    ("create-subscription", "CREATE SUBSCRIPTION sub CONNECTION 'dbname=x' PUBLICATION pub"),
    ("checkpoint", "CHECKPOINT"),
)

# ---------------------------------------------------------------- roles and privileges
_add(
    "dcl",
    "block",
    ("create-role", "CREATE ROLE bastion_corpus_evil SUPERUSER LOGIN"),
    ("create-user", "CREATE USER bastion_corpus_evil"),
    ("create-group", "CREATE GROUP bastion_corpus_evil"),
    ("alter-role-setting", "ALTER ROLE CURRENT_USER SET default_transaction_read_only = off"),
    ("alter-role-superuser", "ALTER ROLE CURRENT_USER SUPERUSER"),
    ("alter-user-password", "ALTER USER postgres WITH PASSWORD 'x'"),
    ("alter-database-setting", "ALTER DATABASE postgres SET default_transaction_read_only = off"),
    ("drop-role", "DROP ROLE postgres"),
    ("grant-table", "GRANT ALL ON customers TO PUBLIC"),
    ("grant-role", "GRANT postgres TO CURRENT_USER"),
    ("grant-pg-read-server-files", "GRANT pg_read_server_files TO CURRENT_USER"),
    ("revoke", "REVOKE SELECT ON orders FROM PUBLIC"),
    ("default-privileges", "ALTER DEFAULT PRIVILEGES GRANT ALL ON TABLES TO PUBLIC"),
    ("reassign-owned", "REASSIGN OWNED BY CURRENT_USER TO postgres"),
    ("create-policy", "CREATE POLICY p ON customers USING (true)"),
    ("disable-rls", "ALTER TABLE customers DISABLE ROW LEVEL SECURITY"),
    ("security-label", "SECURITY LABEL ON TABLE orders IS 'x'"),
)
_add(
    "database",
    "block",
    ("drop-database", "DROP DATABASE postgres"),
    ("drop-database-if", "DROP DATABASE IF EXISTS postgres WITH (FORCE)"),
    ("create-database", "CREATE DATABASE bastion_corpus_evil"),
    ("alter-database-rename", "ALTER DATABASE postgres RENAME TO x"),
)

# ---------------------------------------------------------------- DDL and maintenance
_add(
    "ddl",
    "held",
    ("drop-table", "DROP TABLE orders"),
    ("drop-table-cascade", "DROP TABLE IF EXISTS orders, customers CASCADE"),
    ("drop-schema", "DROP SCHEMA public CASCADE"),
    ("drop-owned", "DROP OWNED BY CURRENT_USER"),
    ("alter-table", "ALTER TABLE orders ADD COLUMN x int"),
    ("alter-table-owner", "ALTER TABLE orders OWNER TO CURRENT_USER"),
    ("alter-sequence", "ALTER SEQUENCE orders_id_seq RESTART 1"),
    ("create-index", "CREATE INDEX ON orders (total)"),
    ("create-index-concurrently", "CREATE INDEX CONCURRENTLY i ON orders (status)"),
    ("create-view", "CREATE VIEW v AS SELECT * FROM customers"),
    ("create-temp-view", "CREATE TEMP VIEW v AS SELECT 1"),
    ("create-schema", "CREATE SCHEMA evil"),
    ("create-sequence", "CREATE SEQUENCE s"),
    ("create-table", "CREATE TABLE t (x int)"),
    ("create-temp-table", "CREATE TEMP TABLE t (x int)"),
    ("comment-on", "COMMENT ON TABLE orders IS 'x'"),
    ("vacuum", "VACUUM"),
    ("vacuum-full", "VACUUM FULL orders"),
    ("vacuum-analyze", "VACUUM (ANALYZE, VERBOSE) orders"),
    ("analyze", "ANALYZE orders"),
    ("analyse", "ANALYSE"),
    ("cluster", "CLUSTER orders"),
    ("reindex", "REINDEX TABLE orders"),
    ("refresh", "REFRESH MATERIALIZED VIEW mv"),
)

# ---------------------------------------------------------------- writes
_add(
    "writes",
    "held",
    ("select-into", "SELECT * INTO stolen FROM customers"),
    ("select-into-temp", "SELECT * INTO TEMP stolen FROM customers"),
    ("select-into-unlogged", "SELECT id INTO UNLOGGED TABLE stolen FROM orders"),
    ("select-into-cte", "WITH t AS (SELECT 1 AS x) SELECT * INTO stolen FROM t"),
    ("ctas", "CREATE TABLE stolen AS SELECT * FROM customers"),
    ("ctas-temp", "CREATE TEMP TABLE stolen AS SELECT * FROM customers"),
    ("ctas-table", "CREATE TABLE stolen AS TABLE customers"),
    ("ctas-values", "CREATE UNLOGGED TABLE stolen AS VALUES (1)"),
    ("matview", "CREATE MATERIALIZED VIEW mv AS SELECT * FROM customers"),
    ("merge", "MERGE INTO orders o USING customers c ON o.customer_id = c.id WHEN MATCHED THEN DELETE"),
    (
        "merge-insert",
        "MERGE INTO orders o USING (SELECT 1 AS id) s ON o.id = s.id "
        "WHEN NOT MATCHED THEN INSERT (customer_id, total) VALUES (1, 1)",
    ),
    ("insert", "INSERT INTO orders (customer_id, total) VALUES (1, 1)"),
    ("insert-default", "INSERT INTO orders DEFAULT VALUES"),
    ("on-conflict-nothing", "INSERT INTO orders (customer_id, total) VALUES (1, 1) ON CONFLICT DO NOTHING"),
    (
        "on-conflict-update",
        "INSERT INTO orders (id, customer_id, total) VALUES (1, 1, 1) ON CONFLICT (id) DO UPDATE SET total = 0",
    ),
    ("insert-returning", "INSERT INTO orders (customer_id, total) VALUES (1, 1) RETURNING *"),
    ("update", "UPDATE orders SET total = 0 WHERE true"),
    ("update-from", "UPDATE orders o SET total = 0 FROM customers c WHERE c.id = o.customer_id"),
    ("update-only", "UPDATE ONLY orders SET status = 'x'"),
    ("delete", "DELETE FROM orders"),
    ("delete-using", "DELETE FROM orders o USING customers c WHERE c.id = o.customer_id"),
    ("delete-returning", "DELETE FROM orders RETURNING *"),
    ("delete-only-alias", "DELETE FROM ONLY orders AS x WHERE x.id > 0"),
    ("truncate", "TRUNCATE orders"),
    ("truncate-table-cascade", "TRUNCATE TABLE orders, customers CASCADE"),
    ("truncate-only-restart", "TRUNCATE ONLY orders RESTART IDENTITY"),
)

# ---------------------------------------------------------------- case and whitespace
_add(
    "case-whitespace",
    "held",
    ("mixed-case", "DeLeTe FrOm OrDeRs"),
    ("lower", "delete from orders"),
    ("tabs", "DELETE\tFROM\torders"),
    ("newlines", "DELETE\nFROM\norders"),
    ("cr", "DELETE\rFROM\rorders"),
    ("formfeed", "DELETE\fFROM\forders"),
    ("vertical-tab", "DELETE\vFROM\vorders"),
    ("nbsp", "DELETE\u00a0FROM orders"),
    ("em-space", "DELETE\u2003FROM orders"),
    ("ideographic-space", "DELETE\u3000FROM orders"),
    ("line-separator", "DELETE\u2028FROM orders"),
    ("leading-whitespace", " \t\n DELETE FROM orders \n\t "),
    ("fullwidth-semicolon", "SELECT 1\uff1b DROP TABLE orders"),
    ("nbsp-after-semicolon", "SELECT 1;\u00a0DROP TABLE orders"),
)
_add(
    "case-whitespace",
    "block",
    ("zero-width-space", "DELETE\u200bFROM orders"),
    ("bom", "\ufeffDELETE FROM orders"),
    ("nbsp-function", "SELECT\u00a0pg_read_file('/etc/hostname')"),
    ("mixed-case-copy", "CoPy orders To PrOgRaM 'touch {tmp}/case-ran'"),
    ("mixed-case-set", "sEt RoLe postgres"),
    ("mixed-case-begin", "Begin Read Write"),
)

# ---------------------------------------------------------------- size and depth
_add(
    "size",
    "held",
    ("long-whitespace", "SELECT 1" + " " * 100_000 + "; DROP TABLE orders"),
    ("long-comment", "/*" + "x" * 100_000 + "*/ DROP TABLE orders"),  # one argv word: < 128 KiB
    ("many-nested-comments", "SELECT 1 " + "/*" * 500 + "*/" * 500 + "; DROP TABLE orders"),
    (
        "deep-subqueries-cte",
        "SELECT * FROM " + "(" * 300 + "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d" + ") s" * 300,
    ),
    ("long-write", "UPDATE orders SET total = 0 WHERE id IN (" + ", ".join(str(i) for i in range(20_000)) + ")"),
)  # fmt: skip
_add(
    "size",
    "block",
    ("deep-parens", "SELECT " + "(" * 3000 + "nextval('orders_id_seq')" + ")" * 3000),
    ("deep-arrays", "SELECT " + "ARRAY[" * 40 + "nextval('orders_id_seq')" + "]" * 40),
    ("deep-functions", "SELECT " + "lower(" * 2000 + "pg_read_file('/etc/hostname')" + ")" * 2000),
    ("deep-case", "SELECT " + "CASE WHEN true THEN " * 500 + "nextval('orders_id_seq')" + " END" * 500),
)
_reads(
    "size-read",
    "ok",
    ("long-in-list", "SELECT count(*) FROM orders WHERE id IN (" + ", ".join(str(i) for i in range(20_000)) + ")"),
    ("long-string", "SELECT length('" + "x" * 100_000 + "')"),
    ("moderate-arrays", "SELECT ARRAY[ARRAY[1, 2], ARRAY[3, 4]]"),
)  # fmt: skip

# ---------------------------------------------------------------- built-ins under their pg_catalog name
_reads(
    "builtin-read",
    "ok",
    ("pg-catalog-lower", "SELECT pg_catalog.lower('A'), pg_catalog.upper(status) FROM orders"),
    ("xpath", "SELECT xpath('/a/text()', '<a>x</a>'::xml)"),
)

# ---------------------------------------------------------------- nothing to run
for _ident, _sql in {
    "empty": "",
    "semicolon": ";",
    "semicolons": ";;;",
    "line-comment": "-- only a comment",
    "block-comment": "/* only a comment */",
    "whitespace": "   \n\t ",
    "comments-and-semicolons": "/* a */ ; -- b\n ;",
}.items():
    _ENTRIES.append(Entry(f"empty:{_ident}", _sql, "empty", guarded="block", empty=True))


CORPUS: tuple[Entry, ...] = tuple(_ENTRIES)
BYPASSES: tuple[Entry, ...] = tuple(e for e in CORPUS if e.read is None and not e.empty)
READS: tuple[Entry, ...] = tuple(e for e in CORPUS if e.read is not None)
EMPTY: tuple[Entry, ...] = tuple(e for e in CORPUS if e.empty)

# Role and database names the corpus tries to create: they must not exist afterwards.
CREATED_NAMES = ("bastion_corpus_evil",)

assert len({e.id for e in CORPUS}) == len(CORPUS), "corpus ids must be unique"
