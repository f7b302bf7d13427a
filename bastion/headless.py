"""Headless commands that arrive as SSH_ORIGINAL_COMMAND: parsed strictly with shlex, never by a shell.

Each command runs inside the login's Session, so it is audited exactly like a TUI session.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable
from typing import TextIO

from bastion.identity.roles import requestable_connections, usable_connections
from bastion.session import Session

COMMANDS: dict[str, str] = {
    "whoami": "who you are on this bastion: user, roles, key",
    "connections": "the connections you may use, and those you may request",
}


class UsageError(Exception):
    """The command line is not understood; exit 2 with the message."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting: the input is hostile."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def command_list() -> str:
    return "\n".join(f"  {name:<12} {text}" for name, text in COMMANDS.items())


def parse(command_line: str) -> list[str]:
    try:
        words = shlex.split(command_line, comments=False, posix=True)
    except ValueError as exc:
        raise UsageError(f"cannot parse the command: {exc}") from None
    if not words:
        raise UsageError("empty command")
    if words[0] not in COMMANDS:
        raise UsageError(f"unknown command {words[0][:40]!r}; commands:\n{command_list()}")
    return words


def run(session: Session, command_line: str, out: TextIO | None = None) -> int:
    """Run one headless command; returns the exit code. The session must be started."""
    out = out or sys.stdout
    words = parse(command_line)
    handler: Callable[[Session, list[str], TextIO], int] = _HANDLERS[words[0]]
    session.event("headless_command", {"command": words[0], "argv": words[1:]})
    return handler(session, words[1:], out)


def _whoami(session: Session, args: list[str], out: TextIO) -> int:
    parser = _Parser(prog="whoami", add_help=False)
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args(args)
    roles = session.roles()
    info = {
        "user": session.user.name,
        "bastion": session.config.bastion.name,
        "key": session.key_fingerprint,
        "session": session.id,
        "roles": list(roles.roles),
        "elevated": list(roles.elevated),
        "groups": list(session.groups if session.groups is not None else session.user.groups),
    }
    if opts.json:
        out.write(json.dumps(info) + "\n")
    else:
        for key, value in info.items():
            shown = ", ".join(value) if isinstance(value, list) else value
            out.write(f"{key:<9}{shown}\n")
    return 0


def _connections(session: Session, args: list[str], out: TextIO) -> int:
    parser = _Parser(prog="connections", add_help=False)
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args(args)
    roles = session.roles()
    config = session.config
    usable = usable_connections(config, roles)
    requestable = requestable_connections(config, roles)
    rows = []
    for name in sorted(set(usable) | requestable):
        conn = config.connections[name]
        rows.append(
            {
                "name": name,
                "type": conn.type,
                "access": "yes" if name in usable else "request",
                "policy": conn.policy,
                "description": conn.description,
            }
        )
    if opts.json:
        for row in rows:
            out.write(json.dumps(row) + "\n")
        return 0
    if not rows:
        out.write("no connections\n")
    for row in rows:
        line = f"{row['name']:<20} {row['type']:<9} {row['access']:<8} {row['policy']:<14}"
        out.write(f"{line} {row['description']}\n")
    return 0


_HANDLERS: dict[str, Callable[[Session, list[str], TextIO], int]] = {
    "whoami": _whoami,
    "connections": _connections,
}
