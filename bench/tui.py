"""The login shell as a user meets it: time from starting `ssh` to the first TUI frame, and the memory of one
idle session with one SQL pane open — through a real OpenSSH sshd front door on loopback.

Reference points printed beside them: the same ssh login running headless `whoami` (Python start-up and
bastion's core, no TUI), so the ratio shows what the TUI itself costs.

Run as root (the front door switches to the service account): .venv/bin/python bench/tui.py [RUNS]
"""

from __future__ import annotations

import os
import pty
import secrets
import select
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the test fixtures build the front door

from bastion.audit.signing import generate_key
from bastion.config import load_config
from tests.configs import ssh_keypair
from tests.shopdb import create_shop, shop_config
from tests.sshd import make_workspace, service_account, start_sshd

ADMIN = os.environ.get("BASTION_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def ssh_argv(port: int, key: Path, account: str, *extra: str) -> list[str]:
    return ["ssh", "-p", str(port), "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            *extra, f"{account}@127.0.0.1"]  # fmt: skip


def first_frame(argv: list[str], *, open_pane: bool = False) -> tuple[float, int | None]:
    """Seconds until the landing screen shows; with open_pane, the session's RSS with one pane open (kB)."""
    started = time.perf_counter()
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(argv[0], argv)  # noqa: S606 - ssh itself, no shell
    buffer, shown, rss = b"", None, None
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.02)
            if ready:
                try:
                    buffer += os.read(fd, 65536)
                except OSError:
                    break
            if shown is None and b"Connections" in buffer:
                shown = time.perf_counter() - started
                if not open_pane:
                    break
                os.write(fd, b"pg-readonly\r")
                pane_deadline = time.monotonic() + 5
                while time.monotonic() < pane_deadline and b"Connected to pg-readonly" not in buffer:
                    if select.select([fd], [], [], 0.05)[0]:
                        buffer += os.read(fd, 65536)
                time.sleep(1.0)  # idle
                rss = session_rss()
                break
    finally:
        os.write(fd, b"\x11")  # ctrl+q ends the session
        time.sleep(0.3)
        os.close(fd)
        os.waitpid(pid, 0)
    if shown is None:
        raise RuntimeError("the TUI did not show its landing screen")
    return shown, rss


def session_rss() -> int | None:
    """Memory of the session: the `bastion login` processes serving it — the recorder and its TUI child
    (recording: bastion/recording/recorder.py) — as the sum of their PSS, so pages they share (the child is
    a fork) count once; kB."""
    total = None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            if b"login" in cmdline and b"--key" in cmdline:
                for line in (entry / "smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total = (total or 0) + int(line.split()[1])
        except OSError:
            continue
    return total


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    name = f"bastion_bench_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    shops = create_shop(psycopg.conninfo.make_conninfo(ADMIN, dbname=name))
    shop = next(shops)
    account, fallback = service_account()
    workspace = make_workspace(account)
    sshd = None
    try:
        keys = workspace.root / "client"
        keys.mkdir()
        alice_pub = ssh_keypair(keys / "alice", "alice@bench")
        config = shop_config(workspace.root, shop)
        text = config.path.read_text()
        text = text.replace('name = "alice"\nkeys = [', f'name = "alice"\nkeys = ["{alice_pub}", ', 1)
        text = text.replace(
            'service_user = "bastion"', f'service_user = "{account}"\ncommand = "{workspace.wrapper}"'
        )
        config.path.write_text(text)
        config = load_config(config.path)
        generate_key(config.audit.signing_key)
        workspace.chown()
        snippet = subprocess.run([str(workspace.wrapper), "sshd-config", "--config", str(config.path)],
                                 capture_output=True, text=True, check=True).stdout  # fmt: skip
        prefix = "PermitRootLogin prohibit-password\n" if account == "root" else ""
        sshd = start_sshd(workspace.root / "sshd", prefix + snippet)
        if fallback:
            print(f"note: {fallback}")
        base = ssh_argv(sshd.port, keys / "alice", account)
        headless = []
        for _ in range(runs):
            t = time.perf_counter()
            subprocess.run([*base[:-1], "-T", base[-1], "whoami"], capture_output=True, check=True)
            headless.append(time.perf_counter() - t)
        frames = [first_frame([*base[:-1], "-tt", base[-1]])[0] for _ in range(runs)]
        _, rss = first_frame([*base[:-1], "-tt", base[-1]], open_pane=True)
        h, f = statistics.median(headless), statistics.median(frames)
        median, best = f * 1000, min(frames) * 1000
        print(f"ssh → first TUI frame: median {median:.0f} ms, best {best:.0f} ms ({runs} runs; goal 600 ms)")
        print(f"ssh → headless whoami done: median {h * 1000:.0f} ms   ratio TUI/headless {f / h:.2f}x")
        print(
            f"memory (PSS) of one idle session with one SQL pane open: {rss / 1024:.1f} MB (goal ≤ 60 MB)"
            if rss
            else "RSS: n/a"
        )
    finally:
        if sshd is not None:
            sshd.stop()
        workspace.cleanup()
        for _ in shops:
            pass
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


if __name__ == "__main__":
    main()
