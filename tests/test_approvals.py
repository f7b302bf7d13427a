"""Approvals: the state machine, its rules, single use of statement grants, races, and a property test."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.approvals import ApprovalError, Approvals, normalize_statement, statement_hash
from bastion.config import Config, load_config
from bastion.identity.roles import access
from bastion.store import TinyDBStore
from tests.configs import write_config

CAROL = """
[[users]]
name = "carol"
keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFkOoW+Xy9793Acax7sWfAqQ8+unIGRq1zvTKi36uEwx carol@example"]
groups = ["approvers"]
"""


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


class Events(list[tuple[str, dict[str, Any]]]):
    def __call__(self, type: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.append((type, payload))
        return {"seq": len(self)}

    def types(self) -> list[str]:
        return [t for t, _ in self]


def guarded_config(tmp_path: Path, extra: str = "") -> Config:
    """The test config with alice's pg-readonly under the guarded preset: writes there need approval."""
    path = write_config(tmp_path, extra=CAROL + extra)
    path.write_text(path.read_text().replace('policy = "readonly"', 'policy = "guarded"', 1))
    return load_config(path)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return guarded_config(tmp_path)


def make(config: Config, tmp_path: Path, clock: Clock | None = None) -> tuple[Approvals, Events]:
    events = Events()
    store = TinyDBStore(tmp_path / "approvals.json")
    return Approvals(config, store, events, now=clock or Clock()), events


def test_normalization_only_whitespace_and_comments() -> None:
    a = "SELECT  *\n FROM orders -- all of them\nWHERE id = 1"
    assert normalize_statement(a) == "SELECT * FROM orders WHERE id = 1"
    assert statement_hash(a) == statement_hash("SELECT * /* x */ FROM orders WHERE id = 1")
    for other in ("select * from orders where id = 1", "SELECT * FROM orders WHERE id = 2",
                  "SELECT * FROM orders WHERE id = '1'", "SELECT * FROM \"orders\" WHERE id = 1"):  # fmt: skip
        assert statement_hash(other) != statement_hash(a), other


def test_statement_request_approved_then_used_once(config: Config, tmp_path: Path) -> None:
    approvals, events = make(config, tmp_path)
    request = approvals.request_statement(
        "alice", "pg-readonly", "DELETE FROM orders WHERE id = 1", "bad row"
    )
    assert request.state == "pending"
    with pytest.raises(ApprovalError, match="own request"):
        approvals.decide(request.id, "alice", "approve", "me")
    decided = approvals.decide(request.id, "bob", "approve", "ok")
    assert decided.state == "approved"
    assert (
        approvals.use_statement_grant("alice", "pg-readonly", "DELETE FROM  orders WHERE id = 1") is not None
    )
    assert approvals.use_statement_grant("alice", "pg-readonly", "DELETE FROM orders WHERE id = 1") is None
    assert approvals.store.get_request(request.id).state == "used"  # type: ignore[union-attr]
    assert events.types() == ["approval_requested", "approval_decided", "grant_created", "grant_used"]


def test_grant_covers_only_its_statement_connection_and_user(config: Config, tmp_path: Path) -> None:
    approvals, _ = make(config, tmp_path)
    request = approvals.request_statement("alice", "pg-readonly", "DELETE FROM orders WHERE id = 1", "fix")
    approvals.decide(request.id, "bob", "approve", "ok")
    assert approvals.use_statement_grant("alice", "pg-readonly", "DELETE FROM orders WHERE id = 2") is None
    assert approvals.use_statement_grant("alice", "pg-guarded", "DELETE FROM orders WHERE id = 1") is None
    assert approvals.use_statement_grant("bob", "pg-readonly", "DELETE FROM orders WHERE id = 1") is None
    assert (
        approvals.use_statement_grant("alice", "pg-readonly", "DELETE FROM orders WHERE id = 1") is not None
    )


def test_deny_needs_reason_and_ends_request(config: Config, tmp_path: Path) -> None:
    approvals, _ = make(config, tmp_path)
    request = approvals.request_statement("alice", "pg-readonly", "DELETE FROM orders", "cleanup")
    with pytest.raises(ApprovalError, match="reason"):
        approvals.decide(request.id, "bob", "deny", "   ")
    assert approvals.decide(request.id, "bob", "deny", "no WHERE").state == "denied"
    with pytest.raises(ApprovalError, match="denied"):
        approvals.decide(request.id, "carol", "approve", "ok")
    assert approvals.use_statement_grant("alice", "pg-readonly", "DELETE FROM orders") is None


def test_min_approvers_distinct(tmp_path: Path) -> None:
    config = guarded_config(tmp_path, "\n[approvals]\nmin_approvers = 2\n")
    approvals, _ = make(config, tmp_path)
    request = approvals.request_statement("alice", "pg-readonly", "DELETE FROM orders WHERE id = 3", "dup")
    assert approvals.decide(request.id, "bob", "approve", "ok").state == "pending"
    with pytest.raises(ApprovalError, match="already decided"):
        approvals.decide(request.id, "bob", "approve", "again")
    assert approvals.decide(request.id, "carol", "approve", "ok").state == "approved"


def test_approver_must_hold_role_at_decision_time(config: Config, tmp_path: Path) -> None:
    approvals, _ = make(config, tmp_path)
    request = approvals.request_statement("alice", "pg-readonly", "DELETE FROM orders WHERE id = 4", "x")
    with pytest.raises(ApprovalError, match="unknown or disabled user"):
        approvals.decide(request.id, "nobody", "approve", "")
    # bob loses the approver role after the request was filed: his decision is refused.
    path = Path(config.path)
    path.write_text(path.read_text().replace('approves = ["*"]', "approves = []"))
    later = Approvals(load_config(path), approvals.store, approvals.event, now=approvals.now)
    with pytest.raises(ApprovalError, match="does not hold a role"):
        later.decide(request.id, "bob", "approve", "ok")


def test_pending_ttl_expiry_and_grant_expiry(config: Config, tmp_path: Path) -> None:
    clock = Clock()
    approvals, events = make(config, tmp_path, clock)
    stale = approvals.request_statement("alice", "pg-readonly", "DELETE FROM orders WHERE id = 5", "x")
    clock.t += config.approvals.pending_ttl_s + 1
    with pytest.raises(ApprovalError, match="expired"):
        approvals.decide(stale.id, "bob", "approve", "late")
    assert approvals.store.get_request(stale.id).state == "expired"  # type: ignore[union-attr]
    fresh = approvals.request_statement("alice", "pg-readonly", "DELETE FROM orders WHERE id = 6", "x")
    approvals.decide(fresh.id, "bob", "approve", "ok")
    clock.t += config.approvals.max_duration_s + 1
    assert approvals.use_statement_grant("alice", "pg-readonly", "DELETE FROM orders WHERE id = 6") is None
    assert "approval_expired" in events.types()


def test_elevation_request_grants_access_until_it_expires(config: Config, tmp_path: Path) -> None:
    clock = Clock()
    approvals, _ = make(config, tmp_path, clock)
    with pytest.raises(ApprovalError, match="may not request"):
        approvals.request_elevation("alice", "approver", 600, "please")
    with pytest.raises(ApprovalError, match="longest elevation"):
        approvals.request_elevation("alice", "dba", 10 * 86400, "long")
    request = approvals.request_elevation("alice", "dba", 600, "incident 42")
    assert not access(config, approvals.store, "alice", "pg-guarded", now=clock.t).allowed
    approvals.decide(request.id, "bob", "approve", "go")
    assert access(config, approvals.store, "alice", "pg-guarded", now=clock.t + 1).allowed
    assert not access(config, approvals.store, "alice", "pg-guarded", now=clock.t + 601).allowed


def test_only_held_statements_can_be_requested(config: Config, tmp_path: Path) -> None:
    approvals, _ = make(config, tmp_path)
    with pytest.raises(ApprovalError, match="without approval"):
        approvals.request_statement("alice", "pg-readonly", "SELECT 1", "x")
    with pytest.raises(ApprovalError, match="blocked"):
        approvals.request_statement("alice", "pg-readonly", "SELECT pg_read_file('/etc/passwd')", "x")
    with pytest.raises(ApprovalError, match="one statement"):
        approvals.request_statement("alice", "pg-readonly", "DELETE FROM orders; DELETE FROM customers", "x")


def test_cancel_only_by_requester(config: Config, tmp_path: Path) -> None:
    approvals, _ = make(config, tmp_path)
    request = approvals.request_statement("alice", "pg-readonly", "DELETE FROM orders WHERE id = 7", "x")
    with pytest.raises(ApprovalError, match="only the requester"):
        approvals.cancel(request.id, "bob")
    assert approvals.cancel(request.id, "alice").state == "cancelled"


def _decide_in_process(args: tuple[str, str, str, str]) -> str:
    config_path, store_path, request_id, approver = args
    approvals = Approvals(load_config(config_path), TinyDBStore(store_path), lambda t, p: {"seq": 0})
    try:
        return approvals.decide(request_id, approver, "approve", "race").state
    except ApprovalError as exc:
        return f"refused: {exc}"


def test_two_approvers_at_once_one_outcome(config: Config, tmp_path: Path) -> None:
    approvals, _ = make(config, tmp_path)
    approvals.now = time.time  # the other processes use the real clock
    request = approvals.request_statement("alice", "pg-readonly", "DELETE FROM orders WHERE id = 8", "x")
    store_path = str(tmp_path / "approvals.json")
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        outcomes = pool.map(
            _decide_in_process, [(str(config.path), store_path, request.id, a) for a in ("bob", "carol")]
        )
    assert sorted(o.split(":")[0] for o in outcomes) == ["approved", "refused"], outcomes
    grants = approvals.store.list_grants("alice")
    assert len(grants) == 1
    final = approvals.store.get_request(request.id)
    assert final is not None and len(final.decisions) == 1


ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["request", "approve", "deny", "use", "tick", "cancel", "self", "revoke"]),
        st.sampled_from(["bob", "carol"]),
        st.integers(0, 3),
    ),
    max_size=25,
)


@given(ACTIONS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_state_machine_properties(
    tmp_path_factory: pytest.TempPathFactory, actions: list[tuple[str, str, int]]
) -> None:
    tmp_path = tmp_path_factory.mktemp("sm")
    config = guarded_config(tmp_path)
    clock = Clock()
    approvals, events = make(config, tmp_path, clock)
    statements = ["DELETE FROM orders WHERE id = " + str(i) for i in range(4)]
    requests: list[str] = []
    uses: dict[str, int] = {}
    revoked: set[str] = set()
    for action, approver, index in actions:
        try:
            if action == "request":
                requests.append(
                    approvals.request_statement("alice", "pg-readonly", statements[index], "r").id
                )
            elif action in ("approve", "deny", "self", "cancel") and requests:
                rid = requests[index % len(requests)]
                if action == "self":
                    with pytest.raises(ApprovalError):
                        approvals.decide(rid, "alice", "approve", "self")
                elif action == "cancel":
                    approvals.cancel(rid, "alice")
                else:
                    approvals.decide(rid, approver, action, "because")
            elif action == "revoke":
                grants = approvals.store.list_grants("alice")
                if grants:
                    grant = grants[index % len(grants)]
                    approvals.revoke(grant.id, approver, "taken back")
                    revoked.add(grant.id)
            elif action == "use":
                grant = approvals.use_statement_grant("alice", "pg-readonly", statements[index])
                if grant is not None:
                    assert grant.expires_at > clock.t, "used after expiry"
                    assert grant.id not in revoked, "used after revocation"
                    uses[grant.id] = uses.get(grant.id, 0) + 1
            elif action == "tick":
                clock.t += 3600 * (index + 1)
        except ApprovalError:
            pass
    assert all(n == 1 for n in uses.values()), "a grant was used twice"
    for rid in requests:
        request = approvals.store.get_request(rid)
        assert request is not None
        assert all(d["approver"] != "alice" for d in request.decisions), "self-approval recorded"
        if request.state == "used":
            assert any(
                g.request_id == rid and g.state == "used" for g in approvals.store.list_grants("alice")
            )
    assert events.types().count("grant_used") == len(uses)
    assert events.types().count("grant_revoked") == len(revoked)
    assert all(approvals.store.get_grant(g).state == "revoked" for g in revoked)  # type: ignore[union-attr]


def test_oidc_groups_make_the_approver(tmp_path: Path) -> None:
    """With OIDC the config holds no groups: the approver's role comes from the groups their login brought."""
    from bastion.approvals import for_session
    from bastion.audit.signing import generate_key
    from bastion.identity.keys import parse_public_key
    from bastion.session import Session, open_audit_log
    from tests.configs import ALICE_KEY, BOB_KEY, secret
    from tests.test_login import _config

    secret(tmp_path / "secrets" / "oidc", "client-secret")
    extra = (
        '\n[identity.oidc]\nissuer = "https://idp.example.org"\nclient_id = "bastion"\n'
        'client_secret_file = "secrets/oidc"\n'
    )
    config = _config(tmp_path, extra, oidc=True)
    generate_key(config.audit.signing_key)
    store = TinyDBStore(tmp_path / "state.json")

    def session(user: str, key: str, groups: tuple[str, ...]) -> Session:
        fingerprint = parse_public_key(key).fingerprint
        return Session(
            config, store, open_audit_log(config), config.users[user], fingerprint, "headless", groups=groups
        )

    alice, bob = session("alice", ALICE_KEY, ("engineering",)), session("bob", BOB_KEY, ("approvers",))
    request = for_session(alice).request_elevation("alice", "dba", 1800, "incident 31")
    assert Approvals(config, store, bob.event).pending_for("bob") == []  # the config alone knows no approver
    assert [r.id for r in for_session(bob).pending_for("bob")] == [request.id]
    assert for_session(bob).decide(request.id, "bob", "approve", "ok").state == "approved"
    assert "dba" in alice.roles().roles
