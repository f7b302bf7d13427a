"""A PostgreSQL target, opened with credentials only the bastion holds.

The password comes from the connection's secret file and goes to libpq as a keyword argument: never into a
DSN string that could be logged, an error, or any process's arguments. `application_name` names the bastion
user and session so DBAs see who is behind a connection; `statement_timeout` comes from the policy, and a
policy that can never allow a write also gets `default_transaction_read_only` as a second wall.

Every statement goes through the extended query protocol (`stream()` for results, a prepared execution
otherwise), which runs exactly one command: whatever a parser missed behind a `;`, the server refuses.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

import psycopg
from psycopg import pq

from bastion.config import ConfigError, Connection, read_secret

STREAM_CHUNK = 1000


class TargetError(Exception):
    """A failure talking to the target; the message is one line and carries no secret."""

    def __init__(self, message: str, *, sqlstate: str | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.detail = detail


@dataclass(frozen=True)
class ResultColumn:
    """One result column as the server describes it, with its origin (0 when it is not a plain column)."""

    name: str
    type_oid: int
    type_name: str
    table_oid: int
    table_column: int
    type_modifier: int = -1  # e.g. numeric(p, s); -1 when none


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


# PostgreSQL's own startup refusals (src/backend/libpq/auth.c, postinit.c) by SQLSTATE. libpq keeps no
# SQLSTATE for a failed connection, only the text, so the server's fixed English forms stand in for it.
_STARTUP_REFUSALS = (
    ("3D000", re.compile(r'FATAL:\s+database "[^\n]*" does not exist')),
    ("28P01", re.compile(r"FATAL:\s+password authentication failed")),
    (
        "28000",
        re.compile(r'FATAL:\s+(role "[^\n]*" (does not exist|is not permitted to log in)|no pg_hba\.conf)'),
    ),
    ("28000", re.compile(r"FATAL:\s+\w+ authentication failed")),
)
_CONNECT_REASONS = {
    "28": "authentication failed",
    "3D": "database does not exist",
    "08": "server unreachable",
}


def connect_failure(exc: psycopg.Error) -> str:
    """Why a connection attempt failed, as one of a few fixed phrases. The driver's text names the host,
    port, database and role: it is classified, never shown."""
    sqlstate = exc.sqlstate
    pgconn = exc.pgconn
    if sqlstate is None and pgconn is not None:
        if pgconn.needs_password or pgconn.used_password:
            sqlstate = "28000"  # the server asked for a password and then closed: it was refused
        text = pgconn.error_message.decode("utf-8", "replace")
        for state, pattern in _STARTUP_REFUSALS:
            if pattern.search(text):
                sqlstate = state
                break
        else:
            if sqlstate is None and "FATAL:" not in text:
                sqlstate = "08001"  # no answer from a server: refused, timed out, bad TLS, unresolvable
    if sqlstate is None:
        return "server unreachable" if pgconn is None else "refused by the server"
    return _CONNECT_REASONS.get(sqlstate[:2], "refused by the server")


class PostgresTarget:
    """One connection to one PostgreSQL target for one bastion session."""

    def __init__(
        self,
        connection: Connection,
        *,
        user: str,
        session_id: str,
        statement_timeout_s: float,
        read_only: bool,
    ) -> None:
        self.connection = connection
        self.user = user
        self.session_id = session_id
        self.statement_timeout_s = statement_timeout_s
        self.read_only = read_only
        self._conn: psycopg.Connection[Any] | None = None
        self._secret: str | None = None
        self._lock = threading.Lock()

    # -- lifecycle

    def connect(self, timeout_s: float = 10) -> None:
        conn = self.connection
        try:
            self._secret = read_secret(conn.password_file) if conn.password_file else None
        except (ConfigError, OSError):
            raise TargetError(f"cannot connect to {conn.name}: its password file cannot be read") from None
        options = [f"-c statement_timeout={int(self.statement_timeout_s * 1000)}"]
        if self.read_only:
            options.append("-c default_transaction_read_only=on")
        options.append("-c standard_conforming_strings=on")
        try:
            self._conn = psycopg.connect(
                host=conn.host,
                port=conn.port,
                dbname=conn.database,
                user=conn.user,
                password=self._secret,
                sslmode=conn.sslmode,
                application_name=f"bastion:{self.user}:{self.session_id}"[:63],
                connect_timeout=max(1, int(timeout_s)),
                options=" ".join(options),
                autocommit=True,
            )
        except psycopg.Error as exc:
            raise TargetError(f"cannot connect to {conn.name}: {connect_failure(exc)}") from None

    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            raise TargetError(f"not connected to {self.connection.name}")
        return self._conn

    @property
    def lost(self) -> bool:
        """The connection is gone (closed, or broken under a statement): nothing more can run on it."""
        return self._conn is None or self._conn.closed or self._conn.broken

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()

    def cancel(self) -> None:
        """Ask the server to cancel the running statement (safe to call from another thread)."""
        if self._conn is not None and not self._conn.closed:
            with contextlib.suppress(psycopg.Error):
                self._conn.cancel_safe(timeout=5)

    def scrub(self, message: str) -> str:
        """One line, with the password removed if a driver message ever echoed it."""
        text = _one_line(message)
        if self._secret:
            text = text.replace(self._secret, "***")
        return text

    # -- running one statement

    def stream(self, statement: str, chunk: int = STREAM_CHUNK) -> StatementRun:
        """Run one statement; iterate the returned object for row batches (bounded memory)."""
        return StatementRun(self, statement, chunk)

    def error(self, exc: psycopg.Error) -> TargetError:
        diag = getattr(exc, "diag", None)
        primary = diag.message_primary if diag is not None and diag.message_primary else str(exc)
        detail = diag.message_detail if diag is not None else None
        sqlstate = diag.sqlstate if diag is not None else None
        return TargetError(
            self.scrub(primary), sqlstate=sqlstate, detail=self.scrub(detail) if detail else None
        )

    def reset_if_needed(self) -> None:
        """Each statement runs on its own: never leave the session inside a transaction."""
        conn = self.conn
        if conn.info.transaction_status != pq.TransactionStatus.IDLE:
            try:
                conn.rollback()
            except psycopg.Error:
                conn.close()


class StatementRun:
    """A statement in flight: `columns` once known, batches of rows by iteration, `rowcount` at the end."""

    def __init__(self, target: PostgresTarget, statement: str, chunk: int) -> None:
        self.target = target
        self.statement = statement
        self.chunk = chunk
        self.columns: list[ResultColumn] | None = None
        self.rowcount = -1
        self.status = ""
        self._cursor = target.conn.cursor()
        self._stream: Iterator[tuple[Any, ...]] | None = None

    def _describe(self) -> None:
        cur = self._cursor
        if cur.description is None:
            self.columns = None
            return
        result = cur.pgresult
        self.columns = [
            ResultColumn(
                name=col.name,
                type_oid=col.type_code,
                type_name=_type_name(self.target.conn, col.type_code),
                table_oid=result.ftable(i) if result is not None else 0,
                table_column=result.ftablecol(i) if result is not None else 0,
                type_modifier=result.fmod(i) if result is not None else -1,
            )
            for i, col in enumerate(cur.description)
        ]

    def start_stream(self) -> None:
        """For statements that return rows: rows arrive in chunks through the extended protocol."""
        try:
            self._stream = self._cursor.stream(self.statement, size=self.chunk)
        except psycopg.Error as exc:
            raise self.target.error(exc) from None

    def next_batch(self, limit: int) -> list[tuple[Any, ...]]:
        """Up to `limit` rows; [] at the end. Raises TargetError on a server error (incl. cancellation)."""
        if self._stream is None:
            return []
        try:
            rows = list(islice(self._stream, limit))
        except psycopg.ProgrammingError as exc:
            self._stream = None
            if "didn't produce a result" in str(exc):  # the statement ran but returns no rows
                self.status = self._cursor.statusmessage or ""
                self.rowcount = self._cursor.rowcount
                return []
            raise self.target.error(exc) from None
        except psycopg.Error as exc:
            self._stream = None
            raise self.target.error(exc) from None
        if self.columns is None and rows:
            self._describe()
        if len(rows) < limit:
            self._finish_stream()
        return rows

    def _finish_stream(self) -> None:
        if self.columns is None:
            self._describe()
        self._stream = None
        self.status = self._cursor.statusmessage or ""
        self.rowcount = self._cursor.rowcount

    def execute(self) -> None:
        """For statements that return no rows: one prepared execution (extended protocol)."""
        try:
            self._cursor.execute(self.statement, prepare=True)
        except psycopg.Error as exc:
            raise self.target.error(exc) from None
        self.status = self._cursor.statusmessage or ""
        self.rowcount = self._cursor.rowcount
        self._describe()

    def fetch_executed(self, limit: int) -> list[tuple[Any, ...]]:
        """Rows of an executed statement that returned some after all (RETURNING the parser did not see)."""
        if self._cursor.description is None:
            return []
        return self._cursor.fetchmany(limit)

    @property
    def streaming(self) -> bool:
        return self._stream is not None

    def close(self) -> None:
        """Stop early: cancels the rest on the server and leaves the connection idle."""
        if self._stream is not None:
            stream, self._stream = self._stream, None
            with contextlib.suppress(psycopg.Error):
                stream.close()  # type: ignore[attr-defined]
        with contextlib.suppress(psycopg.Error):
            self._cursor.close()
        with contextlib.suppress(TargetError):
            self.target.reset_if_needed()


_TYPE_NAMES: dict[int, str] = {}


def _type_name(conn: psycopg.Connection[Any], oid: int) -> str:
    if oid not in _TYPE_NAMES:
        info = conn.adapters.types.get(oid)
        _TYPE_NAMES[oid] = info.name if info is not None else str(oid)
    return _TYPE_NAMES[oid]
