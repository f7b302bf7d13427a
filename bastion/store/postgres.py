"""PostgreSQL backend: the state store shared by several bastion hosts.

Every decision-guarding call is one SQL statement whose WHERE clause is the check (``UPDATE … WHERE version =
%s``, ``… WHERE state = 'active' AND expires_at > %s``, ``INSERT … ON CONFLICT``), so PostgreSQL's row locking
makes exactly one concurrent caller win, on any number of hosts.

Every successful write bumps a single-row counter and emits ``NOTIFY bastion_changes`` in the same
transaction. A sequence would be cheaper, but nextval() is visible before the data commits: a poller could see
the new counter, reload the old data, and then never see the counter move again. The row lock also serializes
writers, which is fine at bastion write rates.

The schema (tables ``bastion_*``, in the first schema of the connection's search_path) is created on first use
under a transaction-level advisory lock, so bastion processes starting together do not trip over each other.

Errors never carry the DSN or the password: connection details are reduced to host:port/dbname, the driver's
message is scrubbed, and the driver exception is not chained (psycopg errors can reference the connection,
whose parameters include the password).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import astuple, fields
from typing import Any, TypeVar

import psycopg
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from .base import (
    AlreadyExists,
    Grant,
    OidcBinding,
    Request,
    SessionRecord,
    Store,
    StoreError,
    check_binding_user,
    check_end_status,
    check_limit,
    check_request_changes,
)

__all__ = ["CHANNEL", "PostgresStore"]

CHANNEL = "bastion_changes"  # LISTEN on this for live views; the payload is {"table": …, "counter": …}
_SCHEMA_LOCK = 0x62617374696F6E  # "bastion": key of the advisory lock that serializes schema creation
_T = TypeVar("_T")
_R = TypeVar("_R")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS bastion_bindings (
        user_name text PRIMARY KEY,
        issuer text NOT NULL,
        subject text NOT NULL,
        bound_at double precision NOT NULL,
        expires_at double precision NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS bastion_sessions (
        id text PRIMARY KEY,
        seq bigserial NOT NULL,
        bastion text NOT NULL,
        user_name text NOT NULL,
        key_fingerprint text NOT NULL,
        kind text NOT NULL,
        started_at double precision NOT NULL,
        status text NOT NULL,
        ended_at double precision,
        pid integer,
        host text NOT NULL,
        meta jsonb NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS bastion_sessions_newest ON bastion_sessions (started_at DESC, seq DESC)",
    """CREATE TABLE IF NOT EXISTS bastion_requests (
        id text PRIMARY KEY,
        seq bigserial NOT NULL,
        kind text NOT NULL,
        requester text NOT NULL,
        target text NOT NULL,
        reason text NOT NULL,
        created_at double precision NOT NULL,
        expires_at double precision NOT NULL,
        bastion text NOT NULL,
        state text NOT NULL,
        duration_s double precision,
        statement text,
        statement_sha256 text,
        decisions jsonb NOT NULL,
        version integer NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS bastion_requests_state ON bastion_requests (state, created_at)",
    """CREATE TABLE IF NOT EXISTS bastion_grants (
        id text PRIMARY KEY,
        seq bigserial NOT NULL,
        request_id text NOT NULL,
        user_name text NOT NULL,
        kind text NOT NULL,
        target text NOT NULL,
        granted_at double precision NOT NULL,
        expires_at double precision NOT NULL,
        statement_sha256 text,
        state text NOT NULL,
        used_at double precision)""",
    "CREATE INDEX IF NOT EXISTS bastion_grants_user ON bastion_grants (user_name, granted_at)",
    """CREATE TABLE IF NOT EXISTS bastion_progress (
        key text PRIMARY KEY,
        acked_offset bigint NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS bastion_meta (
        key text PRIMARY KEY,
        value jsonb NOT NULL)""",
    # bastion_counter stays last: its existence is what _ensure_schema takes as "schema complete"
    """CREATE TABLE IF NOT EXISTS bastion_counter (
        id smallint PRIMARY KEY CHECK (id = 1),
        value bigint NOT NULL)""",
    "INSERT INTO bastion_counter (id, value) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
)

_JSON_FIELDS = frozenset({"meta", "decisions"})


def _present(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass('bastion_counter') IS NOT NULL AS present").fetchone()
    return bool(row and row["present"])


def _column(field_name: str) -> str:
    return "user_name" if field_name == "user" else field_name  # "user" is reserved in SQL


def _select(cls: type, table: str) -> sql.Composed:
    """SELECT every field of the record type, aliased back to the field names (for dict_row → cls(**row))."""
    cols = sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(sql.Identifier(_column(f.name)), sql.Identifier(f.name))
        for f in fields(cls)
    )
    return sql.SQL("SELECT {} FROM {}").format(cols, sql.Identifier(table))


def _insert(cls: type, table: str) -> sql.Composed:
    names = [f.name for f in fields(cls)]
    return sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(table),
        sql.SQL(", ").join(sql.Identifier(_column(n)) for n in names),
        sql.SQL(", ").join(sql.Placeholder() * len(names)),
    )


def _values(record: Any) -> list[Any]:
    return [_adapt(f.name, getattr(record, f.name)) for f in fields(record)]


def _adapt(name: str, value: Any) -> Any:
    return Jsonb(value) if name in _JSON_FIELDS else value


class PostgresStore(Store):
    """State in PostgreSQL; one connection per store, reopened after it breaks, guarded for use from threads.

    ``password`` (e.g. read from bastion.state_password_file) overrides any password in the DSN, so the DSN in
    config can stay secret-free.
    """

    def __init__(self, dsn: str, *, password: str | None = None, connect_timeout: float = 10) -> None:
        params: dict[str, Any] | None = None
        with suppress(psycopg.Error):
            params = conninfo_to_dict(dsn)
        if params is None:  # raised here, not in an except block: libpq's message quotes the DSN's fragment
            raise StoreError("invalid PostgreSQL connection string for the state store")
        if password is not None:
            params["password"] = password
        params.setdefault("connect_timeout", str(max(1, round(connect_timeout))))
        params.setdefault("application_name", "bastion")
        self._conninfo = make_conninfo("", **params)
        self._secrets = sorted(
            {s for s in (dsn, params.get("password"), password, self._conninfo) if s}, key=len, reverse=True
        )
        self._where = (
            f"{params.get('host') or 'localhost'}:{params.get('port') or '5432'}/{params.get('dbname') or ''}"
        )
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[Any] | None = None
        self._pid = os.getpid()
        self._forked: list[psycopg.Connection[Any]] = []
        self._listen_conn: psycopg.Connection[Any] | None = None

    def __repr__(self) -> str:
        return f"PostgresStore({self._where})"

    # ------------------------------------------------------------------ plumbing

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return " ".join(text.split())  # one line

    def _connection(self) -> psycopg.Connection[Any]:
        if self._pid != os.getpid():
            # A connection inherited through fork() belongs to the parent: closing it here would end the
            # parent's session, so keep it referenced (never finalized) and open our own.
            if self._conn is not None:
                self._forked.append(self._conn)
            self._conn, self._pid = None, os.getpid()
        if self._conn is not None and (self._conn.closed or self._conn.broken):
            self._conn = None
        if self._conn is None:
            conn = psycopg.connect(self._conninfo, autocommit=True, row_factory=dict_row)
            try:
                self._ensure_schema(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    @staticmethod
    def _ensure_schema(conn: psycopg.Connection[Any]) -> None:
        """Create the tables once, then never again.

        The DDL is one transaction that creates bastion_counter last, so its presence means the whole schema
        is there: later logins skip the lock and the DDL (CREATE INDEX IF NOT EXISTS would still take a table
        lock that briefly stalls writers).
        """
        if _present(conn):
            return
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for statement in _SCHEMA:
                conn.execute(statement)

    def _run(self, what: str, fn: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """Run fn on the connection; driver errors become StoreErrors without DSN, password or cause."""
        with self._lock:
            failure: StoreError
            try:
                return fn(self._connection())
            except StoreError:
                raise
            except psycopg.OperationalError as e:
                if self._conn is not None and (self._conn.closed or self._conn.broken):
                    self._conn = None
                failure = StoreError(
                    f"PostgreSQL state store {self._where}: {what} failed: {self._scrub(str(e))}"
                )
            except psycopg.Error as e:
                failure = StoreError(
                    f"PostgreSQL state store {self._where}: {what} failed "
                    f"({type(e).__name__}): {self._scrub(str(e))}"
                )
        raise failure  # outside the except block: no __context__ pointing at the driver error

    def _write(self, what: str, table: str, fn: Callable[[psycopg.Cursor[Any]], tuple[_T, bool]]) -> _T:
        """One transaction: fn returns (result, changed); a change also bumps the counter and notifies."""

        def txn(conn: psycopg.Connection[Any]) -> _T:
            with conn.transaction(), conn.cursor() as cur:
                result, changed = fn(cur)
                if changed:
                    cur.execute(
                        "WITH c AS (UPDATE bastion_counter SET value = value + 1 WHERE id = 1"
                        " RETURNING value)"
                        " SELECT pg_notify(%s, json_build_object('table', %s::text, 'counter', c.value)"
                        "::text) FROM c",
                        (CHANNEL, table),
                    )
                return result

        return self._run(what, txn)

    def _fetch(self, what: str, query: sql.Composable, params: Sequence[Any], cls: type[_R]) -> list[_R]:
        def read(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
            return conn.execute(query, params).fetchall()

        return [cls(**row) for row in self._run(what, read)]

    def _insert_new(self, what: str, table: str, record: Any) -> None:
        def insert(cur: psycopg.Cursor[Any]) -> tuple[bool, bool]:
            try:
                with cur.connection.transaction():  # savepoint: the violation must not poison the outer txn
                    cur.execute(_insert(type(record), f"bastion_{table}"), _values(record))
            except errors.UniqueViolation:
                return False, False
            return True, True

        if not self._write(f"adding a {what}", table, insert):
            raise AlreadyExists(f"{what} {record.id!r} already exists")

    # ------------------------------------------------------------------ OIDC bindings

    def get_binding(self, user: str) -> OidcBinding | None:
        rows = self._fetch(
            "reading a binding",
            _select(OidcBinding, "bastion_bindings") + sql.SQL(" WHERE user_name = %s"),
            (user,),
            OidcBinding,
        )
        return rows[0] if rows else None

    def put_binding(self, binding: OidcBinding) -> None:
        def put(cur: psycopg.Cursor[Any]) -> tuple[None, bool]:
            cur.execute(
                "INSERT INTO bastion_bindings (user_name, issuer, subject, bound_at, expires_at) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (user_name) DO UPDATE SET issuer = EXCLUDED.issuer, "
                "subject = EXCLUDED.subject, bound_at = EXCLUDED.bound_at, expires_at = EXCLUDED.expires_at",
                (binding.user, binding.issuer, binding.subject, binding.bound_at, binding.expires_at),
            )
            return None, True

        self._write("storing a binding", "bindings", put)

    def replace_binding(self, expected: OidcBinding | None, new: OidcBinding) -> bool:
        values = (new.issuer, new.subject, new.bound_at, new.expires_at)

        def replace(cur: psycopg.Cursor[Any]) -> tuple[bool, bool]:
            if expected is None:
                cur.execute(
                    "INSERT INTO bastion_bindings (user_name, issuer, subject, bound_at, expires_at) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (user_name) DO NOTHING",
                    (new.user, *values),
                )
            else:
                cur.execute(
                    "UPDATE bastion_bindings SET issuer = %s, subject = %s, bound_at = %s, expires_at = %s"
                    " WHERE user_name = %s AND issuer = %s AND subject = %s AND bound_at = %s"
                    " AND expires_at = %s",
                    (*values, *astuple(expected)),
                )
            done = cur.rowcount == 1
            return done, done

        check_binding_user(expected, new)
        return self._write("storing a binding", "bindings", replace)

    def delete_binding(self, user: str) -> None:
        def delete(cur: psycopg.Cursor[Any]) -> tuple[None, bool]:
            cur.execute("DELETE FROM bastion_bindings WHERE user_name = %s", (user,))
            return None, cur.rowcount > 0

        self._write("deleting a binding", "bindings", delete)

    # ------------------------------------------------------------------ sessions

    def add_session(self, record: SessionRecord) -> None:
        self._insert_new("session", "sessions", record)

    def get_session(self, session_id: str) -> SessionRecord | None:
        rows = self._fetch(
            "reading a session",
            _select(SessionRecord, "bastion_sessions") + sql.SQL(" WHERE id = %s"),
            (session_id,),
            SessionRecord,
        )
        return rows[0] if rows else None

    def end_session(self, session_id: str, status: str, ended_at: float) -> bool:
        check_end_status(status)

        def end(cur: psycopg.Cursor[Any]) -> tuple[bool, bool]:
            cur.execute(
                "UPDATE bastion_sessions SET status = %s, ended_at = %s WHERE id = %s AND status = 'running'",
                (status, ended_at, session_id),
            )
            return cur.rowcount == 1, cur.rowcount == 1

        return self._write("ending a session", "sessions", end)

    def list_sessions(
        self, *, user: str | None = None, status: str | None = None, limit: int | None = None
    ) -> list[SessionRecord]:
        check_limit(limit)
        query = _select(SessionRecord, "bastion_sessions") + sql.SQL(
            " WHERE (%s::text IS NULL OR user_name = %s) AND (%s::text IS NULL OR status = %s)"
            " ORDER BY started_at DESC, seq DESC LIMIT %s"
        )
        return self._fetch("listing sessions", query, (user, user, status, status, limit), SessionRecord)

    # ------------------------------------------------------------------ requests

    def add_request(self, request: Request) -> None:
        self._insert_new("request", "requests", request)

    def get_request(self, request_id: str) -> Request | None:
        rows = self._fetch(
            "reading a request",
            _select(Request, "bastion_requests") + sql.SQL(" WHERE id = %s"),
            (request_id,),
            Request,
        )
        return rows[0] if rows else None

    def list_requests(self, *, state: str | None = None, requester: str | None = None) -> list[Request]:
        query = _select(Request, "bastion_requests") + sql.SQL(
            " WHERE (%s::text IS NULL OR state = %s) AND (%s::text IS NULL OR requester = %s)"
            " ORDER BY created_at, seq"
        )
        return self._fetch("listing requests", query, (state, state, requester, requester), Request)

    def update_request(self, request_id: str, expected_version: int, **changes: Any) -> Request | None:
        check_request_changes(changes)
        sets = [sql.SQL("version = version + 1")] + [
            sql.SQL("{} = %s").format(sql.Identifier(_column(name))) for name in changes
        ]
        returning = sql.SQL(", ").join(
            sql.SQL("{} AS {}").format(sql.Identifier(_column(f.name)), sql.Identifier(f.name))
            for f in fields(Request)
        )
        query = sql.SQL("UPDATE bastion_requests SET {} WHERE id = %s AND version = %s RETURNING {}").format(
            sql.SQL(", ").join(sets), returning
        )
        params = [_adapt(name, value) for name, value in changes.items()] + [request_id, expected_version]

        def update(cur: psycopg.Cursor[Any]) -> tuple[Request | None, bool]:
            cur.execute(query, params)
            row = cur.fetchone()
            return (Request(**row), True) if row else (None, False)

        return self._write("updating a request", "requests", update)

    # ------------------------------------------------------------------ grants

    def add_grant(self, grant: Grant) -> None:
        self._insert_new("grant", "grants", grant)

    def get_grant(self, grant_id: str) -> Grant | None:
        rows = self._fetch(
            "reading a grant",
            _select(Grant, "bastion_grants") + sql.SQL(" WHERE id = %s"),
            (grant_id,),
            Grant,
        )
        return rows[0] if rows else None

    def list_grants(self, user: str | None, *, active_at: float | None = None) -> list[Grant]:
        query = _select(Grant, "bastion_grants") + sql.SQL(
            " WHERE (%s::text IS NULL OR user_name = %s)"
            " AND (%s::double precision IS NULL OR (state = 'active' AND expires_at > %s))"
            " ORDER BY granted_at, seq"
        )
        return self._fetch("listing grants", query, (user, user, active_at, active_at), Grant)

    def revoke_grant(self, grant_id: str, now: float) -> bool:
        def revoke(cur: psycopg.Cursor[Any]) -> tuple[bool, bool]:
            cur.execute(
                "UPDATE bastion_grants SET state = 'revoked' "
                "WHERE id = %s AND state = 'active' AND expires_at > %s",
                (grant_id, now),
            )
            return cur.rowcount == 1, cur.rowcount == 1

        return self._write("revoking a grant", "grants", revoke)

    def use_grant(self, grant_id: str, now: float) -> bool:
        def use(cur: psycopg.Cursor[Any]) -> tuple[bool, bool]:
            cur.execute(
                "UPDATE bastion_grants SET state = 'used', used_at = %s "
                "WHERE id = %s AND kind = 'statement' AND state = 'active' AND expires_at > %s",
                (now, grant_id, now),
            )
            return cur.rowcount == 1, cur.rowcount == 1

        return self._write("using a grant", "grants", use)

    # ------------------------------------------------------------------ shipping progress

    def get_progress(self, key: str) -> int | None:
        def read(conn: psycopg.Connection[Any]) -> int | None:
            row = conn.execute("SELECT acked_offset FROM bastion_progress WHERE key = %s", (key,)).fetchone()
            return None if row is None else int(row["acked_offset"])

        return self._run("reading progress", read)

    def set_progress(self, key: str, offset: int) -> int:
        def advance(cur: psycopg.Cursor[Any]) -> tuple[int, bool]:
            # ON CONFLICT locks the existing row even when the WHERE refuses the update, so the SELECT below
            # reads the value that won.
            cur.execute(
                "INSERT INTO bastion_progress (key, acked_offset) VALUES (%s, %s)"
                " ON CONFLICT (key) DO UPDATE SET acked_offset = EXCLUDED.acked_offset"
                " WHERE bastion_progress.acked_offset < EXCLUDED.acked_offset RETURNING acked_offset",
                (key, offset),
            )
            row = cur.fetchone()
            if row is not None:
                return int(row["acked_offset"]), True
            cur.execute("SELECT acked_offset FROM bastion_progress WHERE key = %s", (key,))
            current = cur.fetchone()
            assert current is not None
            return int(current["acked_offset"]), False

        return self._write("recording progress", "progress", advance)

    def delete_progress(self, prefix: str) -> int:
        if not prefix:
            raise ValueError("delete_progress needs a non-empty prefix")

        def delete(cur: psycopg.Cursor[Any]) -> tuple[int, bool]:
            # left() rather than LIKE: a prefix is literal, "%" and "_" in it are not wildcards
            cur.execute("DELETE FROM bastion_progress WHERE left(key, %s) = %s", (len(prefix), prefix))
            return cur.rowcount, cur.rowcount > 0

        return self._write("forgetting progress", "progress", delete)

    # ------------------------------------------------------------------ metadata

    def get_meta(self, key: str) -> Any:
        def read(conn: psycopg.Connection[Any]) -> Any:
            row = conn.execute("SELECT value FROM bastion_meta WHERE key = %s", (key,)).fetchone()
            return None if row is None else row["value"]

        return self._run("reading metadata", read)

    def cas_meta(self, key: str, expected: Any, new: Any) -> bool:
        def cas(cur: psycopg.Cursor[Any]) -> tuple[bool, bool]:
            if expected is None and new is None:
                cur.execute("SELECT 1 FROM bastion_meta WHERE key = %s", (key,))
                return cur.fetchone() is None, False
            if expected is None:
                cur.execute(
                    "INSERT INTO bastion_meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
                    (key, Jsonb(new)),
                )
            elif new is None:
                cur.execute("DELETE FROM bastion_meta WHERE key = %s AND value = %s", (key, Jsonb(expected)))
            else:
                cur.execute(
                    "UPDATE bastion_meta SET value = %s WHERE key = %s AND value = %s",
                    (Jsonb(new), key, Jsonb(expected)),
                )
            return cur.rowcount == 1, cur.rowcount == 1

        return self._write("setting metadata", "meta", cas)

    # ------------------------------------------------------------------ change feed

    def change_counter(self) -> int:
        def read(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute("SELECT value FROM bastion_counter WHERE id = 1").fetchone()
            return 0 if row is None else int(row["value"])

        return self._run("reading the change counter", read)

    def wait_for_change(self, seen: int, timeout: float) -> int:
        """LISTEN on the change channel with a connection of its own (the main one stays free), so a request
        made on another bastion host shows up at once rather than at the next poll."""
        counter = self.change_counter()
        if counter != seen:
            return counter
        try:
            listener = self._listener()
            for _ in listener.notifies(timeout=timeout, stop_after=1):
                break
        except psycopg.Error:
            self._drop_listener()
            time.sleep(min(timeout, 1.0))  # degrade to polling; the next call reconnects
        return self.change_counter()

    def _listener(self) -> psycopg.Connection[Any]:
        with self._lock:
            listener = self._listen_conn
            if listener is None or listener.closed or listener.broken or self._pid != os.getpid():
                listener = psycopg.connect(self._conninfo, autocommit=True)
                listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                self._listen_conn = listener
            return listener

    def _drop_listener(self) -> None:
        with self._lock:
            listener, self._listen_conn = self._listen_conn, None
            if listener is not None:
                with suppress(psycopg.Error):
                    listener.close()

    def close(self) -> None:
        self._drop_listener()
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
