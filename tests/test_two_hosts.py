"""Two bastion hosts — separate processes, names, configs and audit logs — sharing PostgreSQL state: a
request made on one is approved on the other and used on the first, exactly once."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from bastion.audit.log import read_events
from bastion.identity.keys import parse_public_key
from tests.configs import ALICE_KEY, BOB_KEY
from tests.shopdb import Shop, shop_config

ALICE = parse_public_key(ALICE_KEY).fingerprint
BOB = parse_public_key(BOB_KEY).fingerprint


@pytest.fixture(scope="module")
def state_url(pg_dsn: str) -> Iterator[str]:
    """A database of its own for the shared state (the shop fixture owns the other one's public schema)."""
    name = f"bastion_state_{secrets.token_hex(4)}"
    params = conninfo_to_dict(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    user = params.get("user", "postgres")
    yield f"postgresql://{user}@{params.get('host', '127.0.0.1')}:{params.get('port', 5432)}/{name}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def login(config: Path, fingerprint: str, command: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SSH_ORIGINAL_COMMAND": command}
    return subprocess.run(
        [sys.executable, "-m", "bastion", "login", "--config", str(config), "--key", fingerprint],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip


def test_request_on_one_host_approved_on_the_other(tmp_path: Path, shop: Shop, state_url: str) -> None:
    host_a = shop_config(tmp_path / "a", shop, state=state_url, name="bastion-a")
    host_b = shop_config(tmp_path / "b", shop, state=state_url, name="bastion-b")
    for config in (host_a, host_b):
        subprocess.run([sys.executable, "-m", "bastion", "keygen", "--config", str(config.path)], check=True,
                       capture_output=True)  # fmt: skip
    statement = "UPDATE orders SET status = 'audited' WHERE id = 2"
    filed = login(host_a.path, ALICE, f"request pg-guarded --reason 'two hosts' --json -- {statement}")
    assert filed.returncode == 0, filed.stderr
    request = json.loads(filed.stdout)
    listed = login(host_b.path, BOB, "approvals list --json")
    assert request["id"] in listed.stdout
    decided = login(host_b.path, BOB, f"approvals approve {request['id']} --reason 'seen on b' --json")
    assert decided.returncode == 0, decided.stderr
    ran = login(host_a.path, ALICE, f"exec pg-guarded -- {statement}")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    again = login(host_a.path, ALICE, f"exec pg-guarded -- {statement}")
    assert again.returncode == 3
    with psycopg.connect(shop.admin_dsn) as conn:
        assert conn.execute("SELECT status FROM orders WHERE id = 2").fetchone() == ("audited",)
    events_a = {e["type"] for e in read_events(host_a.audit.log)}
    events_b = {e["type"] for e in read_events(host_b.audit.log)}
    assert {"approval_requested", "grant_used", "sql_statement"} <= events_a
    assert "approval_decided" in events_b and "approval_decided" not in events_a
    assert all(e["bastion"] == "bastion-b" for e in read_events(host_b.audit.log))
