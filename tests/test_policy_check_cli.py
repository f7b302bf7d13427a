"""`bastion policy check` on config.example.toml, as a user runs it: every bypass in the corpus gets block
(pg-readonly) or block / needs_approval (pg-guarded) for alice, ordinary reads get allow, exit codes are 0 / 1,
and bad input exits 2 with one line on stderr and no traceback.

The command runs nothing and needs no database. To keep the run short, corpus entries go through in a few
invocations, joined with `\\n;\\n`; the JSON lines that come back must name exactly the statements each entry
splits into, in order, so an entry can never be credited with another's verdict. Entries that cannot be joined
safely (an unterminated string or comment would swallow its neighbours) run on their own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bastion.examples import ensure_example_secrets
from bastion.policy.sql import split_statements
from tests.sql_corpus import BYPASSES, EMPTY, READS, Entry

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "config.example.toml"
CONNECTIONS = ("pg-readonly", "pg-guarded")
SENTINEL = "SELECT 'sentinel'"
_RANK = {"allow": 0, "needs_approval": 1, "block": 2}

ORDINARY = [
    "SELECT id, status, total FROM orders WHERE status = 'shipped' ORDER BY id",
    "SELECT status, count(*), sum(total) FROM orders GROUP BY status",
    "SELECT c.name, sum(o.total) FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY c.name",
    "SELECT count(*) FROM customers",
    "SELECT c.id, o.id FROM customers c JOIN orders o ON o.customer_id = c.id",
    "SELECT date_trunc('month', now()), current_date - 7",
    "WITH t AS (SELECT status, total FROM orders) SELECT status, avg(total) FROM t GROUP BY status",
    "EXPLAIN SELECT * FROM orders",
    "SHOW search_path",
    "VALUES (1, 'a'), (2, 'b')",
    "SELECT * FROM generate_series(1, 10)",
    "SELECT * FROM customers",
    "TABLE orders",
]


@pytest.fixture(scope="module")
def config() -> Iterator[Path]:
    """The example config as shipped; its secrets are created when a checkout has none (`./run demo` does the
    same), never overwritten."""
    secrets = REPO / "examples" / "secrets"
    if not (secrets / "audit_ed25519").exists() or not (secrets / "pg-readonly.password").exists():
        ensure_example_secrets(secrets)
    yield CONFIG


def policy_check(config: Path, *args: str, sql: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real command in a subprocess, as a user would."""
    command = [sys.executable, "-m", "bastion", "policy", "check", "--config", str(config), *args]
    if sql is not None:
        # One argument may hold at most 128 KiB (Linux MAX_ARG_STRLEN): long SQL goes as several words,
        # which the command joins with single spaces — exactly what splitting on single spaces undoes.
        command += ["--", *(sql.split(" ") if len(sql.encode()) > 100_000 else [sql])]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=120)


def json_lines(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """The --json output, one object per statement; never a traceback."""
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr
    return lines


def _joinable(text: str, parts: list[str]) -> bool:
    """True when text followed by `\\n;\\n` and another statement splits into its own parts plus that one."""
    return bool(parts) and split_statements(f"{text}\n;\n{SENTINEL}") == [*parts, SENTINEL]


def _batches(entries: tuple[Entry, ...]) -> tuple[list[list[tuple[Entry, list[str]]]], list[Entry]]:
    """Joinable entries in batches of at most ~400 kB of SQL; the rest, one by one."""
    batches: list[list[tuple[Entry, list[str]]]] = [[]]
    alone: list[Entry] = []
    size = 0
    for entry in entries:
        text = entry.text()
        parts = split_statements(text)
        if not _joinable(text, parts):
            alone.append(entry)
            continue
        if batches[-1] and size + len(text) > 400_000:
            batches.append([])
            size = 0
        batches[-1].append((entry, parts))
        size += len(text)
    return [batch for batch in batches if batch], alone


def verdicts_for(
    config: Path, connection: str, entries: tuple[Entry, ...]
) -> dict[str, list[dict[str, Any]]]:
    """Entry id → the JSON lines `bastion policy check --json` printed for that entry's statements."""
    batches, alone = _batches(entries)
    out: dict[str, list[dict[str, Any]]] = {}
    for batch in batches:
        text = "\n;\n".join(entry.text() for entry, _ in batch)
        done = policy_check(config, "--user", "alice", "--connection", connection, "--json", sql=text)
        lines = json_lines(done)
        expected = [part for _, parts in batch for part in parts]
        assert [line["statement"] for line in lines] == expected, "the CLI split the batch differently"
        assert [line["index"] for line in lines] == list(range(1, len(lines) + 1))
        for entry, parts in batch:
            out[entry.id], lines = lines[: len(parts)], lines[len(parts) :]
    for entry in alone:
        done = policy_check(config, "--user", "alice", "--connection", connection, "--json", sql=entry.text())
        out[entry.id] = json_lines(done)
        assert done.returncode == (0 if all(x["verdict"] == "allow" for x in out[entry.id]) else 1), entry.id
    return out


def _strictest(lines: list[dict[str, Any]]) -> str:
    return max((line["verdict"] for line in lines), key=_RANK.__getitem__)


@pytest.mark.parametrize("connection", CONNECTIONS)
def test_every_bypass_is_blocked_or_held(config: Path, connection: str) -> None:
    """Every bypass in the corpus: block on pg-readonly; on pg-guarded block or needs_approval (block where
    the design says so), with reasons."""
    results = verdicts_for(config, connection, BYPASSES)
    assert set(results) == {entry.id for entry in BYPASSES}
    wrong = []
    for entry in BYPASSES:
        lines = results[entry.id]
        assert lines, entry.id
        assert all(line["policy"] == connection.removeprefix("pg-") for line in lines), lines
        verdict = _strictest(lines)
        if connection == "pg-readonly" or entry.guarded == "block":
            expected = {"block"}
        else:
            expected = {"block", "needs_approval"}
        if verdict not in expected:
            wrong.append((entry.id, verdict, [(x["statement"][:60], x["class"]) for x in lines]))
        for line in lines:
            if line["verdict"] != "allow":
                assert line["reasons"], line
    assert not wrong


@pytest.mark.parametrize("connection", CONNECTIONS)
def test_corpus_reads_are_allowed(config: Path, connection: str) -> None:
    """The corpus' legitimate reads (a `;` in a comment or string) are allowed on both connections."""
    results = verdicts_for(config, connection, READS)
    for entry in READS:
        assert [line["verdict"] for line in results[entry.id]] == ["allow"] * len(results[entry.id]), entry.id


@pytest.mark.parametrize("connection", CONNECTIONS)
def test_ordinary_reads_allowed_exit_0(config: Path, connection: str) -> None:
    """Everyday reads, several in one input: every one allowed as a read, exit 0."""
    done = policy_check(
        config, "--user", "alice", "--connection", connection, "--json", sql=";\n".join(ORDINARY)
    )
    lines = json_lines(done)
    assert done.returncode == 0, done.stderr
    assert [line["statement"] for line in lines] == ORDINARY
    assert {line["verdict"] for line in lines} == {"allow"}
    assert {line["class"] for line in lines} == {"read"}


def test_human_output_and_exit_codes(config: Path) -> None:
    """Without --json: one line per statement with its verdict; exit 0 only when every statement is allowed."""
    allowed = policy_check(
        config, "--user", "alice", "--connection", "pg-readonly", sql="SELECT count(*) FROM orders"
    )
    assert allowed.returncode == 0 and "allow" in allowed.stdout and allowed.stderr == ""
    mixed = policy_check(
        config, "--user", "alice", "--connection", "pg-guarded", sql="SELECT 1; DELETE FROM orders"
    )
    assert mixed.returncode == 1
    assert "allow" in mixed.stdout and "needs_approval" in mixed.stdout
    blocked = policy_check(
        config, "--user", "alice", "--connection", "pg-readonly", sql="COMMIT; DROP TABLE orders"
    )
    assert blocked.returncode == 1 and "block" in blocked.stdout
    assert "Traceback" not in allowed.stderr + mixed.stderr + blocked.stderr


@pytest.mark.parametrize(
    ("args", "sql", "message"),
    [
        (("--user", "mallory", "--connection", "pg-readonly"), "SELECT 1", "unknown user"),
        (("--user", "alice", "--connection", "pg-nowhere"), "SELECT 1", "unknown connection"),
        (("--user", "alice", "--connection", "pg-readonly"), None, "no SQL"),
        (("--user", "alice", "--connection", "pg-readonly"), "", "no SQL"),
        (("--user", "alice", "--connection", "pg-readonly"), "   ", "no SQL"),
        (("--user", "alice", "--connection", "pg-readonly", "--json"), None, "no SQL"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    config: Path, args: tuple[str, ...], sql: str | None, message: str
) -> None:
    """Unknown user or connection, no SQL: exit 2, nothing on stdout, one line on stderr."""
    done = policy_check(config, *args, sql=sql)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("entry", EMPTY, ids=lambda e: e.id)
def test_nothing_to_check_exits_2(config: Path, entry: Entry) -> None:
    """Only comments, semicolons or whitespace: exit 2, one line, nothing judged."""
    done = policy_check(config, "--user", "alice", "--connection", "pg-readonly", "--json", sql=entry.text())
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_missing_required_argument_exits_2(config: Path) -> None:
    """argparse's own refusal (with its usage lines) still exits 2 without a traceback."""
    done = policy_check(config, "--connection", "pg-readonly", sql="SELECT 1")
    assert done.returncode == 2 and "--user" in done.stderr and "Traceback" not in done.stderr


def test_bad_config_path_exits_2(tmp_path: Path) -> None:
    """A config that does not exist: exit 2, one line."""
    done = policy_check(
        tmp_path / "missing.toml", "--user", "alice", "--connection", "pg-readonly", sql="SELECT 1"
    )
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_user_without_access_is_refused(config: Path) -> None:
    """carol (auditor) has no role that allows pg-readonly: refused, not judged (exit 1, one line)."""
    done = policy_check(config, "--user", "carol", "--connection", "pg-readonly", "--json", sql="SELECT 1")
    assert done.returncode == 1 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "carol" in done.stderr
