"""Front-door escapes, end to end: a real OpenSSH sshd on loopback serving the shop database, driven by
OpenSSH `ssh` (also in a pty) and by paramiko.

Every way out a user might try — a shell, shell syntax, forwarding, file transfer, environment, odd bytes —
must fail, and leave a record: the bastion's audit log when bastion ran (session_start, headless_refused,
session_end), sshd's own log when sshd refused before any bastion process existed (forwarding, subsystems,
unknown or disabled keys). Headless `exec` must return masked rows over both clients.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import socket
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko
import pytest

from bastion.audit.log import read_events
from bastion.config import load_config
from bastion.identity.keys import parse_public_key
from tests.configs import ALICE_KEY, BOB_KEY, ssh_keypair
from tests.shopdb import PLANTED, Shop, shop_config
from tests.sshd import (
    Sshd,
    Workspace,
    free_port,
    make_workspace,
    service_account,
    sshd_unavailable_reason,
    start_sshd,
)

REASON = sshd_unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

SENSITIVE = [str(row[k]) for row in PLANTED for k in ("email", "ssn", "phone", "card_number")]


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Door:
    """The running front door and what the tests need to drive and inspect it."""

    sshd: Sshd
    workspace: Workspace
    config_path: Path
    account: str
    keys: dict[str, Path]
    evil: Path  # payloads that leave a marker in `markers` if an environment variable ever took effect
    markers: Path
    audit_log: Path
    fingerprints: dict[str, str] = field(default_factory=dict)

    def ssh_argv(self, key: str, *options: str) -> list[str]:
        return [
            "ssh", "-p", str(self.sshd.port), "-i", str(self.keys[key]), "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", *options, f"{self.account}@127.0.0.1",
        ]  # fmt: skip

    def ssh(
        self,
        *command: str | bytes,
        key: str = "alice",
        options: tuple[str, ...] = ("-T",),
        env: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> Result:
        argv: list[str | bytes] = [*self.ssh_argv(key, *options), *command]
        done = subprocess.run(
            argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env
        )  # fmt: skip
        return Result(
            done.returncode, done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace")
        )

    def paramiko(self, key: str = "alice") -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507 - throwaway loopback sshd
        client.connect(
            "127.0.0.1", port=self.sshd.port, username=self.account, key_filename=str(self.keys[key]),
            look_for_keys=False, allow_agent=False, timeout=10,
        )  # fmt: skip
        return client

    def events(self) -> list[dict[str, Any]]:
        return list(read_events(self.audit_log)) if self.audit_log.exists() else []

    def mark(self) -> int:
        """Where the audit log is now; `sessions_since` reads what came after."""
        return len(self.events())

    def sessions_since(self, mark: int) -> dict[str, list[dict[str, Any]]]:
        sessions: dict[str, list[dict[str, Any]]] = {}
        for event in self.events()[mark:]:
            if event.get("session"):
                sessions.setdefault(event["session"], []).append(event)
        return sessions

    def new_sessions(self, mark: int) -> dict[str, list[dict[str, Any]]]:
        """Sessions that started after `mark` (a session from an earlier test may still be ending)."""
        return {
            sid: events
            for sid, events in self.sessions_since(mark).items()
            if any(e["type"] == "session_start" for e in events)
        }

    def assert_refusal_audited(self, mark: int, reason: str = "") -> dict[str, Any]:
        """Exactly one new session: started, refused (with `reason` in it), ended — in that order."""
        sessions = self.new_sessions(mark)
        assert len(sessions) == 1, sessions
        (events,) = sessions.values()
        types = [e["type"] for e in events]
        assert "headless_refused" in types and "session_end" in types, types
        assert types.index("session_start") < types.index("headless_refused") < types.index("session_end")
        refused = [e for e in events if e["type"] == "headless_refused"]
        assert len(refused) == 1 and reason in refused[0]["payload"]["reason"], refused
        return refused[0]

    def sshd_log_since(self, offset: int) -> str:
        return self.sshd.log()[offset:]

    def markers_left(self) -> list[str]:
        return sorted(p.name for p in self.markers.iterdir())


def _write_payloads(evil: Path, markers: Path) -> None:
    """Python, bash and shared-library payloads, each writing its own marker when it runs."""
    evil.mkdir()
    markers.mkdir()
    (evil / "sitecustomize.py").write_text(f"open({str(markers / 'sitecustomize')!r}, 'a').write('ran')\n")
    (evil / "evildriver.py").write_text(
        f"open({str(markers / 'textual_driver')!r}, 'a').write('ran')\nclass Evil:\n    pass\n"
    )
    (evil / "bash_env.sh").write_text(f"touch {markers / 'bash_env'}\n")
    source = evil / "preload.c"
    source.write_text(
        "#include <stdio.h>\n#include <string.h>\n"
        "__attribute__((constructor)) static void run(void) {\n"
        '  char comm[64] = "", path[512]; FILE *f = fopen("/proc/self/comm", "r");\n'
        '  if (f) { if (fgets(comm, sizeof comm, f)) comm[strcspn(comm, "\\n")] = 0; fclose(f); }\n'
        f'  snprintf(path, sizeof path, "{markers}/ld_preload.%s", comm);\n'
        '  f = fopen(path, "a"); if (f) { fputs("ran", f); fclose(f); }\n}\n'
    )
    if shutil.which("gcc"):
        subprocess.run(
            ["gcc", "-shared", "-fPIC", "-o", str(evil / "preload.so"), str(source)], check=True
        )  # fmt: skip


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory, shop: Shop) -> Iterator[Door]:
    account, fallback = service_account()
    if fallback:
        print(f"front door: {fallback}")
    workspace = make_workspace(account)
    client_keys = tmp_path_factory.mktemp("escape-keys")
    pubs = {name: ssh_keypair(client_keys / name, f"{name}@laptop") for name in ("alice", "bob", "stranger")}
    config = shop_config(workspace.root, shop)
    text = (
        config.path.read_text()
        .replace(ALICE_KEY, pubs["alice"])
        .replace(BOB_KEY, pubs["bob"])
        .replace('service_user = "bastion"', f'service_user = "{account}"\ncommand = "{workspace.wrapper}"')
        .replace('name = "bob"', 'name = "bob"\ndisabled = true')
    )
    config.path.write_text(text)
    evil, markers = workspace.root / "evil", workspace.root / "markers"
    _write_payloads(evil, markers)
    workspace.chown()
    snippet = subprocess.run(
        [str(workspace.wrapper), "sshd-config", "--config", str(config.path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    prefix = "PermitRootLogin prohibit-password\n" if account == "root" else ""
    sshd = start_sshd(workspace.root / "sshd", prefix + snippet.stdout)
    loaded = load_config(config.path)
    fingerprints = {name: parse_public_key(pub).fingerprint for name, pub in pubs.items()}
    try:
        yield Door(
            sshd, workspace, config.path, account, {n: client_keys / n for n in pubs}, evil, markers,
            loaded.audit.log, fingerprints,
        )  # fmt: skip
    finally:
        sshd.stop()
        workspace.cleanup()


def assert_no_sensitive(text: str) -> None:
    for value in SENSITIVE:
        assert value not in text, f"planted value {value!r} leaked"


# ---------------------------------------------------------------- exec works, masked


def test_exec_over_openssh_returns_masked_rows(door: Door) -> None:
    mark = door.mark()
    result = door.ssh("exec", "--json", "pg-readonly", "--", "select * from customers order by id")
    assert result.code == 0, (result.err, door.sshd.log()[-1500:])
    records = [json.loads(line) for line in result.out.splitlines()]
    statement = records[0]
    assert {m["column"] for m in statement["masked"]} == {"email", "ssn", "phone", "card_number"}
    rows = [r["values"] for r in records if r["type"] == "row"]
    assert [r[1] for r in rows] == ["Ada Lovelace", "Grace Hopper", "Alan Turing"]
    assert records[-1]["status"] == "ok" and records[-1]["rows"] == 3
    assert_no_sensitive(result.out + result.err)
    (events,) = door.new_sessions(mark).values()
    assert {"session_start", "sql_statement", "sql_outcome", "session_end"} <= {e["type"] for e in events}

    # Text mode, with a locale the client chose (sshd accepts LANG/LC_*): still masked, no traceback.
    text = door.ssh(
        "exec pg-readonly -- select name, ssn, card_number from customers order by id",
        options=("-T", "-o", "SetEnv=LC_ALL=C LANG=C"),
    )
    assert text.code == 0, text.err
    assert "Ada Lovelace" in text.out and "masked: ssn (full" in text.out
    assert_no_sensitive(text.out + text.err)


def test_exec_over_paramiko_returns_masked_rows(door: Door) -> None:
    client = door.paramiko()
    try:
        _, stdout, stderr = client.exec_command(
            "exec --json pg-readonly -- select email, phone, notes from customers order by id"
        )
        out, err = stdout.read().decode(), stderr.read().decode()
        assert stdout.channel.recv_exit_status() == 0, err
        records = [json.loads(line) for line in out.splitlines()]
        assert [m["column"] for m in records[0]["masked"]] == ["email", "phone"]
        assert records[1]["values"][0].startswith("tok_") and records[1]["values"][1] == "••••0134"
        assert_no_sensitive(out + err)
        assert "ada.backup@example.net" not in out  # detectors mask e-mails inside JSON documents

        # A blocked write and a write that needs approval: exit codes carry through sshd.
        _, stdout, _ = client.exec_command("exec pg-readonly -- delete from orders")
        assert "blocked" in stdout.read().decode() and stdout.channel.recv_exit_status() == 1
        _, stdout, _ = client.exec_command("exec pg-guarded -- delete from orders where id = 1")
        assert "needs approval" in stdout.read().decode() and stdout.channel.recv_exit_status() == 3
    finally:
        client.close()


# ---------------------------------------------------------------- no shell


@pytest.mark.parametrize(
    "command", [("/bin/sh",), ("/bin/sh", "-c", "id"), ("bash", "-i"), ("sh",), ("exec", "/bin/sh")]
)
def test_shell_is_refused_and_audited(door: Door, command: tuple[str, ...]) -> None:
    mark = door.mark()
    result = door.ssh(*command)
    assert result.code == 2, result
    assert "uid=" not in result.out and "$ " not in result.out
    assert result.err.startswith("bastion: ")
    door.assert_refusal_audited(mark)


def test_shell_with_a_pty_is_refused_too(door: Door) -> None:
    mark = door.mark()
    result = door.ssh("/bin/sh", options=("-tt",))
    assert result.code == 2 and "unknown command '/bin/sh'" in result.out + result.err
    door.assert_refusal_audited(mark, "unknown command")


@pytest.mark.parametrize(
    ("template", "code", "reason"),
    [
        # "whoami;" is one word: shlex splits on whitespace only, and `;` means nothing to it
        ("whoami; touch {m}", 2, "unknown command 'whoami;'"),
        ("whoami;touch {m}", 2, "unknown command"),
        ("whoami && touch {m}", 2, "unrecognized arguments"),
        ("whoami | touch {m}", 2, "unrecognized arguments"),
        ("whoami || touch {m}", 2, "unrecognized arguments"),
        ("$(touch {m})", 2, "unknown command"),
        ("`touch {m}`", 2, "unknown command"),
        ("whoami $(touch {m})", 2, "unrecognized arguments"),
        ("whoami `touch {m}`", 2, "unrecognized arguments"),
        ("whoami > {m}", 2, "unrecognized arguments"),
        ("whoami\ntouch {m}", 2, "unrecognized arguments"),
        ("exec pg-readonly -- select 1; \\! touch {m}", 1, ""),  # psql's shell escape means nothing here
        ("exec pg-readonly -- select '$(touch {m})' as x", 0, ""),  # data, not syntax
        ("exec pg-readonly -- select pg_read_file('/etc/passwd')", 1, ""),
        ("exec pg-readonly -- copy (select 1) to program 'touch {m}'", 1, ""),
    ],
)
def test_shell_syntax_is_only_words(door: Door, template: str, code: int, reason: str) -> None:
    marker = door.markers / f"meta-{zlib.crc32(template.encode()):08x}"
    mark = door.mark()
    result = door.ssh(template.format(m=marker))
    assert result.code == code, result
    assert not marker.exists()
    assert "root:" not in result.out
    if code == 2:
        door.assert_refusal_audited(mark, reason)
    else:
        (events,) = door.new_sessions(mark).values()
        verdicts = [e["payload"]["verdict"] for e in events if e["type"] == "sql_statement"]
        assert verdicts and (code == 0 or verdicts[-1] == "block"), verdicts


# ---------------------------------------------------------------- forwarding


class Canary:
    """A loopback TCP service that counts connections: a forward that worked would reach it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            with conn:
                conn.sendall(b"CANARY\n")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(), so the thread ends
        self.sock.close()
        self.thread.join(timeout=5)


@pytest.fixture
def canary() -> Iterator[Canary]:
    running = Canary()
    try:
        yield running
    finally:
        running.close()


def _wait_listening(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def _read_some(sock: socket.socket, timeout: float = 3) -> bytes:
    sock.settimeout(timeout)
    try:
        return sock.recv(64)
    except (TimeoutError, ConnectionError):
        return b""


@pytest.fixture
def background_ssh() -> Iterator[list[subprocess.Popen[bytes]]]:
    """ssh processes a test starts in the background; stopped by their own handles afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()  # ssh -N lingers on SIGTERM while a forwarded socket is open
            process.wait(5)


def test_local_forward_does_not_reach_anything(
    door: Door, canary: Canary, background_ssh: list[subprocess.Popen[bytes]]
) -> None:
    log_offset = len(door.sshd.log())
    local = free_port()
    argv = door.ssh_argv("alice", "-N", "-L", f"{local}:127.0.0.1:{canary.port}")
    background_ssh.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    _wait_listening(local)  # the client listens; the server must refuse to connect onwards
    with socket.create_connection(("127.0.0.1", local), timeout=5) as sock:
        assert b"CANARY" not in _read_some(sock)
    assert canary.accepted == 0
    time.sleep(0.2)
    assert "denied" in door.sshd_log_since(log_offset) or "refused" in door.sshd_log_since(log_offset)


def test_dynamic_forward_does_not_reach_anything(
    door: Door, canary: Canary, background_ssh: list[subprocess.Popen[bytes]]
) -> None:
    log_offset = len(door.sshd.log())
    socks = free_port()
    background_ssh.append(
        subprocess.Popen(
            door.ssh_argv("alice", "-N", "-D", str(socks)),
            stdin=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    _wait_listening(socks)
    with socket.create_connection(("127.0.0.1", socks), timeout=5) as sock:
        sock.sendall(b"\x05\x01\x00")  # SOCKS5, no authentication
        assert _read_some(sock) == b"\x05\x00"
        sock.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + canary.port.to_bytes(2, "big"))
        reply = _read_some(sock)
        assert not reply.startswith(b"\x05\x00") and b"CANARY" not in reply
    assert canary.accepted == 0
    time.sleep(0.2)
    assert "denied" in door.sshd_log_since(log_offset) or "refused" in door.sshd_log_since(log_offset)


def test_remote_forward_is_refused(door: Door, canary: Canary) -> None:
    remote = free_port()
    argv = door.ssh_argv(
        "alice", "-N", "-o", "ExitOnForwardFailure=yes", "-R", f"{remote}:127.0.0.1:{canary.port}"
    )
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 255 and "remote port forwarding failed" in done.stderr
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", remote), timeout=1).close()
    assert canary.accepted == 0


def test_paramiko_forwarding_requests_are_refused(door: Door, canary: Canary) -> None:
    client = door.paramiko()
    try:
        transport = client.get_transport()
        assert transport is not None
        with pytest.raises(paramiko.ChannelException):
            transport.open_channel("direct-tcpip", ("127.0.0.1", canary.port), ("127.0.0.1", 0))
        with pytest.raises(paramiko.SSHException):
            transport.request_port_forward("127.0.0.1", free_port())
    finally:
        client.close()
    assert canary.accepted == 0


# ---------------------------------------------------------------- file transfer


def test_sftp_and_scp_are_refused(door: Door, tmp_path: Path) -> None:
    source = tmp_path / "payload.txt"
    source.write_text("payload\n")
    target = door.markers / "copied"
    common = ["-P", str(door.sshd.port), "-i", str(door.keys["alice"]), *door.ssh_argv("alice")[5:-1]]
    remote = f"{door.account}@127.0.0.1"
    log_offset = len(door.sshd.log())

    sftp = subprocess.run(
        ["sftp", "-b", "-", *common, remote], input=f"put {source} {target}\n", capture_output=True,
        text=True, timeout=30,
    )  # fmt: skip
    assert sftp.returncode != 0 and "subsystem request failed" in sftp.stderr.lower()
    scp = subprocess.run(["scp", *common, str(source), f"{remote}:{target}"], capture_output=True, text=True)
    assert scp.returncode != 0 and not target.exists()
    assert "subsystem request for sftp" in door.sshd_log_since(log_offset)

    mark = door.mark()  # legacy scp runs `scp -t PATH` as a command: bastion refuses it
    legacy = subprocess.run(
        ["scp", "-O", *common, str(source), f"{remote}:{target}"], capture_output=True, text=True, timeout=30
    )  # fmt: skip
    assert legacy.returncode != 0 and not target.exists()
    door.assert_refusal_audited(mark, "unknown command 'scp'")

    client = door.paramiko()
    try:
        with pytest.raises(paramiko.SSHException):
            client.open_sftp()
        channel = client.get_transport().open_session()  # type: ignore[union-attr]
        with pytest.raises(paramiko.SSHException):
            channel.invoke_subsystem("sftp")
    finally:
        client.close()


# ---------------------------------------------------------------- no command, no pty


def test_no_command_without_pty_gets_a_clear_message(door: Door) -> None:
    result = door.ssh()
    assert result.code == 1
    assert result.err.strip() == "bastion: bastion needs a terminal: use ssh -t"


def test_no_command_without_pty_is_audited(door: Door) -> None:
    mark = door.mark()
    assert door.ssh().code == 1
    assert door.new_sessions(mark), "the refused no-pty login left no audit event"


# ---------------------------------------------------------------- environment


def test_sent_environment_has_no_effect(door: Door) -> None:
    preload = door.evil / "preload.so"
    hostile = {
        "PYTHONPATH": str(door.evil),
        "LD_PRELOAD": str(preload),
        "BASH_ENV": str(door.evil / "bash_env.sh"),
        "TEXTUAL_DRIVER": "evildriver:Evil",
        "PYTHONSTARTUP": str(door.evil / "sitecustomize.py"),
        "PYTHONINSPECT": "1",
    }
    # Positive control: the payloads do run when the variables reach a process of the service account.
    door.workspace.run_as("env", f"PYTHONPATH={door.evil}", str(door.workspace.wrapper), "--help")
    door.workspace.run_as("env", f"BASH_ENV={door.evil}/bash_env.sh", "bash", "-c", "true")
    expected = ["bash_env", "sitecustomize"]
    if preload.exists():
        door.workspace.run_as("env", f"LD_PRELOAD={preload}", "true")
        expected.insert(1, "ld_preload.true")
    assert door.markers_left() == expected
    for marker in door.markers.iterdir():
        marker.unlink()

    sendenv = [opt for name in hostile for opt in ("-o", f"SendEnv={name}")]
    setenv = ["-o", "SetEnv=" + " ".join(f"{k}={v}" for k, v in hostile.items())]
    env = {**os.environ, **hostile}
    for options in (("-T", *sendenv), ("-T", *setenv)):
        result = door.ssh("whoami", "--json", options=options, env=env)
        assert result.code == 0, result
        assert json.loads(result.out)["user"] == "alice"
        assert "ld.so" not in result.err
        exec_result = door.ssh("exec", "pg-readonly", "--", "select 1 as one", options=options, env=env)
        assert exec_result.code == 0, exec_result
    tui = PtySsh(door.ssh_argv("alice", "-tt", *setenv), env=env)  # the TUI path: TEXTUAL_DRIVER matters here
    try:
        tui.read(15, until=b"pg-readonly")
        tui.send(b"\x11")  # Ctrl+Q
        tui.wait(10)
        assert b"ld.so" not in tui.output
    finally:
        tui.close()

    client = door.paramiko()
    try:
        channel = client.get_transport().open_session()  # type: ignore[union-attr]
        channel.update_environment(hostile)
        channel.exec_command("whoami --json")
        assert json.loads(channel.makefile().read().decode())["user"] == "alice"
        assert channel.recv_exit_status() == 0
    finally:
        client.close()
    # SendEnv needs the variables in the local client's own environment, so the local ssh loads the library
    # itself ("ld_preload.ssh"): that is the client's business. Nothing may have run on the bastion side.
    assert [m for m in door.markers_left() if m != "ld_preload.ssh"] == []


# ---------------------------------------------------------------- hostile command lines


def test_100kb_command_line(door: Door) -> None:
    mark = door.mark()
    result = door.ssh("x" * 100_000)
    assert result.code == 2
    assert len(result.err.splitlines()[0]) < 90 and len(result.err) < 1000
    refused = door.assert_refusal_audited(mark, "unknown command 'xxx")
    assert len(refused["payload"]["reason"]) < 90

    literal = "b" * 100_000  # a big statement is legitimate: it runs
    client = door.paramiko()
    try:
        _, stdout, _ = client.exec_command(f"exec --json pg-readonly -- select length('{literal}') as n")
        lines = stdout.read().decode().splitlines()
        assert stdout.channel.recv_exit_status() == 0
        assert json.loads(lines[1])["values"] == [100_000]
    finally:
        client.close()


def test_bytes_that_are_not_utf8(door: Door) -> None:
    mark = door.mark()
    result = door.ssh(b"whoami", b"\xff\xfe\x80")
    assert result.code == 2 and result.err == "bastion: the command is not valid UTF-8\n"
    door.assert_refusal_audited(mark, "not valid UTF-8")

    mark = door.mark()
    client = door.paramiko()
    try:
        channel = client.get_transport().open_session()  # type: ignore[union-attr]
        channel.exec_command(b"exec pg-readonly -- select '\xe9\xff' as x")
        assert channel.recv_exit_status() == 2
        assert channel.makefile_stderr().read() == b"bastion: the command is not valid UTF-8\n"
    finally:
        client.close()
    door.assert_refusal_audited(mark, "not valid UTF-8")


def test_control_characters_never_reach_the_terminal(door: Door) -> None:
    mark = door.mark()
    result = door.ssh("\x1b]0;pwned\x07\x1b[2J\x1b[31mwhoami\x0b")
    assert result.code == 2
    assert "\x1b" not in result.err and "\x07" not in result.err and "\x0b" not in result.err
    assert result.err.splitlines()[0] == "bastion: unknown command ']0;pwned[2J[31mwhoami'; commands:"
    door.assert_refusal_audited(mark, "unknown command")

    client = door.paramiko()
    try:
        _, stdout, stderr = client.exec_command("")
        assert stdout.channel.recv_exit_status() == 2 and "empty command" in stderr.read().decode()
    finally:
        client.close()


# ---------------------------------------------------------------- keys


def test_unknown_key_is_refused_by_sshd(door: Door) -> None:
    mark, offset = door.mark(), len(door.sshd.log())
    result = door.ssh("whoami", key="stranger")
    assert result.code == 255 and "Permission denied (publickey)" in result.err
    assert door.new_sessions(mark) == {}  # no bastion process ran
    log = door.sshd_log_since(offset)
    assert "Failed publickey" in log and door.fingerprints["stranger"] in log  # sshd's record of it
    refused = [e["payload"] for e in door.events()[mark:] if e["type"] == "key_refused"]  # and ours
    assert refused and all(
        r == {"reason": "unknown key", "key": door.fingerprints["stranger"]} for r in refused
    )


def test_disabled_user_is_refused_by_sshd(door: Door) -> None:
    mark, offset = door.mark(), len(door.sshd.log())
    result = door.ssh("whoami", key="bob")
    assert result.code == 255 and "Permission denied" in result.err
    assert door.new_sessions(mark) == {}
    log = door.sshd_log_since(offset)
    assert "Failed publickey" in log and door.fingerprints["bob"] in log
    refused = [e["payload"] for e in door.events()[mark:] if e["type"] == "key_refused"]
    assert refused and all(r["reason"] == "user bob is disabled" and r["user"] == "bob" for r in refused)


# ---------------------------------------------------------------- interactive keys (need the TUI)


def _stopped_processes(config_path: Path) -> list[int]:
    """Processes of bastion sessions (their command line names this config) that are stopped (state T)."""
    stopped = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if str(config_path).encode() in cmdline and stat.rsplit(")", 1)[1].split()[0] in {"T", "t"}:
            stopped.append(int(entry.name))
    return stopped


class PtySsh:
    """OpenSSH ssh -tt on a pty whose master we hold, as a user's terminal emulator would."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.master, slave = os.openpty()
        self.process = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True, env=env
        )  # fmt: skip
        os.close(slave)
        self.output = b""

    def read(self, seconds: float, until: bytes | None = None) -> bytes:
        """What arrives within `seconds` (sooner once `until` has appeared, or the other side closed)."""
        deadline = time.monotonic() + seconds
        start = len(self.output)
        while (left := deadline - time.monotonic()) > 0:
            if until is not None and until in self.output[start:]:
                break
            ready, _, _ = select.select([self.master], [], [], left)
            if not ready:
                break
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            self.output += chunk
        return self.output[start:]

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            self.read(0.2)
        return self.process.poll()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        os.close(self.master)


@pytest.mark.parametrize(
    ("name", "key"),
    [("ctrl-z", b"\x1a"), ("ctrl-backslash", b"\x1c"), ("ctrl-c", b"\x03"), ("ctrl-p", b"\x10")],
)
def test_interactive_keys_do_not_escape(door: Door, name: str, key: bytes) -> None:
    """The key reaches the TUI and does nothing dangerous: no shell evaluates what is typed next, no
    bastion process is stopped, the session is still alive and quits cleanly (Ctrl+Q), recorded as ended."""
    mark = door.mark()
    session = PtySsh(door.ssh_argv("alice", "-tt"))
    try:
        first = session.read(15, until=b"pg-readonly")  # the landing screen lists alice's connections
        assert session.process.poll() is None, f"the session ended before any key: {first[-300:]!r}"
        assert b"pg-readonly" in first, first[-300:]
        session.read(0.5)
        assert b"ssh" not in session.output  # only hers: the SSH connection "app" belongs to no role of alice
        session.send(key)
        session.read(0.5)
        if name == "ctrl-p":  # in the palette, ask for the ways out a palette might offer
            for word in (b"shell", b"screenshot", b"suspend", b"theme"):
                session.send(word + b"\r")
                session.read(0.3)
                session.send(b"\x1b")
        session.send(b"echo PWNED-$((6*7))\r")
        session.read(0.8)
        assert b"PWNED-42" not in session.output, "a shell evaluated our input"
        assert session.process.poll() is None, f"the session died after {name}: {session.output[-300:]!r}"
        assert _stopped_processes(door.config_path) == [], f"{name} stopped a bastion process"
        session.send(b"\x1b\x1b\x11")  # leave any modal, then Ctrl+Q: the TUI still answers keys
        assert session.wait(15) == 0, session.output[-300:]
    finally:
        session.close()
    (events,) = door.new_sessions(mark).values()
    end = next(e for e in events if e["type"] == "session_end")
    assert end["payload"]["status"] == "ended", end
    assert events[[e["type"] for e in events].index("session_start")]["payload"]["kind"] == "tui"
