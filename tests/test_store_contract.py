"""One contract for every state backend: the same tests run against TinyDB and PostgreSQL.

Concurrency is tested with real processes (this file re-run as a worker script), because that is how the bastion
uses the store: one process per SSH login, several hosts on one PostgreSQL.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bastion.identity.binding import BindingError, check_binding
from bastion.identity.oidc import OidcIdentity
from bastion.store import (
    AlreadyExists,
    Grant,
    OidcBinding,
    Request,
    SessionRecord,
    Store,
    StoreError,
    TinyDBStore,
    open_store,
)
from bastion.store.postgres import CHANNEL, PostgresStore

ROOT = Path(__file__).resolve().parents[1]
Spec = tuple[str, str]  # (backend, path or DSN): picklable-free way to open the same store in another process
NOW = 1_700_000_000.0


def make_store(spec: Spec) -> Store:
    kind, where = spec
    return TinyDBStore(where) if kind == "tinydb" else PostgresStore(where)


@pytest.fixture(params=["tinydb", "postgres"])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Spec]:
    """Where a fresh, empty store lives: a file under tmp_path, or a schema of its own in the run's database."""
    if request.param == "tinydb":
        yield ("tinydb", str(tmp_path / "state" / "state.json"))
        return
    with _fresh_schema(request.getfixturevalue("pg_dsn")) as dsn:
        yield ("postgres", dsn)


@pytest.fixture
def pg_spec(pg_dsn: str) -> Iterator[Spec]:
    """For the PostgreSQL-only tests."""
    with _fresh_schema(pg_dsn) as dsn:
        yield ("postgres", dsn)


@contextlib.contextmanager
def _fresh_schema(dsn: str) -> Iterator[str]:
    """A DSN whose search_path is a new, empty schema (dropped afterwards): tests do not share tables."""
    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield make_conninfo(dsn, options=f"-c search_path={schema}")
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def store(spec: Spec) -> Iterator[Store]:
    s = make_store(spec)
    try:
        yield s
    finally:
        s.close()


def session(sid: str, *, user: str = "alice", started_at: float = NOW, **kw: Any) -> SessionRecord:
    return SessionRecord(
        id=sid, bastion="b1", user=user, key_fingerprint="SHA256:k", kind="tui", started_at=started_at, **kw
    )


def request_(rid: str, *, requester: str = "alice", created_at: float = NOW, **kw: Any) -> Request:
    return Request(
        id=rid,
        kind="statement",
        requester=requester,
        target="prod-db",
        reason="fix ticket 42",
        created_at=created_at,
        expires_at=created_at + 900,
        bastion="b1",
        statement="DELETE FROM t WHERE id = 1",
        statement_sha256="ab" * 32,
        **kw,
    )


def grant(gid: str, *, user: str = "alice", kind: str = "statement", **kw: Any) -> Grant:
    values: dict[str, Any] = {
        "request_id": "r1",
        "target": "prod-db",
        "granted_at": NOW,
        "expires_at": NOW + 3600,
        "statement_sha256": "ab" * 32,
    }
    values.update(kw)
    return Grant(id=gid, user=user, kind=kind, **values)


# ---------------------------------------------------------------- OIDC bindings


def test_bindings_crud(store: Store) -> None:
    assert store.get_binding("alice") is None
    b = OidcBinding("alice", "https://idp", "sub-1", NOW, NOW + 3600)
    store.put_binding(b)
    store.put_binding(OidcBinding("bob", "https://idp", "sub-2", NOW, NOW + 60))
    assert store.get_binding("alice") == b
    replaced = OidcBinding("alice", "https://idp2", "sub-9", NOW + 1, NOW + 7200)
    store.put_binding(replaced)
    assert store.get_binding("alice") == replaced
    store.delete_binding("alice")
    assert store.get_binding("alice") is None
    store.delete_binding("alice")  # deleting nothing is fine
    assert store.get_binding("bob") == OidcBinding("bob", "https://idp", "sub-2", NOW, NOW + 60)


def test_binding_compare_and_set(store: Store) -> None:
    first = OidcBinding("alice", "https://idp", "sub-1", NOW, NOW + 3600)
    rival = OidcBinding("alice", "https://idp", "sub-2", NOW, NOW + 3600)
    assert store.replace_binding(None, first)
    assert not store.replace_binding(None, rival)  # the second "first login" loses
    assert store.get_binding("alice") == first
    renewed = OidcBinding("alice", "https://idp", "sub-1", NOW + 5000, NOW + 8600)
    assert not store.replace_binding(rival, renewed)  # stale expectation
    assert store.replace_binding(first, renewed)
    assert store.get_binding("alice") == renewed
    with pytest.raises(ValueError, match="same user"):
        store.replace_binding(renewed, OidcBinding("bob", "https://idp", "sub-1", NOW, NOW + 1))


# ---------------------------------------------------------------- sessions


def test_session_add_get_and_duplicate(store: Store) -> None:
    rec = session("s1", pid=4242, host="bastion-1", meta={"client": "10.0.0.1", "tags": [1, "x"]})
    store.add_session(rec)
    assert store.get_session("s1") == rec
    assert store.get_session("nope") is None
    with pytest.raises(AlreadyExists):
        store.add_session(session("s1", user="mallory"))
    assert store.get_session("s1") == rec


def test_returned_records_are_copies(store: Store) -> None:
    store.add_session(session("s1", meta={"a": [1]}))
    got = store.get_session("s1")
    assert got is not None
    got.meta["a"].append(2)
    assert store.get_session("s1") == session("s1", meta={"a": [1]})


def test_end_session_first_end_wins(store: Store) -> None:
    store.add_session(session("s1"))
    assert store.end_session("s1", "abnormal", NOW + 5) is True
    assert store.end_session("s1", "ended", NOW + 9) is False
    got = store.get_session("s1")
    assert got is not None
    assert (got.status, got.ended_at) == ("abnormal", NOW + 5)
    assert store.end_session("unknown", "ended", NOW) is False
    store.add_session(session("s2"))
    for bad in ("running", ""):
        with pytest.raises(ValueError):
            store.end_session("s2", bad, NOW)
    assert store.end_session("s2", "refused", NOW) is True  # a login refused after it started
    got = store.get_session("s2")
    assert got is not None and got.status == "refused"


def test_list_sessions_order_filters_limit(store: Store) -> None:
    store.add_session(session("old", started_at=NOW - 100))
    store.add_session(session("new", started_at=NOW + 100, user="bob"))
    store.add_session(session("mid-a", started_at=NOW))
    store.add_session(session("mid-b", started_at=NOW))  # same start: the later added comes first
    store.end_session("old", "ended", NOW)

    assert [s.id for s in store.list_sessions()] == ["new", "mid-b", "mid-a", "old"]
    assert [s.id for s in store.list_sessions(user="alice")] == ["mid-b", "mid-a", "old"]
    assert [s.id for s in store.list_sessions(status="running")] == ["new", "mid-b", "mid-a"]
    assert [s.id for s in store.list_sessions(user="alice", status="ended")] == ["old"]
    assert [s.id for s in store.list_sessions(user="carol")] == []
    assert [s.id for s in store.list_sessions(limit=2)] == ["new", "mid-b"]
    assert [s.id for s in store.list_sessions(user="alice", limit=1)] == ["mid-b"]
    assert store.list_sessions(limit=0) == []
    with pytest.raises(ValueError):
        store.list_sessions(limit=-1)


# ---------------------------------------------------------------- requests


def test_request_add_get_list(store: Store) -> None:
    r = request_("r1", decisions=[{"approver": "carol", "decision": "approve", "reason": "ok", "at": NOW}])
    store.add_request(r)
    assert store.get_request("r1") == r
    assert store.get_request("nope") is None
    with pytest.raises(AlreadyExists):
        store.add_request(request_("r1", requester="mallory"))

    store.add_request(request_("r0", created_at=NOW - 10, requester="bob"))
    store.add_request(request_("r2", created_at=NOW + 10, state="denied"))
    store.add_request(request_("r1b", created_at=NOW))  # same time as r1: the earlier added comes first
    elevation = Request(
        id="e1",
        kind="elevation",
        requester="bob",
        target="dba",
        reason="incident",
        created_at=NOW + 20,
        expires_at=NOW + 920,
        bastion="b2",
        duration_s=1800.0,
    )
    store.add_request(elevation)
    assert store.get_request("e1") == elevation

    assert [r.id for r in store.list_requests()] == ["r0", "r1", "r1b", "r2", "e1"]
    assert [r.id for r in store.list_requests(state="pending")] == ["r0", "r1", "r1b", "e1"]
    assert [r.id for r in store.list_requests(requester="bob")] == ["r0", "e1"]
    assert [r.id for r in store.list_requests(state="denied", requester="alice")] == ["r2"]
    assert store.list_requests(state="used") == []


def test_update_request_compare_and_set(store: Store) -> None:
    store.add_request(request_("r1"))
    decision = {"approver": "carol", "decision": "approve", "reason": "ok", "at": NOW}
    updated = store.update_request("r1", 0, state="approved", decisions=[decision])
    assert updated is not None
    assert (updated.state, updated.decisions, updated.version) == ("approved", [decision], 1)
    assert store.get_request("r1") == updated

    assert store.update_request("r1", 0, state="denied") is None  # stale version: refused, nothing applied
    assert store.get_request("r1") == updated
    assert store.update_request("nope", 0, state="denied") is None

    used = store.update_request("r1", 1, state="used")
    assert used is not None and used.version == 2 and used.decisions == [decision]
    assert store.update_request("r1", 2) is not None  # no changes still bumps the version
    got = store.get_request("r1")
    assert got is not None and got.version == 3

    with pytest.raises(ValueError):
        store.update_request("r1", 3, version=10)
    with pytest.raises(ValueError):
        store.update_request("r1", 3, id="other")
    with pytest.raises(ValueError):
        store.update_request("r1", 3, colour="blue")
    got = store.get_request("r1")
    assert got is not None and got.version == 3


# ---------------------------------------------------------------- grants


def test_grant_add_get_list(store: Store) -> None:
    g = grant("g1")
    store.add_grant(g)
    assert store.get_grant("g1") == g
    assert store.get_grant("nope") is None
    with pytest.raises(AlreadyExists):
        store.add_grant(grant("g1", user="mallory"))

    store.add_grant(grant("elev", kind="elevation", target="dba", statement_sha256=None, granted_at=NOW - 5))
    store.add_grant(grant("expired", expires_at=NOW + 10))
    store.add_grant(grant("at-edge", expires_at=NOW + 20))
    store.add_grant(grant("revoked", state="revoked"))
    store.add_grant(grant("used", state="used", used_at=NOW))
    store.add_grant(grant("bobs", user="bob"))

    assert [x.id for x in store.list_grants("alice")] == [
        "elev",
        "g1",
        "expired",
        "at-edge",
        "revoked",
        "used",
    ]
    assert [x.id for x in store.list_grants("alice", active_at=NOW + 20)] == ["elev", "g1"]
    assert [x.id for x in store.list_grants("alice", active_at=NOW)] == ["elev", "g1", "expired", "at-edge"]
    assert [x.id for x in store.list_grants("bob", active_at=NOW)] == ["bobs"]
    assert store.list_grants("carol") == []
    assert [x.id for x in store.list_grants(None, active_at=NOW)] == [
        "elev",
        "g1",
        "expired",
        "at-edge",
        "bobs",
    ]


def test_revoke_grant_once_and_refusals(store: Store) -> None:
    store.add_grant(grant("elev", kind="elevation", target="dba", statement_sha256=None))
    store.add_grant(grant("stmt"))
    assert store.revoke_grant("elev", NOW + 1) is True
    assert store.revoke_grant("elev", NOW + 2) is False
    revoked = store.get_grant("elev")
    assert revoked is not None and revoked.state == "revoked"
    assert [x.id for x in store.list_grants("alice", active_at=NOW + 3)] == ["stmt"]
    assert store.revoke_grant("stmt", NOW) is True  # an approved, unused statement grant too
    assert store.use_grant("stmt", NOW) is False
    store.add_grant(grant("used", state="used", used_at=NOW))
    store.add_grant(grant("short", expires_at=NOW + 10))
    assert store.revoke_grant("used", NOW) is False
    assert store.revoke_grant("short", NOW + 10) is False  # already expired
    assert store.revoke_grant("unknown", NOW) is False


def test_use_grant_single_use_and_refusals(store: Store) -> None:
    store.add_grant(grant("g1"))
    assert store.use_grant("g1", NOW + 1) is True
    assert store.use_grant("g1", NOW + 2) is False
    used = store.get_grant("g1")
    assert used is not None and (used.state, used.used_at) == ("used", NOW + 1)
    assert store.list_grants("alice", active_at=NOW + 3) == []

    store.add_grant(grant("short", expires_at=NOW + 10))
    assert store.use_grant("short", NOW + 10) is False  # expires_at is the first invalid instant
    assert store.use_grant("short", NOW + 11) is False
    store.add_grant(grant("revoked", state="revoked"))
    assert store.use_grant("revoked", NOW) is False
    assert store.use_grant("unknown", NOW) is False
    store.add_grant(grant("elev", kind="elevation", statement_sha256=None))
    assert store.use_grant("elev", NOW) is False  # elevation grants are time-bound, not single-use
    for gid in ("short", "revoked", "elev"):
        got = store.get_grant(gid)
        assert got is not None and got.used_at is None and got.state != "used"


# ---------------------------------------------------------------- progress and metadata


def test_progress_never_goes_backwards(store: Store) -> None:
    assert store.get_progress("cast/s1") is None
    assert store.set_progress("cast/s1", 100) == 100
    assert store.set_progress("cast/s1", 40) == 100
    assert store.get_progress("cast/s1") == 100
    assert store.set_progress("cast/s1", 100) == 100
    assert store.set_progress("cast/s1", 2**40) == 2**40
    assert store.get_progress("cast/s2") is None
    assert store.set_progress("cast/s2", 0) == 0
    assert store.get_progress("cast/s1") == 2**40


def test_progress_is_forgotten_by_prefix(store: Store) -> None:
    """Recordings that left the spool take their commit points with them (shipping's retention)."""
    store.set_progress("ship:a:s1/x.cast", 5)
    store.set_progress("ship:a:s1/y.cast", 6)
    store.set_progress("ship:a:s10/x.cast", 7)
    store.set_progress("ship:a:s1_/x", 8)
    counter = store.change_counter()
    assert store.delete_progress("ship:a:s1/") == 2
    assert store.change_counter() > counter
    assert store.get_progress("ship:a:s1/x.cast") is None and store.get_progress("ship:a:s1/y.cast") is None
    assert store.get_progress("ship:a:s10/x.cast") == 7 and store.get_progress("ship:a:s1_/x") == 8
    counter = store.change_counter()
    assert store.delete_progress("ship:a:s1/") == 0
    assert store.delete_progress("ship:a:s%") == 0  # a prefix is literal: no wildcards
    assert store.change_counter() == counter
    with pytest.raises(ValueError):
        store.delete_progress("")


_property_keys = iter(range(10**9))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offsets=st.lists(st.integers(min_value=0, max_value=2**50), min_size=1, max_size=8))
def test_progress_is_running_maximum(store: Store, offsets: list[int]) -> None:
    key = f"prop/{next(_property_keys)}"
    best = -1
    for offset in offsets:
        best = max(best, offset)
        assert store.set_progress(key, offset) == best
    assert store.get_progress(key) == best


def test_meta_compare_and_set(store: Store) -> None:
    snapshot = {"version": 3, "roles": ["dba", "dev"], "nested": {"a": 1.5, "b": None}}
    assert store.get_meta("config") is None
    assert store.cas_meta("config", {"version": 2}, snapshot) is False  # absent is not {"version": 2}
    assert store.cas_meta("config", None, snapshot) is True
    assert store.get_meta("config") == snapshot
    assert store.cas_meta("config", None, {"version": 4}) is False  # present is not absent
    assert store.cas_meta("config", {"version": 2}, {"version": 4}) is False
    reordered = {"nested": {"b": None, "a": 1.5}, "roles": ["dba", "dev"], "version": 3}
    assert store.cas_meta("config", reordered, {"version": 4}) is True  # JSON equality, key order irrelevant
    assert store.get_meta("config") == {"version": 4}

    assert store.cas_meta("flag", None, True) is True
    assert store.cas_meta("flag", 1, False) is False  # JSON: true is not 1
    assert store.cas_meta("flag", True, 7) is True
    assert store.cas_meta("flag", 7.0, "seven") is True  # JSON: 7 is 7.0
    assert store.cas_meta("flag", "seven", None) is True  # new=None deletes
    assert store.get_meta("flag") is None
    assert store.cas_meta("flag", None, None) is True  # absent stays absent
    assert store.cas_meta("flag", None, [1, 2]) is True
    assert store.get_meta("flag") == [1, 2]
    assert store.get_meta("config") == {"version": 4}


# ---------------------------------------------------------------- change counter


def test_change_counter_bumps_on_every_write(store: Store) -> None:
    writes: list[Callable[[], object]] = [
        lambda: store.put_binding(OidcBinding("alice", "i", "s", NOW, NOW + 1)),
        lambda: store.put_binding(OidcBinding("alice", "i", "s2", NOW, NOW + 1)),
        lambda: store.delete_binding("alice"),
        lambda: store.add_session(session("s1")),
        lambda: store.end_session("s1", "ended", NOW),
        lambda: store.add_request(request_("r1")),
        lambda: store.update_request("r1", 0, state="approved"),
        lambda: store.add_grant(grant("g1")),
        lambda: store.use_grant("g1", NOW),
        lambda: store.add_grant(grant("g2", kind="elevation", statement_sha256=None)),
        lambda: store.revoke_grant("g2", NOW),
        lambda: store.replace_binding(None, OidcBinding("carol", "i", "s", NOW, NOW + 1)),
        lambda: store.set_progress("p", 1),
        lambda: store.set_progress("p", 2),
        lambda: store.cas_meta("m", None, 1),
        lambda: store.cas_meta("m", 1, 2),
        lambda: store.cas_meta("m", 2, None),
    ]
    no_ops: list[Callable[[], object]] = [
        lambda: store.delete_binding("alice"),
        lambda: store.end_session("s1", "ended", NOW),
        lambda: store.update_request("r1", 0, state="denied"),
        lambda: store.use_grant("g1", NOW),
        lambda: store.set_progress("p", 1),
        lambda: store.cas_meta("m", 5, 6),
        lambda: store.get_session("s1"),
        lambda: store.list_sessions(),
        lambda: store.list_grants("alice", active_at=NOW),
        lambda: store.revoke_grant("nope", NOW),
        lambda: store.revoke_grant("g2", NOW),
        lambda: store.replace_binding(None, OidcBinding("carol", "i", "s9", NOW, NOW + 1)),
    ]
    counter = store.change_counter()
    assert counter == 0
    for write in writes:
        write()
        now = store.change_counter()
        assert now > counter
        counter = now
    for no_op in no_ops:
        no_op()
        assert store.change_counter() == counter
    with pytest.raises(AlreadyExists):
        store.add_session(session("s1"))
    assert store.change_counter() == counter


def test_second_instance_sees_writes_no_stale_cache(spec: Spec) -> None:
    """Two processes' worth of store objects: neither may serve a cached or next-id-colliding view."""
    a, b = make_store(spec), make_store(spec)
    try:
        assert b.get_session("s1") is None and b.list_sessions() == []
        a.add_session(session("s1"))
        assert b.get_session("s1") == session("s1")
        b.add_session(session("s2", started_at=NOW + 1))
        a.add_session(session("s3", started_at=NOW + 2))
        b.end_session("s1", "ended", NOW + 3)
        assert [s.id for s in a.list_sessions()] == ["s3", "s2", "s1"]
        assert [s.id for s in b.list_sessions(status="running")] == ["s3", "s2"]
        assert a.cas_meta("k", None, 1) and b.cas_meta("k", 1, 2) and a.get_meta("k") == 2
        assert a.change_counter() == b.change_counter() > 0
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------- concurrency, with real processes


def _spawn(role: str, spec: Spec, *args: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, __file__, role, json.dumps([list(spec), *args])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def _run_together(procs: list[subprocess.Popen[str]], timeout: float = 45) -> list[Any]:
    """Start line: every worker has opened its store and says "ready"; then all get "go" at once."""
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line.strip() == "ready", (line, p.stderr.read() if p.stderr else "")
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        for p in procs:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert p.returncode == 0, err
            results.append(json.loads(out))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _worker_main(role: str, raw: str) -> None:
    """Entry point of a worker process (this file run as a script)."""
    args = json.loads(raw)
    kind, where = args[0]
    store = make_store((kind, where))
    store.change_counter()  # connect (and create the schema) before the start line
    print("ready", flush=True)
    sys.stdin.readline()
    if role == "write":
        idx, n_sessions, n_increments = args[1:]
        retries = 0
        for i in range(n_sessions):
            store.add_session(session(f"w{idx}-{i}", started_at=NOW + i, pid=idx))
            store.set_progress("ship", idx * 1000 + i)
            if i < n_increments:
                while True:
                    current = store.get_meta("counter")
                    if store.cas_meta("counter", current, (current or 0) + 1):
                        break
                    retries += 1
        print(json.dumps({"retries": retries}))
    elif role == "race":
        idx = args[1]
        won_grant = store.use_grant("g-race", NOW + 1)
        decision = {"approver": f"approver-{idx}", "decision": "approve", "reason": "", "at": NOW}
        won_request = store.update_request("r-race", 0, state="approved", decisions=[decision])
        print(json.dumps({"idx": idx, "grant": won_grant, "request": won_request is not None}))
    elif role == "bind":
        idx = args[1]
        identity = OidcIdentity("https://idp", f"sub-{idx}", {}, [], NOW + 600)
        try:
            outcome = check_binding(store, "alice", identity, ttl_s=3600, now=NOW)
        except BindingError:
            outcome = "refused"
        print(json.dumps({"idx": idx, "outcome": outcome}))
    elif role == "bulk":
        idx, n = args[1:]
        blob = "y" * 100_000
        for i in range(n):
            store.add_session(session(f"bulk{idx}-{i}", meta={"pad": "x" * 4000, "i": i}))
            # grow then shrink the file: an in-place rewrite leaves a stale tail until it truncates
            store.cas_meta(f"blob{idx}", None, blob)
            store.cas_meta(f"blob{idx}", blob, None)
        print(json.dumps({}))
    store.close()


@pytest.mark.timeout(60)
def test_concurrent_writers_lose_nothing(spec: Spec) -> None:
    workers, n_sessions, n_increments = 20, 25, 5
    results = _run_together([_spawn("write", spec, i, n_sessions, n_increments) for i in range(workers)])
    store = make_store(spec)
    try:
        ids = {s.id for s in store.list_sessions()}
        assert ids == {f"w{w}-{i}" for w in range(workers) for i in range(n_sessions)}
        assert store.get_meta("counter") == workers * n_increments
        assert store.get_progress("ship") == (workers - 1) * 1000 + n_sessions - 1
        assert store.change_counter() >= workers * (n_sessions + n_increments) + 1
    finally:
        store.close()
    assert len(results) == workers


@pytest.mark.timeout(60)
def test_racing_single_use_grant_and_request_cas(spec: Spec) -> None:
    store = make_store(spec)
    try:
        store.add_grant(grant("g-race"))
        store.add_request(request_("r-race"))
        results = _run_together([_spawn("race", spec, i) for i in range(20)])
        grant_winners = [r["idx"] for r in results if r["grant"]]
        request_winners = [r["idx"] for r in results if r["request"]]
        assert len(grant_winners) == 1
        assert len(request_winners) == 1
        used = store.get_grant("g-race")
        assert used is not None and used.state == "used"
        final = store.get_request("r-race")
        assert final is not None and final.version == 1
        assert [d["approver"] for d in final.decisions] == [f"approver-{request_winners[0]}"]
    finally:
        store.close()


@pytest.mark.timeout(60)
def test_racing_first_oidc_logins_bind_one_account(spec: Spec) -> None:
    """Simultaneous first logins of one user with different provider accounts: one binds, all others are
    refused (a plain read-then-write would let several think they bound)."""
    results = _run_together([_spawn("bind", spec, i) for i in range(12)])
    outcomes = sorted(r["outcome"] for r in results)
    assert outcomes == ["bound"] + ["refused"] * 11, outcomes
    (winner,) = [r["idx"] for r in results if r["outcome"] == "bound"]
    store = make_store(spec)
    try:
        bound = store.get_binding("alice")
        assert bound is not None and bound.subject == f"sub-{winner}"
    finally:
        store.close()


@pytest.mark.timeout(60)
def test_tinydb_readers_never_see_a_torn_file(tmp_path: Path) -> None:
    """Lock-free readers rely on os.replace: with in-place rewrites they would read half-written JSON."""
    path = tmp_path / "state.json"
    spec: Spec = ("tinydb", str(path))
    seed = TinyDBStore(path)
    for i in range(40):
        seed.add_session(session(f"seed-{i}", meta={"pad": "x" * 4000}))
    writers = [_spawn("bulk", spec, i, 25) for i in range(4)]
    results: list[Any] = []
    runner = threading.Thread(target=lambda: results.extend(_run_together(writers)))
    runner.start()
    reads, seen_sizes, failures = 0, set(), []
    reader = TinyDBStore(path)
    while runner.is_alive() or reads < 20:
        try:
            raw = path.read_bytes()
            seen_sizes.add(len(json.loads(raw)["sessions"]))
            seen_sizes.add(len(reader.list_sessions()))
        except (ValueError, StoreError) as e:
            failures.append(repr(e)[:200])
        reads += 1
    runner.join()
    assert len(results) == 4
    assert failures == []
    assert len(seen_sizes) > 2, "the reader should have watched the file change under it"
    assert len(reader.list_sessions()) == 40 + 4 * 25


# ---------------------------------------------------------------- TinyDB specifics


def test_tinydb_file_modes(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "state.json"
    store = TinyDBStore(path)
    store.add_session(session("s1"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(str(path) + ".lock").stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE((tmp_path / "deep").stat().st_mode) & 0o077 == 0
    path.chmod(0o644)
    store.add_session(session("s2"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # every write replaces the file with a 0600 one
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json", "state.json.lock"]  # no temp left


@pytest.mark.parametrize(
    "content",
    [
        b'{"sessions": {"1": {"id": "s1", "token": "hunter2-SECRET"',
        b"\xff\xfehunter2-SECRET",
        b'["hunter2-SECRET"]',
        b'{"sessions": {"1": "hunter2-SECRET"}}',
        b'{"_state": {"1": {"format": 99, "change_counter": 1}}, "x": {"1": {"hunter2-SECRET": 1}}}',
    ],
)
def test_tinydb_corrupt_file_is_a_clear_store_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    store = TinyDBStore(path)
    for call in (store.list_sessions, store.change_counter, lambda: store.add_session(session("s1"))):
        with pytest.raises(StoreError) as info:
            call()
        message = str(info.value)
        assert str(path) in message and "hunter2" not in message and "\n" not in message
    assert path.read_bytes() == content  # a write never replaces what it could not read


def test_tinydb_malformed_record_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"sessions": {"1": {"id": "s1", "secret": "hunter2-SECRET"}}}))
    with pytest.raises(StoreError) as info:
        TinyDBStore(path).get_session("s1")
    assert "hunter2" not in str(info.value) and "session" in str(info.value)


def test_tinydb_failed_write_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = TinyDBStore(path)
    store.add_session(session("s1"))
    before = path.read_bytes()
    with pytest.raises(TypeError):
        store.add_session(session("s2", meta={"not json": object()}))
    assert path.read_bytes() == before
    assert store.get_session("s2") is None and store.change_counter() == 1


def test_tinydb_empty_or_missing_file_is_an_empty_store(tmp_path: Path) -> None:
    missing = TinyDBStore(tmp_path / "none.json")
    assert missing.list_sessions() == [] and missing.change_counter() == 0
    assert not (tmp_path / "none.json").exists()  # reads create nothing
    (tmp_path / "empty.json").write_bytes(b"")
    assert TinyDBStore(tmp_path / "empty.json").get_meta("x") is None


# ---------------------------------------------------------------- PostgreSQL specifics


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://bastion:Pa55-hunter2-secret@127.0.0.1:1/state",
        "host=127.0.0.1 port=1 user=bastion password=Pa55-hunter2-secret dbname=state",
        "postgresql://bastion:Pa55-hunter2-secret@127.0.0.1:notaport/state",
        "host=127.0.0.1 password=Pa55-hunter2-secret garbage",
    ],
)
def test_postgres_errors_never_reveal_dsn_or_password(dsn: str) -> None:
    with pytest.raises(StoreError) as info:
        store = PostgresStore(dsn)
        store.get_session("s1")
    rendered = "".join(traceback.format_exception(info.value))
    assert "hunter2" not in rendered and dsn not in rendered
    assert len(_chain(info.value)) == 1  # the driver error (which can hold the connection) is not chained
    assert "hunter2" not in repr(info.value.args)


def test_postgres_password_argument_and_scrubbing(pg_dsn: str) -> None:
    params = conninfo_to_dict(pg_dsn)
    closed = make_conninfo(pg_dsn, port="1")
    with pytest.raises(StoreError) as info:
        PostgresStore(closed, password="hunter2-from-file").change_counter()
    assert "hunter2" not in str(info.value) and "127.0.0.1" in str(info.value)
    assert "hunter2" not in repr(PostgresStore(closed, password="hunter2-from-file"))
    store = open_store(
        f"postgresql://{params.get('user', 'postgres')}@{params.get('host', '127.0.0.1')}:"
        f"{params.get('port', '5432')}/{params['dbname']}",
        password=params.get("password") or "unused-with-trust-auth",
    )
    try:
        assert isinstance(store, PostgresStore)
        store.change_counter()
    finally:
        store.close()


def test_postgres_schema_creation_races_safely(pg_spec: Spec) -> None:
    """Logins on several hosts may create the schema at the same moment (separate connections, same DB)."""
    start = threading.Barrier(12)
    failures: list[BaseException] = []
    stores = [make_store(pg_spec) for _ in range(12)]

    def first_use(s: Store) -> None:
        start.wait(timeout=30)
        try:
            s.add_session(session(f"s-{id(s)}"))
        except BaseException as e:
            failures.append(e)

    threads = [threading.Thread(target=first_use, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert failures == []
        assert len(stores[0].list_sessions()) == 12 and stores[0].change_counter() == 12
    finally:
        for s in stores:
            s.close()


def test_postgres_recovers_after_connection_loss(pg_spec: Spec, pg_dsn: str) -> None:
    store = make_store(pg_spec)
    try:
        store.add_session(session("s1"))
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'bastion' AND datname = current_database()"
            )
        with contextlib.suppress(StoreError):  # the call that finds the connection dead may fail, cleanly
            store.get_session("s1")
        assert store.get_session("s1") == session("s1")
    finally:
        store.close()


def test_postgres_write_notifies_in_same_transaction(pg_spec: Spec) -> None:
    store = make_store(pg_spec)
    try:
        with psycopg.connect(pg_spec[1], autocommit=True) as listener:
            listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
            store.add_session(session("s1"))
            store.use_grant("unknown", NOW)  # no change, no notification
            store.cas_meta("k", None, 1)
            payloads = [json.loads(n.payload) for n in listener.notifies(timeout=2, stop_after=2)]
        assert [p["table"] for p in payloads] == ["sessions", "meta"]
        assert payloads[1]["counter"] == payloads[0]["counter"] + 1 == store.change_counter()
    finally:
        store.close()


# ---------------------------------------------------------------- open_store


def test_open_store_tinydb_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absolute = open_store(f"tinydb://{tmp_path}/a/state.json")
    assert isinstance(absolute, TinyDBStore) and absolute.path == tmp_path / "a" / "state.json"
    plain = open_store(f"tinydb:{tmp_path}/b.json")
    assert isinstance(plain, TinyDBStore) and plain.path == tmp_path / "b.json"
    monkeypatch.chdir(tmp_path)
    relative = open_store("tinydb:state/c.json")
    assert isinstance(relative, TinyDBStore) and relative.path == tmp_path / "state" / "c.json"
    monkeypatch.chdir("/")  # resolved when opened: a later chdir does not move the state
    relative.add_session(session("s1"))
    assert (tmp_path / "state" / "c.json").exists()
    with pytest.raises(StoreError, match="needs a path"):
        open_store("tinydb:")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mysql://root:hunter2-secret@db/state", "mysql"),
        ("sqlite:/var/lib/hunter2-secret.db", "sqlite"),
        ("host=db password=hunter2-secret", None),
        ("hunter2-secret", None),
        ("postgresql:hunter2-secret", "postgresql"),
        ("", None),
    ],
)
def test_open_store_rejects_other_backends_without_echoing(url: str, shown: str | None) -> None:
    with pytest.raises(StoreError, match="unsupported state backend") as info:
        open_store(url)
    assert "hunter2" not in str(info.value)
    if shown:
        assert shown in str(info.value)


def test_open_store_postgres_urls(pg_dsn: str) -> None:
    params = conninfo_to_dict(pg_dsn)
    host, port, db = params.get("host", "127.0.0.1"), params.get("port", "5432"), params["dbname"]
    user = params.get("user", "postgres")
    for scheme in ("postgresql", "postgres"):
        store = open_store(f"{scheme}://{user}@{host}:{port}/{db}", password=params.get("password"))
        try:
            assert isinstance(store, PostgresStore)
            assert store.get_session("none") is None
        finally:
            store.close()


if __name__ == "__main__":
    _worker_main(sys.argv[1], sys.argv[2])


def test_wait_for_change_wakes_on_a_write_and_times_out(store: Store) -> None:
    """Live views block on the store; a write from elsewhere wakes them, quiet stores time out."""
    import threading
    import time as _time

    seen = store.change_counter()
    started = _time.monotonic()
    assert store.wait_for_change(seen, 0.3) == seen
    assert _time.monotonic() - started >= 0.25

    def later() -> None:
        _time.sleep(0.3)
        store.cas_meta("wake", None, {"x": 1})

    threading.Thread(target=later).start()
    started = _time.monotonic()
    counter = store.wait_for_change(seen, 10)
    assert counter > seen
    assert _time.monotonic() - started < 5
