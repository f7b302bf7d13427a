"""The audit log: hash-chained JSON Lines with Ed25519-signed checkpoints and a signed head.

Design (one chain per bastion host's log file)
    Every SSH login is its own process, so the log has concurrent writers. Instead of a chain per session
    plus a chain of session heads, all writers share ONE hash chain per log file and serialize their appends
    under a cross-process lock (`fcntl.flock` on the sibling `<log>.lock`, taken for every append; a
    `threading.Lock` serializes the threads of one process). Each record carries a global `seq` and the hash
    of its predecessor (`prev`), so deleting anything, even every record of a whole session, leaves a gap in
    seq and a broken prev link. An AuditLog keeps the lock, log and head files open across appends; under
    the lock it re-opens any of them whose path now names another inode (rotated or replaced), and a forked
    child re-opens all three (a flock belongs to the open file description, which a fork shares).

Record (one canonical-JSON line)
    {"seq", "time" (RFC 3339 UTC, microseconds), "bastion", "session", "user", "type", "payload", "prev",
    "hash"}; hash = SHA-256 of the canonical JSON of the record without "hash"; prev of seq 1 is "0"*64.

Signatures
    A `checkpoint` record (every `checkpoint_every` events, and explicitly at session end) signs
    b"bastion-audit-checkpoint\\n" + canonical_json([bastion, seq, prev]), which commits to every record
    before it. Records after the last checkpoint are covered by the head file `<log>.head`, which signs
    b"bastion-audit-head\\n" + canonical_json([bastion, seq, hash]) of the newest DURABLE record.

Head file: two fixed slots, updated in place
    2 x 512 bytes; slot i holds the head whose seq % 2 == i as canonical JSON {"hash", "key_id", "seq",
    "sig"}, a newline, the CRC-32 of that JSON (8 hex digits), a newline, space padding and a final newline.
    A head update is one pwrite of one slot (no temporary file, rename or directory fsync), so a write torn
    by a crash damages only that slot: readers take the INTACT slot (CRC matches) with the higher seq. A slot
    whose CRC matches but whose signature does not verify is forged, not torn, and is reported as such.
    The file is created once (O_EXCL, 0600, 1024 zero bytes = both slots empty; the directory is fsynced
    then). The older single-JSON head format is still read, and converted on the first head write.

Durability (group commit)
    A durable append writes its record and does ONE fdatasync of the log; then it writes the head slot naming
    that record, without fsync. A non-durable append only writes its record. The head therefore never names
    a record that may not be on disk: it is written only after an fdatasync that covers its record (and every
    earlier record, whoever wrote it). The head file itself is fsynced at checkpoints (periodic and
    explicit, i.e. at session end), at `sync()` and after a recovery; so after a power loss it may lag the
    log by the records since then, and records written non-durably may be lost.
    A non-durable append also leaves a "pending" marker in the lock file: {seq, hash, mac} of the record it
    wrote, MACed with a key derived from the signing key. The marker is how another writer (a durable append
    or sync() in another process) tells records a key holder wrote, and has not yet made durable, from
    records that someone without the key added: the former are simply committed by that writer's fdatasync
    and head (group commit), the latter are adopted visibly (below). The marker is not durable and only key
    holders can check it, so verify_log ignores it.

Crash states and what an append does with them (under the lock, before writing)
    - log and head as this process left them: nothing to check (fast path; the head's signature is verified
      only when its bytes differ from what this process last wrote or verified).
    - the log ends at the head's record: continue.
    - the log continues past the head with records up to a valid pending marker: continue (group commit).
    - the log continues past the head (or the marker) by k >= 1 records that chain correctly from the
      head's (seq, hash) — no gap, each hash valid, canonical form: this is what a crash leaves (head writes
      not yet fsynced, a head write torn, an append killed between its fdatasync and its head write, a power
      loss that kept the lock file's marker but not the head). The records are adopted and an explicit
      `audit.recovered` record {reason, head_seq, adopted_from, adopted_to} names them, then the log and head
      are made durable. Someone who can write the log but not read the key could append records that chain;
      they are never adopted silently. A head rolled back to an older genuine state looks the same as one
      that lagged at a crash, so it is adopted (and flagged) too, not refused. More than MAX_ADOPT records
      after the head is not a crash: refused.
    - anything else is refused and names the file, so an operator verifies and repairs it first: a torn or
      corrupt last line, a head AHEAD of the log (records the head names are gone: truncation), a head whose
      seq matches the log with another hash, records after the head that do not chain from it, a head
      file missing next to a non-empty log, a head signed by an unknown key or not verifying.

What `bastion.audit.verify` detects
    a modified record (hash mismatch; or, when its hashes were recomputed, the next checkpoint's or the
    head's signature no longer matches), a deleted record or session (seq gap), an inserted record,
    reordered records, a truncated tail (the signed head records a later seq), a torn last line, a
    checkpoint or head signed by a foreign key, a forged head slot (either one), and a missing or
    rolled-back head file.
The rule for records after the head (the cleanest one the file alone supports)
    Records after the head are covered by no signature, and the file cannot tell why: a live tail of
    non-durable appends not yet synced, a crash not yet recovered, a rolled-back head, or records appended
    without the key all look alike. So verify_log reports them as head_mismatch (naming the seq range) by
    default, and accepts them only with require_head=False, listing them in VerifyReport.unsigned. Once an
    append has adopted them, the `audit.recovered` record that follows them and the signatures after it
    cover them: the log verifies, and VerifyReport.recovered lists each adopted range ("unsigned at the
    crash"); a recovered record that does not name exactly the records before it is malformed. A busy log
    of durable appends always verifies: verify snapshots the head and the log size under the shared lock.
What it cannot detect
    anyone holding the signing key can rewrite the whole log and re-sign it; a rollback of BOTH the log and
    its head file to an earlier, genuinely signed state looks valid locally (only the off-host shipped copy
    catches that) — a special case is overwriting the newer head slot with garbage and truncating the log to
    the older slot; records written non-durably and lost in a power loss leave no trace (they were never
    signed); whoever appends forged records that chain after the head is not identified, only flagged by the
    `audit.recovered` record that adopts them.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import stat
import threading
import weakref
import zlib
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
    "HEAD_SIZE",
    "HEAD_SLOT_SIZE",
    "RECORD_KEYS",
    "RECOVERED",
    "RESERVED_TYPES",
    "AuditLog",
    "AuditLogError",
    "Head",
    "checkpoint_message",
    "encode_head_slot",
    "head_message",
    "head_path_for",
    "lock_path_for",
    "parse_head",
    "parse_record",
    "read_events",
    "read_head_slots",
    "record_hash",
]

GENESIS = "0" * 64
CHECKPOINT = "checkpoint"
RECOVERED = "audit.recovered"
RESERVED_TYPES = frozenset({CHECKPOINT, RECOVERED})
RECORD_KEYS = frozenset({"seq", "time", "bastion", "session", "user", "type", "payload", "prev", "hash"})
HEAD_KEYS = frozenset({"seq", "hash", "key_id", "sig"})
HEAD_SLOT_SIZE = 512
HEAD_SIZE = 2 * HEAD_SLOT_SIZE
MAX_ADOPT = 100_000  # records after the head an append adopts at most; more is not a crash, verify it
_PENDING_SIZE = 256  # the pending marker at the start of the lock file
_MAX_HEAD_FILE = 65536
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NOFOLLOW = os.O_CLOEXEC | os.O_NOFOLLOW


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
    """What the head file signs: the last durable record's seq and hash."""
    return b"bastion-audit-head\n" + canonical_json([bastion, seq, hash_])


def _pending_message(bastion: str, seq: int, hash_: str) -> bytes:
    return b"bastion-audit-pending\n" + canonical_json([bastion, seq, hash_])


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


# -- the head file -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Head:
    seq: int
    hash: str
    key_id: str
    sig: bytes


def _head_from_json(raw: bytes) -> Head:
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


def _head_json(head: Head) -> bytes:
    return canonical_json(
        {
            "seq": head.seq,
            "hash": head.hash,
            "key_id": head.key_id,
            "sig": base64.b64encode(head.sig).decode("ascii"),
        }
    )


def encode_head_slot(head: Head) -> bytes:
    """One 512-byte slot: the head's canonical JSON, its CRC-32 (torn-write check), padding."""
    body = _head_json(head)
    data = body + b"\n" + b"%08x" % zlib.crc32(body) + b"\n"
    if len(data) >= HEAD_SLOT_SIZE:
        raise ValueError("head does not fit in a slot")
    return data + b" " * (HEAD_SLOT_SIZE - 1 - len(data)) + b"\n"


def _decode_slot(raw: bytes, index: int) -> Head | None:
    """The head in slot index; None if torn (CRC mismatch); ValueError if intact but not a valid head."""
    end = raw.find(b"\n")
    if end < 0 or raw[end + 9 : end + 10] != b"\n":
        return None
    body = raw[:end]
    if raw[end + 1 : end + 9] != b"%08x" % zlib.crc32(body):
        return None
    head = _head_from_json(body)
    if head.seq % 2 != index:
        raise ValueError(f"slot {index} holds seq {head.seq}, which belongs in the other slot")
    return head


def read_head_slots(raw: bytes) -> list[Head]:
    """The heads held by the head file's content, newest first (0, 1 or 2); ValueError if it is corrupt.

    Empty slots (never written) and torn slots (an interrupted write) hold no head; both slots torn is not
    what one crash leaves, so that is corrupt. A zero-length file (a crash while creating it) holds none.
    The older format, one JSON object, is read as one head.
    """
    if not raw:
        return []
    if len(raw) != HEAD_SIZE:
        try:
            return [_head_from_json(raw)]
        except ValueError as exc:
            raise ValueError(f"neither {HEAD_SIZE} bytes of head slots nor a single head ({exc})") from None
    heads: list[Head] = []
    torn = 0
    for index in (0, 1):
        slot = raw[index * HEAD_SLOT_SIZE : (index + 1) * HEAD_SLOT_SIZE]
        if not slot.strip(b"\0"):
            continue
        try:
            head = _decode_slot(slot, index)
        except ValueError as exc:
            raise ValueError(f"slot {index}: {exc}") from None
        if head is None:
            torn += 1
        else:
            heads.append(head)
    if torn == 2:
        raise ValueError("both slots are torn or overwritten")
    return sorted(heads, key=lambda h: h.seq, reverse=True)


def parse_head(raw: bytes) -> Head | None:
    """The head file's current head: its intact slot with the higher seq, or None; ValueError if corrupt."""
    heads = read_head_slots(raw)
    return heads[0] if heads else None


# -- the pending marker (lock file) --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pending:
    seq: int
    hash: str


def _encode_pending(mac_key: bytes, bastion: str, seq: int, hash_: str) -> bytes:
    mac = hmac.new(mac_key, _pending_message(bastion, seq, hash_), hashlib.sha256).hexdigest()
    # canonical_json({"seq", "hash", "mac"}) written out: all three are plain ASCII tokens
    body = b'{"hash":"%s","mac":"%s","seq":%d}\n' % (hash_.encode(), mac.encode(), seq)
    return body + b" " * (_PENDING_SIZE - 1 - len(body)) + b"\n"


def _decode_pending(mac_key: bytes, bastion: str, raw: bytes) -> _Pending | None:
    """The marker if it is intact and MACed by a holder of this bastion's key, else None."""
    end = raw.find(b"\n")
    try:
        obj = json.loads(raw[:end], parse_constant=_reject_constant) if end > 0 else None
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or set(obj) != {"seq", "hash", "mac"}:
        return None
    seq, hash_, mac = obj["seq"], obj["hash"], obj["mac"]
    if not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(hash_, str):
        return None
    if not isinstance(mac, str):
        return None
    want = hmac.new(mac_key, _pending_message(bastion, seq, hash_), hashlib.sha256).hexdigest()
    return _Pending(seq, hash_) if hmac.compare_digest(want, mac) else None


# -- reading the log -----------------------------------------------------------------------------------------


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


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _pread_exact(fd: int, n: int, offset: int) -> bytes:
    data = b""
    while len(data) < n:
        got = os.pread(fd, n - len(data), offset + len(data))
        if not got:
            raise AuditLogError("audit log shrank while being read")
        data += got
    return data


def _lines_backwards(fd: int, size: int, chunk: int = 4096) -> Iterator[bytes]:
    """The lines (without newline) of a file that ends with a newline, last first, read from the end."""
    buf = b""
    pos = size
    while pos > 0:
        start = max(0, pos - chunk)
        buf = _pread_exact(fd, pos - start, start) + buf
        pos = start
        chunk = min(chunk * 2, 1 << 24)
        while True:
            cut = buf.rfind(b"\n", 0, len(buf) - 1)
            if cut < 0:
                break
            yield buf[cut + 1 : -1]
            buf = buf[: cut + 1]
    if buf:
        yield buf[:-1]


@dataclass(frozen=True)
class _Tail:
    """What an append needs of the last record."""

    seq: int
    hash: str
    prev: str
    bastion: str


@dataclass(frozen=True)
class _Known:
    """The log as this instance last left it (or checked it): its size, last line and last record."""

    size: int
    line: bytes  # the last line with its newline (b"" for an empty log)
    tail: _Tail | None


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


def _normalize_payload(payload: Any) -> tuple[dict[str, Any], bytes]:
    """(payload, its canonical JSON) as it will read back from disk, so its hash verifies; ValueError if it
    is not JSON.

    Encoding is done once: only dicts with non-string keys read back differently (JSON makes the keys
    strings and re-sorts them), so only those payloads take a decode and a second encode. Large payloads
    (masking evidence) would otherwise be encoded four times per append.
    """
    if not isinstance(payload, dict):
        raise ValueError(f"audit payload must be a dict, not {type(payload).__name__}")
    try:
        encoded = canonical_json(payload)
        if _has_non_str_keys(payload):
            payload = json.loads(encoded)
            encoded = canonical_json(payload)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"audit payload is not JSON-serializable: {exc}") from None
    return payload, encoded


def _has_non_str_keys(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if any(type(key) is not str for key in item):
                return True
            stack.extend(v for v in item.values() if isinstance(v, dict | list | tuple))
        elif isinstance(item, list | tuple):
            stack.extend(v for v in item if isinstance(v, dict | list | tuple))
    return False


def _encode_with_payload(fields: dict[str, Any], payload_json: bytes) -> bytes:
    """canonical_json({**fields, "payload": <payload>}) with the payload's canonical JSON given: sorted keys,
    no whitespace — exactly what canonical_json produces for the whole record."""
    parts = []
    for key in sorted([*fields, "payload"]):
        value = payload_json if key == "payload" else canonical_json(fields[key])
        parts.append(canonical_json(key) + b":" + value)
    return b"{" + b",".join(parts) + b"}"


def _file_id(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


# -- the appender --------------------------------------------------------------------------------------------

_INSTANCES: weakref.WeakSet[AuditLog] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for log in list(_INSTANCES):
        log._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class AuditLog:
    """Appender for one bastion host's audit log; safe across threads and processes (and fork)."""

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
        self._mac_key = hashlib.sha256(
            b"bastion-audit-pending-mac\n" + signing_key.private_bytes_raw()
        ).digest()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._lock_fd: int | None = None
        self._lock_id: tuple[int, int] | None = None
        self._log_fd: int | None = None
        self._log_id: tuple[int, int] | None = None
        self._log_size = 0
        self._head_fd: int | None = None
        self._head_id: tuple[int, int] | None = None
        self._head_raw: bytes | None = None  # the head file's bytes as last written or verified here
        self._head: Head | None = None  # the current head in _head_raw
        self._known: _Known | None = None
        _INSTANCES.add(self)

    # -- public API ----------------------------------------------------------------------------------------

    def append(
        self,
        type: str,
        payload: dict[str, Any],
        *,
        session: str | None,
        user: str | None,
        durable: bool = True,
    ) -> dict[str, Any]:
        """Append one event and return its record.

        durable=True (decision events): the record is on disk (fdatasync) when this returns, and the head
        names it. durable=False: the record is written (it survives this process being killed, not a power
        loss) and becomes durable with the next durable append, checkpoint or sync() by any process.
        Raises ValueError for a payload that is not JSON (nothing is written) and AuditLogError when the log
        cannot be continued safely. If a periodic checkpoint is due it is appended right after the event.
        """
        if not isinstance(type, str) or not type:
            raise ValueError("audit event type must be a non-empty string")
        if type in RESERVED_TYPES:
            raise ValueError(f"audit event type {type!r} is reserved for the log itself")
        _check_name(session, "session")
        _check_name(user, "user")
        clean, encoded = _normalize_payload(payload)
        with self._locked():
            tail, batch = self._prepare()
            recovering = bool(batch)
            record = self._record(tail, type, clean, session, user, encoded)
            batch.append(record)
            periodic = record["seq"] % (self.checkpoint_every + 1) == self.checkpoint_every
            if periodic:
                batch.append(self._checkpoint_record(_tail_of(record), "periodic", None, None))
            self._commit(batch, durable=durable or periodic or recovering, sync_head=periodic or recovering)
        return record

    def checkpoint(
        self, reason: str, *, session: str | None = None, user: str | None = None
    ) -> dict[str, Any]:
        """Append a signed checkpoint now (at session end), so the session's records are signed at once.

        The checkpoint, everything before it and the head naming it are on disk when this returns.
        """
        if not isinstance(reason, str):
            raise ValueError("checkpoint reason must be a string")
        _check_name(session, "session")
        _check_name(user, "user")
        with self._locked():
            tail, batch = self._prepare()
            record = self._checkpoint_record(tail, reason, session, user)
            batch.append(record)
            self._commit(batch, durable=True, sync_head=True)
        return record

    def sync(self) -> None:
        """Make every record written so far durable (fdatasync the log); then sign it in the head, fsynced."""
        with self._locked():
            tail, batch = self._prepare()
            if batch:
                self._commit(batch, durable=True, sync_head=True)
                return
            if tail is None:
                return
            assert self._log_fd is not None and self._head_fd is not None
            os.fdatasync(self._log_fd)
            if self._head is None or (self._head.seq, self._head.hash) != (tail.seq, tail.hash):
                self._write_head(tail.seq, tail.hash)
            os.fdatasync(self._head_fd)

    def close(self) -> None:
        """Close the files kept open between appends (they are re-opened by the next append)."""
        with self._lock:
            if self._pid == os.getpid():
                self._close_fds()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if self._pid == os.getpid():
                self._close_fds()

    # -- files ---------------------------------------------------------------------------------------------

    def _close_fds(self) -> None:
        for name in ("_lock_fd", "_log_fd", "_head_fd"):
            fd = getattr(self, name, None)
            if fd is not None:
                setattr(self, name, None)
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._lock_id = self._log_id = self._head_id = None
        self._head_raw = self._head = self._known = None

    def _forget_after_fork(self) -> None:
        """In a forked child: our copies of the parent's descriptors share its flock, so re-open everything.

        Closing a copy never releases the parent's lock (only the last descriptor of it, or LOCK_UN, does).
        """
        self._lock = threading.Lock()
        self._close_fds()
        self._pid = os.getpid()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the thread lock and the cross-process flock, with the log open and its size known."""
        with self._lock:
            if self._pid != os.getpid():  # forked without the at-fork hook (should not happen)
                self._lock_fd = self._log_fd = self._head_fd = None
                self._close_fds()
                self._pid = os.getpid()
            lock_fd = self._acquire()
            try:
                self._open_log()
                yield
            except BaseException:
                self._head_raw = self._head = self._known = None  # trust nothing cached after a failure
                raise
            finally:
                fcntl.flock(lock_fd, fcntl.LOCK_UN)

    def _acquire(self) -> int:
        """flock the lock file; re-open it if its path was replaced meanwhile (else two writers could run)."""
        for _ in range(100):
            if self._lock_fd is None:
                if not self.path.parent.exists():
                    self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o600)
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    os.close(fd)
                    raise AuditLogError(f"audit lock {self.lock_path} is not a regular file")
                self._lock_fd, self._lock_id = fd, _file_id(st)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            st_path = _lstat(self.lock_path)
            if st_path is not None and _file_id(st_path) == self._lock_id:
                return self._lock_fd
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = self._lock_id = None
        raise AuditLogError(f"audit lock {self.lock_path} keeps being replaced")

    def _open_log(self) -> None:
        st = _lstat(self.path)
        if st is not None and self._log_fd is not None and _file_id(st) == self._log_id:
            self._log_size = st.st_size
            return
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = self._log_id = None
        self._known = None
        flags = os.O_RDWR | os.O_APPEND | _NOFOLLOW
        created = False
        if st is None:
            try:
                fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o600)
                created = True
            except FileExistsError:
                fd = os.open(self.path, flags)
        else:
            try:
                fd = os.open(self.path, flags)
            except OSError as exc:
                raise AuditLogError(f"cannot open the audit log {self.path}: {exc.strerror}") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise AuditLogError(f"audit log {self.path} is not a regular file")
        if created:
            _fsync_dir(self.path.parent)  # a durable append must not lose the log's name
        self._log_fd, self._log_id, self._log_size = fd, _file_id(st), st.st_size

    def _open_head(self) -> os.stat_result | None:
        """Open (or keep) the head file; its stat, or None if there is none."""
        st = _lstat(self.head_path)
        if st is None:
            if self._head_fd is not None:
                os.close(self._head_fd)
            self._head_fd = self._head_id = None
            self._head_raw = self._head = None
            return None
        if self._head_fd is not None and _file_id(st) == self._head_id:
            return st
        if self._head_fd is not None:
            os.close(self._head_fd)
            self._head_fd = self._head_id = None
        self._head_raw = self._head = None
        try:
            fd = os.open(self.head_path, os.O_RDWR | _NOFOLLOW)
        except OSError as exc:
            raise AuditLogError(f"cannot read the audit head {self.head_path}: {exc.strerror}") from None
        fst = os.fstat(fd)
        if not stat.S_ISREG(fst.st_mode):
            os.close(fd)
            raise AuditLogError(f"audit head {self.head_path} is not a regular file")
        self._head_fd, self._head_id = fd, _file_id(fst)
        return fst

    def _create_head(self) -> None:
        """The head file, once: 0600 from creation, both slots empty, durable with its directory entry."""
        fd = os.open(self.head_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
        try:
            _pwrite_all(fd, bytes(HEAD_SIZE), 0)  # real blocks, not a hole: slot writes never need space
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        _fsync_dir(self.head_path.parent)
        self._head_fd, self._head_id = fd, _file_id(os.fstat(fd))
        self._head_raw, self._head = bytes(HEAD_SIZE), None

    def _read_head_raw(self, st: os.stat_result) -> bytes:
        assert self._head_fd is not None
        if st.st_size > _MAX_HEAD_FILE:
            raise AuditLogError(f"audit head {self.head_path} is corrupt (too large): verify the log")
        return _pread_exact(self._head_fd, st.st_size, 0) if st.st_size else b""

    # -- checking what is there ----------------------------------------------------------------------------

    def _unchanged(self) -> bool:
        """The log and head are exactly as this instance last left or checked them (the fast path)."""
        known, raw = self._known, self._head_raw
        if known is None or raw is None or known.size != self._log_size:
            return False
        assert self._log_fd is not None
        if known.size:
            n = min(len(known.line), 512)
            if os.pread(self._log_fd, n, known.size - n) != known.line[-n:]:
                return False
        st = _lstat(self.head_path)
        if st is None or _file_id(st) != self._head_id or st.st_size != len(raw):
            return False
        assert self._head_fd is not None
        return os.pread(self._head_fd, len(raw), 0) == raw

    def _read_tail(self) -> tuple[_Tail | None, bytes]:
        size = self._log_size
        if size == 0:
            return None, b""
        assert self._log_fd is not None
        if os.pread(self._log_fd, 1, size - 1) != b"\n":
            raise AuditLogError(
                f"audit log {self.path} ends with a torn line (no trailing newline): "
                "verify and repair it before the bastion appends again"
            )
        raw = next(_lines_backwards(self._log_fd, size))
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
        return _Tail(rec["seq"], rec["hash"], rec["prev"], rec["bastion"]), raw + b"\n"

    def _check_head(self, raw: bytes, bastion: str) -> Head | None:
        try:
            head = parse_head(raw)
        except ValueError as exc:
            raise AuditLogError(f"audit head {self.head_path} is corrupt ({exc}): verify the log") from None
        if head is None:
            return None
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

    def _read_pending(self) -> _Pending | None:
        assert self._lock_fd is not None
        return _decode_pending(self._mac_key, self.bastion, os.pread(self._lock_fd, _PENDING_SIZE, 0))

    def _prepare(self) -> tuple[_Tail | None, list[dict[str, Any]]]:
        """Check the log's tail against its signed head before extending it (see the module docstring).

        Returns the records to write first (an `audit.recovered` record when records after the head are
        adopted, else none) and the tail to chain from (the last of those records, else the log's).
        """
        if self._unchanged():
            assert self._known is not None
            return self._known.tail, []
        tail, line = self._read_tail()
        self._known = None
        st = self._open_head()
        if st is None:
            if tail is not None:
                raise AuditLogError(
                    f"audit log {self.path} has records up to seq {tail.seq} but no signed head "
                    f"{self.head_path}: verify the log before appending"
                )
            self._create_head()
            head = None
        else:
            raw = self._read_head_raw(st)
            if raw != self._head_raw:
                head = self._check_head(raw, tail.bastion if tail else self.bastion)
                self._head_raw, self._head = raw, head
            head = self._head
        batch: list[dict[str, Any]] = []
        if tail is None:
            if head is not None:
                raise AuditLogError(
                    f"audit log {self.path} is empty but its signed head records seq {head.seq}: "
                    "the log was truncated or replaced; verify it before appending"
                )
        elif head is not None and tail.seq < head.seq:
            raise AuditLogError(
                f"audit log {self.path} ends at seq {tail.seq} but its signed head records seq {head.seq}: "
                "the tail was truncated; verify the log before appending"
            )
        elif head is not None and tail.seq == head.seq:
            if tail.hash != head.hash:
                raise self._mismatch(tail, head)
        else:
            pending = self._read_pending()
            if pending is None or (pending.seq, pending.hash) != (tail.seq, tail.hash):
                batch.append(self._adopt(tail, head, pending))
        self._known = _Known(self._log_size, line, tail)
        return (_tail_of(batch[-1]) if batch else tail), batch

    def _mismatch(self, tail: _Tail, head: Head) -> AuditLogError:
        return AuditLogError(
            f"audit log {self.path} ends at seq {tail.seq} but its signed head records seq {head.seq} "
            "with another hash: verify the log before appending"
        )

    def _adopt(self, tail: _Tail, head: Head | None, pending: _Pending | None) -> dict[str, Any]:
        """The audit.recovered record for the records after the head, if they continue its chain."""
        base_seq, base_hash = (head.seq, head.hash) if head else (0, GENESIS)
        assert self._log_fd is not None
        found: list[tuple[dict[str, Any], bytes]] = []
        for raw in _lines_backwards(self._log_fd, self._log_size, 65536):
            try:
                rec = parse_record(raw)
            except ValueError:
                rec = None
            if rec is None or rec["seq"] <= base_seq:
                if rec is not None and rec["seq"] == base_seq:
                    found.append((rec, raw))
                break
            found.append((rec, raw))
            if len(found) > MAX_ADOPT:
                raise AuditLogError(
                    f"audit log {self.path} has more than {MAX_ADOPT} records after its signed head (seq "
                    f"{base_seq}); that is not what a crash leaves: verify the log before appending"
                )
        found.reverse()
        if base_seq:
            if not found or found[0][0]["seq"] != base_seq:
                raise self._unchained(tail, base_seq)
            if found[0][0]["hash"] != base_hash:
                assert head is not None
                raise self._mismatch(tail, head)
            found = found[1:]
        expect_seq, expect_prev = base_seq + 1, base_hash
        vouched = base_seq
        for rec, raw in found:
            if (
                rec["seq"] != expect_seq
                or rec["prev"] != expect_prev
                or record_hash(rec) != rec["hash"]
                or canonical_json(rec) != raw
            ):
                raise self._unchained(tail, base_seq)
            if pending is not None and (pending.seq, pending.hash) == (rec["seq"], rec["hash"]):
                vouched = rec["seq"]  # written by a key holder up to here; only the rest is adopted
            expect_seq, expect_prev = rec["seq"] + 1, rec["hash"]
        if expect_seq != tail.seq + 1:
            raise self._unchained(tail, base_seq)
        payload = {
            "reason": "records after the signed head (left by a crash) were adopted",
            "head_seq": base_seq,
            "adopted_from": vouched + 1,
            "adopted_to": tail.seq,
        }
        return self._record(tail, RECOVERED, payload, None, None)

    def _unchained(self, tail: _Tail, base_seq: int) -> AuditLogError:
        return AuditLogError(
            f"audit log {self.path} ends at seq {tail.seq} but the records after its signed head (seq "
            f"{base_seq}) do not continue its chain: verify the log before appending"
        )

    # -- writing -------------------------------------------------------------------------------------------

    def _record(
        self,
        tail: _Tail | None,
        type: str,
        payload: dict[str, Any],
        session: str | None,
        user: str | None,
        payload_json: bytes | None = None,
    ) -> dict[str, Any]:
        """A new record; its encoded line rides along under "_line" until _commit writes it."""
        fields: dict[str, Any] = {
            "seq": tail.seq + 1 if tail else 1,
            "time": _now(),
            "bastion": self.bastion,
            "session": session,
            "user": user,
            "type": type,
            "prev": tail.hash if tail else GENESIS,
        }
        if payload_json is None:
            payload_json = canonical_json(payload)
        fields["hash"] = hashlib.sha256(_encode_with_payload(fields, payload_json)).hexdigest()
        line = _encode_with_payload(fields, payload_json) + b"\n"
        return {**fields, "payload": payload, "_line": line}

    def _checkpoint_record(
        self, tail: _Tail | None, reason: str, session: str | None, user: str | None
    ) -> dict[str, Any]:
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
        return self._record(tail, CHECKPOINT, payload, session, user)

    def _commit(self, batch: list[dict[str, Any]], *, durable: bool, sync_head: bool) -> None:
        """Write the records (one write); durable: one fdatasync, then the head slot; else the pending marker.

        If the records cannot be written (and, when durable, made durable and named by the head), the log is
        cut back to what it was: nobody else can append while we hold the lock.
        """
        assert self._log_fd is not None and self._lock_fd is not None
        lines = [r.pop("_line", None) or canonical_json(r) + b"\n" for r in batch]
        last = batch[-1]
        size = self._log_size
        done = False
        try:
            _write_all(self._log_fd, b"".join(lines))
            if durable:
                os.fdatasync(self._log_fd)
                self._write_head(last["seq"], last["hash"])
            else:
                marker = _encode_pending(self._mac_key, self.bastion, last["seq"], last["hash"])
                _pwrite_all(self._lock_fd, marker, 0)
            done = True
        finally:
            if not done:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._log_fd, size)
                    os.fdatasync(self._log_fd)
        self._log_size = size + sum(len(line) for line in lines)
        self._known = _Known(self._log_size, lines[-1], _tail_of(last))
        if sync_head:
            assert self._head_fd is not None
            os.fdatasync(self._head_fd)

    def _write_head(self, seq: int, hash_: str) -> None:
        """Sign (seq, hash) into its slot, in place (not fsynced here: see the module docstring)."""
        assert self._head_fd is not None
        sig = self._key.sign(head_message(self.bastion, seq, hash_))
        head = Head(seq, hash_, self.key_id, sig)
        raw = self._head_raw
        if raw is None or len(raw) != HEAD_SIZE:
            raw = self._convert_head(raw or b"")
        slot = encode_head_slot(head)
        offset = (seq % 2) * HEAD_SLOT_SIZE
        _pwrite_all(self._head_fd, slot, offset)
        self._head_raw = raw[:offset] + slot + raw[offset + HEAD_SLOT_SIZE :]
        self._head = head

    def _convert_head(self, raw: bytes) -> bytes:
        """Give a head file of the older single-JSON format (or empty) its two slots; returns its new bytes.

        An empty file is extended in place; an older-format file is replaced atomically, once.
        """
        assert self._head_fd is not None
        new = bytearray(HEAD_SIZE)
        if not raw:
            _pwrite_all(self._head_fd, bytes(new), 0)
            os.fsync(self._head_fd)
            return bytes(new)
        (old,) = read_head_slots(raw)  # verified by _prepare
        offset = (old.seq % 2) * HEAD_SLOT_SIZE
        new[offset : offset + HEAD_SLOT_SIZE] = encode_head_slot(old)
        tmp = self.head_path.with_name(self.head_path.name + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
        try:
            _pwrite_all(fd, bytes(new), 0)
            os.fsync(fd)
            os.replace(tmp, self.head_path)
            _fsync_dir(self.head_path.parent)
        except BaseException:
            os.close(fd)
            raise
        os.close(self._head_fd)
        self._head_fd, self._head_id = fd, _file_id(os.fstat(fd))
        return bytes(new)


def _tail_of(record: dict[str, Any]) -> _Tail:
    return _Tail(record["seq"], record["hash"], record["prev"], record["bastion"])


def _check_name(value: str | None, what: str) -> None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"audit {what} must be a string or None")
