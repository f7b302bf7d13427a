"""Creates the example secrets config.example.toml refers to: never committed, since git cannot keep a
0600 mode and a private key in a repository is a bad habit even as an example."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastion.audit.signing import generate_key


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def ensure_example_secrets(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in ("pg-readonly.password", "pg-guarded.password", "masking.key"):
        path = directory / name
        if not path.exists():
            _write_private(path, (secrets.token_urlsafe(24) + "\n").encode())
    key_path = directory / "app-server.key"
    if not key_path.exists():
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        _write_private(key_path, pem)
    generate_key(directory / "audit_ed25519")
    for path in directory.iterdir():  # a checkout or copy may have loosened modes
        if not path.name.endswith(".pub"):
            path.chmod(0o600)


if __name__ == "__main__":
    ensure_example_secrets(Path(sys.argv[1] if len(sys.argv) > 1 else "examples/secrets"))
