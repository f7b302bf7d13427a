"""Config changes are evidence: a config_change audit event with a redacted diff on each change."""

from __future__ import annotations

import json
from pathlib import Path

from bastion.audit.log import AuditLog
from bastion.audit.signing import generate_key, load_private_key
from bastion.config import load_config
from bastion.config_audit import REDACTED, diff, record_config_change, redact
from bastion.store import TinyDBStore
from tests.configs import write_config


def _setup(tmp_path: Path) -> tuple[Path, TinyDBStore, AuditLog]:
    path = write_config(tmp_path)
    config = load_config(path)
    generate_key(config.audit.signing_key)
    log = AuditLog(config.audit.log, config.bastion.name, load_private_key(config.audit.signing_key))
    return path, TinyDBStore(tmp_path / "state.json"), log


def test_first_start_then_no_change_then_change(tmp_path: Path) -> None:
    path, store, log = _setup(tmp_path)
    first = record_config_change(load_config(path), store, log)
    assert first is not None and first["type"] == "config_change"
    assert first["payload"]["previous_hash"] is None
    assert record_config_change(load_config(path), store, log) is None

    path.write_text(path.read_text().replace('database = "shop"', 'database = "shop2"', 1))
    changed = record_config_change(load_config(path), store, log)
    assert changed is not None
    assert changed["payload"]["previous_hash"] == first["payload"]["hash"]
    assert changed["payload"]["diff"] == [
        {"path": "connections[pg-readonly].database", "change": "changed", "old": "shop", "new": "shop2"}
    ]
    assert record_config_change(load_config(path), store, log) is None


def test_added_user_and_reordered_tables(tmp_path: Path) -> None:
    path, store, log = _setup(tmp_path)
    record_config_change(load_config(path), store, log)
    text = path.read_text()
    # Moving bob's block before alice's is not a change; adding carol is.
    alice_start, bob_start = text.index('[[users]]\nname = "alice"'), text.index('[[users]]\nname = "bob"')
    roles_start = text.index("[[roles]]")
    reordered = (
        text[:alice_start] + text[bob_start:roles_start] + text[alice_start:bob_start] + text[roles_start:]
    )
    path.write_text(reordered)
    assert record_config_change(load_config(path), store, log) is None
    path.write_text(reordered.replace("[[roles]]", '[[users]]\nname = "carol"\n\n[[roles]]', 1))
    event = record_config_change(load_config(path), store, log)
    assert event is not None
    assert {"path": "users[carol]", "change": "added", "new": "<present>"} in event["payload"]["diff"]


def test_secrets_never_reach_the_log(tmp_path: Path) -> None:
    path, store, log = _setup(tmp_path)
    record_config_change(load_config(path), store, log)
    secret_value = (tmp_path / "secrets" / "pg.password").read_text().strip()
    assert secret_value not in Path(log.path).read_text()


def test_redact() -> None:
    value = {
        "bastion": {"state": "postgresql://svc:hunter2@db:5432/x", "state_password_file": "/etc/pw"},
        "hook": {"webhook_url": "https://hooks.example/T000/B000/XXXX", "api_token": "abc", "password": 5},
        "list": [{"client_secret": "zzz"}],
    }
    out = redact(value)
    text = json.dumps(out)
    for secret in ("hunter2", "XXXX", "abc", "zzz"):
        assert secret not in text
    assert out["bastion"]["state_password_file"] == "/etc/pw"
    assert out["bastion"]["state"] == f"postgresql://svc:{REDACTED}@db:5432/x"
    assert out["hook"]["password"] == REDACTED


def test_diff_added_removed() -> None:
    changes = diff({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "d": 3}})
    assert changes == [
        {"path": "a.c", "change": "removed", "old": 2},
        {"path": "a.d", "change": "added", "new": 3},
    ]
