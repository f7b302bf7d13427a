"""Property-based fuzzing of the SQL classifier (hypothesis): it never crashes, it stays fast, what it cannot
understand is never allowed, and a dangerous function is never allowed however it is wrapped.

Inputs: arbitrary text; token soup built from SQL keywords, names, punctuation, quotes and comments; random
mutations of the bypass corpus (tests/sql_corpus.py); and every dangerous or session function of
bastion/policy/functions.py called in every spelling PostgreSQL accepts, inside random valid wrappings.
Example counts are modest: the whole file runs in seconds. No example database is written (the tree is shared).
"""

from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot.errors import SqlglotError
from sqlglot.tokens import TokenType

from bastion.config import builtin_policies
from bastion.policy import functions
from bastion.policy.sql import DIALECT, SqlClass, classify, split_statements
from bastion.policy.verdict import Verdict, decide
from tests.sql_corpus import CORPUS

POLICIES = builtin_policies()
FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SLOW_S = 5.0  # a statement that takes longer than this to classify is a denial of service

KEYWORDS = [
    "SELECT", "FROM", "WHERE", "DELETE", "UPDATE", "INSERT", "INTO", "VALUES", "WITH", "RECURSIVE", "AS",
    "EXPLAIN", "ANALYZE", "ANALYSE", "VERBOSE", "COPY", "TO", "PROGRAM", "STDOUT", "STDIN", "SET", "LOCAL",
    "SESSION", "ROLE", "RESET", "BEGIN", "START", "TRANSACTION", "READ", "WRITE", "ONLY", "COMMIT", "ROLLBACK",
    "DO", "PREPARE", "EXECUTE", "DEALLOCATE", "ARRAY", "ROW", "CASE", "WHEN", "THEN", "ELSE", "END", "UNION",
    "ALL", "LATERAL", "JOIN", "ON", "FOR", "SHARE", "NO", "KEY", "LOCK", "TABLE", "CREATE", "DROP", "ALTER",
    "FUNCTION", "PROCEDURE", "CALL", "GRANT", "REVOKE", "TRUNCATE", "MERGE", "USING", "MATCHED", "RETURNING",
    "ORDER", "BY", "GROUP", "HAVING", "LIMIT", "OFFSET", "DISTINCT", "NOT", "NULL", "TRUE", "FALSE", "IS",
    "IN", "EXISTS", "CAST", "OVER", "PARTITION", "FILTER", "UESCAPE", "LANGUAGE", "SYSTEM", "EXTENSION",
    "VACUUM", "CHECKPOINT", "LISTEN", "NOTIFY", "DISCARD", "TEMP", "MATERIALIZED", "VIEW", "DATABASE",
]  # fmt: skip
NAMES = [
    "orders", "customers", "ssn", "email", "t", "x", "public", "pg_catalog", "pg_read_file", "nextval",
    "set_config", "query_to_xml", "dblink_exec", "lo_export", "pg_terminate_backend", "lower", "count",
    "row_to_json", "current_setting", '"delete"', '"a;b"', "orders_id_seq", "p", "q",
]  # fmt: skip
PUNCTUATION = [
    "(", ")", "[", "]", ",", ";", ".", "::", "*", "=", "+", "-", "/", "||", "->", "->>", "@", "&", "<", ">",
    "'x'", "''", "'", '"', "$$", "$t$", "$", "E'\\''", "E'\\\\'", "U&'\\0041'", 'U&"a"', "B'01'", "X'1f'",
    "--", "/*", "*/", "\n", "\t", "\\", "1", "0", "1.5e3", "$1", ":x", "\u00a0", "\u200b", "\ufeff",
]  # fmt: skip
TOKENS = KEYWORDS + NAMES + PUNCTUATION
CORPUS_TEXTS = [entry.text() for entry in CORPUS if len(entry.sql) < 2000]


_NAMES = frozenset(functions.DANGEROUS | functions.SESSION)
_NAME_TOKENS = {TokenType.VAR, TokenType.IDENTIFIER}


def _calls_dangerous(text: str) -> bool:
    """A token-level oracle, independent of the parse: a dangerous or session function's name followed by
    `(` (a call) or preceded by `.` (a qualified call, or attribute notation `x.nextval`)."""
    try:
        tokens = DIALECT.tokenize(text)
    except SqlglotError:
        return False
    for i, token in enumerate(tokens):
        if token.token_type in _NAME_TOKENS and token.text.lower() in _NAMES:
            after = tokens[i + 1].token_type if i + 1 < len(tokens) else None
            before = tokens[i - 1].token_type if i else None
            if after == TokenType.L_PAREN or before == TokenType.DOT:
                return True
    return False


def _check(text: str) -> None:
    """The invariants for any input at all."""
    started = time.perf_counter()
    parts = split_statements(text)
    for part in parts:
        assert part and part == part.strip() and part in text
        if _calls_dangerous(part):
            for name, policy in POLICIES.items():
                verdict = decide(policy, classify(part)).verdict
                assert verdict is Verdict.BLOCK, (name, part, classify(part).reasons)
    for candidate in [*parts, text]:
        classification = classify(candidate)
        assert classification.sql_class in classification.classes
        assert classification.reasons
        for name, policy in POLICIES.items():
            decision = decide(policy, classification)
            if SqlClass.UNKNOWN in classification.classes:
                assert decision.verdict is Verdict.BLOCK, (name, candidate, classification.reasons)
            if classification.classes & {SqlClass.DANGEROUS, SqlClass.SESSION}:
                assert decision.verdict is Verdict.BLOCK, (name, candidate, classification.reasons)
            if decision.verdict is not Verdict.ALLOW:
                assert decision.reasons, (name, candidate)
    assert time.perf_counter() - started < SLOW_S, f"slow to classify: {text[:200]!r}"


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text(text: str) -> None:
    """Whatever a user pastes — control characters, stray quotes, any script — never crashes the classifier."""
    _check(text)


@FUZZ
@given(
    st.lists(st.sampled_from(TOKENS), max_size=40),
    st.lists(st.sampled_from([" ", "", "\n", " ", "  "]), min_size=40, max_size=40),
)
def test_token_soup(tokens: list[str], separators: list[str]) -> None:
    """Near-SQL: real keywords, names, quotes and comments in random order reach the parser's odd corners."""
    _check("".join(token + separator for token, separator in zip(tokens, separators, strict=False)))


_MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["insert", "delete", "duplicate", "swapcase", "token", "truncate"]),
        st.integers(0, 10_000),
        st.integers(0, 10_000),
        st.sampled_from(TOKENS),
    ),
    min_size=1,
    max_size=4,
)


@FUZZ
@given(st.sampled_from(CORPUS_TEXTS), _MUTATIONS)
def test_mutated_corpus(text: str, mutations: list[tuple[str, int, int, str]]) -> None:
    """Bypasses with a character or token inserted, cut, repeated or re-cased: the neighbourhood of known
    attacks, where a fix for one spelling most often misses the next."""
    for kind, a, b, token in mutations:
        i, j = sorted((a % (len(text) + 1), b % (len(text) + 1)))
        if kind == "insert":
            text = text[:i] + token[:1] + text[i:]
        elif kind == "delete":
            text = text[:i] + text[j:]
        elif kind == "duplicate":
            text = text[:j] + text[i:j] + text[j:]
        elif kind == "swapcase":
            text = text[:i] + text[i:j].swapcase() + text[j:]
        elif kind == "token":
            text = text[:i] + " " + token + " " + text[i:]
        else:
            text = text[:j]
    _check(text)


def test_corpus_itself() -> None:
    """The unmutated corpus satisfies the same invariants (a failure there is not a fuzzing artefact)."""
    for text in CORPUS_TEXTS:
        _check(text)


# ---------------------------------------------------------------- dangerous functions in any wrapping

DANGEROUS = sorted(functions.DANGEROUS | functions.SESSION)

CALL_FORMS = [
    "{n}('x')",
    "{n}(1, 'x')",
    "{N}('x')",
    "pg_catalog.{n}('x')",
    "PG_CATALOG.{N}('x')",
    "\"{n}\"('x')",
    '"pg_catalog"."{n}"(\'x\')',
    "public.{n}('x')",
    "shop.pg_catalog.{n}('x')",
    "pg_catalog . {n} ( 'x' )",
    "/* c */ {n} /* c */ ('x')",
    "('x'::text).{n}",  # attribute notation: {n}('x')
    "(t.c).{n}",
    "o.{n}",
]
EXPRESSIONS = [
    "({e})",
    "lower({e}::text)",
    "coalesce({e}, NULL)",
    "(SELECT {e})",
    "CASE WHEN true THEN {e} END",
    "ARRAY[{e}]",
    "ROW({e}, 1)",
    "{e}::text",
    "CAST({e} AS text)",
    "{e} || 'x'",
    "NOT ({e} IS NULL)",
    "jsonb_build_object('k', {e})",
    "(SELECT max(v) FROM (SELECT {e} AS v) s)",
]
STATEMENTS = [
    "SELECT {e}",
    "SELECT {e} AS x FROM orders o",
    "SELECT * FROM orders WHERE {e} IS NOT NULL",
    "SELECT * FROM orders ORDER BY {e}",
    "SELECT 1 FROM orders GROUP BY {e}",
    "SELECT 1 HAVING {e} IS NULL",
    "SELECT * FROM orders, LATERAL (SELECT {e}) l",
    "SELECT * FROM orders o JOIN LATERAL (SELECT {e} AS v) l ON true",
    "WITH c AS (SELECT {e} AS v) SELECT * FROM c",
    "WITH c AS MATERIALIZED (SELECT {e}) SELECT 1",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n FROM r WHERE {e} IS NULL) SELECT * FROM r",
    "SELECT * FROM (VALUES ({e})) v",
    "VALUES ({e})",
    "SELECT 1 UNION SELECT {e}",
    "SELECT 1 UNION ALL (SELECT {e} EXCEPT SELECT 2)",
    "SELECT count(*) FILTER (WHERE {e} IS NULL) FROM orders",
    "SELECT row_number() OVER (ORDER BY {e}) FROM orders",
    "SELECT sum(1) OVER (PARTITION BY {e}) FROM orders",
    "SELECT string_agg('x', ',' ORDER BY {e}) FROM orders",
    "SELECT EXISTS (SELECT {e})",
    "SELECT 1 WHERE 1 IN (SELECT {e})",
    "SELECT 1 LIMIT (SELECT 1 WHERE {e} IS NULL)",
    "SELECT DISTINCT ON ({e}) 1",
    "SELECT * FROM orders WHERE id = ANY (ARRAY(SELECT {e}))",
    "SELECT * FROM (SELECT * FROM (SELECT {e}) a) b",
    "SELECT {e} FROM orders FOR UPDATE",
    "INSERT INTO orders (total) SELECT {e}",
    "UPDATE orders SET status = {e}",
    "DELETE FROM orders WHERE status = {e}",
    "EXPLAIN ANALYZE SELECT {e}",
    "EXPLAIN (ANALYZE, FORMAT JSON) SELECT {e}",
    "CREATE TABLE t AS SELECT {e}",
    "TABLE orders UNION SELECT {e}",
]


@settings(max_examples=400, deadline=None, database=None)
@given(
    st.sampled_from(DANGEROUS),
    st.sampled_from(CALL_FORMS),
    st.lists(st.sampled_from(EXPRESSIONS), max_size=3),
    st.sampled_from(STATEMENTS),
)
def test_dangerous_function_is_never_allowed(
    name: str, form: str, wrappers: list[str], statement: str
) -> None:
    """A dangerous or session function called anywhere a value can go — select list, WHERE, ORDER BY,
    LATERAL, CTE, subquery, window, EXPLAIN ANALYZE, a write — is blocked by every preset."""
    expression = form.replace("{n}", name).replace("{N}", name.upper())
    for wrapper in wrappers:
        expression = wrapper.replace("{e}", expression)
    text = statement.replace("{e}", expression)
    assert split_statements(text) == [text]
    classification = classify(text)
    for policy_name, policy in POLICIES.items():
        decision = decide(policy, classification)
        assert decision.verdict is Verdict.BLOCK, (policy_name, text, classification.reasons)


def test_every_dangerous_name_in_every_call_form() -> None:
    """The exhaustive version of the plain spellings: every name, every call form, as `SELECT …`."""
    for name in DANGEROUS:
        for form in CALL_FORMS:
            text = "SELECT " + form.replace("{n}", name).replace("{N}", name.upper())
            classification = classify(text)
            verdicts = {p: decide(policy, classification).verdict for p, policy in POLICIES.items()}
            assert set(verdicts.values()) == {Verdict.BLOCK}, (text, classification.reasons)
