"""The recorder's cost and the shipping lag, with real processes.

1. Throughput: `bastion login` whose child prints 50 MB as fast as the pty takes it, read by this process as
   a fast terminal would, (a) through the recorder (pty relay + asciicast v2 + spool + live shipping to a dir
   sink) and (b) the same login with the recorder bypassed (the frontend straight on the terminal). Ratios of
   wall time and of CPU time (user+sys of the login and everything it waited for). A `bastion ship` service
   is assumed (its lock is held), so no login spawns a ship: that per-login cost is not per byte. (c) the
   relay alone (cast writes and live shipping stubbed out) shows the floor any recorder on a second pty pays:
   in (b) the recorder's reads of the inner pty and writes to the user's are counted; in (a) the child writes
   straight to our pty and our reads are not.
2. Shipping lag: a recorded session prints a timestamped line every 5 ms for 10 s; a watcher polls the sink's
   copy of the cast every 10 ms and takes, per line, the time from print to arrival on the sink. p50/p99 for
   a dir sink, and for an SFTP sink (a private OpenSSH sshd on loopback) when run as root.

Run: .venv/bin/python bench/recording.py [MB] [RUNS]
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bastion.config import Config
from tests.recording_helpers import (
    ALICE_FP,
    HARNESS,
    REPO,
    VENV_BIN,
    dir_sink,
    recording_config,
    start_sftp_host,
)

# The same login with the recorder bypassed: the frontend runs in the login process, on our pty.
BYPASS = "login._interactive = lambda session, store: login._frontend(session); "
DIRECT = HARNESS.replace("login.FRONTEND = sys.argv.pop(1); ", "login.FRONTEND = sys.argv.pop(1); " + BYPASS)
# The recorder's pty relay with nothing recorded or shipped: what the second pty pass alone costs.
STUBS = (
    "import bastion.recording.cast as cast, bastion.recording.ship as ship; "
    "cast.Cast.output = lambda self, data: None; ship.LiveShipper.tick = lambda self: None; "
)
RELAY_ONLY = HARNESS.replace("sys.argv.pop(1); ", "sys.argv.pop(1); " + STUBS, 1)


def run_login(config: Config, harness: str, env: dict[str, str]) -> tuple[float, float, int]:
    """(wall s, CPU s, bytes read) of one login on a pty we drain as fast as we can."""
    argv = [sys.executable, "-c", harness, "tests.recording_frontends"]
    argv += ["login", "--config", str(config.path), "--key", ALICE_FP]
    environment = {
        "PATH": f"{VENV_BIN}:/usr/bin:/bin",
        "TERM": "xterm-256color",
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(REPO),
        **env,
    }
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(REPO)
        os.execve(sys.executable, argv, environment)  # noqa: S606 - our interpreter, fixed argv
    total = 0
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except OSError:
            break
        if not chunk:
            break
        total += len(chunk)
    os.waitpid(pid, 0)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    os.close(fd)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, total


def throughput(root: Path, megabytes: int, runs: int) -> None:
    config = recording_config(root / "tp", sink=dir_sink(root / "tp" / "sink"), floor="0")
    lock_dir = config.bastion.spool / ".ship"
    lock_dir.mkdir(parents=True, exist_ok=True)
    lock = os.open(lock_dir / "ship.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)  # as a running `bastion ship` service would
    size = megabytes * 1024 * 1024
    results: dict[str, list[tuple[float, float]]] = {"direct": [], "recorded": [], "relay": [], "idle": []}
    try:
        for _ in range(runs):
            for name, harness, nbytes in (
                ("direct", DIRECT, size),
                ("recorded", HARNESS, size),
                ("relay", RELAY_ONLY, size),
                ("idle", HARNESS, 1),
            ):
                wall, cpu, seen = run_login(config, harness, {"RECTEST_BYTES": str(nbytes)})
                if nbytes > 1 and seen < nbytes:
                    raise SystemExit(f"{name}: read {seen} bytes, expected {nbytes}")
                results[name].append((wall, cpu))
    finally:
        os.close(lock)
    med: dict[str, tuple[float, float]] = {}
    for key, values in results.items():
        med[key] = (statistics.median(w for w, _ in values), statistics.median(c for _, c in values))
    dw, dc = med["direct"]
    rw, rc = med["recorded"]
    lw, lc = med["relay"]
    iw, ic = med["idle"]
    print(f"throughput: {megabytes} MB printed by the session, median of {runs} runs")
    print(f"  direct (no recorder)        wall {dw:6.2f} s   cpu {dc:6.2f} s")
    print(f"  recorded (relay+cast+ship)  wall {rw:6.2f} s   cpu {rc:6.2f} s")
    print(f"  ratio                       wall {rw / dw:6.2f} x  cpu {rc / dc:6.2f} x   (goal <= 1.1)")
    print(f"  relay alone (nothing kept)  wall {lw:6.2f} s   cpu {lc:6.2f} s")
    print(f"  ratio of the relay alone    wall {lw / dw:6.2f} x  cpu {lc / dc:6.2f} x   (its floor)")
    print(f"  recorded login printing 1 byte: wall {iw:.2f} s, cpu {ic:.2f} s (start-up, seal, ship)")
    per_mb_wall = (rw - iw) / megabytes * 1000
    per_mb_cpu = (rc - ic) / megabytes * 1000
    print(f"  recorded, per MB beyond start-up: wall {per_mb_wall:.1f} ms, cpu {per_mb_cpu:.1f} ms")
    casts = sorted((config.bastion.spool / "sessions").glob("*/session.cast"))
    sink_casts = sorted((root / "tp" / "sink").rglob("session.cast"))
    print(f"  casts: {len(sink_casts)} in the sink, {len(casts)} left in the spool")


TICK = re.compile(r"tick (\d+) t=(\d+\.\d+)")


def lag(root: Path, name: str, config: Config, sink_root: Path, seconds: float = 10.0) -> None:
    from tests.recording_helpers import PtyLogin

    lines = int(seconds / 0.005)
    login = PtyLogin.spawn(config, env={"RECTEST_LINES": str(lines), "RECTEST_INTERVAL": "0.005"})
    lags: list[float] = []
    stop = threading.Event()

    def watch() -> None:
        seen: set[int] = set()
        offset = 0
        buffer = ""
        path: Path | None = None
        while not stop.is_set():
            if path is None:
                found = sorted(sink_root.rglob("session.cast"))
                path = found[-1] if found else None
            if path is not None:
                try:
                    with open(path, encoding="utf-8", errors="replace") as f:
                        f.seek(offset)
                        data = f.read()
                        offset = f.tell()
                except OSError:
                    data = ""
                now = time.time()
                buffer += data
                *complete, buffer = buffer.split("\n")
                for line in complete:
                    for match in TICK.finditer(line):
                        n = int(match.group(1))
                        if n not in seen:
                            seen.add(n)
                            lags.append(now - float(match.group(2)))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        code = login.wait(seconds * 3 + 30)
    finally:
        time.sleep(0.5)
        stop.set()
        watcher.join(2)
        login.close()
    lags.sort()
    if not lags:
        print(f"shipping lag ({name}): nothing arrived (exit {code})")
        return
    p50 = lags[len(lags) // 2]
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    print(
        f"shipping lag ({name} sink): {len(lags)} of {lines} lines seen while the session ran — "
        f"p50 {p50:.2f} s, p99 {p99:.2f} s, max {lags[-1]:.2f} s   (goal p99 <= 2 s)"
    )


def main() -> None:
    megabytes = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    with tempfile.TemporaryDirectory(prefix="bench-recording-") as tmp:
        root = Path(tmp)
        throughput(root, megabytes, runs)
        lag_dir = root / "lag-dir"
        config = recording_config(lag_dir, sink=dir_sink(lag_dir / "sink"), floor="0")
        lag(root, "dir", config, lag_dir / "sink")
        if os.geteuid() == 0 and os.path.exists("/usr/sbin/sshd"):
            host = start_sftp_host(root / "sftp")
            try:
                lag_sftp = root / "lag-sftp"
                config = recording_config(lag_sftp, sink=host.sink_toml(), floor="0")
                lag(root, "sftp", config, host.root)
            finally:
                host.stop()


if __name__ == "__main__":
    main()
