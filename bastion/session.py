"""One login: identity, store, audit context — shared by the TUI and headless commands.

A session exists in two places: the store's session index (what is running, for the Audit tab and for
crash recovery) and the audit log (start and end as hash-chained, durable events, the end followed by a
signed checkpoint). Both are written before the session does anything else, so nothing runs unrecorded.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bastion.audit.log import AuditLog
from bastion.audit.signing import SigningKeyError, load_private_key
from bastion.config import Config, User, read_secret
from bastion.config_audit import record_config_change
from bastion.identity.roles import RoleSet, role_set
from bastion.store import open_store
from bastion.store.base import SessionRecord, Store, StoreError


class SessionError(Exception):
    """A session cannot start or continue; the message is one line for the user, without secrets."""


def new_session_id() -> str:
    """Sortable by start time, unguessable: s-YYYYmmddTHHMMSS-<hex>."""
    return "s-" + time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(6)


def open_audit_log(config: Config) -> AuditLog:
    """The bastion's audit log, signing with its key; no key means no audit, so no session."""
    try:
        key = load_private_key(config.audit.signing_key)
    except SigningKeyError as exc:
        raise SessionError(f"audit log unavailable: {exc}") from None
    return AuditLog(
        config.audit.log, config.bastion.name, key, checkpoint_every=config.audit.checkpoint_every
    )


def connect_store(config: Config) -> Store:
    """The state store named by config, with its password read from the secret file when one is set."""
    password_file = config.bastion.state_password_file
    password = read_secret(password_file) if password_file is not None else None
    try:
        return open_store(config.bastion.state, password=password)
    except StoreError as exc:
        raise SessionError(f"state store unavailable: {exc}") from None


@dataclass
class Session:
    """A running login. Use start() then end(); `event()` writes a decision event under this session."""

    config: Config
    store: Store
    audit: AuditLog
    user: User
    key_fingerprint: str
    kind: str  # "tui" | "headless"
    id: str = field(default_factory=new_session_id)
    groups: tuple[str, ...] | None = None  # OIDC groups when OIDC is on
    client: str = ""
    oidc: dict[str, str] | None = None  # issuer, subject, binding outcome when OIDC is on
    started_at: float = 0.0
    ended: bool = False
    # Recording (bastion/recording) sets these; None for an unrecorded session (tests, tools). on_event sees
    # every audit record this session writes (markers, first/last seq); transcript gets each SQL statement
    # outcome (the SQL channel cast); recording answers poll() -> (header status, end reason or None).
    on_event: Callable[[dict[str, Any]], None] | None = field(default=None, repr=False)
    transcript: Callable[[Any, Any], None] | None = field(default=None, repr=False)
    recording: Any = field(default=None, repr=False)
    first_seq: int | None = None  # of this session's first event (the manifest's first audit seq)

    def roles(self, now: float | None = None) -> RoleSet:
        """Recomputed on every call: grants are checked when used."""
        return role_set(self.config, self.store, self.user, groups=self.groups, now=now)

    def event(self, type: str, payload: dict[str, Any], *, durable: bool = True) -> dict[str, Any]:
        record = self.audit.append(type, payload, session=self.id, user=self.user.name, durable=durable)
        if self.first_seq is None:
            self.first_seq = int(record["seq"])
        if self.on_event is not None:
            self.on_event(record)
        return record

    def start(self, extra: dict[str, Any] | None = None) -> None:
        self.started_at = time.time()
        user = self.user.name
        changed = record_config_change(self.config, self.store, self.audit, session=self.id, user=user)
        if changed is not None and self.first_seq is None:
            self.first_seq = int(changed["seq"])
        self.store.add_session(
            SessionRecord(
                id=self.id,
                bastion=self.config.bastion.name,
                user=self.user.name,
                key_fingerprint=self.key_fingerprint,
                kind=self.kind,
                started_at=self.started_at,
                pid=os.getpid(),
                host=socket.gethostname(),
                meta={"client": self.client, **(extra or {})},
            )
        )
        self.event(
            "session_start",
            {
                "kind": self.kind,
                "key_fingerprint": self.key_fingerprint,
                "client": self.client,
                "roles": list(self.roles(self.started_at).roles),
                "groups": list(self.groups) if self.groups is not None else list(self.user.groups),
                **({"oidc": self.oidc} if self.oidc else {}),
                **(extra or {}),
            },
        )

    def refuse(self, reason: str, extra: dict[str, Any] | None = None) -> None:
        """A login that did not get through (OIDC refused, binding mismatch): recorded start to end."""
        self.start(extra)
        self.event("login_refused", {"reason": reason})
        self.end("refused", reason)

    def end(self, status: str = "ended", reason: str = "") -> None:
        """Idempotent; the end event is followed by a signed checkpoint covering the whole session."""
        if self.ended:
            return
        self.ended = True
        now = time.time()
        self.event(
            "session_end", {"status": status, "reason": reason, "duration_s": round(now - self.started_at, 3)}
        )
        self.audit.checkpoint("session_end", session=self.id, user=self.user.name)
        self.store.end_session(self.id, status, now)


def client_address() -> str:
    """The client's IP and port from sshd's SSH_CONNECTION (set by sshd, not the user)."""
    parts = os.environ.get("SSH_CONNECTION", "").split()
    return f"{parts[0]}:{parts[1]}" if len(parts) >= 2 else ""
