"""Headless `exec` in-process: `login()` with SSH_ORIGINAL_COMMAND set, against the real shop database.

What a user gets back (masked rows, verdicts, exit codes, JSON lines), that results stream in bounded
memory, that every run is in the audit log, and that the command line parser survives hostile input.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion import headless
from bastion.audit.log import read_events
from bastion.config import Config
from bastion.identity.keys import parse_public_key
from bastion.login import login
from tests.configs import ALICE_KEY, BOB_KEY
from tests.shopdb import PLANTED, Shop, shop_config

ALICE_FP = parse_public_key(ALICE_KEY).fingerprint
BOB_FP = parse_public_key(BOB_KEY).fingerprint


def planted_secrets() -> list[str]:
    """Every planted sensitive value, also in the spellings a careless mask might leave (digits only)."""
    values: list[str] = []
    for row in PLANTED:
        for key in ("email", "ssn", "phone", "card_number"):
            values.append(str(row[key]))
        values.extend(str(v) for k, v in row["notes"].items() if "email" in k)  # type: ignore[attr-defined]
        values.append("".join(ch for ch in str(row["ssn"]) if ch.isdigit()))
    return values


def assert_no_planted(text: str) -> None:
    for value in planted_secrets():
        assert value not in text, f"planted value {value!r} leaked"


@pytest.fixture
def config(tmp_path: Path, shop: Shop) -> Config:
    return shop_config(tmp_path, shop)


class Run:
    """Run one headless command line through login() and keep what it printed."""

    def __init__(self, config: Config, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
        self.config = config
        self.monkeypatch = monkeypatch
        self.capsys = capsys
        self.out = self.err = ""

    def __call__(self, command: str, fingerprint: str = ALICE_FP) -> int:
        self.monkeypatch.setenv("SSH_ORIGINAL_COMMAND", command)
        code = login(self.config, fingerprint)
        captured = self.capsys.readouterr()
        self.out, self.err = captured.out, captured.err
        assert "Traceback" not in self.out + self.err
        return code

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines()]

    def events(self) -> list[dict[str, Any]]:
        return list(read_events(self.config.audit.log))


@pytest.fixture
def run(config: Config, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    monkeypatch.setenv("SSH_CONNECTION", "127.0.0.9 50000 127.0.0.1 22")
    return Run(config, monkeypatch, capsys)


# ---------------------------------------------------------------- results


def test_text_output_masks_and_names_masked_columns(run: Run) -> None:
    assert run("exec pg-readonly -- select * from customers order by id") == 0
    lines = run.out.splitlines()
    assert lines[0].split() == ["id", "name", "email", "ssn", "phone", "card_number", "notes"]
    assert "Ada Lovelace" in run.out and "••••0134" in run.out  # unmasked column, partial mask
    assert lines[-1].startswith("-- [1] 3 rows | ")
    for column, style in (("email", "pseudonym"), ("ssn", "full"), ("card_number", "partial")):
        assert f"{column} ({style}, from customers.{column})" in lines[-1]
    assert_no_planted(run.out + run.err)


def test_json_lines_carry_masked_columns_and_no_planted_value(run: Run) -> None:
    assert (
        run("exec --json pg-readonly -- select id, email, ssn, phone, notes from customers order by id") == 0
    )
    assert_no_planted(run.out)
    assert run.out.isascii()  # nothing in it a terminal could interpret
    statement, *rows, end = run.records()
    assert statement["type"] == "statement" and statement["verdict"] == "allow"
    assert statement["class"] == "read" and statement["columns"] == ["id", "email", "ssn", "phone", "notes"]
    assert statement["types"] == ["int8", "text", "text", "text", "jsonb"]
    masked = {m["column"]: m for m in statement["masked"]}
    assert set(masked) == {"email", "ssn", "phone"}
    assert masked["email"]["style"] == "pseudonym" and masked["ssn"]["style"] == "full"
    assert any("customers.ssn" in reason for reason in masked["ssn"]["reasons"])
    assert [r["type"] for r in rows] == ["row"] * 3 and rows[0]["values"][0] == 1
    assert rows[0]["values"][1].startswith("tok_") and rows[0]["values"][2] == "••••••"
    assert rows[0]["values"][4]["backup_email"] != PLANTED[0]["notes"]["backup_email"]  # type: ignore[index]
    assert end == {**end, "type": "end", "index": 0, "status": "ok", "rows": 3, "error": None}
    assert end["duration_ms"] >= 0


def test_json_encodes_postgres_types(run: Run) -> None:
    sql = (
        "select 1.50::numeric(5,2) as n, timestamptz '2024-01-02 03:04:05+00' as t, "
        "'6f1c2e7a-0000-4000-8000-000000000001'::uuid as u, '\\xdeadbeef'::bytea as b, "
        """'{"a": [1, 2.5]}'::jsonb as j, array[1,2] as a, array[1.5]::numeric[] as na, """
        "'NaN'::float8 as f, '-Infinity'::float8 as ninf, date '2024-01-02' as d, true as flag, null as nothing"
    )
    assert run(f"exec --json pg-readonly -- {sql}") == 0
    _, row, _ = run.records()
    assert row["values"] == [
        "1.50", "2024-01-02T03:04:05+00:00", "6f1c2e7a-0000-4000-8000-000000000001", "\\xdeadbeef",
        {"a": [1, 2.5]}, [1, 2], ["1.5"], "NaN", "-Infinity", "2024-01-02", True, None,
    ]  # fmt: skip


def test_hostile_target_output_cannot_reach_the_terminal(run: Run) -> None:
    """Column names and values come from the target: escapes and newlines are shown, never sent raw."""
    assert (
        run("""exec pg-readonly -- select E'red\\x1b[31m\\x07' as "a\x1b]0;x\x07", E'two\\nlines' as b""")
        == 0
    )
    assert "\x1b" not in run.out and "\x07" not in run.out
    assert "red\\x1b[31m\\x07" in run.out and "two\\nlines" in run.out
    assert len(run.out.splitlines()) == 4  # header, rule, one row, status


def test_blocked_statement_exits_1_with_reasons(run: Run, shop: Shop) -> None:
    assert run("exec pg-readonly -- delete from orders") == 1
    assert "-- [1] blocked: write is blocked under the readonly preset" in run.out
    assert "warning: DELETE without WHERE affects every row" in run.out
    assert run("exec --json pg-readonly -- truncate orders") == 1
    statement, end = run.records()
    assert statement["verdict"] == "block" and statement["class"] in {"write", "ddl", "dangerous"}
    assert statement["reasons"] and end["status"] == "blocked" and end["rows"] == 0
    with shop.admin() as conn:
        assert conn.execute("select count(*) from orders").fetchone() == (3,)


def test_needs_approval_exits_3_and_runs_nothing(run: Run, shop: Shop) -> None:
    assert run("exec pg-guarded -- delete from orders where id = 1") == 3
    assert "-- [1] needs approval: write needs approval under the guarded preset" in run.out
    assert "ask for approval with  request pg-guarded --reason TEXT -- <the statement>" in run.out
    assert run("exec --json pg-guarded -- update orders set status = 'x' where id = 1") == 3
    statement, end = run.records()
    assert statement["verdict"] == "needs_approval" and end["status"] == "needs_approval"
    with shop.admin() as conn:
        assert conn.execute("select count(*) from orders where status = 'shipped'").fetchone() == (3,)


def test_script_stops_at_the_first_statement_that_is_not_ok(run: Run) -> None:
    assert run("exec --json pg-readonly -- select 1 as a; delete from orders; select 2 as b") == 1
    records = run.records()
    assert [(r["type"], r["index"]) for r in records] == [
        ("statement", 0), ("row", 0), ("end", 0), ("statement", 1), ("end", 1),
    ]  # fmt: skip
    assert records[4]["status"] == "blocked"
    assert run("exec pg-guarded -- select 1 as a; update orders set total = 0; select 2 as b") == 3
    assert "-- [2] needs approval" in run.out and "[3]" not in run.out
    assert run("exec --json pg-readonly -- select 1/0; select 2") == 1
    _, end = run.records()
    assert end["status"] == "error" and end["error"] == "division by zero"


def test_max_rows_cuts_output_and_cancels_the_rest(run: Run) -> None:
    assert run("exec --json --max-rows 5 pg-readonly -- select g from generate_series(1, 1000000) g") == 0
    records = run.records()
    assert [r["values"] for r in records if r["type"] == "row"] == [[1], [2], [3], [4], [5]]
    assert records[-1]["rows"] == 5 and records[-1]["truncated"] is True
    assert run("exec --json --max-rows 3 pg-readonly -- select id from customers") == 0
    assert run.records()[-1] == {**run.records()[-1], "rows": 3, "truncated": False}
    assert run("exec --max-rows 2500 pg-readonly -- select g from generate_series(1, 5000) g") == 0
    lines = run.out.splitlines()
    assert len(lines) == 2 + 2500 + 1 and lines[-1].startswith("-- [1] 2500 rows shown, more not fetched")


def test_large_result_streams_in_bounded_memory(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    """200,000 rows (~14 MB of JSON lines) pass through with a peak of a few MB: batches, never the whole."""

    class Sink(io.TextIOBase):
        def __init__(self) -> None:
            self.lines = self.chars = 0
            self.last = ""

        def write(self, text: str) -> int:
            self.lines += text.count("\n")
            self.chars += len(text)
            self.last = text
            return len(text)

    sink = Sink()
    monkeypatch.setattr("sys.stdout", sink)
    monkeypatch.setenv(
        "SSH_ORIGINAL_COMMAND",
        "exec --json pg-readonly -- select g, g * 2 as twice, 'row ' || g as label "
        "from generate_series(1, 200000) g",
    )
    tracemalloc.start()
    try:
        code = login(run.config, ALICE_FP)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 0
    assert sink.lines == 200_000 + 2
    end = json.loads(sink.last)
    assert end["type"] == "end" and end["rows"] == 200_000
    assert sink.chars > 10_000_000
    assert peak < 4_000_000, f"peak {peak} bytes while streaming {sink.chars} characters"


def test_exec_is_audited(run: Run) -> None:
    assert run("exec --json pg-readonly -- select email from customers; select 1 as one") == 0
    session = next(e["session"] for e in run.events() if e["type"] == "headless_command")
    events = [e for e in run.events() if e["session"] == session]
    types = [e["type"] for e in events]
    assert "session_start" in types and types.index("session_start") < types.index("headless_command")
    assert "session_end" in types
    command = next(e for e in events if e["type"] == "headless_command")
    assert command["payload"]["command"] == "exec" and command["payload"]["argv"][:2] == [
        "--json",
        "pg-readonly",
    ]
    statements = [e for e in events if e["type"] == "sql_statement"]
    outcomes = [e for e in events if e["type"] == "sql_outcome"]
    assert [s["payload"]["statement"] for s in statements] == [
        "select email from customers",
        "select 1 as one",
    ]
    assert all(s["payload"]["connection"] == "pg-readonly" for s in statements)
    assert [o["payload"]["status"] for o in outcomes] == ["ok", "ok"]
    assert {o["payload"]["verdict_seq"] for o in outcomes} == {s["seq"] for s in statements}
    masking = outcomes[0]["payload"]["masking"]
    assert [m["column"] for m in masking if m["masked"]] == ["email"]
    assert_no_planted(json.dumps(events))
    assert types.index("sql_connect") < types.index("sql_statement") < types.index("sql_disconnect")


# ---------------------------------------------------------------- refusals and usage


def test_usage_errors_exit_2_and_are_audited(run: Run) -> None:
    for command, expected in (
        ("exec pg-readonly select 1", "put the statement after `--`"),
        ("exec -- select 1", "the following arguments are required: connection"),
        ("exec pg-readonly --", "no statement after `--`"),
        ("exec pg-readonly -- ; ;  -- only a comment", "the statement is empty"),
        ("exec --max-rows 0 pg-readonly -- select 1", "invalid positive_int value"),
        ("exec --jso pg-readonly -- select 1", "unrecognized arguments: --jso"),
        ("exec app -- uptime", "you have no connection named 'app'"),
    ):
        code = run(command)
        assert expected in run.err, (command, run.err)
        assert code == (1 if "no connection" in expected else 2), (command, code)
        assert len(run.err.strip().splitlines()) == 1 and run.out == ""
    refused = [e for e in run.events() if e["type"] == "headless_refused"]
    assert len(refused) == 7


def test_refused_connections_exit_1_without_telling_names(run: Run) -> None:
    assert run("exec nope -- select 1") == 1
    assert run.err == "bastion: exec: you have no connection named 'nope' (`connections` lists yours)\n"
    assert run("exec pg-readonly -- select 1", fingerprint=BOB_FP) == 1  # bob's roles give no connections
    assert "you have no connection named 'pg-readonly'" in run.err
    reasons = [e["payload"]["reason"] for e in run.events() if e["type"] == "headless_refused"]
    assert len(reasons) == 2 and all("no connection named" in r for r in reasons)


def test_requestable_connection_says_so(run: Run, config: Config, tmp_path: Path, shop: Shop) -> None:
    # In the shop config alice may use pg-guarded; the base config's developer may only request it.
    text = config.path.read_text().replace(
        'connections = ["pg-readonly", "pg-guarded"]', 'connections = ["pg-readonly"]', 1
    )
    config.path.write_text(text)
    from bastion.config import load_config

    run.config = load_config(config.path)
    assert run("exec pg-guarded -- select 1") == 1
    assert run.err == "bastion: pg-guarded needs an approved elevation request\n"


def test_help_documents_exit_codes(run: Run) -> None:
    assert run("exec --json -h pg-readonly") == 0
    for line in (
        "0  every statement ran",
        "1  a statement was blocked",
        "2  the command",
        "3  a statement needs",
    ):
        assert line in run.out
    assert "3  a statement needs approval" in (headless.__doc__ or "")  # the module documents them too


def test_statement_keeps_quotes_and_semicolons_verbatim(run: Run) -> None:
    """ssh joins its arguments with spaces; the SQL after `--` must reach the pipeline unchanged."""
    assert (
        run("""exec --json pg-readonly -- select 'it''s; "quoted"' as q, $$a -- b$$ as d -- trailing""") == 0
    )
    statement, row, _ = run.records()
    assert row["values"] == ['it\'s; "quoted"', "a -- b"]
    assert statement["statement"] == """select 'it''s; "quoted"' as q, $$a -- b$$ as d -- trailing"""


def test_headless_login_loads_no_driver_or_parser_until_exec() -> None:
    """Every login imports this module: psycopg and sqlglot load with the first `exec`, not before."""
    code = (
        "import sys, bastion.headless, bastion.login\n"
        "print(sorted(m for m in ('psycopg', 'sqlglot', 'textual') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# ---------------------------------------------------------------- hostile command lines


def test_huge_command_lines_give_one_short_line(run: Run) -> None:
    assert run("x" * 100_000) == 2
    first = run.err.splitlines()[0]
    assert first.startswith("bastion: unknown command 'xxxx") and len(first) < 90
    assert run("whoami " + "--y" * 33_000) == 2
    assert len(run.err) < 200 and run.err.count("\n") == 1
    assert run("whoami '" + "a" * 100_000) == 2  # unbalanced quote
    assert "cannot parse the command" in run.err and len(run.err) < 200
    assert run("z" * (headless.MAX_COMMAND_CHARS + 1)) == 2
    assert "too long" in run.err and len(run.err) < 200
    reasons = [e["payload"]["reason"] for e in run.events() if e["type"] == "headless_refused"]
    assert len(reasons) == 4 and max(len(r) for r in reasons) < 200


def test_huge_statement_runs(run: Run) -> None:
    literal = "a" * 100_000
    assert run(f"exec --json pg-readonly -- select length('{literal}') as n") == 0
    assert run.records()[1]["values"] == [100_000]


def test_non_utf8_bytes_are_refused(run: Run) -> None:
    # What Python makes of SSH_ORIGINAL_COMMAND holding bytes that are not UTF-8.
    for raw in (b"whoami \xff\xfe", b"\xc3\x28", b"exec pg-readonly -- select '\xe9t\xe9'"):
        assert run(raw.decode("utf-8", "surrogateescape")) == 2
        assert run.err == "bastion: the command is not valid UTF-8\n"
    assert [e["payload"]["reason"] for e in run.events() if e["type"] == "headless_refused"] == [
        "the command is not valid UTF-8"
    ] * 3


def test_control_characters_are_stripped_from_messages(run: Run) -> None:
    assert run("\x1b]0;owned\x07\x1b[2Jwhoami\x0b\u202e") == 2
    first = run.err.splitlines()[0]
    assert first == "bastion: unknown command ']0;owned[2Jwhoami'; commands:"
    assert run("whoami --\x1b[31m") == 2
    assert "\x1b" not in run.err and run.err.count("\n") == 1
    assert run("whoami\r\nid") == 2  # a newline is only whitespace to shlex: id is an argument, not a command
    assert "unrecognized arguments: id" in run.err


_hostile = st.text(
    st.characters(blacklist_categories=(), blacklist_characters="\0"), max_size=300
) | st.binary(max_size=200).map(lambda b: b.decode("utf-8", "surrogateescape").replace("\0", ""))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_hostile)
def test_parse_never_raises_anything_but_a_short_printable_usage_error(line: str) -> None:
    try:
        words = headless.parse(line)
    except headless.UsageError as exc:
        first = str(exc).splitlines()[0]
        assert first.isprintable() and len(first) <= 100
        return
    assert words[0] in headless.COMMANDS


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=80))
def test_parse_exec_keeps_the_raw_statement(statement: str) -> None:
    words = headless.parse("exec --json pg-readonly -- " + statement)
    assert words[:4] == ["exec", "--json", "pg-readonly", "--"] and words[4] == statement.strip()


def test_text_cells_and_json_values_are_safe() -> None:
    assert headless.text_cell("a\x1b[0m\nb\u202e") == "a\\x1b[0m\\nb\\u202e"
    assert headless.text_cell("x" * 500).endswith("…") and len(headless.text_cell("x" * 500)) == 60
    assert headless.text_cell(None) == "NULL" and headless.text_cell(b"\x00\xff") == "\\x00ff"
    assert json.dumps(headless.json_value({"k": [float("nan"), float("inf"), (1, b"\x01")]})) == (
        '{"k": ["NaN", "Infinity", [1, "\\\\x01"]]}'
    )
    assert headless.shown("\x1b" * 5 + "a" * 100) == "'" + "a" * 40 + "…'"
