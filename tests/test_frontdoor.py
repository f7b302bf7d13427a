"""The front door, end to end: a real OpenSSH sshd with `bastion sshd-config`'s snippet and
`bastion authorized-keys` as its AuthorizedKeysCommand, driven by OpenSSH ssh and by paramiko."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest

from bastion.audit.signing import load_public_key
from bastion.audit.verify import verify_log
from bastion.config import load_config
from bastion.frontdoor import authorized_keys_line, sshd_config_snippet
from bastion.identity.keys import parse_public_key
from tests.configs import base_config, ssh_keypair
from tests.sshd import Sshd, Workspace, make_workspace, service_account, sshd_unavailable_reason, start_sshd

REASON = sshd_unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


@dataclass
class FrontDoor:
    sshd: Sshd
    workspace: Workspace
    config_path: Path
    account: str
    alice_key: Path
    bob_key: Path
    stranger_key: Path

    def ssh(
        self, key: Path, *command: str, tty: bool = False, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        argv = [
            "ssh", "-p", str(self.sshd.port), "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-tt" if tty else "-T", f"{self.account}@127.0.0.1", *command,
        ]  # fmt: skip
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def front_door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FrontDoor]:
    account, fallback = service_account()
    if fallback:
        print(f"front door: {fallback}")
    workspace = make_workspace(account)
    keys = tmp_path_factory.mktemp("client-keys")
    alice_pub = ssh_keypair(keys / "alice", "alice@laptop")
    bob_pub = ssh_keypair(keys / "bob", "bob@laptop")
    ssh_keypair(keys / "stranger", "stranger@nowhere")
    text = base_config(
        workspace.root,
        alice_key=alice_pub,
        bob_key=bob_pub,
        service_user=account,
        command=str(workspace.wrapper),
    )
    text = text.replace('name = "bob"', 'name = "bob"\ndisabled = true')
    config_path = workspace.root / "bastion.toml"
    config_path.write_text(text)
    subprocess.run(
        [str(workspace.wrapper), "keygen", "--config", str(config_path)], check=True, capture_output=True
    )
    workspace.chown()
    snippet = subprocess.run(
        [str(workspace.wrapper), "sshd-config", "--config", str(config_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "sshd will refuse" not in snippet.stderr, snippet.stderr
    # Test-only override, read before the snippet (sshd keeps the first value): root login when root must serve.
    prefix = "PermitRootLogin prohibit-password\n" if account == "root" else ""
    sshd = start_sshd(workspace.root / "sshd", prefix + snippet.stdout)
    try:
        yield FrontDoor(
            sshd, workspace, config_path, account, keys / "alice", keys / "bob", keys / "stranger"
        )
    finally:
        sshd.stop()
        workspace.cleanup()


def test_registered_key_logs_in_and_runs_headless_whoami(front_door: FrontDoor) -> None:
    result = front_door.ssh(front_door.alice_key, "whoami", "--json")
    assert result.returncode == 0, (result.stderr, front_door.sshd.log()[-2000:])
    info = json.loads(result.stdout)
    assert info["user"] == "alice"
    assert info["roles"] == ["developer"]
    assert info["key"] == parse_public_key(Path(f"{front_door.alice_key}.pub").read_text()).fingerprint
    assert info["bastion"] == "bastion-test"


def test_unregistered_key_is_refused(front_door: FrontDoor) -> None:
    result = front_door.ssh(front_door.stranger_key, "whoami")
    assert result.returncode == 255
    assert "Permission denied (publickey)" in result.stderr


def test_disabled_user_is_refused(front_door: FrontDoor) -> None:
    result = front_door.ssh(front_door.bob_key, "whoami")
    assert result.returncode == 255
    assert "Permission denied" in result.stderr


def test_unknown_command_is_refused_without_shell(front_door: FrontDoor) -> None:
    result = front_door.ssh(front_door.alice_key, "bash", "-c", "id")
    assert result.returncode == 2
    assert "unknown command 'bash'" in result.stderr and "whoami" in result.stderr
    assert "uid=" not in result.stdout
    result = front_door.ssh(front_door.alice_key, "whoami; id")
    assert result.returncode == 2 and "uid=" not in result.stdout


def test_no_pty_without_command_gets_clear_message(front_door: FrontDoor) -> None:
    result = front_door.ssh(front_door.alice_key)
    assert result.returncode == 1
    assert "bastion needs a terminal: use ssh -t" in result.stderr


def test_paramiko_login_and_forwarding_refused(front_door: FrontDoor) -> None:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507 - throwaway loopback sshd
    client.connect(
        "127.0.0.1", port=front_door.sshd.port, username=front_door.account,
        key_filename=str(front_door.alice_key), look_for_keys=False, allow_agent=False,
    )  # fmt: skip
    try:
        _, stdout, _ = client.exec_command("whoami")
        assert "alice" in stdout.read().decode()
        transport = client.get_transport()
        assert transport is not None
        with pytest.raises(paramiko.ChannelException):
            transport.open_channel("direct-tcpip", ("127.0.0.1", front_door.sshd.port), ("127.0.0.1", 0))
        with pytest.raises(paramiko.SSHException):
            client.open_sftp()
        channel = transport.open_session()
        channel.update_environment({"PYTHONPATH": "/tmp/evil", "LANG": "C.UTF-8"})
        channel.exec_command("whoami --json")
        output = channel.makefile().read().decode()
        assert json.loads(output)["user"] == "alice"
    finally:
        client.close()


def test_logins_are_audited_and_chain_verifies(front_door: FrontDoor) -> None:
    assert front_door.ssh(front_door.alice_key, "whoami").returncode == 0
    config = load_config(front_door.config_path)
    events = [json.loads(line) for line in config.audit.log.read_text().splitlines()]
    starts = [e for e in events if e["type"] == "session_start" and e["user"] == "alice"]
    ends = [e for e in events if e["type"] == "session_end" and e["user"] == "alice"]
    assert starts and ends and {e["session"] for e in starts} >= {e["session"] for e in ends}
    assert any(e["type"] == "config_change" for e in events)
    report = verify_log(config.audit.log, load_public_key(Path(f"{config.audit.signing_key}.pub")))
    assert report.ok, report.problem
    result = subprocess.run(
        [str(front_door.workspace.wrapper), "audit", "verify", "--config", str(front_door.config_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0 and "OK" in result.stdout


def test_authorized_keys_output_and_snippet_shape(front_door: FrontDoor) -> None:
    config = load_config(front_door.config_path)
    alice = parse_public_key(Path(f"{front_door.alice_key}.pub").read_text())
    line = authorized_keys_line(config, front_door.account, alice.key_type, alice.base64)
    assert line is not None
    assert line.startswith(f'restrict,pty,command="{front_door.workspace.wrapper} login --config ')
    assert f'--key {alice.fingerprint}" {alice.key_type} {alice.base64}' in line
    assert authorized_keys_line(config, "someone-else", alice.key_type, alice.base64) is None
    assert authorized_keys_line(config, front_door.account, "ssh-ed25519", "AAAA") is None
    snippet = sshd_config_snippet(config)
    for expected in ("DisableForwarding yes", "PermitUserEnvironment no", "AcceptEnv LANG LC_*", "PermitTTY yes",
                     "X11Forwarding no", "AllowAgentForwarding no", "PermitTunnel no", "AuthorizedKeysFile none"):  # fmt: skip
        assert expected in snippet
    assert "Subsystem" not in snippet.replace("no Subsystem", "")
