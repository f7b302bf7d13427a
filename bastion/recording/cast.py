"""asciicast v2, written with the asciinema package's own v2 writer (and, for "o", byte for byte what it
would write), so stock `asciinema play`/`cat` and asciinema-player replay every cast.

A cast starts with the header (width, height, timestamp, a title naming user and bastion, TERM/SHELL, and
bastion's metadata under the extra key "bastion"), then events: "o" output, "r" on every resize (a replay
without them breaks), "m" markers labelled `audit:<seq> <type>[ <detail>]` — the audit event's sequence
number, so a marker and its event point at each other — and, only when a role turns input recording on,
"i" input with whatever is typed after a password prompt redacted.

The lines go to a SpoolFile (one write(2) per event, no user-space buffer), so what was recorded is in the
spool at once and a failed write leaves a valid cast behind. "o" events, the bulk of every cast, are encoded
here on bytes (`json_string_body`): the writer's str-based JSON encoding was most of the recorder's CPU at
high output rates; this costs about a quarter of it.
"""

from __future__ import annotations

import codecs
import importlib
import importlib.util
import json
import os
import re
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.recording.spool import SpoolFile

if TYPE_CHECKING:
    from bastion.session import Session


def _asciinema_v2() -> types.ModuleType:
    """asciinema's own asciicast v2 writer module (the installed package's file, unmodified), loaded
    without running the package's __init__ files, which import its recorder, HTTP client, urllib, email and
    multiprocessing: 3.6 MB more in every session's recorder process, for nothing it uses."""
    if "asciinema.asciicast.v2" in sys.modules:
        return sys.modules["asciinema.asciicast.v2"]
    name = "bastion._asciinema"
    if f"{name}.asciicast.v2" not in sys.modules:
        spec = importlib.util.find_spec("asciinema")
        if spec is None or spec.origin is None:
            raise ImportError("the asciinema package is not installed")
        root = Path(spec.origin).parent
        package = types.ModuleType(name)
        package.__path__ = [str(root)]
        subpackage = types.ModuleType(f"{name}.asciicast")
        subpackage.__path__ = [str(root / "asciicast")]
        sys.modules.setdefault(name, package)
        sys.modules.setdefault(f"{name}.asciicast", subpackage)
    return importlib.import_module(f"{name}.asciicast.v2")


v2 = _asciinema_v2()

FORMAT = 1  # of the "bastion" header block

# Audit event types that get a marker: statements, commands, approvals, masking decisions.
MARKED_TYPES = frozenset(
    {
        "sql_statement",
        "sql_masking",
        "headless_command",
        "headless_refused",
        "ssh_command",
        # approvals (bastion/approvals.py): every request, decision and grant step
        "approval_requested",
        "approval_decided",
        "approval_cancelled",
        "approval_expired",
        "grant_created",
        "grant_used",
        "grant_revoked",
    }
)
MARKED_PREFIXES = ("approval_", "grant_", "ssh_command")
_DETAIL_KEYS = ("verdict", "decision", "command", "state")
MARKER_LABEL = re.compile(r"audit:([1-9][0-9]*) ([a-z_.]+)(?: (.*))?")


def marker_label(record: dict[str, Any]) -> str | None:
    """The marker label for an audit record, or None when its type gets no marker.

    sql_outcome is marked only when it carries a masking decision (small results put it there instead of in
    a separate sql_masking event). The detail is a verdict-like word, never a value: labels are shown by
    players and must not leak what the event redacts."""
    type_ = record.get("type", "")
    payload = record.get("payload") or {}
    marked = type_ in MARKED_TYPES or type_.startswith(MARKED_PREFIXES)
    detail = ""
    if type_ == "sql_outcome" and ("masking" in payload or "masked_columns" in payload):
        marked = True
        detail = "masked"
    if not marked:
        return None
    for key in _DETAIL_KEYS:
        value = payload.get(key)
        if isinstance(value, str) and re.fullmatch(r"[a-z_]{1,32}", value):
            detail = value
            break
    label = f"audit:{int(record['seq'])} {type_}"
    return f"{label} {detail}" if detail else label


def parse_marker(label: str) -> tuple[int, str] | None:
    """(seq, type) from a marker label, None when it is not one of ours."""
    match = MARKER_LABEL.fullmatch(label)
    return (int(match.group(1)), match.group(2)) if match else None


def _clean_env(value: str | None) -> str:
    """TERM comes from the client: printable, short."""
    text = "".join(ch for ch in (value or "") if ch.isprintable())
    return text[:64]


def session_header(session: Session, channel: str | None = None) -> dict[str, Any]:
    """header_metadata for a session's cast (or one of its channel casts)."""
    return header_metadata(
        session_id=session.id,
        user=session.user.name,
        bastion=session.config.bastion.name,
        key_fingerprint=session.key_fingerprint,
        kind=session.kind,
        channel=channel,
    )


def header_metadata(
    *,
    session_id: str,
    user: str,
    bastion: str,
    key_fingerprint: str,
    kind: str,
    channel: str | None = None,
    started: float | None = None,
) -> dict[str, Any]:
    """Everything in the header but width and height."""
    what = f" — {channel}" if channel else ""
    return {
        "timestamp": int(started if started is not None else time.time()),
        "title": f"{user}@{bastion}{what} ({session_id})",
        "env": {"TERM": _clean_env(os.environ.get("TERM")), "SHELL": _clean_env(os.environ.get("SHELL"))},
        "bastion": {
            "format": FORMAT,
            "session": session_id,
            "user": user,
            "bastion": bastion,
            "key_fingerprint": key_fingerprint,
            "kind": kind,
            **({"channel": channel} if channel else {}),
        },
    }


class _Writer(v2.writer):
    """asciinema's v2 writer, writing to our SpoolFile and able to label markers (its own write_marker
    writes an empty label)."""

    def __init__(self, file: SpoolFile, metadata: dict[str, Any], width: int, height: int) -> None:
        super().__init__(str(file.path), metadata=metadata, width=width, height=height)
        self._spool_file = file

    def _open_file(self) -> None:
        self.file = self._spool_file

    def write_marker_label(self, ts: float, label: str) -> None:
        self._writer__write_event(ts, "m", label)  # type: ignore[attr-defined]


# JSON string escaping as json.dumps(ensure_ascii=False) does it: control characters, '"' and '\\'.
_JSON_ESCAPES = tuple((bytes([c]), json.dumps(chr(c)).encode()[1:-1]) for c in b'"' + bytes(range(0x20)))


def json_string_body(raw: bytes) -> bytes:
    """JSON string contents of valid UTF-8, byte for byte what json.dumps(text, ensure_ascii=False) puts
    between the quotes: a memchr per special character, a replace per one present."""
    if b"\\" in raw:  # first: the escapes below add backslashes
        raw = raw.replace(b"\\", b"\\\\")
    if b"\r\n" in raw:  # the usual line end in one pass instead of two
        raw = raw.replace(b"\r\n", b"\\r\\n")
    for char, escaped in _JSON_ESCAPES:
        if char in raw:
            raw = raw.replace(char, escaped)
    return raw


# Password prompts as they end the visible text: "Password:", "[sudo] password for x:", "Passphrase for key".
_PROMPT = re.compile(
    rb"(?i)(password|passphrase|passcode|pass ?word|\bpin\b|one-time code|otp|secret)[^\n]{0,60}[:?>]\s*$"
)
_ANSI = re.compile(
    rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]|[\x00-\x08\x0e-\x1f]"
)
REDACTED = "[input redacted]"


class InputRedactor:
    """Input typed after a password prompt is not recorded: from the prompt to Enter, one placeholder.

    The prompt is recognised on the last visible text of the output (escape sequences stripped). A
    heuristic: a prompt drawn without the word (or in another language) is not recognised — which is why
    input recording is off by default."""

    def __init__(self) -> None:
        self.tail = b""
        self.hidden = False

    def saw_output(self, data: bytes) -> None:
        self.tail = (self.tail + _ANSI.sub(b"", data[-1024:]))[-256:]
        if not self.hidden and _PROMPT.search(self.tail.rstrip(b" ")):
            self.hidden = True

    def filter(self, data: bytes) -> bytes | None:
        """What to record of this input; None for nothing."""
        if not self.hidden:
            return data
        if b"\r" in data or b"\n" in data:
            self.hidden = False
            self.tail = b""
            return REDACTED.encode() + b"\r"
        return None


class Cast:
    """One asciicast v2 file being written. Times are seconds since the cast started (monotonic clock)."""

    def __init__(
        self,
        path: Path,
        metadata: dict[str, Any],
        width: int,
        height: int,
        *,
        record_input: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.file = SpoolFile(path)
        self.width, self.height = max(1, int(width)), max(1, int(height))
        self.writer = _Writer(self.file, metadata, self.width, self.height)
        self.clock = clock
        self.started = clock()
        self.redactor = InputRedactor() if record_input else None
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")  # as the writer's, for "o"
        self.events = 0
        self.markers = 0
        self.writer.__enter__()  # writes the header line

    def elapsed(self) -> float:
        return self.clock() - self.started

    def output(self, data: bytes | memoryview) -> None:
        """One "o" event: the line the writer's write_stdout would write, written with one writev(2)."""
        raw = bytes(data)
        if not raw.isascii() or self.decoder.getstate()[0]:  # ASCII decodes to itself: skip two copies
            raw = self.decoder.decode(raw).encode("utf-8")
        body = json_string_body(raw)
        stamp = repr(round(self.elapsed(), 6)).encode()
        self.file.write_parts((b"[" + stamp + b', "o", "', body, b'"]\n'))
        self.events += 1
        if self.redactor is not None:
            self.redactor.saw_output(bytes(data[-1024:]))

    def input(self, data: bytes) -> None:
        if self.redactor is None:
            return
        kept = self.redactor.filter(data)
        if kept:
            self.writer.write_stdin(self.elapsed(), kept)
            self.events += 1

    def resize(self, width: int, height: int) -> bool:
        """An "r" event when the size changed; True if it did."""
        width, height = max(1, int(width)), max(1, int(height))
        if (width, height) == (self.width, self.height):
            return False
        self.width, self.height = width, height
        self.writer.write_resize(self.elapsed(), (width, height))
        self.events += 1
        return True

    def marker(self, label: str) -> None:
        self.writer.write_marker_label(self.elapsed(), label)
        self.events += 1
        self.markers += 1

    @property
    def failed(self) -> bool:
        return self.file.failed is not None

    def close(self) -> None:
        self.file.close()


def read_cast(path: Path) -> tuple[dict[str, Any], list[list[Any]]]:
    """Header and events of a cast, checked against asciicast v2; ValueError names the first bad line."""
    events: list[list[Any]] = []
    with open(path, encoding="utf-8") as f:
        first = f.readline()
        try:
            header = json.loads(first)
        except ValueError:
            raise ValueError("line 1: the header is not JSON") from None
        if not isinstance(header, dict) or header.get("version") != 2:
            raise ValueError("line 1: not an asciicast v2 header")
        for key in ("width", "height"):
            if not isinstance(header.get(key), int) or isinstance(header.get(key), bool):
                raise ValueError(f"line 1: {key} is not an integer")
        last = 0.0
        for lineno, line in enumerate(f, start=2):
            if not line.endswith("\n"):
                raise ValueError(f"line {lineno}: torn (no newline)")
            try:
                event = json.loads(line)
            except ValueError:
                raise ValueError(f"line {lineno}: not JSON") from None
            if (
                not isinstance(event, list)
                or len(event) != 3
                or not isinstance(event[0], int | float)
                or isinstance(event[0], bool)
                or event[1] not in ("o", "i", "m", "r")
                or not isinstance(event[2], str)
            ):
                raise ValueError(f"line {lineno}: not an asciicast v2 event")
            if event[0] < last:
                raise ValueError(f"line {lineno}: time goes backwards")
            last = event[0]
            if event[1] == "r" and not re.fullmatch(r"[1-9][0-9]*x[1-9][0-9]*", event[2]):
                raise ValueError(f"line {lineno}: malformed resize")
            events.append(event)
    return header, events
