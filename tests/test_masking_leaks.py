"""The masking-leak corpus: queries on pg-readonly that try to get a planted sensitive value out in any form.

For each query everything the user could see — column names, every row (the first batch and every `more()`
until the end, fetched one row at a time so the streaming path is exercised), the error text — and every
audit event the query wrote are searched for every planted value (customers.email, ssn, phone, card_number,
and the backup email inside the non-sensitive `notes` JSON) as is, upper and lower case, reversed, base64
(standard and urlsafe, with and without padding), hex (lower and upper, of the text and of its digits as a
number), md5/sha256 hex (a plain hash of an SSN is brute-forced in seconds), and digits only. Encoded runs in
the output (base64, hex) are also decoded and searched, so a value embedded in a longer encoded string is
found too. Columns the query must mask are checked to be reported in `masking`, with reasons.

Views, a materialized view and SQL functions are created by the admin, as a DBA would.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bastion.session import Session
from bastion.sql_pipeline import SqlPipeline, StatementResult
from tests.shopdb import PLANTED, Shop, create_shop, open_session, shop_config

ADMIN_SETUP = """
CREATE VIEW v_alias AS SELECT id, name, ssn AS tax_id FROM customers;
CREATE VIEW v_view_of_view AS SELECT id, tax_id AS t FROM v_alias;
CREATE VIEW v_join AS SELECT c.name, c.email AS contact, o.total, o.status
    FROM customers c JOIN orders o ON o.customer_id = c.id;
CREATE VIEW v_expr AS SELECT id, upper(email) AS shout, name || ' ' || phone AS label FROM customers;
CREATE VIEW v_whole_row AS SELECT c.id, row_to_json(c) AS doc FROM customers c;
CREATE MATERIALIZED VIEW mv_customers AS SELECT id, name, ssn, card_number AS pan FROM customers;
CREATE FUNCTION ssn_of(c customers) RETURNS text LANGUAGE sql STABLE AS 'SELECT c.ssn';
CREATE FUNCTION ssn_by_id(i bigint) RETURNS text LANGUAGE sql STABLE
    AS 'SELECT ssn FROM customers WHERE id = i';
CREATE VIEW v_func AS SELECT id, ssn_by_id(id) AS s FROM customers;
CREATE VIEW v_card_piece AS SELECT id, substr(card_number, 1, 12) AS card_number FROM customers;
"""


@dataclass(frozen=True)
class Leak:
    """One query; `masked`: result columns that must be reported masked; `status`: what the pipeline must
    answer ("ok", "error", "blocked", or "ok|blocked" for a user function the policy may refuse)."""

    id: str
    sql: str
    masked: tuple[str, ...] = ()
    status: str = "ok"
    live: bool = True  # run directly (no bastion), the query does show a planted value
    full: bool = False  # masked in full, and no 4-digit piece of a planted card or phone shows


def _ok(ident: str, query: str, *masked: str) -> Leak:
    return Leak(ident, query, masked)


def _partial(ident: str, query: str, *masked: str, live: bool = False) -> Leak:
    """A piece or a letter-for-letter transform of a value: no full form to find even when it leaks, so
    the masked columns must be masked in full (a "last 4" of a piece is some other 4) and no 4-digit
    piece of a planted card or phone number may show."""
    return Leak(ident, query, masked, live=live, full=True)


def _error(ident: str, query: str) -> Leak:
    return Leak(ident, query, (), "error")


LEAKS: list[Leak] = [
    # aliases
    _ok("alias", "SELECT ssn AS x FROM customers", "x"),
    _ok("alias-swap", 'SELECT email AS "Name", name AS email FROM customers', "Name"),
    _ok("alias-as-id", "SELECT c.ssn AS id FROM customers c", "id"),
    _ok("alias-quoted", 'SELECT card_number AS "total" FROM customers', "total"),
    # expressions and functions of sensitive columns
    _ok("concat-op", "SELECT name || ssn AS a FROM customers", "a"),
    _ok("concat-empty", "SELECT ssn || '' AS a FROM customers", "a"),
    _ok("concat-fn", "SELECT concat(name, ' ', email) AS a FROM customers", "a"),
    _ok("concat-ws", "SELECT concat_ws('|', ssn, phone) AS a FROM customers", "a"),
    _ok("format", "SELECT format('%s/%s', name, card_number) AS a FROM customers", "a"),
    _ok("lower", "SELECT lower(email) AS a FROM customers", "a"),
    _ok("upper", "SELECT upper(email) AS a FROM customers", "a"),
    _ok("initcap", "SELECT initcap(email) AS a FROM customers", "a"),
    _ok("reverse", "SELECT reverse(ssn) AS a FROM customers", "a"),
    _partial("substr", "SELECT substr(ssn, 1, 3) AS a, substr(ssn, 4) AS b FROM customers", "a", "b"),
    _partial("substring-from", "SELECT substring(card_number from 1 for 8) AS a FROM customers", "a"),
    _ok("left-right", "SELECT left(card_number, 8) || right(card_number, 8) AS a FROM customers", "a"),
    _partial("split-part", "SELECT split_part(email, '@', 1) AS a FROM customers", "a"),
    # pieces of partial-masked columns: "last 4" of a piece is another 4 digits (four queries rebuild a card)
    _partial("substr-card-first-12", "SELECT substr(card_number, 1, 12) AS a FROM customers", "a"),
    _partial("substr-card-middle", "SELECT substr(card_number, 5, 8) AS a FROM customers", "a"),
    _partial("lpad-card-first-4", "SELECT lpad(substr(card_number, 1, 4), 12, 'x') AS a FROM customers", "a"),
    _partial("reverse-card", "SELECT reverse(card_number) AS a FROM customers", "a", live=True),
    _partial("left-card-no-alias", "SELECT left(card_number, 12) FROM customers", "left"),
    _partial("cast-card-varchar", "SELECT card_number::varchar(12) AS a FROM customers", "a"),
    _partial("substr-card-subquery", "SELECT x FROM (SELECT substr(card_number, 1, 12) AS x FROM customers) s", "x"),
    _partial("substr-card-cte", "WITH t AS (SELECT substr(card_number, 1, 8) AS card_number FROM customers) "
             "SELECT card_number FROM t", "card_number"),
    _partial("substr-phone", "SELECT substr(phone, 1, 10) AS a FROM customers", "a"),
    _partial("reverse-phone", "SELECT reverse(phone) AS a FROM customers", "a", live=True),
    _partial("lpad-phone-first", "SELECT lpad(left(phone, 6), 12, '*') AS a FROM customers", "a"),
    _partial("view-card-piece", "SELECT card_number FROM v_card_piece", "card_number"),
    _partial("lower-email-pseudonym", "SELECT lower(email) AS email FROM customers", "email", live=True),
    _ok("replace", "SELECT replace(ssn, '-', '') AS a FROM customers", "a"),
    _ok("regexp-replace", "SELECT regexp_replace(phone, '\\D', '', 'g') AS a FROM customers", "a"),
    _partial("translate", "SELECT translate(ssn, '-1357', '+abcd') AS a FROM customers", "a"),
    _ok("lpad", "SELECT lpad(ssn, 20, '*') AS a FROM customers", "a"),
    _partial("overlay", "SELECT overlay(ssn placing 'X' from 1 for 1) AS a FROM customers", "a"),
    _ok("md5", "SELECT md5(ssn) AS a FROM customers", "a"),
    _ok("sha256", "SELECT sha256(convert_to(ssn, 'UTF8')) AS a FROM customers", "a"),
    _ok("base64", "SELECT encode(convert_to(email, 'UTF8'), 'base64') AS a FROM customers", "a"),
    _ok("hex", "SELECT encode(convert_to(ssn, 'UTF8'), 'hex') AS a FROM customers", "a"),
    _ok("to-hex", "SELECT to_hex(replace(ssn, '-', '')::bigint) AS a FROM customers", "a"),
    _ok("bytea", "SELECT convert_to(phone, 'UTF8') AS a FROM customers", "a"),
    _ok("case-expr", "SELECT CASE WHEN id > 0 THEN ssn ELSE name END AS a FROM customers", "a"),
    _ok("coalesce", "SELECT coalesce(NULL, card_number) AS a FROM customers", "a"),
    _ok("greatest", "SELECT greatest(name, email) AS a FROM customers", "a"),
    _ok("no-alias-function", "SELECT lower(ssn) FROM customers", "lower"),
    # casts
    _ok("cast-varchar", "SELECT ssn::varchar(20) AS a FROM customers", "a"),
    _ok("cast-bigint", "SELECT card_number::bigint AS a FROM customers", "a"),
    _ok("cast-numeric", "SELECT CAST(card_number AS numeric) AS a FROM customers", "a"),
    _ok("cast-int-digits", "SELECT replace(ssn, '-', '')::int AS a FROM customers", "a"),
    _ok("cast-bytea", "SELECT email::bytea AS a FROM customers", "a"),
    _ok("cast-char", "SELECT ssn::char(11) AS a FROM customers", "a"),
    # subqueries
    _ok("scalar-subquery", "SELECT (SELECT ssn FROM customers c2 WHERE c2.id = c.id) AS a FROM customers c", "a"),
    _ok("from-subquery", "SELECT * FROM (SELECT name, email FROM customers) s", "email"),
    _ok("from-subquery-renamed", "SELECT s.e FROM (SELECT email AS e FROM customers) s", "e"),
    _ok("subquery-alias-list", "SELECT s.x FROM (SELECT phone FROM customers) AS s(x)", "x"),
    _ok("nested-scalar", "SELECT a FROM (SELECT (SELECT ssn FROM customers ORDER BY id LIMIT 1) AS a) s", "a"),
    _ok("array-subquery", "SELECT ARRAY(SELECT ssn FROM customers) AS a", "a"),
    _ok("lateral", "SELECT l.v FROM customers c, LATERAL (SELECT c.card_number AS v) l", "v"),
    # CTEs
    _ok("cte", "WITH t AS (SELECT ssn FROM customers) SELECT ssn FROM t", "ssn"),
    _ok("cte-column-list", "WITH t(a, b) AS (SELECT name, ssn FROM customers) SELECT b AS renamed FROM t", "renamed"),
    _ok("cte-chain", "WITH t AS (SELECT email AS contact FROM customers), u AS (SELECT contact AS c2 FROM t) "
        "SELECT c2 FROM u", "c2"),
    _ok("cte-recursive", "WITH RECURSIVE r(s, n) AS (SELECT ssn, 1 FROM customers UNION ALL "
        "SELECT s, n + 1 FROM r WHERE n < 2) SELECT s FROM r", "s"),
    _ok("cte-materialized-star", "WITH t AS MATERIALIZED (SELECT * FROM customers) SELECT t.phone AS p FROM t", "p"),
    # UNION: the sensitive column in one branch only
    _ok("union-second-branch", "SELECT name FROM customers UNION SELECT ssn FROM customers", "name"),
    _ok("union-literal-first", "SELECT 'x' AS a UNION ALL SELECT email FROM customers", "a"),
    _ok("union-other-table", "SELECT status FROM orders UNION ALL SELECT card_number FROM customers", "status"),
    _ok("union-second-column", "SELECT name, id::text AS k FROM customers UNION ALL SELECT 'n', phone FROM customers", "k"),
    _ok("except", "SELECT email FROM customers EXCEPT SELECT 'nobody'", "email"),
    _ok("union-in-subquery", "SELECT u.v FROM (SELECT name AS v FROM customers UNION SELECT ssn FROM customers) u", "v"),
    # SELECT *
    _ok("star", "SELECT * FROM customers", "email", "ssn", "phone", "card_number"),
    _ok("alias-star", "SELECT c.* FROM customers c", "email", "ssn", "phone", "card_number"),
    _ok("table", "TABLE customers", "email", "ssn", "phone", "card_number"),
    _ok("star-join", "SELECT * FROM customers c JOIN orders o ON o.customer_id = c.id", "email", "ssn", "phone", "card_number"),
    _ok("star-subquery", "SELECT * FROM (SELECT * FROM customers) s", "email", "ssn", "phone", "card_number"),
    _ok("composite-star", "SELECT (c).* FROM customers c", "email", "ssn", "phone", "card_number"),
    _ok("only", "SELECT * FROM ONLY customers", "email", "ssn", "phone", "card_number"),
    _ok("star-natural", "SELECT * FROM customers NATURAL JOIN (SELECT id FROM orders) o", "email", "ssn"),
    # views
    _ok("view-alias", "SELECT * FROM v_alias", "tax_id"),
    _ok("view-of-view", "SELECT t FROM v_view_of_view", "t"),
    _ok("view-join", "SELECT * FROM v_join", "contact"),
    _ok("view-expressions", "SELECT * FROM v_expr", "shout", "label"),
    _ok("view-whole-row", "SELECT doc FROM v_whole_row", "doc"),
    _ok("matview", "SELECT * FROM mv_customers", "ssn", "pan"),
    _ok("view-function", "SELECT * FROM v_func", "s"),
    _ok("view-join-views", "SELECT x.tax_id FROM v_alias x JOIN v_join j ON j.name = x.name", "tax_id"),
    _ok("view-renamed", "SELECT tax_id AS harmless FROM v_alias", "harmless"),
    # user-defined functions: refused as opaque, or masked
    Leak("function-call", "SELECT ssn_by_id(1) AS a", ("a",), "ok|blocked"),
    Leak("function-row-arg", "SELECT ssn_of(c) AS a FROM customers c", ("a",), "ok|blocked"),
    Leak("function-attribute-notation", "SELECT c.ssn_of FROM customers c", ("ssn_of",), "ok|blocked"),
    Leak("function-qualified", "SELECT public.ssn_by_id(id) AS a FROM customers", ("a",), "ok|blocked"),
    # whole-row references
    _ok("row-to-json", "SELECT row_to_json(c) FROM customers c", "row_to_json"),
    _ok("row-cast-text", "SELECT c::text FROM customers c", "c"),
    _ok("row-itself", "SELECT c FROM customers c", "c"),
    _ok("to-jsonb", "SELECT to_jsonb(c) AS j FROM customers c", "j"),
    _ok("row-attribute-notation", "SELECT c.row_to_json FROM customers c", "row_to_json"),
    _ok("to-jsonb-attribute-notation", "SELECT c.to_jsonb FROM customers c", "to_jsonb"),
    _ok("row-constructor-star", "SELECT ROW(c.*) AS r FROM customers c", "r"),
    _ok("row-constructor", "SELECT ROW(name, ssn) AS r FROM customers", "r"),
    _ok("format-row", "SELECT format('%s', c) AS a FROM customers c", "a"),
    _ok("concat-row", "SELECT concat(c) AS a FROM customers c", "a"),
    _ok("row-field", "SELECT (c).ssn AS a FROM customers c", "a"),
    _ok("row-json-field", "SELECT to_jsonb(c) ->> 'ssn' AS a FROM customers c", "a"),
    _ok("row-json-path", "SELECT jsonb_path_query(to_jsonb(c), '$.email') AS a FROM customers c", "a"),
    _ok("populate-record", "SELECT (jsonb_populate_record(NULL::customers, to_jsonb(c))).card_number AS a "
        "FROM customers c", "a"),
    _ok("each-text", "SELECT (jsonb_each_text(to_jsonb(c))).value AS a FROM customers c", "a"),
    # JSON / array / string aggregation
    _ok("json-agg-row", "SELECT json_agg(c) AS a FROM customers c", "a"),
    _ok("json-agg", "SELECT json_agg(ssn) AS a FROM customers", "a"),
    _ok("array-agg", "SELECT array_agg(email) AS a FROM customers", "a"),
    _ok("array-agg-row", "SELECT array_agg(c) AS a FROM customers c", "a"),
    _ok("string-agg", "SELECT string_agg(phone, ',') AS a FROM customers", "a"),
    _ok("build-object", "SELECT jsonb_build_object('s', ssn) AS a FROM customers", "a"),
    _ok("object-agg", "SELECT json_object_agg(name, card_number) AS a FROM customers", "a"),
    _ok("jsonb-agg-object", "SELECT jsonb_agg(jsonb_build_object('e', email)) AS a FROM customers", "a"),
    _ok("array-to-string", "SELECT array_to_string(array_agg(ssn), ';') AS a FROM customers", "a"),
    _ok("array-literal", "SELECT ARRAY[ssn, email] AS a FROM customers", "a"),
    _ok("unnest", "SELECT unnest(ARRAY[ssn, email]) AS a FROM customers", "a"),
    _ok("to-json-array", "SELECT to_json(ARRAY[phone]) AS a FROM customers", "a"),
    _ok("min-max", "SELECT min(ssn) AS a, max(email) AS b FROM customers", "a", "b"),
    _ok("chars-per-row", "SELECT regexp_split_to_table(ssn, '') AS a FROM customers WHERE id = 1", "a"),
    _ok("char-by-position", "SELECT substr(c.ssn, g, 1) AS ch FROM customers c, generate_series(1, 11) g "
        "WHERE c.id = 1 ORDER BY g", "ch"),
    _ok("string-to-array", "SELECT string_to_array(ssn, NULL) AS a FROM customers", "a"),
    _ok("array-subscript", "SELECT (ARRAY[card_number])[1] AS a FROM customers", "a"),
    _ok("array-text", "SELECT ARRAY[email]::text AS a FROM customers", "a"),
    _ok("json-key", "SELECT jsonb_build_object(email, 1) AS a FROM customers", "a"),
    # sqlglot cannot parse PostgreSQL's json_object(text[]): refused as unknown (fail closed)
    Leak("json-object-array", "SELECT json_object(ARRAY['k', ssn]) AS a FROM customers", ("a",), "ok|blocked"),
    _ok("object-agg-id", "SELECT jsonb_object_agg(id, ssn) AS a FROM customers", "a"),
    _ok("tsvector", "SELECT to_tsvector('simple', email) AS a FROM customers", "a"),
    _ok("distinct-on", "SELECT DISTINCT ON (ssn) ssn AS a FROM customers", "a"),
    _ok("group-by", "SELECT ssn AS a, count(*) FROM customers GROUP BY ssn", "a"),
    _ok("collate", "SELECT ssn COLLATE \"C\" AS a FROM customers", "a"),
    _ok("max-subquery", "SELECT (SELECT max(ssn) FROM customers) AS m", "m"),
    _ok("lateral-values", "SELECT t.v FROM customers c, LATERAL (VALUES (c.ssn)) t(v)", "v"),
    _ok("values-subquery", "SELECT v FROM (VALUES ((SELECT email FROM customers ORDER BY id LIMIT 1))) t(v)", "v"),
    _ok("unnest-agg", "SELECT * FROM unnest((SELECT array_agg(email) FROM customers)) AS u(e)", "e"),
    _ok("to-record", "SELECT r.ssn AS a FROM customers c, jsonb_to_record(to_jsonb(c)) AS r(ssn text)", "a"),
    _ok("populate-lateral", "SELECT r.email AS a FROM customers c "
        "CROSS JOIN LATERAL json_populate_record(NULL::customers, row_to_json(c)) r", "a"),
    _ok("json-minus", "SELECT (to_jsonb(c) - 'id') ->> 'phone' AS a FROM customers c", "a"),
    _ok("duplicate-names", "SELECT name AS x, ssn AS x FROM customers"),
    _ok("tablesample", "SELECT * FROM customers TABLESAMPLE BERNOULLI (100)", "ssn", "email"),
    # planner statistics: pg_stats shows sampled values of every column the user may SELECT
    _ok("pg-stats", "SELECT attname, most_common_vals::text AS mcv, histogram_bounds::text AS hb "
        "FROM pg_stats WHERE tablename = 'customers'"),
    # lineage traps: names that resolve somewhere else than they seem to
    _ok("cte-shadows-table", "WITH orders AS (SELECT reverse(ssn) AS status FROM customers) "
        "SELECT lower(status) AS a FROM orders", "a"),
    _ok("subquery-alias-shadows-table", "SELECT orders.status || '' AS a FROM "
        "(SELECT reverse(ssn) AS status FROM customers) orders", "a"),
    _ok("inner-scope-first", "SELECT (SELECT lower(status) FROM (SELECT reverse(ssn) AS status FROM customers) s "
        "LIMIT 1) AS a FROM orders", "a"),
    _ok("natural-full-join", "SELECT lower(name) AS a FROM (SELECT 'x' AS name) a "
        "NATURAL FULL JOIN (SELECT reverse(ssn) AS name FROM customers) b", "a"),
    _ok("right-join-using", "SELECT upper(name) AS a FROM (SELECT 'zz' AS name) a "
        "RIGHT JOIN (SELECT reverse(ssn) AS name FROM customers) b USING (name)", "a"),
    _ok("table-alias-list", "SELECT x.name || '' AS a FROM customers x(id, nm, name)", "a"),
    _ok("table-alias-list-short", "SELECT lower(e) AS a FROM customers AS c(i, n, e)", "a"),
    _ok("subquery-alias-list-star", "SELECT reverse(x.name) AS a FROM (SELECT * FROM customers) x(id, nm, name)", "a"),
    _ok("table-statement-alias-list", "SELECT reverse(x) AS a FROM (TABLE customers) t(i, n, x)", "a"),
    _ok("rows-from", "SELECT lower(v) AS a FROM ROWS FROM (unnest(ARRAY(SELECT reverse(ssn) FROM customers))) "
        "AS r(v)", "a"),
    _ok("unnest-alias", "SELECT upper(x) AS a FROM unnest((SELECT array_agg(reverse(ssn)) FROM customers)) "
        "AS t(x)", "a"),
    _ok("fully-qualified", "SELECT reverse(public.customers.ssn) AS a FROM public.customers", "a"),
    _ok("quoted-names", 'SELECT reverse(c."ssn") AS a FROM "public"."customers" c', "a"),
    _ok("recursive-accumulates", "WITH RECURSIVE r(a, n) AS (SELECT 'x', 0 UNION ALL SELECT reverse(ssn), n + 1 "
        "FROM r, customers WHERE n < 1) SELECT a FROM r", "a"),
    _ok("lateral-select", "SELECT reverse(n) AS a FROM customers c CROSS JOIN LATERAL (SELECT c.ssn) AS l(n)", "a"),
    _ok("union-first-branch", "SELECT reverse(s) AS a FROM (SELECT ssn AS s FROM customers UNION ALL "
        "SELECT name FROM customers) u", "a"),
    _ok("grouping-sets", "SELECT reverse(ssn) AS a FROM customers GROUP BY GROUPING SETS ((ssn), ())", "a"),
    _ok("table-as-text", "SELECT reverse(customers::text) AS a FROM customers", "a"),
    _ok("star-as-text", "SELECT reverse(c.*::text) AS a FROM customers c", "a"),
    _ok("row-in-array", "SELECT reverse((ARRAY[c])[1]::text) AS a FROM customers c", "a"),
    _ok("variadic", "SELECT reverse(concat_ws(',', VARIADIC ARRAY[ssn])) AS a FROM customers", "a"),
    # planner statistics, transformed: no lineage to a sensitive column, and the detectors see no value
    _ok("pg-stats-reversed", "SELECT attname, reverse(histogram_bounds::text) AS hb FROM pg_stats "
        "WHERE tablename = 'customers'"),
    _ok("pg-stats-base64", "SELECT encode(convert_to(histogram_bounds::text, 'UTF8'), 'base64') AS hb "
        "FROM pg_stats WHERE tablename = 'customers'"),
    # window functions
    _ok("window-lag", "SELECT lag(ssn) OVER (ORDER BY id) AS a FROM customers", "a"),
    _ok("window-first-value", "SELECT first_value(email) OVER (PARTITION BY name ORDER BY id) AS a FROM customers", "a"),
    _ok("window-max", "SELECT max(card_number) OVER () AS a FROM customers", "a"),
    _ok("window-string-agg", "SELECT string_agg(ssn, ',') OVER () AS a FROM customers", "a"),
    Leak("window-order-by-ssn", "SELECT name, row_number() OVER (ORDER BY ssn) AS rn FROM customers", live=False),
    # notes: a non-sensitive JSON column holding an email (only the detectors stand guard here)
    _ok("notes", "SELECT notes FROM customers"),
    _ok("notes-field", "SELECT notes->>'backup_email' AS a FROM customers"),
    _ok("notes-json-field", "SELECT notes->'backup_email' AS a FROM customers"),
    _ok("notes-text", "SELECT notes::text AS a FROM customers"),
    _ok("notes-pretty", "SELECT jsonb_pretty(notes) AS a FROM customers"),
    _ok("notes-upper", "SELECT upper(notes->>'backup_email') AS a FROM customers"),
    _ok("notes-reverse", "SELECT reverse(notes->>'backup_email') AS a FROM customers"),
    _ok("notes-base64", "SELECT encode(convert_to(notes->>'backup_email', 'UTF8'), 'base64') AS a FROM customers"),
    _ok("notes-hex", "SELECT encode(convert_to(notes::text, 'UTF8'), 'hex') AS a FROM customers"),
    _ok("notes-md5", "SELECT md5(notes->>'backup_email') AS a FROM customers"),
    _ok("notes-each", "SELECT n.key, n.value FROM customers, jsonb_each_text(notes) n"),
    _ok("notes-whole-row", "SELECT o.*, c.notes FROM orders o JOIN customers c ON c.id = o.customer_id"),
    # error messages: the value would be echoed in "invalid input syntax"
    _error("err-ssn-int", "SELECT ssn::int FROM customers"),
    _error("err-email-int", "SELECT email::int FROM customers"),
    _error("err-reverse-email-int", "SELECT reverse(email)::int FROM customers"),
    _error("err-ssn-date", "SELECT (ssn || 'x')::date FROM customers"),
    _error("err-phone-numeric", "SELECT phone::numeric FROM customers"),
    _error("err-card-int-range", "SELECT card_number::int FROM customers"),
    _error("err-card-smallint", "SELECT CAST(card_number AS smallint) FROM customers"),
    Leak("err-ssn-jsonb", "SELECT ssn::jsonb FROM customers", status="error", live=False),
    Leak("err-email-jsonb", "SELECT email::jsonb FROM customers", status="error", live=False),
    _error("err-ssn-regclass", "SELECT ssn::regclass FROM customers"),
    _error("err-ssn-regrole", "SELECT ssn::regrole FROM customers"),
    _error("err-ssn-uuid", "SELECT ssn::uuid FROM customers"),
    _error("err-ssn-bool", "SELECT ssn::boolean FROM customers"),
    _error("err-ssn-array", "SELECT ('{' || ssn || '}')::int[] FROM customers"),
    _error("err-email-inet", "SELECT email::inet FROM customers"),
    _error("err-ssn-xml", "SELECT ('<' || ssn)::xml FROM customers"),
    _error("err-upper-email-int", "SELECT upper(email)::int FROM customers"),
    _error("err-base64-int", "SELECT encode(convert_to(ssn, 'UTF8'), 'base64')::int FROM customers"),
    _error("err-md5-int", "SELECT md5(ssn)::int FROM customers"),
    _error("err-in-where", "SELECT id FROM customers WHERE ssn::int > 0"),
    _error("err-current-setting", "SELECT current_setting(ssn) FROM customers"),
    _error("err-role-privilege", "SELECT has_table_privilege(email, 'orders', 'select') FROM customers"),
    _error("err-date-trunc", "SELECT date_trunc(ssn, now()) FROM customers"),
    _error("err-notes-int", "SELECT (notes->>'backup_email')::int FROM customers WHERE notes ? 'backup_email'"),
    _error("err-pg-stats-reversed", "SELECT reverse(histogram_bounds::text)::int FROM pg_stats "
           "WHERE tablename = 'customers' AND attname = 'ssn'"),
    # a leading double quote in the value shifts the pairing of quotes in the error message
    _error("err-quote-plain-ssn", """SELECT ('"' || ssn)::int FROM customers"""),
    _error("err-quote-plain-phone", """SELECT ('"' || phone)::int FROM customers"""),
    _error("err-quote-notes", "SELECT (notes::text)::int FROM customers WHERE notes ? 'backup_email'"),
    _error("err-quote-reverse-ssn", """SELECT ('"' || reverse(ssn))::int FROM customers"""),
    _error("err-quote-reverse-card", """SELECT ('"' || reverse(card_number))::int FROM customers"""),
    _error("err-quote-base64-email", """SELECT ('"' || encode(convert_to(email, 'UTF8'), 'base64'))::int FROM customers"""),
    _error("err-quote-wrapped", """SELECT ('x"' || reverse(ssn) || '"')::int FROM customers"""),
    _error("err-apostrophe-reverse-ssn", "SELECT ('''' || reverse(ssn))::int FROM customers"),
    _error("err-notes-upper-int", "SELECT upper(notes->>'backup_email')::int FROM customers "
           "WHERE notes ? 'backup_email'"),
]  # fmt: skip


# ---------------------------------------------------------------- what counts as a planted value


def _secrets() -> dict[str, str]:
    values: dict[str, str] = {}
    for row in PLANTED:
        for column in ("email", "ssn", "phone", "card_number"):
            values[f"{row['name']} {column}"] = str(row[column])
        backup = row["notes"].get("backup_email")  # type: ignore[union-attr]
        if backup:
            values[f"{row['name']} notes.backup_email"] = str(backup)
    return values


SECRETS = _secrets()


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def forms(value: str) -> set[str]:
    """Every form of a planted value that must not appear verbatim anywhere the user or the log sees."""
    raw = value.encode("utf-8")
    out = {value, value.upper(), value.lower(), value[::-1], value[::-1].upper(), value[::-1].lower()}
    for encoder in (base64.b64encode, base64.urlsafe_b64encode):
        encoded = encoder(raw).decode("ascii")
        out |= {encoded, encoded.rstrip("=")}
    out |= {raw.hex(), raw.hex().upper(), hashlib.md5(raw).hexdigest(), hashlib.sha256(raw).hexdigest()}  # noqa: S324
    digits = _digits(value)
    if len(digits) >= 7:
        out |= {digits, digits[::-1], format(int(digits), "x"), format(int(digits), "X")}
    return out


FORMS = {label: forms(value) for label, value in SECRETS.items()}
PIECES = {
    piece
    for row in PLANTED
    for digits in (_digits(str(row["card_number"])), _digits(str(row["phone"])))
    for piece in (digits[i : i + 4] for i in range(len(digits) - 3))
}
DIGIT_FORMS = {
    label: {_digits(value), _digits(value)[::-1]}
    for label, value in SECRETS.items()
    if len(_digits(value)) >= 7
}
_B64_RUN = re.compile(r"[A-Za-z0-9+/_-]{12,}={0,2}")
_HEX_RUN = re.compile(r"(?:[0-9a-fA-F]{2}){6,}")


def _decoded(text: str) -> list[str]:
    """Encoded runs inside text, decoded: base64 (both alphabets) and hex, as UTF-8 with errors replaced."""
    out = []
    for match in _B64_RUN.finditer(text):
        run = match.group(0).rstrip("=")
        for alphabet in (None, b"-_"):
            try:
                data = base64.b64decode(run + "=" * (-len(run) % 4), altchars=alphabet, validate=False)
            except (binascii.Error, ValueError):
                continue
            out.append(data.decode("utf-8", "replace"))
    for match in _HEX_RUN.finditer(text):
        out.append(bytes.fromhex(match.group(0)).decode("utf-8", "replace"))
    return out


def find_planted(strings: list[str]) -> list[str]:
    """(label, form, where) for every planted value found in any form in any of the strings."""
    found = []
    for text in strings:
        lowered = text.lower()
        candidates = [text, lowered, text[::-1].lower()]
        for decoded in _decoded(text):
            candidates += [decoded.lower(), decoded[::-1].lower()]
        digits = _digits(text)
        for label, value_forms in FORMS.items():
            for form in value_forms:
                if form in text or any(form.lower() in c for c in candidates):
                    found.append(f"{label} as {form!r} in {text[:120]!r}")
                    break
            else:
                if any(d in digits for d in DIGIT_FORMS.get(label, ())):
                    found.append(f"{label} as digits in {text[:120]!r}")
    return found


def _strings(value: Any) -> list[str]:
    """Every text a value shows: str/repr of cells, JSON values walked, bytes as text and as hex."""
    if value is None or isinstance(value, bool | int | float):
        return [str(value)]
    if isinstance(value, memoryview):
        value = value.tobytes()
    if isinstance(value, bytes):
        return [value.decode("utf-8", "replace"), value.hex(), repr(value)]
    if isinstance(value, dict):
        out = [json.dumps(value, ensure_ascii=False, default=str)]
        for key, item in value.items():
            out += [str(key), *_strings(item)]
        return out
    if isinstance(value, list | tuple):
        out = [json.dumps(value, ensure_ascii=False, default=str)]
        for item in value:
            out += _strings(item)
        return out
    return [str(value), repr(value)]


# ---------------------------------------------------------------- fixtures


@dataclass
class Env:
    shop: Shop
    admin: psycopg.Connection[Any]
    session: Session
    pipeline: SqlPipeline
    audit: Path
    known_leaks: set[str] = field(default_factory=set)  # audit lines of the xfailed (reported) leaks


@pytest.fixture(scope="module")
def env(pg_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """The shop with the admin's views, matview and functions, ANALYZEd; one session on pg-readonly."""
    shops = create_shop(pg_dsn)
    shop = next(shops)
    with shop.admin() as admin:
        admin.execute(ADMIN_SETUP)
        admin.execute("ANALYZE customers")  # as autovacuum eventually would: pg_stats then holds values
        for role in (shop.ro_user, shop.rw_user):
            admin.execute(
                sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(role))
            )
    config = shop_config(tmp_path_factory.mktemp("masking"), shop)
    session = open_session(config)
    pipeline = SqlPipeline(session, "pg-readonly")
    pipeline.open()
    admin = shop.admin()
    try:
        yield Env(shop, admin, session, pipeline, Path(config.audit.log))
    finally:
        admin.close()
        pipeline.close()
        session.end()
        next(shops, None)


class Seen:
    """Everything one query showed the user and wrote to the audit log."""

    def __init__(self) -> None:
        self.results: list[StatementResult] = []
        self.user: list[str] = []
        self.audit: list[str] = []
        self.records: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self.rows = 0


def run_directly(env: Env, query: str) -> list[str]:
    """What the query shows without the bastion (the admin, straight to the server): the probe is live
    only if a planted value is in there."""
    try:
        rows = env.admin.execute(query).fetchall()
    except psycopg.Error as exc:
        diag = exc.diag
        return [str(exc), diag.message_primary or "", diag.message_detail or "", diag.message_hint or ""]
    out = []
    for row in rows:
        for cell in row:
            out += _strings(cell)
    for column in zip(*rows, strict=True):
        out.append("".join(str(cell) for cell in column))
    return out


def run_and_collect(env: Env, query: str) -> Seen:
    """Run through the pipeline, one row per fetch, and keep every string the user saw and every audit line
    written meanwhile."""
    seen = Seen()
    offset = env.audit.stat().st_size
    for result in env.pipeline.run(query, first_rows=1):
        seen.results.append(result)
        rows = list(result.rows)
        while result.more_available:
            batch = result.more(1)
            if not batch:
                break
            rows += batch
        result.close()
        seen.rows += len(rows)
        seen.user += list(result.columns)
        for row in rows:
            for cell in row:
                seen.user += _strings(cell)
        for column in zip(*rows, strict=True):  # one character per row is still the value
            seen.user.append("".join(str(cell) for cell in column))
        if result.error:
            seen.user.append(result.error)
    with env.audit.open("rb") as log:
        log.seek(offset)
        for line in log.read().decode("utf-8").splitlines():
            record = json.loads(line)
            seen.records.append(record)
            seen.lines.append(line)
            seen.audit.append(line)
            seen.audit += _strings(record.get("payload"))
    return seen


# ---------------------------------------------------------------- the corpus

_DETECTORS_ONLY = (
    "notes is not a configured sensitive column, so only the value detectors guard the backup email in it; "
    "they see the final cell, and {what} of notes->>'backup_email' is no longer an email to them"
)
_PG_STATS = (
    "pg_stats shows sampled values of every column the user may SELECT (histogram_bounds here: all three "
    "{what}); the pipeline treats system views as clean, so only the detectors stand guard, and they do not "
    "recognise {form} values — pg_stats/pg_statistic need the sensitive columns' masking (or a block)"
)
_QUOTE_SHIFT = (
    "error_text elides double-quoted values by pairing quotes with a regex; a value that itself starts with "
    '`"` shifts the pairing, so the value lands outside any pair and is shown (user and audit log); only the '
    "detectors are left, and {form} passes them"
)
_XFAIL: dict[str, str] = {}  # every leak this corpus found is fixed; add new ones here while they are open


def _params() -> list[Any]:
    out = []
    for leak in LEAKS:
        marks = [pytest.mark.xfail(strict=True, reason=_XFAIL[leak.id])] if leak.id in _XFAIL else []
        out.append(pytest.param(leak, id=leak.id, marks=marks))
    return out


@pytest.mark.parametrize("leak", _params())
def test_no_planted_value_in_any_form(env: Env, leak: Leak) -> None:
    """The query through the bastion shows no planted value in any form, in results, errors or audit
    events; run directly it does (so the probe would have caught a leak); masked columns carry reasons."""
    direct = run_directly(env, leak.sql)
    if leak.live:
        assert find_planted(direct), "the probe shows no planted value even without the bastion"
    seen = run_and_collect(env, leak.sql)
    if leak.id in _XFAIL:
        env.known_leaks.update(seen.lines)
    assert seen.results, "the pipeline decided nothing"
    result = seen.results[-1]
    assert find_planted(seen.user) == [], "visible to the user"
    assert find_planted(seen.audit) == [], "written to the audit log"
    allowed = set(leak.status.split("|"))
    assert result.status in allowed, (result.status, result.error)
    if result.status == "ok":
        assert seen.rows > 0, "the query returned no rows, so it proved nothing"
        by_name = {d.name: d for d in result.masking}
        for column in leak.masked:
            decision = by_name.get(column)
            assert decision is not None and decision.masked, f"{column} not reported masked: {result.masking}"
        for decision in result.masking:
            if decision.masked:
                assert decision.reasons and all(r.strip() for r in decision.reasons), decision
        if leak.full:
            for column in leak.masked:
                assert by_name[column].style == "full", by_name[column]
            shown = [p for text in seen.user for p in PIECES if p in text or p in _digits(text)]
            assert shown == [], "a 4-digit piece of a planted card or phone is visible"
    if result.status == "error":
        assert result.error and result.error.strip()


@pytest.mark.parametrize(
    "query",
    [
        "SELECT card_number, phone, email FROM customers",
        "SELECT c.card_number AS x, c.phone AS y, c.email AS z FROM customers c",
        "SELECT card_number, phone, email FROM (SELECT * FROM customers) s",
        "WITH t AS (SELECT card_number AS x, phone AS y, email AS z FROM customers) SELECT x, y, z FROM t",
        "SELECT card_number, phone, email, upper(name) AS n FROM customers",
    ],
)
def test_plain_columns_keep_their_style(env: Env, query: str) -> None:
    """The column itself (however aliased or passed through a subquery) keeps its rule's style: the card
    and phone show their last four, the email a pseudonym."""
    seen = run_and_collect(env, query)
    result = seen.results[-1]
    assert result.status == "ok", result.error
    styles = [d.style for d in result.masking[:3]]
    assert styles == ["partial", "partial", "pseudonym"], result.masking
    first = next(env.pipeline.run(query))
    first.close()
    assert {row[0] for row in first.rows} == {"••••" + str(p["card_number"])[-4:] for p in PLANTED}
    assert {row[1] for row in first.rows} == {"••••" + str(p["phone"])[-4:] for p in PLANTED}
    assert all(str(row[2]).startswith("tok_") for row in first.rows)
    assert find_planted(seen.user) == [] and find_planted(seen.audit) == []


def _hmac_bytes(value: str) -> bytes:
    """An audited HMAC as bytes, whichever text encoding the record uses (hex or base64)."""
    if re.fullmatch(r"[0-9a-f]{32}", value):
        return bytes.fromhex(value)
    return base64.b64decode(value, validate=True)


def test_masked_values_are_audited_as_hmacs_only(env: Env) -> None:
    """`SELECT * FROM customers`: each masked column is audited with one 128-bit HMAC per distinct value —
    evidence that the values were there, without the values (nor a plain hash of them)."""
    seen = run_and_collect(env, "SELECT * FROM customers")
    masked_records = [
        item
        for record in seen.records
        if record["type"].startswith("sql_")
        for item in record["payload"].get("masked", [])
    ]
    per_column: dict[str, int] = {}
    for item in masked_records:
        for key, values in item.items():
            if not key.startswith("hmac_sha256"):
                continue
            for value in values if isinstance(values, list) else [values]:
                digest = _hmac_bytes(value)
                assert digest and len(digest) % 16 == 0, item
                per_column[item["column"]] = per_column.get(item["column"], 0) + len(digest) // 16
    # one 128-bit HMAC per row here (every planted value is distinct), over however many batches
    assert per_column == dict.fromkeys(("email", "ssn", "phone", "card_number"), len(PLANTED))
    plain_hashes = {hashlib.sha256(v.encode()).hexdigest()[:32] for v in SECRETS.values()}
    assert not any(h in line for h in plain_hashes for line in seen.audit)
    assert find_planted(seen.audit) == []


def test_known_limit_error_oracle_answers_one_bit(env: Env) -> None:
    """KNOWN LIMIT, not a failure: a division by zero inside a CASE on a sensitive column is an inference
    oracle — whether the statement fails says whether the guess was right, one bit per query. No masking can
    prevent it short of refusing predicates on sensitive columns (which would refuse ordinary joins and
    filters). What the bastion does guarantee, and this test checks: the error text and the audit log carry
    no value, and each probe is an audited statement (a burst of them is visible evidence).
    """
    ada = SECRETS["Ada Lovelace ssn"]
    right = f"SELECT CASE WHEN substr(ssn, 1, 1) = '{ada[0]}' THEN 1 / (id - id) ELSE 1 END AS probe FROM customers WHERE id = 1"
    wrong_digit = "9" if ada[0] != "9" else "8"
    wrong = right.replace(f"= '{ada[0]}'", f"= '{wrong_digit}'")
    hit, miss = run_and_collect(env, right), run_and_collect(env, wrong)
    assert hit.results[-1].status == "error" and "division by zero" in (hit.results[-1].error or "")
    assert miss.results[-1].status == "ok"
    for seen in (hit, miss):
        assert find_planted(seen.user) == [] and find_planted(seen.audit) == []
        assert any(record["type"] == "sql_statement" for record in seen.records)


def test_whole_audit_log_has_no_planted_value(env: Env) -> None:
    """After every query above, the whole audit log once more (including events written outside any
    single query's window, such as the session's own) — but for the events of the leaks reported as xfail."""
    lines = env.audit.read_text().splitlines()
    strings: list[str] = []
    for line in lines:
        if line in env.known_leaks:
            continue
        strings.append(line)
        strings += _strings(json.loads(line).get("payload"))
    assert len(lines) > len(LEAKS)
    assert find_planted(strings) == []


def test_the_oracle_can_find_values() -> None:
    """The search itself can fail: every planted value is found in each form it claims to cover, embedded
    in other text, and inside a longer encoded string."""
    for label, value in SECRETS.items():
        raw = value.encode()
        for shown in [
            f"x {value} y",
            value.upper(),
            value[::-1],
            base64.b64encode(b"prefix " + raw).decode(),
            base64.urlsafe_b64encode(raw).decode().rstrip("="),
            ("zz" + raw.hex()).upper(),
            hashlib.md5(raw).hexdigest(),  # noqa: S324
        ]:
            assert find_planted([shown]), (label, shown)
        if label in DIGIT_FORMS:
            assert find_planted([f"[{_digits(value)}]"]), label
    assert find_planted(["Ada Lovelace", "tok_dion4qiqytlny2nt", "••••0134", "[email]"]) == []
