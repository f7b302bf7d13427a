"""Shipping: incremental chunks with commit points in the state store, resume, sinks (a directory and a real
OpenSSH SFTP server with a pinned host key), retention, `bastion ship`, and 20 concurrent sessions."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.audit.log import read_events
from bastion.config import Config
from bastion.recording.ship import Shipper, nudge
from bastion.recording.sinks import DirSink, SftpSink, SinkError
from bastion.store import TinyDBStore
from tests.recording_helpers import (
    PtyLogin,
    SftpHost,
    asciinema_cat,
    bastion,
    dir_sink,
    recording_config,
    session_dirs,
    ship_once,
    start_sftp_host,
)
from tests.sshd import sshd_unavailable_reason

NO_SSHD = sshd_unavailable_reason()


def _store(config: Config) -> TinyDBStore:
    return TinyDBStore(Path(config.bastion.state.removeprefix("tinydb:")))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_streams_ship_incrementally_and_resume_from_their_commit_points(tmp_path: Path) -> None:
    config = recording_config(tmp_path, sink=dir_sink(tmp_path / "sink"))
    store = _store(config)
    local = tmp_path / "stream.cast"
    remote = "bastion-test/sessions/s-20250101T000000-0123456789ab/session.cast"
    sink_file = tmp_path / "sink" / remote
    first = Shipper(config, store, DirSink(tmp_path / "sink"))
    local.write_bytes(b"header\n" + b"x" * 5000 + b"\n")
    assert first.ship_stream(local, remote, upto=local.stat().st_size, final=True) == 5008
    assert store.get_progress(first.key(remote)) == 5008
    with open(local, "ab") as f:
        f.write(b"second line\n" + b"torn tail without newline")
    from bastion.recording.spool import whole_lines_size

    first.ship_stream(local, remote, upto=whole_lines_size(local), final=True)
    assert sink_file.read_bytes() == b"header\n" + b"x" * 5000 + b"\nsecond line\n"  # only whole lines

    # a new process (nothing in memory) resumes from the store's commit point: it writes only what is new
    with open(local, "ab") as f:
        f.write(b"\n")
    sink_file.write_bytes(sink_file.read_bytes()[:5008] + b"SECOND LINE\n")  # prove old bytes are not resent
    again = Shipper(config, store, DirSink(tmp_path / "sink"))
    again.ship_stream(local, remote, upto=local.stat().st_size, final=True)
    assert sink_file.read_bytes()[:5020] == b"header\n" + b"x" * 5000 + b"\nSECOND LINE\n"
    assert sink_file.read_bytes()[5020:] == local.read_bytes()[5020:]

    # a sink that lost acknowledged bytes (restored from an old backup) is never trusted beyond what it has
    sink_file.write_bytes(sink_file.read_bytes()[:100])
    third = Shipper(config, store, DirSink(tmp_path / "sink"))
    third.ship_stream(local, remote, upto=local.stat().st_size, final=True)
    assert sink_file.read_bytes() == local.read_bytes()


def test_retention_keeps_shipped_sessions_then_removes_them_and_their_commit_points(tmp_path: Path) -> None:
    config = recording_config(tmp_path, sink=dir_sink(tmp_path / "sink"), retention="1h")
    session = PtyLogin.spawn(config, env={"RECTEST_LINES": "20", "RECTEST_INTERVAL": "0"})
    try:
        assert session.wait(30) == 0
    finally:
        session.close()
    (directory,) = session_dirs(config.bastion.spool / "sessions")
    assert (directory / ".shipped").exists(), "the session end shipped everything and stamped it"
    store = _store(config)
    shipper = Shipper(config, store, DirSink(tmp_path / "sink"))
    key = shipper.key(shipper.remote_session(directory.name, "session.cast"))
    assert store.get_progress(key) == (directory / "session.cast").stat().st_size
    assert not shipper.remove_if_due(directory)  # within retention
    assert shipper.remove_if_due(directory, now=time.time() + 2 * 3600)
    assert not directory.exists() and store.get_progress(key) is None
    assert (tmp_path / "sink" / "bastion-test" / "sessions" / directory.name / "manifest.json").exists()


def test_a_session_ships_while_it_runs(tmp_path: Path) -> None:
    """Lines reach the sink within about a second of being shown, long before the session ends."""
    config = recording_config(tmp_path, sink=dir_sink(tmp_path / "sink"))
    session = PtyLogin.spawn(config, env={"RECTEST_LINES": "400", "RECTEST_INTERVAL": "0.01"})
    try:
        session.read(10, until=b"tick 000100")
        shown_at = time.time()
        time.sleep(1.2)
        assert session.poll() is None, "the session should still be running"
        (cast,) = (tmp_path / "sink").rglob("session.cast")
        shipped = [float(t) for t in re.findall(rb"tick \d+ t=(\d+\.\d+)", cast.read_bytes())]
        assert shipped and max(shipped) >= shown_at - 0.5, "shown output did not reach the sink in time"
        assert session.wait(30) == 0
    finally:
        session.close()


def test_ship_once_yields_to_a_running_ship_and_logins_nudge_at_most_every_few_seconds(
    tmp_path: Path,
) -> None:
    config = recording_config(tmp_path, sink=dir_sink(tmp_path / "sink"))
    assert nudge(config) is True
    assert nudge(config) is False  # rate-limited
    import fcntl

    lock = os.open(config.bastion.spool / ".ship" / "ship.lock", os.O_RDWR)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        started = time.monotonic()
        done = bastion("ship", "--once", "--config", str(config.path))
        assert done.returncode == 0 and "another ship is running" in done.stderr
        assert time.monotonic() - started < 5
        assert nudge(config, force=True) is False  # a ship is running: nothing to start
    finally:
        os.close(lock)
    done = ship_once(config)
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------- SFTP


@pytest.fixture(scope="module")
def sftp_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SftpHost]:
    if NO_SSHD:
        pytest.skip(NO_SSHD)
    host = start_sftp_host(tmp_path_factory.mktemp("sftp-host"))
    try:
        yield host
    finally:
        host.stop()


def test_sftp_sink_pins_the_host_key_and_writes_durably(sftp_host: SftpHost, tmp_path: Path) -> None:
    from tests.configs import HOST_KEY

    wrong = recording_config(tmp_path / "wrong", sink=sftp_host.sink_toml(host_key_line=HOST_KEY))
    assert wrong.recording.sink is not None
    sink = SftpSink(wrong.recording.sink)
    with pytest.raises(SinkError):
        sink.probe()  # another key than the one pinned: refused, never learned
    sink.close()
    right = recording_config(tmp_path / "right", sink=sftp_host.sink_toml())
    assert right.recording.sink is not None
    sink = SftpSink(right.recording.sink)
    try:
        sink.probe()
        assert sink.size("t/a.cast") is None
        sink.write_at("t/a.cast", 0, b"hello ")
        sink.write_at("t/a.cast", 6, b"world\n")
        assert sink.size("t/a.cast") == 12
        assert sink.sha256("t/a.cast") == hashlib.sha256(b"hello world\n").hexdigest()
        sink.truncate("t/a.cast", 5)
        sink.put("t/head", b"one")
        sink.put("t/head", b"two")
        assert (sftp_host.root / "t" / "a.cast").read_bytes() == b"hello"
        assert (sftp_host.root / "t" / "head").read_bytes() == b"two"
        with pytest.raises(SinkError):
            sink.write_at("../escape", 0, b"x")
    finally:
        sink.close()


# ---------------------------------------------------------------- many sessions, one sink


def test_twenty_concurrent_sessions_ship_to_one_sink_without_interleaving_or_loss(tmp_path: Path) -> None:
    config = recording_config(tmp_path, sink=dir_sink(tmp_path / "sink"), retention="1h")
    lines = 150
    sessions = [
        PtyLogin.spawn(config, env={"RECTEST_LINES": str(lines), "RECTEST_INTERVAL": "0.01", "RECTEST_TAG": f"S{i:02d}"})
        for i in range(20)
    ]  # fmt: skip
    try:
        codes = [s.wait(90) for s in sessions]
    finally:
        for s in sessions:
            s.close()
    assert codes == [0] * 20, [s.output[-200:] for s in sessions if s.status != 0]
    assert ship_once(config).returncode == 0
    shipped = list(session_dirs(tmp_path / "sink" / "bastion-test" / "sessions"))
    assert len(shipped) == 20
    tags = set()
    for directory in shipped:
        manifest = json.loads((directory / "manifest.json").read_text())["manifest"]
        for entry in manifest["files"]:
            assert _sha(directory / entry["name"]) == entry["sha256"]
            assert _sha(config.bastion.spool / "sessions" / directory.name / entry["name"]) == entry["sha256"]
        text = asciinema_cat(directory / "session.cast").decode()
        ticks = re.findall(r"(S\d\d) tick (\d+)", text)
        (tag,) = {t for t, _ in ticks}  # one session's lines only: no interleaving
        tags.add(tag)
        assert [int(n) for _, n in ticks] == list(range(lines)), f"{tag}: lines lost or out of order"
        assert f"{tag} done {lines}" in text
    assert len(tags) == 20
    verify = bastion(
        "audit", "verify", str(tmp_path / "sink" / "bastion-test" / "audit" / "bastion-test.jsonl"),
        "--key", f"{config.audit.signing_key}.pub", "--complete",
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout
    assert "20 recordings match" in verify.stdout
    sealed = [r for r in read_events(config.audit.log) if r["type"] == "recording_sealed"]
    assert len(sealed) == 20
