"""The bastion TUI: the login shell users land in after `ssh bastion`.

A thin layer over the headless core: the Session knows who the user is and records everything; panes use
SqlPipeline, the one enforcement point headless `exec` uses too. The app has no way out: no shell, no
suspend, no screenshot to a file, a command palette limited to its own commands; quitting ends the SSH
session. Idle sessions end; a dropped client (SIGHUP) ends the session cleanly and the end is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.text import Text
from textual import events, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, TabbedContent, TabPane, TextArea
from textual.worker import get_current_worker

from bastion.identity.roles import (
    RoleSet,
    approvable_targets,
    is_auditor,
    requestable_connections,
    usable_connections,
)
from bastion.session import Session
from bastion.store.base import Grant
from bastion.units import format_duration
from tui.commands import BastionCommands
from tui.widgets.activity import ApprovalsView, AuditView, StoreChanged
from tui.widgets.connections import ConnectionRow, ConnectionsView
from tui.widgets.header import SessionHeader
from tui.widgets.sql_pane import SqlPane

IDLE_CHECK_S = 15.0
HEADER_REFRESH_S = 30.0
MY_REQUESTS_CHECK_S = 15.0  # a requester's pending request expires with time, not with a write


@dataclass(frozen=True)
class Outcome:
    """How the TUI ended, for the session's end record: ended | idle | hangup | refused | abnormal."""

    status: str
    reason: str = ""


class BastionApp(App[Outcome]):
    CSS_PATH = "app.tcss"
    TITLE = "bastion"
    COMMANDS: ClassVar = {BastionCommands}
    ENABLE_COMMAND_PALETTE = True
    BINDINGS: ClassVar = [
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("ctrl+e", "request_elevation", "Request elevation", priority=True),
        Binding("f8", "close_pane", "Close pane", priority=True),
        Binding("ctrl+o", "show_tab('connections')", "Connections", show=False),
        Binding("f7", "cycle_tab(1)", "Next tab", priority=True),
        Binding("shift+f7", "cycle_tab(-1)", "Previous tab", show=False, priority=True),
        Binding("ctrl+z", "refuse_escape('ctrl+z')", show=False, priority=True),
        Binding("ctrl+backslash", "refuse_escape('ctrl+\\\\')", show=False, priority=True),
    ]

    def __init__(self, session: Session, *, needs_oidc: bool = False, show_timings: bool = True) -> None:
        super().__init__()
        self.session = session
        self.needs_oidc = needs_oidc
        self.show_timings = show_timings
        self.last_activity = time.monotonic()
        self.idle_timeout_s = session.config.bastion.idle_timeout_s
        self._pane_serial = 0
        # With OIDC the roles are known only after the device login: the role tabs come then (after_login).
        self.is_approver = self.is_auditor = False
        # The roles as last read from the store (on start, then by refresh_state in a worker): what the
        # screen shows and the palette offers. Enforcement never uses them: the pipeline reads per statement.
        self.roles_seen = session.roles()
        if not needs_oidc:
            self.settle_roles()
        self.my_requests: dict[str, str] = {}  # request id -> last state seen

    def settle_roles(self) -> None:
        roles = self.roles_seen = self.session.roles()
        self.is_approver = bool(approvable_targets(self.session.config, roles))
        self.is_auditor = is_auditor(self.session.config, roles)

    def role_panes(self) -> list[TabPane]:
        panes = []
        if self.is_approver:
            panes.append(
                TabPane("Approvals", ApprovalsView(self.session, id="approvals-view"), id="approvals")
            )
        if self.is_auditor:
            panes.append(TabPane("Audit", AuditView(self.session, id="audit-view"), id="audit"))
        return panes

    @property
    def base(self) -> Screen[Any]:
        """The main screen: queries must not land on a modal form that happens to be on top."""
        return self.screen_stack[0]

    # -- layout

    def compose(self) -> ComposeResult:
        yield SessionHeader(id="session-header")
        with TabbedContent(id="tabs", initial="connections"):
            with TabPane("Connections", id="connections"):
                yield ConnectionsView(self.connection_rows(self.roles_seen), id="connections-view")
            yield from self.role_panes()
        yield Footer()

    def on_mount(self) -> None:
        self.apply_state(self.roles_seen, None)
        self.set_interval(HEADER_REFRESH_S, self.refresh_state)
        if self.session.recording is not None:  # the recorder's status in the header, within a second
            self.poll_recording()
            self.set_interval(1.0, self.poll_recording)
        if self.idle_timeout_s > 0:
            self.set_interval(min(IDLE_CHECK_S, self.idle_timeout_s), self.end_if_idle)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGHUP, signal.SIGTERM):
            # Not the main thread (tests): there is no terminal to hang up.
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, self.hang_up, signal.Signals(signum).name)
        self.watch_store()
        self.set_interval(MY_REQUESTS_CHECK_S, self.check_my_requests)  # expiry comes with time, not a write
        if self.needs_oidc:
            from tui.screens.login import LoginScreen  # OIDC libraries load only when OIDC is on

            self.push_screen(LoginScreen(self.session), self.after_login)
        else:
            self.focus_filter()

    def after_login(self, refused: str | None) -> None:
        if self.session.ended:
            return  # the user quit or hung up while the login finished: already recorded
        if refused is not None:
            self.session.refuse(refused, {"oidc": "refused"})
            self.exit(Outcome("refused", refused))
            return
        self.session.start()
        self.settle_roles()
        tabs = self.base.query_one("#tabs", TabbedContent)
        for pane in self.role_panes():
            tabs.add_pane(pane)
        self.apply_state(self.roles_seen, self.connection_rows(self.roles_seen))
        self.focus_filter()

    def focus_filter(self) -> None:
        self.base.query_one("#connection-filter").focus()

    # -- live changes from the store (any bastion host)

    @work(thread=True, exclusive=True, group="watch")
    def watch_store(self) -> None:
        worker = get_current_worker()
        store = self.session.store
        seen = store.change_counter()
        while not worker.is_cancelled:
            counter = store.wait_for_change(seen, 2.0)
            if counter != seen and not worker.is_cancelled:
                seen = counter
                self.post_message(StoreChanged(counter))

    def on_store_changed(self, event: StoreChanged) -> None:
        if not self.screen_stack:
            return  # shutting down
        for view in [*self.base.query(ApprovalsView), *self.base.query(AuditView), *self.base.query(SqlPane)]:
            view.post_message(StoreChanged(event.counter))
        self.refresh_state()
        self.check_my_requests()

    @work(thread=True, exclusive=True, group="state")
    def refresh_state(self) -> None:
        """Roles and connection rows read off the UI thread (a PostgreSQL store is a network round trip)."""
        roles = self.session.roles()
        rows = self.connection_rows(roles) if self.session.started_at else None
        if not get_current_worker().is_cancelled:  # a newer refresh started: its reading wins
            self.call_from_thread(self.apply_state, roles, rows)

    def apply_state(self, roles: RoleSet, rows: list[ConnectionRow] | None) -> None:
        self.roles_seen = roles
        headers = self.base.query(SessionHeader) if self.screen_stack else []
        if not headers:
            return  # shutting down: the widgets are gone before the last worker reports
        header = headers.first()
        header.bastion = self.session.config.bastion.name
        header.user = self.session.user.name
        header.roles = roles.roles
        elevations = [g for g in roles.grants if g.kind == "elevation"]
        header.elevated = tuple(g.target for g in elevations)
        header.elevated_until = min((g.expires_at for g in elevations), default=None)
        header.now = time.time()
        view = self.base.query_one(ConnectionsView)  # composed with the header: present when it is
        if rows is not None and rows != view.rows:
            view.rows = rows
            view.refill(self.base.query_one("#connection-filter", Input).value)

    @work(thread=True, exclusive=True, group="my-requests")
    def check_my_requests(self) -> None:
        mine = self.session.store.list_requests(requester=self.session.user.name)
        if any(r.state == "pending" and r.expires_at <= time.time() for r in mine):
            from bastion.approvals import for_session

            # Expiry is a transition too: settled (and audited) here, so a requester sees "expired" even
            # when no approver has looked.
            for_session(self.session).expire_stale()
            mine = self.session.store.list_requests(requester=self.session.user.name)
        for request in mine:
            before = self.my_requests.get(request.id)
            if before is not None and before != request.state and request.state != "used":
                self.call_from_thread(
                    self.notify,
                    f"Request {request.id} ({request.target}) is {request.state}",
                    severity="information" if request.state == "approved" else "warning",
                )
            self.my_requests[request.id] = request.state

    # -- elevation requests

    def action_request_elevation(self) -> None:
        editor = self.focused
        if isinstance(editor, TextArea):
            editor.action_cursor_line_end()  # in the editor Ctrl+E is end of line; elevation is a tab away
            return
        from bastion.identity.roles import may_request

        targets = sorted(may_request(self.session.config, self.roles_seen.base))
        if not targets:
            self.notify("Your roles may not request elevation.", severity="warning")
            return
        from tui.screens.forms import ElevationScreen

        view = self.base.query_one(ConnectionsView)
        table = view.query_one("#connection-table", DataTable)
        initial = None
        if view.shown and 0 <= table.cursor_row < len(view.shown):
            initial = view.shown[table.cursor_row].name
        self.push_screen(ElevationScreen(targets, initial), self.file_elevation)

    def file_elevation(self, answer: tuple[str, float, str] | None) -> None:
        if answer is not None:
            self.file_elevation_worker(*answer)

    @work(thread=True, group="requests")
    def file_elevation_worker(self, target: str, duration: float, reason: str) -> None:
        from bastion.approvals import ApprovalError, for_session
        from bastion.notify import notify_request

        approvals = for_session(self.session)
        try:
            request = approvals.request_elevation(self.session.user.name, target, duration, reason)
        except ApprovalError as exc:
            self.call_from_thread(self.notify, str(exc), severity="error")
            return
        self.my_requests[request.id] = request.state
        notify_request(self.session, "request", request)
        self.call_from_thread(self.notify, f"Request {request.id} for {target} is pending approval.")

    def my_elevations(self) -> list[Grant]:
        return [g for g in self.roles_seen.grants if g.kind == "elevation"]

    @work(thread=True, group="requests")
    def give_back_elevation(self) -> None:
        """End the user's own active elevations now (no approver needed to give access back)."""
        from bastion.approvals import ApprovalError, for_session
        from bastion.notify import notify_revoked

        approvals = for_session(self.session)
        ended = []
        for grant in [g for g in self.session.roles().grants if g.kind == "elevation"]:  # fresh, not shown
            try:
                ended.append(approvals.revoke(grant.id, self.session.user.name, ""))
            except ApprovalError:
                continue  # expired or revoked meanwhile: nothing left to give back
            notify_revoked(self.session, ended[-1], self.session.user.name, "")
        names = ", ".join(g.target for g in ended) or "nothing"
        self.call_from_thread(self.notify, f"Elevation ended: {names}.")
        self.call_from_thread(self.refresh_state)

    # -- what the user may use

    def connection_rows(self, roles: RoleSet) -> list[ConnectionRow]:
        config = self.session.config
        usable = usable_connections(config, roles)
        requestable = requestable_connections(config, roles)
        masked = bool(config.masking.columns)
        rows = []
        for name in sorted(set(usable) | requestable):
            conn = config.connections[name]
            policy = config.policies[conn.policy]
            badges = [policy.preset]
            if conn.type == "postgres" and masked:
                badges.append("masked")
            if conn.type == "ssh" and conn.exec_only:
                badges.append("exec-only")
            rows.append(
                ConnectionRow(name, conn.type, name in usable, policy.name, tuple(badges), conn.description)
            )
        return rows

    def usable_connection_names(self) -> list[str]:
        return sorted(usable_connections(self.session.config, self.roles_seen))

    # -- opening and closing panes

    def on_connections_view_open_requested(self, event: ConnectionsView.OpenRequested) -> None:
        self.open_connection(event.name)

    def open_connection(self, name: str) -> None:
        config = self.session.config
        conn = config.connections.get(name)
        if conn is None:
            self.notify(f"Unknown connection {name}", severity="error")
            return
        if name not in self.usable_connection_names():
            self.notify(f"{name} needs an approved elevation request first.", severity="warning")
            return
        if conn.type != "postgres":
            self.notify(f"{name}: SSH panes arrive in a later version of bastion.", severity="warning")
            return
        self._pane_serial += 1
        pane_id = f"pane-{self._pane_serial}"
        tabs = self.base.query_one("#tabs", TabbedContent)
        pane = TabPane(name, SqlPane(self.session, name, show_timings=self.show_timings), id=pane_id)
        tabs.add_pane(pane)
        tabs.active = pane_id

    def go_to_connection(self, name: str) -> None:
        """The palette's "Open NAME": the pane already open on it if there is one, else a new one."""
        for pane in self.base.query(SqlPane):
            if pane.connection == name and pane.parent is not None and isinstance(pane.parent, TabPane):
                self.show_tab(str(pane.parent.id))
                return
        self.open_connection(name)

    def action_close_pane(self) -> None:
        tabs = self.base.query_one("#tabs", TabbedContent)
        active = tabs.active
        if not active.startswith("pane-"):
            return
        pane = tabs.get_pane(active).query_one(SqlPane)
        self.close_pane_worker(pane, active)

    @work(thread=True, group="close")
    def close_pane_worker(self, pane: SqlPane, pane_id: str) -> None:
        pane.close_pipeline()
        self.call_from_thread(self.base.query_one("#tabs", TabbedContent).remove_pane, pane_id)

    def show_tab(self, tab: str) -> None:
        tabs = self.base.query_one("#tabs", TabbedContent)
        try:
            tabs.active = tab
        except ValueError:
            self.notify(f"No {tab} tab for your roles.", severity="warning")
            return
        # Focus moves into the new tab: left on a widget of the hidden tab, it would pull that tab back.
        target = next((w for w in tabs.get_pane(tab).query("*") if w.focusable), None)
        if target is not None:
            target.focus()

    def action_show_tab(self, tab: str) -> None:
        self.show_tab(tab)

    def action_cycle_tab(self, step: int) -> None:
        """Connections, Approvals, Audit and the panes in a ring: every tab is a key away."""
        tabs = self.base.query_one("#tabs", TabbedContent)
        ids = [pane.id for pane in tabs.query(TabPane) if pane.id]
        if tabs.active in ids:
            self.show_tab(ids[(ids.index(tabs.active) + step) % len(ids)])

    # -- ending

    async def action_quit(self) -> None:
        await self.close_all_panes()
        self.record_unfinished_login("quit at the login screen")
        self.exit(Outcome("ended"))

    def record_unfinished_login(self, why: str) -> None:
        """A device login left half-way is evidence too: recorded as a refused session, start to end."""
        if self.needs_oidc and not self.session.started_at:
            self.session.refuse(f"the device login was not completed ({why})", {"oidc": "abandoned"})

    async def close_all_panes(self) -> None:
        panes = list(self.base.query(SqlPane))
        if panes:
            await asyncio.gather(*(asyncio.to_thread(pane.close_pipeline) for pane in panes))

    def hang_up(self, signame: str) -> None:
        """The SSH client is gone: close targets and end, recorded as abnormal."""
        for pane in self.base.query(SqlPane):
            if pane.pipeline is not None:
                pane.pipeline.cancel()
        self.record_unfinished_login(f"{signame} received")
        self.exit(Outcome("hangup", f"{signame} received: the SSH connection ended"))

    def poll_recording(self) -> None:
        """Recording status from the recorder; a recording that can no longer be kept ends the session."""
        if not self.screen_stack:
            return
        status, end = self.session.recording.poll()
        self.base.query_one(SessionHeader).recording = status
        if end is not None:
            for pane in self.base.query(SqlPane):
                if pane.pipeline is not None:
                    pane.pipeline.cancel()
            self.record_unfinished_login("the recording ended")
            self.exit(Outcome("abnormal", end))

    def end_if_idle(self) -> None:
        idle = time.monotonic() - self.last_activity
        if idle >= self.idle_timeout_s:
            self.record_unfinished_login("idle")
            self.exit(Outcome("idle", f"session ended after {format_duration(idle)} without input"))

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key | events.MouseDown | events.Paste):
            self.last_activity = time.monotonic()
        await super().on_event(event)

    # -- no way out

    def action_refuse_escape(self, key: str) -> None:
        editor = self.focused
        if key == "ctrl+z" and isinstance(editor, TextArea) and not editor.read_only:
            editor.undo()  # in the editor Ctrl+Z is undo, as everywhere else; it never suspends anything
            return
        self.notify(f"{key} does nothing here: bastion has no shell to return to. Ctrl+Q ends the session.")

    def action_suspend_process(self) -> None:
        self.action_refuse_escape("suspend")

    def action_screenshot(self, filename: str | None = None, path: str | None = None) -> None:
        self.notify("Screenshots to files are disabled on the bastion.", severity="warning")

    def save_screenshot(self, *args: Any, **kwargs: Any) -> str:
        raise PermissionError("screenshots to files are disabled on the bastion")

    def deliver_screenshot(self, *args: Any, **kwargs: Any) -> None:
        self.notify("Screenshots to files are disabled on the bastion.", severity="warning")

    def deliver_text(self, *args: Any, **kwargs: Any) -> None:
        self.notify("Saving files is disabled on the bastion.", severity="warning")

    def open_url(self, *args: Any, **kwargs: Any) -> None:
        self.notify("Opening links is disabled on the bastion.", severity="warning")

    def _handle_exception(self, error: Exception) -> None:
        """A bug ends the session with one line, never Textual's traceback: its locals can hold rows before
        masking or a secret, and the screen is recorded. The error's type is audited."""
        self._return_code = 1
        if self._exception is None:  # run_test() re-raises it, so tests still see the bug
            self._exception = error
            self._exception_event.set()
        with contextlib.suppress(Exception):
            self.record_unfinished_login(f"internal error ({type(error).__name__})")
            self.session.event("session_error", {"error": type(error).__name__, "where": "tui"})
        self.exit(
            Outcome("abnormal", f"internal error ({type(error).__name__}): the session ended; it was audited")
        )

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield SystemCommand("Quit", "End this bastion session", self.action_quit)


def run_tui(session: Session) -> Outcome:
    """Run the app on the login's terminal; what the core's login calls for interactive sessions."""
    app = BastionApp(session, needs_oidc=session.config.oidc is not None and not session.started_at)
    outcome = app.run()
    if outcome is None:
        return Outcome("abnormal", "the TUI stopped without an outcome")
    return outcome


def header_text(app: BastionApp) -> Text:
    """The header as text (tests and benchmarks read it)."""
    return app.query_one(SessionHeader).render()
