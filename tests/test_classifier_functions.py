"""Functions and operators by schema: a qualifier other than pg_catalog names a user function (never a read);
pg_catalog's names are the built-ins; side-effecting built-ins are not reads; and, with the live catalog, an
unqualified built-in name that a user function on the search path shares is judged as that function."""

from __future__ import annotations

import pytest

from bastion.policy.catalog_checks import function_call_notation
from bastion.policy.sql import SqlClass, classify
from bastion.targets.catalog import build_catalog


@pytest.mark.parametrize(
    "text",
    [
        "SELECT * FROM app.generate_series(1, 2)",
        "SELECT g FROM app.generate_series(1, 2) AS g",
        'SELECT * FROM "app".generate_series(1, 2)',
        "SELECT * FROM shop.app.generate_series(1, 2)",
        "SELECT * FROM ROWS FROM (app.generate_series(1, 2))",
        "SELECT * FROM ROWS FROM (generate_series(1, 2), app.unnest(ARRAY[1]))",
        "SELECT * FROM orders o, LATERAL app.generate_series(1, o.id) g",
        "SELECT * FROM app.unnest(ARRAY[1])",
        "SELECT app.unnest(ARRAY[1])",
        "SELECT app.lower('a')",
        "SELECT public.upper('a')",
        "SELECT 1 OPERATOR(app.+) 2",
        'SELECT 1 OPERATOR("app".+) 2',
        "SELECT id FROM orders WHERE id OPERATOR(app.+) 1 > 0",
        # quoted names keep their case: "PG_CATALOG" is a schema anyone may create, not pg_catalog
        'SELECT "PG_CATALOG".lower(status) FROM orders',
        'SELECT * FROM "PG_CATALOG".generate_series(1, 2)',
        'SELECT 1 OPERATOR("PG_CATALOG".+) 2',
    ],
)
def test_user_schema_function_or_operator_is_a_user_function(text: str) -> None:
    result = classify(text)
    assert result.sql_class is SqlClass.WRITE, result.reasons
    assert result.opaque_functions  # its output cannot be traced either


@pytest.mark.parametrize(
    "text",
    [
        "SELECT pg_catalog.lower('a')",
        "SELECT pg_catalog.upper(status), pg_catalog.length(status) FROM orders",
        "SELECT shop.pg_catalog.lower('a')",
        "SELECT * FROM pg_catalog.generate_series(1, 2)",
        "SELECT * FROM pg_catalog.unnest(ARRAY[1])",
        "SELECT 1 OPERATOR(pg_catalog.+) 2",
        "SELECT PG_CATALOG.lower('a')",  # unquoted: folded to pg_catalog
        "SELECT \"pg_catalog\".lower('a')",
        "SELECT xpath('/a/text()', '<a>x</a>'::xml)",
        "SELECT xpath_exists('/a', '<a/>'::xml)",
        "SELECT crypt('pw', gen_salt('bf'))",
        "SELECT txid_current_if_assigned()",
    ],
)
def test_builtin_reads(text: str) -> None:
    result = classify(text)
    assert result.sql_class is SqlClass.READ, result.reasons
    assert not result.opaque_functions


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SELECT txid_current()", SqlClass.DANGEROUS),
        ("SELECT pg_catalog.txid_current()", SqlClass.DANGEROUS),
        ("SELECT * FROM txid_current()", SqlClass.DANGEROUS),
        ("SELECT pg_current_xact_id()", SqlClass.DANGEROUS),
        ("SELECT setseed(0.5)", SqlClass.SESSION),
        ("SELECT random() FROM (SELECT setseed(0.5)) s", SqlClass.SESSION),
        ("SELECT app.pg_read_file('x')", SqlClass.DANGEROUS),
        ("SELECT * FROM app.pg_ls_dir('.')", SqlClass.DANGEROUS),
    ],
)
def test_side_effecting_functions(text: str, expected: SqlClass) -> None:
    assert classify(text).sql_class is expected


def _catalog(*functions: tuple[str, str]) -> object:
    return build_catalog(
        "shop",
        ["public"],
        ["pg_catalog", "public"],
        [],
        [(schema, name, "v", "f") for schema, name in functions],
        ["lower", "upper", "generate_series"],
        [],
    )


@pytest.mark.parametrize(
    "text",
    [
        "SELECT lower(1)",
        "SELECT LOWER('a')",
        'SELECT "lower"(1)',
        "SELECT lower /* c */ (1)",
        "SELECT id FROM orders WHERE lower(id) = 'x'",
        "SELECT * FROM lower(1)",
        "EXPLAIN ANALYZE SELECT lower(1)",
    ],
)
def test_shadowed_builtin_is_judged_as_the_user_function(text: str) -> None:
    classification = classify(text)
    found = list(function_call_notation(classification.tree, _catalog(("public", "lower"))))
    assert [(cls, name) for cls, _, name in found] == [(SqlClass.WRITE, "lower")]
    assert "public.lower" in found[0][1]


@pytest.mark.parametrize(
    "text",
    [
        "SELECT pg_catalog.lower(1)",  # qualified: the built-in
        "SELECT upper('a')",  # no user function of that name
        "SELECT 'lower(1)'",  # in a string
        "SELECT 1::text AS lower",
    ],
)
def test_no_shadow_no_finding(text: str) -> None:
    catalog = _catalog(("public", "lower"), ("elsewhere", "upper"), ("pg_temp_3", "upper"))
    assert list(function_call_notation(classify(text).tree, catalog)) == []


def test_functions_off_the_search_path_do_not_shadow() -> None:
    catalog = _catalog(("elsewhere", "lower"))
    assert list(function_call_notation(classify("SELECT lower(1)").tree, catalog)) == []


def test_extension_function_is_held_until_the_catalog_says_it_is_the_extension_s() -> None:
    """pgcrypto's crypt lives in public; without extension membership it could be anyone's crypt."""
    found = list(
        function_call_notation(classify("SELECT crypt('a', 'b')").tree, _catalog(("public", "crypt")))
    )
    assert [cls for cls, _, _ in found] == [SqlClass.WRITE]
