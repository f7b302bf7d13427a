"""Channel casts: a pane records the stream of its target as a cast of its own, so a target session replays on
its own (the session cast shows it only through the TUI's screen).

`Channels` owns a session's channel casts; a pane asks it for one (`open`) and writes text, markers and
resizes. The SQL pane's transcript is the first user: `SqlTranscripts` is the Session's `transcript`
callback, which the SQL pipeline calls once per statement outcome; it writes the statement, the verdict and
the MASKED result (the rows the pipeline already masked — the first batch, as on screen) as a plain table.
The SSH pane will record its target's output at the pane's size the same way.

A channel cast that cannot be written stops, and the gap is audited; the session cast is what decides
whether the session itself may go on (the recorder applies the failure policy there).
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bastion.recording.cast import Cast, session_header
from bastion.recording.spool import SpoolError

if TYPE_CHECKING:
    from bastion.session import Session
    from bastion.sql_pipeline import SqlPipeline, StatementResult

TRANSCRIPT_WIDTH, TRANSCRIPT_HEIGHT = 120, 40
_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class ChannelCast:
    """One target stream as a cast. Text is written as a terminal would show it (\\n → \\r\\n)."""

    def __init__(self, cast: Cast, on_error: Callable[[ChannelCast, SpoolError], None]) -> None:
        self.cast = cast
        self.name = cast.path.name
        self.on_error = on_error
        self.broken = False
        self.lock = threading.Lock()

    def _guard(self, action: Callable[[], None]) -> None:
        with self.lock:
            if self.broken:
                return
            try:
                action()
            except SpoolError as exc:
                self.broken = True
                self.on_error(self, exc)

    def write(self, text: str) -> None:
        data = text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8", "backslashreplace")
        self._guard(lambda: self.cast.output(data))

    def output(self, data: bytes) -> None:
        """Raw target output (already terminal-shaped)."""
        self._guard(lambda: self.cast.output(data))

    def marker(self, label: str) -> None:
        self._guard(lambda: self.cast.marker(label))

    def resize(self, width: int, height: int) -> None:
        self._guard(lambda: self.cast.resize(width, height))

    def close(self) -> None:
        with self.lock:
            self.cast.close()


class Channels:
    """The channel casts of one session, in its spool directory."""

    def __init__(self, session: Session, directory: Path) -> None:
        self.session = session
        self.directory = directory
        self.serial = 0
        self.open_casts: list[ChannelCast] = []
        self.lock = threading.Lock()

    def open(self, kind: str, target: str, *, width: int, height: int) -> ChannelCast | None:
        """A new channel cast `<kind>-<n>-<target>.cast`; None when the spool refuses it (gap audited)."""
        with self.lock:
            self.serial += 1
            name = f"{kind}-{self.serial}-{_NAME.sub('_', target)[:40]}.cast"
        metadata = session_header(self.session, f"{kind} {target}")
        try:
            cast = Cast(self.directory / name, metadata, width, height)
        except (OSError, SpoolError) as exc:
            self._gap(name, str(exc))
            return None
        channel = ChannelCast(cast, lambda ch, exc: self._gap(ch.name, str(exc)))
        with self.lock:
            self.open_casts.append(channel)
        return channel

    def _gap(self, name: str, reason: str) -> None:
        # the audit log reports its own failures; a gap must never end the pane
        with contextlib.suppress(Exception):
            self.session.event("recording_gap", {"cast": name, "reason": reason[:200]})

    def close(self) -> None:
        with self.lock:
            casts, self.open_casts = self.open_casts, []
        for channel in casts:
            channel.close()


class SqlTranscripts:
    """The Session's `transcript` callback: one channel cast per SQL pipeline (pane or headless exec)."""

    def __init__(self, channels: Channels) -> None:
        self.channels = channels
        self.casts: dict[int, ChannelCast | None] = {}

    def __call__(self, pipeline: SqlPipeline, result: StatementResult) -> None:
        try:
            self.record(pipeline, result)
        except Exception as exc:  # the transcript must never break the statement it records
            self.channels._gap(f"sql {pipeline.name}", f"transcript failed ({type(exc).__name__})")

    def record(self, pipeline: SqlPipeline, result: StatementResult) -> None:
        key = id(pipeline)
        if key not in self.casts:
            self.casts[key] = self.channels.open(
                "sql", pipeline.name, width=TRANSCRIPT_WIDTH, height=TRANSCRIPT_HEIGHT
            )
        channel = self.casts[key]
        if channel is None:
            return
        channel.marker(f"audit:{result.verdict_seq} sql_statement {result.decision.verdict.value}")
        channel.write(format_result(result))
        if result.outcome_seq is not None:
            channel.marker(f"audit:{result.outcome_seq} sql_outcome {result.status}")


def format_result(result: StatementResult) -> str:
    """Statement, verdict, masked table and status as plain text (cells made printable, cut like `exec`)."""
    from bastion.headless import text_cell

    decision = result.decision
    lines = [f"sql> {_one_line(result.text)}"]
    reasons = "; ".join(decision.reasons)
    lines.append(f"-- verdict: {decision.verdict.value}" + (f" ({_one_line(reasons)})" if reasons else ""))
    if result.columns:
        header = [text_cell(name) for name in result.columns]
        rows = [[text_cell(value) for value in row] for row in result.rows]
        widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
        lines.append(_row(header, widths))
        lines.append(_row(["-" * w for w in widths], widths))
        lines.extend(_row(r, widths) for r in rows)
    status = [result.status]
    if result.columns:
        total = result.rowcount if result.rowcount >= 0 else len(result.rows)
        status.append(f"{total} row{'s' if total != 1 else ''}")
        if total > len(result.rows):
            status.append(f"first {len(result.rows)} in this transcript")
    elif result.command_status:
        status.append(result.command_status)
    masked = [d for d in result.masking if d.masked]
    if masked:
        status.append("masked: " + ", ".join(f"{text_cell(d.name)} ({d.style or 'full'})" for d in masked))
    if result.error:
        status.append(f"error: {_one_line(result.error)}")
    lines.append("-- " + " | ".join(status))
    return "\n".join(lines) + "\n\n"


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)).rstrip()


def _one_line(text: str, limit: int = 2000) -> str:
    flat = " ".join(text.split())
    flat = "".join(ch if ch.isprintable() else "?" for ch in flat)
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
