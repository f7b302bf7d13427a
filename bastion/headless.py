"""Headless commands that arrive as SSH_ORIGINAL_COMMAND: parsed strictly with shlex, never by a shell.

Each command runs inside the login's Session, so it is audited exactly like a TUI session.

The command line is hostile input. It is refused with one short line (exit 2) when it is too long, holds
bytes that are not UTF-8 (sshd passes them through; Python sees surrogate escapes, which would break the
audit log's encoding later) or a NUL, or does not parse. Messages never echo more than ~40 characters of it
and drop control characters, so an error cannot repaint the user's terminal or flood the audit log.

`exec [--json] [--max-rows N] CONNECTION -- STATEMENT` runs SQL through the same SqlPipeline as the TUI's
panes. The statement is the raw rest of the command line after the first `--` word (ssh joins its
arguments with spaces, so quotes inside the SQL must survive: shlex never sees it). Exit codes:

    0  every statement ran
    1  a statement was blocked, failed or was cancelled; or the connection is refused / unreachable
    2  usage: the command line is not understood
    3  a statement needs approval (nothing from it on was run)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import math
import os
import shlex
import sys
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TextIO

from bastion.identity.roles import access, requestable_connections, usable_connections
from bastion.session import Session

if TYPE_CHECKING:  # loaded by `exec` only: every login imports this module, and psycopg costs ~70 ms
    from bastion.sql_pipeline import StatementResult

COMMANDS: dict[str, str] = {
    "whoami": "who you are on this bastion: user, roles, key",
    "connections": "the connections you may use, and those you may request",
    "exec": "run SQL through policy and masking: exec [--json] [--max-rows N] CONNECTION -- STATEMENT",
    "request": "ask approval: request CONN --reason T -- STATEMENT | request --elevate X --for 1h --reason T",
    "approvals": "approvals [list | approve ID | deny ID | grants | revoke GRANT] [--reason TEXT] [--json]",
}

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NEEDS_APPROVAL = 0, 1, 2, 3

# sshd hands the command over in an environment variable, which Linux caps at 128 KiB per string; anything
# longer did not come through sshd. The cap keeps a caller in-process from feeding megabytes to shlex.
MAX_COMMAND_CHARS = 256 * 1024
SHOWN_CHARS = 40  # of hostile input, in any message
CELL_CHARS = 60  # text-mode cells are cut here; --json carries whole values
BATCH_ROWS = 1000  # rows fetched, masked and written at a time: memory stays flat however long the result

EXEC_USAGE = "exec [--json] [--max-rows N] CONNECTION -- STATEMENT"
EXEC_HELP = f"""\
usage: {EXEC_USAGE}

Run SQL on a PostgreSQL connection through the bastion's policy and masking, like a SQL pane.
Everything after `--` is the statement (several, separated by `;`, run in turn; the first one that is
not allowed or fails stops the script). Sensitive columns come back masked.

options:
  --json          JSON lines: {{"type": "statement"}} per statement, {{"type": "row"}} per row,
                  {{"type": "end"}} per statement (status, rows, duration_ms, error)
  --max-rows N    show at most N rows per statement; the rest is cancelled on the server

exit codes:
  0  every statement ran
  1  a statement was blocked, failed or was cancelled; or the connection was refused / unreachable
  2  the command line is not understood
  3  a statement needs approval (file it with `request CONNECTION --reason TEXT -- STATEMENT`)
"""

_RAW_TAIL = {"exec", "request"}  # commands whose words after `--` are taken verbatim from the command line


class UsageError(Exception):
    """The command line is not understood; exit 2 with the message."""


def shown(text: str, limit: int = SHOWN_CHARS) -> str:
    """Hostile text made safe to print: control and other unprintable characters (and lone surrogates
    from non-UTF-8 bytes) dropped, at most `limit` characters kept, quoted."""
    kept: list[str] = []
    for ch in text:
        if ch.isprintable():
            kept.append(ch)
            if len(kept) > limit:
                break
    body = "".join(kept[:limit])
    return f"'{body}…'" if len(kept) > limit else f"'{body}'"


def _clean_line(text: str, limit: int) -> str:
    """A message (our words plus pieces of hostile input) as one printable line of at most `limit`."""
    flat = "".join(ch if ch.isprintable() else " " for ch in text[: limit * 4])
    flat = " ".join(flat.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting: the input is hostile."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog=prog, add_help=False, allow_abbrev=False)

    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse quotes the offending words; keep the message short and printable.
        raise UsageError(_clean_line(f"{self.prog}: {message}", 76))


def command_list() -> str:
    return "\n".join(f"  {name:<12} {text}" for name, text in COMMANDS.items())


def _check_text(command_line: str) -> None:
    if len(command_line) > MAX_COMMAND_CHARS:
        raise UsageError(
            f"the command is too long ({len(command_line)} characters; at most {MAX_COMMAND_CHARS})"
        )
    if "\0" in command_line:
        raise UsageError("the command contains a NUL character")
    try:
        command_line.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError("the command is not valid UTF-8") from None


def parse(command_line: str) -> list[str]:
    """The command's words. For exec, the words up to the first `--`, then "--" and the raw statement."""
    _check_text(command_line)
    lexer = shlex.shlex(io.StringIO(command_line), posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    words: list[str] = []
    try:
        while True:
            word = lexer.get_token()
            if word is None:  # posix shlex's end of input
                break
            if word == "--" and words and words[0] in _RAW_TAIL:
                # The lexer has consumed the one whitespace character that ended "--" (or hit the end).
                position = lexer.instream.tell()
                words += ["--", command_line[position:].strip()]
                break
            words.append(word)
    except ValueError as exc:  # unbalanced quotes, a trailing backslash
        raise UsageError(f"cannot parse the command: {_clean_line(str(exc), 60)}") from None
    if not words:
        raise UsageError("empty command")
    if words[0] not in COMMANDS:
        raise UsageError(f"unknown command {shown(words[0])}; commands:\n{command_list()}")
    return words


def run(session: Session, command_line: str, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one headless command; returns the exit code. The session must be started."""
    out = out or sys.stdout
    err = err or sys.stderr
    words = parse(command_line)
    # The client picks LANG/LC_* (sshd accepts them): a non-UTF-8 locale must not turn a masked "••••"
    # into an encoding traceback.
    with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):
        out.reconfigure(errors="backslashreplace")  # type: ignore[attr-defined]
    handler: Callable[[Session, list[str], TextIO, TextIO], int] = _HANDLERS[words[0]]
    session.event("headless_command", {"command": words[0], "argv": words[1:]})
    return handler(session, words[1:], out, err)


def _whoami(session: Session, args: list[str], out: TextIO, err: TextIO) -> int:
    parser = _Parser("whoami")
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args(args)
    roles = session.roles()
    info = {
        "user": session.user.name,
        "bastion": session.config.bastion.name,
        "key": session.key_fingerprint,
        "session": session.id,
        "roles": list(roles.roles),
        "elevated": list(roles.elevated),
        "groups": list(session.groups if session.groups is not None else session.user.groups),
    }
    if opts.json:
        out.write(json.dumps(info) + "\n")
    else:
        for key, value in info.items():
            shown_value = ", ".join(value) if isinstance(value, list) else value
            out.write(f"{key:<9}{shown_value}\n")
    return 0


def _connections(session: Session, args: list[str], out: TextIO, err: TextIO) -> int:
    parser = _Parser("connections")
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args(args)
    roles = session.roles()
    config = session.config
    usable = usable_connections(config, roles)
    requestable = requestable_connections(config, roles)
    rows = []
    for name in sorted(set(usable) | requestable):
        conn = config.connections[name]
        rows.append(
            {
                "name": name,
                "type": conn.type,
                "access": "yes" if name in usable else "request",
                "policy": conn.policy,
                "description": conn.description,
            }
        )
    if opts.json:
        for row in rows:
            out.write(json.dumps(row) + "\n")
        return 0
    if not rows:
        out.write("no connections\n")
    for row in rows:
        line = f"{row['name']:<20} {row['type']:<9} {row['access']:<8} {row['policy']:<14}"
        out.write(f"{line} {row['description']}\n")
    return 0


# ---------------------------------------------------------------- exec


def positive_int(text: str) -> int:
    value = int(text)  # ValueError → argparse's "invalid value" message
    if value < 1:
        raise ValueError(text)
    return value


# Bugs and driver surprises inside the pipeline: audited and shown as one line instead of a traceback.
# (Not Exception: login turns SIGHUP/SIGTERM into an exception that must reach it.)
_INTERNAL = (
    ArithmeticError,
    LookupError,
    TypeError,
    ValueError,
    AttributeError,
    AssertionError,
    RecursionError,
)


def _exec(session: Session, args: list[str], out: TextIO, err: TextIO) -> int:
    options = args[: args.index("--")] if "--" in args else args
    if "--help" in options or "-h" in options:
        out.write(EXEC_HELP)
        return EXIT_OK
    if "--" not in args:
        raise UsageError(f"exec: put the statement after `--`: {EXEC_USAGE}")
    split = args.index("--")
    statement = args[split + 1] if split + 1 < len(args) else ""
    parser = _Parser("exec")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--max-rows", type=positive_int, metavar="N")
    parser.add_argument("connection")
    opts = parser.parse_args(args[:split])
    if not statement:
        raise UsageError(f"exec: no statement after `--`: {EXEC_USAGE}")
    name: str = opts.connection

    refusal = _refusal(session, name)
    if refusal is not None:
        session.event("headless_refused", {"command": "exec", "reason": refusal})
        err.write(f"bastion: {refusal}\n")
        return EXIT_FAILED
    if session.config.connections[name].type != "postgres":
        raise UsageError(
            f"exec: {name} is an {session.config.connections[name].type} connection; exec runs SQL"
        )

    from bastion.sql_pipeline import PipelineError, SqlPipeline
    from bastion.targets.postgres import TargetError

    try:
        pipeline = SqlPipeline(session, name)
        pipeline.open()
    except PipelineError as exc:
        reason = _clean_line(str(exc), 200)
        session.event("headless_failed", {"command": "exec", "connection": name, "reason": reason})
        err.write(f"bastion: {name}: {reason}\n")
        return EXIT_FAILED

    render: _Renderer = _JsonRenderer(out) if opts.json else _TextRenderer(out, name)
    max_rows: int | None = opts.max_rows
    first = BATCH_ROWS if max_rows is None else min(BATCH_ROWS, max_rows + 1)
    code, count = EXIT_OK, 0
    try:
        for result in pipeline.run(statement, first_rows=first):
            count += 1
            code = _emit(result, render, max_rows)
        out.flush()
    except BrokenPipeError:
        _silence_stdout(out)
        session.event("headless_failed", {"command": "exec", "connection": name, "reason": "output closed"})
        return EXIT_FAILED
    except (TargetError, PipelineError, *_INTERNAL) as exc:
        session.event(
            "headless_failed", {"command": "exec", "connection": name, "reason": type(exc).__name__}
        )
        err.write(f"bastion: exec failed: internal error ({type(exc).__name__})\n")
        return EXIT_FAILED
    finally:
        pipeline.close()
    if count == 0:
        raise UsageError("exec: the statement is empty (only whitespace, comments or semicolons)")
    return code


def _refusal(session: Session, name: str) -> str | None:
    """Why this user may not use the connection, in one line; None when they may.

    An unknown name and a connection this user can neither use nor request get the same answer, so
    `exec` does not tell connection names that `connections` would not show."""
    allowed = access(session.config, session.store, session.user.name, name, groups=session.groups)
    if allowed.allowed:
        return None
    if allowed.requestable:
        return f"{name} needs an approved elevation request"
    return f"exec: you have no connection named {shown(name)} (`connections` lists yours)"


def _emit(result: StatementResult, render: _Renderer, max_rows: int | None) -> int:
    """Stream one statement's outcome, batch by batch; its exit code."""
    render.statement(result)
    shown_rows, truncated = 0, False
    batch = result.rows
    try:
        while True:
            if max_rows is not None and shown_rows + len(batch) > max_rows:
                batch, truncated = batch[: max_rows - shown_rows], True
            if batch:
                render.rows(result, batch)
                shown_rows += len(batch)
            if truncated or not result.more_available:
                break
            limit = BATCH_ROWS if max_rows is None else min(BATCH_ROWS, max_rows - shown_rows + 1)
            batch = result.more(limit)
    finally:
        result.close()  # cancels what is left on the server; writes the outcome event
    rows = shown_rows if result.columns else max(result.rowcount, 0)
    render.end(result, rows, truncated)
    if result.status == "ok":
        return EXIT_OK
    if result.status == "needs_approval":
        return EXIT_NEEDS_APPROVAL
    return EXIT_FAILED


def _silence_stdout(out: TextIO) -> None:
    """After the reader went away, point stdout at /dev/null so the exit-time flush stays quiet."""
    if out is not sys.stdout:
        return
    with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


# ---------------------------------------------------------------- values


def json_value(value: Any) -> Any:
    """A result value as JSON: numbers, text, booleans and null as they are; JSON documents and arrays as
    JSON; everything else (numeric, timestamps, UUIDs, intervals, bytea, ranges, inet) as its text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):  # JSON has no NaN or infinities: PostgreSQL's spelling as text
        return value if math.isfinite(value) else _FLOAT_TEXT.get(str(value), str(value))
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return str(value)


_FLOAT_TEXT = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_JSON_SIMPLE = (type(None), bool, int, str)


def _row_json(index: int, row: Iterable[Any]) -> str:
    values = [v if type(v) in _JSON_SIMPLE else json_value(v) for v in row]
    return json.dumps({"type": "row", "index": index, "values": values})


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def text_cell(value: Any) -> str:
    """One value for the text table: printable (target output is hostile too) and at most CELL_CHARS."""
    if value is None:
        return "NULL"
    if isinstance(value, dict | list):
        text = json.dumps(json_value(value), ensure_ascii=False)
    elif isinstance(value, bytes | bytearray | memoryview):
        text = "\\x" + bytes(value).hex()
    else:
        text = str(value)
    text = text[: CELL_CHARS * 2]
    if not text.isprintable():
        text = "".join(
            ch
            if ch.isprintable()
            else _ESCAPES.get(ch, f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}")
            for ch in text
        )
    return text if len(text) <= CELL_CHARS else text[: CELL_CHARS - 1] + "…"


# ---------------------------------------------------------------- renderers


class _Renderer:
    def statement(self, result: StatementResult) -> None:
        raise NotImplementedError

    def rows(self, result: StatementResult, rows: list[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    def end(self, result: StatementResult, rows: int, truncated: bool) -> None:
        raise NotImplementedError


class _JsonRenderer(_Renderer):
    """JSON lines, ASCII only (nothing a terminal could interpret), one write per batch."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def statement(self, result: StatementResult) -> None:
        decision = result.decision
        record = {
            "type": "statement",
            "index": result.index,
            "statement": result.text,
            "class": decision.classification.sql_class.value,
            "verdict": decision.verdict.value,
            "reasons": list(decision.reasons),
            "warnings": list(decision.warnings),
            "columns": result.columns,
            "types": result.type_names,
            "masked": [
                {"column": d.name, "style": d.style, "reasons": d.reasons} for d in result.masking if d.masked
            ],
        }
        self.out.write(json.dumps(record) + "\n")

    def rows(self, result: StatementResult, rows: list[tuple[Any, ...]]) -> None:
        index = result.index
        self.out.write("".join(_row_json(index, row) + "\n" for row in rows))

    def end(self, result: StatementResult, rows: int, truncated: bool) -> None:
        record = {
            "type": "end",
            "index": result.index,
            "status": result.status,
            "rows": rows,
            "duration_ms": round(result.duration_s * 1000, 3),
            "error": result.error,
            "truncated": truncated,
            "command": result.command_status or None,
        }
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()


class _TextRenderer(_Renderer):
    """A compact table per statement, then one status line starting with `--` (SQL's comment marker).
    Column widths come from the rows seen so far, so a streamed result is never held to measure it."""

    def __init__(self, out: TextIO, connection: str = "CONNECTION") -> None:
        self.out = out
        self.connection = connection
        self.widths: list[int] = []
        self.header_done = False

    def statement(self, result: StatementResult) -> None:
        self.widths = [len(text_cell(name)) for name in result.columns]
        self.header_done = False
        if result.index > 0:
            self.out.write("\n")

    def rows(self, result: StatementResult, rows: list[tuple[Any, ...]]) -> None:
        cells = [[text_cell(v) for v in row] for row in rows]
        for line in cells:
            for i, cell in enumerate(line):
                if len(cell) > self.widths[i]:
                    self.widths[i] = len(cell)
        parts: list[str] = []
        if not self.header_done:
            self.header_done = True
            parts.append(self._line([text_cell(name) for name in result.columns]))
            parts.append(self._line(["-" * w for w in self.widths]))
        parts.extend(self._line(line) for line in cells)
        self.out.write("".join(parts))

    def _line(self, cells: list[str]) -> str:
        return (
            "  ".join(cell.ljust(width) for cell, width in zip(cells, self.widths, strict=False)).rstrip()
            + "\n"
        )

    def end(self, result: StatementResult, rows: int, truncated: bool) -> None:
        if result.columns and not self.header_done:  # a result with no rows still shows its columns
            self.rows(result, [])
        decision = result.decision
        reasons = "; ".join(decision.reasons)
        warnings = "".join(f"--   warning: {w}\n" for w in decision.warnings)
        if result.status == "blocked":
            self.out.write(f"-- [{result.index + 1}] blocked: {reasons}\n{warnings}")
        elif result.status == "needs_approval":
            self.out.write(f"-- [{result.index + 1}] needs approval: {reasons}\n{warnings}")
            hint = f"request {self.connection} --reason TEXT -- <the statement>"
            self.out.write(f"-- not run: ask for approval with  {hint}\n")
        else:
            self.out.write(self._status_line(result, rows, truncated))
        self.out.flush()

    @staticmethod
    def _status_line(result: StatementResult, rows: int, truncated: bool) -> str:
        took = f"{result.duration_s * 1000:.1f} ms"
        if result.status != "ok":
            return f"-- [{result.index + 1}] {result.status}: {result.error or 'no detail'} ({took})\n"
        if result.columns:
            counted = f"{rows} row{'s' if rows != 1 else ''}"
            if truncated:
                counted += " shown, more not fetched (--max-rows)"
        else:
            counted = result.command_status or "done"
        parts = [counted, took]
        masked = [d for d in result.masking if d.masked]
        if masked:
            parts.append(
                "masked: "
                + ", ".join(f"{text_cell(d.name)} ({_short_reason(d.style, d.reasons)})" for d in masked)
            )
        return f"-- [{result.index + 1}] " + " | ".join(parts) + "\n"


def _short_reason(style: str | None, reasons: list[str]) -> str:
    first = reasons[0].removeprefix("server: ") if reasons else "sensitive"
    return f"{style or 'full'}, {_clean_line(first, 48)}"


def _request(session: Session, args: list[str], out: TextIO, err: TextIO) -> int:
    from bastion.headless_approvals import run_request

    return run_request(session, args, out, err)


def _approvals(session: Session, args: list[str], out: TextIO, err: TextIO) -> int:
    from bastion.headless_approvals import run_approvals

    return run_approvals(session, args, out, err)


_HANDLERS: dict[str, Callable[[Session, list[str], TextIO, TextIO], int]] = {
    "whoami": _whoami,
    "connections": _connections,
    "exec": _exec,
    "request": _request,
    "approvals": _approvals,
}
