"""Just-in-time approvals: requests, rules, the state machine, and the grants they produce.

    pending ─► approved ─► used          (statement requests: single use)
       │  └──► denied | expired | cancelled

Every transition is a compare-and-set on the request's version in the store, so two approvers deciding at
once (even on two bastion hosts sharing PostgreSQL) produce exactly one outcome; every transition is an
audit event naming who, when and why. Rules come from config: which roles approve which targets, how many
distinct approvers, pending TTL, maximum duration. Nobody approves their own request — no exception — and
an approver must hold an approving role at the moment of the decision.

A statement request is bound to user + connection + SHA-256 of the statement's normalized text, where
normalizing removes only differences of whitespace and comments (tokens are kept exactly as written).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from bastion.config import Config
from bastion.identity.roles import (
    RoleSet,
    approvable_targets,
    may_request,
    requestable_connections,
    role_set,
    usable_connections,
)
from bastion.store.base import Grant, Request, Store
from bastion.units import format_duration

if TYPE_CHECKING:
    from bastion.session import Session

EventWriter = Callable[[str, dict[str, Any]], dict[str, Any]]
MAX_REASON = 500
MAX_STATEMENT = 100_000
CAS_RETRIES = 8


class ApprovalError(Exception):
    """A request or decision that cannot be made; one line for the user."""


def normalize_statement(text: str) -> str:
    """The statement with whitespace and comments normalized away and nothing else: each token exactly as
    written (case, quoting, literals), joined by single spaces. Unparseable text is only trimmed."""
    from sqlglot.errors import SqlglotError

    from bastion.policy.sql import DIALECT

    try:
        tokens = DIALECT.tokenize(text)
    except SqlglotError:
        return text.strip()
    return " ".join(text[token.start : token.end + 1] for token in tokens)


def statement_hash(text: str) -> str:
    return hashlib.sha256(normalize_statement(text).encode("utf-8")).hexdigest()


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


def _check_reason(reason: str, *, required: bool) -> str:
    reason = " ".join(reason.split())
    if required and not reason:
        raise ApprovalError("a reason is required")
    if len(reason) > MAX_REASON:
        raise ApprovalError(f"the reason is longer than {MAX_REASON} characters")
    return reason


@dataclass
class Approvals:
    """Request and decide on behalf of one user (the session's); `event` writes the audit events."""

    config: Config
    store: Store
    event: EventWriter
    now: Callable[[], float] = time.time
    # OIDC groups of users this process authenticated (its session's user): with OIDC on, the config holds
    # no groups, so without these an approver would hold no role. Others are judged by the config.
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    # -- requesting

    def request_statement(self, requester: str, connection: str, statement: str, reason: str) -> Request:
        """File a request to run one exact statement once on a connection the requester may use."""
        reason = _check_reason(reason, required=True)
        if connection not in self.config.connections:
            raise ApprovalError(f"unknown connection {connection!r}")
        if not statement.strip():
            raise ApprovalError("no statement to request")
        if len(statement) > MAX_STATEMENT:
            raise ApprovalError(f"the statement is longer than {MAX_STATEMENT:,} characters")
        roles = self._roles(requester)
        if connection not in usable_connections(self.config, roles):
            raise ApprovalError(f"{requester} may not use {connection}; request elevation to it first")
        self._check_needs_approval(connection, statement)
        return self._file(
            "statement",
            requester,
            connection,
            reason,
            statement=statement.strip(),
            statement_sha256=statement_hash(statement),
        )

    def _check_needs_approval(self, connection: str, statement: str) -> None:
        """Only statements the policy holds for approval can be requested: a blocked one stays blocked
        whoever approves it, and one that is allowed needs no request."""
        from bastion.policy.sql import classify, split_statements
        from bastion.policy.verdict import Verdict, decide

        statements = split_statements(statement)
        if len(statements) != 1:
            raise ApprovalError("request one statement at a time")
        policy = self.config.policies[self.config.connections[connection].policy]
        verdict = decide(policy, classify(statements[0])).verdict
        if verdict is Verdict.BLOCK:
            raise ApprovalError(f"this statement is blocked on {connection}; approval cannot change that")
        if verdict is Verdict.ALLOW:
            raise ApprovalError(f"this statement runs on {connection} without approval")

    def request_elevation(self, requester: str, target: str, duration_s: float, reason: str) -> Request:
        """File a request for a role or a connection for a while, within what the requester may ask for."""
        reason = _check_reason(reason, required=True)
        roles = self._roles(requester)
        allowed = set(may_request(self.config, roles.base))
        if target not in allowed:
            raise ApprovalError(
                f"{requester} may not request {target!r}; may request: "
                + (", ".join(sorted(allowed)) or "nothing")
            )
        rule = self.config.approvals.rule_for(target)
        if duration_s <= 0:
            raise ApprovalError("the duration must be positive")
        if duration_s > rule.max_duration_s:
            raise ApprovalError(
                f"the longest elevation to {target} is {format_duration(rule.max_duration_s)}"
            )
        return self._file("elevation", requester, target, reason, duration_s=float(duration_s))

    def _file(self, kind: str, requester: str, target: str, reason: str, **details: Any) -> Request:
        """A new pending request, audited and stored; it expires after its rule's pending TTL."""
        now = self.now()
        request = Request(
            id=_new_id("r"),
            kind=kind,
            requester=requester,
            target=target,
            reason=reason,
            created_at=now,
            expires_at=now + self.config.approvals.rule_for(target).pending_ttl_s,
            bastion=self.config.bastion.name,
            **details,
        )
        self.event("approval_requested", self._payload(request))
        self.store.add_request(request)
        return request

    # -- deciding

    def decide(self, request_id: str, approver: str, decision: str, reason: str) -> Request:
        """Approve or deny; a deny ends the request, enough distinct approvals approve it and grant."""
        if decision not in ("approve", "deny"):
            raise ApprovalError("a decision is approve or deny")
        reason = _check_reason(reason, required=decision == "deny")
        for _ in range(CAS_RETRIES):
            request = self._pending(request_id)
            if request.requester == approver:
                raise ApprovalError("nobody approves their own request")
            roles = self._roles(approver)
            if request.target not in approvable_targets(self.config, roles):
                raise ApprovalError(
                    f"{approver} does not hold a role that approves requests for {request.target}"
                )
            if any(d.get("approver") == approver for d in request.decisions):
                raise ApprovalError(f"{approver} has already decided on {request_id}")
            now = self.now()
            decisions = [
                *request.decisions,
                {"approver": approver, "decision": decision, "reason": reason, "at": now},
            ]
            rule = self.config.approvals.rule_for(request.target)
            approvals = {d["approver"] for d in decisions if d["decision"] == "approve"}
            state = (
                "denied"
                if decision == "deny"
                else ("approved" if len(approvals) >= rule.min_approvers else "pending")
            )
            updated = self.store.update_request(request_id, request.version, decisions=decisions, state=state)
            if updated is None:
                continue  # another approver got there first: look again
            self.event(
                "approval_decided",
                {
                    **self._payload(updated),
                    "approver": approver,
                    "decision": decision,
                    "decision_reason": reason,
                    "approvals": len(approvals),
                    "needed": rule.min_approvers,
                },
            )
            if state == "approved":
                self._grant(updated, now)
            return updated
        raise ApprovalError(f"{request_id} is changing too often; try again")

    def _grant(self, request: Request, now: float) -> Grant:
        if request.kind == "statement":
            rule = self.config.approvals.rule_for(request.target)
            expires = now + rule.max_duration_s
        else:
            expires = now + float(request.duration_s or 0)
        grant = Grant(
            id=_new_id("g"),
            request_id=request.id,
            user=request.requester,
            kind=request.kind,
            target=request.target,
            granted_at=now,
            expires_at=expires,
            statement_sha256=request.statement_sha256,
        )
        self.store.add_grant(grant)
        self.event(
            "grant_created",
            {"grant": grant.id, "request": request.id, "user": grant.user, "kind": grant.kind,
             "target": grant.target, "expires_at": expires},
        )  # fmt: skip
        return grant

    def cancel(self, request_id: str, requester: str) -> Request:
        for _ in range(CAS_RETRIES):
            request = self._pending(request_id)
            if request.requester != requester:
                raise ApprovalError("only the requester cancels a request")
            updated = self.store.update_request(request_id, request.version, state="cancelled")
            if updated is not None:
                self.event("approval_cancelled", self._payload(updated))
                return updated
        raise ApprovalError(f"{request_id} is changing too often; try again")

    def _pending(self, request_id: str) -> Request:
        request = self.store.get_request(request_id)
        if request is None:
            raise ApprovalError(f"no request {request_id}")
        if request.state == "pending" and request.expires_at <= self.now():
            self.expire(request)
            raise ApprovalError(f"{request_id} expired before it was decided")
        if request.state != "pending":
            raise ApprovalError(f"{request_id} is {request.state}, not pending")
        return request

    def expire(self, request: Request) -> bool:
        updated = self.store.update_request(request.id, request.version, state="expired")
        if updated is not None:
            self.event("approval_expired", self._payload(updated))
        return updated is not None

    def expire_stale(self) -> int:
        """Mark every pending request past its TTL expired (any process may; the CAS keeps it to one)."""
        now = self.now()
        return sum(self.expire(r) for r in self.store.list_requests(state="pending") if r.expires_at <= now)

    # -- using a statement grant

    def use_statement_grant(self, user: str, connection: str, statement: str) -> Grant | None:
        """The user's approved grant for exactly this statement on this connection, consumed atomically;
        None when there is none (or another use won the race)."""
        digest = statement_hash(statement)
        now = self.now()
        for grant in self.store.list_grants(user, active_at=now):
            if grant.kind != "statement" or grant.target != connection or grant.statement_sha256 != digest:
                continue
            if self.store.use_grant(grant.id, now):
                request = self.store.get_request(grant.request_id)
                if request is not None and request.state == "approved":
                    self.store.update_request(request.id, request.version, state="used")
                self.event(
                    "grant_used",
                    {
                        "grant": grant.id,
                        "request": grant.request_id,
                        "connection": connection,
                        "sha256": digest,
                    },
                )
                return replace(grant, state="used", used_at=now)
        return None

    # -- revoking

    def revoke(self, grant_id: str, actor: str, reason: str) -> Grant:
        """End an active grant early: its holder gives it back, or an approver for its target takes it
        back (with a reason). Roles are read at the moment of use, so the next statement is refused."""
        grant = self.store.get_grant(grant_id)
        if grant is None:
            raise ApprovalError(f"no grant {grant_id}")
        own = grant.user == actor
        if not own and grant.target not in approvable_targets(self.config, self._roles(actor)):
            raise ApprovalError(f"{actor} does not hold a role that approves grants for {grant.target}")
        reason = _check_reason(reason, required=not own)
        now = self.now()
        if not self.store.revoke_grant(grant.id, now):
            raise ApprovalError(f"{grant_id} is no longer active")
        self.event(
            "grant_revoked",
            {"grant": grant.id, "request": grant.request_id, "user": grant.user, "kind": grant.kind,
             "target": grant.target, "by": actor, "reason": reason or "given back by its holder"},
        )  # fmt: skip
        return replace(grant, state="revoked")

    def revocable_for(self, actor: str) -> list[Grant]:
        """Active grants this user may end: their own, and those for targets they approve."""
        targets = approvable_targets(self.config, self._roles(actor))
        return [
            g
            for g in self.store.list_grants(None, active_at=self.now())
            if g.user == actor or g.target in targets
        ]

    # -- reading

    def approvable_targets_of(self, user: str) -> set[str]:
        return approvable_targets(self.config, self._roles(user))

    def pending_for(self, approver: str) -> list[Request]:
        """Pending requests this approver may decide now (never their own)."""
        targets = approvable_targets(self.config, self._roles(approver))
        now = self.now()
        return [
            r
            for r in self.store.list_requests(state="pending")
            if r.requester != approver and r.target in targets and r.expires_at > now
        ]

    def _roles(self, user: str) -> RoleSet:
        account = self.config.users.get(user)
        if account is None or account.disabled:
            raise ApprovalError(f"unknown or disabled user {user!r}")
        return role_set(self.config, self.store, account, groups=self.groups.get(user), now=self.now())

    @staticmethod
    def _payload(request: Request) -> dict[str, Any]:
        return request_payload(request)


def for_session(session: Session) -> Approvals:
    """The approvals core acting for a session's user, with the groups its login established."""
    groups = {session.user.name: session.groups} if session.groups is not None else {}
    return Approvals(session.config, session.store, session.event, groups=groups)


def request_payload(request: Request) -> dict[str, Any]:
    """A request as audit events and headless `--json` show it."""
    payload: dict[str, Any] = {
        "request": request.id, "kind": request.kind, "requester": request.requester,
        "target": request.target, "state": request.state, "reason": request.reason,
        "expires_at": request.expires_at,
    }  # fmt: skip
    if request.kind == "statement":
        payload["statement"] = request.statement
        payload["sha256"] = request.statement_sha256
    else:
        payload["duration_s"] = request.duration_s
    return payload


def requestable(config: Config, store: Store, user: str) -> set[str]:
    """Roles and connections the user may ask elevation to (for screens and help)."""
    account = config.users[user]
    roles = role_set(config, store, account)
    return set(may_request(config, roles.base)) | requestable_connections(config, roles)
