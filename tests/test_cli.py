"""The `bastion` command as users and sshd run it: exit codes, one-line errors, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bastion.config import load_config
from bastion.identity.keys import parse_public_key
from tests.configs import ALICE_KEY, write_config


def bastion(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bastion", *args], capture_output=True, text=True, env=env)


def test_keygen_creates_once(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    first = bastion("keygen", "--config", str(path))
    assert first.returncode == 0 and "created" in first.stdout
    key = load_config(path).audit.signing_key
    assert key.stat().st_mode & 0o777 == 0o600
    before = key.read_bytes()
    second = bastion("keygen", "--config", str(path))
    assert second.returncode == 0 and "not overwritten" in second.stdout
    assert key.read_bytes() == before


def test_audit_verify_names_the_tampered_record(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    assert bastion("keygen", "--config", str(path)).returncode == 0
    env = {"SSH_ORIGINAL_COMMAND": "whoami", "PATH": "/usr/bin:/bin"}
    fingerprint = parse_public_key(ALICE_KEY).fingerprint
    for _ in range(3):
        assert bastion("login", "--config", str(path), "--key", fingerprint, env=env).returncode == 0
    ok = bastion("audit", "verify", "--config", str(path))
    assert ok.returncode == 0 and "OK" in ok.stdout
    log = load_config(path).audit.log
    lines = log.read_text().splitlines()
    record = json.loads(lines[4])
    record["payload"]["kind"] = "tui"
    lines[4] = json.dumps(record, sort_keys=True, separators=(",", ":"))
    log.write_text("\n".join(lines) + "\n")
    bad = bastion("audit", "verify", "--config", str(path))
    assert bad.returncode == 1
    assert f"seq {record['seq']}" in bad.stdout and "modified" in bad.stdout
    assert "Traceback" not in bad.stdout + bad.stderr


def test_authorized_keys_prints_nothing_for_strangers(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    key = parse_public_key(ALICE_KEY)
    hit = bastion("authorized-keys", "--config", str(path), "bastion", key.key_type, key.base64)
    assert hit.returncode == 0 and hit.stdout.startswith('restrict,pty,command="')
    assert f"--key {key.fingerprint}" in hit.stdout
    for args in (
        ("root", key.key_type, key.base64),
        ("bastion", "ssh-rsa", key.base64),
        ("bastion", "ssh-ed25519", "!!"),
    ):
        miss = bastion("authorized-keys", "--config", str(path), *args)
        assert miss.returncode == 0 and miss.stdout == "", args


def test_usage_errors_exit_2_without_traceback(tmp_path: Path) -> None:
    for args in ((), ("frobnicate",), ("config",), ("login",), ("audit", "verify", "--bogus")):
        result = bastion(*args)
        assert result.returncode == 2, args
        assert "Traceback" not in result.stderr


def test_login_without_terminal_or_command(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    assert bastion("keygen", "--config", str(path)).returncode == 0
    result = bastion(
        "login",
        "--config",
        str(path),
        "--key",
        parse_public_key(ALICE_KEY).fingerprint,
        env={"PATH": "/usr/bin"},
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "bastion: bastion needs a terminal: use ssh -t"


def test_login_refuses_without_signing_key(tmp_path: Path) -> None:
    """No audit key means no audit log, so no session: fail closed with one line."""
    path = write_config(tmp_path)
    env = {"SSH_ORIGINAL_COMMAND": "whoami", "PATH": "/usr/bin"}
    result = bastion(
        "login", "--config", str(path), "--key", parse_public_key(ALICE_KEY).fingerprint, env=env
    )
    assert result.returncode == 1
    assert "audit log unavailable" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_refused_keys_are_audited_at_a_bounded_rate(tmp_path: Path, capsys) -> None:
    """A stranger looping over keys must not fill the audit log: each minute audits a bounded number."""
    from bastion import cli
    from bastion.audit.log import read_events

    path = write_config(tmp_path)
    assert cli.main(["keygen", "--config", str(path)]) == 0
    capsys.readouterr()
    attempts = 3 * cli.KEY_REFUSALS_PER_MINUTE
    for i in range(attempts):
        assert (
            cli.main(["authorized-keys", "--config", str(path), "bastion", "ssh-ed25519", f"AAAA{i:04d}"])
            == 0
        )
    assert capsys.readouterr().out == ""  # nothing authorized
    events = [e for e in read_events(load_config(path).audit.log) if e["type"] == "key_refused"]
    assert events and all(
        e["payload"]["reason"] == "the offered key is not a valid public key" for e in events
    )
    assert len(events) <= 2 * cli.KEY_REFUSALS_PER_MINUTE < attempts  # at most two minute-windows here
