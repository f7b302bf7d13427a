"""When a recording cannot be kept: the per-role failure policy, applied the same to TUI and headless logins.

    strict       a session that cannot record (spool not writable, free space under the floor) is refused;
                 a running one whose spool write fails is ended with a one-line reason; while the sink has
                 been unreachable for longer than max_lag, new sessions are refused (the spool keeps running
                 sessions going: nothing is lost, it is only not off-host yet).
    best_effort  the session goes on: the spool keeps everything it can, the TUI header warns, and an audit
                 event records the degradation (`recording_degraded`) or the gap (`recording_gap`).
    both         under half the free-space floor running sessions end and new ones are refused: the spool
                 must not fill the disk the audit log lives on.

strict wins when a user's roles disagree (fail closed). With OIDC the roles are only known after the device
login, in the TUI child; the recorder re-applies the policy when the session_start event reports them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bastion.config import Config
from bastion.identity.roles import RoleSet, recording_failure_policy
from bastion.recording.ship import sink_down_since
from bastion.recording.sinks import SinkError, open_sink, sink_id
from bastion.recording.spool import Spool, SpoolError
from bastion.store.base import Store, StoreError
from bastion.units import format_duration

STRICT, BEST_EFFORT = "strict", "best_effort"


@dataclass
class Plan:
    """How one session is recorded: its failure policy and whether input is recorded."""

    policy: str
    record_input: bool
    floor: int

    @property
    def strict(self) -> bool:
        return self.policy == STRICT


def record_input_for(config: Config, role_names: tuple[str, ...]) -> bool:
    """Input is recorded when a role turns it on; else as [recording].input says, unless a role turns it
    off."""
    values = [config.roles[n].record_input for n in role_names if n in config.roles]
    chosen = [v for v in values if v is not None]
    if any(chosen):
        return True
    if chosen:
        return False
    return config.recording.record_input


def plan_for(config: Config, roles: RoleSet) -> Plan:
    return Plan(
        recording_failure_policy(config, roles),
        record_input_for(config, roles.roles),
        config.recording.free_space_floor,
    )


def replan(config: Config, plan: Plan, role_names: list[str]) -> Plan:
    """The plan once the session's real roles are known (OIDC): strict if the config's roles say so."""
    roles = RoleSet("", tuple(r for r in role_names if r in config.roles), (), ())
    return Plan(recording_failure_policy(config, roles), record_input_for(config, roles.roles), plan.floor)


def _size(n: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n} B"


def space_problem(spool: Spool, floor: int) -> tuple[str, bool] | None:
    """(reason, below half the floor) when free space is under the floor; None when there is room."""
    if floor <= 0:
        return None
    try:
        free = spool.free_bytes()
    except OSError as exc:
        return f"spool free space unknown ({exc.strerror})", True
    if free >= floor:
        return None
    half = free < floor / 2
    which = "half the free-space floor" if half else "the free-space floor"
    return f"spool has {_size(free)} free, under {which} ({_size(floor if not half else floor // 2)})", half


def preflight(config: Config, store: Store, plan: Plan, spool: Spool) -> tuple[str | None, list[str]]:
    """(refusal reason or None, warnings) before a session starts recording."""
    warnings: list[str] = []
    try:
        spool.ensure()
    except SpoolError as exc:
        if plan.strict:
            return f"recording unavailable: {exc}", warnings
        warnings.append(str(exc))
    problem = space_problem(spool, plan.floor)
    if problem is not None:
        reason, half = problem
        if half or plan.strict:
            return f"recording unavailable: {reason}", warnings
        warnings.append(reason)
    sink = config.recording.sink
    if sink is not None and plan.strict and config.recording.max_lag_s > 0:
        ident = sink_id(sink)
        try:
            since = sink_down_since(store, ident)
        except StoreError:
            since = None
        if (
            since is not None
            and time.time() - since > config.recording.max_lag_s
            and not _sink_answers(config)
        ):
            down = format_duration(time.time() - since)
            limit = format_duration(config.recording.max_lag_s)
            return (
                f"recording sink unreachable for {down} (longer than max_lag {limit}): "
                "strict recording refuses new sessions",
                warnings,
            )
    return None, warnings


def _sink_answers(config: Config) -> bool:
    """A quick probe: the stored outage may be over without anyone having shipped since."""
    sink = open_sink(config.recording.sink)
    if sink is None:
        return True
    try:
        sink.probe()
        return True
    except SinkError:
        return False
    finally:
        sink.close()
