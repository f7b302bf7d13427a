"""Shipping spool files to the sink: incremental, acknowledged, resumable; and `bastion ship`.

A stream (one spool file) is shipped by position. The commit point of `<remote path>` on sink S is the
state store's progress `ship:<S>:<remote path>`: every byte before it is durable on the sink. A shipper
writes bytes [commit, end) at their own offsets, waits for the sink's fsync, then raises the commit point
(at most every COMMIT_EVERY_S per stream, and always at the end: a store write also wakes every live view);
a crash anywhere re-ships from the last commit point, rewriting identical bytes at identical offsets. While
a file is being written only whole lines ship.

`Shipper.drain()` is one pass of `bastion ship`: mark dead sessions ended (abnormal), seal orphaned
recordings, ship everything, verify sealed sessions by reading them back, apply retention, ship the audit
log. A session whose owner is alive holds the flock on its directory and is skipped (its owner ships it).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.audit.log import AuditLog, AuditLogError, head_path_for, read_events
from bastion.config import Config
from bastion.recording.manifest import SealInfo, seal
from bastion.recording.sinks import Sink, SinkError, open_sink, sink_id
from bastion.recording.spool import (
    MANIFEST,
    SHIPPED_STAMP,
    Spool,
    session_files,
    try_lock,
    whole_lines_size,
)
from bastion.store.base import SessionRecord, Store, StoreError

TICK_S = 0.5
CHUNK = 4 << 20
COMMIT_EVERY_S = 5.0  # a commit point is a store write (and a change notification for live views)
SINK_DOWN_META = "recording.sink_down"
NUDGE_EVERY_S = 5.0


def _flock_path(path: Path, *, blocking: bool = False) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except OSError:
        os.close(fd)
        return None
    return fd


# ---------------------------------------------------------------- sink health in the store


def note_sink_down(store: Store, sink: str, error: str, now: float | None = None) -> None:
    """Remember since when the sink is unreachable (first failure wins), for max_lag at login."""
    current = store.get_meta(SINK_DOWN_META)
    if isinstance(current, dict) and current.get("sink") == sink:
        return
    value = {"sink": sink, "since": time.time() if now is None else now, "error": error[:200]}
    store.cas_meta(SINK_DOWN_META, current, value)


def note_sink_up(store: Store, sink: str) -> None:
    current = store.get_meta(SINK_DOWN_META)
    if current is not None:
        store.cas_meta(SINK_DOWN_META, current, None)


def sink_down_since(store: Store, sink: str) -> float | None:
    current = store.get_meta(SINK_DOWN_META)
    if isinstance(current, dict) and current.get("sink") == sink:
        since = current.get("since")
        return float(since) if isinstance(since, int | float) else None
    return None


# ---------------------------------------------------------------- dead sessions


def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def process_alive(pid: int, started_at: float) -> bool:
    """Whether the session's process still runs: not gone, not a zombie, and not a newer process that
    reused the pid (it would have started after the session did)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill()
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return False
    boot = _boot_time()
    if boot is None:
        return True
    started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return started <= started_at + 2.0


def mark_dead_sessions(config: Config, store: Store, audit: AuditLog, now: float | None = None) -> list[str]:
    """End (abnormal) this host's running sessions whose process is gone; their ids."""
    now = time.time() if now is None else now
    host = socket.gethostname()
    ended = []
    for record in store.list_sessions(status="running"):
        if record.bastion != config.bastion.name or record.host != host or record.pid is None:
            continue
        if process_alive(record.pid, record.started_at):
            continue
        if not store.end_session(record.id, "abnormal", now):
            continue  # ended meanwhile by someone else: first end wins
        reason = f"the session's process (pid {record.pid}) is gone and never recorded its end"
        audit.append(
            "session_end",
            {
                "status": "abnormal",
                "reason": reason,
                "detected_by": "bastion ship",
                "duration_s": round(max(0.0, now - record.started_at), 3),
            },
            session=record.id,
            user=record.user,
        )
        audit.checkpoint("session_end", session=record.id, user=record.user)
        ended.append(record.id)
    return ended


# ---------------------------------------------------------------- the shipper


@dataclass
class DrainReport:
    sealed: list[str] = field(default_factory=list)
    shipped: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    live: int = 0
    pending: int = 0
    dead: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # not re-sealed: the log says they were sealed
    seal_problem: str | None = None
    bytes: int = 0
    error: str | None = None

    def line(self) -> str:
        parts = [
            f"{len(self.shipped)} sessions shipped",
            f"{len(self.sealed)} sealed",
            f"{len(self.removed)} removed from the spool",
            f"{self.live} live",
            f"{self.bytes} bytes",
        ]
        if self.dead:
            parts.append(f"{len(self.dead)} dead sessions ended abnormal")
        if self.pending:
            parts.append(f"{self.pending} waiting for the sink")
        if self.seal_problem:
            parts.append(self.seal_problem)
        elif self.refused:
            parts.append(
                f"{len(self.refused)} NOT re-sealed (manifest gone after sealing: run bastion audit verify)"
            )
        text = "bastion ship: " + ", ".join(parts)
        return text + (f" — not done: {self.error}" if self.error else "")


class Shipper:
    """Ships one bastion host's spool to its sink; used by live sessions and by `bastion ship`."""

    def __init__(self, config: Config, store: Store, sink: Sink | None) -> None:
        self.config = config
        self.store = store
        self.sink = sink
        self.sink_id = sink_id(config.recording.sink) if config.recording.sink else ""
        self.bastion = config.bastion.name
        self.spool = Spool.of(config)
        self.acked: dict[str, int] = {}
        self.verified_start: set[str] = set()
        self.committed_at: dict[str, float] = {}
        self.last_head: bytes | None = None
        self.shipped_bytes = 0
        self.lock = threading.Lock()

    def key(self, remote: str) -> str:
        return f"ship:{self.sink_id}:{remote}"

    def remote_session(self, session_id: str, name: str = "") -> str:
        return f"{self.bastion}/sessions/{session_id}/{name}"

    def remote_audit(self, name: str) -> str:
        return f"{self.bastion}/audit/{name}"

    # -- one stream

    def ship_stream(self, local: Path, remote: str, *, upto: int, final: bool = False) -> int:
        """Make the sink hold bytes [0, upto) of local at remote; returns the acknowledged offset."""
        assert self.sink is not None
        acked = self.acked.get(remote)
        if acked is None:
            acked = self.store.get_progress(self.key(remote)) or 0
        if remote not in self.verified_start:
            # the sink may hold less than the store says (restored from an older backup): never trust more
            # than it has
            have = self.sink.size(remote) or 0
            acked = min(acked, have)
            self.verified_start.add(remote)
        if upto > acked:
            with open(local, "rb") as f:
                pos = acked
                while pos < upto:
                    n = self.sink.copy_range(remote, f.fileno(), pos, min(CHUNK, upto - pos))
                    if n <= 0:
                        break
                    pos += n
                    self.shipped_bytes += n
                    self.acked[remote] = pos
            acked = pos
        self.acked[remote] = acked
        now = time.monotonic()
        if final or now - self.committed_at.get(remote, 0.0) >= COMMIT_EVERY_S:
            self.store.set_progress(self.key(remote), acked)
            self.committed_at[remote] = now
        return acked

    # -- sessions

    def ship_live(self, directory: Path) -> None:
        """A running session: whole lines of every file written so far."""
        for path in session_files(directory):
            remote = self.remote_session(directory.name, path.name)
            self.ship_stream(path, remote, upto=whole_lines_size(path))

    def ship_sealed(self, directory: Path) -> bool:
        """A sealed session: every file to its sealed size, read back and compared by SHA-256, then the
        manifest, then the `.shipped` stamp. False when there is no manifest (not sealed)."""
        assert self.sink is not None
        try:
            manifest_bytes = (directory / MANIFEST).read_bytes()
        except FileNotFoundError:
            return False
        if (directory / SHIPPED_STAMP).exists():
            return True
        body = json.loads(manifest_bytes)["manifest"]
        for entry in body["files"]:
            name, size, digest = entry["name"], entry["size"], entry["sha256"]
            remote = self.remote_session(directory.name, name)
            self.ship_stream(directory / name, remote, upto=size, final=True)
            have = self.sink.size(remote)
            if have is not None and have > size:  # a tail shipped before the seal cut it
                self.sink.truncate(remote, size)
            if self.sink.sha256(remote) != digest:
                self._reship_whole(directory / name, remote, size)
                if self.sink.sha256(remote) != digest:
                    raise SinkError(f"the sink's copy of {name} does not match its manifest")
        remote_manifest = self.remote_session(directory.name, MANIFEST)
        self.sink.put(remote_manifest, manifest_bytes)
        self.store.set_progress(self.key(remote_manifest), len(manifest_bytes))
        stamp = directory / SHIPPED_STAMP
        stamp.write_bytes(b"")
        return True

    def _reship_whole(self, local: Path, remote: str, size: int) -> None:
        assert self.sink is not None
        with open(local, "rb") as f:
            self.sink.copy_range(remote, f.fileno(), 0, size)
        self.sink.truncate(remote, size)

    def forget(self, session_id: str) -> None:
        """Commit points of a session whose spool copy is gone: the state store does not grow forever."""
        prefix = self.key(self.remote_session(session_id))
        with contextlib.suppress(StoreError):
            self.store.delete_progress(prefix)
        for remote in [r for r in self.acked if r.startswith(self.remote_session(session_id))]:
            self.acked.pop(remote, None)
            self.committed_at.pop(remote, None)
            self.verified_start.discard(remote)

    def remove_if_due(self, directory: Path, now: float | None = None) -> bool:
        """Remove a shipped session from the spool once [recording].retention has passed since the ack."""
        stamp = directory / SHIPPED_STAMP
        try:
            shipped_at = stamp.stat().st_mtime
        except FileNotFoundError:
            return False
        now = time.time() if now is None else now
        if now - shipped_at < self.config.recording.retention_s:
            return False
        shutil.rmtree(directory, ignore_errors=True)
        self.forget(directory.name)
        return True

    # -- the audit log

    def ship_audit(self, *, final: bool = True) -> bool:
        """New whole lines of the audit log, then its signed head; False when another process is on it.
        Live sessions pass final=False: their commit points are throttled like their casts'."""
        assert self.sink is not None
        log = self.config.audit.log
        self.spool.ensure()
        lock = _flock_path(self.spool.ship_dir / "audit.lock")
        if lock is None:
            return False
        try:
            head_path = head_path_for(log)
            try:
                head = head_path.read_bytes()  # before the log's size: the log then holds what it names
            except FileNotFoundError:
                head = None
            try:
                upto = whole_lines_size(log)
            except FileNotFoundError:
                return True
            self.ship_stream(log, self.remote_audit(log.name), upto=upto, final=final)
            if head is not None and head != self.last_head:
                self.sink.put(self.remote_audit(head_path.name), head)
                self.last_head = head
            return True
        finally:
            os.close(lock)

    # -- one pass of `bastion ship`

    def drain(self, audit: AuditLog, now: float | None = None) -> DrainReport:
        report = DrainReport()
        report.dead = mark_dead_sessions(self.config, self.store, audit, now)
        orphans: list[tuple[Path, int]] = []
        for directory in self.spool.session_dirs():
            fd = try_lock(directory)
            if fd is None:
                report.live += 1
                continue
            orphans.append((directory, fd))
        try:
            unsealed = [d for d, _ in orphans if not (d / MANIFEST).exists()]
            if unsealed:
                sealed, report.refused, report.seal_problem = self._seal_orphans(unsealed, audit)
                report.sealed.extend(sealed)
            for directory, _ in orphans:
                if self.sink is None:
                    continue
                if report.error is None:
                    try:
                        before = self.shipped_bytes
                        already = (directory / SHIPPED_STAMP).exists()
                        if self.ship_sealed(directory) and not already:
                            report.shipped.append(directory.name)
                        report.bytes += self.shipped_bytes - before
                    except SinkError as exc:
                        report.error = str(exc)
                if not (directory / SHIPPED_STAMP).exists():
                    report.pending += 1
                elif self.remove_if_due(directory, now):
                    report.removed.append(directory.name)
        finally:
            for _, fd in orphans:
                os.close(fd)
        if self.sink is not None and report.error is None:
            try:
                before = self.shipped_bytes
                self.ship_audit()
                report.bytes += self.shipped_bytes - before
                # a quiet pass makes no sink call: only an answer from the sink ends an outage
                self.sink.probe()
            except SinkError as exc:
                report.error = str(exc)
        if self.sink is not None:
            with contextlib.suppress(StoreError):
                if report.error is None:
                    note_sink_up(self.store, self.sink_id)
                else:
                    note_sink_down(self.store, self.sink_id, report.error)
        return report

    def _seal_orphans(
        self, directories: list[Path], audit: AuditLog
    ) -> tuple[list[str], list[str], str | None]:
        """Seal recordings whose owner died: status from the store, seqs and markers from the audit log;
        (sealed, refused, why none could be). A session the log (or a `.shipped` stamp) shows as sealed
        already is refused, audited once: re-sealing would sign whatever its files now hold (an edit)."""
        from bastion.audit.signing import load_private_key
        from bastion.recording.cast import parse_marker

        wanted = {d.name: d for d in directories}
        seqs: dict[str, list[int]] = {}
        sealed_at: dict[str, int] = {}
        refusal_audited: set[str] = set()
        try:
            for record in read_events(self.config.audit.log):
                session = record["session"]
                if session in wanted:
                    seqs.setdefault(session, []).append(int(record["seq"]))
                    if record["type"] == "recording_sealed":
                        sealed_at.setdefault(session, int(record["seq"]))
                    elif record["type"] == "recording_seal_refused":
                        refusal_audited.add(session)
        except FileNotFoundError:
            pass  # no log yet: nothing was ever sealed
        except (AuditLogError, OSError) as exc:
            # without the log there is no telling whether these were sealed before: fail closed
            return [], list(wanted), f"not sealing leftovers: cannot read the audit log ({exc})"[:300]
        key = load_private_key(self.config.audit.signing_key)
        sealed: list[str] = []
        refused: list[str] = []
        for session_id, directory in wanted.items():
            record = self.store.get_session(session_id)
            if session_id in sealed_at or (directory / SHIPPED_STAMP).exists():
                refused.append(session_id)
                if session_id not in refusal_audited:
                    why = (
                        f"sealed before (audit seq {sealed_at[session_id]})"
                        if session_id in sealed_at
                        else "shipped before (.shipped stamp)"
                    )
                    audit.append(
                        "recording_seal_refused",
                        {"reason": f"manifest.json is missing but the recording was {why}: not re-sealed"},
                        session=session_id,
                        user=record.user if record else None,
                    )
                continue
            meta = _cast_meta(directory)
            markers = 0
            for path in directory.glob("*.cast"):
                markers += _count_markers(path, parse_marker)
            found = seqs.get(session_id, [])
            info = SealInfo(
                bastion=self.bastion,
                session=session_id,
                user=record.user if record else str(meta.get("user", "")),
                key_fingerprint=record.key_fingerprint if record else str(meta.get("key_fingerprint", "")),
                kind=record.kind if record else str(meta.get("kind", "")),
                status=_final_status(record),
                sealed_by="ship",
                audit_log=self.config.audit.log.name,
                first_seq=min(found) if found else None,
                last_seq=max(found) if found else None,
                markers=markers,
            )
            data = seal(directory, info, key)
            audit.append(
                "recording_sealed",
                sealed_payload(data, "ship"),
                session=session_id,
                user=info.user or None,
            )
            sealed.append(session_id)
        return sealed, refused, None


def sealed_payload(manifest_bytes: bytes, sealed_by: str) -> dict[str, Any]:
    import hashlib

    body = json.loads(manifest_bytes)["manifest"]
    return {
        "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        "files": len(body["files"]),
        "bytes": sum(int(f["size"]) for f in body["files"]),
        "sealed_by": sealed_by,
    }


def _final_status(record: SessionRecord | None) -> str:
    if record is None:
        return "abnormal"
    return record.status if record.status != "running" else "abnormal"


def _cast_meta(directory: Path) -> dict[str, Any]:
    try:
        with open(directory / "session.cast", encoding="utf-8") as f:
            header = json.loads(f.readline())
        meta = header.get("bastion")
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError):
        return {}


def _count_markers(path: Path, parse: Callable[[str], Any]) -> int:
    count = 0
    with contextlib.suppress(OSError), open(path, encoding="utf-8", errors="replace") as f:
        f.readline()
        for line in f:
            if '"m"' in line:
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if event[1] == "m" and parse(event[2]) is not None:
                        count += 1
    return count


# ---------------------------------------------------------------- the live shipper of one session


class LiveShipper:
    """A thread of the session's owner: every TICK_S it fdatasyncs the session's spool files (so a power
    loss takes at most one tick) and, with a sink, ships them and the audit log. Sink failures back off and
    are reported through `on_health(ok, error)` on transitions only."""

    def __init__(
        self,
        shipper: Shipper | None,
        directory: Path,
        on_health: Callable[[bool, str], None],
    ) -> None:
        self.shipper = shipper
        self.directory = directory
        self.on_health = on_health
        self.healthy: bool | None = None
        self.stop = threading.Event()
        self.sync_fds: dict[str, int] = {}
        self.retry_at = 0.0
        self.failures = 0
        self.thread = threading.Thread(target=self._run, name="live-shipper", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(TICK_S):
            self.tick()

    def sync(self) -> None:
        for path in session_files(self.directory):
            fd = self.sync_fds.get(path.name)
            if fd is None:
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except OSError:
                    continue
                self.sync_fds[path.name] = fd
            with contextlib.suppress(OSError):
                os.fdatasync(fd)

    def tick(self) -> None:
        self.sync()
        shipper = self.shipper
        if shipper is None or shipper.sink is None or time.monotonic() < self.retry_at:
            return
        try:
            with shipper.lock:
                shipper.ship_live(self.directory)
                shipper.ship_audit(final=False)
                if self.healthy is False:
                    assert shipper.sink is not None
                    shipper.sink.probe()  # a quiet tick made no sink call: recovered only once it answers
        except SinkError as exc:
            self._health(False, str(exc))
            with contextlib.suppress(StoreError):  # for max_lag at the next strict login
                note_sink_down(shipper.store, shipper.sink_id, str(exc))
        except (OSError, StoreError) as exc:
            self._health(False, f"{type(exc).__name__}: {exc}"[:200])
        else:
            if self.healthy is False:
                with contextlib.suppress(StoreError):
                    note_sink_up(shipper.store, shipper.sink_id)
            self._health(True, "")

    def _health(self, ok: bool, error: str) -> None:
        if ok:
            self.failures = 0
            self.retry_at = 0.0
        else:
            self.failures += 1
            self.retry_at = time.monotonic() + min(5.0, TICK_S * 2**self.failures)
        if ok != self.healthy:
            self.healthy = ok
            with contextlib.suppress(Exception):
                self.on_health(ok, error)

    def finish(self, final: Callable[[], None], timeout: float) -> bool:
        """Stop ticking, then run `final` (the last ship) within timeout in all; False when it did not
        finish (a tick stuck on an unresponsive sink, or the final ship): `bastion ship` does the rest."""
        deadline = time.monotonic() + timeout
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(max(0.0, deadline - time.monotonic()))
        for fd in self.sync_fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.sync_fds.clear()
        if self.thread.is_alive():
            return False
        done = threading.Event()
        failed: list[BaseException] = []

        def run() -> None:
            try:
                final()
            except BaseException as exc:  # reported to the caller, not raised in a thread
                failed.append(exc)
            finally:
                done.set()

        worker = threading.Thread(target=run, name="final-ship", daemon=True)
        worker.start()
        return done.wait(max(0.0, deadline - time.monotonic())) and not failed


# ---------------------------------------------------------------- `bastion ship` and the nudge


def ship_lock_path(config: Config) -> Path:
    return Spool.of(config).ship_dir / "ship.lock"


def run_ship(config: Config, store: Store, audit: AuditLog, *, once: bool, interval: float) -> int:
    """`bastion ship`: one pass (--once) or a service loop. Exit 0 when the spool is drained (or another
    ship holds the lock), 1 when the sink could not take everything."""
    spool = Spool.of(config)
    spool.ensure()
    lock = _flock_path(ship_lock_path(config), blocking=not once)
    if lock is None:
        print("bastion ship: another ship is running", file=sys.stderr)
        return 0
    sink = open_sink(config.recording.sink)
    shipper = Shipper(config, store, sink)
    stop = threading.Event()
    if not once:
        import signal

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda *_: stop.set())
    try:
        while True:
            try:
                report = shipper.drain(audit)
            except (StoreError, AuditLogError, OSError) as exc:  # say so, try again next pass
                report = DrainReport(error=f"{type(exc).__name__}: {exc}"[:200])
            if once:
                print(report.line(), file=sys.stderr)
                return 1 if report.error or report.refused else 0
            if report.error or report.refused:
                print(report.line(), file=sys.stderr)
            if stop.wait(interval):
                return 0
    finally:
        if sink is not None:
            sink.close()
        os.close(lock)


def nudge(config: Config, *, force: bool = False) -> bool:
    """Start a detached `bastion ship --once` (never waited for), unless no sink is configured, a ship is
    running (it holds the lock) or — unless forced (a session end with leftovers) — one was started less
    than NUDGE_EVERY_S ago. True when one started."""
    if config.recording.sink is None:
        return False
    spool = Spool.of(config)
    try:
        spool.ensure()
        lock = _flock_path(ship_lock_path(config))
        if lock is None:
            return False
        os.close(lock)
        stamp = spool.ship_dir / "nudge"
        try:
            if not force and time.time() - stamp.stat().st_mtime < NUDGE_EVERY_S:
                return False
        except FileNotFoundError:
            pass
        stamp.touch()
    except OSError:
        return False
    argv = [sys.executable, "-m", "bastion", "ship", "--once", "--config", str(config.path)]
    try:
        pid = os.fork()
    except OSError:
        return False
    if pid == 0:  # pragma: no cover - the child only forks again and execs
        try:
            os.setsid()
            if os.fork() == 0:
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
                os.execv(argv[0], argv)  # noqa: S606 - our own interpreter, fixed argv
        finally:
            os._exit(0)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    return True
