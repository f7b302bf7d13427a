"""A throwaway PostgreSQL cluster: the system's binaries, a data directory in the demo dir, a loopback port.

Authentication: the superuser has no password at all. It may connect only over the Unix socket (trust), and
the socket lives in a 0700 directory of the account running the cluster, so only that account and root reach
it — which is why the admin DSN the demo prints carries no secret. Over TCP (127.0.0.1 only) the only roles
accepted are the demo's login roles, with SCRAM passwords, to the shop database.

As root the cluster runs as an unprivileged system account: PostgreSQL refuses to run as root, and a bastion
bug should not be one step from a root-owned database process.
"""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from bastion.demo import DemoError
from bastion.demo.sshd import free_port
from bastion.demo.system import Account, die_with_parent, stop_process

SUPERUSER = "postgres"
LOGIN_ROLES = ("bastion_ro", "bastion_rw")
DATABASE = "shop"

_SETTINGS = """
# bastion demo: a throwaway cluster; durability traded for a fast start.
listen_addresses = '127.0.0.1'
unix_socket_directories = '{socket_dir}'
unix_socket_permissions = 0700
password_encryption = 'scram-sha-256'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 32MB
max_connections = 40
min_wal_size = 32MB
max_wal_size = 64MB
"""

_HBA = f"""\
# bastion demo: superuser over the Unix socket only (its directory is 0700); login roles over loopback TCP.
# TYPE  DATABASE   USER                        ADDRESS        METHOD
local   all        {SUPERUSER}                                   trust
host    {DATABASE}       {",".join(LOGIN_ROLES)}       127.0.0.1/32   scram-sha-256
"""


@dataclass
class Cluster:
    bindir: Path
    root: Path  # owned by account
    account: Account
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    _initdb: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    @property
    def version(self) -> str:
        return self.bindir.parent.name

    def admin_dsn(self, dbname: str = DATABASE) -> str:
        """The superuser's DSN: the socket directory, no password (trust on the socket only)."""
        return f"host={self.socket_dir} port={self.port} dbname={dbname} user={SUPERUSER}"

    def begin_initdb(self) -> None:
        """Start initdb in the background: it is the slowest step, so the rest of the start overlaps it."""
        self.socket_dir.mkdir(mode=0o700)
        self.account.chown(self.root, self.socket_dir)
        argv = [
            str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", SUPERUSER,
            "--auth-local=trust", "--auth-host=reject", "--encoding=UTF8", "--locale=C",
            "--no-sync", "--no-instructions",
        ]  # fmt: skip
        with open(self.root / "initdb.log", "wb") as log:
            self._initdb = subprocess.Popen(
                argv, cwd=self.root, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env=self._env(), start_new_session=True, **self.account.popen_kwargs(),  # type: ignore[arg-type]
            )  # fmt: skip

    def abort_initdb(self) -> None:
        if self._initdb is not None and self._initdb.poll() is None:
            stop_process(self._initdb, timeout=2)

    def finish_initdb(self) -> None:
        assert self._initdb is not None
        if self._initdb.wait(60) != 0:
            tail = (self.root / "initdb.log").read_text(errors="replace").strip().splitlines()[-1:]
            raise DemoError(
                f"initdb failed: {tail[0] if tail else 'no output'} (log: {self.root}/initdb.log)"
            )
        with open(self.datadir / "postgresql.conf", "a") as conf:
            conf.write(_SETTINGS.format(socket_dir=self.socket_dir))
        (self.datadir / "pg_hba.conf").write_text(_HBA)  # rewritten in place: owner and mode stay

    def start(self, timeout: float = 20.0) -> None:
        """Start the postmaster on a free loopback port (another one if it loses the race for it)."""
        for _ in range(3):
            self.port = free_port()
            if self._start_once(timeout):
                return
        raise DemoError(f"PostgreSQL could not get a free port (log: {self.log_path})")

    def _start_once(self, timeout: float) -> bool:
        argv = [str(self.bindir / "postgres"), "-D", str(self.datadir), "-p", str(self.port)]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv, cwd=self.root, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self._env(),
                start_new_session=True, preexec_fn=die_with_parent(signal.SIGINT),
                **self.account.popen_kwargs(),  # type: ignore[arg-type]
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                text = self.log_path.read_text(errors="replace")
                if "could not bind" in text or "Address already in use" in text:
                    self.log_path.write_text("")
                    return False
                last = text.strip().splitlines()[-1:] or ["no output"]
                raise DemoError(f"PostgreSQL did not start: {last[0]} (log: {self.log_path})")
            try:
                with psycopg.connect(self.admin_dsn("postgres"), connect_timeout=2):
                    return True
            except psycopg.OperationalError:
                time.sleep(0.05)
        raise DemoError(
            f"PostgreSQL did not accept connections within {timeout:.0f} s (log: {self.log_path})"
        )

    def stop(self) -> None:
        """Fast shutdown (SIGINT: roll back, disconnect, checkpoint), then force whatever is left."""
        self.abort_initdb()
        if self.process is not None:
            stop_process(self.process, sig=signal.SIGINT, timeout=10)

    def _env(self) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(self.root), "TZ": "UTC"}
