"""Headless approval flows (in-process login, real shop DB): request, decide, run the approved statement
exactly once; elevation; self-approval refused; the webhook gets Slack-compatible JSON, and its failure
blocks nothing."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import psycopg
import pytest

from bastion.config import Config, load_config
from bastion.identity.keys import parse_public_key
from bastion.store.base import Grant
from bastion.store.tinydb import TinyDBStore
from tests.configs import ALICE_KEY, BOB_KEY, secret
from tests.shopdb import Shop, shop_config
from tests.test_headless_exec import Run

ALICE = parse_public_key(ALICE_KEY).fingerprint
BOB = parse_public_key(BOB_KEY).fingerprint


class Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    Hook.received = []
    with receiver(Hook) as url:
        yield url


@pytest.fixture
def config(tmp_path: Path, shop: Shop, webhook: str) -> Config:
    secret(tmp_path / "secrets" / "webhook", webhook)
    return shop_config(tmp_path, shop, extra='\n[approvals]\nwebhook_url_file = "secrets/webhook"\n')


@pytest.fixture
def run(config: Config, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    return Run(config, monkeypatch, capsys)


def orders_status(shop: Shop, order_id: int) -> str:
    with psycopg.connect(shop.admin_dsn) as conn:
        row = conn.execute("SELECT status FROM orders WHERE id = %s", (order_id,)).fetchone()
    assert row is not None
    return str(row[0])


def test_statement_request_approve_run_once(run: Run, shop: Shop) -> None:
    statement = "UPDATE orders SET status = 'held' WHERE id = 1"
    assert run(f"exec pg-guarded -- {statement}") == 3
    assert run(f"request pg-guarded --reason 'fraud check' --json -- {statement}") == 0
    request = json.loads(run.out)
    assert request["state"] == "pending" and request["statement"] == statement
    assert run("approvals list", BOB) == 0 and request["id"] in run.out
    assert run(f"approvals approve {request['id']}", ALICE) == 1 and "not decide" not in run.err
    assert "own request" in run.err or "does not hold" in run.err
    assert run(f"approvals approve {request['id']} --reason ok --json", BOB) == 0
    assert json.loads(run.out)["state"] == "approved"
    # Only the exact statement (whitespace may differ) runs, and only once.
    assert run("exec pg-guarded -- UPDATE orders SET status = 'held' WHERE id = 2") == 3
    assert run(f"exec pg-guarded --   {statement.replace(' ', '  ')}") == 0
    assert orders_status(shop, 1) == "held"
    assert run(f"exec pg-guarded -- {statement}") == 3
    events = [e["type"] for e in run.events()]
    for kind in ("approval_requested", "approval_decided", "grant_created", "grant_used"):
        assert kind in events
    failures = [e["payload"] for e in run.events() if e["type"] == "notify_failed"]
    assert [h["event"] for h in Hook.received] == ["request", "approve"], failures
    assert "asks for statement on pg-guarded" in Hook.received[0]["text"]


def test_deny_needs_a_reason(run: Run) -> None:
    assert run("request pg-guarded --reason x -- DELETE FROM orders WHERE id = 3") == 0
    request_id = run.out.strip()
    assert run(f"approvals deny {request_id}", BOB) == 1 and "reason" in run.err
    assert run(f"approvals deny {request_id} --reason 'not now'", BOB) == 0 and "denied" in run.out
    assert run("exec pg-guarded -- DELETE FROM orders WHERE id = 3") == 3


def test_elevation_request(run: Run) -> None:
    assert run("request --elevate dba --for 30m --reason 'incident 7' --json") == 0
    request = json.loads(run.out)
    assert request["kind"] == "elevation" and request["duration_s"] == 1800
    assert run(f"approvals approve {request['id']} --reason go", BOB) == 0
    assert run("whoami --json") == 0 and "dba" in json.loads(run.out)["roles"]


def masked_columns(run: Run) -> list[str]:
    assert run("exec --json pg-readonly -- SELECT phone FROM customers ORDER BY id LIMIT 1") == 0
    return [m["column"] for m in run.records()[0]["masked"]]


def test_elevation_revoked_early_by_an_approver_or_given_back(run: Run, config: Config) -> None:
    assert run("request --elevate dba --for 2h --reason 'incident 8' --json") == 0
    request_id = json.loads(run.out)["id"]
    assert run(f"approvals approve {request_id} --reason go", BOB) == 0
    assert masked_columns(run) == []  # dba is exempt from the phone mask
    assert run("approvals grants --json") == 0
    (mine,) = run.records()
    assert (mine["user"], mine["target"], mine["state"]) == ("alice", "dba", "active")
    assert run("approvals grants", BOB) == 0 and mine["grant"] in run.out
    assert run(f"approvals revoke {mine['grant']}", BOB) == 1 and "reason" in run.err
    assert run(f"approvals revoke {mine['grant']} --reason 'incident closed' --json", BOB) == 0
    assert json.loads(run.out)["state"] == "revoked"
    assert run("whoami --json") == 0 and "dba" not in json.loads(run.out)["roles"]
    assert masked_columns(run) == ["phone"]  # the very next statement no longer has dba
    assert run(f"approvals revoke {mine['grant']} --reason again", BOB) == 1 and "no longer active" in run.err
    revoked = [e["payload"] for e in run.events() if e["type"] == "grant_revoked"]
    assert [(e["grant"], e["by"], e["reason"]) for e in revoked] == [
        (mine["grant"], "bob", "incident closed")
    ]
    assert Hook.received[-1]["event"] == "revoke" and "Revoked by bob" in Hook.received[-1]["text"]

    # The holder gives a grant back without a reason; nobody else's is theirs to end.
    assert run("request --elevate dba --for 1h --reason 'incident 9' --json") == 0
    assert run(f"approvals approve {json.loads(run.out)['id']} --reason go", BOB) == 0
    assert run("approvals grants --json") == 0
    (again,) = run.records()
    assert run(f"approvals revoke {again['grant']}") == 0 and "revoked" in run.out
    store = TinyDBStore(Path(config.bastion.state.removeprefix("tinydb:")))
    store.add_grant(Grant("g-bobs", "r-x", "bob", "elevation", "dba", time.time(), time.time() + 600))
    assert run("approvals revoke g-bobs --reason mine-now") == 1 and "does not hold" in run.err
    assert store.get_grant("g-bobs").state == "active"  # type: ignore[union-attr]
    assert run("approvals revoke", BOB) == 2 and "which grant" in run.err


def test_usage_and_refusals(run: Run) -> None:
    assert run("request pg-guarded -- DELETE FROM orders") == 2  # --reason is required
    assert run("request --elevate dba --reason x") == 2 and "--for" in run.err
    assert run("request --elevate root --for 1h --reason x") == 1 and "may not request" in run.err
    assert run("request --elevate dba --for 10d --reason x") == 1 and "longest elevation" in run.err
    assert run("approvals approve", BOB) == 2
    assert run("approvals approve r-nope --reason x", BOB) == 1 and "no request" in run.err


def test_webhook_failure_blocks_nothing(
    tmp_path: Path, shop: Shop, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = request_notified_at("http://127.0.0.1:9/unreachable", tmp_path, shop, monkeypatch, capsys)
    failed = [e for e in run.events() if e["type"] == "notify_failed"]
    assert len(failed) == 1 and "127.0.0.1:9" not in json.dumps(failed)


class FlakyHook(Hook):
    """Drops the first connection without an answer (a receiver restarting), then behaves."""

    dropped: ClassVar[int] = 0

    def handle(self) -> None:
        if FlakyHook.dropped == 0:
            FlakyHook.dropped += 1
            self.connection.close()
            return
        super().handle()


@contextlib.contextmanager
def receiver(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A webhook receiver on loopback with this handler; yields its URL."""
    server = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


def request_notified_at(
    url: str, tmp_path: Path, shop: Shop, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> Run:
    """File one statement request with the webhook pointing at url; the Run holds what it printed."""
    secret(tmp_path / "secrets" / "webhook", url)
    config = shop_config(tmp_path, shop, extra='\n[approvals]\nwebhook_url_file = "secrets/webhook"\n')
    run = Run(load_config(config.path), monkeypatch, capsys)
    assert run("request pg-guarded --reason x -- DELETE FROM orders WHERE id = 9") == 0
    assert run.out.strip().startswith("r-")  # the id is printed whatever became of the notice
    return run


def test_webhook_retries_a_dropped_connection_once(
    tmp_path: Path, shop: Shop, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    Hook.received, FlakyHook.dropped = [], 0
    with receiver(FlakyHook) as url:
        run = request_notified_at(url, tmp_path, shop, monkeypatch, capsys)
    assert FlakyHook.dropped == 1
    assert [h["event"] for h in Hook.received] == ["request"]
    assert not [e for e in run.events() if e["type"] == "notify_failed"]


class GarbageHook(Hook):
    """Answers with something that is not HTTP at all."""

    def handle(self) -> None:
        self.rfile.readline()  # the request line: the client has sent, and now waits for an answer
        self.connection.sendall(b"HTTP/1.1 two-hundred OK\r\n\r\n")
        self.connection.close()


def test_webhook_garbage_reply_blocks_nothing(
    tmp_path: Path, shop: Shop, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with receiver(GarbageHook) as url:
        run = request_notified_at(url, tmp_path, shop, monkeypatch, capsys)
    (failed,) = [e["payload"] for e in run.events() if e["type"] == "notify_failed"]
    assert failed["reason"] == "BadStatusLine"


def test_webhook_text_keeps_detected_values_out_of_the_chat(run: Run) -> None:
    statement = "UPDATE customers SET email = 'ada@example.org', ssn = '536-22-1234' WHERE id = 1"
    assert run(f"request pg-guarded --reason 'fix typo for 078-05-1121' -- {statement}") == 0
    text = Hook.received[-1]["text"]
    assert "ada@example.org" not in text and "536-22-1234" not in text and "078-05-1121" not in text
    assert "UPDATE customers SET email" in text


def test_webhook_text_cannot_ping_or_link(run: Run) -> None:
    """Hostile statement and reason text reaches the approvers' chat escaped, never as Slack markup."""
    statement = "DELETE FROM orders WHERE id = 4 -- <!channel> <https://evil.example|approve here>"
    assert run(f"request pg-guarded --reason '<!here> & urgent' -- {statement}") == 0
    text = Hook.received[-1]["text"]
    assert "<!channel>" not in text and "<!here>" not in text and "<https://" not in text
    assert "&lt;!channel&gt;" in text and "&amp; urgent" in text
