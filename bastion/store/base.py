"""The state store's contract: what every backend (TinyDB, PostgreSQL) keeps and how it behaves.

Every SSH login is its own process and several bastion hosts may share one store, so every mutating call is
atomic on its own and the calls that guard a decision (request updates, single-use grants, config snapshots)
are compare-and-set: exactly one concurrent caller wins. Times are UTC epoch seconds (float).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any


class StoreError(Exception):
    """The store could not be reached or holds data it cannot read; the message carries no secret."""


class NotFound(StoreError):
    pass


class AlreadyExists(StoreError):
    pass


@dataclass(frozen=True)
class OidcBinding:
    """An SSH-key user bound to one OIDC subject until expires_at."""

    user: str
    issuer: str
    subject: str
    bound_at: float
    expires_at: float


@dataclass
class SessionRecord:
    """One login (TUI or headless) in the session index."""

    id: str
    bastion: str
    user: str
    key_fingerprint: str
    kind: str  # "tui" | "headless"
    started_at: float
    status: str = "running"  # "running" | "ended" | "abnormal" | "refused"
    ended_at: float | None = None
    pid: int | None = None
    host: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Request:
    """A just-in-time request: elevation (role or connection for a duration) or one exact statement."""

    id: str
    kind: str  # "elevation" | "statement"
    requester: str
    target: str  # role or connection name (elevation), connection name (statement)
    reason: str
    created_at: float
    expires_at: float  # end of the pending TTL
    bastion: str
    state: str = "pending"  # pending | approved | denied | expired | cancelled | used
    duration_s: float | None = None  # elevation only
    statement: str | None = None  # statement only
    statement_sha256: str | None = None  # statement only
    decisions: list[dict[str, Any]] = field(default_factory=list)  # {"approver","decision","reason","at"}
    version: int = 0


@dataclass
class Grant:
    """What an approved request gives: checked at the moment of use, never only at request time."""

    id: str
    request_id: str
    user: str
    kind: str  # "elevation" | "statement"
    target: str  # role or connection (elevation), connection (statement)
    granted_at: float
    expires_at: float
    statement_sha256: str | None = None
    state: str = "active"  # active | used | revoked
    used_at: float | None = None


# Argument checks both backends share, so that both refuse exactly the same calls.
_REQUEST_IMMUTABLE = frozenset({"id", "version"})


def check_limit(limit: int | None) -> None:
    if limit is not None and limit < 0:
        raise ValueError("limit must be >= 0")


def check_request_changes(changes: Mapping[str, Any]) -> None:
    """update_request may change any field but the id and the version (which the store bumps itself)."""
    bad = sorted(set(changes) - ({f.name for f in fields(Request)} - _REQUEST_IMMUTABLE))
    if bad:
        raise ValueError(f"update_request cannot change {', '.join(bad)}")


def check_binding_user(expected: OidcBinding | None, new: OidcBinding) -> None:
    """A compare-and-set replaces one user's binding, never moves it to another user."""
    if expected is not None and expected.user != new.user:
        raise ValueError("a binding can only be replaced by one for the same user")


def check_end_status(status: str) -> None:
    """A session leaves "running" only for a final status ("ended", "abnormal", "refused", …)."""
    if not status or status == "running":
        raise ValueError(f"a session cannot end with status {status!r}")


class Store(ABC):
    """One interface, two backends; tests/test_store_contract.py runs against both."""

    # OIDC bindings
    @abstractmethod
    def get_binding(self, user: str) -> OidcBinding | None: ...

    @abstractmethod
    def put_binding(self, binding: OidcBinding) -> None:
        """Create or replace the binding of binding.user."""

    @abstractmethod
    def replace_binding(self, expected: OidcBinding | None, new: OidcBinding) -> bool:
        """Store new only if new.user's binding is still expected (None = absent); True if stored.

        Compare-and-set, so two first logins of one user with different provider accounts cannot both bind.
        """

    @abstractmethod
    def delete_binding(self, user: str) -> None: ...

    # Session index
    @abstractmethod
    def add_session(self, record: SessionRecord) -> None:
        """Raises AlreadyExists for a duplicate id."""

    @abstractmethod
    def get_session(self, session_id: str) -> SessionRecord | None: ...

    @abstractmethod
    def end_session(self, session_id: str, status: str, ended_at: float) -> bool:
        """Mark a running session ended/abnormal; False when it was not running (first end wins).

        status is any final status, e.g. "ended", "abnormal" or "refused"; "" or "running" is a ValueError.
        """

    @abstractmethod
    def list_sessions(
        self, *, user: str | None = None, status: str | None = None, limit: int | None = None
    ) -> list[SessionRecord]:
        """Newest first (started_at, ties: the later added first); limit must be >= 0."""

    # Approval requests
    @abstractmethod
    def add_request(self, request: Request) -> None:
        """Raises AlreadyExists for a duplicate id."""

    @abstractmethod
    def get_request(self, request_id: str) -> Request | None: ...

    @abstractmethod
    def list_requests(self, *, state: str | None = None, requester: str | None = None) -> list[Request]:
        """Oldest first (created_at, ties: the earlier added first)."""

    @abstractmethod
    def update_request(self, request_id: str, expected_version: int, **changes: Any) -> Request | None:
        """Apply changes only if the stored version equals expected_version; bump the version.

        Returns the updated request, or None when another writer got there first (or it does not exist).
        changes may name any Request field except id and version (ValueError otherwise).
        """

    # Grants
    @abstractmethod
    def add_grant(self, grant: Grant) -> None:
        """Raises AlreadyExists for a duplicate id."""

    @abstractmethod
    def get_grant(self, grant_id: str) -> Grant | None: ...

    @abstractmethod
    def list_grants(self, user: str | None, *, active_at: float | None = None) -> list[Grant]:
        """All of a user's grants (user None: every user's), or only those active (state active,
        expires_at > active_at) at active_at.

        Oldest first (granted_at, ties: the earlier added first).
        """

    @abstractmethod
    def use_grant(self, grant_id: str, now: float) -> bool:
        """Atomically mark an active, unexpired statement grant used; True for exactly one caller.

        False for unknown, used, revoked or expired (expires_at <= now) grants, and for elevation grants,
        which are time-bound rather than single-use.
        """

    @abstractmethod
    def revoke_grant(self, grant_id: str, now: float) -> bool:
        """Atomically end an active, unexpired grant early (state revoked); True for exactly one caller.

        False for unknown, used, already revoked or expired grants.
        """

    # Shipping progress
    @abstractmethod
    def get_progress(self, key: str) -> int | None:
        """Last acknowledged offset of a shipped stream, None when nothing was acknowledged."""

    @abstractmethod
    def set_progress(self, key: str, offset: int) -> int:
        """Record an acknowledged offset; never moves backwards. Returns the stored offset."""

    @abstractmethod
    def delete_progress(self, prefix: str) -> int:
        """Forget every offset whose key starts with prefix (non-empty; ValueError otherwise); how many.

        The shipper calls it once a recording has left the spool, so the state does not grow forever.
        """

    # Small keyed metadata (config snapshot, etc.)
    @abstractmethod
    def get_meta(self, key: str) -> Any: ...

    @abstractmethod
    def cas_meta(self, key: str, expected: Any, new: Any) -> bool:
        """Set key to new only if its current value equals expected (None = absent). True if it was set.

        Values are JSON; equality is JSON equality (1 == 1.0, but True != 1). new=None deletes the key.
        """

    # Change feed for live views
    @abstractmethod
    def change_counter(self) -> int:
        """Monotonic counter bumped by every write that changes something, for cheap change polling.

        Refused compare-and-sets and no-op writes (progress not advancing, deleting nothing) leave it alone;
        the bump is committed together with the change, so a poller that sees it also sees the change.
        """

    def wait_for_change(self, seen: int, timeout: float) -> int:
        """Block until the change counter moves past `seen` (or timeout); return the counter.

        Live views (the Approvals tab) call this from a worker. The default polls; PostgreSQL LISTENs.
        """
        deadline = time.monotonic() + timeout
        while True:
            counter = self.change_counter()
            if counter != seen or time.monotonic() >= deadline:
                return counter
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def close(self) -> None:  # noqa: B027 - optional for backends without resources
        """Release connections and locks."""
