"""The signed manifest that seals a recording.

manifest.json is one line of canonical JSON:

    {"manifest": {
        "format": "bastion-recording-manifest/1",
        "bastion", "session", "user", "key_fingerprint", "kind",
        "status": how the session ended ("ended", "abnormal", "hangup", …),
        "sealed_at": RFC 3339, "sealed_by": "login" | "ship",
        "files": [{"name", "size", "sha256", "events", "torn_tail_bytes"}, …]   (sorted by name),
        "audit": {"log": file name, "first_seq", "last_seq", "markers"}},
     "key_id": "ed25519:…", "sig": base64 Ed25519 over
        b"bastion-recording-manifest\\n" + canonical_json(manifest)}

The signing key is the audit key, so one public key verifies the log and every recording. The manifest is
written into room reserved when the session started (`.seal-reserve`), fsynced, and renamed into place: a
full disk cannot keep a session from being sealed, and a crash mid-seal leaves no half manifest. Its SHA-256
then goes into the audit chain (`recording_sealed`), so replacing a manifest — even re-signed by a key
holder — is caught by the chain that was shipped before it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bastion.audit.signing import key_id
from bastion.canonical import canonical_json
from bastion.recording.spool import MANIFEST, SEAL_RESERVE, cut_torn_tail, fsync_dir, session_files

FORMAT = "bastion-recording-manifest/1"
DOMAIN = b"bastion-recording-manifest\n"


class ManifestError(Exception):
    """A manifest is missing, malformed or does not verify; one line."""


@dataclass(frozen=True)
class SealInfo:
    bastion: str
    session: str
    user: str
    key_fingerprint: str
    kind: str
    status: str
    sealed_by: str  # login | ship
    audit_log: str
    first_seq: int | None
    last_seq: int | None
    markers: int


def file_digest(path: Path, *, count_lines: bool = True) -> tuple[int, str, int]:
    """(size, sha256 hex, newline count — 0 unless asked) in one pass."""
    h = hashlib.sha256()
    size = lines = 0
    buffer = bytearray(1 << 20)  # reused: no fresh megabyte (and its page faults) per read
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(view):
            h.update(view[:n])
            size += n
            if count_lines:
                lines += buffer.count(b"\n", 0, n)
    return size, h.hexdigest(), lines


def seal(
    directory: Path, info: SealInfo, key: Ed25519PrivateKey, events: dict[str, int] | None = None
) -> bytes:
    """Cut torn tails, write the signed manifest; returns its bytes (hashed into the audit chain).
    `events`: event counts the writer already knows (a cast's lines are its events plus the header)."""
    files = []
    for path in session_files(directory):
        torn = cut_torn_tail(path) if path.suffix in (".cast", ".jsonl") else 0
        known = (events or {}).get(path.name) if not torn else None
        size, digest, lines = file_digest(path, count_lines=known is None)
        entry: dict[str, Any] = {"name": path.name, "size": size, "sha256": digest}
        if path.suffix == ".cast":
            entry["events"] = known if known is not None else max(0, lines - 1)
        if torn:
            entry["torn_tail_bytes"] = torn
        files.append(entry)
    body = {
        "format": FORMAT,
        "bastion": info.bastion,
        "session": info.session,
        "user": info.user,
        "key_fingerprint": info.key_fingerprint,
        "kind": info.kind,
        "status": info.status,
        "sealed_at": datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "sealed_by": info.sealed_by,
        "files": files,
        "audit": {
            "log": info.audit_log,
            "first_seq": info.first_seq,
            "last_seq": info.last_seq,
            "markers": info.markers,
        },
    }
    signature = key.sign(DOMAIN + canonical_json(body))
    data = (
        canonical_json(
            {
                "manifest": body,
                "key_id": key_id(key.public_key()),
                "sig": base64.b64encode(signature).decode("ascii"),
            }
        )
        + b"\n"
    )
    _write_into_reserve(directory, data)
    return data


def _write_into_reserve(directory: Path, data: bytes) -> None:
    reserve = directory / SEAL_RESERVE
    flags = os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        fd = os.open(reserve, flags)
    except FileNotFoundError:
        fd = os.open(reserve, flags | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        offset = 0
        while offset < len(data):
            offset += os.pwrite(fd, view[offset:], offset)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(reserve, directory / MANIFEST)
    fsync_dir(directory)


def load(data: bytes, keys: dict[str, Ed25519PublicKey]) -> dict[str, Any]:
    """The manifest body after checking its shape and signature; ManifestError otherwise."""
    try:
        outer = json.loads(data)
    except ValueError:
        raise ManifestError("manifest.json is not JSON") from None
    if not isinstance(outer, dict) or set(outer) != {"manifest", "key_id", "sig"}:
        raise ManifestError("manifest.json does not have exactly manifest, key_id and sig")
    body = outer["manifest"]
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise ManifestError(f"manifest format is not {FORMAT}")
    key = keys.get(outer["key_id"]) if isinstance(outer["key_id"], str) else None
    if key is None:
        raise ManifestError(f"manifest is signed by key {str(outer['key_id'])[:40]}, not the bastion's")
    try:
        signature = base64.b64decode(str(outer["sig"]), validate=True)
        key.verify(signature, DOMAIN + canonical_json(body))
    except (ValueError, InvalidSignature):
        raise ManifestError("manifest signature does not verify — manifest forged or modified") from None
    files = body.get("files")
    if not isinstance(files, list) or not all(
        isinstance(f, dict) and isinstance(f.get("name"), str) and isinstance(f.get("size"), int)
        and isinstance(f.get("sha256"), str)
        for f in files
    ):  # fmt: skip
        raise ManifestError("manifest files list is malformed")
    return body
