"""Real OpenSSH sshd instances on loopback ports for tests: the front door and SSH targets.

sshd runs AuthorizedKeysCommand only from a root-owned path whose every parent is root-owned and not
group/other-writable, so the bastion wrapper it calls is placed under /run (never /tmp). The front door
logs people into an unprivileged service account when that account can run the project's virtualenv;
otherwise (a checkout the account cannot read) it falls back to root, and says so.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
SERVICE_ACCOUNT = "bastion-svc"
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                if sock.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing answered SSH on 127.0.0.1:{port}")


def sshd_unavailable_reason() -> str | None:
    if not os.path.exists(SSHD):
        return f"{SSHD} is missing (./run test installs openssh-server)"
    if os.geteuid() != 0:
        return "the front-door tests need root: sshd must switch to the service account"
    return None


@dataclass
class Sshd:
    """A running private sshd; stop() ends it."""

    port: int
    config_path: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    extra: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_sshd(workdir: Path, body: str, *, host_key: Path | None = None) -> Sshd:
    """Start sshd -D on a free loopback port with body appended to the basics (port, host key, pid file)."""
    workdir.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    if host_key is None:
        host_key = workdir / "ssh_host_ed25519_key"
        if not host_key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    port = free_port()
    config = workdir / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {workdir / 'sshd.pid'}\n"
        f"LogLevel VERBOSE\nUsePAM no\nStrictModes yes\n{body}"
    )
    check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"sshd refused the config: {check.stderr.strip()}")
    log = workdir / "sshd.log"
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=open(log, "wb"))  # noqa: SIM115
    try:
        wait_for_port(port)
    except TimeoutError:
        process.kill()
        raise RuntimeError(f"sshd did not start: {log.read_text(errors='replace')}") from None
    return Sshd(port, config, log, process, {"host_key_pub": Path(f"{host_key}.pub").read_text().strip()})


def _run_as(account: str, *argv: str) -> subprocess.CompletedProcess[str]:
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
    probe = _run_as(SERVICE_ACCOUNT, sys.executable, "-c", "import bastion.cli")
    if probe.returncode == 0:
        return SERVICE_ACCOUNT, None
    reason = (
        f"{SERVICE_ACCOUNT} cannot run {sys.executable} from this checkout "
        f"({probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else 'permission denied'}); "
        "using root as the service account"
    )
    return "root", reason


@dataclass
class Workspace:
    """A directory the service account owns, outside pytest's private tmp, plus the sshd-safe wrapper."""

    root: Path
    account: str
    wrapper: Path

    def chown(self) -> None:
        info = pwd.getpwnam(self.account)
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in [*dirnames, *filenames, "."]:
                os.chown(os.path.join(dirpath, name), info.pw_uid, info.pw_gid, follow_symlinks=False)

    def run_as(self, *argv: str) -> subprocess.CompletedProcess[str]:
        if self.account == "root":
            return subprocess.run(list(argv), capture_output=True, text=True)
        return _run_as(self.account, *argv)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.wrapper.parent, ignore_errors=True)


def make_workspace(account: str) -> Workspace:
    root = Path(tempfile.mkdtemp(prefix="bastion-e2e-", dir="/var/tmp"))
    os.chmod(root, 0o750)
    base = Path("/run/bastion-tests")
    base.mkdir(mode=0o755, exist_ok=True)
    os.chmod(base, 0o755)
    wrapper_dir = Path(tempfile.mkdtemp(prefix="w-", dir=base))
    os.chmod(wrapper_dir, 0o755)
    wrapper = wrapper_dir / "bastion"
    # The wrapper runs this checkout's bastion; sshd checks only the wrapper's own path.
    console_script = Path(sys.executable).parent / "bastion"
    wrapper.write_text(f'#!/bin/sh\nexec {console_script} "$@"\n')
    os.chmod(wrapper, 0o755)
    workspace = Workspace(root, account, wrapper)
    workspace.chown()
    return workspace
