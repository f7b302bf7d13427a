"""Small modal forms: a reason (approve, deny, request approval) and an elevation request."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Select, Static

from bastion.units import parse_duration
from tui.safe import text


class ReasonScreen(ModalScreen[str | None]):
    """Ask for a reason; Enter submits, Esc cancels. A required reason cannot be empty."""

    BINDINGS: ClassVar = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, detail: str = "", *, required: bool = True) -> None:
        super().__init__()
        self.title_text = title
        self.detail = detail
        self.required = required

    def compose(self) -> ComposeResult:
        with Vertical(classes="form"):
            yield Static(text(self.title_text, "bold"))
            if self.detail:
                yield Static(text(self.detail, "dim"), classes="form-detail")
            yield Input(placeholder="reason" + ("" if self.required else " (optional)"), id="reason")
            yield Static(Text("Enter submits · Esc cancels", "dim"), id="form-hint")

    def on_mount(self) -> None:
        self.query_one("#reason", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        reason = event.value.strip()
        if self.required and not reason:
            self.query_one("#form-hint", Static).update(Text("A reason is required.", "bold red"))
            return
        self.dismiss(reason)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ElevationScreen(ModalScreen[tuple[str, float, str] | None]):
    """Ask for elevation: what (a role or connection you may request), for how long, and why."""

    BINDINGS: ClassVar = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, targets: list[str], initial: str | None = None) -> None:
        super().__init__()
        self.targets = targets
        self.initial = initial if initial in targets else (targets[0] if targets else None)

    def compose(self) -> ComposeResult:
        with Vertical(classes="form"):
            yield Static(Text("Request elevation", "bold"))
            yield Select(
                [(name, name) for name in self.targets], value=self.initial, id="target", allow_blank=False
            )
            yield Input(value="1h", placeholder="for how long, e.g. 30m, 2h", id="duration")
            yield Input(placeholder="reason", id="reason")
            yield Static(Text("Enter in the reason submits · Esc cancels", "dim"), id="form-hint")

    def on_mount(self) -> None:
        self.query_one("#reason", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        hint = self.query_one("#form-hint", Static)
        target = self.query_one("#target", Select).value
        reason = self.query_one("#reason", Input).value.strip()
        try:
            duration = parse_duration(self.query_one("#duration", Input).value)
        except ValueError as exc:
            hint.update(Text(str(exc), "bold red"))
            return
        if not reason:
            hint.update(Text("A reason is required.", "bold red"))
            self.query_one("#reason", Input).focus()
            return
        if not isinstance(target, str):
            hint.update(Text("Choose what to request.", "bold red"))
            return
        self.dismiss((target, duration, reason))

    def action_cancel(self) -> None:
        self.dismiss(None)
