"""Recording reliability with real processes: kill -9 of a session while it prints, the SFTP sink stopped
while best_effort sessions run, ENOSPC on a real (tmpfs) spool in strict mode, the free-space floor ending a
running session, and the front door end to end (OpenSSH ssh -tt → sshd → recorded TUI → asciinema cat).

ENOSPC is real: the spool is a small tmpfs mounted for the test (root only), never an injected error."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bastion.audit.log import AuditLog, read_events
from bastion.audit.signing import load_private_key
from bastion.config import Config, load_config
from bastion.recording.ship import SINK_DOWN_META, Shipper
from bastion.recording.sinks import open_sink
from bastion.store import TinyDBStore
from tests.configs import ssh_keypair
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
from tests.sshd import make_workspace, service_account, sshd_unavailable_reason, start_sshd

NO_SSHD = sshd_unavailable_reason()
TICK = re.compile(r"tick (\d+) t=(\d+\.\d+)")


def _store(config: Config) -> TinyDBStore:
    return TinyDBStore(Path(config.bastion.state.removeprefix("tinydb:")))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _verify(log: Path, config: Config, *extra: str) -> subprocess.CompletedProcess[str]:
    return bastion("audit", "verify", str(log), "--key", f"{config.audit.signing_key}.pub", *extra)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: a disk that really fills up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "spool"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount)])
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


# ---------------------------------------------------------------- kill -9


def test_kill_9_while_printing_loses_at_most_a_second(tmp_path: Path) -> None:
    config = recording_config(tmp_path, sink=dir_sink(tmp_path / "sink"))
    session = PtyLogin.spawn(config, env={"RECTEST_INTERVAL": "0.005"})
    try:
        assert b"tick 000200" in session.read(20, until=b"tick 000200")
        session.read(1.0)
        killed_at = time.time()
        session.kill9()
    finally:
        session.close()
    shipped = ship_once(config)  # ends the dead session, seals and ships its leftovers
    assert shipped.returncode == 0, shipped.stderr
    assert "1 dead sessions ended abnormal" in shipped.stderr and "1 sealed" in shipped.stderr

    (directory,) = session_dirs(tmp_path / "sink" / "bastion-test" / "sessions")
    ticks = [(int(n), float(t)) for n, t in TICK.findall(asciinema_cat(directory / "session.cast").decode())]
    assert [n for n, _ in ticks] == list(range(len(ticks))), "lines lost in the middle"
    assert ticks[-1][1] >= killed_at - 1.0, f"the sink stops {killed_at - ticks[-1][1]:.2f} s before the kill"
    manifest = json.loads((directory / "manifest.json").read_text())["manifest"]
    assert manifest["status"] == "abnormal" and manifest["sealed_by"] == "ship"

    (record,) = _store(config).list_sessions()
    assert record.status == "abnormal"
    ends = [r for r in read_events(config.audit.log) if r["type"] == "session_end"]
    assert (
        ends[-1]["payload"]["status"] == "abnormal" and ends[-1]["payload"]["detected_by"] == "bastion ship"
    )
    assert _verify(config.audit.log, config).returncode == 0  # the spool's copy (retention 0: emptied)
    verified = _verify(
        tmp_path / "sink" / "bastion-test" / "audit" / "bastion-test.jsonl", config, "--complete"
    )
    assert verified.returncode == 0 and "1 recordings match" in verified.stdout, verified.stdout


# ---------------------------------------------------------------- the sink goes down


@pytest.fixture
def sftp_host(tmp_path: Path) -> Iterator[SftpHost]:
    if NO_SSHD:
        pytest.skip(NO_SSHD)
    host = start_sftp_host(tmp_path / "sftp-host")
    try:
        yield host
    finally:
        host.stop()


def test_sink_down_while_best_effort_sessions_run_loses_nothing(tmp_path: Path, sftp_host: SftpHost) -> None:
    config = recording_config(
        tmp_path / "bastion", sink=sftp_host.sink_toml(), failure="best_effort", retention="1h"
    )
    lines = 300
    sessions = [
        PtyLogin.spawn(config, env={"RECTEST_LINES": str(lines), "RECTEST_INTERVAL": "0.01", "RECTEST_TAG": f"S{i}"})
        for i in range(3)
    ]  # fmt: skip
    try:
        for session in sessions:
            assert b"tick 000030" in session.read(15, until=b"tick 000030")
        sftp_host.stop()
        codes = [s.wait(60) for s in sessions]
    finally:
        for s in sessions:
            s.close()
    assert codes == [0, 0, 0], [s.output[-300:] for s in sessions]
    for session in sessions:  # the header (here: the frontend's status line) warned
        assert b"sink unreachable" in session.output
    degraded = [r for r in read_events(config.audit.log) if r["type"] == "recording_degraded"]
    assert {r["session"] for r in degraded} == {
        d.name for d in session_dirs(config.bastion.spool / "sessions")
    }
    assert ship_once(config).returncode == 1  # still down: nothing acknowledged, nothing removed

    sftp_host.restart()
    shipped = ship_once(config)
    assert shipped.returncode == 0, shipped.stderr
    remote = sftp_host.root / "bastion-test"
    local_dirs = list(session_dirs(config.bastion.spool / "sessions"))
    assert len(local_dirs) == 3
    for local in local_dirs:
        files = sorted(p.name for p in local.iterdir() if not p.name.startswith("."))
        assert files == sorted(p.name for p in (remote / "sessions" / local.name).iterdir())
        for name in files:  # zero bytes lost: identical files
            assert _sha(local / name) == _sha(remote / "sessions" / local.name / name), name
        text = asciinema_cat(remote / "sessions" / local.name / "session.cast").decode()
        assert [int(n) for n, _ in TICK.findall(text)] == list(range(lines))  # zero events lost
    audit_local, audit_remote = config.audit.log, remote / "audit" / config.audit.log.name
    assert _sha(audit_local) == _sha(audit_remote)
    assert len(list(read_events(audit_local))) == len(list(read_events(audit_remote)))
    verified = _verify(audit_remote, config, "--complete")
    assert verified.returncode == 0 and "3 recordings match" in verified.stdout, verified.stdout


# ---------------------------------------------------------------- the spool fills up


def test_enospc_in_strict_mode_ends_the_session_and_keeps_what_was_written(
    tmp_path: Path, tmpfs: Path
) -> None:
    config = recording_config(
        tmp_path / "b", sink=dir_sink(tmp_path / "sink"), floor="0", retention="1h", spool=tmpfs,
        audit_log=tmp_path / "audit" / "bastion-test.jsonl",
    )  # fmt: skip
    session = PtyLogin.spawn(config, env={"RECTEST_INTERVAL": "0"})
    try:
        code = session.wait(60)
    finally:
        session.close()
    assert code == 1
    message = session.output.rsplit(b"\x1b[?2004l", 1)[-1].decode()
    assert message.strip().startswith("bastion: recording failed") and "No space left on device" in message
    assert message.strip().count("\n") == 0, "one line for the user"
    (directory,) = session_dirs(tmpfs / "sessions")
    replay = asciinema_cat(directory / "session.cast")
    assert len(replay) > 1_000_000
    assert session.output.startswith(replay), "what the user saw and what was recorded differ"
    shown_ticks = TICK.findall(session.output[: len(replay)].decode())
    assert shown_ticks == TICK.findall(replay.decode())  # nothing shown that was not recorded
    manifest = json.loads((directory / "manifest.json").read_text())["manifest"]
    assert manifest["status"] == "abnormal"
    failed = [r for r in read_events(config.audit.log) if r["type"] == "recording_failed"]
    assert len(failed) == 1 and "No space left" in failed[0]["payload"]["reason"]
    end = next(r for r in read_events(config.audit.log) if r["type"] == "session_end")
    assert "recording failed" in end["payload"]["reason"]
    assert ship_once(config).returncode == 0
    shipped = tmp_path / "sink" / "bastion-test" / "sessions" / directory.name / "session.cast"
    assert _sha(shipped) == _sha(directory / "session.cast")
    assert _verify(config.audit.log, config, "--recordings", str(tmpfs / "sessions")).returncode == 0


def test_free_space_under_half_the_floor_ends_a_running_session(tmp_path: Path, tmpfs: Path) -> None:
    config = recording_config(
        tmp_path / "b", floor="2MiB", failure="best_effort", spool=tmpfs,
        audit_log=tmp_path / "audit" / "bastion-test.jsonl",
    )  # fmt: skip
    session = PtyLogin.spawn(config, env={"RECTEST_INTERVAL": "0.02"})
    try:
        assert b"tick 000010" in session.read(15, until=b"tick 000010")
        ballast = tmpfs / "ballast"
        ballast.write_bytes(b"\0" * int(3.3 * 1024 * 1024))  # leaves < 1 MiB: under half the floor
        code = session.wait(20)
    finally:
        session.close()
    assert code == 1
    assert b"[ended]" in session.output and b"under half the free-space floor" in session.output
    events = list(read_events(config.audit.log))
    assert any(r["type"] == "recording_degraded" and r["payload"]["kind"] == "low_space" for r in events)
    end = next(r for r in events if r["type"] == "session_end")
    assert end["payload"]["status"] == "abnormal" and "free-space floor" in end["payload"]["reason"]
    session = PtyLogin.spawn(config)  # and a new session is refused outright
    try:
        assert session.wait(20) == 1
    finally:
        session.close()
    assert b"recording unavailable" in session.output


# ---------------------------------------------------------------- the front door, end to end


@pytest.mark.skipif(NO_SSHD is not None, reason=NO_SSHD or "")
def test_ssh_lands_in_the_recorded_tui_and_the_cast_replays_the_landing_screen(tmp_path: Path) -> None:
    account, _ = service_account()
    workspace = make_workspace(account)
    try:
        keys = tmp_path / "keys"
        keys.mkdir()
        alice_pub = ssh_keypair(keys / "alice", "alice@laptop")
        sink = workspace.root / "sink"
        config = recording_config(workspace.root, sink=dir_sink(sink))
        text = config.path.read_text()
        text = re.sub(r'keys = \["ssh-ed25519 [^"]+"\]', f'keys = ["{alice_pub}"]', text, count=1)
        text = text.replace(
            'service_user = "bastion"', f'service_user = "{account}"\ncommand = "{workspace.wrapper}"'
        )
        config.path.write_text(text)
        config = load_config(config.path)
        workspace.chown()
        snippet = bastion("sshd-config", "--config", str(config.path)).stdout
        prefix = "PermitRootLogin prohibit-password\n" if account == "root" else ""
        sshd = start_sshd(workspace.root / "sshd", prefix + snippet)
        try:
            argv = [
                "ssh", "-p", str(sshd.port), "-i", str(keys / "alice"), "-o", "IdentitiesOnly=yes",
                "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", "-tt", f"{account}@127.0.0.1",
            ]  # fmt: skip
            from tests.test_escapes import PtySsh

            client = PtySsh(argv)
            try:
                landing = client.read(30, until=b"pg-readonly")
                assert b"pg-readonly" in landing, landing[-300:]
                client.read(1.5)
                client.send(b"\x11")
                assert client.wait(20) == 0, client.output[-300:]
            finally:
                client.close()
        finally:
            sshd.stop()
        (directory,) = session_dirs(sink / "bastion-test" / "sessions")
        replay = asciinema_cat(directory / "session.cast")
        assert b"Connections" in replay and b"pg-readonly" in replay and b"recording" in replay
        assert replay in client.output, "the client saw something else than what was recorded"
        header = json.loads((directory / "session.cast").read_text().splitlines()[0])
        assert header["bastion"]["user"] == "alice" and header["env"]["TERM"]
        verified = bastion("audit", "verify", "--config", str(config.path))
        assert verified.returncode == 0, verified.stdout
    finally:
        workspace.cleanup()


# ---------------------------------------------------------------- the outage clock for max_lag


def _outage(config: Config) -> dict | None:
    value = _store(config).get_meta(SINK_DOWN_META)
    return value if isinstance(value, dict) else None


def _quiet_passes_keep_the_outage(
    config: Config, stop: Callable[[], None], start: Callable[[], None]
) -> None:
    """A `bastion ship` service's passes (one Shipper) with nothing new to ship: the sink down must stay
    down — no sink call is no answer — and only a real answer clears it."""
    session = PtyLogin.spawn(config, env={"RECTEST_LINES": "20", "RECTEST_INTERVAL": "0"})
    try:
        assert session.wait(30) == 0, session.output[-300:]
    finally:
        session.close()
    store = _store(config)
    audit = AuditLog(config.audit.log, config.bastion.name, load_private_key(config.audit.signing_key))
    shipper = Shipper(config, store, open_sink(config.recording.sink))
    try:
        assert shipper.drain(audit).error is None  # everything shipped: from now on nothing is new
        assert _outage(config) is None
        stop()
        first = shipper.drain(audit)
        assert first.error is not None and first.bytes == 0
        since = _outage(config)
        assert since is not None and since["sink"] == shipper.sink_id
        for _ in range(3):
            assert shipper.drain(audit).error is not None
            assert _outage(config) == since, "a pass that never reached the sink ended the outage"
        start()
        assert shipper.drain(audit).error is None
        assert _outage(config) is None
    finally:
        if shipper.sink is not None:
            shipper.sink.close()


def test_quiet_ship_passes_keep_a_dir_sinks_outage(tmp_path: Path) -> None:
    sink = tmp_path / "sink"
    config = recording_config(tmp_path / "b", sink=dir_sink(sink), retention="1h")
    _quiet_passes_keep_the_outage(
        config, lambda: sink.rename(tmp_path / "sink-away"), lambda: (tmp_path / "sink-away").rename(sink)
    )


def test_quiet_ship_passes_keep_an_sftp_sinks_outage(tmp_path: Path, sftp_host: SftpHost) -> None:
    config = recording_config(tmp_path / "b", sink=sftp_host.sink_toml(), retention="1h")
    _quiet_passes_keep_the_outage(config, sftp_host.stop, sftp_host.restart)


def test_a_live_session_marks_the_sink_down_and_up(tmp_path: Path) -> None:
    """The session's own shipper (not only `bastion ship`) starts the outage clock, and ends it only after
    the sink took its writes again."""
    sink = tmp_path / "sink"
    config = recording_config(tmp_path / "b", sink=dir_sink(sink), failure="best_effort")
    session = PtyLogin.spawn(config, env={"RECTEST_INTERVAL": "0.05"})
    try:
        assert b"tick 000010" in session.read(15, until=b"tick 000010")
        assert _outage(config) is None
        sink.rename(tmp_path / "sink-away")
        deadline = time.monotonic() + 10
        while _outage(config) is None and time.monotonic() < deadline:
            session.read(0.2)
        assert _outage(config) is not None, "the live shipper failed without starting the outage clock"
        (tmp_path / "sink-away").rename(sink)
        deadline = time.monotonic() + 15
        while _outage(config) is not None and time.monotonic() < deadline:
            session.read(0.2)
        assert _outage(config) is None
    finally:
        session.close()
