"""Approval flows headless through the real OpenSSH front door: alice requests, bob approves over his own
ssh login, alice's approved statement runs once; elevation likewise. `--json` on each."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.configs import ALICE_KEY, BOB_KEY, ssh_keypair
from tests.shopdb import Shop, shop_config
from tests.sshd import Sshd, make_workspace, service_account, sshd_unavailable_reason, start_sshd

REASON = sshd_unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory, shop: Shop) -> Iterator[tuple[Sshd, str, dict[str, Path]]]:
    account, fallback = service_account()
    if fallback:
        print(f"front door: {fallback}")
    workspace = make_workspace(account)
    keys = tmp_path_factory.mktemp("approval-keys")
    pubs = {name: ssh_keypair(keys / name, f"{name}@laptop") for name in ("alice", "bob")}
    config = shop_config(workspace.root, shop)
    config.path.write_text(
        config.path.read_text()
        .replace(ALICE_KEY, pubs["alice"])
        .replace(BOB_KEY, pubs["bob"])
        .replace('service_user = "bastion"', f'service_user = "{account}"\ncommand = "{workspace.wrapper}"')
    )
    subprocess.run(
        [str(workspace.wrapper), "keygen", "--config", str(config.path)], check=True, capture_output=True
    )
    workspace.chown()
    snippet = subprocess.run([str(workspace.wrapper), "sshd-config", "--config", str(config.path)],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    sshd = start_sshd(
        workspace.root / "sshd",
        ("PermitRootLogin prohibit-password\n" if account == "root" else "") + snippet,
    )
    try:
        yield sshd, account, {"alice": keys / "alice", "bob": keys / "bob"}
    finally:
        sshd.stop()
        workspace.cleanup()


def ssh(door: tuple[Sshd, str, dict[str, Path]], who: str, *command: str) -> subprocess.CompletedProcess[str]:
    sshd, account, keys = door
    argv = ["ssh", "-p", str(sshd.port), "-i", str(keys[who]), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-T", f"{account}@127.0.0.1", *command]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_statement_approval_over_ssh(door: tuple[Sshd, str, dict[str, Path]], shop: Shop) -> None:
    statement = "UPDATE orders SET status = 'door-approved' WHERE id = 1"
    blocked = ssh(door, "alice", "exec", "pg-guarded", "--", statement)
    assert blocked.returncode == 3 and "request pg-guarded --reason" in blocked.stdout
    filed = ssh(door, "alice", "request", "pg-guarded", "--reason", "'ticket 77'", "--json", "--", statement)
    assert filed.returncode == 0, filed.stderr
    request = json.loads(filed.stdout)
    listed = ssh(door, "bob", "approvals", "list", "--json")
    assert request["id"] in listed.stdout
    own = ssh(door, "alice", "approvals", "approve", request["id"], "--reason", "mine")
    assert own.returncode == 1 and "own request" in own.stderr
    approved = ssh(door, "bob", "approvals", "approve", request["id"], "--reason", "ok", "--json")
    assert approved.returncode == 0 and json.loads(approved.stdout)["state"] == "approved"
    ran = ssh(door, "alice", "exec", "--json", "pg-guarded", "--", statement)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    records = [json.loads(line) for line in ran.stdout.splitlines()]
    assert records[0]["verdict"] == "allow" and "approved: request" in records[0]["reasons"][0]
    assert ssh(door, "alice", "exec", "pg-guarded", "--", statement).returncode == 3  # single use
    with psycopg.connect(shop.admin_dsn) as conn:
        assert conn.execute("SELECT status FROM orders WHERE id = 1").fetchone() == ("door-approved",)


def test_elevation_over_ssh(door: tuple[Sshd, str, dict[str, Path]]) -> None:
    filed = ssh(
        door, "alice", "request", "--elevate", "dba", "--for", "20m", "--reason", "'on call'", "--json"
    )
    assert filed.returncode == 0, filed.stderr
    request = json.loads(filed.stdout)
    denied = ssh(door, "bob", "approvals", "deny", request["id"])
    assert denied.returncode == 2 or "reason" in denied.stderr
    assert ssh(door, "bob", "approvals", "approve", request["id"], "--reason", "go").returncode == 0
    whoami = ssh(door, "alice", "whoami", "--json")
    assert "dba" in json.loads(whoami.stdout)["elevated"]
