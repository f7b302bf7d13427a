"""Real processes for the recording tests: `bastion login` on a pty we hold (with a test frontend in the
recorded child), `bastion ship`, `asciinema cat`, and a private OpenSSH sshd serving SFTP as the sink."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.audit.signing import generate_key
from bastion.config import Config, load_config
from bastion.identity.keys import parse_public_key
from tests.configs import ALICE_KEY, base_config, write_config
from tests.sshd import Sshd, start_sshd

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
ASCIINEMA = VENV_BIN / "asciinema"
ALICE_FP = parse_public_key(ALICE_KEY).fingerprint

# `bastion login` with the recorded child running tests/recording_frontends.py instead of the TUI.
HARNESS = (
    "import sys, bastion.login as login; login.FRONTEND = sys.argv.pop(1); "
    "from bastion.cli import main; sys.exit(main(sys.argv[1:]))"
)


def recording_config(
    directory: Path,
    *,
    sink: str | None = None,
    failure: str = "strict",
    floor: str = "1MiB",
    retention: str = "0s",
    max_lag: str = "5m",
    audit_log: Path | None = None,
    spool: Path | None = None,
    extra: str = "",
) -> Config:
    """A valid config with a [recording] section; `sink` is the body of [recording.sink] (TOML)."""
    text = base_config(directory, extra=extra)
    if audit_log is not None:
        text = text.replace("[audit]\n", f'[audit]\nlog = "{audit_log}"\n', 1)
    if spool is not None:
        text = text.replace(f'spool = "{directory / "spool"}"', f'spool = "{spool}"', 1)
    text += (
        f'\n[recording]\nfailure = "{failure}"\nfree_space_floor = "{floor}"\nretention = "{retention}"\n'
        f'max_lag = "{max_lag}"\n'
    )
    if sink is not None:
        text += f"\n[recording.sink]\n{sink}\n"
    config = load_config(write_config(directory, text))
    generate_key(config.audit.signing_key)
    return config


def dir_sink(path: Path) -> str:
    path.mkdir(parents=True, exist_ok=True)
    return f'type = "dir"\npath = "{path}"'


@dataclass
class PtyLogin:
    """`bastion login` as sshd would run it, on a pty whose master we read like a fast terminal."""

    pid: int
    fd: int
    output: bytes = b""
    status: int | None = None
    first_output_at: float | None = None
    chunks: list[tuple[float, int]] = field(default_factory=list)

    @classmethod
    def spawn(
        cls,
        config: Config,
        *,
        frontend: str | None = "tests.recording_frontends",
        env: dict[str, str] | None = None,
        size: tuple[int, int] = (100, 30),
    ) -> PtyLogin:
        argv = [sys.executable, "-c", HARNESS, frontend or "tui.app"]
        argv += ["login", "--config", str(config.path), "--key", ALICE_FP]
        environment = {
            "PATH": f"{VENV_BIN}:/usr/bin:/bin",
            "TERM": "xterm-256color",
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(REPO),
            **(env or {}),
        }
        pid, fd = pty.fork()
        if pid == 0:  # pragma: no cover - becomes bastion login
            os.chdir(REPO)
            os.execve(sys.executable, argv, environment)
        cols, rows = size
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        return cls(pid, fd)

    def read(self, seconds: float, until: bytes | None = None) -> bytes:
        deadline = time.monotonic() + seconds
        start = len(self.output)
        while (left := deadline - time.monotonic()) > 0:
            if until is not None and until in self.output[start:]:
                break
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.1))
            if not ready:
                if self.poll() is not None and not select.select([self.fd], [], [], 0)[0]:
                    break
                continue
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            if self.first_output_at is None:
                self.first_output_at = time.monotonic()
            self.output += chunk
        return self.output[start:]

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def resize(self, cols: int, rows: int) -> None:
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def poll(self) -> int | None:
        if self.status is None:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.status = os.waitstatus_to_exitcode(status)
        return self.status

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.read(0.1)
            if self.poll() is not None:
                self.read(0.2)
                return self.status
        return self.poll()

    def children(self) -> list[int]:
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def kill9(self) -> None:
        """SIGKILL to the recorder and its TUI child at once, as a crash or the OOM killer would."""
        kids = self.children()
        os.kill(self.pid, signal.SIGKILL)
        for kid in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(kid, signal.SIGKILL)
        self.wait(10)
        for kid in kids:  # reparented to init (or a subreaper): wait until they are gone
            deadline = time.monotonic() + 10
            while Path(f"/proc/{kid}").exists() and time.monotonic() < deadline:
                time.sleep(0.02)

    def close(self) -> None:
        if self.poll() is None:
            for kid in self.children():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(kid, signal.SIGKILL)
            os.kill(self.pid, signal.SIGKILL)
            self.wait(10)
        with contextlib.suppress(OSError):
            os.close(self.fd)


def bastion(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "bastion"), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def ship_once(config: Config) -> subprocess.CompletedProcess[str]:
    """`bastion ship --once`, retried while a nudged ship holds the lock (it exits within seconds)."""
    deadline = time.monotonic() + 30
    while True:
        result = bastion("ship", "--once", "--config", str(config.path))
        if "another ship is running" not in result.stderr or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def asciinema_cat(path: Path) -> bytes:
    """What the real asciinema prints for a cast (no controlling tty: it must not touch ours)."""
    done = subprocess.run(
        [str(ASCIINEMA), "cat", str(path)],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def cast_events(path: Path) -> tuple[dict[str, Any], list[list[Any]]]:
    lines = path.read_text().splitlines()
    return json.loads(lines[0]), [json.loads(line) for line in lines[1:]]


def session_dirs(root: Path) -> Iterator[Path]:
    if root.is_dir():
        yield from sorted(p for p in root.iterdir() if p.name.startswith("s-"))


# ---------------------------------------------------------------- an SFTP log host


@dataclass
class SftpHost:
    sshd: Sshd
    workdir: Path
    root: Path  # where the sink writes
    client_key: Path
    host_key: Path

    @property
    def port(self) -> int:
        return self.sshd.port

    def sink_toml(self, host_key_line: str | None = None) -> str:
        return (
            f'type = "sftp"\nhost = "127.0.0.1"\nport = {self.port}\nuser = "root"\npath = "{self.root}"\n'
            f'private_key_file = "{self.client_key}"\nhost_key = "{host_key_line or self.sshd.host_key_pub}"'
        )

    def stop(self) -> None:
        self.sshd.stop()

    def restart(self) -> None:
        self.sshd = start_sshd(self.workdir, _SFTP_BODY.format(keys=self.workdir / "authorized_keys"),
                               host_key=self.host_key, port=self.sshd.port, strict_modes=False)  # fmt: skip


_SFTP_BODY = (
    "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
    "AuthorizedKeysFile {keys}\nSubsystem sftp internal-sftp\nForceCommand internal-sftp\n"
    "DisableForwarding yes\nPermitTTY no\n"
)


def start_sftp_host(workdir: Path) -> SftpHost:
    """A private sshd on loopback that only speaks SFTP, for the root account with one key."""
    from tests.configs import ssh_keypair

    workdir.mkdir(parents=True, exist_ok=True)
    key = workdir / "sink_client"
    pub = ssh_keypair(key, "bastion-sink")
    keys = workdir / "authorized_keys"
    keys.write_text(pub + "\n")
    keys.chmod(0o600)
    root = workdir / "store"
    root.mkdir(exist_ok=True)
    sshd = start_sshd(workdir, _SFTP_BODY.format(keys=keys), strict_modes=False)
    return SftpHost(sshd, workdir, root, key, workdir / "ssh_host_ed25519_key")
