"""Per-role exemptions: a role listed in a rule's exempt_roles sees the value in clear, and the decision is
still audited; everyone else keeps seeing it masked."""

from __future__ import annotations

import json
import time
from pathlib import Path

from bastion.audit.log import read_events
from bastion.sql_pipeline import SqlPipeline
from bastion.store.base import Grant
from tests.shopdb import PLANTED, Shop, open_session, shop_config


def phones(session_user_elevated: bool, tmp_path: Path, shop: Shop) -> tuple[list[str], list[dict]]:
    config = shop_config(tmp_path, shop)
    session = open_session(config)
    if session_user_elevated:  # alice holds dba through an approved elevation
        now = time.time()
        session.store.add_grant(Grant("g-dba", "r-dba", "alice", "elevation", "dba", now, now + 600))
    pipeline = SqlPipeline(session, "pg-readonly")
    pipeline.open()
    try:
        (result,) = list(pipeline.run("SELECT phone FROM customers ORDER BY id"))
        values = [row[0] for row in result.rows]
        result.close()
    finally:
        pipeline.close()
        session.end()
    events = [e for e in read_events(config.audit.log) if e["type"] in ("sql_outcome", "sql_masking")]
    return values, events


def test_exempt_role_sees_clear_and_it_is_audited(tmp_path: Path, shop: Shop) -> None:
    values, events = phones(True, tmp_path, shop)
    assert values == [row["phone"] for row in PLANTED]
    masking = [d for e in events for d in e["payload"].get("masking", [])]
    assert masking and masking[0]["exempt_by"] == ["dba"] and masking[0]["masked"] is False


def test_without_the_role_it_stays_masked(tmp_path: Path, shop: Shop) -> None:
    values, events = phones(False, tmp_path, shop)
    assert all(v.startswith("••••") for v in values)
    assert not any(row["phone"] in json.dumps(events) for row in PLANTED)
