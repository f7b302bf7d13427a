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
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.audit.log import (
    GENESIS,
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

    head = json.loads((log_path.parent / "audit.jsonl.head").read_text())
    assert (head["seq"], head["hash"]) == (30, records[-1]["hash"])
    PUB.verify(base64.b64decode(head["sig"]), head_message("bastion-1", 30, records[-1]["hash"]))
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
    assert verify_log(path, load_public_key(tmp_path / "audit.key.pub")).ok


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
    log.append("cmd", {{"worker": worker, "i": i}}, session=f"w{{worker}}", user=f"u{{worker}}")
"""
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(w)], env=child_env(), stderr=subprocess.PIPE)
        for w in range(20)
    ]
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    report = verify_log(path, load_public_key(tmp_path / "audit.key.pub"))
    assert report.ok, report.problem
    assert report.events == 1000
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
    report = verify_log(tmp_path / "audit.jsonl", PUB)
    assert report.ok and report.events == 100


def test_verify_during_concurrent_appends_sees_a_consistent_snapshot(tmp_path: Path) -> None:
    """verify snapshots head and log size under the appenders' lock, so a busy log never looks tampered."""
    path = make_log(tmp_path, events=3)
    log = AuditLog(path, "bastion-1", KEY, checkpoint_every=10)
    done = threading.Event()

    def work() -> None:
        for i in range(300):
            log.append("busy", {"i": i}, session=None, user=None, durable=False)
        done.set()

    writer = threading.Thread(target=work)
    writer.start()
    reports = []
    while not done.is_set():
        reports.append(verify_log(path, PUB))
    writer.join()
    assert len(reports) > 1 and all(r.ok for r in reports), next(r.problem for r in reports if not r.ok)


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
    with pytest.raises(AuditLogError, match="ends at seq 25 but its signed head records seq 20"):
        log.append("x", {}, session=None, user=None)


def test_head_forged(log_path: Path) -> None:
    head_path = log_path.parent / "audit.jsonl.head"
    head = json.loads(head_path.read_text())
    head["seq"] = 40
    head_path.write_text(json.dumps(head))
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
    assert records[6]["type"] == RECOVERED and records[6]["payload"]["adopted_seq"] == 6
    assert rec["seq"] == 8 and verify_log(path, PUB).ok


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
