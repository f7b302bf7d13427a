"""The login shell as a user meets it: time from starting `ssh` to the first TUI frame, and the memory of one
idle session with one SQL pane open — through a real OpenSSH sshd front door on loopback.

Reference points printed beside them: the same ssh login running headless `whoami` (Python start-up and
bastion's core, no TUI), so the ratio shows what the TUI itself costs.

Run as root (the front door switches to the service account): .venv/bin/python bench/tui.py [RUNS]
"""

from __future__ import annotations

import os
import pty
import select
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the test fixtures build the front door

from throwaway import throwaway_shop

from bastion.audit.signing import generate_key
from bastion.config import load_config
from tests.configs import ssh_keypair
from tests.shopdb import Shop, shop_config
from tests.sshd import make_workspace, service_account, start_sshd


def ssh_argv(port: int, key: Path, account: str, *extra: str) -> list[str]:
    return ["ssh", "-p", str(port), "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            *extra, f"{account}@127.0.0.1"]  # fmt: skip


def first_frame(argv: list[str]) -> float:
    """Seconds from starting ssh until the landing screen shows."""
    started = time.perf_counter()
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(argv[0], argv)  # noqa: S606 - ssh itself, no shell
    try:
        buffer = _read_until(fd, b"Connections", 20)
        if b"Connections" not in buffer:
            raise RuntimeError("the TUI did not show its landing screen")
        return time.perf_counter() - started
    finally:
        _end(pid, fd)


def _read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    buffer = b""
    deadline = time.monotonic() + timeout
    while needle not in buffer and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.02)[0]:
            try:
                buffer += os.read(fd, 65536)
            except OSError:
                break
    return buffer


def _end(pid: int, fd: int) -> None:
    os.write(fd, b"\x11")  # ctrl+q ends the session
    time.sleep(0.3)
    os.close(fd)
    os.waitpid(pid, 0)


def sessions_with_a_pane(argv: list[str], count: int) -> dict[str, float]:
    """count sessions at once, each idle with one SQL pane open; their memory (kB) summed over every
    `bastion login` process: PSS (shared pages split between sharers), USS (pages only one process holds:
    what one more session really costs) and RSS (every resident page, shared ones counted in each)."""
    opened = []
    try:
        for _ in range(count):
            pid, fd = pty.fork()
            if pid == 0:
                os.execvp(argv[0], argv)  # noqa: S606 - ssh itself, no shell
            opened.append((pid, fd))
            if b"Connections" not in _read_until(fd, b"Connections", 20):
                raise RuntimeError("the TUI did not show its landing screen")
            os.write(fd, b"pg-readonly\r")
            _read_until(fd, b"Connected to pg-readonly", 5)
        time.sleep(1.5)  # idle
        return session_memory()
    finally:
        for pid, fd in opened:
            _end(pid, fd)


def session_memory() -> dict[str, float]:
    """Sums of Pss, Private_Clean + Private_Dirty (USS) and Rss over the `bastion login` processes — the
    recorder and its TUI child (bastion/recording/recorder.py) of every session; kB."""
    total = {"pss": 0.0, "uss": 0.0, "rss": 0.0}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            if b"login" not in cmdline or b"--key" not in cmdline:
                continue
            for line in (entry / "smaps_rollup").read_text().splitlines():
                key, _, rest = line.partition(":")
                kb = float(rest.split()[0]) if rest.strip() else 0.0
                if key == "Pss":
                    total["pss"] += kb
                elif key in ("Private_Clean", "Private_Dirty"):
                    total["uss"] += kb
                elif key == "Rss":
                    total["rss"] += kb
        except OSError:
            continue
    return total


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    with throwaway_shop() as shop:
        run(shop, runs)


def run(shop: Shop, runs: int) -> None:
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
        tty = [*base[:-1], "-tt", base[-1]]
        frames = [first_frame(tty) for _ in range(runs)]
        h, f = statistics.median(headless), statistics.median(frames)
        median, best = f * 1000, min(frames) * 1000
        print(f"ssh → first TUI frame: median {median:.0f} ms, best {best:.0f} ms ({runs} runs; goal 600 ms)")
        print(f"ssh → headless whoami done: median {h * 1000:.0f} ms   ratio TUI/headless {f / h:.2f}x")
        one = sessions_with_a_pane(tty, 1)
        print(
            f"memory of one idle session with one SQL pane open: RSS {one['rss'] / 1024:.1f} MB "
            f"(goal ≤ 60 MB), PSS {one['pss'] / 1024:.1f} MB, USS {one['uss'] / 1024:.1f} MB"
        )
        many = 4
        both = sessions_with_a_pane(tty, many)
        print(
            f"per session with {many} such sessions at once: PSS {both['pss'] / many / 1024:.1f} MB, "
            f"USS {both['uss'] / many / 1024:.1f} MB (the cost of one more session)"
        )
    finally:
        if sshd is not None:
            sshd.stop()
        workspace.cleanup()


if __name__ == "__main__":
    main()
