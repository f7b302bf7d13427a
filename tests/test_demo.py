"""`bastion demo`, end to end: one headless demo started as the README says, used through its JSON line the
way a person would (ssh, psql, the SSH target), then stopped with SIGTERM — after which nothing it started may
still run and nothing it wrote may remain."""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
import psycopg
import pytest

from bastion.config import load_config
from bastion.demo import DemoError, system
from bastion.demo.sshd import free_port
from bastion.demo.system import Proc, descendants, postgres_bindir
from bastion.policy.detectors import detect

BASTION = str(Path(sys.executable).parent / "bastion")
REASON = (
    "the demo end-to-end test needs root"
    if os.geteuid() != 0
    else "sshd or PostgreSQL binaries missing"
    if not os.path.exists("/usr/sbin/sshd") or postgres_bindir() is None
    else None
)
needs_root = pytest.mark.skipif(REASON is not None, reason=REASON or "")
EMAIL = re.compile(r"^[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}$")
SSN = re.compile(r"^(\d{3})-(\d{2})-(\d{4})$")


@dataclass
class RunningDemo:
    process: subprocess.Popen[bytes]
    info: dict[str, str]
    line: str
    runtime_dir: Path
    stderr: Path
    ports: dict[str, int] = field(default_factory=dict)

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")


def _read_line(process: subprocess.Popen[bytes], timeout: float) -> str:
    assert process.stdout is not None
    data = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or process.poll() is not None:
            break
        ready, _, _ = select.select([process.stdout], [], [], remaining)
        if ready:
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                break
            data += chunk
    return data.decode()


def _env(runtime_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SSH_ORIGINAL_COMMAND"}
    env["XDG_RUNTIME_DIR"] = str(runtime_dir)
    return env


def _private_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    path = tmp_path_factory.mktemp(name)
    path.chmod(0o700)
    return path


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDemo]:
    runtime_dir = _private_dir(tmp_path_factory, "runtime")
    stderr = _private_dir(tmp_path_factory, "logs") / "demo.stderr"
    port = free_port()
    started = time.monotonic()
    with open(stderr, "wb") as err:
        process = subprocess.Popen(
            [BASTION, "demo", "--headless", "--sshd", str(port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, env=_env(runtime_dir),
            start_new_session=True,
        )  # fmt: skip
    try:
        line = _read_line(process, 60)
        assert line.endswith("\n"), (line, stderr.read_text())
        print(f"demo ready after {time.monotonic() - started:.1f} s")
        info = json.loads(line)
        config = load_config(info["config"])
        ports = {
            "front door": port,
            "postgres": int(re.search(r"port=(\d+)", info["postgres_admin"]).group(1)),  # type: ignore[union-attr]
            "ssh target": config.connections["sandbox"].port,
        }
        yield RunningDemo(process, info, line, runtime_dir, stderr, ports)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)


def _ssh(command: str, *remote: str) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(command)
    argv[1:1] = ["-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]
    return subprocess.run(
        [*argv, *remote], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    )


def _luhn(number: str) -> bool:
    digits = [int(d) for d in reversed(number)]
    return sum(d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(digits)) % 10 == 0


@needs_root
def test_json_line_has_everything_and_no_secret(demo: RunningDemo) -> None:
    info = demo.info
    assert {"ssh", "ssh_bob", "ssh_carol", "postgres_admin", "state", "sink", "config", "dir"} <= set(info)
    root = Path(info["dir"])
    assert stat.S_IMODE(root.stat().st_mode) & 0o077 in (0, 0o011)  # others may traverse, never list
    for key in ("ssh", "ssh_bob", "ssh_carol"):
        argv = shlex.split(info[key])
        assert argv[:3] == ["ssh", "-p", str(demo.ports["front door"])]
        assert f"UserKnownHostsFile={root}/clients/known_hosts" in argv
    for secret_file in (root / "secrets").iterdir():
        if secret_file.suffix != ".pub":
            assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600, secret_file
            value = secret_file.read_text().strip()
            assert value not in demo.line and value not in demo.log()
    for name in ("alice", "bob", "carol"):
        assert stat.S_IMODE((root / "clients" / name).stat().st_mode) == 0o600
    assert "password" not in info["postgres_admin"]
    runtime = demo.runtime_dir / "bastion-demo.json"
    assert stat.S_IMODE(runtime.stat().st_mode) == 0o600
    assert json.loads(runtime.read_text())["dir"] == info["dir"]


@needs_root
def test_config_passes_config_check(demo: RunningDemo) -> None:
    result = subprocess.run(
        [BASTION, "config", "check", "--config", demo.info["config"]], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "bastion 'bastion-demo', 3 users" in result.stdout


@needs_root
@pytest.mark.parametrize(("key", "user"), [("ssh", "alice"), ("ssh_bob", "bob"), ("ssh_carol", "carol")])
def test_ssh_line_logs_in_through_the_front_door(demo: RunningDemo, key: str, user: str) -> None:
    result = _ssh(demo.info[key], "whoami", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["user"] == user and info["bastion"] == "bastion-demo"


@needs_root
def test_alice_reads_masked_customers_through_the_bastion(demo: RunningDemo) -> None:
    result = _ssh(demo.info["ssh"], "exec", "pg-readonly", "--", "select email, ssn from customers limit 5")
    assert result.returncode == 0, result.stderr
    assert "@" not in result.stdout and not re.search(r"\d{3}-\d{2}-\d{4}", result.stdout)


@needs_root
def test_postgres_admin_sees_believable_data(demo: RunningDemo) -> None:
    with psycopg.connect(demo.info["postgres_admin"]) as conn:
        rows = conn.execute("SELECT name, email, ssn, phone, card_number, notes FROM customers").fetchall()
        orders = conn.execute("SELECT count(*), count(DISTINCT customer_id) FROM orders").fetchone()
        roles = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolcanlogin").fetchall()}
    assert 200 <= len(rows) <= 2000
    assert len({r[0] for r in rows}) > 100  # names vary
    assert orders is not None and orders[0] > len(rows) and orders[1] > len(rows) // 2
    assert roles == {"postgres", "bastion_ro", "bastion_rw"}
    cards = 0
    for name, email, ssn, phone, card, _notes in rows:
        assert " " in name and EMAIL.match(email), (name, email)
        area, group, serial = SSN.match(ssn).groups()  # type: ignore[union-attr]
        assert 1 <= int(area) <= 899 and area != "666" and group != "00" and serial != "0000", ssn
        assert re.sub(r"\D", "", phone)[-7:-2] == "55501", phone  # 555-01XX: reserved for fiction
        if card is not None:
            cards += 1
            assert card.isdigit() and 13 <= len(card) <= 19 and _luhn(card), card
    assert cards > len(rows) // 2
    notes_with_email = [n for *_, n in rows if any(d.kind == "email" for d in detect(json.dumps(n)))]
    assert len(notes_with_email) >= 10
    # The product's own detectors recognise the planted PII (what masking relies on).
    name, email, ssn, phone, card, _ = next(r for r in rows if r[4])
    kinds = {d.kind for d in detect(f"{email} {ssn} {card}")}
    assert {"email", "ssn", "card"} <= kinds


@needs_root
def test_login_roles_are_what_the_config_says(demo: RunningDemo) -> None:
    config = load_config(demo.info["config"])
    ro, rw = config.connections["pg-readonly"], config.connections["pg-guarded"]
    assert ro.password_file is not None and rw.password_file is not None

    def connect(conn_user: str, password_file: Path) -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1", port=ro.port, dbname="shop", user=conn_user,
            password=password_file.read_text().strip(), autocommit=True,
        )  # fmt: skip

    with connect(ro.user, ro.password_file) as conn:
        assert conn.execute("SELECT count(*) FROM customers").fetchone()[0] > 0  # type: ignore[index]
        with pytest.raises(psycopg.Error):
            conn.execute("DELETE FROM orders")
    with connect(rw.user, rw.password_file) as conn:
        conn.execute("UPDATE orders SET status = status WHERE id = 1")
        with pytest.raises(psycopg.Error):
            conn.execute("CREATE TABLE intruder (x int)")
    with pytest.raises(psycopg.OperationalError):  # no superuser over TCP, password or not
        psycopg.connect(host="127.0.0.1", port=ro.port, dbname="postgres", user="postgres", connect_timeout=5)


@needs_root
def test_ssh_target_accepts_the_demo_key_with_the_pinned_host_key(demo: RunningDemo) -> None:
    config = load_config(demo.info["config"])
    target = config.connections["sandbox"]
    assert target.host_key is not None and target.private_key_file is not None
    client = paramiko.SSHClient()
    client.get_host_keys().add(
        f"[{target.host}]:{target.port}", target.host_key.key_type,
        paramiko.PKey.from_type_string(target.host_key.key_type, target.host_key.blob),
    )  # fmt: skip
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        target.host, port=target.port, username=target.user, key_filename=str(target.private_key_file),
        look_for_keys=False, allow_agent=False, timeout=10,
    )  # fmt: skip
    try:
        _, stdout, _ = client.exec_command("id")
        assert f"({target.user})" in stdout.read().decode()
    finally:
        client.close()


@needs_root
def test_as_bob_needs_a_terminal(demo: RunningDemo) -> None:
    result = subprocess.run(
        [BASTION, "demo", "--as", "bob"], capture_output=True, text=True, env=_env(demo.runtime_dir),
        stdin=subprocess.DEVNULL, timeout=30,
    )  # fmt: skip
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1 and "needs a terminal" in result.stderr


@needs_root
def test_a_second_demo_is_refused_while_one_runs(demo: RunningDemo) -> None:
    result = subprocess.run(
        [BASTION, "demo", "--headless", "--sshd", str(free_port())], capture_output=True, text=True,
        env=_env(demo.runtime_dir), stdin=subprocess.DEVNULL, timeout=30,
    )  # fmt: skip
    assert result.returncode == 1 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and "already running" in result.stderr


@needs_root
def test_sigterm_stops_everything_and_removes_everything(demo: RunningDemo) -> None:
    tree = descendants(demo.process.pid)
    names = [p.comm() for p in tree]
    assert "postgres" in names and names.count("sshd") >= 2, names
    demo.process.send_signal(signal.SIGTERM)
    assert demo.process.wait(30) == 0, demo.log()
    alive = [(p.pid, p.comm()) for p in tree if p.alive()]
    assert not alive, alive
    for what, port in demo.ports.items():
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
        assert what
    assert not Path(demo.info["dir"]).exists()
    assert not (demo.runtime_dir / "bastion-demo.json").exists()
    assert "everything the demo started has ended" in demo.log()


def test_as_bob_without_a_running_demo_is_one_line(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    result = subprocess.run(
        [BASTION, "demo", "--as", "bob"], capture_output=True, text=True, env=_env(tmp_path), timeout=30
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "no demo is running" in result.stderr


def test_demo_without_terminal_says_so_and_starts_nothing(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    result = subprocess.run(
        [BASTION, "demo"], capture_output=True, text=True, env=_env(tmp_path), timeout=30,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "--headless --sshd PORT" in result.stderr


def test_headless_needs_a_front_door_port(tmp_path: Path) -> None:
    result = subprocess.run(
        [BASTION, "demo", "--headless"], capture_output=True, text=True, env=_env(tmp_path), timeout=30
    )
    assert result.returncode == 2 and "--sshd PORT" in result.stderr


def test_missing_packages_are_named_in_one_line_when_not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system, "missing_packages", lambda: ["postgresql", "openssh-server"])
    monkeypatch.setattr(system, "is_root", lambda: False)
    with pytest.raises(DemoError) as caught:
        system.ensure_packages(lambda _: None)
    message = str(caught.value)
    assert "\n" not in message and "apt-get install -y postgresql openssh-server" in message


def test_stale_runtime_file_is_not_a_running_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.demo.run import read_runtime

    tmp_path.chmod(0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / "bastion-demo.json"
    stale.write_text(json.dumps({"pid": dead.pid, "start": 1, "dir": "/nowhere", "config": "/nowhere"}))
    stale.chmod(0o600)
    assert read_runtime() is None and not stale.exists()
    me = Proc.of(os.getpid())
    assert me is not None
    stale.write_text(json.dumps({"pid": me.pid, "start": me.start, "dir": "/d", "config": "/c"}))
    stale.chmod(0o644)  # readable by others: not trusted
    with pytest.raises(DemoError, match="not a 0600 file"):
        read_runtime()
