"""`bastion demo`: start everything on loopback, open the TUI (or print one JSON line), stop everything.

Every start registers its stop on one ExitStack before anything else can fail, and SIGTERM, SIGINT and SIGHUP
become an exception, so however the demo ends — the TUI quits, a signal, an error — the same unwinding stops
the services (with their whole process trees), sweeps anything orphaned to us, and removes the directory.
What stays on the machine: the system accounts the demo created (bastion-demo, bastion-sandbox with its
home, bastion-svc) and, when it had to install them, the Debian packages.

A small runtime file (0600, $XDG_RUNTIME_DIR/bastion-demo.json or /tmp/bastion-demo-UID.json) lets
`bastion demo --as bob` find the running demo; it holds paths and a pid, never a secret.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from bastion.audit.signing import generate_key
from bastion.config import Config, ConfigError, load_config
from bastion.demo import DemoError
from bastion.demo.cluster import LOGIN_ROLES, Cluster
from bastion.demo.config import USERS, DemoTargets, write_config
from bastion.demo.frontdoor import FrontDoor, bastion_program, start_front_door
from bastion.demo.layout import Layout, candidate_bases
from bastion.demo.seed import seed, write_password
from bastion.demo.sshd import port_in_use, service_account, ssh_keypair, write_private
from bastion.demo.sshtarget import bastion_key, start_target
from bastion.demo.system import (
    Account,
    Proc,
    become_subreaper,
    descendants,
    die_with_parent,
    end_all,
    ensure_account,
    ensure_packages,
    is_root,
    postgres_bindir,
    reap,
    reap_orphans,
)

PG_ACCOUNT = "bastion-demo"
SANDBOX_ACCOUNT = "bastion-sandbox"
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass(frozen=True)
class DemoOptions:
    as_user: str | None = None
    headless: bool = False
    sshd_port: int | None = None


class _Stop(Exception):
    """A signal asked the demo to stop; unwinding does the stopping."""


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def _progress(message: str) -> None:
    print(f"bastion demo: {message}", file=sys.stderr, flush=True)


def _catch_signals() -> dict[int, Any]:
    """Signals become _Stop; returns the previous handlers, for _restore_signals after the cleanup."""
    return {sig: signal.signal(sig, _raise_stop) for sig in _SIGNALS}


def _ignore_signals() -> None:
    """While cleaning up: a second Ctrl+C must not cut the unwinding short."""
    for sig in _SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def _restore_signals(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


# ---------------------------------------------------------------- runtime file


def runtime_file() -> Path:
    """Where the running demo is announced to `--as`: the user's runtime dir, else a per-uid name in /tmp."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return Path(xdg) / "bastion-demo.json"
    return Path(f"/tmp/bastion-demo-{os.geteuid()}.json")  # noqa: S108 - O_EXCL|O_NOFOLLOW, owner checked


def read_runtime(*, clean_stale: bool = False) -> dict[str, Any] | None:
    """The running demo's info, or None. A stale file (its demo is gone) is removed; a foreign one refused.

    clean_stale: also remove the directory a demo that was killed outright (SIGKILL) left behind.
    """
    path = runtime_file()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DemoError(f"cannot read {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if (
            info.st_uid != os.geteuid()
            or stat.S_IMODE(info.st_mode) & 0o077
            or not stat.S_ISREG(info.st_mode)
        ):
            raise DemoError(f"{path} is not a 0600 file of yours; not trusting it (remove it)")
        try:
            data = json.loads(handle.read(65536))
            proc = Proc(int(data["pid"]), int(data["start"]))
        except (ValueError, KeyError, TypeError):
            data, proc = None, None
    if data is None or proc is None or not proc.alive():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        if clean_stale and isinstance(data, dict) and isinstance(data.get("dir"), str):
            _remove_stale_dir(Path(data["dir"]))
        return None
    return data


def _remove_stale_dir(directory: Path) -> None:
    """Only a directory that is unmistakably a demo's: our name, a place we create them, owned by us."""
    parents = candidate_bases()
    try:
        info = directory.lstat()
    except OSError:
        return
    if (
        directory.name.startswith("bastion-demo-")
        and directory.parent in parents
        and stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.geteuid()
    ):
        shutil.rmtree(directory, ignore_errors=True)
        _progress(f"removed {directory}, left behind by a demo that was killed")


def claim_runtime() -> None:
    """Announce this demo before it starts anything: a second `bastion demo` (even a concurrent one) then
    refuses at once instead of racing this one for ports and system accounts."""
    running = read_runtime(clean_stale=True)
    if running is not None:
        raise DemoError(
            f"a demo is already running (pid {running['pid']}, {running.get('dir') or 'starting'}); "
            "`bastion demo --as bob` opens a TUI on it"
        )
    path = runtime_file()
    try:
        _write_new(path, {**_me(), "ready": False})
    except FileExistsError:
        raise DemoError(f"another demo is starting ({path} exists)") from None


def publish_runtime(data: dict[str, Any]) -> None:
    """Replace the claim with what `--as` needs, atomically (a private temp file renamed over it)."""
    path = runtime_file()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    _write_new(tmp, {**_me(), **data, "ready": True})
    os.replace(tmp, path)


def _me() -> dict[str, int]:
    me = Proc.of(os.getpid())
    return {"pid": os.getpid(), "start": me.start if me else 0}


def _write_new(path: Path, data: dict[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(json.dumps(data).encode() + b"\n")


def remove_runtime(pid: int) -> None:
    """Remove the runtime file if it still announces this demo (never another one's)."""
    path = runtime_file()
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        if path.is_symlink() or path.stat().st_uid != os.geteuid():
            return
        if int(json.loads(path.read_text())["pid"]) == pid:
            path.unlink()


# ---------------------------------------------------------------- the TUI, as the service account


def run_login(config_path: Path, user: str, account: Account, keep: tuple[int, ...] = ()) -> int:
    """Open the TUI as user, in a child running as the service account — as it would behind sshd.

    A forked child rather than this process: the demo itself must stay root to stop what it started, and
    files the login writes (state, audit log, spool) must stay the service account's for the front door.
    keep: our other children (the services), which the orphan reaping must leave to their Popen objects.
    """
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    pid = os.fork()
    if pid == 0:  # child: never returns into the caller's frames
        code = 1
        try:
            code = _child_login(config_path, user, account)
        except BaseException as exc:  # the child must reach os._exit, whatever happens
            print(f"bastion: the TUI failed ({type(exc).__name__})", file=sys.stderr)
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(code)
    child = Proc.of(pid)
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            reap_orphans(keep=(pid, *keep))
            time.sleep(0.2)
    finally:
        if child is not None and child.alive():
            end_all([child], grace=5)


def _child_login(config_path: Path, user: str, account: Account) -> int:
    from bastion.login import login  # the TUI's imports belong to the child only

    for sig in _SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    if not account.is_current:
        os.setgroups([])
        os.setgid(account.gid)
        os.setuid(account.uid)
        os.environ.update(HOME=account.home, USER=account.name, LOGNAME=account.name)
    die_with_parent(signal.SIGHUP)()  # after setuid, which clears it: end the session if the demo dies
    os.chdir("/")
    os.environ.pop("SSH_ORIGINAL_COMMAND", None)
    config = load_config(config_path)
    return login(config, config.users[user].keys[0].fingerprint)


def _need_terminal(what: str, hint: str) -> None:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise DemoError(f"{what} opens the TUI and needs a terminal; {hint}")


def open_as(user: str) -> int:
    """`bastion demo --as USER`: a TUI on the running demo."""
    info = read_runtime()
    if info is None:
        raise DemoError("no demo is running: start one with `bastion demo` (or --headless --sshd PORT)")
    if not info.get("ready"):
        raise DemoError("the demo is still starting; try again in a moment")
    try:
        config = load_config(info["config"])
    except ConfigError as exc:
        raise DemoError(f"the running demo's config does not load: {'; '.join(exc.problems)}") from None
    if user not in config.users:
        raise DemoError(f"no user {user!r} in the demo; try {', '.join(config.users)}", 2)
    _need_terminal(f"bastion demo --as {user}", "the JSON line's ssh commands work without one")
    account = Account.of(info["account"]) if is_root() else Account.current()
    _progress(f"opening the TUI as {user} on the demo in {info['dir']}")
    previous = _catch_signals()
    try:
        return run_login(config.path, user, account)
    except _Stop:
        return 0
    finally:
        _ignore_signals()  # run_login's finally has ended the child by now
        _restore_signals(previous)


# ---------------------------------------------------------------- the demo


class Demo:
    """The running environment; stop() undoes start(), also half-way through."""

    def __init__(self, options: DemoOptions, progress: Callable[[str], None] = _progress) -> None:
        self.options = options
        self.progress = progress
        self.stack = contextlib.ExitStack()
        self.layout: Layout | None = None
        self.cluster: Cluster | None = None
        self.front: FrontDoor | None = None
        self.config: Config | None = None
        self.service = Account.current()
        self.services: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def _on_stop(self, what: str, func: Callable[[], object]) -> None:
        def quietly() -> None:
            try:
                func()
            except Exception as exc:
                self.progress(f"while stopping {what}: {type(exc).__name__}: {exc}")

        self.stack.callback(quietly)

    def start(self) -> None:
        started = time.monotonic()
        bindir = postgres_bindir()
        assert bindir is not None  # ensure_packages ran
        if is_root():
            pg_account = ensure_account(
                PG_ACCOUNT,
                login_shell="/usr/sbin/nologin",
                home="/nonexistent",
                create_home=False,
                unlock=False,
            )
            home = f"/var/lib/{SANDBOX_ACCOUNT}"
            sandbox = ensure_account(
                SANDBOX_ACCOUNT, login_shell="/bin/bash", home=home, create_home=True, unlock=True
            )
        else:
            pg_account = sandbox = Account.current()
        layout = self.layout = Layout.create()
        self._on_stop("the demo directory", lambda: shutil.rmtree(layout.root))
        self._on_stop("leftover processes", _sweep)
        self.progress(f"directory {layout.root} (removed at exit)")

        cluster = self.cluster = Cluster(bindir, layout.pg, pg_account)
        self._on_stop("PostgreSQL", cluster.stop)
        cluster.begin_initdb()  # the slow step; what follows overlaps it

        if is_root():
            name, fallback = service_account()
            if fallback:
                self.progress(fallback)
            self.service = Account.of(name)
        user_keys = {name: ssh_keypair(layout.clients / name, f"{name}@bastion-demo") for name in USERS}
        _, target_pub = bastion_key(layout)
        write_private(layout.secrets / "masking.key", (secrets.token_hex(32) + "\n").encode())
        generate_key(layout.secrets / "audit_ed25519")
        passwords = {
            LOGIN_ROLES[0]: write_password(layout.secrets / "pg-readonly.password"),
            LOGIN_ROLES[1]: write_password(layout.secrets / "pg-guarded.password"),
        }

        target = start_target(layout, sandbox, target_pub)
        self._on_stop("the SSH target", target.stop)
        self.services.append(("the SSH target's sshd", target.process, target.log_path))
        note = "" if is_root() else " (not root: a non-root sshd can only serve the invoking user)"
        self.progress(f"SSH target sshd on 127.0.0.1:{target.port}, sandbox account {sandbox.name}{note}")

        cluster.finish_initdb()
        cluster.start()
        assert cluster.process is not None
        self.services.append(("PostgreSQL", cluster.process, cluster.log_path))
        seeded = seed(cluster, passwords)
        passwords.clear()
        self.progress(
            f"PostgreSQL {cluster.version} on 127.0.0.1:{cluster.port} as {pg_account.name}: database shop, "
            f"{seeded.customers} customers, {seeded.orders} orders; roles {', '.join(LOGIN_ROLES)}"
        )

        program, _ = bastion_program(layout)
        targets = DemoTargets(cluster.port, target.port, sandbox.name, target.host_key_pub)
        self.config = write_config(
            layout, targets, user_keys, service_user=self.service.name, command=program
        )
        for path in (layout.secrets, layout.state, layout.spool, layout.sink):
            self.service.chown_tree(path)
        self.progress(f"config {layout.config}: OK (alice developer, bob approver, carol auditor)")

        if self.options.sshd_port is not None:
            front = self.front = start_front_door(layout, self.config, self.options.sshd_port)
            self._on_stop("the front door", front.sshd.stop)
            self.services.append(("the front door's sshd", front.sshd.process, front.sshd.log_path))
            self.progress(f"front door sshd on 127.0.0.1:{front.sshd.port}, service account {front.account}")

        publish_runtime({"dir": str(layout.root), "config": str(layout.config), "account": self.service.name})
        self.progress(f"ready in {time.monotonic() - started:.1f} s")

    def json_line(self) -> dict[str, str]:
        assert self.layout is not None and self.cluster is not None and self.front is not None
        clients = self.layout.clients
        return {
            "ssh": self.front.ssh_command(clients / "alice"),
            "ssh_bob": self.front.ssh_command(clients / "bob"),
            "ssh_carol": self.front.ssh_command(clients / "carol"),
            "postgres_admin": self.cluster.admin_dsn(),
            "state": str(self.layout.state / "state.json"),
            "sink": str(self.layout.sink),
            "config": str(self.layout.config),
            "dir": str(self.layout.root),
        }

    def wait(self) -> None:
        """Run until a signal; a service that dies on its own stops the demo with its log's name."""
        while True:
            for name, process, log in self.services:
                code = process.poll()
                if code is not None:
                    raise DemoError(f"{name} exited (code {code}); stopping the demo (its log was {log})")
            reap_orphans(keep=self.service_pids())
            time.sleep(0.5)

    def service_pids(self) -> tuple[int, ...]:
        return tuple(process.pid for _, process, _ in self.services)

    def stop(self) -> str:
        """Undo start(); returns one line saying what, if anything, could not be cleaned up."""
        self.stack.close()
        left = [p for p in descendants(os.getpid()) if p.alive()]
        if self.layout is not None and self.layout.root.exists():
            return f"could not remove {self.layout.root}"
        if left:
            return f"processes still running: {', '.join(str(p.pid) for p in left)}"
        return "stopped; everything the demo started has ended and its directory is removed"


def _sweep() -> None:
    """Whatever is still below us (orphans re-parented to the subreaper) ends now."""
    end_all(descendants(os.getpid()))
    reap()


def _validate(options: DemoOptions) -> None:
    if options.as_user is not None and (options.headless or options.sshd_port is not None):
        raise DemoError("--as opens a TUI on the running demo and takes no other option", 2)
    if options.sshd_port is not None and not 1 <= options.sshd_port <= 65535:
        raise DemoError(f"--sshd {options.sshd_port}: not a TCP port", 2)
    if options.headless and options.sshd_port is None:
        raise DemoError("--headless needs --sshd PORT: the front door is how a headless demo is reached", 2)
    if options.sshd_port is not None and not is_root():
        raise DemoError("--sshd needs root: the front door's sshd switches to a service account")


def run_demo(options: DemoOptions, out: TextIO | None = None) -> int:
    _validate(options)
    if options.as_user is not None:
        return open_as(options.as_user)
    if not options.headless:
        _need_terminal("bastion demo", "without one use --headless --sshd PORT")
    claim_runtime()
    try:
        return _run(options, out or sys.stdout)
    finally:
        remove_runtime(os.getpid())


def _run(options: DemoOptions, out: TextIO) -> int:
    ensure_packages(_progress)
    if options.sshd_port is not None and port_in_use(options.sshd_port):
        raise DemoError(f"127.0.0.1:{options.sshd_port} is already in use; choose another --sshd port")
    become_subreaper()
    demo = Demo(options)
    code = 0
    previous = _catch_signals()
    try:
        demo.start()
        if options.headless:
            out.write(json.dumps(demo.json_line()) + "\n")
            out.flush()
            demo.wait()
        else:
            assert demo.layout is not None
            _progress("opening the TUI as alice; `bastion demo --as bob` opens bob's on this demo")
            code = run_login(demo.layout.config, "alice", demo.service, keep=demo.service_pids())
    except _Stop as stop:
        _progress(f"{stop} received")
    finally:
        _ignore_signals()
        _progress("stopping")
        _progress(demo.stop())
        _restore_signals(previous)
    return code
