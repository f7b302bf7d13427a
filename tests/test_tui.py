"""The TUI with Pilot against the real shop database: landing, filtering, panes, queries, cancel, tabs by
role, keys that must not escape, and snapshots of the landing screen and a masked result."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from textual.widgets import DataTable, TabbedContent, TextArea

from bastion.config import Config
from bastion.session import Session
from tests.configs import BOB_KEY
from tests.shopdb import Shop, open_session, shop_config
from tui.app import BastionApp, Outcome, header_text
from tui.widgets.connections import ConnectionsView
from tui.widgets.sql_pane import SqlPane

FIXED_MASKING_KEY = "f" * 64
AUDITOR = """
[[users]]
name = "carol"
keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFkOoW+Xy9793Acax7sWfAqQ8+unIGRq1zvTKi36uEwx carol@example"]
groups = ["auditors"]

[[roles]]
name = "auditor"
groups = ["auditors"]
auditor = true
"""
CAROL_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFkOoW+Xy9793Acax7sWfAqQ8+unIGRq1zvTKi36uEwx carol@example"


@pytest.fixture
def config(tmp_path: Path, shop: Shop) -> Config:
    return shop_config(tmp_path, shop, extra=AUDITOR, masking_key=FIXED_MASKING_KEY)


@pytest.fixture
def alice(config: Config) -> Iterator[Session]:
    session = open_session(config)
    yield session
    session.end()


async def wait_idle(pane: SqlPane, pilot, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    await pilot.pause(0.05)
    while (pane.running or pane.pipeline is None) and time.monotonic() < deadline:
        await pilot.pause(0.05)


async def open_pane(app: BastionApp, pilot, name: str = "pg-readonly") -> SqlPane:
    app.open_connection(name)
    await pilot.pause()
    pane = app.query(SqlPane).last()
    await wait_idle(pane, pilot)
    assert pane.pipeline is not None, "pane did not connect"
    return pane


async def run_sql(pane: SqlPane, pilot, sql: str) -> None:
    pane.query_one("#editor", TextArea).text = sql
    await pilot.press("f5")
    await wait_idle(pane, pilot)


async def test_landing_shows_only_this_users_connections(alice: Session) -> None:
    app = BastionApp(alice)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        view = app.query_one(ConnectionsView)
        assert [row.name for row in view.rows] == ["pg-guarded", "pg-readonly"]
        assert "app" not in {row.name for row in view.rows}
        assert "alice" in header_text(app).plain and "bastion-test" in header_text(app).plain
        tabs = app.query_one("#tabs", TabbedContent)
        assert not tabs.query("#approvals") and not tabs.query("#audit")
        await pilot.press("ctrl+q")
    assert app.return_value == Outcome("ended")


async def test_tabs_by_role(config: Config) -> None:
    for user, key, tab in (("bob", BOB_KEY, "approvals"), ("carol", CAROL_KEY, "audit")):
        session = open_session(config, user, key)
        app = BastionApp(session)
        async with app.run_test(size=(120, 30)) as pilot:
            await pilot.pause()
            assert app.query(f"#{tab}"), f"{user} should see the {tab} tab"
            app.show_tab(tab)
            await pilot.pause(0.3)
            if tab == "audit":
                table = app.query_one("#audit-view").query_one(DataTable)
                assert table.row_count >= 1  # carol's own session at least
        session.end()


async def test_filter_and_exact_match_opens(alice: Session) -> None:
    app = BastionApp(alice)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        await pilot.press(*"guard")
        view = app.query_one(ConnectionsView)
        assert [row.name for row in view.shown] == ["pg-guarded"]
        await pilot.press(
            "backspace", "backspace", "backspace", "backspace", "backspace", *"pg-readonly", "enter"
        )
        await pilot.pause()
        pane = app.query_one(SqlPane)
        assert pane.connection == "pg-readonly"
        await wait_idle(pane, pilot)


async def test_query_masks_and_blocks(alice: Session) -> None:
    app = BastionApp(alice, show_timings=False)
    async with app.run_test(size=(140, 40)) as pilot:
        pane = await open_pane(app, pilot)
        await run_sql(pane, pilot, "SELECT name, email, ssn FROM customers ORDER BY id")
        table = pane.query_one("#results", DataTable)
        assert table.row_count == 3
        shown = " ".join(str(table.get_cell_at((r, c))) for r in range(3) for c in range(3))
        assert (
            "Ada Lovelace" in shown and "ada.lovelace@example.org" not in shown and "123-45-6789" not in shown
        )
        assert "masked: email" in str(pane.query_one("#status").render())
        await run_sql(pane, pilot, "DELETE FROM orders")
        assert "BLOCKED" in str(pane.query_one("#verdict").render())
        editor = pane.query_one("#editor", TextArea)
        editor.text = "SELECT 1;\nSELECT 2 AS two"
        editor.select_all()  # a selection runs every statement in it, the last one's rows stay on screen
        await pilot.press("f5")
        await wait_idle(pane, pilot)
        assert str(table.columns[next(iter(table.columns))].label) == "two"


async def test_statement_under_cursor_and_history(alice: Session) -> None:
    app = BastionApp(alice, show_timings=False)
    async with app.run_test(size=(140, 40)) as pilot:
        pane = await open_pane(app, pilot)
        editor = pane.query_one("#editor", TextArea)
        editor.text = "SELECT 'first' AS a;\nSELECT 'second' AS b;"
        editor.move_cursor((1, 3))
        await pilot.press("f5")
        await wait_idle(pane, pilot)
        table = pane.query_one("#results", DataTable)
        assert str(table.get_cell_at((0, 0))) == "second"
        editor.text = ""
        await pilot.press("alt+up")
        assert editor.text == "SELECT 'second' AS b"


async def test_more_rows_on_demand(alice: Session) -> None:
    app = BastionApp(alice, show_timings=False)
    async with app.run_test(size=(140, 40)) as pilot:
        pane = await open_pane(app, pilot)
        await run_sql(pane, pilot, "SELECT g FROM generate_series(1, 2500) g")
        table = pane.query_one("#results", DataTable)
        assert table.row_count == 1000
        assert "1,000 of >1,000 rows" in str(pane.query_one("#status").render())
        await pilot.press("f6")
        await wait_idle(pane, pilot)
        assert table.row_count == 2000
        await pilot.press("f6")
        await wait_idle(pane, pilot)
        assert table.row_count == 2500 and "of >" not in str(pane.query_one("#status").render())


async def test_cancel_stops_the_query_on_the_server(alice: Session, shop: Shop) -> None:
    app = BastionApp(alice, show_timings=False)
    async with app.run_test(size=(140, 40)) as pilot:
        pane = await open_pane(app, pilot)
        pane.query_one("#editor", TextArea).text = "SELECT pg_sleep(30)"
        started = time.monotonic()
        await pilot.press("f5")
        await pilot.pause(0.5)
        assert pane.running
        await pilot.press("escape")
        await wait_idle(pane, pilot, timeout=10)
        assert time.monotonic() - started < 8
        assert "CANCELLED" in str(pane.query_one("#verdict").render())
        with psycopg.connect(shop.admin_dsn) as conn:
            active = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%' AND state = 'active'"
            ).fetchone()
        assert active == (0,)


async def test_closing_a_pane_closes_its_target_session(alice: Session, shop: Shop) -> None:
    app = BastionApp(alice)
    async with app.run_test(size=(140, 40)) as pilot:
        await open_pane(app, pilot)
        name = f"bastion:alice:{alice.id}"[:63]
        with psycopg.connect(shop.admin_dsn) as conn:
            before = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
            ).fetchone()
        assert before == (1,)
        await pilot.press("f8")
        for _ in range(40):
            await pilot.pause(0.05)
            if not app.query(SqlPane):
                break
        assert not app.query(SqlPane)
        with psycopg.connect(shop.admin_dsn) as conn:
            after = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
            ).fetchone()
        assert after == (0,)


async def test_ctrl_z_in_the_editor_is_undo_and_nothing_else(alice: Session) -> None:
    app = BastionApp(alice)
    async with app.run_test(size=(120, 30)) as pilot:
        pane = await open_pane(app, pilot)
        editor = pane.query_one("#editor", TextArea)
        editor.focus()
        editor.text = ""
        await pilot.press(*"select 1")
        await pilot.pause(0.2)
        await pilot.press("ctrl+z")
        await pilot.pause(0.2)
        assert editor.text != "select 1" and app.is_running
        await pilot.press("escape")  # nothing is running: Esc leaves the editor for the results
        await pilot.pause(0.1)
        assert pane.query_one("#results", DataTable).has_focus
        editor.focus()
        editor.text = "select 1"
        editor.move_cursor((0, 0))
        await pilot.press("ctrl+e")  # end of line in the editor, not the elevation form
        await pilot.pause(0.1)
        assert editor.cursor_location == (0, 8) and app.screen is app.base
        # The palette's "Open pg-readonly" goes to the open pane instead of opening a second one.
        app.show_tab("connections")
        app.go_to_connection("pg-readonly")
        await pilot.pause(0.2)
        assert len(app.query(SqlPane)) == 1 and app.query_one("#tabs", TabbedContent).active.startswith(
            "pane-"
        )


async def test_keys_that_must_not_escape(
    alice: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    app = BastionApp(alice)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        for key in ("ctrl+z", "ctrl+backslash", "ctrl+c"):
            await pilot.press(key)
            await pilot.pause()
            assert app.is_running
        app.action_screenshot()
        app.action_suspend_process()
        with pytest.raises(PermissionError):
            app.save_screenshot()
        commands = [c.title for c in app.get_system_commands(app.screen)]
        assert commands == ["Quit"]
        await pilot.press("ctrl+p")
        await pilot.press(*"screenshot")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert app.is_running
    assert list(cwd.iterdir()) == []  # nothing was written


async def test_hostile_cell_content_is_inert(alice: Session) -> None:
    app = BastionApp(alice, show_timings=False)
    async with app.run_test(size=(140, 40)) as pilot:
        pane = await open_pane(app, pilot)
        await run_sql(pane, pilot, "SELECT '[@click=app.quit]x[/]' AS a, E'\\x1b]52;c;ZXZpbA==\\x07' AS b")
        assert app.is_running
        table = pane.query_one("#results", DataTable)
        assert str(table.get_cell_at((0, 0))) == "[@click=app.quit]x[/]"
        assert "\x1b" not in str(table.get_cell_at((0, 1))) and "␛" in str(table.get_cell_at((0, 1)))


async def test_idle_timeout_ends_the_session(config: Config) -> None:
    session = open_session(config)
    app = BastionApp(session)
    app.idle_timeout_s = 0.3
    async with app.run_test(size=(120, 30)) as pilot:
        app.last_activity -= 1
        app.end_if_idle()
        await pilot.pause()
    assert app.return_value is not None and app.return_value.status == "idle"
    session.end(app.return_value.status, app.return_value.reason)


def test_snapshot_landing(snap_compare, config: Config) -> None:
    session = open_session(config)
    try:
        assert snap_compare(BastionApp(session, show_timings=False), terminal_size=(110, 24))
    finally:
        session.end()


def test_snapshot_masked_result(snap_compare, config: Config) -> None:
    session = open_session(config)

    async def run_query(pilot) -> None:
        app = pilot.app
        pane = await open_pane(app, pilot)
        await run_sql(
            pane, pilot, "SELECT id, name, email, ssn, phone, card_number FROM customers ORDER BY id"
        )
        pane.query_one("#results", DataTable).focus()
        await pilot.pause(0.2)

    try:
        assert snap_compare(
            BastionApp(session, show_timings=False), terminal_size=(130, 30), run_before=run_query
        )
    finally:
        session.end()
