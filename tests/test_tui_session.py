"""The TUI as a login shell: run in a real pty by `bastion login`, ended by SIGHUP with the end recorded;
the OIDC device login screen against the real loopback provider."""

from __future__ import annotations

import os
import pty
import select
import signal
import threading
import time
from pathlib import Path

import pytest
from textual.widgets import TabbedContent

from bastion.audit.log import AuditLog, read_events
from bastion.audit.signing import generate_key, load_private_key
from bastion.config import load_config
from bastion.identity.keys import parse_public_key
from bastion.session import Session
from bastion.store import TinyDBStore
from tests.configs import ALICE_KEY, BOB_KEY, base_config, secret, write_config
from tests.oidc_provider import DEFAULT_CLAIMS, running_provider
from tui.app import BastionApp
from tui.widgets.connections import ConnectionsView

REPO = Path(__file__).resolve().parent.parent
BASTION = REPO / ".venv" / "bin" / "bastion"


def _read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    buffer = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and needle not in buffer:
        if select.select([fd], [], [], 0.05)[0]:
            try:
                buffer += os.read(fd, 65536)
            except OSError:
                break
    return buffer


def test_sighup_ends_the_session_and_records_it(tmp_path: Path) -> None:
    config_path = write_config(tmp_path)
    config = load_config(config_path)
    generate_key(config.audit.signing_key)
    fingerprint = parse_public_key(ALICE_KEY).fingerprint
    pid, fd = pty.fork()
    if pid == 0:  # the child becomes `bastion login` on a terminal, as under sshd
        env = {"PATH": "/usr/bin:/bin", "TERM": "xterm-256color", "LANG": "C.UTF-8"}
        os.execve(
            str(BASTION), [str(BASTION), "login", "--config", str(config_path), "--key", fingerprint], env
        )
    try:
        assert b"Connections" in _read_until(fd, b"Connections", 15), "the TUI did not show up"
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        status = None
        while time.monotonic() < deadline:
            _read_until(fd, b"\0", 0.1)
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
        assert status is not None and done == pid, "login did not end after SIGHUP"
    finally:
        os.close(fd)
    ends = [e for e in read_events(config.audit.log) if e["type"] == "session_end"]
    assert ends and ends[-1]["payload"]["status"] == "hangup"
    assert "SIGHUP" in ends[-1]["payload"]["reason"]


async def test_oidc_device_login_screen(tmp_path: Path) -> None:
    with running_provider(device_interval=1) as provider:
        secret(tmp_path / "secrets" / "oidc", provider.client_secret)
        extra = (
            f'\n[identity.oidc]\nissuer = "{provider.issuer}"\nclient_id = "{provider.client_id}"\n'
            'client_secret_file = "secrets/oidc"\n'
        )
        text = base_config(tmp_path, extra=extra)
        text = text.replace('groups = ["developers"]\n', "", 1).replace('groups = ["approvers"]\n', "", 1)
        text = text.replace('groups = ["developers"]\nconnections', 'groups = ["engineering"]\nconnections')
        config = load_config(write_config(tmp_path, text))
        generate_key(config.audit.signing_key)
        store = TinyDBStore(Path(config.bastion.state.removeprefix("tinydb:")))
        audit = AuditLog(config.audit.log, config.bastion.name, load_private_key(config.audit.signing_key))
        session = Session(
            config, store, audit, config.users["alice"], parse_public_key(ALICE_KEY).fingerprint, "tui"
        )

        def approve() -> None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                codes = provider.pending_user_codes()
                if codes:
                    claims = {**DEFAULT_CLAIMS, "groups": ["engineering", "approvers"]}
                    provider.approve(codes[0], "sub-alice", claims)
                    return
                time.sleep(0.05)

        threading.Thread(target=approve, daemon=True).start()
        app = BastionApp(session, needs_oidc=True)
        async with app.run_test(size=(120, 30)) as pilot:
            await pilot.pause(0.3)
            assert not app.base.query("#approvals")  # no role tab before the login says who this is
            prompt = str(app.screen.query_one("#login-prompt").render())
            assert "bastion-test" in prompt and session.key_fingerprint in prompt
            for _ in range(100):
                await pilot.pause(0.1)
                if session.started_at:
                    break
            assert session.started_at, "the session did not start after the device login"
            assert session.groups is not None and "engineering" in session.groups
            await pilot.pause(0.2)
            rows = {row.name: row.usable for row in app.query_one(ConnectionsView).rows}
            assert rows == {"pg-readonly": True, "pg-guarded": False}  # roles from the token's groups
            assert app.is_approver and app.base.query("#approvals")  # the approver role came with the login
            await pilot.press("ctrl+q")
        session.end()
        starts = [e for e in read_events(config.audit.log) if e["type"] == "session_start"]
        assert starts[-1]["payload"]["oidc"]["subject"] == "sub-alice"


async def test_a_bug_ends_the_session_in_one_line_without_a_traceback(tmp_path: Path) -> None:
    """Textual would print a traceback with locals (rows before masking, secrets) onto the recorded screen."""
    config = load_config(write_config(tmp_path))
    generate_key(config.audit.signing_key)
    store = TinyDBStore(Path(config.bastion.state.removeprefix("tinydb:")))
    audit = AuditLog(config.audit.log, config.bastion.name, load_private_key(config.audit.signing_key))
    session = Session(
        config, store, audit, config.users["alice"], parse_public_key(ALICE_KEY).fingerprint, "tui"
    )
    session.start()
    app = BastionApp(session)
    planted = "value-that-must-not-show-4111111111111111"

    def broken() -> None:
        raise RuntimeError(planted)

    raised = None
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.pause()
            app.call_later(broken)
            await pilot.pause(0.3)
    except RuntimeError as exc:  # run_test re-raises what the app met, so tests still see bugs
        raised = exc
    assert raised is not None and planted in str(raised)
    assert app._exit_renderables == []  # nothing to print after the screen is restored
    assert app.return_value is not None and app.return_value.status == "abnormal"
    assert app.return_value.reason.startswith("internal error (RuntimeError)")
    assert planted not in app.return_value.reason
    (error,) = [e for e in read_events(config.audit.log) if e["type"] == "session_error"]
    assert error["payload"] == {"error": "RuntimeError", "where": "tui"}
    session.end()


async def test_f7_reaches_every_tab_from_the_keyboard(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    generate_key(config.audit.signing_key)
    store = TinyDBStore(Path(config.bastion.state.removeprefix("tinydb:")))
    audit = AuditLog(config.audit.log, config.bastion.name, load_private_key(config.audit.signing_key))
    bob = Session(config, store, audit, config.users["bob"], parse_public_key(BOB_KEY).fingerprint, "tui")
    bob.start()
    app = BastionApp(bob)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause(0.2)
        tabs = app.query_one("#tabs", TabbedContent)
        seen = [tabs.active]
        for key in ("f7", "f7", "shift+f7"):
            await pilot.press(key)
            await pilot.pause(0.2)
            seen.append(tabs.active)
        assert seen == ["connections", "approvals", "connections", "approvals"]
    bob.end()


@pytest.mark.parametrize("how", ["quit at the login screen", "idle"])
async def test_a_device_login_left_half_way_is_recorded(tmp_path: Path, how: str) -> None:
    with running_provider(device_interval=1) as provider:
        secret(tmp_path / "secrets" / "oidc", provider.client_secret)
        extra = (
            f'\n[identity.oidc]\nissuer = "{provider.issuer}"\nclient_id = "{provider.client_id}"\n'
            'client_secret_file = "secrets/oidc"\n'
        )
        text = base_config(tmp_path, extra=extra).replace('groups = ["developers"]\n', "", 1)
        config = load_config(write_config(tmp_path, text.replace('groups = ["approvers"]\n', "", 1)))
        generate_key(config.audit.signing_key)
        store = TinyDBStore(Path(config.bastion.state.removeprefix("tinydb:")))
        audit = AuditLog(config.audit.log, config.bastion.name, load_private_key(config.audit.signing_key))
        session = Session(
            config, store, audit, config.users["alice"], parse_public_key(ALICE_KEY).fingerprint, "tui"
        )
        app = BastionApp(session, needs_oidc=True)
        async with app.run_test(size=(120, 30)) as pilot:
            await pilot.pause(0.3)
            if how == "idle":
                app.idle_timeout_s, app.last_activity = 1.0, time.monotonic() - 5
                app.end_if_idle()
            else:
                await pilot.press("ctrl+q")  # at the login screen, before any approval
            await pilot.pause(0.2)
    types = [
        e["type"] for e in read_events(config.audit.log) if e["type"] not in ("config_change", "checkpoint")
    ]
    assert types == ["session_start", "login_refused", "session_end"], types
    refused = next(e for e in read_events(config.audit.log) if e["type"] == "login_refused")
    assert f"not completed ({how})" in refused["payload"]["reason"]
