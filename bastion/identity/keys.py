"""SSH public keys: parsing, SHA256 fingerprints, and the key → user index sshd asks us about.

A key's identity reaches `bastion login` only as its fingerprint in the forced command that
`bastion authorized-keys` printed, never through the environment, so these two must agree byte for byte.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

# Key types sshd can present that we accept as user or host keys.
ALLOWED_KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)


class InvalidKey(ValueError):
    """A public key that cannot be used; the message says why in one line."""


@dataclass(frozen=True)
class PublicKey:
    key_type: str
    blob: bytes
    comment: str = ""

    @property
    def fingerprint(self) -> str:
        """OpenSSH's SHA256 fingerprint: base64 of SHA-256 of the blob, without padding."""
        return fingerprint_of(self.blob)

    @property
    def base64(self) -> str:
        return base64.b64encode(self.blob).decode("ascii")

    def line(self) -> str:
        """The key as an authorized_keys/known_hosts field pair (no comment: comments are user-controlled)."""
        return f"{self.key_type} {self.base64}"


def fingerprint_of(blob: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


def parse_key_parts(key_type: str, key_b64: str, comment: str = "") -> PublicKey:
    """Validate a type + base64 pair: known type, valid base64, and a blob whose inner type matches."""
    if key_type not in ALLOWED_KEY_TYPES:
        raise InvalidKey(f"unsupported key type {key_type!r}")
    try:
        blob = base64.b64decode(key_b64.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise InvalidKey("key data is not valid base64") from None
    if len(blob) < 4:
        raise InvalidKey("key data is too short")
    (inner_len,) = struct.unpack(">I", blob[:4])
    inner = blob[4 : 4 + inner_len]
    if inner_len > len(blob) - 4 or inner.decode("ascii", "replace") != key_type:
        raise InvalidKey(f"key data does not hold a {key_type} key")
    return PublicKey(key_type, blob, comment)


def parse_public_key(line: str) -> PublicKey:
    """Parse "type base64 [comment]" as in authorized_keys (without options) or a .pub file."""
    parts = line.strip().split(None, 2)
    if len(parts) < 2:
        raise InvalidKey("expected 'TYPE BASE64 [COMMENT]'")
    return parse_key_parts(parts[0], parts[1], parts[2] if len(parts) > 2 else "")


def is_fingerprint(text: str) -> bool:
    """A SHA256 fingerprint as printed by ssh-keygen -l: 'SHA256:' + 43 base64 chars."""
    if not text.startswith("SHA256:") or len(text) != 50:
        return False
    try:
        return len(base64.b64decode(text[7:] + "=", validate=True)) == 32
    except binascii.Error:
        return False
