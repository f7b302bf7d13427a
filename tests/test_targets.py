"""Target connections on the real PostgreSQL: what the server sees of a bastion session (application_name,
statement_timeout from the policy, read-only by default for readonly policies), and what a failed connection
tells the user and the audit log (a fixed phrase: never the host, port, role or database)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bastion.config import Config, load_config
from bastion.session import Session
from bastion.sql_pipeline import PipelineError, SqlPipeline
from bastion.targets.postgres import PostgresTarget, TargetError
from tests.shopdb import Shop, open_session, shop_config


def _config(
    directory: Path, shop: Shop, *, edits: tuple[tuple[str, str], ...] = (), extra: str = ""
) -> Config:
    """The shop config, with text edits applied to the file (first occurrence: the pg-readonly block)."""
    config = shop_config(directory, shop, extra=extra)
    text = config.path.read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    config.path.write_text(text)
    return load_config(config.path)


def _events(config: Config, type_: str) -> list[dict[str, Any]]:
    lines = Path(config.audit.log).read_text().splitlines()
    return [record["payload"] for record in map(json.loads, lines) if record["type"] == type_]


@pytest.fixture
def opened(shop: Shop, tmp_path: Path) -> Iterator[tuple[Session, SqlPipeline]]:
    session = open_session(_config(tmp_path, shop, extra=QUICK_POLICY, edits=(READONLY_TO_QUICK,)))
    pipeline = SqlPipeline(session, "pg-readonly")
    pipeline.open()
    try:
        yield session, pipeline
    finally:
        pipeline.close()
        session.end()


QUICK_POLICY = '\n[[policies]]\nname = "quick"\npreset = "readonly"\nstatement_timeout = "1s"\n'
READONLY_TO_QUICK = ('policy = "readonly"', 'policy = "quick"')


# ---------------------------------------------------------------- what the server sees


def test_application_name_names_the_bastion_user_and_session(
    shop: Shop, opened: tuple[Session, SqlPipeline]
) -> None:
    session, pipeline = opened
    assert pipeline.target is not None
    pid = pipeline.target.conn.info.backend_pid
    with shop.admin() as admin:
        row = admin.execute(
            "SELECT application_name, usename FROM pg_stat_activity WHERE pid = %s", [pid]
        ).fetchone()
    assert row is not None
    assert row[0] == f"bastion:alice:{session.id}"[:63]
    assert session.id in row[0]  # the whole id fits: DBAs can find the session in the audit log
    assert row[1] == shop.ro_user


def test_statement_timeout_comes_from_the_policy(opened: tuple[Session, SqlPipeline]) -> None:
    """The policy says 1s: the server itself cancels a 5 s sleep after about a second."""
    _, pipeline = opened
    assert pipeline.target is not None
    assert pipeline.target.conn.execute("SHOW statement_timeout").fetchone() == ("1s",)
    started = time.monotonic()
    result = list(pipeline.run("SELECT pg_sleep(5)"))[-1]
    elapsed = time.monotonic() - started
    assert result.decision.verdict.value == "allow"
    assert result.status == "cancelled", (result.status, result.error)
    assert "statement timeout" in (result.error or "")
    assert 0.9 < elapsed < 4


def test_readonly_policy_makes_the_session_read_only_on_the_server(
    opened: tuple[Session, SqlPipeline],
) -> None:
    """The second wall: on the session's own connection, a write the classifier never saw is refused by
    the server (a temp table: the role may create one, so only read-only mode stops it)."""
    _, pipeline = opened
    assert pipeline.target is not None and pipeline.target.read_only
    conn = pipeline.target.conn
    assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("CREATE TEMP TABLE smuggled (x int)")


def test_a_policy_that_may_write_is_not_read_only(shop: Shop, tmp_path: Path) -> None:
    session = open_session(_config(tmp_path, shop))
    pipeline = SqlPipeline(session, "pg-guarded")
    pipeline.open()
    try:
        assert pipeline.target is not None and not pipeline.target.read_only
        assert pipeline.target.conn.execute("SHOW default_transaction_read_only").fetchone() == ("off",)
    finally:
        pipeline.close()
        session.end()


# ---------------------------------------------------------------- failed connections


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def nologin_role(shop: Shop) -> Iterator[str]:
    name = f"{shop.ro_user}_nologin"
    with shop.admin() as admin:
        admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with shop.admin() as admin:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def _failures(shop: Shop, nologin: str) -> list[tuple[str, dict[str, Any], str]]:
    """(id, connection field changes, the phrase the user must see)."""
    return [
        ("no-such-role", {"user": f"{shop.ro_user}_ghost"}, "authentication failed"),
        ("role-may-not-log-in", {"user": nologin}, "authentication failed"),
        ("no-such-database", {"database": f"{shop.dbname}_gone"}, "database does not exist"),
        ("closed-port", {"port": _free_port()}, "server unreachable"),
    ]


def _forbidden(shop: Shop, conn: Any) -> list[str]:
    """What a failure message must not name: the host, port, role and database (as configured)."""
    return [shop.host, str(conn.port), conn.user, str(conn.database)]


def test_connect_failures_are_classified_without_echoing_the_driver(
    shop: Shop, tmp_path: Path, nologin_role: str
) -> None:
    config = _config(tmp_path, shop)
    base = config.connections["pg-readonly"]
    for ident, changes, phrase in _failures(shop, nologin_role):
        conn = replace(base, **changes)
        target = PostgresTarget(conn, user="alice", session_id="s1", statement_timeout_s=5, read_only=True)
        with pytest.raises(TargetError) as caught:
            target.connect(timeout_s=3)
        message = str(caught.value)
        assert message == f"cannot connect to pg-readonly: {phrase}", ident
        for word in _forbidden(shop, conn):
            assert word not in message, (ident, word)


def test_connect_failures_reach_user_and_audit_as_the_phrase_only(
    shop: Shop, tmp_path: Path, nologin_role: str
) -> None:
    """Through the pipeline: the PipelineError and the `sql_connect_failed` event name none of the host,
    port, role or database. (The test server trusts 127.0.0.1, so a wrong password is not refused there:
    the refused-login cases use a role that does not exist and one that may not log in.)"""
    for n, (ident, changes, phrase) in enumerate(_failures(shop, nologin_role)):
        directory = tmp_path / str(n)
        written = {"user": shop.ro_user, "database": shop.dbname}
        edits = tuple(
            (f"port = {shop.port}", f"port = {value}")
            if key == "port"
            else (f'{key} = "{written[key]}"', f'{key} = "{value}"')
            for key, value in changes.items()
        )
        config = _config(directory, shop, edits=edits)
        (directory / "secrets" / "pg.password").write_text("a-wrong-password\n")
        conn = config.connections["pg-readonly"]
        session = open_session(config)
        try:
            with pytest.raises(PipelineError) as caught:
                SqlPipeline(session, "pg-readonly").open()
        finally:
            session.end()
        message = str(caught.value)
        assert message == f"cannot connect to pg-readonly: {phrase}", ident
        events = _events(config, "sql_connect_failed")
        assert [e["error"] for e in events] == [message], ident
        shown = message + json.dumps(events)
        for word in [*_forbidden(shop, conn), "a-wrong-password"]:
            assert word not in shown, (ident, word)
