"""The command palette offers the app's own commands and nothing else: no screenshot to a file, no theme
picker that could be abused, nothing that reaches outside the session."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from textual.command import Hit, Hits, Provider

if TYPE_CHECKING:
    from tui.app import BastionApp


class BastionCommands(Provider):
    """Open a connection, switch tabs, quit."""

    def _commands(self) -> list[tuple[str, str, object]]:
        app: BastionApp = self.app  # type: ignore[assignment]
        out: list[tuple[str, str, object]] = [
            ("Connections", "Show the connections tab", partial(app.show_tab, "connections")),
            ("Quit", "End this bastion session", app.action_quit),
        ]
        if app.my_elevations():
            out.append(("End my elevation", "Give back elevated access now", app.give_back_elevation))
        if app.is_approver:
            out.append(("Approvals", "Show the approvals tab", partial(app.show_tab, "approvals")))
        if app.is_auditor:
            out.append(("Audit", "Show the audit tab", partial(app.show_tab, "audit")))
        for name in app.usable_connection_names():
            go = partial(app.go_to_connection, name)
            out.append((f"Open {name}", f"Go to {name}'s pane, or open one", go))
        return out

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, callback in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)  # type: ignore[arg-type]

    async def discover(self) -> Hits:
        for name, help_text, callback in self._commands():
            yield Hit(1.0, name, callback, help=help_text)  # type: ignore[arg-type]
