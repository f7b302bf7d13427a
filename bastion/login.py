"""`bastion login --key FP`: what sshd runs for every login, TUI or headless.

The key's fingerprint is the only identity input and it comes from our own authorized_keys line; everything
else a user sends (SSH_ORIGINAL_COMMAND, terminal input) is hostile. The session is recorded as started
before any command runs and as ended however the process stops (normal end, error, SIGHUP, SIGTERM).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
from types import FrameType

from bastion import headless
from bastion.config import Config
from bastion.identity.keys import is_fingerprint
from bastion.session import Session, SessionError, client_address, connect_store, open_audit_log
from bastion.store.base import Store


class _Hangup(Exception):
    """SIGHUP/SIGTERM turned into an exception so the session's end is still recorded."""


def _raise_hangup(signum: int, _frame: FrameType | None) -> None:
    raise _Hangup(signal.Signals(signum).name)


def _err(message: str) -> None:
    print(f"bastion: {message}", file=sys.stderr)


def _oidc_step(session: Session) -> bool:
    """Headless device login with the code on stderr (the TUI has its own screen). False: refused."""
    from bastion.identity.oidc import DevicePrompt, format_prompt
    from bastion.identity.oidc_login import login_session

    def show(prompt: DevicePrompt) -> None:
        text = format_prompt(
            prompt, bastion_name=session.config.bastion.name, key_fingerprint=session.key_fingerprint
        )
        print(text, file=sys.stderr, flush=True)

    refused = login_session(session, show)
    if refused is not None:
        session.refuse(refused, {"oidc": "refused"})
        _err(refused)
        return False
    return True


# The interactive front end is loaded by name, only for interactive logins: the core never imports textual,
# and a headless login never pays for loading it.
FRONTEND = "tui.app"


def _interactive(session: Session, store: Store) -> int:
    """The TUI on a pty that the recorder relays and records (bastion/recording/recorder.py): it checks the
    recording can be kept, starts the session, forks, and runs `_frontend` in the child."""
    from bastion.recording.recorder import run_interactive

    return run_interactive(session, _frontend)


def _frontend(session: Session) -> int:
    """The TUI on the recorded terminal; the session ends however the TUI does (quit, idle, hangup, crash)."""
    store = session.store
    status, reason, code = "abnormal", "the TUI stopped unexpectedly", 1
    try:
        run_tui = importlib.import_module(FRONTEND).run_tui
        if session.config.oidc is None and not session.started_at:
            session.start()
        outcome = run_tui(session)
        status, reason = outcome.status, outcome.reason
        code = 0 if status in ("ended", "idle") else 1
    except SessionError as exc:
        reason = str(exc)
    except Exception as exc:  # the terminal may be gone; the end must still be recorded
        reason = f"the TUI stopped unexpectedly ({type(exc).__name__})"
    finally:
        if session.started_at and not session.ended:
            session.end(status, reason)
        store.close()
    if status != "ended" and reason:
        with contextlib.suppress(OSError):
            _err(reason)
    return code


def login(config: Config, key_fingerprint: str) -> int:
    if not is_fingerprint(key_fingerprint):
        _err("malformed key fingerprint")
        return 1
    user = config.user_by_fingerprint(key_fingerprint)
    if user is None:
        _err(f"key {key_fingerprint} is not registered on {config.bastion.name}")
        return 1
    if user.disabled:
        _err(f"user {user.name} is disabled on {config.bastion.name}")
        return 1
    command = os.environ.get("SSH_ORIGINAL_COMMAND")
    no_terminal = command is None and not (sys.stdin.isatty() and sys.stdout.isatty())
    from bastion.recording.ship import nudge

    nudge(config)  # a detached `bastion ship --once`: leftovers of dead sessions ship; never waited for
    words = None
    usage_error = None
    if command is not None:
        try:
            words = headless.parse(command)
        except headless.UsageError as exc:
            usage_error = str(exc)

    try:
        store = connect_store(config)
        audit = open_audit_log(config)
    except SessionError as exc:
        _err(str(exc))
        return 1
    session = Session(
        config, store, audit, user, key_fingerprint, "headless" if command is not None else "tui",
        client=client_address(),
    )  # fmt: skip
    if no_terminal:  # audited like every other refused login
        try:
            session.refuse("no terminal: interactive login without a PTY", {"kind": "tui"})
        finally:
            store.close()
        _err("bastion needs a terminal: use ssh -t")
        return 1
    if command is None:
        return _interactive(session, store)
    for signum in (signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, _raise_hangup)
    status, reason, code = "ended", "", 1
    recording = None  # recording: headless runs are recorded too (their output as a cast)
    try:
        if config.oidc is not None and not _oidc_step(session):
            return 1
        from bastion.recording.recorder import HeadlessRecording

        pending = HeadlessRecording.preflight(session)
        session.start({"command": words[0] if words else None})
        recording = pending
        recording.attach()
        out, err = recording.streams(sys.stdout, sys.stderr)
        if usage_error is not None:
            session.event("headless_refused", {"reason": usage_error.splitlines()[0]})
            err.write(f"bastion: {usage_error}\n")
            code = 2
        else:
            try:
                code = headless.run(session, command, out, err)
            except headless.UsageError as exc:
                session.event("headless_refused", {"reason": str(exc).splitlines()[0]})
                err.write(f"bastion: {exc}\n")
                code = 2
        err.flush()
    except _Hangup as exc:
        status, reason = "abnormal", f"{exc} received"
    except SessionError as exc:
        status, reason = "abnormal", str(exc)
        _err(str(exc))
    finally:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if session.started_at:
            session.end(status, reason)
        if recording is not None:
            recording.finish(status)
        store.close()
    return code
