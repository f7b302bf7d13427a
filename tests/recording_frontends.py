"""Frontends for recording tests and bench/recording.py: what `bastion login` runs in the recorded child
instead of the TUI (tests swap `bastion.login.FRONTEND`, a module attribute users cannot reach).

They print numbered, timestamped lines — so a test can tell exactly what reached the sink and when it was
shown — or a block of bytes as fast as the pty takes them; and, like the TUI, they show the recorder's status
when it changes and end when the recorder asks. Configured by environment variables (test-only):

    RECTEST_LINES     lines to print (0: until killed)      RECTEST_INTERVAL  seconds between lines
    RECTEST_BYTES     print this many bytes at once instead  RECTEST_TAG       a word in every line
    RECTEST_PROMPT    first a password prompt (echo off, like getpass) and read a line
    RECTEST_GROUPS    start the session with these groups, as the TUI does after an OIDC device login
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

from bastion.session import Session

LINE = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvw\n"


@dataclass(frozen=True)
class Outcome:
    status: str
    reason: str = ""


def _poll(session: Session, shown: list[str]) -> str | None:
    link = session.recording
    if link is None:
        return None
    status, end = link.poll()
    if not shown or shown[-1] != status:
        shown.append(status)
        sys.stdout.write(f"[status] {status}\n")
    return end


def run_tui(session: Session) -> Outcome:
    if not session.started_at:
        groups = os.environ.get("RECTEST_GROUPS")
        if groups is not None:  # what the provider said: the recorder learns the real roles only now
            session.groups = tuple(g for g in groups.split(",") if g)
        session.start()
    out = sys.stdout
    total = int(os.environ.get("RECTEST_BYTES", "0"))
    if total:
        block = LINE * 1024
        fd = out.fileno()
        out.flush()
        written = 0
        while written < total:
            view = memoryview(block)[: min(len(block), total - written)]
            written += os.write(fd, view)
        return Outcome("ended")
    lines = int(os.environ.get("RECTEST_LINES", "0"))
    interval = float(os.environ.get("RECTEST_INTERVAL", "0.01"))
    tag = os.environ.get("RECTEST_TAG", session.id)
    shown: list[str] = []
    if os.environ.get("RECTEST_PROMPT"):  # like getpass: no echo while the password is typed
        import termios

        attrs = termios.tcgetattr(0)
        quiet = list(attrs)
        quiet[3] &= ~termios.ECHO
        termios.tcsetattr(0, termios.TCSANOW, quiet)
        out.write(os.environ["RECTEST_PROMPT"])
        out.flush()
        sys.stdin.readline()
        termios.tcsetattr(0, termios.TCSANOW, attrs)
        out.write("\n")
    n = 0
    while lines == 0 or n < lines:
        end = _poll(session, shown)
        if end is not None:
            out.write(f"[ended] {end}\n")
            out.flush()
            return Outcome("abnormal", end)
        out.write(f"{tag} tick {n:06d} t={time.time():.3f}\n")
        out.flush()
        if n % 50 == 0:
            session.event("headless_command", {"command": "tick", "argv": [str(n)]}, durable=False)
        n += 1
        time.sleep(interval)
    _poll(session, shown)
    out.write(f"{tag} done {n}\n")
    out.flush()
    return Outcome("ended")
