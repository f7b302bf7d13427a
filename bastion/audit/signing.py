"""The audit signing key: Ed25519, kept in a file only the service account can read.

Checkpoints and the head file of the audit log are signed with this key, so whoever reads it can rewrite the
log undetectably; that is why the private key is created 0600 from its first byte (never briefly readable
by others), why loading refuses a key that group or others can access, and why errors name the path but
never the content. The public key sits next to it as `<path>.pub` (OpenSSH format) for verifiers and
off-host copies.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "SigningKeyError",
    "generate_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "public_key_path",
]


class SigningKeyError(Exception):
    """A signing key cannot be created or used; the message is one line and names the path, never the key."""


def public_key_path(path: str | os.PathLike[str]) -> Path:
    """Where the public half of the key at path lives: `<path>.pub`."""
    p = Path(path)
    return p.with_name(p.name + ".pub")


def _fsync_dir(directory: Path) -> None:
    """Make a new directory entry durable; best effort where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_exclusive(path: Path, data: bytes, mode: int) -> bool:
    """Write data to path only if path does not exist; False if it does.

    The content goes to a private temporary file (O_EXCL, `mode` from creation) that is then hard-linked to
    its name: link() never replaces an existing file, and readers never see a half-written key.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)  # umask can only narrow the mode; make it exact
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(path.parent)
    return True


def generate_key(path: str | os.PathLike[str]) -> bool:
    """Create an Ed25519 key at path (PKCS8 PEM, 0600) and `<path>.pub`; False if a key already exists.

    Never overwrites: an existing key may already sign a log, and replacing it would orphan every checkpoint.
    A `.pub` without its private key is refused rather than silently replaced, since verifiers may trust it.
    """
    key_path = Path(path)
    pub_path = public_key_path(key_path)
    parent = key_path.parent
    if not parent.exists():
        try:
            parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise SigningKeyError(f"cannot create key directory {parent}: {exc.strerror}") from None
    if key_path.exists() or key_path.is_symlink():
        return False
    if pub_path.exists() or pub_path.is_symlink():
        raise SigningKeyError(
            f"public key {pub_path} exists without its private key {key_path}; remove it or restore the key"
        )
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    try:
        if not _create_exclusive(key_path, pem, 0o600):
            return False
        _create_exclusive(pub_path, public + b" bastion-audit\n", 0o644)
    except OSError as exc:
        raise SigningKeyError(f"cannot create signing key {key_path}: {exc.strerror}") from None
    return True


def _read_file(path: Path, what: str) -> tuple[bytes, os.stat_result]:
    """Read a key file without following a symlink swapped in for it; stat the opened file, not the name."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SigningKeyError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise SigningKeyError(f"cannot open {what} {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SigningKeyError(f"{what} {path} is not a regular file")
        if st.st_size > 64 * 1024:
            raise SigningKeyError(f"{what} {path} is too large to be a key")
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks), st
    finally:
        os.close(fd)


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Load the signing key, refusing one group or others can access (they could forge the log with it)."""
    key_path = Path(path)
    data, st = _read_file(key_path, "signing key")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise SigningKeyError(
            f"signing key {key_path} has mode {mode:04o}, accessible by group/others: chmod 600 {key_path}"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise SigningKeyError(
            f"signing key {key_path} is not an unencrypted PEM PKCS8 Ed25519 private key"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"signing key {key_path} is not an Ed25519 key")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Load a public key in OpenSSH (`ssh-ed25519 AAAA…`) or PEM (SubjectPublicKeyInfo) format."""
    key_path = Path(path)
    data, _ = _read_file(key_path, "public key")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
        else:
            key = serialization.load_ssh_public_key(data.strip())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise SigningKeyError(f"public key {key_path} is not an OpenSSH or PEM Ed25519 public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"public key {key_path} is not an Ed25519 key")
    return key


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short stable name of a public key, recorded in every signature so verifiers can pick the right key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]
