"""Private OpenSSH sshd instances on loopback ports: the demo's front door and SSH target, and the tests'.

sshd runs an AuthorizedKeysCommand only from a root-owned path whose every parent is root-owned and not
group/other-writable, and with StrictModes it holds authorized_keys files to the same rule — which is why
nothing sshd must trust can live under /tmp or /var/tmp (world-writable). The front door logs people into an
unprivileged service account when that account can run this checkout's virtualenv; otherwise (a checkout the
account cannot read) it falls back to root, and says so.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastion.demo.system import SSHD, die_with_parent, stop_process

SERVICE_ACCOUNT = "bastion-svc"


def free_port() -> int:
    """A loopback port nobody listens on right now (the caller retries if it loses the race)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def wait_for_port(port: int, timeout: float = 10.0, process: subprocess.Popen[bytes] | None = None) -> None:
    """Until something answers with an SSH banner; fails early when the process it waits for has died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                if sock.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing answered SSH on 127.0.0.1:{port}")


def sshd_unavailable_reason() -> str | None:
    if not os.path.exists(SSHD):
        return f"{SSHD} is missing (./run test installs openssh-server)"
    if os.geteuid() != 0:
        return "the front-door tests need root: sshd must switch to the service account"
    return None


def write_private(path: Path, data: bytes) -> None:
    """Create a secret file 0600 from its first byte (never briefly readable by others)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def ssh_keypair(path: Path, comment: str) -> str:
    """An Ed25519 key pair in OpenSSH format (path 0600, path.pub); returns the public key line.

    Generated in-process rather than by ssh-keygen: no subprocess per key keeps the demo's start fast.
    """
    private = Ed25519PrivateKey.generate()
    write_private(
        path,
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ),
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    line = f"{public.decode()} {comment}"
    Path(f"{path}.pub").write_text(line + "\n")
    return line


@dataclass
class Sshd:
    """A running private sshd; stop() ends it and every session it started."""

    port: int
    config_path: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    extra: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def host_key_pub(self) -> str:
        """The host key as "TYPE BASE64" (what a connection pins, and known_hosts holds)."""
        return " ".join(self.extra["host_key_pub"].split()[:2])

    def stop(self) -> None:
        stop_process(self.process)


def start_sshd(
    workdir: Path,
    body: str,
    *,
    host_key: Path | None = None,
    port: int | None = None,
    strict_modes: bool = True,
) -> Sshd:
    """Start sshd -D on a loopback port (free one unless given) with body after the basics.

    The basics (port, listen address, host key, pid file, logging) come first: sshd keeps the first value it
    reads for most options. It runs in a session of its own so a terminal's Ctrl+C reaches only the caller,
    and gets SIGTERM if its parent dies without stopping it.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    if host_key is None:
        host_key = workdir / "ssh_host_ed25519_key"
        if not host_key.exists():
            ssh_keypair(host_key, "host")
    attempts = 1 if port is not None else 3
    for attempt in range(attempts):
        chosen = port if port is not None else free_port()
        try:
            return _start_once(workdir, body, host_key, chosen, strict_modes)
        except _PortTaken:
            if attempt == attempts - 1:
                raise RuntimeError(f"sshd cannot listen on 127.0.0.1:{chosen}: address in use") from None
    raise AssertionError("unreachable")


class _PortTaken(Exception):
    pass


def _start_once(workdir: Path, body: str, host_key: Path, port: int, strict_modes: bool) -> Sshd:
    config = workdir / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {workdir / 'sshd.pid'}\n"
        f"LogLevel VERBOSE\nUsePAM no\nStrictModes {'yes' if strict_modes else 'no'}\n{body}"
    )
    check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"sshd refused the config: {check.stderr.strip()}")
    log = workdir / "sshd.log"
    with open(log, "wb") as log_handle:
        process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log_handle,
            stderr=log_handle,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),  # services are started from one thread only
        )
    try:
        wait_for_port(port, process=process)
    except TimeoutError:
        stop_process(process)
        text = log.read_text(errors="replace")
        if "Address already in use" in text:
            raise _PortTaken from None
        raise RuntimeError(f"sshd did not start: {text.strip()[-500:]}") from None
    pub = Path(f"{host_key}.pub").read_text().strip()
    return Sshd(port, config, log, process, {"host_key_pub": pub})


def run_as(account: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", account, "--", *argv], capture_output=True, text=True)


def service_account() -> tuple[str, str | None]:
    """(account, fallback reason): an unprivileged account that can run this checkout's bastion, else root."""
    try:
        pwd.getpwnam(SERVICE_ACCOUNT)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--create-home", "--home-dir", f"/var/lib/{SERVICE_ACCOUNT}",
             "--shell", "/bin/sh", SERVICE_ACCOUNT],
            check=True, capture_output=True,
        )  # fmt: skip
    # An account whose password field is "!" counts as locked for sshd even for public keys.
    subprocess.run(["usermod", "-p", "*", SERVICE_ACCOUNT], check=True, capture_output=True)
    probe = run_as(SERVICE_ACCOUNT, sys.executable, "-c", "import bastion.cli")
    if probe.returncode == 0:
        return SERVICE_ACCOUNT, None
    reason = (
        f"{SERVICE_ACCOUNT} cannot run {sys.executable} from this checkout "
        f"({probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else 'permission denied'}); "
        "using root as the service account"
    )
    return "root", reason
