"""Who may do what, now: roles from groups (config or OIDC) plus active elevation grants from the store.

Grants are read at the moment of the question, never cached across it, so an expired or revoked grant stops
the next connection or statement. One function, `access`, answers "may USER use CONNECTION now, and under
which policy" for the TUI, headless commands and the approval flow alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bastion.config import Config, Connection, Policy, User
from bastion.store.base import Grant, Store


@dataclass(frozen=True)
class RoleSet:
    """A user's roles at one moment and where each came from."""

    user: str
    base: tuple[str, ...]  # from groups
    elevated: tuple[str, ...]  # from active role grants
    connection_grants: tuple[str, ...]  # connections granted directly by elevation
    grants: tuple[Grant, ...] = field(default=())

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.base + self.elevated))


@dataclass(frozen=True)
class Access:
    """The answer for one user and connection: allowed or not, under which policy, and why."""

    allowed: bool
    connection: str
    reason: str
    policy: Policy | None = None
    via: tuple[str, ...] = ()  # roles (or "grant:<id>") that allow it
    requestable: bool = False  # not allowed, but the user may ask elevation to it
    roles: tuple[str, ...] = ()  # the user's roles at that moment


def base_roles(config: Config, user: User, groups: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """Roles from group membership; groups are the OIDC groups when OIDC is on, else the config's."""
    member_of = set(user.groups if groups is None else groups)
    return tuple(role.name for role in config.roles.values() if member_of.intersection(role.groups))


def may_request(config: Config, base: tuple[str, ...]) -> tuple[str, ...]:
    """Elevation targets (roles or connections) the base roles allow asking for."""
    out: dict[str, None] = {}
    for name in base:
        for target in config.roles[name].may_request:
            out[target] = None
    return tuple(out)


def role_set(
    config: Config,
    store: Store | None,
    user: User,
    *,
    groups: tuple[str, ...] | None = None,
    now: float | None = None,
) -> RoleSet:
    """Base roles plus active elevation grants; a grant counts only while its target is still requestable."""
    if user.disabled:
        return RoleSet(user.name, (), (), ())
    now = time.time() if now is None else now
    base = base_roles(config, user, groups)
    requestable = set(may_request(config, base))
    elevated: list[str] = []
    conns: list[str] = []
    used: list[Grant] = []
    grants = store.list_grants(user.name, active_at=now) if store is not None else []
    for grant in grants:
        if grant.kind != "elevation" or grant.target not in requestable:
            continue  # config changed since approval: the grant no longer applies
        if grant.target in config.roles:
            elevated.append(grant.target)
        elif grant.target in config.connections:
            conns.append(grant.target)
        else:
            continue
        used.append(grant)
    return RoleSet(user.name, base, tuple(elevated), tuple(conns), tuple(used))


def usable_connections(config: Config, roles: RoleSet) -> dict[str, tuple[str, ...]]:
    """Connection name -> what allows it (role names, or "grant:<id>")."""
    out: dict[str, list[str]] = {}
    for name in roles.roles:
        for conn in config.roles[name].connections:
            out.setdefault(conn, []).append(name)
    for grant in roles.grants:
        if grant.target in config.connections:
            out.setdefault(grant.target, []).append(f"grant:{grant.id}")
    return {name: tuple(via) for name, via in out.items()}


def requestable_connections(config: Config, roles: RoleSet) -> set[str]:
    """Connections the user cannot use now but could reach through an elevation request."""
    targets = may_request(config, roles.base)
    out = set()
    for target in targets:
        if target in config.connections:
            out.add(target)
        elif target in config.roles:
            out.update(config.roles[target].connections)
    return out - set(usable_connections(config, roles))


def access(
    config: Config,
    store: Store | None,
    user_name: str,
    connection_name: str,
    *,
    groups: tuple[str, ...] | None = None,
    now: float | None = None,
    roles: RoleSet | None = None,
) -> Access:
    """May USER use CONNECTION now, and under which policy? Fails closed on anything unknown.

    `roles` may be passed when the caller has just computed them for the same moment.
    """
    user = config.users.get(user_name)
    if user is None:
        return Access(False, connection_name, f"unknown user {user_name!r}")
    if user.disabled:
        return Access(False, connection_name, f"user {user_name!r} is disabled")
    conn: Connection | None = config.connections.get(connection_name)
    if conn is None:
        return Access(False, connection_name, f"unknown connection {connection_name!r}")
    if roles is None or roles.user != user.name:
        roles = role_set(config, store, user, groups=groups, now=now)
    via = usable_connections(config, roles).get(connection_name)
    if via:
        reason = "allowed by " + ", ".join(via)
        return Access(True, connection_name, reason, config.policy_of(conn), via, roles=roles.roles)
    if connection_name in requestable_connections(config, roles):
        return Access(
            False, connection_name, f"{connection_name} needs an approved elevation request", requestable=True
        )
    return Access(False, connection_name, f"no role of {user_name} allows {connection_name}")


def recording_failure_policy(config: Config, roles: RoleSet) -> str:
    """strict wins over best_effort when roles disagree: fail closed."""
    policies = {config.roles[name].recording or config.recording.failure for name in roles.roles}
    if not policies:
        return config.recording.failure
    return "strict" if "strict" in policies else "best_effort"


def is_auditor(config: Config, roles: RoleSet) -> bool:
    return any(config.roles[name].auditor for name in roles.roles)


def approvable_targets(config: Config, roles: RoleSet) -> set[str]:
    """Roles and connections whose requests this user may decide ("*" expands to all)."""
    out: set[str] = set()
    for name in roles.roles:
        for target in config.roles[name].approves:
            if target == "*":
                out.update(config.roles)
                out.update(config.connections)
            else:
                out.add(target)
    return out
