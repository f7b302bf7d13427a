"""The SQL bypass corpus (tests/sql_corpus.py) against the classifier and the real pipeline on PostgreSQL.

For every entry: (a) classify + decide never allows it under the readonly preset and never under guarded
(where the design says block, exactly block); (b) the pipeline on pg-readonly and on pg-guarded stops it
(blocked / needs_approval; a legitimate read may run, or fail on the server); (c) the database is unchanged
afterwards — schema, data, roles, settings, sequences, large objects, the bastion connection's own session
state — and no file appears where COPY or lo_export were pointed. The fingerprint is compared after every
entry (so a failure names the entry) and once over the whole corpus.

The guarded connection logs in as a role that may INSERT/UPDATE/DELETE/TRUNCATE and CREATE in public, and the
objects the corpus names exist (a procedure that deletes, dblink, the sequence), so anything that slipped
through would really change something.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bastion.config import builtin_policies
from bastion.policy.sql import SqlClass, classify, split_statements
from bastion.policy.verdict import Verdict, decide
from bastion.session import Session
from bastion.sql_pipeline import SqlPipeline, StatementResult
from bastion.targets.postgres import TargetError
from tests.shopdb import Shop, create_shop, open_session, shop_config
from tests.sql_corpus import CORPUS, CREATED_NAMES, Entry

POLICIES = builtin_policies()
CONNECTIONS = ("pg-readonly", "pg-guarded")
_RANK = {Verdict.ALLOW: 0, Verdict.NEEDS_APPROVAL: 1, Verdict.BLOCK: 2}

# Objects the corpus names, created as the admin so that a statement that got through would act on them.
ADMIN_SETUP = """
CREATE TABLE side_effects (n int);
CREATE FUNCTION bump(o orders) RETURNS int LANGUAGE sql AS 'INSERT INTO side_effects VALUES (1) RETURNING 1';
CREATE PROCEDURE p() LANGUAGE sql AS $$ DELETE FROM orders $$;
CREATE MATERIALIZED VIEW mv AS SELECT id, status FROM orders;
CREATE FUNCTION lower(int) RETURNS text LANGUAGE sql AS $$ INSERT INTO side_effects VALUES (1) RETURNING 'x' $$;
CREATE SCHEMA app;
CREATE FUNCTION app.generate_series(int, int) RETURNS SETOF int LANGUAGE sql
    AS 'INSERT INTO side_effects VALUES (1) RETURNING 1';
CREATE FUNCTION app.unnest(int[]) RETURNS SETOF int LANGUAGE sql AS 'INSERT INTO side_effects VALUES (1) RETURNING 1';
CREATE FUNCTION app.plus(int, int) RETURNS int LANGUAGE sql AS 'INSERT INTO side_effects VALUES (1) RETURNING 1';
CREATE OPERATOR app.+ (LEFTARG = int, RIGHTARG = int, FUNCTION = app.plus);
"""


@dataclass
class Env:
    """The shop, the bastion session and its two open pipelines, and the directory nothing may appear in."""

    shop: Shop
    admin: psycopg.Connection[Any]
    session: Session
    pipelines: dict[str, SqlPipeline]
    files: Path
    baseline: dict[str, Any] = field(default_factory=dict)
    last: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> dict[str, Any]:
        """Database, cluster, both bastion sessions and the file directory, as one comparable dict."""
        fp = database_fingerprint(self.admin, self.shop)
        for name, pipeline in self.pipelines.items():
            fp[f"session {name}"] = session_fingerprint(pipeline)
        fp["files"] = sorted(os.listdir(self.files))
        return fp


@pytest.fixture(scope="module")
def shop(pg_dsn: str) -> Iterator[Shop]:
    """The shop database plus what the corpus names (dblink, a deleting procedure, a materialized view), so
    a statement that slipped through would act on something real."""
    shops = create_shop(pg_dsn)
    shop = next(shops)
    with shop.admin() as admin:
        available = admin.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'dblink'").fetchone()
        if available:
            admin.execute("CREATE EXTENSION IF NOT EXISTS dblink SCHEMA public")
        admin.execute(ADMIN_SETUP)
        for role in (shop.ro_user, shop.rw_user):
            admin.execute(sql.SQL("GRANT SELECT ON side_effects, mv TO {}").format(sql.Identifier(role)))
            admin.execute(sql.SQL("GRANT USAGE ON SCHEMA app TO {}").format(sql.Identifier(role)))
        admin.execute(sql.SQL("GRANT INSERT ON side_effects TO {}").format(sql.Identifier(shop.rw_user)))
    try:
        yield shop
    finally:
        with shop.admin() as admin:
            admin.execute("DROP EXTENSION IF EXISTS dblink")
            # the run's database is shared by later modules: user functions named after built-ins would
            # change what their catalog checks and lineage see
            admin.execute("DROP SCHEMA IF EXISTS app CASCADE")
            admin.execute("DROP FUNCTION IF EXISTS public.lower(int)")
        next(shops, None)


@pytest.fixture(scope="module")
def env(shop: Shop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """One bastion session with pg-readonly and pg-guarded open, and the baseline fingerprint taken before
    any entry runs."""
    # Not under pytest's private tmp tree: the server's account must be able to reach it, so that only the
    # bastion stands between a COPY TO / lo_export and a file here.
    files = Path(tempfile.mkdtemp(prefix="bastion-corpus-", dir="/tmp"))
    files.chmod(0o777)
    (files / "in.csv").write_text("1\t1\t1.00\tx\n")
    config = shop_config(tmp_path_factory.mktemp("bypass"), shop)
    session = open_session(config)
    pipelines = {name: SqlPipeline(session, name) for name in CONNECTIONS}
    for pipeline in pipelines.values():
        pipeline.open()
    admin = shop.admin()
    environment = Env(shop, admin, session, pipelines, files)
    environment.baseline = environment.fingerprint()
    environment.last = environment.baseline
    try:
        yield environment
    finally:
        for pipeline in pipelines.values():
            pipeline.close()
        session.end()
        admin.close()
        shutil.rmtree(files, ignore_errors=True)


# ---------------------------------------------------------------- fingerprints


_USER_NAMESPACES = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'"

# One round trip for the catalog: every object kind a corpus statement could create, drop or alter.
_CATALOG = f"""
SELECT json_build_object(
 'relations', (SELECT json_agg(x ORDER BY x::text) FROM (
    SELECT n.nspname, c.relname, c.relkind, pg_get_userbyid(c.relowner) AS owner, c.relacl::text,
           c.relrowsecurity, c.relpersistence, c.relhastriggers, c.relhasrules
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {_USER_NAMESPACES}) x),
 'columns', (SELECT json_agg(x ORDER BY x::text) FROM (
    SELECT c.oid::regclass::text AS rel, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
           pg_get_expr(d.adbin, d.adrelid) AS def
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attnum > 0 AND NOT a.attisdropped AND {_USER_NAMESPACES}) x),
 'functions', (SELECT json_agg(x ORDER BY x::text) FROM (
    SELECT p.oid::regprocedure::text AS f, md5(p.prosrc), p.prosecdef, p.provolatile, p.proacl::text,
           pg_get_userbyid(p.proowner) AS owner
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {_USER_NAMESPACES}) x),
 'triggers', (SELECT json_agg(x ORDER BY x::text) FROM (
    SELECT tgrelid::regclass::text, tgname, tgenabled FROM pg_trigger WHERE NOT tgisinternal) x),
 'event_triggers', (SELECT json_agg(evtname ORDER BY evtname) FROM pg_event_trigger),
 'rules', (SELECT json_agg(x ORDER BY x::text) FROM (
    SELECT schemaname, tablename, rulename, definition FROM pg_rules WHERE schemaname <> 'pg_catalog') x),
 'policies', (SELECT json_agg(x ORDER BY x::text) FROM (
    SELECT polrelid::regclass::text, polname, pg_get_expr(polqual, polrelid) FROM pg_policy) x),
 'types', (SELECT json_agg(x ORDER BY x::text) FROM (
    SELECT t.oid::regtype::text FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
    WHERE {_USER_NAMESPACES} AND t.typtype <> 'c' AND t.typelem = 0) x),
 'operators', (SELECT count(*) FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace
    WHERE {_USER_NAMESPACES}),
 'casts', (SELECT count(*) FROM pg_cast),
 'languages', (SELECT json_agg(lanname ORDER BY lanname) FROM pg_language),
 'extensions', (SELECT json_agg(x ORDER BY x::text) FROM (
    SELECT extname, extversion, extnamespace::regnamespace::text FROM pg_extension) x),
 'namespaces', (SELECT json_agg(x ORDER BY x::text) FROM (
    SELECT nspname, pg_get_userbyid(nspowner) AS owner, nspacl::text FROM pg_namespace) x),
 'default_acls', (SELECT count(*) FROM pg_default_acl),
 'comments', (SELECT md5(coalesce(string_agg(d.objoid::text || d.objsubid || d.description, '|'
    ORDER BY d.objoid, d.objsubid), '')) FROM pg_description d JOIN pg_class c ON c.oid = d.objoid
    JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {_USER_NAMESPACES}),
 'security_labels', (SELECT count(*) FROM pg_seclabel),
 'foreign_servers', (SELECT json_agg(srvname ORDER BY srvname) FROM pg_foreign_server),
 'publications', (SELECT json_agg(pubname ORDER BY pubname) FROM pg_publication),
 'subscriptions', (SELECT count(*) FROM pg_subscription),
 'replication_slots', (SELECT count(*) FROM pg_replication_slots),
 'prepared_xacts', (SELECT count(*) FROM pg_prepared_xacts),
 'large_objects', (SELECT count(*) FROM pg_largeobject_metadata),
 'sequences', (SELECT json_agg(x ORDER BY x::text) FROM (
    SELECT schemaname, sequencename, last_value, start_value, increment_by FROM pg_sequences) x),
 'databases', (SELECT json_agg(x ORDER BY x::text) FROM (
    SELECT datname, datconnlimit, datallowconn, datacl::text FROM pg_database
    WHERE datname = current_database() OR datname = 'postgres' OR datname = ANY(%(created)s)) x),
 'roles', (SELECT json_agg(x ORDER BY x::text) FROM (
    SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication,
           rolbypassrls, rolconnlimit, rolvaliduntil, md5(coalesce(rolpassword, '')) AS password
    FROM pg_authid WHERE rolname = ANY(%(roles)s)) x),
 'memberships', (SELECT json_agg(x ORDER BY x::text) FROM (
    SELECT r.rolname AS role, m.rolname AS member, a.admin_option FROM pg_auth_members a
    JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member
    WHERE r.rolname = ANY(%(roles)s) OR m.rolname = ANY(%(roles)s)) x),
 'role_settings', (SELECT json_agg(x ORDER BY x::text) FROM (
    SELECT coalesce(d.datname, '*') AS db, coalesce(r.rolname, '*') AS role, s.setconfig
    FROM pg_db_role_setting s LEFT JOIN pg_database d ON d.oid = s.setdatabase
    LEFT JOIN pg_roles r ON r.oid = s.setrole
    WHERE (s.setdatabase = 0 OR d.datname IN (current_database(), 'postgres'))
      AND (s.setrole = 0 OR r.rolname = ANY(%(roles)s))) x),
 'auto_conf', (SELECT json_agg(x ORDER BY x::text) FROM (
    SELECT name, setting FROM pg_file_settings WHERE sourcefile LIKE '%%postgresql.auto.conf') x),
 'server_settings', (SELECT json_agg(x ORDER BY x::text) FROM (
    SELECT name, setting FROM pg_settings WHERE name IN ('log_statement', 'default_transaction_read_only',
      'statement_timeout', 'search_path', 'session_preload_libraries', 'log_min_duration_statement')) x)
)
"""

_TABLES = f"""
SELECT n.nspname, c.relname, array_agg(a.attname ORDER BY a.attnum)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'p', 'm') AND {_USER_NAMESPACES} AND n.nspname NOT LIKE 'pg_temp%%'
GROUP BY 1, 2 ORDER BY 1, 2
"""


def database_fingerprint(admin: psycopg.Connection[Any], shop: Shop) -> dict[str, Any]:
    """Everything a statement could change in the database and the cluster, as plain comparable data.

    Data: per user table, the row count and an md5 over its rows ordered by all columns.
    Roles are limited to the ones this test owns or could abuse (other test runs share the cluster).
    """
    roles = [shop.ro_user, shop.rw_user, "postgres", "pg_read_server_files", "pg_write_server_files",
             "pg_execute_server_program", *CREATED_NAMES]  # fmt: skip
    row = admin.execute(_CATALOG, {"roles": roles, "created": list(CREATED_NAMES)}, prepare=False).fetchone()
    assert row is not None
    result: dict[str, Any] = dict(row[0])
    tables = admin.execute(_TABLES, prepare=False).fetchall()
    parts = []
    for schema, table, columns in tables:
        order = sql.SQL(", ").join(sql.SQL("t.{}::text").format(sql.Identifier(c)) for c in columns)
        parts.append(
            sql.SQL(
                "SELECT {label}, count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY {order}), '')) "
                "FROM {table} t"
            ).format(label=sql.Literal(f"{schema}.{table}"), order=order, table=sql.Identifier(schema, table))
        )
    if parts:
        rows = admin.execute(sql.SQL(" UNION ALL ").join(parts), prepare=False).fetchall()
        result["data"] = {label: (count, digest) for label, count, digest in rows}
    return result


_SESSION = """
SELECT pg_backend_pid(), current_user, session_user,
       current_setting('default_transaction_read_only'), current_setting('transaction_read_only'),
       current_setting('search_path'), current_setting('statement_timeout'), current_setting('role'),
       current_setting('standard_conforming_strings'), current_setting('TimeZone'),
       (SELECT json_agg(x ORDER BY x::text) FROM (SELECT name, statement FROM pg_prepared_statements) x),
       (SELECT json_agg(name ORDER BY name) FROM pg_cursors),
       (SELECT json_agg(c ORDER BY c) FROM pg_listening_channels() c),
       (SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory'),
       (SELECT json_agg(relname ORDER BY relname) FROM pg_class WHERE relnamespace = pg_my_temp_schema())
"""


def session_fingerprint(pipeline: SqlPipeline) -> tuple[Any, ...]:
    """The bastion connection's own state, read on that connection (a test-only look behind the policy):
    who it is, its read-only wall and timeout, prepared statements, cursors, LISTENs, advisory locks, temp
    tables, and that it is idle (not left inside a transaction)."""
    assert pipeline.target is not None
    conn = pipeline.target.conn
    status = conn.info.transaction_status.name
    row = conn.execute(_SESSION, prepare=False).fetchone()
    assert row is not None
    return (status, *row)


def _diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The parts of two fingerprints that differ, as (before, after)."""
    keys = sorted(set(before) | set(after))
    return {k: (before.get(k), after.get(k)) for k in keys if before.get(k) != after.get(k)}


# ---------------------------------------------------------------- helpers


def _verdict(policy: str, text: str) -> tuple[Verdict | None, list[Any]]:
    """The strictest verdict over the statements of text (None when there is none)."""
    decisions = [decide(POLICIES[policy], classify(part)) for part in split_statements(text)]
    if not decisions:
        return None, []
    return max((d.verdict for d in decisions), key=_RANK.__getitem__), decisions


def run_all(pipeline: SqlPipeline, text: str) -> list[StatementResult]:
    """Every statement result the pipeline yields, with every row fetched (streams run to the end)."""
    results = []
    for result in pipeline.run(text):
        while result.more_available and result.more():
            pass
        result.close()
        results.append(result)
    return results


def _describe(results: list[StatementResult]) -> list[tuple[str, str, str, str | None]]:
    return [
        (r.text[:60], r.status, r.decision.classification.sql_class.value, r.error and r.error[:80])
        for r in results
    ]


def _entry_id(entry: Entry) -> str:
    return entry.id


# ---------------------------------------------------------------- (a) classifier and verdicts


@pytest.mark.parametrize("entry", CORPUS, ids=_entry_id)
def test_classifier_and_verdicts(entry: Entry) -> None:
    """readonly blocks every bypass; guarded never allows one (and blocks what the design says it blocks);
    session control, dangerous and unknown statements are blocked even by open; legitimate reads are
    allowed."""
    text = entry.text()
    if entry.empty:
        assert split_statements(text) == []
        assert decide(POLICIES["readonly"], classify(text)).verdict is Verdict.BLOCK
        return
    readonly, decisions = _verdict("readonly", text)
    guarded, _ = _verdict("guarded", text)
    opened, _ = _verdict("open", text)
    shown = [(d.classification.text[:50], d.classification.sql_class.value) for d in decisions]
    if entry.read is not None:
        assert readonly is Verdict.ALLOW and guarded is Verdict.ALLOW, shown
        assert all(d.classification.sql_class is SqlClass.READ for d in decisions), shown
        return
    assert readonly is Verdict.BLOCK, shown
    assert guarded in {Verdict.BLOCK, Verdict.NEEDS_APPROVAL}, shown
    if entry.guarded == "block":
        assert guarded is Verdict.BLOCK, shown
        if entry.category != "dcl":  # the open preset allows privilege changes by design
            assert opened is Verdict.BLOCK, shown


# ---------------------------------------------------------------- (b) + (c) the real pipeline


@pytest.mark.parametrize("entry", CORPUS, ids=_entry_id)
def test_pipeline_stops_it_and_nothing_changes(env: Env, entry: Entry) -> None:
    """Each entry on pg-readonly and pg-guarded: what runs is a read, what is not a read is stopped, and
    the whole fingerprint (database, cluster roles and settings, both bastion sessions, files) is as before."""
    text = entry.text(str(env.files))
    problems = []
    for name, pipeline in env.pipelines.items():
        results = run_all(pipeline, text)
        shown = _describe(results)
        if entry.empty:
            if results:
                problems.append(f"{name}: ran something for an empty input: {shown}")
            continue
        if not results:
            problems.append(f"{name}: nothing was decided")
            continue
        for result in results[:-1]:
            if result.status != "ok" or result.decision.classification.sql_class is not SqlClass.READ:
                problems.append(f"{name}: a statement before the last did not run as a read: {shown}")
        last = results[-1]
        ran_classes = {
            c for r in results if r.status in {"ok", "error"} for c in r.decision.classification.classes
        }
        if ran_classes - {SqlClass.READ}:
            problems.append(f"{name}: something other than a read reached the server: {shown}")
        if entry.read is not None:
            expected = entry.read
            if expected == "privileged":
                expected = "ok" if name == "pg-guarded" else "error"
            if last.status != expected:
                problems.append(f"{name}: a legitimate read should be {expected}: {shown}")
            continue
        stopped = (
            {"blocked"}
            if name == "pg-readonly" or entry.guarded == "block"
            else {"blocked", "needs_approval"}
        )
        server_refused_a_read = last.status == "error" and last.decision.verdict is Verdict.ALLOW
        if last.status not in stopped and not server_refused_a_read:
            problems.append(f"{name}: expected {sorted(stopped)}: {shown}")
        if last.status in {"blocked", "needs_approval"} and (last.rows or last.columns):
            problems.append(f"{name}: a stopped statement returned data")
    after = env.fingerprint()
    changed = _diff(env.last, after)
    env.last = after
    assert not problems, problems
    assert not changed, f"the database or a session changed: {changed}"


def test_whole_corpus_left_everything_unchanged(env: Env) -> None:
    """Against the fingerprint taken before the first entry ran: also catches slow drifts that each single
    comparison would have let through one at a time."""
    after = env.fingerprint()
    assert _diff(env.baseline, after) == {}
    assert sorted(os.listdir(env.files)) == ["in.csv"]
    assert env.baseline["data"]["public.orders"][0] > 0  # the comparison compared real rows


# ---------------------------------------------------------------- the server as the second wall


SMUGGLED = [
    "SELECT 1; DROP TABLE orders",
    "SELECT 1; COMMIT; DROP TABLE orders",
    "COMMIT; DELETE FROM orders",
    "SELECT 1 -- x\n; DELETE FROM orders",
    "SELECT count(*) FROM orders; TRUNCATE orders",
]


@pytest.mark.parametrize("name", CONNECTIONS)
@pytest.mark.parametrize("text", SMUGGLED)
def test_server_refuses_what_a_splitter_would_miss(env: Env, name: str, text: str) -> None:
    """Send multi-command text straight to the target, as if the splitter had missed a `;`: both ways the
    pipeline runs statements (a streamed read, a prepared execution) use the extended protocol, where the
    server refuses more than one command — so nothing after the `;` can run."""
    target = env.pipelines[name].target
    assert target is not None
    for mode in ("stream", "execute"):
        run = target.stream(text)
        with pytest.raises(TargetError) as refused:
            if mode == "stream":
                run.start_stream()
                run.next_batch(10)
            else:
                run.execute()
        run.close()
        assert refused.value.sqlstate == "42601", (mode, str(refused.value))
        assert "multiple commands" in str(refused.value)
    after = env.fingerprint()
    changed = _diff(env.last, after)
    env.last = after
    assert not changed


def test_whole_connection_survives_the_corpus(env: Env) -> None:
    """pg_terminate_backend and friends were blocked: the bastion's connections are the ones it opened."""
    for name, pipeline in env.pipelines.items():
        results = run_all(pipeline, "SELECT count(*) FROM orders")
        assert [r.status for r in results] == ["ok"], name
        assert env.baseline[f"session {name}"][1] == session_fingerprint(pipeline)[1]  # same backend pid


# ---------------------------------------------------------------- found by this corpus (fixed: catalog checks)


def test_attribute_notation_user_function_is_not_a_read(env: Env) -> None:
    """`SELECT o.bump FROM orders o` is `SELECT bump(o) FROM orders o` to PostgreSQL. Written last: when it
    fails it leaves a row in side_effects, which no other test here looks at afterwards."""
    before = env.admin.execute("SELECT count(*) FROM side_effects").fetchone()
    results = run_all(env.pipelines["pg-guarded"], "SELECT o.bump FROM orders o")
    after = env.admin.execute("SELECT count(*) FROM side_effects").fetchone()
    assert before == after, "the user function ran and wrote"
    assert results[-1].status in {"blocked", "needs_approval"}, _describe(results)


SHADOWED = [
    "SELECT lower(1)",
    "SELECT LOWER(id) FROM orders",
    'SELECT "lower"(1)',
    "EXPLAIN ANALYZE SELECT lower(1)",
]


@pytest.mark.parametrize("name", CONNECTIONS)
@pytest.mark.parametrize("text", SHADOWED)
def test_builtin_name_shadowed_on_the_search_path_is_not_a_read(env: Env, name: str, text: str) -> None:
    """`public.lower(int)` exists and writes: `lower(1)` resolves to it, not to pg_catalog.lower(text). The
    classifier alone calls it a read (it cannot see the schema); the pipeline's catalog check must not."""
    assert classify(text).sql_class is SqlClass.READ
    before = env.admin.execute("SELECT count(*) FROM side_effects").fetchone()
    results = run_all(env.pipelines[name], text)
    after = env.admin.execute("SELECT count(*) FROM side_effects").fetchone()
    assert before == after, "the user function ran and wrote"
    expected = {"blocked"} if name == "pg-readonly" else {"blocked", "needs_approval"}
    assert results[-1].status in expected, _describe(results)
    assert "public.lower" in " ".join(results[-1].decision.classification.reasons)


def test_pg_catalog_qualified_builtin_runs_despite_a_shadow(env: Env) -> None:
    """Qualified with pg_catalog, the call is the built-in whatever the search path holds."""
    results = run_all(env.pipelines["pg-readonly"], "SELECT pg_catalog.lower('A')")
    assert [r.status for r in results] == ["ok"], _describe(results)
