"""The demo's one temporary directory, and who owns what inside it.

Everything the demo writes lives here, so removing it at exit leaves nothing behind. As root, the directory
goes under /run: sshd insists that an AuthorizedKeysCommand (a wrapper, when the checkout's own script is not
on an sshd-safe path) and, with StrictModes, an authorized_keys file sit on a path whose every parent is
root-owned and not group/other-writable, which /var/tmp and /tmp are not. Created 0700; as root it is then
opened to 0711 (traverse, not list) so the unprivileged accounts reach their own subdirectories:

    bastion.toml                                 root's, 0644: the service account reads, never rewrites it
    secrets/ state/ spool/ sink/                 the service account's (0700 dirs, 0600 secrets)
    pg/                                          the PostgreSQL account's (data, socket dir, log)
    target/  frontdoor/                          root's: the two sshds (host keys 0600)
    clients/                                     root's: alice's, bob's and carol's keys, known_hosts
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bastion.demo.system import is_root
from bastion.frontdoor import check_authorized_keys_program

_RUN_MIN_FREE = 256 * 1024 * 1024  # a cluster plus logs; /run is a small tmpfs on most machines
RUN = Path("/run")
VAR_TMP = Path("/var/tmp")  # noqa: S108 - only as mkdtemp's parent: the demo dir itself is private


def candidate_bases() -> set[Path]:
    """Every place a demo directory may be created (for recognising one a killed demo left behind)."""
    return {RUN, VAR_TMP, Path(os.environ.get("TMPDIR") or VAR_TMP)}


def base_directory() -> Path:
    """Where the demo dir goes: /run as root when it is sshd-safe and roomy, else $TMPDIR or /var/tmp."""
    if is_root():
        try:
            stats = os.statvfs(RUN)
            roomy = stats.f_bavail * stats.f_frsize >= _RUN_MIN_FREE
        except OSError:
            roomy = False
        if roomy and check_authorized_keys_program(str(RUN)) is None:
            return RUN
    return Path(os.environ.get("TMPDIR") or VAR_TMP)


@dataclass(frozen=True)
class Layout:
    root: Path

    @classmethod
    def create(cls, base: Path | None = None) -> Layout:
        root = Path(tempfile.mkdtemp(prefix="bastion-demo-", dir=base or base_directory()))
        os.chmod(root, 0o711 if is_root() else 0o700)
        layout = cls(root)
        for sub in (layout.secrets, layout.state, layout.spool, layout.sink, layout.clients, layout.pg):
            sub.mkdir(mode=0o700)
        for sub in (layout.target, layout.frontdoor):
            sub.mkdir(mode=0o755)  # sshd checks these as parents of files it must trust
        return layout

    @property
    def sshd_safe(self) -> bool:
        """Whether sshd would trust files here (root-owned chain, nothing group/other-writable)."""
        return check_authorized_keys_program(str(self.root)) is None

    @property
    def config(self) -> Path:
        return self.root / "bastion.toml"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def sink(self) -> Path:
        return self.root / "sink"

    @property
    def clients(self) -> Path:
        return self.root / "clients"

    @property
    def pg(self) -> Path:
        return self.root / "pg"

    @property
    def target(self) -> Path:
        return self.root / "target"

    @property
    def frontdoor(self) -> Path:
        return self.root / "frontdoor"

    @property
    def known_hosts(self) -> Path:
        return self.clients / "known_hosts"
