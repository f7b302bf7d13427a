"""The demo's SSH target: a private OpenSSH sshd on a loopback port that lets one sandbox account in.

Only the bastion's key for the target is authorized (restrict,pty: a terminal, no forwarding), so users reach
the sandbox through the bastion and never hold its credentials; its host key is pinned in the demo config.
As root the sandbox is a dedicated system account (bash, its own home); otherwise the only account a non-root
sshd can serve is the invoking user's, and the demo says so.
"""

from __future__ import annotations

from pathlib import Path

from bastion.demo.layout import Layout
from bastion.demo.sshd import Sshd, ssh_keypair, start_sshd
from bastion.demo.system import Account


def start_target(layout: Layout, account: Account, bastion_key_pub: str) -> Sshd:
    """sshd for the sandbox, trusting only bastion_key_pub; authorized_keys readable by the account."""
    keys = layout.target / "authorized_keys"
    fields = bastion_key_pub.split()
    keys.write_text(f"restrict,pty {fields[0]} {fields[1]} bastion-demo\n")
    keys.chmod(0o644)
    host_key = layout.target / "ssh_host_ed25519_key"
    ssh_keypair(host_key, "bastion-demo-target")
    body = f"""\
AllowUsers {account.name}
PermitRootLogin no
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile {keys}
PermitUserEnvironment no
DisableForwarding yes
PermitTunnel no
PrintMotd no
"""
    # StrictModes checks authorized_keys' parents; only a /run demo dir passes (see layout.py). Elsewhere
    # the file sits in our own 0700 tree, which is what StrictModes would have protected.
    return start_sshd(layout.target, body, host_key=host_key, strict_modes=layout.sshd_safe)


def bastion_key(layout: Layout) -> tuple[Path, str]:
    """The bastion's private key for the sandbox (the service account's secret) and its public line."""
    path = layout.secrets / "sandbox_ed25519"
    return path, ssh_keypair(path, "bastion-demo")
