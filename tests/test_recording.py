"""Recording: casts written with asciinema's v2 writer and replayed by the real `asciinema cat`, markers that
point at audit events, input redaction, the recorded TUI on a real pty, headless runs and the SQL transcript
against the real shop database, the failure policies at login, and `bastion audit verify` on recordings."""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from pathlib import Path

import pytest

from bastion.audit.log import AuditLog, read_events
from bastion.audit.signing import load_private_key, load_public_key
from bastion.config import Config, load_config
from bastion.login import login
from bastion.recording.cast import Cast, header_metadata, marker_label, parse_marker, read_cast
from bastion.recording.manifest import SealInfo, seal
from bastion.recording.ship import SINK_DOWN_META
from bastion.recording.sinks import sink_id
from bastion.recording.verify import verify_recordings
from bastion.store import TinyDBStore
from tests.configs import secret
from tests.recording_helpers import (
    ALICE_FP,
    PtyLogin,
    asciinema_cat,
    bastion,
    cast_events,
    dir_sink,
    recording_config,
    session_dirs,
)
from tests.shopdb import PLANTED, Shop, shop_config

SENSITIVE = [str(row[k]) for row in PLANTED for k in ("email", "ssn", "phone", "card_number")]


def _metadata() -> dict:
    return header_metadata(
        session_id="s-20250101T000000-0123456789ab",
        user="alice",
        bastion="bastion-test",
        key_fingerprint=ALICE_FP,
        kind="tui",
    )


def _store(config: Config) -> TinyDBStore:
    return TinyDBStore(Path(config.bastion.state.removeprefix("tinydb:")))


# ---------------------------------------------------------------- the cast format


def test_cast_replays_with_asciinema_and_keeps_size_resizes_and_markers(tmp_path: Path) -> None:
    """Output split inside a UTF-8 character and around escape sequences comes back byte for byte."""
    path = tmp_path / "session.cast"
    cast = Cast(path, _metadata(), 100, 30)
    shown = ["plain\r\n", "\x1b[1mbold\x1b[0m ", "ünïcödé ✓ ", "日本語\r\n", "\x1b]0;title\x07tail"]
    data = "".join(shown).encode()
    cuts = [0, 3, 11, 20, 21, 22, 40, len(data)]  # 21/22: inside multi-byte characters
    for start, end in itertools.pairwise(cuts):
        cast.output(data[start:end])
    assert cast.resize(120, 40) and not cast.resize(120, 40)  # only real changes are recorded
    cast.marker("audit:7 sql_statement allow")
    cast.output(b"after resize\r\n")
    cast.close()

    header, events = read_cast(path)
    assert (header["version"], header["width"], header["height"]) == (2, 100, 30)
    assert "alice" in header["title"] and "bastion-test" in header["title"]
    assert header["env"]["TERM"] == os.environ.get("TERM", "")[:64] and "SHELL" in header["env"]
    assert header["bastion"]["session"] == "s-20250101T000000-0123456789ab"
    assert header["bastion"]["key_fingerprint"] == ALICE_FP and header["bastion"]["user"] == "alice"
    assert ["r", "120x40"] in [e[1:] for e in events]
    assert ["m", "audit:7 sql_statement allow"] in [e[1:] for e in events]
    assert all(e[1] != "i" for e in events)  # input is off by default
    assert asciinema_cat(path) == data + b"after resize\r\n"


def test_output_events_are_byte_for_byte_what_asciinemas_writer_writes(tmp_path: Path) -> None:
    """Our bytes-level "o" encoder against the writer's own write_stdout: escapes, every control character,
    invalid UTF-8, characters split across chunks, memoryviews of a reused buffer."""
    import random

    from bastion.recording.cast import v2

    rng = random.Random(7)
    pieces = [bytes([c]) for c in range(256)] + [p.encode() for p in ("é", "日", "─", "😀", "\r\n", '\\"')]
    stream = b"".join(rng.choice(pieces) for _ in range(20000))
    cuts = sorted(rng.sample(range(1, len(stream)), 1500))
    now = [0.0]
    cast = Cast(tmp_path / "ours.cast", _metadata(), 80, 24, clock=lambda: now[0])
    theirs: list[str] = []
    writer = v2.writer("-", width=80, height=24)
    writer.file = type("Lines", (), {"write": lambda _self, line: theirs.append(line)})()
    buffer = bytearray(len(stream))
    for i, (start, end) in enumerate(itertools.pairwise([0, *cuts, len(stream)])):
        now[0] = i * 0.001234567
        chunk = stream[start:end]
        buffer[: len(chunk)] = chunk
        cast.output(memoryview(buffer)[: len(chunk)] if i % 2 else chunk)
        writer.write_stdout(round(now[0], 6), chunk)
    cast.close()
    ours = (tmp_path / "ours.cast").read_bytes().split(b"\n")[1:-1]
    assert ours == [line.encode().rstrip(b"\n") for line in theirs]


def test_a_short_spool_write_is_completed_and_a_failed_one_cut_back(tmp_path: Path, monkeypatch) -> None:
    from bastion.recording.spool import SpoolFile, SpoolWriteError

    spool_file = SpoolFile(tmp_path / "f.cast")
    real_writev = os.writev
    monkeypatch.setattr(os, "writev", lambda fd, parts: real_writev(fd, [parts[0][:3]]))
    spool_file.write_parts((b"[1.0, ", b'"o", "x"', b"]\n"))
    assert (tmp_path / "f.cast").read_bytes() == b'[1.0, "o", "x"]\n' and spool_file.size == 16

    def failing(_fd: int, _data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", failing)
    with pytest.raises(SpoolWriteError):
        spool_file.write_parts((b"[2.0, ", b'"o", "y"', b"]\n"))
    assert (tmp_path / "f.cast").read_bytes() == b'[1.0, "o", "x"]\n'
    with pytest.raises(SpoolWriteError):  # and it stays failed
        spool_file.write_bytes(b"more\n")


def test_input_after_a_password_prompt_is_redacted(tmp_path: Path) -> None:
    path = tmp_path / "input.cast"
    cast = Cast(path, _metadata(), 80, 24, record_input=True)
    cast.output(b"$ ")
    cast.input(b"ls\r")
    cast.output(b"\x1b[32m[sudo] password for alice: \x1b[0m")
    for key in (b"h", b"unter", b"2", b"\r"):
        cast.input(key)
    cast.output(b"\r\nPassphrase for key '/k': ")
    cast.input(b"correct horse\n")
    cast.output(b"\r\n$ ")
    cast.input(b"whoami\r")
    cast.close()
    _, events = read_cast(path)
    typed = "".join(e[2] for e in events if e[1] == "i")
    assert "hunter" not in typed and "horse" not in typed
    assert typed == "ls\r[input redacted]\r[input redacted]\rwhoami\r"


def test_marker_labels_name_the_audit_event_and_never_a_value() -> None:
    def record(type_: str, **payload: object) -> dict:
        return {"seq": 42, "type": type_, "payload": payload}

    assert marker_label(record("sql_statement", verdict="allow", statement="select ssn")) == (
        "audit:42 sql_statement allow"
    )
    assert (
        marker_label(record("approval_decided", decision="approved")) == "audit:42 approval_decided approved"
    )
    assert marker_label(record("headless_command", command="exec", argv=["--", "secret"])) == (
        "audit:42 headless_command exec"
    )
    assert marker_label(record("sql_outcome", masking=[{"column": "ssn"}])) == "audit:42 sql_outcome masked"
    assert marker_label(record("sql_outcome", status="ok")) is None
    assert marker_label(record("session_start")) is None
    assert marker_label(record("sql_statement", verdict="x" * 200)) == "audit:42 sql_statement"
    assert parse_marker("audit:42 sql_statement allow") == (42, "sql_statement")
    assert parse_marker("audit:0 x") is None and parse_marker("note") is None


# ---------------------------------------------------------------- the TUI through the recorder


@pytest.fixture
def sink_config(tmp_path: Path) -> Config:
    return recording_config(tmp_path, sink=dir_sink(tmp_path / "sink"), retention="1h")


def test_tui_login_is_recorded_and_replays_what_the_terminal_showed(
    sink_config: Config, tmp_path: Path
) -> None:
    """The real TUI in the recorder's child: the landing screen, a resize, Ctrl+Z / Ctrl+\\ / Ctrl+C that
    stop nothing, Ctrl+Q. asciinema cat of the shipped cast is exactly what our terminal received."""
    session = PtyLogin.spawn(sink_config, frontend="tui.app", size=(100, 30))
    try:
        assert b"pg-readonly" in session.read(20, until=b"pg-readonly"), session.output[-300:]
        session.read(1.5, until=b"recording")
        assert b"recording" in session.output  # the header shows the recorder's status
        recorder, children = session.pid, session.children()
        assert len(children) == 1, "the TUI runs as the recorder's child"
        session.resize(120, 40)
        session.read(1.0)
        for key in (b"\x1a", b"\x1c", b"\x03"):
            session.send(key)
            session.read(0.4)
            for pid in (recorder, *children):
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                assert state not in ("T", "t", "Z"), f"{key!r} stopped or killed process {pid}"
        session.send(b"\x11")
        assert session.wait(20) == 0, session.output[-300:]
    finally:
        session.close()
    (directory,) = session_dirs(tmp_path / "sink" / "bastion-test" / "sessions")
    cast = directory / "session.cast"
    header, events = cast_events(cast)
    assert (header["width"], header["height"]) == (100, 30)
    assert ["r", "120x40"] in [e[1:] for e in events]
    assert header["bastion"]["kind"] == "tui" and header["bastion"]["user"] == "alice"
    replay = asciinema_cat(cast)
    assert replay == session.output, "asciinema cat differs from what the terminal received"
    assert b"Connections" in replay and b"pg-readonly" in replay
    manifest = json.loads((directory / "manifest.json").read_text())["manifest"]
    assert manifest["status"] == "ended" and manifest["sealed_by"] == "login"
    verify = bastion("audit", "verify", "--config", str(sink_config.path))
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_markers_from_the_child_point_at_its_audit_events(sink_config: Config, tmp_path: Path) -> None:
    session = PtyLogin.spawn(sink_config, env={"RECTEST_LINES": "120", "RECTEST_INTERVAL": "0"})
    try:
        assert session.wait(30) == 0, session.output[-300:]
    finally:
        session.close()
    (directory,) = session_dirs(sink_config.bastion.spool / "sessions")
    _, events = cast_events(directory / "session.cast")
    markers = [parse_marker(e[2]) for e in events if e[1] == "m"]
    assert len(markers) == 3  # ticks 0, 50 and 100 write headless_command events
    records = {r["seq"]: r for r in read_events(sink_config.audit.log)}
    for seq, type_ in markers:
        assert records[seq]["type"] == type_ == "headless_command"
        assert records[seq]["session"] == directory.name
    manifest = json.loads((directory / "manifest.json").read_text())["manifest"]
    assert manifest["audit"]["markers"] == 3
    ours = [s for s, r in records.items() if r["session"] == directory.name and r["type"] != "checkpoint"]
    assert manifest["audit"]["first_seq"] == min(ours)
    end = next(s for s, r in records.items() if r["session"] == directory.name and r["type"] == "session_end")
    assert manifest["audit"]["last_seq"] == end


def test_a_role_turns_input_recording_on_and_passwords_stay_out(tmp_path: Path) -> None:
    config = recording_config(tmp_path)
    text = config.path.read_text().replace(
        'name = "developer"\n', 'name = "developer"\nrecord_input = true\n', 1
    )
    config = load_config(config.path.write_text(text) and config.path)
    session = PtyLogin.spawn(
        config,
        env={"RECTEST_PROMPT": "Password for db: ", "RECTEST_LINES": "150", "RECTEST_INTERVAL": "0.01"},
    )
    try:
        session.read(10, until=b"Password for db: ")
        session.send(b"hunter2\r")
        session.read(10, until=b"tick 000010")
        session.send(b"visible\r")
        assert session.wait(30) == 0
    finally:
        session.close()
    (directory,) = session_dirs(config.bastion.spool / "sessions")
    _, events = cast_events(directory / "session.cast")
    typed = "".join(e[2] for e in events if e[1] == "i")
    assert typed == "[input redacted]\rvisible\r"
    assert b"hunter2" not in (directory / "session.cast").read_bytes()


# ---------------------------------------------------------------- headless and the SQL transcript


def test_headless_exec_is_recorded_with_a_masked_sql_transcript(
    tmp_path: Path, shop: Shop, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = shop_config(tmp_path, shop)
    sql = "select name, email, ssn, card_number from customers order by id; select 1/0"
    monkeypatch.setenv("SSH_ORIGINAL_COMMAND", f"exec pg-readonly -- {sql}")
    assert login(config, ALICE_FP) == 1  # the second statement fails
    out = capsys.readouterr()
    (directory,) = session_dirs(config.bastion.spool / "sessions")
    replay = asciinema_cat(directory / "session.cast").decode()
    assert replay == (out.out + out.err).replace("\n", "\r\n")  # stdout, then the error line
    assert "Ada Lovelace" in replay
    (transcript,) = directory.glob("sql-*.cast")
    header, events = cast_events(transcript)
    assert header["bastion"]["channel"] == "sql pg-readonly"
    text = asciinema_cat(transcript).decode()
    assert "sql> select name, email, ssn, card_number from customers order by id" in text
    assert "-- verdict: allow" in text and "Grace Hopper" in text and "3 rows" in text
    assert "masked: email (pseudonym), ssn (full), card_number (partial)" in text
    assert "division by zero" in text and "sql> select 1/0" in text
    for value in SENSITIVE:
        assert value not in text and value not in replay
    records = {r["seq"]: r for r in read_events(config.audit.log)}
    labels = [parse_marker(e[2]) for e in events if e[1] == "m"]
    assert [t for _, t in labels] == ["sql_statement", "sql_outcome", "sql_statement", "sql_outcome"]
    for seq, type_ in labels:
        assert records[seq]["type"] == type_ and records[seq]["session"] == directory.name
    _, session_events = cast_events(directory / "session.cast")
    marked = [parse_marker(e[2]) for e in session_events if e[1] == "m"]
    assert {t for _, t in marked} >= {"headless_command", "sql_statement", "sql_outcome"}
    report = verify_recordings(
        config.bastion.spool / "sessions", [load_public_key(f"{config.audit.signing_key}.pub")],
        config.audit.log, complete=True,
    )  # fmt: skip
    assert report.ok and report.verified == 1, report.problems


# ---------------------------------------------------------------- failure policies at login


def _headless(config: Config, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("SSH_ORIGINAL_COMMAND", "whoami")
    return login(config, ALICE_FP)


def test_strict_refuses_a_session_it_cannot_record_and_best_effort_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the spool should be")
    strict = recording_config(tmp_path / "strict", spool=blocked, audit_log=tmp_path / "strict" / "a.jsonl")
    assert _headless(strict, monkeypatch) == 1
    err = capsys.readouterr().err
    assert "recording unavailable" in err and err.count("\n") == 1
    types = [r["type"] for r in read_events(strict.audit.log)]
    assert "login_refused" in types and "headless_command" not in types
    (record,) = _store(strict).list_sessions()
    assert record.status == "refused"

    lax = recording_config(
        tmp_path / "lax", spool=blocked, audit_log=tmp_path / "lax" / "a.jsonl", failure="best_effort"
    )
    assert _headless(lax, monkeypatch) == 0
    assert "user     alice" in capsys.readouterr().out
    events = list(read_events(lax.audit.log))
    gap = next(r for r in events if r["type"] == "recording_gap")
    assert "not writable" in gap["payload"]["reason"] or "not usable" in gap["payload"]["reason"]
    assert "headless_command" in [r["type"] for r in events]


def test_free_space_floor_refuses_strict_and_warns_best_effort(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A floor above the disk's free space: strict is refused; best_effort runs and audits why; a role
    that says strict wins over the default."""
    strict = recording_config(tmp_path / "s", floor="100TiB")
    assert _headless(strict, monkeypatch) == 1
    assert "under half the free-space floor" in capsys.readouterr().err
    huge = recording_config(tmp_path / "b", floor="100TiB", failure="best_effort")
    assert _headless(huge, monkeypatch) == 1  # under HALF the floor: refused whatever the policy
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    floor = f"{int(free * 1.5) // 1024}KiB"  # free is under the floor but above half of it
    lax = recording_config(tmp_path / "l", floor=floor, failure="best_effort")
    capsys.readouterr()
    assert _headless(lax, monkeypatch) == 0
    degraded = [r for r in read_events(lax.audit.log) if r["type"] == "recording_degraded"]
    assert degraded and "free-space floor" in degraded[0]["payload"]["reason"]
    path = recording_config(tmp_path / "r", floor=floor, failure="best_effort").path
    path.write_text(
        path.read_text().replace('name = "developer"\n', 'name = "developer"\nrecording = "strict"\n')
    )
    assert _headless(load_config(path), monkeypatch) == 1  # the role's strict wins over the default
    assert "under the free-space floor" in capsys.readouterr().err


def test_max_lag_refuses_new_strict_sessions_while_the_sink_is_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-sink"
    sink = f'type = "dir"\npath = "{missing}"'
    config = recording_config(tmp_path / "s", sink=sink, max_lag="1m")
    store = _store(config)
    assert config.recording.sink is not None
    ident = sink_id(config.recording.sink)
    assert store.cas_meta(SINK_DOWN_META, None, {"sink": ident, "since": time.time() - 3600, "error": "x"})
    assert _headless(config, monkeypatch) == 1
    err = capsys.readouterr().err
    assert "sink unreachable for 1h" in err and "max_lag 1m" in err
    lax = recording_config(tmp_path / "b", sink=sink, max_lag="1m", failure="best_effort")
    _store(lax).cas_meta(SINK_DOWN_META, None, {"sink": ident, "since": time.time() - 3600, "error": "x"})
    assert _headless(lax, monkeypatch) == 0
    missing.mkdir()  # the sink is back: the login probes it and lets the strict session in
    assert _headless(config, monkeypatch) == 0


# ---------------------------------------------------------------- verification


def _sealed(tmp_path: Path) -> tuple[Config, Path]:
    config = recording_config(tmp_path, sink=dir_sink(tmp_path / "sink"), retention="1h")
    session = PtyLogin.spawn(config, env={"RECTEST_LINES": "60", "RECTEST_INTERVAL": "0"})
    try:
        assert session.wait(30) == 0
    finally:
        session.close()
    (directory,) = session_dirs(tmp_path / "sink" / "bastion-test" / "sessions")
    return config, directory


def test_audit_verify_catches_altered_added_removed_and_resealed_recordings(tmp_path: Path) -> None:
    config, directory = _sealed(tmp_path)
    sink_log = tmp_path / "sink" / "bastion-test" / "audit" / "bastion-test.jsonl"
    key = f"{config.audit.signing_key}.pub"

    def verify(*extra: str) -> tuple[int, str]:
        done = bastion("audit", "verify", str(sink_log), "--key", key, "--complete", *extra)
        return done.returncode, done.stdout

    assert verify() == (0, verify()[1]) and "1 recordings match" in verify()[1]
    cast = directory / "session.cast"
    original = cast.read_bytes()
    cast.write_bytes(original.replace(b"tick 000007", b"tick 000070", 1))
    code, out = verify()
    assert code == 1 and "session.cast does not match its SHA-256" in out
    cast.write_bytes(original)
    (directory / "notes.cast").write_text("{}\n")
    code, out = verify()
    assert code == 1 and "notes.cast is not in the manifest" in out
    (directory / "notes.cast").unlink()

    # a key holder re-seals an edited cast: the signature verifies, the audit chain does not agree
    edited = original.replace(b"tick 000007", b"tick 000070", 1)
    cast.write_bytes(edited)
    manifest = directory / "manifest.json"
    saved = manifest.read_bytes()
    manifest.rename(directory / ".seal-reserve")
    body = json.loads(saved)["manifest"]
    info = SealInfo(
        body["bastion"], body["session"], body["user"], body["key_fingerprint"], body["kind"], body["status"],
        "login", body["audit"]["log"], body["audit"]["first_seq"], body["audit"]["last_seq"],
        body["audit"]["markers"],
    )  # fmt: skip
    seal(directory, info, load_private_key(config.audit.signing_key))
    code, out = verify()
    assert code == 1 and "differs from the one the audit log recorded" in out
    cast.write_bytes(original)
    manifest.write_bytes(saved)
    assert verify()[0] == 0

    moved = tmp_path / "elsewhere"
    directory.rename(moved)
    code, out = verify()
    assert code == 1 and "sealed in the audit log but missing" in out
    moved.rename(directory)


def test_markers_that_do_not_match_the_log_are_reported(tmp_path: Path) -> None:
    """A cast whose marker names another session's event: verify says which (manifest re-signed, so only
    the cross-check can catch it)."""
    config = recording_config(tmp_path)
    audit = AuditLog(config.audit.log, config.bastion.name, load_private_key(config.audit.signing_key))
    other = audit.append(
        "sql_statement", {"verdict": "allow"}, session="s-20250101T000000-ffffffffffff", user="bob"
    )
    audit.sync()
    directory = tmp_path / "recs" / "s-20250101T000000-0123456789ab"
    directory.mkdir(parents=True)
    cast = Cast(directory / "session.cast", _metadata(), 80, 24)
    cast.marker(f"audit:{other['seq']} sql_statement allow")
    cast.close()
    info = SealInfo(
        "bastion-test", directory.name, "alice", ALICE_FP, "tui", "ended", "login", "x", None, None, 1
    )  # fmt: skip
    seal(directory, info, load_private_key(config.audit.signing_key))
    report = verify_recordings(
        directory.parent, [load_public_key(f"{config.audit.signing_key}.pub")], config.audit.log
    )
    assert not report.ok
    assert re.search(r"marker for audit seq \d+ \(sql_statement\) does not match", report.problems[0])


# ---------------------------------------------------------------- roles known only after the login (OIDC)


def _oidc_recording_config(directory: Path, **kwargs: object) -> Config:
    """best_effort by default; the role `dba` (OIDC group "dbas") is strict. Users have no config groups:
    before the device login the recorder knows no roles."""
    config = recording_config(directory, failure="best_effort", **kwargs)  # type: ignore[arg-type]
    secret(directory / "secrets" / "oidc", "client-secret")
    text = re.sub(r'(keys = \["[^"]+"\]\n)groups = \["[a-z]+"\]\n', r"\1", config.path.read_text())
    text = text.replace('name = "dba"\n', 'name = "dba"\ngroups = ["dbas"]\nrecording = "strict"\n', 1)
    text += (
        '\n[identity.oidc]\nissuer = "https://idp.example.org"\nclient_id = "bastion"\n'
        'client_secret_file = "secrets/oidc"\n'
    )
    config.path.write_text(text)
    return load_config(config.path)


def test_a_strict_role_known_after_the_oidc_login_reruns_the_preflight(tmp_path: Path) -> None:
    """best_effort at login (no roles yet) lets the session in while the sink is down past max_lag; once the
    provider's groups make it strict, the recorder checks again and ends the session with the reason."""
    missing = tmp_path / "no-such-sink"
    config = _oidc_recording_config(tmp_path, sink=f'type = "dir"\npath = "{missing}"', max_lag="1m")
    assert config.oidc is not None and config.recording.sink is not None
    ident = sink_id(config.recording.sink)
    assert _store(config).cas_meta(
        SINK_DOWN_META, None, {"sink": ident, "since": time.time() - 3600, "error": "x"}
    )

    code, output = _login_to_the_end(config, {"RECTEST_LINES": "30", "RECTEST_GROUPS": "developers"})
    assert code == 0, output[-300:]  # best_effort roles: the session goes on
    code, output = _login_to_the_end(config, {"RECTEST_LINES": "0", "RECTEST_GROUPS": "developers,dbas"})
    assert code == 1, output[-300:]
    assert b"[ended] recording sink unreachable for 1h" in output
    events = list(read_events(config.audit.log))
    failed = [r for r in events if r["type"] == "recording_failed"]
    assert len(failed) == 1 and "max_lag 1m" in failed[0]["payload"]["reason"]
    end = next(r for r in events if r["type"] == "session_end" and r["session"] == failed[0]["session"])
    assert end["payload"]["status"] == "abnormal" and "sink unreachable" in end["payload"]["reason"]


def _login_to_the_end(config: Config, env: dict[str, str]) -> tuple[int | None, bytes]:
    """A recorded login on a pty, run until it ends: (exit code, what the terminal showed)."""
    login = PtyLogin.spawn(config, env=env)
    try:
        return login.wait(30), login.output
    finally:
        login.close()


def test_a_strict_role_known_after_the_oidc_login_ends_a_session_the_spool_refused(tmp_path: Path) -> None:
    """best_effort ran the session unrecorded (spool not writable); strict roles may not go on so."""
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the spool should be")
    config = _oidc_recording_config(tmp_path / "b", spool=blocked, audit_log=tmp_path / "b" / "a.jsonl")
    code, output = _login_to_the_end(config, {"RECTEST_LINES": "5", "RECTEST_GROUPS": "developers"})
    assert code == 0, output[-300:]
    assert b"NOT RECORDED" in output
    code, output = _login_to_the_end(config, {"RECTEST_LINES": "0", "RECTEST_GROUPS": "dbas"})
    assert code == 1, output[-300:]
    assert b"[ended] recording unavailable" in output
    events = list(read_events(config.audit.log))
    (failed,) = [r for r in events if r["type"] == "recording_failed"]
    end = next(r for r in events if r["type"] == "session_end" and r["session"] == failed["session"])
    assert end["payload"]["status"] == "abnormal" and "recording unavailable" in end["payload"]["reason"]


# ---------------------------------------------------------------- approval markers


def test_approval_events_get_markers_in_the_casts(
    tmp_path: Path, shop: Shop, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A request, its approval and the grant it creates are marked in the casts of the sessions that made
    them, pointing at their audit events (approvals.py: approval_* and grant_*)."""
    from bastion.identity.keys import parse_public_key
    from tests.configs import BOB_KEY

    config = shop_config(tmp_path, shop)
    statement = "UPDATE orders SET status = 'held' WHERE id = 1"
    monkeypatch.setenv(
        "SSH_ORIGINAL_COMMAND", f"request pg-guarded --reason 'fraud check' --json -- {statement}"
    )
    assert login(config, ALICE_FP) == 0
    request = json.loads(capsys.readouterr().out)
    monkeypatch.setenv("SSH_ORIGINAL_COMMAND", f"approvals approve {request['id']} --reason ok --json")
    assert login(config, parse_public_key(BOB_KEY).fingerprint) == 0, capsys.readouterr().err
    records = {r["seq"]: r for r in read_events(config.audit.log)}
    marked: dict[str, set[str]] = {}
    for directory in session_dirs(config.bastion.spool / "sessions"):
        _, events = cast_events(directory / "session.cast")
        for seq, type_ in (parse_marker(e[2]) for e in events if e[1] == "m"):
            assert records[seq]["type"] == type_ and records[seq]["session"] == directory.name
            marked.setdefault(records[seq]["user"], set()).add(type_)
    assert "approval_requested" in marked["alice"]
    assert {"approval_decided", "grant_created"} <= marked["bob"]
