"""What the demo needs from the machine: Debian packages, system accounts, file ownership, process trees.

Process trees matter because a process-group kill is not enough: sshd runs every connection in a session of
its own (setsid), so its children survive a signal to the listener's group. The demo therefore records each
service's descendants before stopping it and ends the survivors itself, and makes itself a child subreaper so
that anything orphaned on the way is re-parented to it instead of init, where it can still be found.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from bastion.demo import DemoError

SSHD = "/usr/sbin/sshd"
PACKAGES = ("postgresql", "openssh-server")
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def is_root() -> bool:
    return os.geteuid() == 0


# ---------------------------------------------------------------- packages


def postgres_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/N/bin holding initdb and postgres (Debian's layout), else None."""
    found: list[tuple[int, Path]] = []
    for candidate in Path("/usr/lib/postgresql").glob("*/bin"):
        version = candidate.parent.name
        if version.isdigit() and all(os.access(candidate / p, os.X_OK) for p in ("initdb", "postgres")):
            found.append((int(version), candidate))
    return max(found)[1] if found else None


def missing_packages() -> list[str]:
    missing = []
    if postgres_bindir() is None:
        missing.append("postgresql")
    if not os.access(SSHD, os.X_OK) or shutil.which("ssh") is None:
        missing.append("openssh-server")
    return missing


def ensure_packages(progress: Callable[[str], None]) -> None:
    """Install what the demo lacks from Debian when root; otherwise name the packages in one line."""
    missing = missing_packages()
    if not missing:
        return
    if not is_root():
        raise DemoError(
            f"the demo needs {' and '.join(missing)}: sudo apt-get install -y {' '.join(missing)}"
        )
    progress(f"installing from Debian: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", *missing]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        result = subprocess.run(install, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["apt-get failed"])[-1]
            raise DemoError(f"apt-get install {' '.join(missing)} failed: {last}")
    if missing_packages():
        raise DemoError(f"still missing after apt-get install: {' '.join(missing_packages())}")


# ---------------------------------------------------------------- accounts


@dataclass(frozen=True)
class Account:
    """A local account a demo service runs as; the invoking user when the demo is not root."""

    name: str
    uid: int
    gid: int
    home: str

    @classmethod
    def of(cls, name: str) -> Account:
        info = pwd.getpwnam(name)
        return cls(info.pw_name, info.pw_uid, info.pw_gid, info.pw_dir)

    @classmethod
    def current(cls) -> Account:
        info = pwd.getpwuid(os.geteuid())
        return cls(info.pw_name, info.pw_uid, info.pw_gid, info.pw_dir)

    @property
    def is_current(self) -> bool:
        return self.uid == os.geteuid()

    def popen_kwargs(self) -> dict[str, object]:
        """subprocess arguments that run a child as this account (nothing when it is us)."""
        if self.is_current:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def chown(self, *paths: Path) -> None:
        if self.is_current:
            return
        for path in paths:
            os.chown(path, self.uid, self.gid, follow_symlinks=False)

    def chown_tree(self, root: Path) -> None:
        if self.is_current:
            return
        for dirpath, dirnames, filenames in os.walk(root):
            for name in [".", *dirnames, *filenames]:
                os.chown(os.path.join(dirpath, name), self.uid, self.gid, follow_symlinks=False)


def ensure_account(name: str, *, login_shell: str, home: str, create_home: bool, unlock: bool) -> Account:
    """A system account, created when missing (they stay after the demo: creating them again is pointless).

    unlock: replace the "!" of a new account's password field by "*" — sshd treats "!" as locked even for
    public-key logins, while "*" still allows no password.
    """
    if not _exists(name):
        argv = ["useradd", "--system", "--shell", login_shell, "--home-dir", home]
        argv.append("--create-home" if create_home else "--no-create-home")
        result = subprocess.run([*argv, name], capture_output=True, text=True)
        if result.returncode != 0 and not _exists(name):
            raise DemoError(f"cannot create account {name}: {result.stderr.strip() or 'useradd failed'}")
    if unlock:
        subprocess.run(["usermod", "-p", "*", name], check=True, capture_output=True)
    return Account.of(name)


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


# ---------------------------------------------------------------- processes


def become_subreaper() -> None:
    """Orphans of our services (sshd sessions, postgres backends) re-parent to us, so cleanup finds them."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def die_with_parent(sig: int) -> Callable[[], None]:
    """A preexec_fn: the child gets sig if the demo dies without cleaning up (e.g. SIGKILL)."""

    def preexec() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return preexec


@dataclass(frozen=True)
class Proc:
    """A pid plus its start time, so a recycled pid is never mistaken for (and never signalled as) ours."""

    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> Proc | None:
        stat = _stat(pid)
        return cls(pid, int(stat[19])) if stat else None

    def alive(self) -> bool:
        stat = _stat(self.pid)
        return stat is not None and int(stat[19]) == self.start and stat[0] not in ("Z", "X")

    def comm(self) -> str:
        with contextlib.suppress(OSError):
            return Path(f"/proc/{self.pid}/comm").read_text().strip()
        return ""

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, sig)


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), or None when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def descendants(pid: int) -> list[Proc]:
    """Every live process below pid, found through /proc (children before grandchildren)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                children.setdefault(int(stat[1]), []).append(int(entry.name))
    out: list[Proc] = []
    queue = [pid]
    while queue:
        for child in children.get(queue.pop(0), []):
            proc = Proc.of(child)
            if proc is not None:
                out.append(proc)
                queue.append(child)
    return out


def end_all(procs: Iterable[Proc], *, grace: float = 3.0) -> None:
    """SIGTERM, wait up to grace seconds, SIGKILL whatever is left; reap our own zombies."""
    procs = [p for p in procs if p.alive()]
    for proc in procs:
        proc.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(p.alive() for p in procs):
        reap(procs)
        time.sleep(0.05)
    for proc in procs:
        proc.signal(signal.SIGKILL)
    reap(procs)


def reap(procs: Iterable[Proc] | None = None) -> None:
    """Collect exited orphans re-parented to us (we are a subreaper) so they do not linger as zombies.

    With procs, only those pids: a blanket waitpid(-1) could steal the status of a service still managed
    by its Popen object.
    """
    if procs is None:
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        return
    for proc in procs:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(proc.pid, os.WNOHANG)


def reap_orphans(keep: Iterable[int] = ()) -> None:
    """Collect our zombie children except keep (pids a Popen object or waitpid caller still owns).

    sshd's per-connection processes that outlive their parent are re-parented to us; each exit would
    otherwise leave a zombie for as long as the demo runs.
    """
    kept = set(keep)
    me = str(os.getpid())
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in kept:
            continue
        stat = _stat(int(entry.name))
        if stat is not None and stat[0] == "Z" and stat[1] == me:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(entry.name), os.WNOHANG)


def stop_process(
    process: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout: float = 5.0
) -> None:
    """Stop a service and everything it started, however it reacts: its signal first, then force."""
    tree = descendants(process.pid)
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    end_all(tree)
