"""Config changes are evidence: each start compares the config's canonical hash with the last one recorded
for this bastion and, on a change, writes a `config_change` audit event with a redacted diff.

The event is made durable before the new snapshot is stored, so a crash in between repeats the event on the
next start rather than losing it; a host-local lock keeps concurrent logins from recording it twice.
"""

from __future__ import annotations

import fcntl
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bastion.audit.log import AuditLog
from bastion.config import Config
from bastion.store.base import Store

REDACTED = "<redacted>"
_SECRET_KEY = re.compile(r"password|secret|token|webhook|credential|private", re.IGNORECASE)


def redact(value: Any, key: str = "") -> Any:
    """A copy with secret-looking values replaced; *_file keys keep their path (a path is not a secret)."""
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    if _SECRET_KEY.search(key) and not key.endswith("_file"):
        return REDACTED
    if isinstance(value, str) and "://" in value:
        return _redact_url(value)
    return value


def _redact_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:{REDACTED}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key paths → leaf values; arrays of named tables are keyed by name so reordering is no change."""
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else key))
    elif isinstance(value, list) and value and all(isinstance(v, dict) and "name" in v for v in value):
        for item in value:
            out.update(flatten({k: v for k, v in item.items() if k != "name"}, f"{prefix}[{item['name']}]"))
            out.setdefault(f"{prefix}[{item['name']}]", "<present>")
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for index, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{index}]"))
    else:
        out[prefix] = value
    return out


def diff(old: dict[str, Any] | None, new: dict[str, Any]) -> list[dict[str, Any]]:
    """Changes between two redacted configs, sorted by path: {"path", "change", "old"?, "new"?}."""
    before, after = flatten(old or {}), flatten(new)
    changes = []
    for path in sorted(set(before) | set(after)):
        if path not in before:
            changes.append({"path": path, "change": "added", "new": after[path]})
        elif path not in after:
            changes.append({"path": path, "change": "removed", "old": before[path]})
        elif before[path] != after[path]:
            changes.append({"path": path, "change": "changed", "old": before[path], "new": after[path]})
    return changes


@contextmanager
def _host_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def record_config_change(
    config: Config, store: Store, audit: AuditLog, *, session: str | None = None, user: str | None = None
) -> dict[str, Any] | None:
    """Write a config_change event when the config differs from the last one recorded; return the event."""
    key = f"config:{config.bastion.name}"
    snapshot = {"hash": config.hash, "config": redact(config.raw)}
    with _host_lock(config.audit.log.with_name(config.audit.log.name + ".config.lock")):
        previous = store.get_meta(key)
        if isinstance(previous, dict) and previous.get("hash") == snapshot["hash"]:
            return None
        old_config = previous.get("config") if isinstance(previous, dict) else None
        event = audit.append(
            "config_change",
            {
                "path": str(config.path),
                "previous_hash": previous.get("hash") if isinstance(previous, dict) else None,
                "hash": snapshot["hash"],
                "diff": diff(old_config, snapshot["config"]),
            },
            session=session,
            user=user,
        )
        if not store.cas_meta(key, previous, snapshot):
            # Another host with the same name and store raced us; our event stands as evidence either way.
            store.cas_meta(key, store.get_meta(key), snapshot)
        return event
