"""Verify an audit log: every record, every link, every checkpoint signature, and the signed head.

The walk streams the log once (memory bounded by a small window) and stops at the FIRST problem, which it
names exactly: line number, seq, what is wrong and the likely tampering. See bastion.audit.log for what is
and is not detectable.

How a broken link is classified (a heuristic: the file alone cannot prove intent). Let E be the seq expected
after the last good record G (and P its hash), R the record found instead, and N the record after R:
  1. R is an exact copy of a record before or after it             -> inserted (a duplicate)
  2. R and G both claim the same slot (same seq, same prev)         -> inserted: the one the chain does NOT
                                                                       continue from (N links to R -> G)
  3. N continues the chain as if R were absent (seq E, prev P)      -> R is out of place: reordered if R links
                                                                       to a record elsewhere, else inserted
  4. R.seq jumps forward: seq E appears later (within the window)   -> reordered
                          R still links to G                        -> modified (its seq was changed)
                          otherwise                                 -> deleted (seq E..R.seq-1 are missing)
  5. R.seq == E but prev does not match G                           -> modified: G if N links to R (G was
                                                                       rewritten and rehashed), else R
  6. R.seq goes back: R links to an earlier record                  -> reordered, else inserted
The window is WINDOW records behind and ahead; a record moved farther than that reads as a deletion.
A record rewritten with every later hash recomputed keeps a valid chain: the next checkpoint's signature
(bad_signature) or the signed head (head_mismatch) catches it, with the range of seqs it can be in.

The head file has two slots (see bastion.audit.log): the head is its intact slot with the higher seq; a torn
slot is ignored (a crash), every intact slot must verify and name a record of the log. Records after the
head are covered by no signature: head_mismatch, or with require_head=False accepted and reported in
VerifyReport.unsigned. `audit.recovered` records must name the records right before them; their ranges
(records unsigned at a crash, adopted by the next append) are reported in VerifyReport.recovered.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import io
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bastion.audit.log import (
    CHECKPOINT,
    GENESIS,
    RECOVERED,
    AuditLogError,
    Head,
    checkpoint_message,
    head_message,
    head_path_for,
    lock_path_for,
    parse_record,
    read_head_slots,
    record_hash,
)
from bastion.audit.signing import key_id
from bastion.canonical import canonical_json

__all__ = ["Problem", "ProblemKind", "VerifyReport", "verify_log"]

ProblemKind = Literal[
    "malformed",
    "modified",
    "deleted",
    "inserted",
    "reordered",
    "truncated",
    "bad_signature",
    "unknown_key",
    "head_mismatch",
]

WINDOW = 1000  # records remembered behind and read ahead to classify a broken link


@dataclass(frozen=True)
class Problem:
    """The first thing wrong with a log; message is one human-readable line naming the record."""

    kind: ProblemKind
    message: str
    seq: int | None = None
    line: int | None = None


@dataclass
class VerifyReport:
    """Outcome of verify_log. events/checkpoints count the records verified before any problem.

    events counts records other than checkpoints; last_seq is the seq of the last record read (0 if none).
    recovered: the (first, last) seq ranges that `audit.recovered` records adopted after a crash (they were
    not covered by a signature at the crash; later signatures cover them). unsigned: with
    require_head=False, the (first, last) seqs at the end of the log no signature covers, if any.
    """

    ok: bool
    events: int = 0
    checkpoints: int = 0
    last_seq: int = 0
    problem: Problem | None = None
    head_seq: int | None = field(default=None)
    recovered: list[tuple[int, int]] = field(default_factory=list)
    unsigned: tuple[int, int] | None = None


@dataclass
class _Line:
    lineno: int
    raw: bytes
    complete: bool
    record: dict[str, Any] | None = None
    error: str | None = None
    computed: str | None = None  # record_hash of the parsed record

    @property
    def sound(self) -> bool:
        """Parsed, complete and matching its own hash: usable as evidence when classifying a broken link."""
        return self.record is not None and self.complete and self.computed == self.record["hash"]

    @property
    def seq(self) -> int:
        assert self.record is not None
        return self.record["seq"]

    @property
    def prev(self) -> str:
        assert self.record is not None
        return self.record["prev"]

    @property
    def hash(self) -> str:
        assert self.record is not None
        return self.record["hash"]

    def where(self) -> str:
        return f"line {self.lineno} (seq {self.seq})" if self.record else f"line {self.lineno}"


class _Reader:
    """Lines of the log up to a snapshot size, parsed, with look-ahead."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f = f
        self._left = size
        self._lineno = 0
        self._ahead: deque[_Line] = deque()

    def _read(self) -> _Line | None:
        if self._left <= 0:
            return None
        raw = self._f.readline(self._left)
        if not raw:
            return None
        self._left -= len(raw)
        self._lineno += 1
        complete = raw.endswith(b"\n")
        line = _Line(self._lineno, raw[:-1] if complete else raw, complete)
        if not line.raw:
            line.error = "empty line"
            return line
        try:
            line.record = parse_record(line.raw)
            line.computed = record_hash(line.record)
        except ValueError as exc:
            line.error = str(exc)
        return line

    def next(self) -> _Line | None:
        return self._ahead.popleft() if self._ahead else self._read()

    def peek(self, n: int) -> list[_Line]:
        """Up to n upcoming sound lines (stops at the first unsound one)."""
        while len(self._ahead) < n:
            line = self._read()
            if line is None:
                break
            self._ahead.append(line)
        out = []
        for line in self._ahead:
            if not line.sound or len(out) >= n:
                break
            out.append(line)
        return out


@contextlib.contextmanager
def _shared_lock(path: Path) -> Iterator[None]:
    """Hold the appenders' lock (shared) while snapshotting, if we may open it; never create it."""
    try:
        fd = os.open(lock_path_for(path), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def _snapshot(path: Path, stack: contextlib.ExitStack) -> tuple[bytes | None, BinaryIO | None, int]:
    """The head file's bytes, the open log and its size, consistent with each other.

    Taken under the appenders' lock (shared) when we may open it; only the snapshot holds it, since a long
    verify must not stall the sessions waiting to append. Without the lock (no permission, or a copy), a
    concurrent append can make the log one record longer than the head: verify then reports head_mismatch.
    """
    with _shared_lock(path):
        try:
            head_raw: bytes | None = head_path_for(path).read_bytes()
        except FileNotFoundError:
            head_raw = None
        try:
            f: BinaryIO | None = stack.enter_context(open(path, "rb"))  # noqa: SIM115 (closed by stack)
        except FileNotFoundError:
            return head_raw, None, 0
        return head_raw, f, os.fstat(f.fileno()).st_size


def _seqs(first: int, last: int) -> str:
    return f"seq {first}" if first == last else f"seq {first}..{last}"


class _Verifier:
    def __init__(
        self, path: Path, keys: dict[str, Ed25519PublicKey], reader: _Reader, watch: set[int]
    ) -> None:
        self.path = path
        self.watch = watch  # the head slots' seqs: remember the log's hashes there, not the whole log
        self.watched: dict[int, str] = {}
        self.keys = keys
        self.reader = reader
        self.history: deque[_Line] = deque(maxlen=WINDOW)
        self.report = VerifyReport(ok=False)
        self.last_checkpoint = 0  # seq of the last verified checkpoint
        self.last: _Line | None = None

    def fail(self, kind: ProblemKind, message: str, seq: int | None, line: int | None) -> VerifyReport:
        self.report.problem = Problem(kind, message, seq, line)
        self.report.ok = False
        return self.report

    def walk(self) -> VerifyReport | None:
        """Check every record; a report if a problem was found, else None (the head is checked next)."""
        expect_seq, expect_prev = 1, GENESIS
        while (line := self.reader.next()) is not None:
            if not line.complete:
                return self.fail(
                    "malformed",
                    f"line {line.lineno}: torn last line (no trailing newline) — an interrupted write",
                    None,
                    line.lineno,
                )
            if line.record is None:
                return self.fail(
                    "malformed", f"line {line.lineno}: not a record — {line.error}", None, line.lineno
                )
            rec = line.record
            if line.computed != rec["hash"]:
                return self.fail(
                    "modified", f"{line.where()}: hash mismatch — record modified", rec["seq"], line.lineno
                )
            if canonical_json(rec) != line.raw:
                return self.fail(
                    "malformed",
                    f"{line.where()}: not in canonical form (whitespace, key order or duplicate keys) "
                    "— record rewritten",
                    rec["seq"],
                    line.lineno,
                )
            if rec["seq"] != expect_seq or rec["prev"] != expect_prev:
                return self.broken_link(line, expect_seq, expect_prev)
            if rec["type"] == CHECKPOINT:
                problem = self.check_checkpoint(line)
                if problem:
                    return problem
                self.report.checkpoints += 1
                self.last_checkpoint = rec["seq"]
            else:
                if rec["type"] == RECOVERED:
                    problem = self.check_recovered(line)
                    if problem:
                        return problem
                self.report.events += 1
            self.report.last_seq = rec["seq"]
            if rec["seq"] in self.watch:
                self.watched[rec["seq"]] = rec["hash"]
            self.history.append(line)
            self.last = line
            expect_seq, expect_prev = rec["seq"] + 1, rec["hash"]
        return None

    def unsigned_range(self, upto: int) -> str:
        return _seqs(self.last_checkpoint + 1, upto) if upto > self.last_checkpoint else "no record"

    def check_recovered(self, line: _Line) -> VerifyReport | None:
        """An audit.recovered record names the records right before it (older logs: one, adopted_seq)."""
        rec = line.record
        assert rec is not None
        seq, payload = rec["seq"], rec["payload"]
        if "adopted_from" in payload or "adopted_to" in payload:
            first, last = payload.get("adopted_from"), payload.get("adopted_to")
        else:
            first = last = payload.get("adopted_seq")
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (first, last)):
            return self.fail(
                "malformed",
                f"{line.where()}: recovery record does not name the seqs it adopted",
                seq,
                line.lineno,
            )
        assert isinstance(first, int) and isinstance(last, int)
        if not 1 <= first <= last == seq - 1:
            return self.fail(
                "malformed",
                f"{line.where()}: recovery record names {_seqs(first, last)}, not the records before it",
                seq,
                line.lineno,
            )
        self.report.recovered.append((first, last))
        return None

    def check_checkpoint(self, line: _Line) -> VerifyReport | None:
        rec = line.record
        assert rec is not None
        seq, payload = rec["seq"], rec["payload"]
        expected = {"reason", "key_id", "upto_seq", "upto_hash", "sig"}
        if (
            set(payload) != expected
            or not isinstance(payload["key_id"], str)
            or not isinstance(payload["sig"], str)
        ):
            return self.fail(
                "malformed",
                f"{line.where()}: checkpoint payload does not have the fields {sorted(expected)}",
                seq,
                line.lineno,
            )
        if payload["upto_seq"] != seq - 1 or payload["upto_hash"] != rec["prev"]:
            return self.fail(
                "modified",
                f"{line.where()}: checkpoint covers seq {payload['upto_seq']}, not its predecessor — "
                "record modified",
                seq,
                line.lineno,
            )
        key = self.keys.get(payload["key_id"])
        if key is None:
            return self.fail(
                "unknown_key",
                f"checkpoint at seq {seq} (line {line.lineno}) is signed by key {payload['key_id']} "
                "which is not the bastion's key",
                seq,
                line.lineno,
            )
        try:
            key.verify(
                base64.b64decode(payload["sig"], validate=True),
                checkpoint_message(rec["bastion"], seq, rec["prev"]),
            )
        except (InvalidSignature, ValueError):
            return self.fail(
                "bad_signature",
                f"checkpoint at seq {seq} (line {line.lineno}): signature does not verify — a record in "
                f"{self.unsigned_range(seq - 1)} was modified and its hashes recomputed, or the checkpoint "
                "forged",
                seq,
                line.lineno,
            )
        return None

    def broken_link(self, r: _Line, expect_seq: int, expect_prev: str) -> VerifyReport:
        """Classify why r does not continue the chain (see the module docstring)."""
        g = self.last
        s = r.seq
        ahead = self.reader.peek(WINDOW)
        n = ahead[0] if ahead else None
        history = list(self.history)

        def fits(pool: list[_Line]) -> bool:
            if s == 1 and r.prev == GENESIS:
                return True
            return any(q.seq == s - 1 and q.hash == r.prev for q in pool)

        dup = next((q for q in history if q.hash == r.hash), None)
        if dup is not None:
            return self.fail(
                "inserted",
                f"{r.where()}: inserted record — a copy of seq {dup.seq} at line {dup.lineno}",
                s,
                r.lineno,
            )
        dup = next((q for q in ahead if q.hash == r.hash), None)
        if dup is not None:
            return self.fail(
                "inserted",
                f"{r.where()}: inserted record — a copy of seq {dup.seq}, which appears again at line "
                f"{dup.lineno}",
                s,
                r.lineno,
            )
        if g is not None and s == g.seq and r.prev == g.prev:
            if n is not None and n.prev == r.hash:
                return self.fail(
                    "inserted",
                    f"{g.where()}: inserted record — a second seq {s} follows at line {r.lineno} and the "
                    "chain continues from that one",
                    g.seq,
                    g.lineno,
                )
            return self.fail(
                "inserted",
                f"{r.where()}: inserted record — seq {s} appears twice (lines {g.lineno} and {r.lineno}) and "
                f"the chain continues from line {g.lineno}",
                s,
                r.lineno,
            )
        if n is not None and n.seq == expect_seq and n.prev == expect_prev:
            if fits(history + ahead):
                return self.fail(
                    "reordered",
                    f"{r.where()}: out of order — expected seq {expect_seq}, which follows at line "
                    f"{n.lineno}; records reordered",
                    s,
                    r.lineno,
                )
            return self.fail(
                "inserted",
                f"{r.where()}: inserted record — it links to no record of the chain, which continues at line "
                f"{n.lineno}",
                s,
                r.lineno,
            )
        if s > expect_seq:
            later = next((q for q in ahead if q.seq == expect_seq and q.prev == expect_prev), None)
            if later is not None:
                return self.fail(
                    "reordered",
                    f"{r.where()}: out of order — expected seq {expect_seq}, which appears later at line "
                    f"{later.lineno}; records reordered",
                    s,
                    r.lineno,
                )
            if r.prev == expect_prev:
                return self.fail(
                    "modified",
                    f"{r.where()}: links to seq {expect_seq - 1} but claims seq {s} — seq modified",
                    s,
                    r.lineno,
                )
            missing = _seqs(expect_seq, s - 1)
            where = f"after seq {expect_seq - 1}" if expect_seq > 1 else "at the start of the log"
            what = "record deleted" if s - expect_seq == 1 else f"{s - expect_seq} records deleted"
            return self.fail(
                "deleted", f"{missing} missing {where} (line {r.lineno}) — {what}", expect_seq, r.lineno
            )
        if s == expect_seq:
            if g is not None and (n is None or n.prev == r.hash):
                return self.fail(
                    "modified",
                    f"{g.where()}: record modified and its hash recomputed — seq {s} at line {r.lineno} "
                    "links to a different hash",
                    g.seq,
                    g.lineno,
                )
            return self.fail(
                "modified",
                f"{r.where()}: prev does not match the hash of seq {s - 1} — record modified",
                s,
                r.lineno,
            )
        after = f"after seq {g.seq}" if g is not None else "at the start of the log"
        if fits(history):
            return self.fail(
                "reordered",
                f"{r.where()}: out of order — seq {s} appears {after}; records reordered",
                s,
                r.lineno,
            )
        return self.fail(
            "inserted",
            f"{r.where()}: inserted record — seq {s} appears {after} and links to no earlier record",
            s,
            r.lineno,
        )

    def check_head(self, heads: list[Head], head_path: Path) -> VerifyReport | None:
        """Compare the head file's slots (newest first) with the end of the log."""
        last = self.last
        assert last is not None and last.record is not None
        for i, head in enumerate(heads):
            which = "head file" if i == 0 else "head file (older slot)"
            key = self.keys.get(head.key_id)
            if key is None:
                return self.fail(
                    "unknown_key",
                    f"{which} {head_path} is signed by key {head.key_id} which is not the bastion's key",
                    head.seq,
                    None,
                )
            try:
                key.verify(head.sig, head_message(last.record["bastion"], head.seq, head.hash))
            except InvalidSignature:
                return self.fail(
                    "bad_signature",
                    f"{which} {head_path}: signature does not verify (head at seq {head.seq}) — head forged "
                    "or modified",
                    head.seq,
                    None,
                )
        head = heads[0]
        if head.seq > last.seq:
            return self.fail(
                "truncated",
                f"log ends at seq {last.seq} but the signed head records seq {head.seq} — tail truncated "
                f"({_seqs(last.seq + 1, head.seq)} missing)",
                last.seq + 1,
                None,
            )
        for i, slot in enumerate(heads):
            if self.watched.get(slot.seq) != slot.hash:
                older = "" if i == 0 else " (older head slot)"
                return self.fail(
                    "head_mismatch",
                    f"seq {slot.seq} does not match the signed head's hash{older} — a record in "
                    f"{self.unsigned_range(slot.seq)} was modified and its hashes recomputed",
                    slot.seq,
                    None,
                )
        return None

    def unsigned_tail(self, after: int, why: str, require_head: bool) -> VerifyReport:
        """Records after seq `after` that no signature covers: head_mismatch unless require_head=False."""
        assert self.last is not None
        if require_head:
            return self.fail("head_mismatch", why, after + 1, None)
        self.report.unsigned = (after + 1, self.last.seq)
        self.report.ok = True
        return self.report


def verify_log(
    path: str | os.PathLike[str],
    public_keys: list[Ed25519PublicKey] | Ed25519PublicKey,
    *,
    require_head: bool = True,
) -> VerifyReport:
    """Verify the log at path against the bastion's public key(s) (several after a key rotation).

    A log with records but no head file fails unless require_head=False (e.g. a copy shipped without it),
    because without the head a truncated tail cannot be told from a short log. Raises AuditLogError if
    neither the log nor its head exists (a wrong path, not a verdict).
    """
    log_path = Path(path)
    keys_list = [public_keys] if isinstance(public_keys, Ed25519PublicKey) else list(public_keys)
    keys = {key_id(k): k for k in keys_list}
    head_path = head_path_for(log_path)
    with contextlib.ExitStack() as stack:
        head_raw, f, size = _snapshot(log_path, stack)
        if f is None and head_raw is None:
            raise AuditLogError(f"audit log {log_path} does not exist")
        heads: list[Head] = []
        head_error: str | None = None
        if head_raw is not None:
            try:
                heads = read_head_slots(head_raw)
            except ValueError as exc:
                head_error = str(exc)
        v = _Verifier(log_path, keys, _Reader(f or io.BytesIO(), size), watch={h.seq for h in heads})
        v.report.head_seq = heads[0].seq if heads else None
        failed = v.walk()
    if failed is not None:
        return failed
    if head_error is not None:
        return v.fail("malformed", f"head file {head_path} is corrupt — {head_error}", None, None)
    if v.last is None:
        if heads:
            return v.fail(
                "truncated",
                f"log is empty but the signed head records seq {heads[0].seq} — log truncated",
                1,
                None,
            )
        v.report.ok = True
        return v.report
    if head_raw is None:
        if require_head:
            return v.fail(
                "head_mismatch",
                f"log has records up to seq {v.last.seq} but no signed head file {head_path} — head deleted; "
                "a truncated tail would go unnoticed",
                None,
                None,
            )
        if v.last_checkpoint < v.last.seq:
            v.report.unsigned = (v.last_checkpoint + 1, v.last.seq)
        return _ok(v)
    if not heads:
        return v.unsigned_tail(
            0,
            f"log has records up to seq {v.last.seq} but the head file {head_path} holds no signed head — "
            f"{_seqs(1, v.last.seq)} not covered by it (head wiped, or a crash before the first head write)",
            require_head,
        )
    problem = v.check_head(heads, head_path)
    if problem is not None:
        return problem
    head = heads[0]
    if head.seq < v.last.seq:
        return v.unsigned_tail(
            head.seq,
            f"the signed head records seq {head.seq} but the log continues to seq {v.last.seq} — "
            f"{_seqs(head.seq + 1, v.last.seq)} not covered by the head (non-durable appends not yet synced, "
            "an append interrupted by a crash, the head rolled back, or records appended without the key)",
            require_head,
        )
    return _ok(v)


def _ok(v: _Verifier) -> VerifyReport:
    v.report.ok = True
    return v.report
