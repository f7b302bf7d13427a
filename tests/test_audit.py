"""Audit log, signing key and verifier: real files, real processes, every tampering kind named exactly."""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import zlib
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.audit.log import (
    GENESIS,
    HEAD_SIZE,
    HEAD_SLOT_SIZE,
    RECOVERED,
    AuditLog,
    AuditLogError,
    checkpoint_message,
    head_message,
    read_events,
    record_hash,
)
from bastion.audit.signing import (
    SigningKeyError,
    generate_key,
    key_id,
    load_private_key,
    load_public_key,
)
from bastion.audit.verify import verify_log
from bastion.canonical import canonical_json

REPO = Path(__file__).resolve().parent.parent
KEY = Ed25519PrivateKey.generate()
PUB = KEY.public_key()
OTHER_KEY = Ed25519PrivateKey.generate()


# -- helpers -------------------------------------------------------------------------------------------------


def records_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def write_records(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_bytes(b"".join(canonical_json(r) + b"\n" for r in records))


def rehash(records: list[dict[str, Any]], start: int) -> None:
    """Recompute hashes (and prev links) from index start on, as a careful attacker without the key would."""
    for i in range(start, len(records)):
        r = records[i]
        if i > 0:
            r["prev"] = records[i - 1]["hash"]
        if r["type"] == "checkpoint":
            r["payload"]["upto_hash"] = r["prev"]
        r["hash"] = record_hash(r)


def head_file(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + ".head")


def head_slots(log_path: Path) -> list[dict[str, Any] | None]:
    """The two slots of the head file, parsed independently of the code under test (None: empty or torn)."""
    raw = head_file(log_path).read_bytes()
    assert len(raw) == HEAD_SIZE == 2 * HEAD_SLOT_SIZE
    slots: list[dict[str, Any] | None] = []
    for i in (0, 1):
        slot = raw[i * HEAD_SLOT_SIZE : (i + 1) * HEAD_SLOT_SIZE]
        body, crc, _ = slot.split(b"\n", 2) if b"\n" in slot else (b"", b"", b"")
        if crc != b"%08x" % zlib.crc32(body):
            slots.append(None)
            continue
        assert slot.endswith(b"\n") and body == canonical_json(json.loads(body))
        slots.append(json.loads(body))
    return slots


def current_head(log_path: Path) -> dict[str, Any]:
    return max((s for s in head_slots(log_path) if s is not None), key=lambda s: s["seq"])


def write_slot(
    log_path: Path, head: dict[str, Any], *, index: int | None = None, crc_ok: bool = True
) -> None:
    """Overwrite one head slot in place, as an attacker (or a torn write, with crc_ok=False) would."""
    body = canonical_json(head)
    crc = b"%08x" % (zlib.crc32(body) ^ (0 if crc_ok else 1))
    data = body + b"\n" + crc + b"\n"
    data += b" " * (HEAD_SLOT_SIZE - 1 - len(data)) + b"\n"
    index = head["seq"] % 2 if index is None else index
    with open(head_file(log_path), "r+b") as f:
        f.seek(index * HEAD_SLOT_SIZE)
        f.write(data)


def wipe_pending_marker(log_path: Path) -> None:
    """What a power loss does to the lock file's pending marker when it was never written back."""
    log_path.with_name(log_path.name + ".lock").write_bytes(b"")


def make_log(directory: Path, events: int = 28, every: int = 10, durable: bool = True) -> Path:
    """28 events with every=10: seq 1..10, checkpoint 11, 12..21, checkpoint 22, 23..30 (head covers them)."""
    path = directory / "audit.jsonl"
    log = AuditLog(path, "bastion-1", KEY, checkpoint_every=every)
    for i in range(events):
        log.append(
            "sql.decision", {"i": i, "sql": "select 1"}, session=f"s{i % 3}", user="alice", durable=durable
        )
    return path


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_killed_child(tmp_path: Path, body: str) -> Ed25519PrivateKey:
    """Run body in a child process appending to tmp_path/audit.jsonl as `log`, then SIGKILL it.

    Returns the key the child signed with (for the next appender in this process).
    """
    key_path = tmp_path / "audit.key"
    if not key_path.exists():
        generate_key(key_path)
    code = (
        "import os, signal, sys\n"
        "from bastion.audit.log import AuditLog\n"
        "from bastion.audit.signing import load_private_key\n"
        f"log = AuditLog({str(tmp_path / 'audit.jsonl')!r}, 'bastion-1', "
        f"load_private_key({str(key_path)!r}), checkpoint_every=100)\n"
        + textwrap.dedent(body)
        + "\nos.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return load_private_key(key_path)


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return make_log(tmp_path)


# -- signing key ---------------------------------------------------------------------------------------------


def test_generate_key_creates_private_0600_in_0700_dir_and_public(tmp_path: Path) -> None:
    key_path = tmp_path / "keys" / "audit.key"
    assert generate_key(key_path) is True
    assert stat.S_IMODE(key_path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    private = load_private_key(key_path)
    public = load_public_key(tmp_path / "keys" / "audit.key.pub")
    assert key_id(public) == key_id(private.public_key())
    assert re.fullmatch(r"ed25519:[0-9a-f]{16}", key_id(public))
    assert not [p.name for p in key_path.parent.iterdir() if p.name.endswith(".tmp")]


def test_generate_key_never_overwrites(tmp_path: Path) -> None:
    key_path = tmp_path / "audit.key"
    assert generate_key(key_path) is True
    before = key_path.read_bytes(), (tmp_path / "audit.key.pub").read_bytes()
    assert generate_key(key_path) is False
    assert (key_path.read_bytes(), (tmp_path / "audit.key.pub").read_bytes()) == before


def test_generate_key_refuses_orphan_public_key(tmp_path: Path) -> None:
    (tmp_path / "audit.key.pub").write_text("ssh-ed25519 AAAA trusted-elsewhere\n")
    with pytest.raises(SigningKeyError, match="exists without its private key"):
        generate_key(tmp_path / "audit.key")
    assert not (tmp_path / "audit.key").exists()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_load_private_key_refuses_key_readable_by_others(tmp_path: Path, mode: int) -> None:
    key_path = tmp_path / "audit.key"
    generate_key(key_path)
    os.chmod(key_path, mode)
    with pytest.raises(SigningKeyError) as err:
        load_private_key(key_path)
    message = str(err.value)
    assert str(key_path) in message and "chmod 600" in message and "\n" not in message
    assert "PRIVATE" not in message


def test_key_load_errors_are_one_line_and_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="does not exist"):
        load_private_key(tmp_path / "missing.key")
    bogus = tmp_path / "bogus.key"
    bogus.write_text("-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n")
    os.chmod(bogus, 0o600)
    with pytest.raises(SigningKeyError) as err:
        load_private_key(bogus)
    assert str(bogus) in str(err.value) and "c2VjcmV0" not in str(err.value)
    with pytest.raises(SigningKeyError, match="not an OpenSSH or PEM"):
        load_public_key(bogus)


def test_load_public_key_accepts_pem(tmp_path: Path) -> None:
    pem = tmp_path / "audit.pem"
    pem.write_bytes(
        PUB.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert key_id(load_public_key(pem)) == key_id(PUB)


# -- append and verify ---------------------------------------------------------------------------------------


def test_append_and_verify_with_periodic_checkpoints(log_path: Path) -> None:
    records = records_of(log_path)
    assert [r["seq"] for r in records] == list(range(1, 31))
    assert [r["seq"] for r in records if r["type"] == "checkpoint"] == [11, 22]
    assert records[0]["prev"] == GENESIS
    for prev, rec in itertools.pairwise(records):
        assert rec["prev"] == prev["hash"]
    for rec in records:
        assert set(rec) == {"seq", "time", "bastion", "session", "user", "type", "payload", "prev", "hash"}
        assert rec["hash"] == record_hash(rec)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", rec["time"])
    ckpt = records[10]
    assert ckpt["payload"]["upto_seq"] == 10 and ckpt["payload"]["upto_hash"] == records[9]["hash"]
    assert ckpt["payload"]["key_id"] == key_id(PUB)
    PUB.verify(base64.b64decode(ckpt["payload"]["sig"]), checkpoint_message("bastion-1", 11, ckpt["prev"]))

    slots = head_slots(log_path)  # two slots: seq % 2; every append was durable, so they hold 30 and 29
    assert slots[0] is not None and slots[1] is not None
    assert (slots[0]["seq"], slots[0]["hash"]) == (30, records[-1]["hash"])
    assert (slots[1]["seq"], slots[1]["hash"]) == (29, records[-2]["hash"])
    for head in slots:
        assert head["key_id"] == key_id(PUB)
        PUB.verify(base64.b64decode(head["sig"]), head_message("bastion-1", head["seq"], head["hash"]))
    for name in ("audit.jsonl", "audit.jsonl.head", "audit.jsonl.lock"):
        assert stat.S_IMODE((log_path.parent / name).stat().st_mode) == 0o600

    report = verify_log(log_path, PUB)
    assert (report.ok, report.events, report.checkpoints, report.last_seq, report.problem) == (
        True,
        28,
        2,
        30,
        None,
    )
    assert (report.head_seq, report.recovered, report.unsigned) == (30, [], None)
    assert [r["seq"] for r in read_events(log_path)] == list(range(1, 31))


def test_explicit_checkpoint_at_session_end(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", "bastion-1", KEY)
    event = log.append("session.start", {"tty": True}, session="s1", user="bob")
    ckpt = log.checkpoint("session end", session="s1", user="bob")
    assert event["seq"] == 1 and ckpt["seq"] == 2 and ckpt["type"] == "checkpoint"
    assert ckpt["payload"]["reason"] == "session end" and ckpt["payload"]["upto_hash"] == event["hash"]
    report = verify_log(tmp_path / "audit.jsonl", [PUB])
    assert report.ok and report.events == 1 and report.checkpoints == 1


def test_payload_is_stored_as_it_reads_back(tmp_path: Path) -> None:
    """Int keys, tuples and unicode survive the JSON round trip, so their hash verifies."""
    log = AuditLog(tmp_path / "audit.jsonl", "bastion-1", KEY)
    rec = log.append("x", {"m": {10: "a", 9: ("b", "é")}, "s": "\u2028"}, session=None, user=None)
    assert rec["payload"] == {"m": {"10": "a", "9": ["b", "é"]}, "s": "\u2028"}
    assert verify_log(tmp_path / "audit.jsonl", PUB).ok


@pytest.mark.parametrize("payload", [{"o": object()}, {"s": {1, 2}}, {"n": float("nan")}, ["not", "dict"]])
def test_non_serializable_payload_rejected_and_nothing_written(tmp_path: Path, payload: Any) -> None:
    path = make_log(tmp_path, events=3)
    before = path.read_bytes(), (tmp_path / "audit.jsonl.head").read_bytes()
    log = AuditLog(path, "bastion-1", KEY)
    with pytest.raises(ValueError, match="payload"):
        log.append("x", payload, session=None, user=None)
    assert (path.read_bytes(), (tmp_path / "audit.jsonl.head").read_bytes()) == before


def test_reserved_types_rejected(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", "bastion-1", KEY)
    for reserved in ("checkpoint", RECOVERED):
        with pytest.raises(ValueError, match="reserved"):
            log.append(reserved, {}, session=None, user=None)
    assert not (tmp_path / "audit.jsonl").exists() or (tmp_path / "audit.jsonl").read_bytes() == b""


def test_large_record_tail_is_read_backwards(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", "bastion-1", KEY)
    log.append("big", {"blob": "x" * 50_000}, session=None, user=None)
    log.append("big", {"blob": "y\n" * 30_000}, session=None, user=None)
    rec = log.append("small", {}, session=None, user=None)
    assert rec["seq"] == 3 and verify_log(tmp_path / "audit.jsonl", PUB).ok


def test_record_is_on_disk_when_append_returns(tmp_path: Path) -> None:
    """A child appends and is SIGKILLed right after append returns: the record and head must be there."""
    path = tmp_path / "audit.jsonl"
    key_path = tmp_path / "audit.key"
    generate_key(key_path)
    code = f"""
import os, signal, sys
from bastion.audit.log import AuditLog
from bastion.audit.signing import load_private_key
log = AuditLog({str(path)!r}, "bastion-1", load_private_key({str(key_path)!r}))
rec = log.append("sql.allow", {{"statement": "select 1"}}, session="s1", user="alice")
sys.stdout.write(str(rec["seq"]) + "\\n"); sys.stdout.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout.strip() == "1"
    [rec] = records_of(path)
    assert rec["payload"] == {"statement": "select 1"} and rec["seq"] == 1
    pub = load_public_key(tmp_path / "audit.key.pub")
    assert verify_log(path, pub).ok and current_head(path)["seq"] == 1
    # the head did not lag (it is written before append returns): the next process just continues
    nxt = AuditLog(path, "bastion-1", load_private_key(key_path)).append("x", {}, session="s2", user="bob")
    assert nxt["seq"] == 2 and not any(r["type"] == RECOVERED for r in records_of(path))
    assert verify_log(path, pub).ok


def test_concurrent_appends_from_20_processes(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    key_path = tmp_path / "audit.key"
    generate_key(key_path)
    go = tmp_path / "go"
    code = f"""
import os, sys, time
from bastion.audit.log import AuditLog
from bastion.audit.signing import load_private_key
log = AuditLog({str(path)!r}, "bastion-1", load_private_key({str(key_path)!r}), checkpoint_every=25)
worker = int(sys.argv[1])
while not os.path.exists({str(go)!r}):
    time.sleep(0.01)
for i in range(50):
    durable = (worker + i) % 3 != 0  # a third non-durable: committed by the next writer's fdatasync
    log.append("cmd", {{"worker": worker, "i": i}}, session=f"w{{worker}}", user=f"u{{worker}}", durable=durable)
"""
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(w)], env=child_env(), stderr=subprocess.PIPE)
        for w in range(20)
    ]
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    AuditLog(path, "bastion-1", load_private_key(key_path), checkpoint_every=25).sync()
    report = verify_log(path, load_public_key(tmp_path / "audit.key.pub"))
    assert report.ok, report.problem
    assert report.events == 1000 and report.recovered == []  # group commit across processes: no recovery
    records = records_of(path)
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    events = [(r["payload"]["worker"], r["payload"]["i"]) for r in records if r["type"] == "cmd"]
    assert sorted(events) == [(w, i) for w in range(20) for i in range(50)]
    for w in range(20):  # each process's own events keep their order
        assert [i for ww, i in events if ww == w] == list(range(50))
    assert report.checkpoints == 1000 // 25


def test_concurrent_appends_from_threads(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", "bastion-1", KEY, checkpoint_every=7)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(25):
                log.append("t", {"t": t, "i": i}, session=None, user=None, durable=False)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    # 100 events + a durable checkpoint after every 7th: the head names checkpoint 112; 113..114 are pending
    path = tmp_path / "audit.jsonl"
    problem = verify_log(path, PUB).problem
    assert problem is not None and (problem.kind, problem.seq) == ("head_mismatch", 113)
    report = verify_log(path, PUB, require_head=False)
    assert report.ok and report.events == 100 and report.unsigned == (113, 114)
    log.sync()
    report = verify_log(path, PUB)
    assert report.ok and report.events == 100 and report.unsigned is None and report.head_seq == 114
    assert not any(r["type"] == RECOVERED for r in records_of(path))


@pytest.mark.parametrize("durable", [True, False])
def test_verify_during_concurrent_appends_sees_a_consistent_snapshot(tmp_path: Path, durable: bool) -> None:
    """verify snapshots head and log size under the appenders' lock, so a busy log never looks tampered.

    With non-durable appends the live tail is legitimately not signed yet: verify accepts it only with
    require_head=False, and names it.
    """
    path = make_log(tmp_path, events=3)
    log = AuditLog(path, "bastion-1", KEY, checkpoint_every=10)
    done = threading.Event()

    def work() -> None:
        for i in range(300):
            log.append("busy", {"i": i}, session=None, user=None, durable=durable)
        done.set()

    writer = threading.Thread(target=work)
    writer.start()
    reports = []
    while not done.is_set():
        reports.append(verify_log(path, PUB, require_head=durable))
    writer.join()
    assert len(reports) > 1 and all(r.ok for r in reports), next(r.problem for r in reports if not r.ok)
    if durable:
        assert all(r.unsigned is None for r in reports)


# -- tampering: each kind, named exactly --------------------------------------------------------------------


def test_modified_payload(log_path: Path) -> None:
    records = records_of(log_path)
    records[4]["payload"]["sql"] = "drop table users"
    write_records(log_path, records)
    report = verify_log(log_path, PUB)
    assert not report.ok and report.problem is not None
    assert (report.problem.kind, report.problem.seq, report.problem.line) == ("modified", 5, 5)
    assert report.problem.message == "line 5 (seq 5): hash mismatch — record modified"
    assert report.events == 4


def test_modified_with_own_hash_recomputed(log_path: Path) -> None:
    records = records_of(log_path)
    records[4]["payload"]["sql"] = "drop table users"
    records[4]["hash"] = record_hash(records[4])
    write_records(log_path, records)
    problem = verify_log(log_path, PUB).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.line) == ("modified", 5, 5)
    assert "hash recomputed" in problem.message


def test_modified_with_all_hashes_recomputed_is_caught_by_checkpoint_signature(log_path: Path) -> None:
    records = records_of(log_path)
    records[4]["payload"]["sql"] = "drop table users"
    rehash(records, 4)
    write_records(log_path, records)
    problem = verify_log(log_path, PUB).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.line) == ("bad_signature", 11, 11)
    assert problem.message.startswith("checkpoint at seq 11 (line 11): signature does not verify")
    assert "seq 1..10" in problem.message


def test_modified_after_last_checkpoint_with_hashes_recomputed_is_caught_by_head(log_path: Path) -> None:
    records = records_of(log_path)
    records[24]["payload"]["sql"] = "drop table users"
    rehash(records, 24)
    write_records(log_path, records)
    problem = verify_log(log_path, PUB).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == ("head_mismatch", 30)
    assert "seq 23..30" in problem.message


def test_deleted_middle_record(log_path: Path) -> None:
    records = records_of(log_path)
    del records[14]
    write_records(log_path, records)
    problem = verify_log(log_path, PUB).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.line) == ("deleted", 15, 15)
    assert problem.message == "seq 15 missing after seq 14 (line 15) — record deleted"


def test_deleted_whole_session(log_path: Path) -> None:
    records = [r for r in records_of(log_path) if r["session"] != "s1"]
    write_records(log_path, records)
    problem = verify_log(log_path, PUB).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == ("deleted", 2)  # the first event of session s1


def test_deleted_first_record(log_path: Path) -> None:
    records = records_of(log_path)[1:]
    write_records(log_path, records)
    problem = verify_log(log_path, PUB).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.line) == ("deleted", 1, 1)
    assert problem.message == "seq 1 missing at the start of the log (line 1) — record deleted"


def _forged(after: dict[str, Any], seq: int, prev: str) -> dict[str, Any]:
    rec = dict(after, seq=seq, prev=prev, payload={"i": -1, "sql": "grant all"}, type="sql.decision")
    rec["hash"] = record_hash(rec)
    return rec


def test_inserted_record_linked_into_the_chain(log_path: Path) -> None:
    records = records_of(log_path)
    forged = _forged(records[6], seq=8, prev=records[6]["hash"])  # claims seq 8, links to seq 7
    records.insert(7, forged)
    write_records(log_path, records)
    problem = verify_log(log_path, PUB).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.line) == ("inserted", 8, 8)
    assert problem.message.startswith("line 8 (seq 8): inserted record")


def test_inserted_record_not_linked(log_path: Path) -> None:
    records = records_of(log_path)
    records.insert(7, _forged(records[6], seq=8, prev="ab" * 32))
    write_records(log_path, records)
    problem = verify_log(log_path, PUB).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.line) == ("inserted", 8, 8)


def test_inserted_copy_of_an_earlier_record(log_path: Path) -> None:
    records = records_of(log_path)
    records.insert(20, dict(records[2]))
    write_records(log_path, records)
    problem = verify_log(log_path, PUB).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.line) == ("inserted", 3, 21)
    assert "a copy of seq 3 at line 3" in problem.message


def test_two_records_swapped(log_path: Path) -> None:
    records = records_of(log_path)
    records[4], records[5] = records[5], records[4]
    write_records(log_path, records)
    problem = verify_log(log_path, PUB).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.line) == ("reordered", 6, 5)
    assert problem.message == (
        "line 5 (seq 6): out of order — expected seq 5, which follows at line 6; records reordered"
    )


def test_two_distant_records_swapped(log_path: Path) -> None:
    records = records_of(log_path)
    records[4], records[8] = records[8], records[4]
    write_records(log_path, records)
    problem = verify_log(log_path, PUB).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.line) == ("reordered", 9, 5)
    assert "expected seq 5, which appears later at line 9" in problem.message


def test_truncated_tail(log_path: Path) -> None:
    records = records_of(log_path)[:-3]
    write_records(log_path, records)
    report = verify_log(log_path, PUB)
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == ("truncated", 28)
    assert report.problem.message.startswith(
        "log ends at seq 27 but the signed head records seq 30 — tail truncated"
    )
    with pytest.raises(AuditLogError, match="ends at seq 27 but its signed head records seq 30"):
        AuditLog(log_path, "bastion-1", KEY).append("x", {}, session=None, user=None)


def test_truncated_to_empty(log_path: Path) -> None:
    log_path.write_bytes(b"")
    problem = verify_log(log_path, PUB).problem
    assert problem is not None and problem.kind == "truncated"
    with pytest.raises(AuditLogError, match="is empty but its signed head"):
        AuditLog(log_path, "bastion-1", KEY).append("x", {}, session=None, user=None)


def test_torn_last_line(log_path: Path) -> None:
    data = log_path.read_bytes()
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    log_path.write_bytes(data[: last_start + 40])
    problem = verify_log(log_path, PUB).problem
    assert problem is not None
    assert (problem.kind, problem.line) == ("malformed", 30)
    assert problem.message.startswith("line 30: torn last line")
    assert [r["seq"] for r in read_events(log_path)] == list(range(1, 30))  # readers skip the torn line
    with pytest.raises(AuditLogError, match="torn line"):
        AuditLog(log_path, "bastion-1", KEY).append("x", {}, session=None, user=None)
    assert log_path.read_bytes() == data[: last_start + 40]  # nothing appended


def test_append_refuses_corrupt_last_record(log_path: Path) -> None:
    original = log_path.read_bytes()
    log_path.write_bytes(original + b"not json at all\n")
    with pytest.raises(AuditLogError, match="corrupt last record"):
        AuditLog(log_path, "bastion-1", KEY).append("x", {}, session=None, user=None)
    problem = verify_log(log_path, PUB).problem
    assert problem is not None and (problem.kind, problem.line) == ("malformed", 31)

    records = [json.loads(x) for x in original.splitlines()]
    records[-1]["payload"] = {"edited": True}
    write_records(log_path, records)
    with pytest.raises(AuditLogError, match="fails its hash"):
        AuditLog(log_path, "bastion-1", KEY).append("x", {}, session=None, user=None)


def test_non_canonical_line_is_malformed(log_path: Path) -> None:
    records = records_of(log_path)
    lines = [canonical_json(r) for r in records]
    lines[3] = json.dumps(records[3]).encode()  # same content, other spacing
    log_path.write_bytes(b"".join(line + b"\n" for line in lines))
    problem = verify_log(log_path, PUB).problem
    assert problem is not None and (problem.kind, problem.seq) == ("malformed", 4)


def test_checkpoint_signed_by_another_key(log_path: Path) -> None:
    records = records_of(log_path)
    records[4]["payload"]["sql"] = "drop table users"
    rehash(records, 4)
    ckpt = records[10]  # the attacker re-signs the checkpoint with a key of their own
    ckpt["payload"]["key_id"] = key_id(OTHER_KEY.public_key())
    sig = OTHER_KEY.sign(checkpoint_message("bastion-1", 11, ckpt["prev"]))
    ckpt["payload"]["sig"] = base64.b64encode(sig).decode()
    rehash(records, 10)
    write_records(log_path, records)
    problem = verify_log(log_path, PUB).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.line) == ("unknown_key", 11, 11)
    assert problem.message == (
        f"checkpoint at seq 11 (line 11) is signed by key {key_id(OTHER_KEY.public_key())} "
        "which is not the bastion's key"
    )


def test_whole_log_signed_by_a_foreign_key(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, "bastion-1", OTHER_KEY, checkpoint_every=3)
    for i in range(5):
        log.append("x", {"i": i}, session=None, user=None)
    problem = verify_log(path, PUB).problem
    assert problem is not None and (problem.kind, problem.seq) == ("unknown_key", 4)


def test_key_rotation_with_previous_keys(tmp_path: Path) -> None:
    path = make_log(tmp_path, events=12, every=5)
    rotated = AuditLog(path, "bastion-1", OTHER_KEY, checkpoint_every=5, previous_keys=[PUB])
    rotated.append("after.rotation", {}, session=None, user=None)
    assert verify_log(path, [PUB, OTHER_KEY.public_key()]).ok
    problem = verify_log(path, OTHER_KEY.public_key()).problem
    assert problem is not None and (problem.kind, problem.seq) == ("unknown_key", 6)
    with pytest.raises(AuditLogError, match="previous_keys"):
        AuditLog(path, "bastion-1", KEY).append("x", {}, session=None, user=None)


def test_head_removed(log_path: Path) -> None:
    (log_path.parent / "audit.jsonl.head").unlink()
    report = verify_log(log_path, PUB)
    assert report.problem is not None and report.problem.kind == "head_mismatch"
    assert "no signed head file" in report.problem.message
    assert verify_log(log_path, PUB, require_head=False).ok
    with pytest.raises(AuditLogError, match="no signed head"):
        AuditLog(log_path, "bastion-1", KEY).append("x", {}, session=None, user=None)


def test_head_rolled_back(tmp_path: Path) -> None:
    path = make_log(tmp_path, events=20, every=100)
    head = tmp_path / "audit.jsonl.head"
    old_head = head.read_bytes()
    log = AuditLog(path, "bastion-1", KEY, checkpoint_every=100)
    for i in range(5):
        log.append("late", {"i": i}, session=None, user=None)
    head.write_bytes(old_head)
    problem = verify_log(path, PUB).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == ("head_mismatch", 21)
    assert problem.message.startswith("the signed head records seq 20 but the log continues to seq 25")
    # An append cannot tell a rolled-back head from one that lagged at a crash (head writes are fsynced
    # only at checkpoints): it adopts seq 21..25, which chain from the head, and says so in the log.
    rec = log.append("x", {}, session=None, user=None)
    recovered = records_of(path)[25]
    assert recovered["type"] == RECOVERED and rec["seq"] == 27
    assert recovered["payload"] | {"reason": ""} == {
        "reason": "",
        "head_seq": 20,
        "adopted_from": 21,
        "adopted_to": 25,
    }
    report = verify_log(path, PUB)
    assert report.ok and report.recovered == [(21, 25)]


def test_head_forged(log_path: Path) -> None:
    head = current_head(log_path)
    head["seq"] = 40  # a well-formed slot (its CRC recomputed), so it is forged, not torn
    write_slot(log_path, head)
    problem = verify_log(log_path, PUB).problem
    assert problem is not None and (problem.kind, problem.seq) == ("bad_signature", 40)
    with pytest.raises(AuditLogError, match="invalid signature"):
        AuditLog(log_path, "bastion-1", KEY).append("x", {}, session=None, user=None)


def test_interrupted_append_is_reported_then_adopted_visibly(tmp_path: Path) -> None:
    """A crash between the log write and the head replace leaves the head one behind: flagged, then adopted."""
    path = make_log(tmp_path, events=5, every=100)
    head = tmp_path / "audit.jsonl.head"
    old_head = head.read_bytes()
    log = AuditLog(path, "bastion-1", KEY, checkpoint_every=100)
    log.append("in.flight", {}, session="s1", user="alice")
    head.write_bytes(old_head)  # as if the process died before replacing the head
    problem = verify_log(path, PUB).problem
    assert problem is not None and (problem.kind, problem.seq) == ("head_mismatch", 6)

    rec = log.append("next", {}, session="s2", user="bob")
    records = records_of(path)
    assert records[6]["type"] == RECOVERED
    assert (records[6]["payload"]["adopted_from"], records[6]["payload"]["adopted_to"]) == (6, 6)
    assert records[6]["payload"]["head_seq"] == 5
    report = verify_log(path, PUB)
    assert rec["seq"] == 8 and report.ok and report.recovered == [(6, 6)]


def test_append_killed_between_its_fdatasync_and_its_head_write_is_adopted(tmp_path: Path) -> None:
    key = run_killed_child(
        tmp_path,
        """
        log.append("a", {}, session="s1", user="alice")
        log.append("b", {}, session="s1", user="alice")
        AuditLog._write_head = lambda self, seq, hash_: os.kill(os.getpid(), signal.SIGKILL)
        log.append("in.flight", {"statement": "delete from t"}, session="s1", user="alice")
        """,
    )
    path = tmp_path / "audit.jsonl"
    assert [r["type"] for r in records_of(path)] == ["a", "b", "in.flight"]  # fdatasynced before the head
    assert current_head(path)["seq"] == 2
    problem = verify_log(path, key.public_key()).problem
    assert problem is not None and (problem.kind, problem.seq) == ("head_mismatch", 3)

    rec = AuditLog(path, "bastion-1", key).append("next", {}, session="s2", user="bob")
    records = records_of(path)
    assert records[3]["type"] == RECOVERED and rec["seq"] == 5
    assert {k: records[3]["payload"][k] for k in ("head_seq", "adopted_from", "adopted_to")} == {
        "head_seq": 2,
        "adopted_from": 3,
        "adopted_to": 3,
    }
    report = verify_log(path, key.public_key())
    assert report.ok and report.recovered == [(3, 3)] and report.head_seq == 5


@pytest.mark.parametrize("first_durable", [True, False])
@pytest.mark.parametrize("marker_lost", [False, True])
def test_nondurable_records_of_a_killed_process(
    tmp_path: Path, first_durable: bool, marker_lost: bool
) -> None:
    """k > 1 records after the head: committed as they are when a key holder vouched for them (its pending
    marker), adopted with audit.recovered when that proof is gone (a power loss that kept the records)."""
    key = run_killed_child(
        tmp_path,
        f"""
        log.append("first", {{}}, session="s1", user="alice", durable={first_durable})
        for i in range(3):
            log.append("lazy", {{"i": i}}, session="s1", user="alice", durable=False)
        """,
    )
    path = tmp_path / "audit.jsonl"
    head_seq = 1 if first_durable else 0
    assert len(records_of(path)) == 4
    assert [s for s in head_slots(path) if s is not None] == ([current_head(path)] if first_durable else [])
    problem = verify_log(path, key.public_key()).problem
    assert problem is not None and (problem.kind, problem.seq) == ("head_mismatch", head_seq + 1)
    report = verify_log(path, key.public_key(), require_head=False)
    assert report.ok and report.unsigned == (head_seq + 1, 4)
    if marker_lost:
        wipe_pending_marker(path)

    rec = AuditLog(path, "bastion-1", key).append("next", {}, session="s2", user="bob")
    records = records_of(path)
    report = verify_log(path, key.public_key())
    assert report.ok, report.problem
    if marker_lost:
        assert records[4]["type"] == RECOVERED and rec["seq"] == 6
        assert {k: records[4]["payload"][k] for k in ("head_seq", "adopted_from", "adopted_to")} == {
            "head_seq": head_seq,
            "adopted_from": head_seq + 1,
            "adopted_to": 4,
        }
        assert report.recovered == [(head_seq + 1, 4)]
    else:
        assert rec["seq"] == 5 and report.recovered == []
        assert not any(r["type"] == RECOVERED for r in records)


def test_records_appended_without_the_key_are_adopted_visibly_never_silently(tmp_path: Path) -> None:
    path = make_log(tmp_path, events=3, every=100)
    log = AuditLog(path, "bastion-1", KEY, checkpoint_every=100)
    log.append("lazy", {}, session=None, user=None, durable=False)  # seq 4, vouched by the pending marker
    records = records_of(path)
    forged = _forged(records[-1], seq=5, prev=records[-1]["hash"])  # chains, but nobody with the key wrote it
    with open(path, "ab") as f:
        f.write(canonical_json(forged) + b"\n")
    rec = log.append("next", {}, session=None, user=None)
    records = records_of(path)
    assert records[4] == forged and records[5]["type"] == RECOVERED and rec["seq"] == 7
    assert {k: records[5]["payload"][k] for k in ("head_seq", "adopted_from", "adopted_to")} == {
        "head_seq": 3,
        "adopted_from": 5,  # seq 4 was vouched for; only the forged record is flagged
        "adopted_to": 5,
    }
    assert verify_log(path, PUB).recovered == [(5, 5)]


def test_records_after_the_head_that_do_not_chain_are_refused(tmp_path: Path) -> None:
    path = make_log(tmp_path, events=3, every=100)
    records = records_of(path)
    before = path.read_bytes()
    with open(path, "ab") as f:
        f.write(canonical_json(_forged(records[-1], seq=4, prev="ab" * 32)) + b"\n")
    with pytest.raises(AuditLogError, match="do not continue its chain"):
        AuditLog(path, "bastion-1", KEY).append("x", {}, session=None, user=None)
    assert path.read_bytes().startswith(before) and len(records_of(path)) == 4
    assert not verify_log(path, PUB).ok


def test_head_ahead_of_the_log_is_truncation(tmp_path: Path) -> None:
    path = make_log(tmp_path, events=5, every=100)
    log = AuditLog(path, "bastion-1", KEY, checkpoint_every=100)
    for i in range(3):
        log.append("lazy", {"i": i}, session=None, user=None, durable=False)
    write_records(path, records_of(path)[:4])  # the log lost seq 5, which the head names, and the rest
    problem = verify_log(path, PUB).problem
    assert problem is not None and (problem.kind, problem.seq) == ("truncated", 5)
    with pytest.raises(AuditLogError, match="ends at seq 4 but its signed head records seq 5"):
        log.append("x", {}, session=None, user=None)


def test_nondurable_records_lost_in_a_power_loss_leave_a_consistent_log(tmp_path: Path) -> None:
    """What the head names is on disk; what a power loss takes was never signed (and leaves no trace)."""
    path = make_log(tmp_path, events=5, every=100)
    on_disk = path.read_bytes()
    log = AuditLog(path, "bastion-1", KEY, checkpoint_every=100)
    head_before = head_file(path).read_bytes()
    for i in range(3):
        log.append("lazy", {"i": i}, session=None, user=None, durable=False)
    assert head_file(path).read_bytes() == head_before  # non-durable appends never touch the head
    path.write_bytes(on_disk)  # the page cache is gone, and with it seq 6..8 (their marker survived)
    assert verify_log(path, PUB).ok
    rec = AuditLog(path, "bastion-1", KEY, checkpoint_every=100).append("after", {}, session=None, user=None)
    assert rec["seq"] == 6 and not any(r["type"] == RECOVERED for r in records_of(path))
    assert verify_log(path, PUB).ok


def test_sync_makes_nondurable_appends_durable_and_signed(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, "bastion-1", KEY)
    log.sync()  # nothing to do on an empty log
    log.append("durable", {}, session=None, user=None)
    for i in range(3):
        log.append("lazy", {"i": i}, session=None, user=None, durable=False)
    assert current_head(path)["seq"] == 1
    log.sync()
    assert current_head(path)["seq"] == 4 and verify_log(path, PUB).ok
    log.sync()
    log.close()
    assert log.append("after.close", {}, session=None, user=None)["seq"] == 5
    assert verify_log(path, PUB).ok


@pytest.mark.parametrize("torn", ["newer", "older", "both"])
def test_torn_head_slot(log_path: Path, torn: str) -> None:
    """A crash tears at most the slot being written; the other slot still gives a signed head."""
    raw = bytearray(head_file(log_path).read_bytes())  # slot 0: seq 30 (newer), slot 1: seq 29
    for index in {"newer": [0], "older": [1], "both": [0, 1]}[torn]:
        at = index * HEAD_SLOT_SIZE + 70
        raw[at : at + 100] = os.urandom(100)  # half new bytes, half old: the CRC no longer matches
    head_file(log_path).write_bytes(bytes(raw))
    report = verify_log(log_path, PUB)
    log = AuditLog(log_path, "bastion-1", KEY, checkpoint_every=10)
    if torn == "both":
        assert report.problem is not None and report.problem.kind == "malformed"
        assert "both slots are torn" in report.problem.message
        with pytest.raises(AuditLogError, match="is corrupt"):
            log.append("x", {}, session=None, user=None)
        return
    if torn == "older":
        assert report.ok and report.head_seq == 30
        assert log.append("x", {}, session=None, user=None)["seq"] == 31
        assert verify_log(log_path, PUB).ok
        return
    # newer torn: the head is seq 29 and seq 30 (durable, its head write torn) is not covered yet
    assert report.problem is not None and (report.problem.kind, report.problem.seq) == ("head_mismatch", 30)
    assert report.head_seq == 29
    assert verify_log(log_path, PUB, require_head=False).unsigned == (30, 30)
    rec = log.append("x", {}, session=None, user=None)
    assert records_of(log_path)[30]["type"] == RECOVERED and rec["seq"] == 32
    report = verify_log(log_path, PUB)
    assert report.ok and report.recovered == [(30, 30)]


def test_forged_older_head_slot_is_reported(log_path: Path) -> None:
    older = head_slots(log_path)[1]
    assert older is not None and older["seq"] == 29
    older["hash"] = "ab" * 32
    write_slot(log_path, older)
    problem = verify_log(log_path, PUB).problem
    assert problem is not None and (problem.kind, problem.seq) == ("bad_signature", 29)
    assert "older slot" in problem.message


def test_head_slot_written_in_the_wrong_slot_is_malformed(log_path: Path) -> None:
    head = current_head(log_path)  # seq 30 belongs in slot 0
    write_slot(log_path, head, index=1)
    problem = verify_log(log_path, PUB).problem
    assert problem is not None and problem.kind == "malformed"


def test_head_signature_verified_only_when_another_writer_changed_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[AuditLog] = []
    original = AuditLog._check_head

    def counting(self: AuditLog, raw: bytes, bastion: str) -> Any:
        checked.append(self)
        return original(self, raw, bastion)

    monkeypatch.setattr(AuditLog, "_check_head", counting)
    path = tmp_path / "audit.jsonl"
    a, b = AuditLog(path, "bastion-1", KEY), AuditLog(path, "bastion-1", KEY)
    for i in range(5):
        a.append("a", {"i": i}, session=None, user=None)
    assert checked == []  # a wrote every byte of the head itself
    b.append("b", {}, session=None, user=None)
    assert checked == [b]
    for i in range(3):
        a.append("a", {"i": i}, session=None, user=None)
    assert checked == [b, a]  # once, after b changed the head
    assert verify_log(path, PUB).ok


def test_log_rotated_under_a_running_appender(tmp_path: Path) -> None:
    path = make_log(tmp_path, events=3, every=100)
    log = AuditLog(path, "bastion-1", KEY, checkpoint_every=100)
    log.append("before.rotation", {}, session=None, user=None)
    archive = tmp_path / "archive"
    archive.mkdir()
    os.rename(path, archive / "audit.jsonl")
    os.rename(head_file(path), archive / "audit.jsonl.head")
    rec = log.append("after.rotation", {}, session=None, user=None)
    assert rec["seq"] == 1 and rec["prev"] == GENESIS
    assert verify_log(path, PUB).ok
    report = verify_log(archive / "audit.jsonl", PUB)
    assert report.ok and report.events == 4
    assert stat.S_IMODE(head_file(path).stat().st_mode) == 0o600


def test_head_file_of_the_older_single_json_format_is_read_and_converted(tmp_path: Path) -> None:
    path = make_log(tmp_path, events=3, every=100)
    head_file(path).write_bytes(canonical_json(current_head(path)) + b"\n")
    assert verify_log(path, PUB).ok
    AuditLog(path, "bastion-1", KEY).append("x", {}, session=None, user=None)
    assert len(head_file(path).read_bytes()) == HEAD_SIZE and current_head(path)["seq"] == 4
    assert verify_log(path, PUB).ok
    assert stat.S_IMODE(head_file(path).stat().st_mode) == 0o600
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_fork_child_reopens_its_files_and_both_keep_one_chain(tmp_path: Path) -> None:
    """A forked child shares the parent's flock (one open file description): it must re-open the files."""
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, "bastion-1", KEY, checkpoint_every=10)
    log.append("parent.before", {}, session="p", user=None)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            for i in range(40):
                log.append("child", {"i": i}, session="c", user=None, durable=i % 2 == 0)
            code = 0
        finally:
            os._exit(code)
    for i in range(40):
        log.append("parent", {"i": i}, session="p", user=None, durable=i % 2 == 0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    log.sync()
    report = verify_log(path, PUB)
    assert report.ok and report.events == 81 and report.recovered == []
    records = records_of(path)
    for who in ("child", "parent"):
        assert [r["payload"]["i"] for r in records if r["type"] == who] == list(range(40))


def test_missing_log_and_head_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(AuditLogError, match="does not exist"):
        verify_log(tmp_path / "nope.jsonl", PUB)
    (tmp_path / "empty.jsonl").write_bytes(b"")
    report = verify_log(tmp_path / "empty.jsonl", PUB)
    assert report.ok and report.events == 0 and report.last_seq == 0


# -- property: any single mutation is caught ----------------------------------------------------------------


@st.composite
def log_and_mutation(draw: st.DrawFn) -> tuple[int, int, list[int], str, int, int]:
    events = draw(st.integers(min_value=2, max_value=20))
    every = draw(st.integers(min_value=1, max_value=6))
    explicit = draw(st.lists(st.integers(min_value=0, max_value=events - 1), max_size=3, unique=True))
    kind = draw(st.sampled_from(["delete", "swap", "modify", "modify_rehash", "insert_copy"]))
    return events, every, explicit, kind, draw(st.integers(min_value=0)), draw(st.integers(min_value=0))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(log_and_mutation())
def test_any_single_mutation_is_detected(case: tuple[int, int, list[int], str, int, int]) -> None:
    events, every, explicit, kind, a, b = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.jsonl"
        log = AuditLog(path, "bastion-1", KEY, checkpoint_every=every)
        for i in range(events):
            log.append("e", {"i": i}, session="s", user="u", durable=False)
            if i in explicit:
                log.checkpoint("session end")
        log.sync()  # the non-durable tail is signed only from here on
        assert verify_log(path, PUB).ok
        records = records_of(path)
        n = len(records)
        i, j = a % n, b % n
        if kind == "delete":
            del records[i]
        elif kind == "insert_copy":
            records.insert(j, dict(records[i]))
        elif kind == "swap":
            if i == j:
                j = (i + 1) % n
            records[i], records[j] = records[j], records[i]
        else:
            records[i]["payload"] = dict(records[i]["payload"], tampered=True)
            if kind == "modify_rehash":
                records[i]["hash"] = record_hash(records[i])
        write_records(path, records)
        report = verify_log(path, PUB)
        assert not report.ok and report.problem is not None, (kind, i, j, n)


def test_verify_leaves_no_files_behind(tmp_path: Path) -> None:
    path = make_log(tmp_path, events=3)
    copy_dir = tmp_path / "copy"
    copy_dir.mkdir()
    shutil.copy(path, copy_dir / "audit.jsonl")
    shutil.copy(tmp_path / "audit.jsonl.head", copy_dir / "audit.jsonl.head")
    assert verify_log(copy_dir / "audit.jsonl", PUB).ok
    assert sorted(p.name for p in copy_dir.iterdir()) == ["audit.jsonl", "audit.jsonl.head"]
