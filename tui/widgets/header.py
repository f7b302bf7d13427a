"""The session header: who, where, with which roles, elevated until when, and whether it is recorded."""

from __future__ import annotations

import time

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from bastion.units import format_duration
from tui.safe import clean


class SessionHeader(Static):
    """One line; the app updates its reactives, the header renders them."""

    bastion: reactive[str] = reactive("")
    user: reactive[str] = reactive("")
    roles: reactive[tuple[str, ...]] = reactive(())
    elevated_until: reactive[float | None] = reactive(None)
    elevated: reactive[tuple[str, ...]] = reactive(())
    recording: reactive[str] = reactive("not recorded")
    now: reactive[float] = reactive(0.0)

    def render(self) -> Text:
        line = Text()
        line.append(" bastion ", style="bold reverse")
        line.append(f" {clean(self.bastion, single_line=True)} ", style="bold")
        line.append("│ ", style="dim")
        line.append(clean(self.user, single_line=True), style="bold")
        line.append(" │ roles: ", style="dim")
        line.append(", ".join(self.roles) or "none")
        if self.elevated and self.elevated_until:
            left = max(0.0, self.elevated_until - (self.now or time.time()))
            line.append(" │ ", style="dim")
            line.append(
                f"elevated: {', '.join(self.elevated)} ({format_duration(left)} left)", style="bold yellow"
            )
        line.append(" │ ", style="dim")
        style = "green" if self.recording.startswith("recording") else "yellow"
        line.append(f"● {self.recording}", style=style)
        return line
