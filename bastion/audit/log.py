"""The audit log: hash-chained JSON Lines with Ed25519-signed checkpoints and a signed head.

Design (one chain per bastion host's log file)
    Every SSH login is its own process, so the log has concurrent writers. Instead of a chain per session
    plus a chain of session heads, all writers share ONE hash chain per log file and serialize their appends
    under a cross-process lock (`fcntl.flock` on the sibling `<log>.lock`; a `threading.Lock` serializes the
    threads of one process). Each record carries a global `seq` and the hash of its predecessor (`prev`), so
    deleting anything, even every record of a whole session, leaves a gap in seq and a broken prev link.

Record (one canonical-JSON line)
    {"seq", "time" (RFC 3339 UTC, microseconds), "bastion", "session", "user", "type", "payload", "prev",
    "hash"}; hash = SHA-256 of the canonical JSON of the record without "hash"; prev of seq 1 is "0"*64.

Signatures
    A `checkpoint` record (every `checkpoint_every` events, and explicitly at session end) signs
    b"bastion-audit-checkpoint\\n" + canonical_json([bastion, seq, prev]), which commits to every record
    before it. Records after the last checkpoint are covered by the head file `<log>.head` (replaced
    atomically after every append), which signs b"bastion-audit-head\\n" + canonical_json([bastion, seq,
    hash]) of the last record.

Durability
    Each record is written and fsynced (unless durable=False) before append returns, then the head is
    replaced; so a decision event is on disk before the action it records runs. A head is never durable
    ahead of its record, so after a crash it is behind by at most the one record being appended. With
    durable=False a power loss may lose the newest records while their head survives: verify then reports
    a truncated tail, which is what happened.

What `bastion.audit.verify` detects
    a modified record (hash mismatch; or, when its hashes were recomputed, the next checkpoint's or the
    head's signature no longer matches), a deleted record or session (seq gap), an inserted record,
    reordered records, a truncated tail (the signed head records a later seq), a torn last line, a
    checkpoint or head signed by a foreign key, and a missing or rolled-back head file.
What it cannot detect
    anyone holding the signing key can rewrite the whole log and re-sign it; and a rollback of BOTH the log
    and its head file to an earlier, genuinely signed state looks valid locally: only the off-host shipped
    copy catches that.

Appends refuse to continue a log whose last line is torn or corrupt, or whose head disagrees with the log
(an operator must verify and repair it first), with one exception: the state an interrupted append leaves
behind (the log one record ahead of its head). That record is adopted and an explicit `audit.recovered`
record says so, so the log neither bricks the bastion after a crash nor adopts a record silently (someone
who can write the log but not read the key could slip in that one record; the recovery record flags it).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import stat
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bastion.audit.signing import key_id
from bastion.canonical import canonical_hash, canonical_json

__all__ = [
    "CHECKPOINT",
    "GENESIS",
    "RECORD_KEYS",
    "RECOVERED",
    "RESERVED_TYPES",
    "AuditLog",
    "AuditLogError",
    "Head",
    "checkpoint_message",
    "head_message",
    "head_path_for",
    "lock_path_for",
    "parse_head",
    "parse_record",
    "read_events",
    "record_hash",
]

GENESIS = "0" * 64
CHECKPOINT = "checkpoint"
RECOVERED = "audit.recovered"
RESERVED_TYPES = frozenset({CHECKPOINT, RECOVERED})
RECORD_KEYS = frozenset({"seq", "time", "bastion", "session", "user", "type", "payload", "prev", "hash"})
HEAD_KEYS = frozenset({"seq", "hash", "key_id", "sig"})
_HEX64 = re.compile(r"[0-9a-f]{64}")


class AuditLogError(Exception):
    """The log cannot be appended to or read safely; one line naming the file, for an operator."""


def head_path_for(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".head")


def lock_path_for(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".lock")


def checkpoint_message(bastion: str, seq: int, prev: str) -> bytes:
    """What a checkpoint signs: domain-separated so a checkpoint signature can never pass as anything else."""
    return b"bastion-audit-checkpoint\n" + canonical_json([bastion, seq, prev])


def head_message(bastion: str, seq: int, hash_: str) -> bytes:
    """What the head file signs: the last record's seq and hash."""
    return b"bastion-audit-head\n" + canonical_json([bastion, seq, hash_])


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of the record without its "hash" field."""
    return canonical_hash({k: v for k, v in record.items() if k != "hash"})


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _shape_error(obj: Any) -> str | None:
    """Why obj is not a well-formed record, or None."""
    if not isinstance(obj, dict):
        return "not a JSON object"
    if set(obj) != RECORD_KEYS:
        missing = sorted(RECORD_KEYS - set(obj))
        extra = sorted(set(obj) - RECORD_KEYS)
        return f"wrong fields (missing {missing}, unexpected {extra})"
    seq = obj["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return "seq is not a positive integer"
    for name in ("time", "bastion", "type"):
        if not isinstance(obj[name], str):
            return f"{name} is not a string"
    for name in ("session", "user"):
        if obj[name] is not None and not isinstance(obj[name], str):
            return f"{name} is neither a string nor null"
    if not isinstance(obj["payload"], dict):
        return "payload is not an object"
    for name in ("prev", "hash"):
        if not isinstance(obj[name], str) or not _HEX64.fullmatch(obj[name]):
            return f"{name} is not a SHA-256 hex digest"
    return None


def parse_record(raw: bytes) -> dict[str, Any]:
    """Parse one line (without its newline) into a record; ValueError says what is wrong with its shape."""
    try:
        obj = json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except ValueError as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    error = _shape_error(obj)
    if error:
        raise ValueError(error)
    return obj


@dataclass(frozen=True)
class Head:
    seq: int
    hash: str
    key_id: str
    sig: bytes


def parse_head(raw: bytes) -> Head:
    """Parse the head file's content; ValueError says what is wrong."""
    try:
        obj = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise ValueError("not valid JSON") from None
    if not isinstance(obj, dict) or set(obj) != HEAD_KEYS:
        raise ValueError(f"not an object with exactly the fields {sorted(HEAD_KEYS)}")
    seq, hash_, kid, sig = obj["seq"], obj["hash"], obj["key_id"], obj["sig"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise ValueError("seq is not a positive integer")
    if not isinstance(hash_, str) or not _HEX64.fullmatch(hash_):
        raise ValueError("hash is not a SHA-256 hex digest")
    if not isinstance(kid, str) or not isinstance(sig, str):
        raise ValueError("key_id or sig is not a string")
    try:
        sig_bytes = base64.b64decode(sig, validate=True)
    except ValueError:
        raise ValueError("sig is not base64") from None
    return Head(seq, hash_, kid, sig_bytes)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_last_line(fd: int, size: int) -> bytes:
    """The last line of a file that ends with a newline, read backwards from the end (never the whole log)."""
    buf = b""
    pos = size
    chunk = 8192
    while True:
        start = max(0, pos - chunk)
        piece = b""
        while len(piece) < pos - start:
            got = os.pread(fd, pos - start - len(piece), start + len(piece))
            if not got:
                raise AuditLogError("audit log shrank while being read")
            piece += got
        buf = piece + buf
        pos = start
        cut = buf.rfind(b"\n", 0, len(buf) - 1)
        if cut >= 0:
            return buf[cut + 1 : -1]
        if pos == 0:
            return buf[:-1]
        chunk = min(chunk * 2, 1 << 24)


@dataclass(frozen=True)
class _Tail:
    """What an append needs of the last record."""

    seq: int
    hash: str
    prev: str
    bastion: str


def read_events(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield the records of a log in order, for readers (Audit tab, export); no integrity check.

    A final line without its newline is being written right now or was torn by a crash: it is not yielded
    (verify_log reports the torn case). Any other line that is not a record raises AuditLogError naming it.
    """
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.endswith(b"\n"):
                return
            try:
                yield parse_record(line[:-1])
            except ValueError as exc:
                raise AuditLogError(f"audit log {path} line {lineno}: {exc}") from None


def _normalize_payload(payload: Any) -> dict[str, Any]:
    """Payload as it will read back from disk (so its hash verifies), or ValueError if it is not JSON."""
    if not isinstance(payload, dict):
        raise ValueError(f"audit payload must be a dict, not {type(payload).__name__}")
    try:
        return json.loads(canonical_json(payload))
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"audit payload is not JSON-serializable: {exc}") from None


class AuditLog:
    """Appender for one bastion host's audit log; safe across threads and processes."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        bastion: str,
        signing_key: Ed25519PrivateKey,
        checkpoint_every: int = 100,
        *,
        previous_keys: Iterable[Ed25519PublicKey] = (),
    ) -> None:
        """previous_keys: public keys that signed this log before a rotation, so their head is accepted."""
        if not isinstance(bastion, str) or not bastion:
            raise ValueError("bastion name must be a non-empty string")
        if not isinstance(signing_key, Ed25519PrivateKey):
            raise TypeError("signing_key must be an Ed25519PrivateKey")
        if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
            raise ValueError("checkpoint_every must be a positive integer")
        self.path = Path(path)
        self.head_path = head_path_for(self.path)
        self.lock_path = lock_path_for(self.path)
        self.bastion = bastion
        self.checkpoint_every = checkpoint_every
        self._key = signing_key
        public = signing_key.public_key()
        self.key_id = key_id(public)
        self._head_keys = {key_id(k): k for k in previous_keys}
        self._head_keys[self.key_id] = public
        self._lock = threading.Lock()

    def append(
        self,
        type: str,
        payload: dict[str, Any],
        *,
        session: str | None,
        user: str | None,
        durable: bool = True,
    ) -> dict[str, Any]:
        """Append one event; it is on disk (fsynced unless durable=False) when this returns the record.

        Raises ValueError for a payload that is not JSON (nothing is written) and AuditLogError when the log
        cannot be continued safely. If a periodic checkpoint is due it is appended right after the event.
        """
        if not isinstance(type, str) or not type:
            raise ValueError("audit event type must be a non-empty string")
        if type in RESERVED_TYPES:
            raise ValueError(f"audit event type {type!r} is reserved for the log itself")
        _check_name(session, "session")
        _check_name(user, "user")
        clean = _normalize_payload(payload)
        with self._locked() as fd:
            tail = self._prepare(fd)
            record, tail = self._commit(fd, tail, type, clean, session, user, durable)
            if record["seq"] % (self.checkpoint_every + 1) == self.checkpoint_every:
                self._commit_checkpoint(fd, tail, "periodic", None, None)
        return record

    def checkpoint(
        self, reason: str, *, session: str | None = None, user: str | None = None
    ) -> dict[str, Any]:
        """Append a signed checkpoint now (at session end), so the session's records are signed at once."""
        if not isinstance(reason, str):
            raise ValueError("checkpoint reason must be a string")
        _check_name(session, "session")
        _check_name(user, "user")
        with self._locked() as fd:
            tail = self._prepare(fd)
            record, _ = self._commit_checkpoint(fd, tail, reason, session, user)
        return record

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        """Hold the thread lock and the cross-process flock; yield the log opened for appending."""
        with self._lock:
            if not self.path.parent.exists():
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
            lock_fd = os.open(self.lock_path, flags, 0o600)
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
                fd = os.open(self.path, flags | os.O_APPEND, 0o600)
                try:
                    if not stat.S_ISREG(os.fstat(fd).st_mode):
                        raise AuditLogError(f"audit log {self.path} is not a regular file")
                    yield fd
                finally:
                    os.close(fd)
            finally:
                os.close(lock_fd)  # releases the flock

    def _read_tail(self, fd: int) -> _Tail | None:
        size = os.fstat(fd).st_size
        if size == 0:
            return None
        if os.pread(fd, 1, size - 1) != b"\n":
            raise AuditLogError(
                f"audit log {self.path} ends with a torn line (no trailing newline): "
                "verify and repair it before the bastion appends again"
            )
        raw = _read_last_line(fd, size)
        try:
            rec = parse_record(raw)
        except ValueError as exc:
            raise AuditLogError(
                f"audit log {self.path} has a corrupt last record ({exc}): verify and repair it first"
            ) from None
        if record_hash(rec) != rec["hash"]:
            raise AuditLogError(
                f"audit log {self.path}: the last record (seq {rec['seq']}) fails its hash; verify, repair"
            )
        return _Tail(rec["seq"], rec["hash"], rec["prev"], rec["bastion"])

    def _read_head(self, bastion: str) -> Head | None:
        try:
            fd = os.open(self.head_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AuditLogError(f"cannot read the audit head {self.head_path}: {exc.strerror}") from None
        try:
            raw = os.read(fd, 65536)
        finally:
            os.close(fd)
        try:
            head = parse_head(raw)
        except ValueError as exc:
            raise AuditLogError(f"audit head {self.head_path} is corrupt ({exc}): verify the log") from None
        key = self._head_keys.get(head.key_id)
        if key is None:
            raise AuditLogError(
                f"audit head {self.head_path} is signed by key {head.key_id}, not this bastion's key "
                f"{self.key_id}: verify the log (after a key rotation pass the old key as previous_keys)"
            )
        try:
            key.verify(head.sig, head_message(bastion, head.seq, head.hash))
        except InvalidSignature:
            raise AuditLogError(
                f"audit head {self.head_path} has an invalid signature (forged or modified); verify the log"
            ) from None
        return head

    def _prepare(self, fd: int) -> _Tail | None:
        """Check the log's tail against its signed head before extending it; adopt an interrupted append."""
        tail = self._read_tail(fd)
        head = self._read_head(tail.bastion if tail else self.bastion)
        if tail is None:
            if head is not None:
                raise AuditLogError(
                    f"audit log {self.path} is empty but its signed head records seq {head.seq}: "
                    "the log was truncated or replaced; verify it before appending"
                )
            return None
        if head is not None and head.seq == tail.seq and head.hash == tail.hash:
            return tail
        interrupted = (head is None and tail.seq == 1 and tail.prev == GENESIS) or (
            head is not None and head.seq == tail.seq - 1 and head.hash == tail.prev
        )
        if interrupted:
            payload = {
                "reason": "an append was interrupted between the log and its head; its record is adopted",
                "adopted_seq": tail.seq,
                "head_seq": head.seq if head else 0,
            }
            _, tail = self._commit(fd, tail, RECOVERED, payload, None, None, True)
            return tail
        if head is None:
            raise AuditLogError(
                f"audit log {self.path} has records up to seq {tail.seq} but no signed head "
                f"{self.head_path}: verify the log before appending"
            )
        if head.seq > tail.seq:
            raise AuditLogError(
                f"audit log {self.path} ends at seq {tail.seq} but its signed head records seq {head.seq}: "
                "the tail was truncated; verify the log before appending"
            )
        raise AuditLogError(
            f"audit log {self.path} ends at seq {tail.seq} but its signed head records seq {head.seq} "
            "with another hash: verify the log before appending"
        )

    def _commit(
        self,
        fd: int,
        tail: _Tail | None,
        type: str,
        payload: dict[str, Any],
        session: str | None,
        user: str | None,
        durable: bool,
    ) -> tuple[dict[str, Any], _Tail]:
        """Write one record, fsync it, then replace the signed head; undo the record if that fails."""
        seq = tail.seq + 1 if tail else 1
        prev = tail.hash if tail else GENESIS
        record: dict[str, Any] = {
            "seq": seq,
            "time": _now(),
            "bastion": self.bastion,
            "session": session,
            "user": user,
            "type": type,
            "payload": payload,
            "prev": prev,
        }
        record["hash"] = record_hash(record)
        line = canonical_json(record) + b"\n"
        size = os.fstat(fd).st_size
        head_replaced = False
        try:
            _write_all(fd, line)
            if durable:
                os.fsync(fd)
                if size == 0:
                    _fsync_dir(self.path.parent)
            self._write_head(seq, record["hash"], durable)
            head_replaced = True
            if durable:
                _fsync_dir(self.head_path.parent)
        except BaseException:
            if not head_replaced:
                # Nobody else can append while we hold the lock: restore the log to what the head signs.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                    os.fsync(fd)
            raise
        return record, _Tail(seq, record["hash"], prev, self.bastion)

    def _commit_checkpoint(
        self, fd: int, tail: _Tail | None, reason: str, session: str | None, user: str | None
    ) -> tuple[dict[str, Any], _Tail]:
        seq = tail.seq + 1 if tail else 1
        prev = tail.hash if tail else GENESIS
        sig = self._key.sign(checkpoint_message(self.bastion, seq, prev))
        payload = {
            "reason": reason,
            "key_id": self.key_id,
            "upto_seq": seq - 1,
            "upto_hash": prev,
            "sig": base64.b64encode(sig).decode("ascii"),
        }
        return self._commit(fd, tail, CHECKPOINT, payload, session, user, True)

    def _write_head(self, seq: int, hash_: str, durable: bool) -> None:
        """Atomically replace the signed head (tmp + fsync + rename); the caller fsyncs the directory."""
        sig = self._key.sign(head_message(self.bastion, seq, hash_))
        head = {
            "seq": seq,
            "hash": hash_,
            "key_id": self.key_id,
            "sig": base64.b64encode(sig).decode("ascii"),
        }
        tmp = self.head_path.with_name(self.head_path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            _write_all(fd, canonical_json(head) + b"\n")
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.head_path)


def _check_name(value: str | None, what: str) -> None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"audit {what} must be a string or None")
