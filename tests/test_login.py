"""`bastion login` in-process: key → user, OIDC device login against a real provider with the subject
binding, headless commands, and the audit trail of each outcome."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.audit.log import read_events
from bastion.audit.signing import generate_key
from bastion.config import Config, load_config
from bastion.identity.keys import parse_public_key
from bastion.login import login
from bastion.store import TinyDBStore
from tests.configs import ALICE_KEY, base_config, secret, write_config
from tests.oidc_provider import Provider, running_provider

ALICE_FP = parse_public_key(ALICE_KEY).fingerprint


def _config(tmp_path: Path, extra: str = "", oidc: bool = False) -> Config:
    text = base_config(tmp_path, extra=extra)
    if oidc:  # groups come from the provider, not the config
        text = text.replace('groups = ["developers"]\n', "", 1).replace('groups = ["approvers"]\n', "", 1)
        text = text.replace('groups = ["developers"]\nconnections', 'groups = ["engineering"]\nconnections')
    config = load_config(write_config(tmp_path, text))
    generate_key(config.audit.signing_key)
    return config


def _events(config: Config) -> list[dict]:
    return list(read_events(config.audit.log))


@pytest.fixture
def provider() -> Iterator[Provider]:
    with running_provider(device_interval=1) as running:
        yield running


def _oidc_extra(provider: Provider, tmp_path: Path) -> str:
    secret(tmp_path / "secrets" / "oidc", provider.client_secret)
    return (
        f'\n[identity.oidc]\nissuer = "{provider.issuer}"\nclient_id = "{provider.client_id}"\n'
        f'client_secret_file = "secrets/oidc"\nbinding_ttl = "1d"\n'
    )


def _approve_when_asked(provider: Provider, subject: str, *, deny: bool = False) -> threading.Thread:
    def act() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            codes = provider.pending_user_codes()
            if codes:
                (provider.deny if deny else provider.approve)(codes[0], subject)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=act, daemon=True)
    thread.start()
    return thread


def test_headless_whoami_records_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path)
    monkeypatch.setenv("SSH_ORIGINAL_COMMAND", "whoami --json")
    monkeypatch.setenv("SSH_CONNECTION", "127.0.0.9 50000 127.0.0.1 22")
    assert login(config, ALICE_FP) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["user"] == "alice" and info["roles"] == ["developer"]
    types = [e["type"] for e in _events(config) if not e["type"].startswith("recording_")]  # recording's own
    assert types[:4] == ["config_change", "session_start", "headless_command", "session_end"]
    assert types[4] == "checkpoint"
    start = _events(config)[1]
    assert start["payload"]["client"] == "127.0.0.9:50000" and start["payload"]["key_fingerprint"] == ALICE_FP
    store = TinyDBStore(tmp_path / "state" / "state.json")
    (record,) = store.list_sessions(user="alice")
    assert record.status == "ended" and record.kind == "headless" and record.id == info["session"]


def test_unknown_key_malformed_key_and_bad_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path)
    monkeypatch.setenv("SSH_ORIGINAL_COMMAND", "whoami")
    assert login(config, "SHA256:" + "A" * 43) == 1
    assert "is not registered" in capsys.readouterr().err
    assert login(config, "not-a-fingerprint") == 1
    monkeypatch.setenv("SSH_ORIGINAL_COMMAND", "rm -rf / 'unterminated")
    assert login(config, ALICE_FP) == 2
    err = capsys.readouterr().err
    assert "cannot parse the command" in err and "Traceback" not in err
    monkeypatch.setenv("SSH_ORIGINAL_COMMAND", "shell")
    assert login(config, ALICE_FP) == 2
    assert "unknown command 'shell'" in capsys.readouterr().err
    refused = [e for e in _events(config) if e["type"] == "headless_refused"]
    assert len(refused) == 2


def test_connections_lists_usable_and_requestable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path)
    monkeypatch.setenv("SSH_ORIGINAL_COMMAND", "connections --json")
    assert login(config, ALICE_FP) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {(r["name"], r["access"]) for r in rows} == {("pg-readonly", "yes"), ("pg-guarded", "request")}


def test_oidc_login_binds_subject_and_maps_groups(
    tmp_path: Path, provider: Provider, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, _oidc_extra(provider, tmp_path), oidc=True)
    monkeypatch.setenv("SSH_ORIGINAL_COMMAND", "whoami --json")
    _approve_when_asked(provider, "sub-alice")
    assert login(config, ALICE_FP) == 0
    captured = capsys.readouterr()
    assert "bastion-test" in captured.err and ALICE_FP in captured.err  # phishing defence in the prompt
    info = json.loads(captured.out)
    assert info["roles"] == ["developer"] and "engineering" in info["groups"]
    binding = TinyDBStore(tmp_path / "state" / "state.json").get_binding("alice")
    assert binding is not None and binding.subject == "sub-alice"
    start = next(e for e in _events(config) if e["type"] == "session_start")
    assert start["payload"]["oidc"]["binding"] == "bound"

    # The same SSH user finishing the device login as someone else is refused, and it is audited.
    _approve_when_asked(provider, "sub-mallory")
    assert login(config, ALICE_FP) == 1
    assert "bound to a different identity-provider account" in capsys.readouterr().err
    refused = [e for e in _events(config) if e["type"] == "login_refused"]
    assert len(refused) == 1
    ends = [e for e in _events(config) if e["type"] == "session_end"]
    assert ends[-1]["payload"]["status"] == "refused"

    # After the binding expires, a new subject may bind.
    store = TinyDBStore(tmp_path / "state" / "state.json")
    old = store.get_binding("alice")
    assert old is not None
    from dataclasses import replace

    store.put_binding(replace(old, expires_at=time.time() - 1))
    _approve_when_asked(provider, "sub-alice-new")
    assert login(config, ALICE_FP) == 0
    renewed = store.get_binding("alice")
    assert renewed is not None and renewed.subject == "sub-alice-new"


def test_oidc_denied_login_is_refused(
    tmp_path: Path, provider: Provider, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, _oidc_extra(provider, tmp_path), oidc=True)
    monkeypatch.setenv("SSH_ORIGINAL_COMMAND", "whoami")
    _approve_when_asked(provider, "sub-alice", deny=True)
    assert login(config, ALICE_FP) == 1
    err = capsys.readouterr().err
    assert "denied" in err and provider.client_secret not in err
    assert TinyDBStore(tmp_path / "state" / "state.json").get_binding("alice") is None
