"""The recorder: `bastion login` relays the TUI through a pty of its own and records everything it shows.

Process layout (one SSH login)
    parent  `bastion login` after the session started: small (no textual), it owns the session's spool
            directory (flock), the session cast and the live shipper thread. It relays user input → child
            and child output → cast → user: output is RECORDED BEFORE IT IS SHOWN, so under a strict policy a
            failed write shows nothing unrecorded. SIGWINCH resizes the child's pty and records "r". It puts
            the user's terminal in raw mode and ignores SIGINT/SIGQUIT/SIGTSTP: Ctrl+C, Ctrl+\\ and Ctrl+Z
            are bytes for the TUI, never signals for the recorder, and no key pauses recording.
    child   forked after the session started and before textual is imported, on the new pty as its
            controlling terminal; it runs the TUI with the same Session (the store reconnects by itself
            after fork, the audit log re-opens its files). Its Session.event hook sends `{seq, type,
            label}` of every audit event up a pipe; the parent turns labelled ones into "m" markers and
            keeps the first/last seq for the manifest. Down another pipe the parent sends the recording
            status for the header and, when the recording can no longer be kept, a request to end.
    Headless runs (SSH_ORIGINAL_COMMAND) need no pty: their stdout/stderr are tee'd into the cast
    in-process, again recorded before written.

End of a session: the parent waits for the child, ends the session as abnormal if the child could not
(killed), seals the recording (manifest.py), ships what is left within FINAL_SHIP_S and nudges a detached
`bastion ship --once` for anything still pending. A parent killed with -9 leaves an unlocked, unsealed
directory and a "running" session whose pid is gone: `bastion ship` (nudged by the next login) ends and
seals it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import select
import signal
import struct
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from bastion.audit.signing import load_private_key
from bastion.recording.cast import Cast, marker_label, session_header
from bastion.recording.channel import Channels, SqlTranscripts
from bastion.recording.manifest import SealInfo, seal
from bastion.recording.policy import Plan, plan_for, preflight, replan, space_problem
from bastion.recording.ship import LiveShipper, Shipper, nudge, sealed_payload
from bastion.recording.sinks import open_sink
from bastion.recording.spool import Spool, SpoolError
from bastion.session import Session, SessionError

FINAL_SHIP_S = 5.0
GATHER = 256 * 1024  # bytes of child output relayed (and recorded as one "o" event) at most at once
HOUSEKEEPING_S = 1.0
END_GRACE_S = 5.0
KILL_GRACE_S = 3.0
RECORDING = "recording"
# Written after the user's terminal settings are back (the kernel turns \n into \r\n again).
RESET = "\x1b[0m\x1b[?25h\x1b[?1049l\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?2004l\n"


class RecordingRefused(SessionError):
    """The session may not start: its recording cannot be kept (strict). Already audited."""


# ---------------------------------------------------------------- one session's recording


class Recording:
    """The owner's side of one session's recording: directory lock, session cast, seqs, markers, the live
    shipper, the failure policy as the session runs, and the seal at the end."""

    def __init__(self, session: Session, plan: Plan, spool: Spool, *, width: int, height: int) -> None:
        self.session = session
        self.config = session.config
        self.plan = plan
        self.spool = spool
        self.directory, self.lock_fd = spool.create_session_dir(session.id)
        metadata = session_header(session)
        try:
            self.cast = Cast(
                self.directory / "session.cast", metadata, width, height, record_input=plan.record_input
            )
        except OSError as exc:
            os.close(self.lock_fd)
            raise SpoolError(f"cannot write the session cast: {exc.strerror}") from None
        self.lock = threading.Lock()
        self.first_seq: int | None = session.first_seq
        self.last_seq: int | None = session.first_seq
        self.status = RECORDING
        self.gap: str | None = None  # best_effort: why the cast stopped
        self.end_reason: str | None = None  # the session must end (strict failure, space under half)
        self.fail_closed = False  # strict failure: show nothing more
        self.low_space = False
        sink = open_sink(self.config.recording.sink)
        self.shipper = Shipper(self.config, session.store, sink) if sink is not None else None
        self.live = LiveShipper(self.shipper, self.directory, self._on_health)
        self.sink_down = False
        self.sealed = False

    # -- audit seqs and markers

    def note(self, seq: int, type_: str, label: str | None) -> None:
        """An audit event of this session (from the child's pipe or in-process)."""
        with self.lock:
            if self.first_seq is None or seq < self.first_seq:
                self.first_seq = seq
            if self.last_seq is None or seq > self.last_seq:
                self.last_seq = seq
        if label and not self.sealed:
            self.write(lambda: self.cast.marker(label))

    def on_event(self, record: dict[str, Any]) -> None:
        """Session.on_event in the owner's process."""
        with contextlib.suppress(Exception):  # a marker never breaks the event already recorded
            self.note(int(record["seq"]), str(record["type"]), marker_label(record))

    # -- writes and the failure policy

    def write(self, action: Callable[[], None]) -> bool:
        """Run one cast write; False when the cast is (now) broken — the failure policy is applied."""
        if self.gap is not None or self.fail_closed:
            return False
        try:
            action()
            return True
        except SpoolError as exc:
            self._cast_failed(str(exc))
            return False

    def output(self, data: bytes | memoryview) -> bool:
        return self.write(lambda: self.cast.output(data))

    def _cast_failed(self, reason: str) -> None:
        if self.plan.strict:
            self.fail_closed = True
            self.end_reason = f"recording failed ({reason}): session ended — strict recording policy"
            self.status = "⚠ recording failed: session ending"
            self._event("recording_failed", {"cast": "session.cast", "reason": reason[:200]})
        else:
            self.gap = reason
            self.status = f"⚠ NOT RECORDED: {reason[:60]}"
            self._event(
                "recording_gap",
                {"cast": "session.cast", "reason": reason[:200], "recorded_bytes": self.cast.file.size},
            )

    def _event(self, type_: str, payload: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):
            self.session.event(type_, payload)

    def _on_health(self, ok: bool, error: str) -> None:
        """From the live shipper, on transitions: the header warns, the audit log records it."""
        if ok and self.sink_down:
            self.sink_down = False
            self._event("recording_restored", {"kind": "sink"})
        elif not ok and not self.sink_down:
            self.sink_down = True
            self._event("recording_degraded", {"kind": "sink_unreachable", "error": error[:200]})
        self._refresh_status()

    def _refresh_status(self) -> None:
        if self.fail_closed or self.gap is not None:
            return
        if self.sink_down:
            self.status = "⚠ recording to the local spool only: sink unreachable"
        elif self.low_space:
            self.status = "⚠ recording: spool space low"
        else:
            self.status = RECORDING

    def recheck(self) -> None:
        """The plan turned strict once the roles were known (OIDC): strict's preflight, run late; a
        refusal ends the session with its one-line reason."""
        refusal, _ = preflight(self.config, self.session.store, self.plan, self.spool)
        if refusal is None or self.end_reason is not None:
            return
        self.end_reason = refusal
        self.status = "⚠ recording unavailable: session ending"
        self._event("recording_failed", {"reason": refusal[:200], "stage": "roles known after login"})

    def housekeeping(self) -> None:
        """Free space, every HOUSEKEEPING_S: under the floor warns (audited), under half ends the session."""
        problem = space_problem(self.spool, self.plan.floor)
        if problem is None:
            if self.low_space:
                self.low_space = False
                self._event("recording_restored", {"kind": "space"})
                self._refresh_status()
            return
        reason, half = problem
        if not self.low_space:
            self.low_space = True
            self._event("recording_degraded", {"kind": "low_space", "reason": reason})
            self._refresh_status()
        if half and self.end_reason is None:
            self.end_reason = f"{reason}: session ended to keep the spool from filling up"

    # -- start and end

    def started(self, warnings: list[str]) -> None:
        sink = self.config.recording.sink
        self.session.event(
            "recording_start",
            {
                "directory": f"sessions/{self.session.id}",
                "cast": "session.cast",
                "width": self.cast.width,
                "height": self.cast.height,
                "policy": self.plan.policy,
                "input": self.plan.record_input,
                "sink": sink.type if sink else None,
                **({"warnings": warnings} if warnings else {}),
            },
        )
        for warning in warnings:
            self._event("recording_degraded", {"kind": "preflight", "reason": warning[:200]})
        if warnings:
            self.status = f"⚠ recording: {warnings[0][:60]}"
        self.live.start()

    def seal(self, status: str) -> None:
        """Close the cast and seal the directory; its manifest hash goes into the audit chain."""
        if self.sealed:
            return
        self.sealed = True
        self.cast.close()
        with self.lock:
            first, last = self.first_seq, self.last_seq
        info = SealInfo(
            bastion=self.config.bastion.name,
            session=self.session.id,
            user=self.session.user.name,
            key_fingerprint=self.session.key_fingerprint,
            kind=self.session.kind,
            status=status,
            sealed_by="login",
            audit_log=self.config.audit.log.name,
            first_seq=first,
            last_seq=last,
            markers=self.cast.markers + _channel_markers(self.directory),
        )
        key = load_private_key(self.config.audit.signing_key)
        data = seal(self.directory, info, key, {"session.cast": self.cast.events})
        self._event("recording_sealed", sealed_payload(data, "login"))

    def finish(self, status: str, *, inline: bool = True) -> bool:
        """Seal, ship what is left (within FINAL_SHIP_S), apply retention; nudge `bastion ship` for the rest.
        True when the sink has everything."""
        self.live.stop.set()
        try:
            self.seal(status)
        except OSError as exc:  # sealing failed: `bastion ship` seals it when this process is gone
            self._event("recording_gap", {"cast": "manifest.json", "reason": f"cannot seal: {exc.strerror}"})
        shipper = self.shipper
        if shipper is None or not self.sealed:
            self.live.finish(lambda: None, 0.5)
            return shipper is None

        def final() -> None:
            with shipper.lock:
                shipper.ship_sealed(self.directory)
                shipper.ship_audit()
            shipper.remove_if_due(self.directory)

        done = inline and self.live.finish(final, FINAL_SHIP_S)
        if not inline:
            self.live.finish(lambda: None, 0.5)
        if done:
            with contextlib.suppress(Exception):
                shipper.sink.close()  # type: ignore[union-attr]
        else:
            nudge(self.config, force=True)
        return done


def _channel_markers(directory: Path) -> int:
    from bastion.recording.cast import parse_marker
    from bastion.recording.ship import _count_markers

    return sum(_count_markers(p, parse_marker) for p in directory.glob("*.cast") if p.name != "session.cast")


def _start_recording(session: Session, plan: Plan, width: int, height: int) -> tuple[Recording | None, str]:
    """(recording, why not) — None with a reason when the spool refused (policy decided by the caller)."""
    try:
        return Recording(session, plan, Spool.of(session.config), width=width, height=height), ""
    except (SpoolError, OSError) as exc:
        return None, str(exc)


# ---------------------------------------------------------------- the child's link to the recorder


class RecordingLink:
    """In the TUI child (`session.recording`): audit events go up to the recorder, its status and end
    requests come down. `poll()` is what the TUI calls about once a second: (header text, end reason or
    None). `channels` is where a pane opens a channel cast for its target stream
    (`session.recording.channels.open("ssh", name, width=…, height=…)`)."""

    def __init__(self, events_fd: int, control_fd: int, status: str, channels: Channels | None) -> None:
        self.events_fd = events_fd
        self.control_fd = control_fd
        self.status = status
        self.channels = channels
        self.end: str | None = None
        self.buffer = b""

    def on_event(self, record: dict[str, Any]) -> None:
        note: dict[str, Any] = {"seq": record["seq"], "type": record["type"], "label": marker_label(record)}
        if record["type"] == "session_start":
            note["roles"] = record["payload"].get("roles", [])
        with contextlib.suppress(OSError):
            _write_all(self.events_fd, json.dumps(note).encode() + b"\n")

    def poll(self) -> tuple[str, str | None]:
        while True:
            try:
                chunk = os.read(self.control_fd, 4096)
            except BlockingIOError:
                break
            except OSError:
                break
            if not chunk:
                break
            self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            with contextlib.suppress(ValueError, AttributeError):
                message = json.loads(line)
                if isinstance(message.get("status"), str):
                    self.status = message["status"][:120]
                if isinstance(message.get("end"), str):
                    self.end = message["end"][:300]
        return self.status, self.end


@dataclass
class StaticLink:
    """A session that runs without a recorder (best_effort when the spool refused): the header says so."""

    status: str
    end: str | None = None  # set when the real roles (OIDC) say strict

    def poll(self) -> tuple[str, str | None]:
        return self.status, self.end


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# ---------------------------------------------------------------- interactive: the pty relay


def _winsize(fd: int) -> tuple[int, int]:
    """(columns, rows) of a terminal; 80x24 when it will not say."""
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return 80, 24
    return (cols or 80), (rows or 24)


def _set_winsize(fd: int, cols: int, rows: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def run_interactive(session: Session, frontend: Callable[[Session], int]) -> int:
    """`bastion login` for an interactive session: preflight, start, fork the TUI on a recorded pty."""
    config, store = session.config, session.store
    plan = plan_for(config, session.roles())
    refusal, warnings = preflight(config, store, plan, Spool.of(config))
    if refusal is not None:
        try:
            session.refuse(refusal, {"kind": "tui", "recording": "refused"})
        finally:
            store.close()
        _tell(refusal)
        return 1
    if config.oidc is None:
        session.start()  # before the fork: nothing runs unrecorded, and the session's pid is the recorder's
    cols, rows = _winsize(0)
    recording, why = _start_recording(session, plan, cols, rows)
    if recording is None:
        reason = f"recording unavailable: {why}"
        if plan.strict:
            if session.started_at:
                session.event("recording_failed", {"reason": why[:200]})
                session.end("refused", reason)
            else:
                session.refuse(reason, {"kind": "tui", "recording": "refused"})
            store.close()
            _tell(reason)
            return 1
        session.event("recording_gap", {"cast": "session.cast", "reason": why[:200]})
        link = StaticLink(f"⚠ NOT RECORDED: {why[:60]}")
        session.recording = link
        session.on_event = lambda record: _unrecorded_replan(session, plan, link, reason, record)
        return frontend(session)
    session.on_event = recording.on_event
    try:
        recording.started(warnings)
        return _Relay(session, recording, frontend).run()
    except Exception as exc:  # no pty, no fork, a bug: the session still ends, recorded as such
        reason = f"the recorder could not run ({type(exc).__name__})"
        if session.started_at and not session.ended:
            with contextlib.suppress(Exception):
                session.end("abnormal", reason)
        with contextlib.suppress(Exception):
            recording.finish("abnormal")
        _tell(reason)
        return 1


def _unrecorded_replan(
    session: Session, plan: Plan, link: StaticLink, reason: str, record: dict[str, Any]
) -> None:
    """A session running unrecorded (best_effort, spool refused) whose real roles (OIDC) turn out strict:
    it may not go on; the frontend ends it with the reason."""
    roles = (record.get("payload") or {}).get("roles")
    if record.get("type") != "session_start" or not isinstance(roles, list) or link.end is not None:
        return
    if replan(session.config, plan, roles).strict:
        link.end = reason
        with contextlib.suppress(Exception):
            session.event("recording_failed", {"reason": reason[:200], "stage": "roles known after login"})


def _tell(message: str) -> None:
    with contextlib.suppress(OSError):
        print(f"bastion: {message}", file=sys.stderr, flush=True)


class _Relay:
    """The parent's loop: pty master ↔ user's terminal, notes from the child, signals, housekeeping."""

    def __init__(self, session: Session, recording: Recording, frontend: Callable[[Session], int]) -> None:
        self.session = session
        self.recording = recording
        self.frontend = frontend
        self.pid = 0
        self.master = -1
        self.hung_up = False
        self.child_gone = False
        self.winch = False
        self.sent_status = ""
        self.end_sent_at: float | None = None
        self.term_sent_at: float | None = None
        self.notes = b""
        self.out_view = memoryview(bytearray(GATHER))
        self.pending_in = b""
        self.killed_by: int | None = None

    # -- the child

    def _child(self, slave: int, events_w: int, control_r: int, closers: list[int]) -> None:
        code = 1
        try:
            for fd in closers:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.recording.cast.file.forget()
            os.login_tty(slave)
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGQUIT, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGWINCH):
                signal.signal(signum, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            for signum in (signal.SIGHUP, signal.SIGTERM):
                signal.signal(signum, signal.SIG_DFL)
            os.set_blocking(control_r, False)
            session = self.session
            channels = Channels(session, self.recording.directory)
            link = RecordingLink(events_w, control_r, self.recording.status, channels)
            session.on_event = link.on_event
            session.recording = link
            session.transcript = SqlTranscripts(channels)
            try:
                code = self.frontend(session)
            finally:
                channels.close()
        except BaseException:  # the child must never return into the parent's code
            code = 1
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def run(self) -> int:
        session, recording = self.session, self.recording
        stdin_fd, stdout_fd = 0, 1
        try:
            saved = termios.tcgetattr(stdin_fd)
        except termios.error:
            saved = None
        cols, rows = recording.cast.width, recording.cast.height
        master, slave = os.openpty()
        if saved is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(slave, termios.TCSANOW, saved)
        _set_winsize(slave, cols, rows)
        events_r, events_w = os.pipe()
        control_r, control_w = os.pipe()
        wake_r, wake_w = os.pipe()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, reported through its exit code
            self._child(slave, events_w, control_r, [master, events_r, control_w, wake_r, wake_w])
        self.pid, self.master = pid, master
        for fd in (slave, events_w, control_r):
            os.close(fd)
        for fd in (control_w, wake_r, wake_w, master):
            os.set_blocking(fd, False)
        previous = self._signals(wake_w)
        if saved is not None:
            with contextlib.suppress(termios.error):
                tty.setraw(stdin_fd, termios.TCSANOW)
        try:
            self._loop(stdin_fd, stdout_fd, events_r, control_w, wake_r)
        except Exception as exc:  # a recorder bug: end the child, still reap, settle and seal below
            self.recording.end_reason = f"the recorder failed ({type(exc).__name__}): session ended"
            self.hung_up = True
            self._signal_child(signal.SIGHUP)
        finally:
            if saved is not None and not self.hung_up:
                with contextlib.suppress(termios.error, OSError):
                    termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
            signal.set_wakeup_fd(-1)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for fd in (master, events_r, control_w, wake_r, wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
        code = self._reap()
        status = self._settle_session(code)
        if self.recording.fail_closed and self.recording.end_reason and not self.hung_up:
            with contextlib.suppress(OSError):
                _write_all(stdout_fd, (RESET + f"bastion: {self.recording.end_reason}\n").encode())
        recording.finish(status)
        with contextlib.suppress(Exception):
            session.store.close()
        return code if not self.recording.fail_closed else max(code, 1)

    def _signals(self, wake_w: int) -> dict[int, Any]:
        previous: dict[int, Any] = {}

        def winch(_signum: int, _frame: Any) -> None:
            self.winch = True

        def hangup(_signum: int, _frame: Any) -> None:
            self.hung_up = True

        for signum, handler in (
            (signal.SIGINT, signal.SIG_IGN),
            (signal.SIGQUIT, signal.SIG_IGN),
            (signal.SIGTSTP, signal.SIG_IGN),
            (signal.SIGTTIN, signal.SIG_IGN),
            (signal.SIGTTOU, signal.SIG_IGN),
            (signal.SIGWINCH, winch),
            (signal.SIGHUP, hangup),
            (signal.SIGTERM, hangup),
        ):
            previous[signum] = signal.signal(signum, handler)
        signal.set_wakeup_fd(wake_w)
        return previous

    # -- the loop

    def _loop(self, stdin_fd: int, stdout_fd: int, events_r: int, control_w: int, wake_r: int) -> None:
        recording = self.recording
        next_housekeeping = time.monotonic() + HOUSEKEEPING_S
        events_open = True
        hangup_handled = False
        while True:
            if self.hung_up and not hangup_handled:
                hangup_handled = True
                self._signal_child(signal.SIGHUP)
                self.term_sent_at = time.monotonic()
            readers = [wake_r]
            if not self.child_gone:
                readers.append(self.master)
            if events_open:
                readers.append(events_r)
            if not self.hung_up and len(self.pending_in) < 65536:
                readers.append(stdin_fd)
            writers = [self.master] if self.pending_in and not self.child_gone else []
            if self.child_gone and not events_open:
                return
            try:
                readable, writable, _ = select.select(readers, writers, [], 0.25)
            except InterruptedError:
                continue
            if wake_r in readable:
                with contextlib.suppress(OSError):
                    os.read(wake_r, 4096)
            if self.winch:
                self.winch = False
                self._resize(stdin_fd)
            if self.master in readable:
                self._from_child(stdout_fd)
            if stdin_fd in readable:
                self._from_user(stdin_fd)
            if self.master in writable:
                self._to_child()
            if events_open and events_r in readable:
                events_open = self._notes(events_r)
            now = time.monotonic()
            if now >= next_housekeeping:
                next_housekeeping = now + HOUSEKEEPING_S
                recording.housekeeping()
            self._push_status(control_w)
            self._escalate(now)
            if self.child_gone and events_open and self.term_sent_at is None:
                self.term_sent_at = now  # the pty closed: give the child time to finish, then insist

    def _from_child(self, stdout_fd: int) -> None:
        # A pty hands out at most 4 KiB per read; what is already there is gathered (never waited for) so a
        # burst costs one cast event and one write to the user per GATHER bytes, not per 4 KiB. The reads go
        # straight into one reused buffer: no allocation, resize or join per read.
        view = self.out_view
        size = 0
        while size < GATHER:
            try:
                n = os.readv(self.master, [view[size:]])
            except BlockingIOError:
                break
            except OSError:  # EIO: every holder of the pty's slave side is gone
                self.child_gone = True
                break
            if not n:
                self.child_gone = True
                break
            size += n
        if not size:
            return
        data = view[:size]
        recorded = self.recording.output(data)
        if self.hung_up or (not recorded and self.recording.fail_closed):
            return  # fail closed: what could not be recorded is not shown
        try:
            _write_blocking(stdout_fd, data)
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.EPIPE, errno.EBADF):
                self.hung_up = True

    def _from_user(self, stdin_fd: int) -> None:
        try:
            data = os.read(stdin_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.hung_up = True  # the client went away
            return
        if self.recording.fail_closed:
            return
        self.pending_in += data
        self.recording.write(lambda: self.recording.cast.input(data))

    def _to_child(self) -> None:
        try:
            written = os.write(self.master, self.pending_in)
        except BlockingIOError:
            return
        except OSError:
            self.pending_in = b""
            return
        self.pending_in = self.pending_in[written:]

    def _resize(self, stdin_fd: int) -> None:
        cols, rows = _winsize(stdin_fd)
        _set_winsize(self.master, cols, rows)  # the kernel sends SIGWINCH to the child's foreground group
        self.recording.write(lambda: self.recording.cast.resize(cols, rows))

    def _notes(self, events_r: int) -> bool:
        """Read `{seq, type, label}` notes from the child; False at EOF (the child has exited)."""
        try:
            chunk = os.read(events_r, 65536)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not chunk:
            return False
        self.notes += chunk
        *lines, self.notes = self.notes.split(b"\n")
        for line in lines:
            try:
                note = json.loads(line)
                seq, type_ = int(note["seq"]), str(note["type"])[:64]
                label = note.get("label")
            except (ValueError, KeyError, TypeError):
                continue
            self.recording.note(seq, type_, label[:200] if isinstance(label, str) else None)
            if type_ == "session_start" and isinstance(note.get("roles"), list):
                was_strict = self.recording.plan.strict
                self.recording.plan = replan(self.session.config, self.recording.plan, note["roles"])
                if self.recording.plan.strict and not was_strict:
                    self.recording.recheck()
        return True

    def _push_status(self, control_w: int) -> None:
        recording = self.recording
        messages = []
        if recording.status != self.sent_status:
            self.sent_status = recording.status
            messages.append({"status": recording.status})
        if recording.end_reason is not None and self.end_sent_at is None:
            self.end_sent_at = time.monotonic()
            messages.append({"end": recording.end_reason})
        for message in messages:
            with contextlib.suppress(OSError):
                _write_all(control_w, json.dumps(message).encode() + b"\n")

    def _escalate(self, now: float) -> None:
        """A child that does not end when asked gets SIGTERM, then SIGKILL."""
        asked = self.term_sent_at if self.term_sent_at is not None else self.end_sent_at
        if asked is None:
            return
        if now - asked > END_GRACE_S + KILL_GRACE_S:
            self._signal_child(signal.SIGKILL)
        elif now - asked > END_GRACE_S and self.term_sent_at is None:
            self._signal_child(signal.SIGTERM)
            self.term_sent_at = now

    def _signal_child(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    # -- after the child

    def _reap(self) -> int:
        deadline = time.monotonic() + END_GRACE_S + KILL_GRACE_S
        while True:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                self._signal_child(signal.SIGKILL)
                _, status = os.waitpid(self.pid, 0)
                break
            time.sleep(0.02)
        if os.WIFEXITED(status):
            return os.WEXITSTATUS(status)
        self.killed_by = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        return 1

    def _settle_session(self, code: int) -> str:
        """The session's final status; ended here (abnormal) when the child could not end it itself."""
        session, store = self.session, self.session.store
        try:
            record = store.get_session(session.id)
        except Exception:
            record = None
        if record is not None and record.status == "running":
            killed = self.killed_by
            if self.recording.end_reason:
                reason = self.recording.end_reason
            elif killed:
                reason = f"the TUI was killed by {signal.Signals(killed).name}"
            else:
                reason = f"the TUI exited ({code}) without ending the session"
            session.started_at = session.started_at or record.started_at
            session.ended = False
            with contextlib.suppress(Exception):
                session.end("abnormal", reason)
            return "abnormal"
        if record is None:
            return "refused"
        return record.status


def _write_blocking(fd: int, data: bytes | memoryview) -> None:
    """All of data to a descriptor that may be non-blocking (the user's terminal as sshd left it)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [], 1.0)


# ---------------------------------------------------------------- headless


class _TeeText(io.TextIOBase):
    """stdout/stderr of a headless run: each write is recorded (as a terminal shows it), then written."""

    def __init__(self, real: IO[str], recording: Recording) -> None:
        self.real = real
        self.recording = recording

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.real, "encoding", "utf-8")

    def writable(self) -> bool:
        return True

    def reconfigure(self, **kwargs: Any) -> None:
        with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):
            self.real.reconfigure(**kwargs)  # type: ignore[attr-defined]

    def write(self, text: str) -> int:
        data = text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8", "backslashreplace")
        recorded = self.recording.output(data)
        if not recorded and self.recording.fail_closed:
            raise SessionError(self.recording.end_reason or "recording failed")
        try:
            return self.real.write(text)
        except BrokenPipeError:
            if self.real is sys.stdout:  # the reader went away: keep the exit-time flush quiet
                with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise

    def flush(self) -> None:
        self.real.flush()


class HeadlessRecording:
    """A headless run recorded in-process. `preflight` before the session starts (a refusal is a refused
    session, audited), `attach` right after it started, `streams` for `headless.run`, `finish` after the
    session ended."""

    def __init__(self, session: Session, plan: Plan, warnings: list[str]) -> None:
        self.session = session
        self.plan = plan
        self.warnings = warnings
        self.recording: Recording | None = None
        self.channels: Channels | None = None

    @classmethod
    def preflight(cls, session: Session) -> HeadlessRecording:
        """Raises RecordingRefused (already audited) with the one-line reason."""
        config = session.config
        plan = plan_for(config, session.roles())
        refusal, warnings = preflight(config, session.store, plan, Spool.of(config))
        if refusal is not None:
            session.refuse(refusal, {"kind": "headless", "recording": "refused"})
            raise RecordingRefused(refusal)
        return cls(session, plan, warnings)

    def attach(self) -> None:
        """Start the cast of a session that has just started; SessionError when strict cannot record."""
        session = self.session
        cols, rows = _winsize(1) if os.isatty(1) else (80, 24)
        recording, why = _start_recording(session, self.plan, cols, rows)
        if recording is None:
            if self.plan.strict:
                session.event("recording_failed", {"reason": why[:200]})
                raise SessionError(f"recording unavailable: {why}")
            session.event("recording_gap", {"cast": "session.cast", "reason": why[:200]})
            return
        session.on_event = recording.on_event
        recording.started(self.warnings)
        self.recording = recording
        self.channels = Channels(session, recording.directory)
        session.transcript = SqlTranscripts(self.channels)

    def streams(self, out: IO[str], err: IO[str]) -> tuple[IO[str], IO[str]]:
        if self.recording is None:
            return out, err
        return _TeeText(out, self.recording), _TeeText(err, self.recording)  # type: ignore[return-value]

    def finish(self, status: str) -> None:
        """Seal and ship. A short run against an SFTP sink it never connected to leaves the shipping to
        the nudged `bastion ship` instead of paying for a connection while the user waits."""
        recording = self.recording
        if recording is None:
            return
        if self.channels is not None:
            self.channels.close()
        sink = recording.shipper.sink if recording.shipper is not None else None
        inline = sink is None or sink.kind == "dir" or recording.live.healthy is not None
        recording.finish(status, inline=inline)
