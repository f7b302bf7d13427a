"""`bastion audit verify` and `bastion ship` against a deleted manifest: the audit log remembers every seal,
so a manifest removed after sealing fails verification and is never re-sealed over edited files; a session
sealed twice fails; with --complete a recording the log says started must exist in some copy."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

from bastion.audit.log import AuditLog, read_events
from bastion.audit.signing import load_private_key, load_public_key
from bastion.config import Config
from bastion.recording.ship import sealed_payload, ship_lock_path
from bastion.recording.spool import MANIFEST, SHIPPED_STAMP, Spool
from bastion.recording.verify import other_copies, verify_recordings
from tests.recording_helpers import PtyLogin, bastion, dir_sink, recording_config, session_dirs, ship_once


def _recorded(tmp_path: Path, lines: str = "40") -> tuple[Config, Path]:
    """One ended, sealed and shipped session; the spool keeps its copy (retention 1h)."""
    config = recording_config(tmp_path, sink=dir_sink(tmp_path / "sink"), retention="1h")
    session = PtyLogin.spawn(config, env={"RECTEST_LINES": lines, "RECTEST_INTERVAL": "0"})
    try:
        assert session.wait(30) == 0, session.output[-300:]
    finally:
        session.close()
    (directory,) = session_dirs(config.bastion.spool / "sessions")
    assert (directory / MANIFEST).exists() and (directory / SHIPPED_STAMP).exists()
    return config, directory


def _verify(config: Config, directory: Path, *, complete: bool = False) -> list[str]:
    key = load_public_key(f"{config.audit.signing_key}.pub")
    report = verify_recordings(directory.parent, [key], config.audit.log, complete=complete)
    return report.problems


def _of(config: Config, session: str, type_: str) -> list[dict]:
    return [r for r in read_events(config.audit.log) if r["session"] == session and r["type"] == type_]


def test_a_manifest_deleted_after_sealing_fails_verify(tmp_path: Path) -> None:
    config, directory = _recorded(tmp_path)
    assert _verify(config, directory) == []
    (directory / MANIFEST).unlink()
    for complete in (False, True):
        (problem,) = _verify(config, directory, complete=complete)
        assert problem.startswith(directory.name) and "manifest.json is missing" in problem
        assert "recorded its seal" in problem
    done = bastion("audit", "verify", "--config", str(config.path))
    assert done.returncode == 1 and "deleted after sealing" in done.stdout, done.stdout


def test_ship_never_reseals_a_recording_the_log_shows_sealed(tmp_path: Path) -> None:
    """Delete manifest and stamp, edit the cast, ship: no fresh signature over the edit, and a refusal in the
    audit log (once, however often ship runs)."""
    config, directory = _recorded(tmp_path)
    (directory / MANIFEST).unlink()
    (directory / SHIPPED_STAMP).unlink()
    cast = directory / "session.cast"
    cast.write_bytes(cast.read_bytes().replace(b"tick 000007", b"tick 000070", 1))
    for _ in range(2):
        shipped = ship_once(config)
        assert shipped.returncode == 1 and "NOT re-sealed" in shipped.stderr, shipped.stderr
        assert "0 sealed" in shipped.stderr
    assert not (directory / MANIFEST).exists()
    assert len(_of(config, directory.name, "recording_sealed")) == 1
    (refusal,) = _of(config, directory.name, "recording_seal_refused")
    assert "sealed before" in refusal["payload"]["reason"]
    sink_copy = tmp_path / "sink" / "bastion-test" / "sessions" / directory.name
    assert b"tick 000070" not in (sink_copy / "session.cast").read_bytes()  # the sink kept the sealed one
    assert any("manifest.json is missing" in p for p in _verify(config, directory))


def test_a_session_sealed_twice_in_the_log_fails_verify(tmp_path: Path) -> None:
    """A second recording_sealed (an older ship re-sealing, or a key holder) fails even when it names the
    manifest that is there."""
    config, directory = _recorded(tmp_path)
    assert _verify(config, directory) == []
    audit = AuditLog(config.audit.log, config.bastion.name, load_private_key(config.audit.signing_key))
    audit.append(
        "recording_sealed",
        sealed_payload((directory / MANIFEST).read_bytes(), "ship"),
        session=directory.name,
        user="alice",
    )
    audit.sync()
    (problem,) = _verify(config, directory)
    assert "sealed more than once in the audit log" in problem and problem.startswith(directory.name)
    assert bastion("audit", "verify", "--config", str(config.path)).returncode == 1


def test_complete_fails_on_a_started_recording_that_no_copy_holds(tmp_path: Path) -> None:
    """Killed before its seal and never shipped (the sink was down): the spool holds the only copy. Checking
    the sink with --complete is fine while the spool has it; once it is gone everywhere it is missing."""
    missing_sink = tmp_path / "sink"
    config = recording_config(
        tmp_path, sink=f'type = "dir"\npath = "{missing_sink}"', failure="best_effort", retention="1h"
    )
    Spool.of(config).ensure()
    ship_lock = os.open(ship_lock_path(config), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(ship_lock, fcntl.LOCK_EX)  # the login's nudged ship must not end and seal it
    session = PtyLogin.spawn(config, env={"RECTEST_INTERVAL": "0.01"})
    try:
        assert b"tick 000020" in session.read(20, until=b"tick 000020")
        session.kill9()
    finally:
        session.close()
        os.close(ship_lock)
    (directory,) = session_dirs(config.bastion.spool / "sessions")
    assert not (directory / MANIFEST).exists()
    sink_sessions = missing_sink / "bastion-test" / "sessions"
    sink_sessions.mkdir(parents=True)

    key = load_public_key(f"{config.audit.signing_key}.pub")

    def problems() -> list[str]:
        with other_copies(config, sink_sessions) as elsewhere:
            report = verify_recordings(
                sink_sessions, [key], config.audit.log, complete=True, elsewhere=elsewhere
            )
        return report.problems

    assert problems() == []  # only in the spool: not missing
    shutil.rmtree(directory)
    assert problems() == [
        f"{directory.name}: recording missing — started in the audit log, in no copy (spool, sink)"
    ]
    done = bastion(
        "audit", "verify", "--config", str(config.path), "--recordings", str(sink_sessions), "--complete"
    )
    assert f"{directory.name}: recording missing" in done.stdout, done.stdout
    # without --complete a copy need not hold everything
    with other_copies(config, sink_sessions) as elsewhere:
        assert verify_recordings(sink_sessions, [key], config.audit.log, elsewhere=elsewhere).ok
