"""TinyDB backend: the embedded default state store for one bastion host.

Every SSH login is its own process, so this backend shares nothing in memory between calls:

* every read-modify-write runs under an exclusive ``fcntl.flock`` on a sibling ``<path>.lock`` file, inside
  one in-memory snapshot of the file, and the snapshot is written back once, at the end, only if it changed —
  so a compare-and-set is decided and stored under the same lock, and an exception half-way writes nothing;
* the file is replaced atomically (temp file in the same directory, fsync, ``os.replace``, fsync of the
  directory), so a reader never needs the lock: it opens either the old or the new file, never a torn one;
* TinyDB objects (and their query caches and next-id counters) live for one call only, with the query cache
  off, so nothing goes stale when another process writes.

Files are created 0600 (state is sensitive), missing parent directories 0700. A file that cannot be parsed is
a StoreError naming the file, never its contents, and it is never overwritten: it is evidence, and it may be a
newer format.
"""

from __future__ import annotations

import copy
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from tinydb import Query, TinyDB
from tinydb.storages import Storage
from tinydb.table import Document, Table

from .base import (
    AlreadyExists,
    Grant,
    OidcBinding,
    Request,
    SessionRecord,
    Store,
    StoreError,
    check_binding_user,
    check_end_status,
    check_limit,
    check_request_changes,
)

__all__ = ["TinyDBStore"]

FORMAT = 1  # bumped when the file layout changes incompatibly
_STATE = "_state"  # one document: {"format": int, "change_counter": int}
_R = TypeVar("_R")


class _AtomicJSONStorage(Storage):
    """One call's snapshot of the state file: read once, mutated in memory, replaced atomically on flush().

    TinyDB's own JSONStorage truncates and rewrites the file in place, which a concurrent reader can observe
    half-written; this one never touches the live file except through os.replace.
    """

    def __init__(self, path: str, *, shared: bool = False) -> None:
        super().__init__()
        self._path = path
        self._shared = shared  # read-only snapshot: may be the parsed file shared between calls
        self._data: dict[str, dict[str, Any]] | None = None
        self._loaded = False
        self.dirty = False

    def read(self) -> dict[str, dict[str, Any]] | None:
        if not self._loaded:
            self._data = _load_shared(self._path) if self._shared else _load(self._path)
            self._loaded = True
        return self._data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        self._data = data
        self._loaded = True
        self.dirty = True

    def flush(self) -> None:
        """Write the snapshot back if it changed; the caller holds the exclusive lock."""
        if self.dirty and self._data is not None:
            _atomic_write(self._path, json.dumps(self._data, separators=(",", ":")).encode("utf-8"))
            self.dirty = False


# Parsed state files by path, keyed by the identity of the file that was read (inode, mtime, size): the file
# is only ever replaced whole, so an unchanged identity means unchanged content. Only read-only operations
# use it (they never mutate what TinyDB hands them, and records are deep-copied out of it).
_PARSED: dict[str, tuple[tuple[int, int, int], dict[str, dict[str, Any]] | None]] = {}


def _identity(info: os.stat_result) -> tuple[int, int, int]:
    return (info.st_ino, info.st_mtime_ns, info.st_size)


def _load_shared(path: str) -> dict[str, dict[str, Any]] | None:
    try:
        current = _identity(os.stat(path))
    except FileNotFoundError:
        return None
    except OSError:
        return _load(path)
    cached = _PARSED.get(path)
    if cached is not None and cached[0] == current:
        return cached[1]
    return _load(path, remember=True)


def _load(path: str, *, remember: bool = False) -> dict[str, dict[str, Any]] | None:
    """Parse the state file; None when it does not exist yet (or is empty, as TinyDB itself treats it)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
            read_identity = _identity(os.fstat(f.fileno()))  # of the file actually read, not the path now
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StoreError(f"cannot read state file {path}: {e.strerror or type(e).__name__}") from None
    if not raw.strip():
        return None
    problem: str | None = None
    data: Any = None
    try:
        data = json.loads(raw)
    except UnicodeDecodeError:
        problem = "not UTF-8"
    except json.JSONDecodeError as e:
        problem = f"not valid JSON at line {e.lineno}, column {e.colno}"
    if problem is None and not (
        isinstance(data, dict)
        and all(
            isinstance(table, dict) and all(isinstance(doc, dict) for doc in table.values())
            for table in data.values()
        )
    ):
        problem = "not a TinyDB document layout"
    if problem is None:
        state = data.get(_STATE, {}).get("1", {})
        version = state.get("format", FORMAT)
        if not isinstance(version, int) or version > FORMAT:
            problem = f"format {version!r} is newer than this bastion understands ({FORMAT})"
    if problem is not None:
        raise StoreError(f"state file {path} is unreadable ({problem}); restore it from a backup")
    if remember:
        _PARSED[path] = (read_identity, data)
    return data


def _atomic_write(path: str, payload: bytes) -> None:
    """Replace path with payload: readers see the old or the new file, whole, and it survives a crash."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)  # 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _decode(cls: type[_R], doc: Mapping[str, Any], path: str, what: str) -> _R:
    """A stored document back into its record; a malformed one is a StoreError, not a TypeError."""
    try:
        return cls(**copy.deepcopy(dict(doc)))
    except TypeError:
        raise StoreError(
            f"state file {path} holds a malformed {what} record; restore it from a backup"
        ) from None


def _same(a: Any, b: Any) -> bool:
    """JSON equality (what PostgreSQL's jsonb = does): True is not 1, 1 is 1.0, a tuple is a list."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict | list | tuple) or isinstance(b, dict | list | tuple):
        return False
    return bool(a == b)


def _make_private_dirs(directory: Path) -> None:
    """Create missing directories 0700, each level (mkdir(parents=True) would leave the upper ones 0755)."""
    missing: list[Path] = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    for d in reversed(missing):
        with suppress(FileExistsError):  # another process created it first
            d.mkdir(mode=0o700)


class TinyDBStore(Store):
    """State in one JSON file (TinyDB layout), safe for many concurrent bastion processes on one host."""

    def __init__(self, path: str | Path) -> None:
        p = Path(os.path.abspath(path))  # fixed now: a later chdir must not move the state
        self._path = str(p)
        self._lock_path = self._path + ".lock"
        _make_private_dirs(p.parent)

    @property
    def path(self) -> Path:
        return Path(self._path)

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def _read(self) -> Iterator[TinyDB]:
        """A consistent snapshot without the lock: the file is only ever replaced whole."""
        db = TinyDB(self._path, storage=_AtomicJSONStorage, shared=True)
        try:
            yield db
        finally:
            db.close()

    @contextmanager
    def _write(self) -> Iterator[TinyDB]:
        """Read-modify-write under the cross-process lock; bump the change counter, store once at the end."""
        try:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise StoreError(
                f"cannot open lock file {self._lock_path}: {e.strerror or type(e).__name__}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            db = TinyDB(self._path, storage=_AtomicJSONStorage)
            storage = db.storage
            assert isinstance(storage, _AtomicJSONStorage)
            yield db
            if storage.dirty:
                state = self._table(db, _STATE)
                doc = state.get(doc_id=1)
                counter = doc["change_counter"] if isinstance(doc, Document) else 0
                state.upsert(Document({"format": FORMAT, "change_counter": counter + 1}, doc_id=1))
                storage.flush()
        finally:
            os.close(fd)  # releases the flock

    @staticmethod
    def _table(db: TinyDB, name: str) -> Table:
        return db.table(name, cache_size=0)

    def _one(self, db: TinyDB, table: str, key: str, value: Any) -> Document | None:
        doc = self._table(db, table).get(Query()[key] == value)
        assert not isinstance(doc, list)
        return doc

    # ------------------------------------------------------------------ OIDC bindings

    def get_binding(self, user: str) -> OidcBinding | None:
        with self._read() as db:
            doc = self._one(db, "bindings", "user", user)
            return None if doc is None else _decode(OidcBinding, doc, self._path, "binding")

    def put_binding(self, binding: OidcBinding) -> None:
        with self._write() as db:
            self._table(db, "bindings").upsert(asdict(binding), Query().user == binding.user)

    def replace_binding(self, expected: OidcBinding | None, new: OidcBinding) -> bool:
        check_binding_user(expected, new)
        with self._write() as db:
            doc = self._one(db, "bindings", "user", new.user)
            current = None if doc is None else _decode(OidcBinding, doc, self._path, "binding")
            if current != expected:
                return False
            self._table(db, "bindings").upsert(asdict(new), Query().user == new.user)
            return True

    def delete_binding(self, user: str) -> None:
        with self._write() as db:
            if self._one(db, "bindings", "user", user) is not None:
                self._table(db, "bindings").remove(Query().user == user)

    # ------------------------------------------------------------------ sessions

    def add_session(self, record: SessionRecord) -> None:
        with self._write() as db:
            if self._one(db, "sessions", "id", record.id) is not None:
                raise AlreadyExists(f"session {record.id!r} already exists")
            self._table(db, "sessions").insert(asdict(record))

    def get_session(self, session_id: str) -> SessionRecord | None:
        with self._read() as db:
            doc = self._one(db, "sessions", "id", session_id)
            return None if doc is None else _decode(SessionRecord, doc, self._path, "session")

    def end_session(self, session_id: str, status: str, ended_at: float) -> bool:
        check_end_status(status)
        with self._write() as db:
            doc = self._one(db, "sessions", "id", session_id)
            if doc is None or doc.get("status") != "running":
                return False
            self._table(db, "sessions").update({"status": status, "ended_at": ended_at}, doc_ids=[doc.doc_id])
            return True

    def list_sessions(
        self, *, user: str | None = None, status: str | None = None, limit: int | None = None
    ) -> list[SessionRecord]:
        check_limit(limit)
        with self._read() as db:
            docs = [
                d
                for d in self._table(db, "sessions").all()
                if (user is None or d.get("user") == user) and (status is None or d.get("status") == status)
            ]
        docs.sort(key=lambda d: (d.get("started_at", 0.0), d.doc_id), reverse=True)
        return [_decode(SessionRecord, d, self._path, "session") for d in docs[:limit]]

    # ------------------------------------------------------------------ requests

    def add_request(self, request: Request) -> None:
        with self._write() as db:
            if self._one(db, "requests", "id", request.id) is not None:
                raise AlreadyExists(f"request {request.id!r} already exists")
            self._table(db, "requests").insert(asdict(request))

    def get_request(self, request_id: str) -> Request | None:
        with self._read() as db:
            doc = self._one(db, "requests", "id", request_id)
            return None if doc is None else _decode(Request, doc, self._path, "request")

    def list_requests(self, *, state: str | None = None, requester: str | None = None) -> list[Request]:
        with self._read() as db:
            docs = [
                d
                for d in self._table(db, "requests").all()
                if (state is None or d.get("state") == state)
                and (requester is None or d.get("requester") == requester)
            ]
        docs.sort(key=lambda d: (d.get("created_at", 0.0), d.doc_id))
        return [_decode(Request, d, self._path, "request") for d in docs]

    def update_request(self, request_id: str, expected_version: int, **changes: Any) -> Request | None:
        check_request_changes(changes)
        with self._write() as db:
            doc = self._one(db, "requests", "id", request_id)
            if doc is None or doc.get("version") != expected_version:
                return None
            update = {**copy.deepcopy(changes), "version": expected_version + 1}
            self._table(db, "requests").update(update, doc_ids=[doc.doc_id])
            return _decode(Request, {**doc, **update}, self._path, "request")

    # ------------------------------------------------------------------ grants

    def add_grant(self, grant: Grant) -> None:
        with self._write() as db:
            if self._one(db, "grants", "id", grant.id) is not None:
                raise AlreadyExists(f"grant {grant.id!r} already exists")
            self._table(db, "grants").insert(asdict(grant))

    def get_grant(self, grant_id: str) -> Grant | None:
        with self._read() as db:
            doc = self._one(db, "grants", "id", grant_id)
            return None if doc is None else _decode(Grant, doc, self._path, "grant")

    def list_grants(self, user: str | None, *, active_at: float | None = None) -> list[Grant]:
        with self._read() as db:
            docs = [
                d
                for d in self._table(db, "grants").all()
                if (user is None or d.get("user") == user)
                and (
                    active_at is None or (d.get("state") == "active" and d.get("expires_at", 0.0) > active_at)
                )
            ]
        docs.sort(key=lambda d: (d.get("granted_at", 0.0), d.doc_id))
        return [_decode(Grant, d, self._path, "grant") for d in docs]

    def use_grant(self, grant_id: str, now: float) -> bool:
        with self._write() as db:
            doc = self._one(db, "grants", "id", grant_id)
            if (
                doc is None
                or doc.get("kind") != "statement"
                or doc.get("state") != "active"
                or not doc.get("expires_at", 0.0) > now
            ):
                return False
            self._table(db, "grants").update({"state": "used", "used_at": now}, doc_ids=[doc.doc_id])
            return True

    def revoke_grant(self, grant_id: str, now: float) -> bool:
        with self._write() as db:
            doc = self._one(db, "grants", "id", grant_id)
            if doc is None or doc.get("state") != "active" or not doc.get("expires_at", 0.0) > now:
                return False
            self._table(db, "grants").update({"state": "revoked"}, doc_ids=[doc.doc_id])
            return True

    # ------------------------------------------------------------------ shipping progress

    def get_progress(self, key: str) -> int | None:
        with self._read() as db:
            doc = self._one(db, "progress", "key", key)
            return None if doc is None else int(doc["offset"])

    def set_progress(self, key: str, offset: int) -> int:
        with self._write() as db:
            doc = self._one(db, "progress", "key", key)
            if doc is not None and int(doc["offset"]) >= offset:
                return int(doc["offset"])
            self._table(db, "progress").upsert({"key": key, "offset": offset}, Query().key == key)
            return offset

    def delete_progress(self, prefix: str) -> int:
        if not prefix:
            raise ValueError("delete_progress needs a non-empty prefix")
        with self._write() as db:
            table = self._table(db, "progress")
            docs = table.search(Query().key.test(lambda k: isinstance(k, str) and k.startswith(prefix)))
            if docs:  # removing nothing must not count as a change
                table.remove(doc_ids=[doc.doc_id for doc in docs])
            return len(docs)

    # ------------------------------------------------------------------ metadata

    def get_meta(self, key: str) -> Any:
        with self._read() as db:
            doc = self._one(db, "meta", "key", key)
            return None if doc is None else doc.get("value")

    def cas_meta(self, key: str, expected: Any, new: Any) -> bool:
        with self._write() as db:
            doc = self._one(db, "meta", "key", key)
            current = None if doc is None else doc.get("value")
            if not (current is None and expected is None) and (
                current is None or expected is None or not _same(current, expected)
            ):
                return False
            table = self._table(db, "meta")
            if new is None:
                if doc is not None:
                    table.remove(doc_ids=[doc.doc_id])
            else:
                table.upsert({"key": key, "value": copy.deepcopy(new)}, Query().key == key)
            return True

    # ------------------------------------------------------------------ change feed

    def change_counter(self) -> int:
        with self._read() as db:
            doc = self._table(db, _STATE).get(doc_id=1)
            return int(doc["change_counter"]) if isinstance(doc, Document) else 0
