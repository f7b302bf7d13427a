"""Config files for tests: a small valid config with real secret files, and ways to break it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ALICE_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGu2fjzRNM6+UQ+gYDQOgr+9ltQSOZ/riI3V5Un2TfdJ alice@example"
BOB_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKEY9+lRK9nrqALaJLOkyqNX1+WvsYrwqHsEMDrMj5Vr bob@example"
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ6C0uQ0escLH+7i6vNRvm5wJguT3GBMr8GNbOj7ZpJX"


def secret(path: Path, value: str = "s3cret-value", mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value + "\n")
    path.chmod(mode)
    return path


def ssh_keypair(path: Path, comment: str = "test") -> str:
    """A real ed25519 key pair made by ssh-keygen; returns the public key line."""
    if not path.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True,
        )
    os.chmod(path, 0o600)
    return Path(f"{path}.pub").read_text().strip()


def base_config(
    directory: Path,
    *,
    alice_key: str = ALICE_KEY,
    bob_key: str = BOB_KEY,
    state: str | None = None,
    extra: str = "",
    name: str = "bastion-test",
    service_user: str = "bastion",
    command: str | None = None,
) -> str:
    """TOML text of a valid config whose secret files exist under directory/secrets."""
    secrets_dir = directory / "secrets"
    secret(secrets_dir / "pg.password")
    ssh_keypair(secrets_dir / "target.key")
    state = state or f"tinydb:{directory / 'state' / 'state.json'}"
    return f"""
[bastion]
name = "{name}"
state = "{state}"
spool = "{directory / "spool"}"
service_user = "{service_user}"
{f'command = "{command}"' if command else ""}

[audit]
signing_key = "{directory / "keys" / "audit_ed25519"}"
checkpoint_every = 10

[[users]]
name = "alice"
keys = ["{alice_key}"]
groups = ["developers"]

[[users]]
name = "bob"
keys = ["{bob_key}"]
groups = ["approvers"]

[[roles]]
name = "developer"
groups = ["developers"]
connections = ["pg-readonly"]
may_request = ["pg-guarded", "dba"]

[[roles]]
name = "dba"
connections = ["pg-guarded", "pg-readonly"]

[[roles]]
name = "approver"
groups = ["approvers"]
approves = ["*"]

[[connections]]
name = "pg-readonly"
type = "postgres"
policy = "readonly"
host = "127.0.0.1"
database = "shop"
user = "ro"
password_file = "secrets/pg.password"

[[connections]]
name = "pg-guarded"
type = "postgres"
policy = "guarded"
host = "127.0.0.1"
database = "shop"
user = "rw"
password_file = "secrets/pg.password"

[[connections]]
name = "app"
type = "ssh"
policy = "guarded"
host = "127.0.0.1"
user = "app"
private_key_file = "secrets/target.key"
host_key = "{HOST_KEY}"
{extra}
"""


def write_config(directory: Path, text: str | None = None, **kwargs: object) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "bastion.toml"
    path.write_text(text if text is not None else base_config(directory, **kwargs))  # type: ignore[arg-type]
    return path
