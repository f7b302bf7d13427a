"""Approvals in the TUI (Pilot, real shop DB): a statement that needs approval is requested from the SQL
pane, decided in bob's Approvals tab, and run from the pane exactly once; elevation from Connections."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest
from textual.widgets import DataTable, Input, Select, TabbedContent, TextArea

from bastion.approvals import Approvals
from bastion.audit.log import read_events
from bastion.config import Config
from tests.configs import BOB_KEY
from tests.shopdb import Shop, open_session, shop_config
from tests.test_tui import open_pane, run_sql, wait_idle
from tui.app import BastionApp
from tui.widgets.activity import ApprovalsView


@pytest.fixture
def config(tmp_path: Path, shop: Shop) -> Config:
    return shop_config(tmp_path, shop)


async def until(pilot, condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        await pilot.pause(0.1)
    assert condition(), "condition not met in time"


async def test_request_decide_and_run_once(config: Config, shop: Shop) -> None:
    alice = open_session(config)
    bob = open_session(config, "bob", BOB_KEY)
    statement = "UPDATE orders SET status = 'tui-approved' WHERE id = 3"
    app = BastionApp(alice, show_timings=False)
    async with app.run_test(size=(140, 40)) as pilot:
        pane = await open_pane(app, pilot, "pg-guarded")
        await run_sql(pane, pilot, statement)
        assert "NEEDS APPROVAL" in str(pane.query_one("#verdict").render())
        await pilot.press("f9")
        await pilot.pause(0.2)
        app.screen.query_one("#reason", Input).value = "month end fix"
        await pilot.press("enter")
        await until(pilot, lambda: pane.request_id is not None)
        assert pane.request_state == "pending"

        # bob decides in his own TUI: the request is listed live, he approves with a reason.
        bob_app = BastionApp(bob)
        async with bob_app.run_test(size=(140, 40)) as bob_pilot:
            bob_app.show_tab("approvals")
            view = bob_app.query_one(ApprovalsView)
            await until(bob_pilot, lambda: any(r.id == pane.request_id for r in view.pending))
            view.query_one("#pending", DataTable).focus()
            await bob_pilot.press("a")
            await bob_pilot.pause(0.2)
            bob_app.screen.query_one("#reason", Input).value = "looks right"
            await bob_pilot.press("enter")
            await until(bob_pilot, lambda: not view.pending)
            past = view.query_one("#past", DataTable)
            assert past.row_count >= 1
        await until(pilot, lambda: pane.request_state == "approved", timeout=15)
        pane.query_one("#editor", TextArea).text = "SELECT 'something else'"  # the editor does not matter
        await pilot.press("f9")
        await wait_idle(pane, pilot)
        assert pane.current is not None and pane.current.status == "ok"
        assert "approved: request" in str(pane.query_one("#verdict").render())
        with psycopg.connect(shop.admin_dsn) as conn:
            assert conn.execute("SELECT status FROM orders WHERE id = 3").fetchone() == ("tui-approved",)
        await run_sql(pane, pilot, statement)  # the grant was single use
        assert pane.current is not None and pane.current.status == "needs_approval"
    alice.end()
    bob.end()


async def test_self_approval_is_refused_in_the_tab(config: Config) -> None:
    bob = open_session(config, "bob", BOB_KEY)
    Approvals(config, bob.store, bob.event).request_statement(
        "alice", "pg-guarded", "DELETE FROM orders WHERE id = 9", "x"
    )
    app = BastionApp(bob)
    async with app.run_test(size=(140, 40)) as pilot:
        app.show_tab("approvals")
        view = app.query_one(ApprovalsView)
        await until(pilot, lambda: len(view.pending) == 1)
        view.query_one("#pending", DataTable).focus()
        await pilot.press("d")
        await pilot.pause(0.2)
        await pilot.press("enter")  # a deny needs a reason: nothing happens
        await pilot.pause(0.2)
        assert len(view.pending) == 1
        app.screen.query_one("#reason", Input).value = "no"
        await pilot.press("enter")
        await until(pilot, lambda: not view.pending)
    bob.end()
    alice = open_session(config)
    own = Approvals(config, alice.store, alice.event).request_statement(
        "alice", "pg-guarded", "DELETE FROM orders WHERE id = 8", "x"
    )
    assert all(r.id != own.id for r in Approvals(config, alice.store, alice.event).pending_for("alice"))
    alice.end()


async def test_elevation_request_from_connections(config: Config) -> None:
    alice = open_session(config)
    app = BastionApp(alice)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+e")
        await pilot.pause(0.3)
        app.screen.query_one("#target", Select).value = "dba"
        app.screen.query_one("#duration", Input).value = "45m"
        app.screen.query_one("#reason", Input).value = "incident 12"
        await pilot.press("enter")
        await until(
            pilot, lambda: any(r.kind == "elevation" for r in alice.store.list_requests(requester="alice"))
        )
    request = next(r for r in alice.store.list_requests(requester="alice") if r.kind == "elevation")
    assert request.duration_s == 45 * 60 and request.reason == "incident 12" and request.target == "dba"
    alice.end()


async def test_grant_revoked_from_the_tab_and_given_back_from_the_palette(config: Config) -> None:
    alice, bob = open_session(config), open_session(config, "bob", BOB_KEY)
    core = Approvals(config, alice.store, alice.event)
    for reason in ("incident 20", "incident 21"):
        request = core.request_elevation("alice", "dba", 3600, reason)
        Approvals(config, bob.store, bob.event).decide(request.id, "bob", "approve", "ok")
    first, second = alice.store.list_grants("alice", active_at=time.time())
    app = BastionApp(bob)
    async with app.run_test(size=(140, 48)) as pilot:
        await pilot.pause(0.3)
        app.show_tab("approvals")
        await pilot.pause(0.3)
        # focus follows into the tab (left in the hidden one, it used to pull Connections back)
        assert app.query_one("#tabs", TabbedContent).active == "approvals"
        view = app.query_one(ApprovalsView)
        assert view.query_one("#pending", DataTable).size.width > 40  # beside the detail, not squeezed
        await until(pilot, lambda: [g.id for g in view.grants] == [first.id, second.id])
        view.query_one("#grants", DataTable).focus()
        await pilot.press("r")
        await pilot.pause(0.2)
        await pilot.press("enter")  # revoking someone else's grant needs a reason: nothing happens
        await pilot.pause(0.2)
        assert alice.store.get_grant(first.id).state == "active"  # type: ignore[union-attr]
        app.screen.query_one("#reason", Input).value = "incident 20 closed"
        await pilot.press("enter")
        await until(pilot, lambda: [g.id for g in view.grants] == [second.id])
    assert alice.store.get_grant(first.id).state == "revoked"  # type: ignore[union-attr]
    assert "dba" in alice.roles().roles  # the second grant still holds

    # alice gives the other one back herself, from the command palette.
    app = BastionApp(alice)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.pause()
        assert app.my_elevations()
        await pilot.press("ctrl+p")
        await pilot.pause(0.2)
        await pilot.press(*"End my elevation")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await until(pilot, lambda: not app.my_elevations())
    assert alice.store.get_grant(second.id).state == "revoked"  # type: ignore[union-attr]
    assert "dba" not in alice.roles().roles
    events = [e for e in read_events(config.audit.log) if e["type"] == "grant_revoked"]
    assert [(e["payload"]["by"], e["payload"]["reason"]) for e in events] == [
        ("bob", "incident 20 closed"),
        ("alice", "given back by its holder"),
    ]
    alice.end()
    bob.end()


async def test_requester_sees_expiry_without_an_approver_looking(config: Config) -> None:
    alice = open_session(config)
    clock = [time.time()]
    core = Approvals(config, alice.store, alice.event, now=lambda: clock[0] - 10_000)  # filed long ago
    request = core.request_statement("alice", "pg-guarded", "DELETE FROM orders WHERE id = 7", "x")
    assert request.expires_at < time.time()
    app = BastionApp(alice)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.pause(0.2)
        app.check_my_requests()
        await until(pilot, lambda: alice.store.get_request(request.id).state == "expired")  # type: ignore[union-attr]
    expired = [e for e in read_events(config.audit.log) if e["type"] == "approval_expired"]
    assert [e["payload"]["request"] for e in expired] == [request.id]
    alice.end()


async def test_past_decisions_only_on_targets_the_approver_approves(tmp_path: Path, shop: Shop) -> None:
    extra = '\n[[roles]]\nname = "guarded-approver"\ngroups = ["leads"]\napproves = ["pg-guarded"]\n'
    text_config = shop_config(tmp_path, shop, extra=extra)
    path = text_config.path
    path.write_text(path.read_text().replace('groups = ["approvers"]', 'groups = ["leads"]', 1))
    from bastion.config import load_config

    config = load_config(path)
    alice, bob = open_session(config), open_session(config, "bob", BOB_KEY)
    core = Approvals(config, alice.store, alice.event)
    on_guarded = core.request_statement("alice", "pg-guarded", "DELETE FROM orders WHERE id = 5", "x")
    elevation = core.request_elevation("alice", "dba", 600, "y")
    for request in (on_guarded, elevation):
        core.cancel(request.id, "alice")
    app = BastionApp(bob)
    async with app.run_test(size=(140, 48)) as pilot:
        view = app.query_one(ApprovalsView)
        await until(pilot, lambda: bool(view.past))
        await pilot.pause(0.3)
        assert [r.id for r in view.past] == [on_guarded.id]  # not the dba elevation bob cannot approve
    alice.end()
    bob.end()
