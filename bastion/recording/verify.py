"""`bastion audit verify` for recordings: every cast against its signed manifest and against the audit log.

For each session directory (the spool's, or a sink's copy):
    - manifest.json parses and its Ed25519 signature verifies with the bastion's key;
    - it names this session and bastion; every file it lists is there with its size and SHA-256, and there
      is no file it does not list;
    - every cast is valid asciicast v2 (what asciinema replays);
    - every marker `audit:<seq> <type>` names an audit record of THIS session with that type (when the log
      reaches that far), so markers and events point at each other;
    - when the log holds a `recording_sealed` event for the session, the manifest's SHA-256 is the one it
      recorded: a manifest replaced after sealing is caught even if re-signed.
A directory without a manifest is "in progress" while the log has no end for its session, else "unsealed"
(`bastion ship` seals it); neither is a failure — unless the log says it was sealed: a deleted manifest is
how a cast would be edited and re-sealed. A session sealed twice in the log is a failure for the same reason.
With `complete` (a sink's copy, or a spool without retention) every session the log says was sealed must be
present, and every session the log says started recording must be here or in another copy (`elsewhere`).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bastion.audit.log import AuditLogError, read_events
from bastion.audit.signing import key_id
from bastion.config import Config
from bastion.recording.cast import parse_marker, read_cast
from bastion.recording.manifest import ManifestError, file_digest, load
from bastion.recording.sinks import Sink, SinkError, open_sink
from bastion.recording.spool import MANIFEST, SESSION_ID, session_files


@dataclass
class _SessionIndex:
    first: int | None = None
    last: int | None = None
    ended: bool = False
    started: bool = False  # recording_start: a recording directory was created
    sealed: list[str] = field(default_factory=list)
    sealed_seqs: list[int] = field(default_factory=list)


@dataclass
class RecordingsReport:
    directory: Path
    verified: int = 0
    in_progress: int = 0
    unsealed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _index_log(log: Path | None) -> tuple[dict[int, tuple[str | None, str]], dict[str, _SessionIndex], str]:
    seqs: dict[int, tuple[str | None, str]] = {}
    sessions: dict[str, _SessionIndex] = {}
    bastion = ""
    if log is None or not log.exists():
        return seqs, sessions, bastion
    for record in read_events(log):
        seq, session, type_ = int(record["seq"]), record["session"], record["type"]
        bastion = record["bastion"]
        seqs[seq] = (session, type_)
        if session is None:
            continue
        index = sessions.setdefault(session, _SessionIndex())
        index.first = seq if index.first is None else index.first
        index.last = seq
        if type_ == "session_end":
            index.ended = True
        elif type_ == "recording_start":
            index.started = True
        elif type_ == "recording_sealed":
            index.sealed_seqs.append(seq)
            digest = record["payload"].get("manifest_sha256")
            if isinstance(digest, str):
                index.sealed.append(digest)
    return seqs, sessions, bastion


def verify_recordings(
    directory: Path,
    public_keys: list[Ed25519PublicKey],
    log: Path | None,
    *,
    complete: bool = False,
    elsewhere: Sequence[Callable[[str], bool | None]] = (),
) -> RecordingsReport:
    """`elsewhere`: other copies (the spool, the sink) asked whether they hold a session — True, False, or
    None when they cannot tell — so `complete` does not call a recording missing that is only elsewhere."""
    report = RecordingsReport(directory)
    keys = {key_id(k): k for k in public_keys}
    try:
        seqs, sessions, bastion = _index_log(log)
    except AuditLogError as exc:
        report.problems.append(f"cannot read the audit log for cross-checks: {exc}")
        seqs, sessions, bastion = {}, {}, ""
    last_seq = max(seqs) if seqs else 0
    present: set[str] = set()
    entries = sorted(directory.iterdir()) if directory.is_dir() else []
    for path in entries:
        if not SESSION_ID.fullmatch(path.name) or not path.is_dir():
            continue
        present.add(path.name)
        index = sessions.get(path.name)
        manifest_path = path / MANIFEST
        if not manifest_path.exists():
            if index is not None and index.sealed_seqs:
                report.problems.append(
                    f"{path.name}: manifest.json is missing but the audit log recorded its seal "
                    f"(seq {index.sealed_seqs[0]}) — deleted after sealing"
                )
            elif index is not None and index.ended:
                report.unsealed.append(path.name)
            else:
                report.in_progress += 1
            continue
        problems = _verify_one(path, keys, bastion, index, seqs, last_seq, report)
        report.problems.extend(f"{path.name}: {p}" for p in problems)
        if not problems:
            report.verified += 1
    for session, index in sorted(sessions.items()):
        if len(index.sealed_seqs) > 1:
            seqs_text = ", ".join(str(s) for s in index.sealed_seqs)
            report.problems.append(f"{session}: sealed more than once in the audit log (seqs {seqs_text})")
    if complete:
        for session, index in sorted(sessions.items()):
            if session in present:
                continue
            if index.sealed_seqs:
                report.problems.append(f"{session}: sealed in the audit log but missing from {directory}")
            elif index.started and not _held_elsewhere(session, elsewhere, report):
                report.problems.append(
                    f"{session}: recording missing — started in the audit log, in no copy (spool, sink)"
                )
    return report


def _held_elsewhere(
    session: str, elsewhere: Sequence[Callable[[str], bool | None]], report: RecordingsReport
) -> bool:
    for holds in elsewhere:
        found = holds(session)
        if found is None:
            report.notes.append(f"{session}: not here, and one copy could not be checked")
            return True  # unknown is not proof of loss
        if found:
            return True
    return False


def _verify_one(
    path: Path,
    keys: dict[str, Ed25519PublicKey],
    bastion: str,
    index: _SessionIndex | None,
    seqs: dict[int, tuple[str | None, str]],
    last_seq: int,
    report: RecordingsReport,
) -> list[str]:
    data = (path / MANIFEST).read_bytes()
    try:
        body = load(data, keys)
    except ManifestError as exc:
        return [str(exc)]
    problems: list[str] = []
    if body.get("session") != path.name:
        problems.append(f"manifest is for session {str(body.get('session'))[:40]}, not this one")
    if bastion and body.get("bastion") != bastion:
        problems.append(f"manifest is for bastion {str(body.get('bastion'))[:40]}, not {bastion}")
    if index is not None and index.sealed and hashlib.sha256(data).hexdigest() not in index.sealed:
        problems.append("manifest differs from the one the audit log recorded when it was sealed")
    listed = {f["name"]: f for f in body["files"]}
    on_disk = {p.name: p for p in session_files(path)}
    for name in sorted(set(on_disk) - set(listed)):
        problems.append(f"{name} is not in the manifest (added after sealing)")
    for name, entry in sorted(listed.items()):
        file = on_disk.get(name)
        if file is None:
            problems.append(f"{name} is missing")
            continue
        size, digest, _ = file_digest(file)
        if size != entry["size"]:
            problems.append(f"{name} has {size} bytes, the manifest says {entry['size']} — modified")
            continue
        if digest != entry["sha256"]:
            problems.append(f"{name} does not match its SHA-256 in the manifest — modified")
            continue
        if name.endswith(".cast"):
            problems.extend(_check_cast(file, path.name, seqs, last_seq, report))
    audit = body.get("audit") or {}
    first = audit.get("first_seq")
    if isinstance(first, int) and first in seqs and seqs[first][0] != path.name:
        problems.append(f"manifest's first audit seq {first} belongs to another session")
    return problems


def _check_cast(
    file: Path, session: str, seqs: dict[int, tuple[str | None, str]], last_seq: int, report: RecordingsReport
) -> list[str]:
    try:
        header, events = read_cast(file)
    except (ValueError, UnicodeDecodeError) as exc:
        return [f"{file.name} is not a valid asciicast v2 file: {exc}"]
    problems = []
    meta = header.get("bastion")
    if isinstance(meta, dict) and meta.get("session") != session:
        problems.append(f"{file.name} header names session {str(meta.get('session'))[:40]}")
    beyond = 0
    for event in events:
        if event[1] != "m":
            continue
        marker = parse_marker(event[2])
        if marker is None:
            continue
        seq, type_ = marker
        if seq > last_seq:
            beyond += 1
            continue
        found = seqs.get(seq)
        if found is None:
            problems.append(f"{file.name}: marker for audit seq {seq} has no record in the log")
        elif found != (session, type_):
            problems.append(
                f"{file.name}: marker for audit seq {seq} ({type_}) does not match the log's record "
                f"({found[1]} of {'this' if found[0] == session else 'another'} session)"
            )
    if beyond:
        report.notes.append(f"{session}/{file.name}: {beyond} markers beyond the end of this log copy")
    return problems


def recordings_dir(
    explicit: str | None, log: Path, config: Config | None, *, complete: bool = False
) -> Path | None:
    """DIR given, else `sessions/` beside the log's `audit/` directory (spool and sink share the layout),
    else the config's spool; None when there is nothing to check. With `complete` a missing `sessions/` is
    still checked: a deleted directory must not turn into "nothing to check"."""
    if explicit:
        return Path(explicit)
    beside = log.parent.parent / "sessions" if log.parent.name == "audit" else None
    if beside is not None and beside.is_dir():
        return beside
    if config is not None and (config.bastion.spool / "sessions").is_dir():
        return config.bastion.spool / "sessions"
    if complete:
        return beside or (config.bastion.spool / "sessions" if config is not None else None)
    return None


@contextlib.contextmanager
def other_copies(config: Config | None, directory: Path) -> Iterator[list[Callable[[str], bool | None]]]:
    """Lookups in the spool and the sink other than `directory`, for `complete`'s "recording missing"."""
    lookups: list[Callable[[str], bool | None]] = []
    sink: Sink | None = None
    if config is None:
        yield lookups
        return
    here = directory.resolve()
    local = [config.bastion.spool / "sessions"]
    sink_config = config.recording.sink
    if sink_config is not None and sink_config.type == "dir":
        local.append(Path(sink_config.path) / config.bastion.name / "sessions")
    for root in local:
        if root.resolve() != here:
            lookups.append(lambda session, root=root: (root / session).is_dir())
    if sink_config is not None and sink_config.type != "dir":
        name, unreachable = config.bastion.name, False

        def on_sink(session: str) -> bool | None:
            nonlocal sink, unreachable
            if unreachable:  # one timeout, not one per session
                return None
            try:
                sink = sink or open_sink(sink_config)
                assert sink is not None
                return sink.size(f"{name}/sessions/{session}/session.cast") is not None
            except SinkError:
                unreachable = True
                return None

        lookups.append(on_sink)
    try:
        yield lookups
    finally:
        if sink is not None:
            sink.close()


def print_report(report: RecordingsReport) -> None:
    if report.ok:
        extra = []
        if report.in_progress:
            extra.append(f"{report.in_progress} in progress")
        if report.unsealed:
            extra.append(f"{len(report.unsealed)} unsealed (bastion ship seals them)")
        tail = f" ({', '.join(extra)})" if extra else ""
        print(f"{report.directory}: OK — {report.verified} recordings match their signed manifests{tail}")
    else:
        print(f"{report.directory}: FAILED — {len(report.problems)} problem(s)")
        for problem in report.problems:
            print(f"  {problem}")
    for note in report.notes:
        print(f"  note: {note}")
