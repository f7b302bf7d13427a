"""The Approvals tab (approvers) and the Audit tab (auditors): live lists of what the store holds.

They poll the store's change counter, so a request or session made by any bastion process appears without
a restart; the heavier lists are re-read only when the counter moved.
"""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Static

from bastion.session import Session
from bastion.store.base import Request, SessionRecord
from bastion.units import format_duration
from tui.safe import text

POLL_S = 2.0


class _StoreList(Vertical):
    """A table refreshed from the store when its change counter moves."""

    title = ""
    columns: tuple[str, ...] = ()

    class Loaded(Message):
        def __init__(self, view: _StoreList, items: list[Any]) -> None:
            super().__init__()
            self.view = view
            self.items = items

    def __init__(self, session: Session, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.session = session
        self.seen_counter: int | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text(self.title, "bold"), classes="list-title")
        table: DataTable[Text] = DataTable(cursor_type="row", zebra_stripes=True)
        yield table

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(*self.columns)
        self.poll()
        self.set_interval(POLL_S, self.poll)

    @work(thread=True, exclusive=True)
    def poll(self) -> None:
        counter = self.session.store.change_counter()
        if counter == self.seen_counter:
            return
        self.seen_counter = counter
        self.post_message(self.Loaded(self, self.load()))

    def load(self) -> list[Any]:
        raise NotImplementedError

    def row(self, item: Any) -> list[Text]:
        raise NotImplementedError

    def on__store_list_loaded(self, event: Loaded) -> None:
        if event.view is not self:
            return
        table = self.query_one(DataTable)
        table.clear()
        for item in event.items:
            table.add_row(*self.row(item))


class ApprovalsView(_StoreList):
    title = "Pending requests"
    columns = ("id", "requester", "kind", "target", "pending for", "reason")

    def load(self) -> list[Request]:
        return self.session.store.list_requests(state="pending")

    def row(self, item: Request) -> list[Text]:
        return [
            text(item.id), text(item.requester), text(item.kind), text(item.target),
            Text(format_duration(time.time() - item.created_at)), text(item.reason, single_line=True),
        ]  # fmt: skip


class AuditView(_StoreList):
    title = "Sessions"
    columns = ("session", "user", "kind", "status", "started", "duration", "host")

    def load(self) -> list[SessionRecord]:
        return self.session.store.list_sessions(limit=200)

    def row(self, item: SessionRecord) -> list[Text]:
        end = item.ended_at or time.time()
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(item.started_at))
        return [
            text(item.id), text(item.user), text(item.kind), text(item.status), Text(started + "Z"),
            Text(format_duration(end - item.started_at)), text(item.host),
        ]  # fmt: skip
