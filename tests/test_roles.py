"""Roles and access: groups → roles, plus elevation grants read from the store at the moment of use."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bastion.config import Config, load_config
from bastion.identity.roles import access, approvable_targets, recording_failure_policy, role_set
from bastion.store import TinyDBStore
from bastion.store.base import Grant
from tests.configs import write_config


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return load_config(write_config(tmp_path))


@pytest.fixture
def store(tmp_path: Path) -> TinyDBStore:
    return TinyDBStore(tmp_path / "state.json")


def grant(
    store: TinyDBStore, gid: str, user: str, target: str, *, expires_in: float = 3600, kind: str = "elevation"
) -> None:
    now = time.time()
    store.add_grant(Grant(gid, f"r-{gid}", user, kind, target, now, now + expires_in))


def test_base_roles_come_from_config_groups(config: Config, store: TinyDBStore) -> None:
    alice = role_set(config, store, config.users["alice"])
    assert alice.roles == ("developer",)
    allowed = access(config, store, "alice", "pg-readonly")
    assert allowed.allowed and allowed.policy is not None and allowed.policy.name == "readonly"
    assert allowed.via == ("developer",)


def test_requestable_connection_is_marked_not_allowed(config: Config, store: TinyDBStore) -> None:
    result = access(config, store, "alice", "pg-guarded")
    assert not result.allowed and result.requestable
    assert "needs an approved elevation request" in result.reason
    ssh = access(config, store, "alice", "app")
    assert not ssh.allowed and not ssh.requestable


def test_unknown_user_connection_and_oidc_groups(config: Config, store: TinyDBStore) -> None:
    assert not access(config, store, "mallory", "pg-readonly").allowed
    assert not access(config, store, "alice", "nope").allowed
    # With OIDC, the token's groups replace the config's.
    assert not access(config, store, "alice", "pg-readonly", groups=("marketing",)).allowed
    assert access(config, store, "bob", "pg-readonly", groups=("developers",)).allowed


def test_role_grant_elevates_until_it_expires(config: Config, store: TinyDBStore) -> None:
    grant(store, "g1", "alice", "dba", expires_in=60)
    now = time.time()
    result = access(config, store, "alice", "pg-guarded", now=now)
    assert result.allowed and result.policy is not None and result.policy.name == "guarded"
    assert "dba" in result.via
    assert not access(config, store, "alice", "pg-guarded", now=now + 120).allowed


def test_connection_grant_and_grant_outside_may_request(config: Config, store: TinyDBStore) -> None:
    grant(store, "g2", "alice", "pg-guarded")
    assert access(config, store, "alice", "pg-guarded").via == ("grant:g2",)
    # bob's roles may not request dba: a grant that somehow exists is ignored (fail closed).
    grant(store, "g3", "bob", "dba")
    assert not access(config, store, "bob", "pg-guarded").allowed
    # Statement grants never elevate.
    grant(store, "g4", "alice", "app", kind="statement")
    assert not access(config, store, "alice", "app").allowed


def test_disabled_user_has_nothing(tmp_path: Path, store: TinyDBStore) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('name = "alice"', 'name = "alice"\ndisabled = true'))
    config = load_config(path)
    grant(store, "g5", "alice", "dba")
    assert role_set(config, store, config.users["alice"]).roles == ()
    assert "disabled" in access(config, store, "alice", "pg-readonly").reason


def test_approvers_and_recording_policy(config: Config, store: TinyDBStore) -> None:
    bob = role_set(config, store, config.users["bob"])
    assert {"pg-guarded", "dba", "developer"} <= approvable_targets(config, bob)
    assert approvable_targets(config, role_set(config, store, config.users["alice"])) == set()
    assert recording_failure_policy(config, bob) == "strict"
