"""The demo's front door: a private OpenSSH sshd configured exactly as the README tells operators to.

Its config is `bastion sshd-config`'s hardened snippet after the basics (port, host key), and its
AuthorizedKeysCommand is `bastion authorized-keys`, run as the service account — so trying the demo exercises
the real login path. sshd runs that command only from an sshd-safe path (root-owned, no group/other write
anywhere up to /): this checkout's console script when it qualifies, else a two-line wrapper inside the demo
directory when that is on such a path (as root it lives under /run).
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from bastion.config import Config
from bastion.demo import DemoError
from bastion.demo.layout import Layout
from bastion.demo.sshd import Sshd, port_in_use, ssh_keypair, start_sshd
from bastion.frontdoor import check_authorized_keys_program, sshd_config_snippet


def console_script() -> Path:
    """This interpreter's `bastion` script: what `bastion sshd-config` would name, found the same way."""
    return Path(sys.executable).parent / "bastion"


def bastion_program(layout: Layout) -> tuple[str, str | None]:
    """(program for sshd and the forced command, why sshd would refuse it or None)."""
    script = console_script()
    if check_authorized_keys_program(str(script)) is None:
        return str(script), None
    if not layout.sshd_safe:
        return str(script), check_authorized_keys_program(str(script))
    bindir = layout.frontdoor / "bin"
    bindir.mkdir(mode=0o755, exist_ok=True)
    wrapper = bindir / "bastion"
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(str(script))} "$@"\n')
    os.chmod(wrapper, 0o755)  # noqa: S103 - sshd runs it as the service account; root-owned, not writable
    return str(wrapper), None


@dataclass
class FrontDoor:
    sshd: Sshd
    account: str
    known_hosts: Path

    def ssh_command(self, key: Path) -> str:
        """A complete ssh command line for one user: their key, the pinned host key, the service account."""
        argv = [
            "ssh", "-p", str(self.sshd.port), "-i", str(key), "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}", f"{self.account}@127.0.0.1",
        ]  # fmt: skip
        return shlex.join(argv)


def start_front_door(layout: Layout, config: Config, port: int) -> FrontDoor:
    account = config.bastion.service_user
    if config.bastion.command is None or check_authorized_keys_program(config.bastion.command):
        raise DemoError(
            f"sshd would refuse {config.bastion.command} as AuthorizedKeysCommand "
            "(it and every parent must be root-owned and not group/other-writable): "
            "install bastion under /opt or /usr/local"
        )
    if port_in_use(port):
        raise DemoError(f"127.0.0.1:{port} is already in use; choose another --sshd port")
    host_key = layout.frontdoor / "ssh_host_ed25519_key"
    ssh_keypair(host_key, "bastion-demo-front-door")
    # Root only as the documented fallback: the snippet says PermitRootLogin no; sshd keeps the first value.
    prefix = "PermitRootLogin prohibit-password\n" if account == "root" else ""
    try:
        sshd = start_sshd(
            layout.frontdoor, prefix + sshd_config_snippet(config), host_key=host_key, port=port
        )
    except RuntimeError as exc:
        raise DemoError(f"front door: {exc}") from None
    layout.known_hosts.write_text(f"[127.0.0.1]:{port} {sshd.host_key_pub}\n")
    layout.known_hosts.chmod(0o644)
    return FrontDoor(sshd, account, layout.known_hosts)
