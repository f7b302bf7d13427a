"""The Approvals tab (approvers) and the Audit tab (auditors): live views of what the store holds.

The app watches the store (LISTEN/NOTIFY on PostgreSQL, change polling on TinyDB) and posts StoreChanged;
these views re-read on it, so a request made on any bastion host appears without a restart — and rings the
terminal bell for approvers.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from rich.console import Group
from rich.syntax import Syntax
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Static

from bastion.session import Session
from bastion.store.base import Grant, Request, SessionRecord
from bastion.units import format_duration
from tui.safe import clean, text


class StoreChanged(Message):
    """The store's change counter moved (posted by the app's watcher)."""

    def __init__(self, counter: int) -> None:
        super().__init__()
        self.counter = counter


def _when(ts: float) -> Text:
    return Text(time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + "Z")


class ApprovalsView(Vertical):
    """Pending requests this approver may decide (never their own), the selected one in detail, active
    grants that may be ended early, and past decisions with a filter. a approves, d denies (a deny needs a
    reason), r revokes the highlighted grant (with a reason)."""

    BINDINGS: ClassVar = [
        Binding("a", "decide('approve')", "Approve"),
        Binding("d", "decide('deny')", "Deny"),
        Binding("r", "revoke", "Revoke grant"),
    ]

    class Loaded(Message):
        def __init__(
            self,
            pending: list[Request],
            past: list[Request],
            reasons: dict[str, list[str]],
            grants: list[Grant],
        ) -> None:
            super().__init__()
            self.pending = pending
            self.past = past
            self.reasons = reasons
            self.grants = grants

    class Decided(Message):
        def __init__(self, outcome: str) -> None:
            super().__init__()
            self.outcome = outcome

    def __init__(self, session: Session, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.session = session
        self.pending: list[Request] = []
        self.past: list[Request] = []
        self.reasons: dict[str, list[str]] = {}
        self.grants: list[Grant] = []
        self.known_ids: set[str] | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text("Pending requests — a approve · d deny", "bold"), classes="list-title")
        with Horizontal(classes="approvals-body"):
            pending: DataTable[Text] = DataTable(id="pending", cursor_type="row", zebra_stripes=True)
            yield pending
            yield Static(Text("Select a request", "dim"), id="request-detail")
        yield Static(Text("Active grants — r revoke", "bold"), classes="list-title")
        grants: DataTable[Text] = DataTable(id="grants", cursor_type="row", zebra_stripes=True)
        yield grants
        yield Static(Text("Past decisions", "bold"), classes="list-title")
        yield Input(placeholder="filter past decisions: state, requester, target or text", id="past-filter")
        past: DataTable[Text] = DataTable(id="past", cursor_type="row", zebra_stripes=True)
        yield past

    def on_mount(self) -> None:
        self.query_one("#pending", DataTable).add_columns(
            "id", "requester", "kind", "target", "pending for", "reason"
        )
        self.query_one("#past", DataTable).add_columns(
            "id", "state", "requester", "target", "decided by", "when"
        )
        self.query_one("#grants", DataTable).add_columns(
            "grant", "user", "kind", "target", "time left", "request"
        )
        self.reload()

    @on(StoreChanged)
    def store_changed(self, _event: StoreChanged) -> None:
        self.reload()

    @work(thread=True, exclusive=True, group="approvals")
    def reload(self) -> None:
        from bastion.approvals import for_session
        from bastion.policy.sql import classify
        from bastion.policy.verdict import decide

        approvals = for_session(self.session)
        approvals.expire_stale()
        pending = approvals.pending_for(self.session.user.name)
        # Past decisions this approver may see: on targets they approve, or their own requests.
        user = self.session.user.name
        mine = approvals.approvable_targets_of(user)
        past = [
            r
            for r in self.session.store.list_requests()
            if r.state != "pending" and (r.target in mine or r.requester == user)
        ][-200:]
        reasons: dict[str, list[str]] = {}
        for request in pending:
            if request.kind == "statement" and request.statement:
                conn = self.session.config.connections.get(request.target)
                if conn is not None:
                    decision = decide(self.session.config.policies[conn.policy], classify(request.statement))
                    reasons[request.id] = [*decision.reasons, *decision.warnings]
        grants = approvals.revocable_for(self.session.user.name)
        self.post_message(self.Loaded(pending, past, reasons, grants))

    def on_approvals_view_loaded(self, event: Loaded) -> None:
        new = {r.id for r in event.pending}
        if self.known_ids is not None and new - self.known_ids:
            self.app.bell()
            self.notify(f"{len(new - self.known_ids)} new request(s) to decide")
        self.known_ids = new
        self.pending, self.past, self.reasons = event.pending, event.past, event.reasons
        self.fill_grants(event.grants)
        table = self.query_one("#pending", DataTable)
        table.clear()
        now = time.time()
        for r in self.pending:
            table.add_row(
                text(r.id), text(r.requester, "bold"), text(r.kind), text(r.target),
                Text(format_duration(now - r.created_at)), text(r.reason, single_line=True), key=r.id,
            )  # fmt: skip
        self.show_detail()
        self.fill_past(self.query_one("#past-filter", Input).value)

    def fill_grants(self, grants: list[Grant]) -> None:
        self.grants = grants
        table = self.query_one("#grants", DataTable)
        table.clear()
        now = time.time()
        for g in grants:
            table.add_row(
                text(g.id), text(g.user, "bold"), text(g.kind), text(g.target),
                Text(format_duration(max(0.0, g.expires_at - now))), text(g.request_id), key=g.id,
            )  # fmt: skip

    def fill_past(self, needle: str) -> None:
        needle = needle.strip().lower()
        table = self.query_one("#past", DataTable)
        table.clear()
        for r in reversed(self.past):
            haystack = " ".join([r.id, r.state, r.requester, r.target, r.statement or "", r.reason]).lower()
            if needle and needle not in haystack:
                continue
            deciders = ", ".join(f"{d['approver']} ({d['decision']})" for d in r.decisions) or "—"
            when = max((d["at"] for d in r.decisions), default=r.created_at)
            table.add_row(
                text(r.id), text(r.state), text(r.requester), text(r.target), text(deciders), _when(when)
            )

    @on(Input.Changed, "#past-filter")
    def past_filter(self, event: Input.Changed) -> None:
        self.fill_past(event.value)

    def selected(self) -> Request | None:
        table = self.query_one("#pending", DataTable)
        if not self.pending or table.cursor_row < 0:
            return None
        return self.pending[min(table.cursor_row, len(self.pending) - 1)]

    @on(DataTable.RowHighlighted, "#pending")
    def show_detail(self, _event: object = None) -> None:
        request = self.selected()
        detail = self.query_one("#request-detail", Static)
        if request is None:
            detail.update(Text("No pending requests you may decide.", "dim"))
            return
        parts: list[Any] = [
            Text.assemble(("Request ", "bold"), text(request.id), " by ", text(request.requester, "bold")),
            Text.assemble("target ", text(request.target, "bold"), f" · {request.kind}"),
            Text.assemble("reason: ", text(request.reason)),
        ]
        if request.kind == "statement":
            parts.append(Syntax(clean(request.statement or ""), "sql", word_wrap=True, theme="ansi_dark"))
            for reason in self.reasons.get(request.id, []):
                parts.append(Text.assemble("• ", text(reason, "yellow", single_line=True)))
        else:
            parts.append(Text(f"for {format_duration(request.duration_s or 0)}"))
        parts.append(Text(f"expires in {format_duration(request.expires_at - time.time())}", "dim"))
        detail.update(Group(*parts))

    def action_decide(self, decision: str) -> None:
        request = self.selected()
        if request is None:
            self.notify("No request selected.", severity="warning")
            return
        from tui.screens.forms import ReasonScreen

        verb = "Approve" if decision == "approve" else "Deny"
        title = f"{verb} {request.id} ({request.requester} → {request.target})"
        self.app.push_screen(
            ReasonScreen(title, request.statement or "", required=decision == "deny"),
            lambda reason: (
                self.decide_in_worker(request.id, decision, reason) if reason is not None else None
            ),
        )

    @work(thread=True, group="approvals-decide")
    def decide_in_worker(self, request_id: str, decision: str, reason: str) -> None:
        from bastion.approvals import ApprovalError, for_session
        from bastion.notify import notify_request

        approvals = for_session(self.session)
        try:
            request = approvals.decide(request_id, self.session.user.name, decision, reason)
        except ApprovalError as exc:
            self.post_message(self.Decided(f"refused: {exc}"))
            return
        notify_request(self.session, decision, request)
        self.post_message(self.Decided(f"{request_id}: {request.state}"))

    def action_revoke(self) -> None:
        table = self.query_one("#grants", DataTable)
        if not self.grants or table.cursor_row < 0:
            self.notify("No active grant to revoke.", severity="warning")
            return
        grant = self.grants[min(table.cursor_row, len(self.grants) - 1)]
        from tui.screens.forms import ReasonScreen

        own = grant.user == self.session.user.name
        title = f"Revoke {grant.id} ({grant.user} → {grant.target}, {grant.kind})"
        self.app.push_screen(
            ReasonScreen(title, "", required=not own),
            lambda reason: self.revoke_in_worker(grant.id, reason) if reason is not None else None,
        )

    @work(thread=True, group="approvals-decide")
    def revoke_in_worker(self, grant_id: str, reason: str) -> None:
        from bastion.approvals import ApprovalError, for_session
        from bastion.notify import notify_revoked

        approvals = for_session(self.session)
        try:
            grant = approvals.revoke(grant_id, self.session.user.name, reason)
        except ApprovalError as exc:
            self.post_message(self.Decided(f"refused: {exc}"))
            return
        notify_revoked(self.session, grant, self.session.user.name, reason)
        self.post_message(self.Decided(f"{grant_id}: revoked"))

    def on_approvals_view_decided(self, event: Decided) -> None:
        self.notify(
            clean(event.outcome, single_line=True),
            severity="error" if event.outcome.startswith("refused") else "information",
        )
        self.reload()


class AuditView(Vertical):
    """Sessions across the bastion (replay, search and export arrive with the recordings)."""

    class Loaded(Message):
        def __init__(self, sessions: list[SessionRecord]) -> None:
            super().__init__()
            self.sessions = sessions

    def __init__(self, session: Session, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.session = session

    def compose(self) -> ComposeResult:
        yield Static(Text("Sessions", "bold"), classes="list-title")
        table: DataTable[Text] = DataTable(cursor_type="row", zebra_stripes=True)
        yield table

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(
            "session", "user", "kind", "status", "started", "duration", "host"
        )
        self.reload()

    @on(StoreChanged)
    def store_changed(self, _event: StoreChanged) -> None:
        self.reload()

    @work(thread=True, exclusive=True, group="audit")
    def reload(self) -> None:
        self.post_message(self.Loaded(self.session.store.list_sessions(limit=200)))

    def on_audit_view_loaded(self, event: Loaded) -> None:
        table = self.query_one(DataTable)
        table.clear()
        now = time.time()
        for item in event.sessions:
            table.add_row(
                text(item.id), text(item.user), text(item.kind), text(item.status), _when(item.started_at),
                Text(format_duration((item.ended_at or now) - item.started_at)), text(item.host),
            )  # fmt: skip
