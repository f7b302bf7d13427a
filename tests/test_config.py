"""Configuration: typed loading, one clear line per problem, exit code 2, never a traceback."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.config import ConfigError, load_config
from bastion.examples import ensure_example_secrets
from tests.configs import base_config, secret, write_config

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bastion", *args], capture_output=True, text=True, cwd=REPO)


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


@pytest.fixture
def example_copy(tmp_path: Path) -> Path:
    """config.example.toml with its (generated) secrets, copied so tests may edit it."""
    ensure_example_secrets(REPO / "examples" / "secrets")
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    target = tmp_path / "config.toml"
    shutil.copy(REPO / "config.example.toml", target)
    return target


def test_example_config_passes_check() -> None:
    ensure_example_secrets(REPO / "examples" / "secrets")
    result = run_cli("config", "check", "--config", "config.example.toml")
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout and "bastion-example" in result.stdout
    config = load_config(REPO / "config.example.toml")
    assert set(config.connections) == {"pg-readonly", "pg-guarded", "pg-dba", "app-server"}
    assert config.connections["pg-readonly"].policy == "readonly"
    assert config.connections["pg-guarded"].policy == "guarded"
    assert config.policies["shop-dba"].tables == {"public.orders": "approve"}
    assert {r.pattern for r in config.masking.columns} == {
        "customers.email",
        "customers.ssn",
        "customers.phone",
        "customers.card_number",
    }
    assert config.connections["app-server"].host_key is not None
    assert config.recording.free_space_floor == 1024**3


def test_example_documents_every_key() -> None:
    """Every key the loader knows appears in the example, commented or not."""
    text = (REPO / "config.example.toml").read_text()
    import bastion.config as cfg

    source = Path(cfg.__file__).read_text()
    import re

    keys = set(
        re.findall(r'\bt\.(?:str|bool|int|str_list|duration|size|table|mapping|name)\("([a-z_]+)"', source)
    )
    keys |= set(re.findall(r'self\.(?:file|public_key)\(t, "([a-z_]+)"', source))
    keys |= set(re.findall(r'(?:rt|ct)\.(?:str_list|int|duration|str)\("([a-z_]+)"', source))
    missing = sorted(k for k in keys if not re.search(rf"(^|[\s#\[.{{,]){k}\s*=|\[{k}\]|\.{k}\]", text, re.M))
    assert not missing, f"undocumented keys: {missing}"


def test_unknown_key_unknown_section_wrong_type_each_one_line(example_copy: Path) -> None:
    text = example_copy.read_text()
    text = text.replace('service_user = "bastion"', 'service_user = "bastion"\ncolour = "blue"')
    text = text.replace("checkpoint_every = 100", 'checkpoint_every = "often"')
    text += "\n[telemetry]\nenabled = true\n"
    example_copy.write_text(text)
    result = run_cli("config", "check", "--config", str(example_copy))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3, lines
    assert any("bastion.colour: unknown key" in line for line in lines)
    assert any("telemetry: unknown key" in line for line in lines)
    assert any("audit.checkpoint_every: expected an integer, got a string" in line for line in lines)


def test_valid_base_config_loads(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    assert config.bastion.name == "bastion-test"
    assert config.connections["pg-readonly"].password_file == tmp_path / "secrets" / "pg.password"
    alice = config.users["alice"]
    assert config.user_by_fingerprint(alice.keys[0].fingerprint) is alice


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (
            lambda t: t.replace('policy = "readonly"', 'policy = "nope"'),
            "connections[pg-readonly].policy: unknown policy 'nope'",
        ),
        (
            lambda t: t.replace('connections = ["pg-readonly"]', 'connections = ["pg-x"]'),
            "roles[developer].connections[0]: unknown connection 'pg-x'",
        ),
        (
            lambda t: t.replace('may_request = ["pg-guarded", "dba"]', 'may_request = ["root"]'),
            "roles[developer].may_request[0]: unknown role or connection 'root'",
        ),
        (
            lambda t: t.replace('name = "bob"', 'name = "alice"'),
            "users[alice].name: duplicate users name 'alice'",
        ),
        (lambda t: t.replace('name = "dba"', 'name = "developer"'), "duplicate roles name 'developer'"),
        (
            lambda t: t.replace('name = "pg-guarded"', 'name = "pg-readonly"'),
            "duplicate connections name 'pg-readonly'",
        ),
        (
            lambda t: t.replace(
                'password_file = "secrets/pg.password"', 'password_file = "secrets/missing"', 1
            ),
            "connections[pg-readonly].password_file: secret file",
        ),
        (
            lambda t: t.replace(
                'host = "127.0.0.1"\ndatabase = "shop"\nuser = "ro"',
                'host = "127.0.0.1"\ndatabase = "shop"\nuser = "ro"\nport = "5432"',
            ),
            "connections[pg-readonly].port: expected an integer, got a string",
        ),
        (
            lambda t: t.replace("port = 5432", "") + '\n[recording]\nfailure = "sometimes"\n',
            "recording.failure: must be one of strict, best_effort",
        ),
        (
            lambda t: t.replace('name = "alice"', 'name = "Alice Smith"'),
            "users[0].name: 'Alice Smith' is not a valid name",
        ),
        (lambda t: t + '\n[recording]\nmax_lag = "soon"\n', "recording.max_lag: 'soon' is not a duration"),
        (
            lambda t: t + '\n[identity.oidc]\nissuer = "http://login.example.com"\nclient_id = "b"\n',
            "identity.oidc.issuer: must use https",
        ),
        (
            lambda t: (
                t
                + '\n[identity.oidc]\nissuer = "https://login.example.com"\nclient_id = "b"\nalgorithms = ["none", "HS256"]\n'
            ),
            "identity.oidc.algorithms[0]: 'none' is not allowed",
        ),
        (
            lambda t: t.replace('state = "tinydb:', 'state = "postgresql://u:pw@db/x"\n#'),
            "bastion.state: holds a password",
        ),
        (
            lambda t: t.replace("disabled", "x").replace(
                'groups = ["developers"]\n\n[[users]]',
                'groups = ["developers"]\ndisabled = "no"\n\n[[users]]',
            ),
            "users[alice].disabled: expected a boolean, got a string",
        ),
        (
            lambda t: t.replace('host_key = "ssh-ed25519', 'host_key = "ssh-ed25519 AAAA'),
            "connections[app].host_key: not a valid SSH public key",
        ),
        (
            lambda t: t.replace(
                '"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKEY9',
                '"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGu2fjzRNM6+UQ+gYDQOgr+9ltQSOZ/riI3V5Un2TfdJ"]\n#',
            ),
            "is already registered to user 'alice'",
        ),
        (lambda t: t.replace('name = "dba"', 'name = "app"'), "a role and a connection share this name"),
        (
            lambda t: t.replace('[bastion]\nname = "bastion-test"', "[bastion]"),
            "bastion.name: required key is missing",
        ),
        (
            lambda t: t + '\n[[policies]]\nname = "p"\npreset = "guarded"\nclasses = { writes = "allow" }\n',
            "policies[p].classes.writes: unknown statement class",
        ),
        (
            lambda t: t + '\n[[policies]]\nname = "p"\npreset = "open"\nclasses = { session = "approve" }\n',
            "policies[p].classes.session: session control stays blocked",
        ),
        (
            lambda t: t + '\n[[policies]]\nname = "p"\npreset = "open"\nclasses = { dangerous = "allow" }\n',
            "policies[p].classes.dangerous: dangerous statements (server files, programs, other databases) need",
        ),
        (
            lambda t: t + '\n[[policies]]\nname = "readonly"\npreset = "open"\n',
            "policies[readonly].name: this name is a built-in preset",
        ),
        (
            lambda t: t + '\n[approvals]\n[[approvals.rules]]\ntargets = ["ghost"]\n',
            "approvals.rules[0].targets[0]: unknown role or connection 'ghost'",
        ),
        (lambda t: t + "\n[bastion]\n", "TOML syntax"),
    ],
)
def test_each_problem_is_named(tmp_path: Path, mutation, expected: str) -> None:
    text = mutation(base_config(tmp_path))
    found = problems(write_config(tmp_path, text))
    assert any(expected in line for line in found), found


def test_secret_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    secret(tmp_path / "secrets" / "pg.password", mode=0o644)
    found = problems(path)
    assert any("accessible by group or others (mode 0644); chmod 600 it" in line for line in found), found
    result = run_cli("config", "check", "--config", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "s3cret-value" not in result.stderr + result.stdout


def test_errors_are_all_collected(tmp_path: Path) -> None:
    text = (
        base_config(tmp_path)
        .replace('policy = "readonly"', 'policy = "nope"')
        .replace("[[users]]", "[[users]]\nshoe = 1", 1)
    )
    found = problems(write_config(tmp_path, text))
    assert len(found) == 2, found


def test_wrong_types_never_crash(tmp_path: Path) -> None:
    """Every section replaced by a value of the wrong kind gives errors, not exceptions."""
    for text in ["bastion = 3", "bastion = []\n", "users = 4\n[bastion]\nname='x'", "[bastion]\nname='x'\n[[connections]]\nname='c'\ntype=5",
                 "[bastion]\nname='x'\nroles = 'r'", "[bastion]\nname='x'\n[recording]\nsink = 'dir'"]:  # fmt: skip
        found = problems(write_config(tmp_path, text))
        assert found and all(": " in line for line in found), (text, found)


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    result = run_cli("config", "check", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
