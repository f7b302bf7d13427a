"""The OIDC device login inside the TUI: the code, the verification address, and — against device-code
phishing — the bastion's name and the SSH key fingerprint this login belongs to."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import LoadingIndicator, Static

from bastion.identity.oidc import DevicePrompt, format_prompt
from bastion.identity.oidc_login import login_session
from bastion.session import Session
from tui.safe import text


class LoginScreen(Screen[str | None]):
    """Dismissed with None when the identity provider confirmed the login, else with the reason."""

    class Prompt(Message):
        def __init__(self, prompt: DevicePrompt) -> None:
            super().__init__()
            self.prompt = prompt

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session

    def compose(self) -> ComposeResult:
        with Vertical(id="login-box"):
            yield Static(Text("Identity check", style="bold"), id="login-title")
            yield Static(Text("Asking the identity provider for a login code…", "dim"), id="login-prompt")
            yield LoadingIndicator()

    def on_mount(self) -> None:
        self.authenticate()

    @work(thread=True, exclusive=True)
    def authenticate(self) -> None:
        refused = login_session(self.session, lambda prompt: self.post_message(self.Prompt(prompt)))
        self.app.call_from_thread(self.dismiss, refused)

    def on_login_screen_prompt(self, event: Prompt) -> None:
        rendered = format_prompt(
            event.prompt,
            bastion_name=self.session.config.bastion.name,
            key_fingerprint=self.session.key_fingerprint,
        )
        self.query_one("#login-prompt", Static).update(text(rendered))
