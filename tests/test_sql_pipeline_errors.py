"""Failures on the pipeline's public paths (open, run) on the real PostgreSQL: each is a PipelineError with
one clean line and an audit event — never a driver exception, a traceback, or text naming the DSN."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bastion import sql_pipeline
from bastion.config import Config
from bastion.session import Session
from bastion.sql_pipeline import PipelineError, SqlPipeline
from tests.shopdb import Shop, open_session, shop_config


def _records(config: Config) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(config.audit.log).read_text().splitlines()]


def _clean(text: str, shop: Shop) -> None:
    """One line, naming none of the DSN's parts."""
    assert "\n" not in text and text.strip() == text and text
    for word in (shop.host, str(shop.port), shop.ro_user, shop.dbname, "Traceback"):
        assert word not in text, word


@pytest.fixture
def config(shop: Shop, tmp_path: Path) -> Config:
    return shop_config(tmp_path, shop)


@pytest.fixture
def session(config: Config) -> Iterator[Session]:
    session = open_session(config)
    yield session
    session.end()


def _terminate(shop: Shop, pid: int) -> None:
    """pg_terminate_backend from an admin connection, and wait until the backend is gone."""
    with shop.admin() as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone() == (True,)
        deadline = time.monotonic() + 10
        while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
            assert time.monotonic() < deadline, "the backend did not exit"
            time.sleep(0.02)


@pytest.mark.parametrize("catalog_due", [False, True], ids=["catalog-cached", "catalog-refresh-due"])
def test_backend_terminated_between_statements(
    shop: Shop, config: Config, session: Session, monkeypatch: pytest.MonkeyPatch, catalog_due: bool
) -> None:
    """The DBA kills the session's backend between two statements: the next statement is a PipelineError
    (whether the dead connection is first touched by the catalog refresh or by the statement), audited;
    later statements say the connection is not open, and opening again works."""
    if catalog_due:
        monkeypatch.setattr(sql_pipeline, "CATALOG_TTL_S", 0.0)
    pipeline = SqlPipeline(session, "pg-readonly")
    pipeline.open()
    try:
        assert [r.status for r in pipeline.run("SELECT id FROM orders")] == ["ok"]
        assert pipeline.target is not None
        _terminate(shop, pipeline.target.conn.info.backend_pid)
        before = len(_records(config))
        with pytest.raises(PipelineError) as caught:
            list(pipeline.run("SELECT id, status FROM orders"))
        assert str(caught.value) == "lost the connection to pg-readonly; open it again"
        _clean(str(caught.value), shop)
        written = _records(config)[before:]
        failed = [r["payload"] for r in written if r["type"] == "sql_failed"]
        assert [f["error"] for f in failed] == [str(caught.value)]
        for record in written:
            if record["type"] in ("sql_failed", "sql_outcome"):
                _clean(json.dumps(record["payload"]), shop)
        if not catalog_due:  # the verdict was recorded: so is the statement's outcome
            outcomes = [r["payload"] for r in written if r["type"] == "sql_outcome"]
            assert [(o["status"], o["error"]) for o in outcomes] == [("error", str(caught.value))]
        with pytest.raises(PipelineError, match="not open"):
            list(pipeline.run("SELECT 1"))
        pipeline.open()
        assert [r.status for r in pipeline.run("SELECT id FROM orders")] == ["ok"]
    finally:
        pipeline.close()


@pytest.mark.parametrize("problem", ["removed", "chmod-644"])
def test_password_file_problem_is_a_pipeline_error_on_open(
    shop: Shop, config: Config, session: Session, problem: str
) -> None:
    """The secret file deleted or opened to others after startup: open() fails with one clean line (no
    path, no secret) and an audit event, not a ConfigError."""
    password_file = config.connections["pg-readonly"].password_file
    assert password_file is not None
    if problem == "removed":
        password_file.unlink()
    else:
        password_file.chmod(0o644)
    with pytest.raises(PipelineError) as caught:
        SqlPipeline(session, "pg-readonly").open()
    message = str(caught.value)
    assert message == "cannot connect to pg-readonly: its password file cannot be read"
    _clean(message, shop)
    assert str(password_file) not in message
    events = [r["payload"] for r in _records(config) if r["type"] == "sql_connect_failed"]
    assert [e["error"] for e in events] == [message]


def test_masking_key_removed_is_a_pipeline_error(shop: Shop, config: Config, session: Session) -> None:
    assert config.masking.hmac_key_file is not None
    config.masking.hmac_key_file.unlink()
    with pytest.raises(PipelineError) as caught:
        SqlPipeline(session, "pg-readonly")
    assert str(caught.value) == "pg-readonly: the masking key cannot be read"
    events = [r["payload"] for r in _records(config) if r["type"] == "sql_connect_failed"]
    assert [e["error"] for e in events] == [str(caught.value)]


def test_catalog_that_cannot_be_read_is_a_pipeline_error_on_open(
    shop: Shop, config: Config, session: Session
) -> None:
    """The backend is killed between connect and the catalog load (the psycopg.Error of load_catalog
    used to escape open()): a PipelineError, audited, no driver text."""
    pipeline = SqlPipeline(session, "pg-readonly")
    original = pipeline._refresh_catalog

    def killed_first(*, force: bool = False) -> Any:
        assert pipeline.target is not None
        _terminate(shop, pipeline.target.conn.info.backend_pid)
        return original(force=force)

    pipeline._refresh_catalog = killed_first  # type: ignore[method-assign]
    with pytest.raises(PipelineError) as caught:
        pipeline.open()
    assert str(caught.value) == "lost the connection to pg-readonly; open it again"
    assert pipeline.target is None
    events = [r["payload"] for r in _records(config) if r["type"] == "sql_connect_failed"]
    assert [e["error"] for e in events] == [str(caught.value)]
