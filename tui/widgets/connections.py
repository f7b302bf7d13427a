"""The Connections tab: what this user may use now, and what they could request, filtered as they type."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Input

from tui.safe import text


@dataclass(frozen=True)
class ConnectionRow:
    name: str
    type: str
    usable: bool
    policy: str
    badges: tuple[str, ...]
    description: str


class ConnectionsView(Vertical):
    """Type to filter; Enter opens the highlighted connection, or the one whose name was typed exactly."""

    class OpenRequested(Message):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

    def __init__(self, rows: list[ConnectionRow], **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.rows = rows
        self.shown: list[ConnectionRow] = []

    def compose(self) -> ComposeResult:
        yield Input(placeholder="Type to filter · Enter opens · ↓ to the list", id="connection-filter")
        table: DataTable[Text] = DataTable(id="connection-table", cursor_type="row", zebra_stripes=True)
        yield table

    def on_mount(self) -> None:
        table = self.query_one("#connection-table", DataTable)
        table.add_columns("connection", "type", "access", "policy", "description")
        self.refill("")

    def refill(self, needle: str) -> None:
        needle = needle.strip().lower()
        table = self.query_one("#connection-table", DataTable)
        table.clear()
        self.shown = [
            row
            for row in self.rows
            if not needle or needle in row.name.lower() or needle in row.description.lower()
        ]
        for row in self.shown:
            access = Text("✓ use", style="green") if row.usable else Text("request", style="yellow")
            badges = Text(" ".join(f"[{b}]" for b in row.badges), style="cyan")
            table.add_row(
                text(row.name, "bold"), text(row.type), access, badges, text(row.description), key=row.name
            )

    def on_input_changed(self, event: Input.Changed) -> None:
        self.refill(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        typed = event.value.strip()
        exact = next((row for row in self.rows if row.name == typed), None)
        if exact is not None:
            self.post_message(self.OpenRequested(exact.name))
            return
        table = self.query_one("#connection-table", DataTable)
        if self.shown:
            index = min(max(table.cursor_row, 0), len(self.shown) - 1)
            self.post_message(self.OpenRequested(self.shown[index].name))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.post_message(self.OpenRequested(str(event.row_key.value)))

    def key_down(self) -> None:
        table = self.query_one("#connection-table", DataTable)
        if self.query_one("#connection-filter", Input).has_focus:
            table.focus()
