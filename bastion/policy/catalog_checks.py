"""Checks that need the live catalog, run by the pipeline between classification and execution.

The classifier works without a database; these close the gaps that only the schema can: attribute notation
that is really a function call (`o.bump` is `bump(o)`), unqualified calls that the search path resolves to a
user function (`lower(1)` when `public.lower(int)` exists), system views that expose data samples of every
table (pg_stats), encodings that hide values from the detectors, and error messages that echo values.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise
from typing import Any

from bastion.policy import functions
from bastion.policy.classes import SqlClass
from bastion.targets.catalog import Catalog

# System relations whose rows carry data values (statistics samples, other sessions' query texts): read
# through them, a table's sensitive columns reach the screen without any lineage to them.
DATA_SYSTEM_RELATIONS = frozenset(
    {
        "pg_catalog.pg_stats", "pg_catalog.pg_stats_ext", "pg_catalog.pg_stats_ext_exprs",
        "pg_catalog.pg_statistic", "pg_catalog.pg_statistic_ext_data", "pg_catalog.pg_stat_activity",
        "pg_catalog.pg_prepared_statements", "pg_catalog.pg_cursors",
    }
)  # fmt: skip
SYSTEM_COLUMNS = frozenset({"ctid", "xmin", "xmax", "cmin", "cmax", "tableoid", "oid"})

# Functions that re-encode, hash, reverse or cut text: their output is what the value detectors cannot see.
OBFUSCATING = frozenset(
    {
        "encode", "decode", "md5", "sha224", "sha256", "sha384", "sha512", "digest", "hmac", "crypt",
        "reverse", "translate", "to_hex", "convert", "convert_to", "convert_from", "regexp_replace",
        "replace", "overlay", "substr", "substring", "split_part", "left", "right", "lpad", "rpad",
        "string_to_array", "regexp_split_to_array", "regexp_split_to_table", "regexp_matches",
        "regexp_match", "regexp_substr", "ascii", "chr", "to_ascii", "textsend", "bytea", "unhex", "hex",
        "sha", "sha2", "sha1", "crc32", "crc32c", "string_to_table",
    }
)  # fmt: skip


def _name(node: Any) -> str:
    from sqlglot import exp

    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return str(node.sql_name()).lower()


def uses_obfuscation(tree: Any) -> bool:
    from sqlglot import exp

    return any(_name(f) in OBFUSCATING for f in tree.find_all(exp.Func))


def table_parts(table: Any) -> list[Any]:
    return [p for p in (table.args.get("catalog"), table.args.get("db"), table.this) if p is not None]


def exposes_data(catalog: Catalog, parts: list[Any]) -> bool:
    """A system relation from DATA_SYSTEM_RELATIONS, however it is spelled (qualified or on the path)."""
    from bastion.targets.catalog import fold_identifier

    names = [fold_identifier(p) for p in parts]
    if len(names) >= 2:
        return f"{names[-2]}.{names[-1]}" in DATA_SYSTEM_RELATIONS
    return f"pg_catalog.{names[-1]}" in DATA_SYSTEM_RELATIONS


def path_functions(catalog: Catalog) -> dict[str, tuple[Any, ...]]:
    """User-defined functions an unqualified call can reach: those in a schema on the effective search path
    (pg_temp is never searched for functions), by folded name. Cached on the catalog."""
    key = ("catalog_checks.path_functions",)
    found: dict[str, tuple[Any, ...]] | None = catalog.memo.get(key)
    if found is None:
        path = {s for s in catalog.effective_path if not s.startswith("pg_temp")}
        found = {}
        for fn in catalog.functions:
            if fn.schema in path:
                found[fn.name] = (*found.get(fn.name, ()), fn)
        catalog.memo[key] = found
    return found


def shadowed_calls(tree: Any, catalog: Catalog) -> Iterator[tuple[SqlClass, str, str]]:
    """Unqualified calls `f(…)` where a schema on the search path defines a user function named f.

    PostgreSQL picks among every function of that name on the path by argument types, so `lower(1)` runs
    `public.lower(int)` rather than the built-in: the call is judged as the user function it may be (a
    write, its output untraceable). Names come from the statement's tokens, which also covers calls sqlglot
    turns into typed expressions under another name. A known pure extension function (functions.
    EXTENSION_SAFE) counts as the extension's only when the catalog says every function of that name on
    the path belongs to that extension.
    """
    reachable = path_functions(catalog)
    if not reachable:
        return
    text = tree.meta.get("source") if tree is not None else None
    if not isinstance(text, str):
        from bastion.policy.sql import DIALECT

        text = tree.sql(dialect=DIALECT)
    lowered = text.lower()
    if not any(name.lower() in lowered for name in reachable):
        return  # the common case: no user function's name appears at all, so nothing to tokenize
    from sqlglot.errors import SqlglotError
    from sqlglot.tokens import TokenType

    from bastion.policy.sql import DIALECT
    from bastion.targets.catalog import fold_name

    try:
        tokens = DIALECT.tokenize(text)
    except SqlglotError:  # the classifier already called this statement unknown
        return
    seen: set[str] = set()
    previous = None
    for token, following in pairwise(tokens):
        if (
            following.token_type == TokenType.L_PAREN
            and (previous is None or previous.token_type not in (TokenType.DOT, TokenType.DCOLON))
            and token.token_type not in (TokenType.STRING, TokenType.NUMBER, TokenType.R_PAREN)
        ):
            name = fold_name(token.text, quoted=token.token_type == TokenType.IDENTIFIER)
            candidates = reachable.get(name)
            if candidates and name not in seen and not _extension_owned(name, candidates):
                seen.add(name)
                where = ", ".join(sorted({f"{fn.schema}.{fn.name}" for fn in candidates}))
                if name in functions.DANGEROUS:
                    yield SqlClass.DANGEROUS, f"{name}() may resolve to {where}", name
                elif name in functions.SESSION:
                    yield SqlClass.SESSION, f"{name}() may resolve to {where}", name
                else:
                    yield (
                        SqlClass.WRITE,
                        f"{name}() may resolve to the user-defined {where} on the search path: it may write",
                        name,
                    )
        previous = token


def _extension_owned(name: str, candidates: tuple[Any, ...]) -> bool:
    extension = functions.EXTENSION_SAFE.get(name)
    return extension is not None and all(getattr(fn, "extension", None) == extension for fn in candidates)


def function_call_notation(tree: Any, catalog: Catalog) -> Iterator[tuple[SqlClass, str, str]]:
    """Calls only the catalog reveals, as (class, reason, function name), judged the way the classifier
    judges a user function: qualified references `t.f` where t is a real table without a column f
    (PostgreSQL calls f(t)), then unqualified calls that may resolve to a user function (shadowed_calls).
    """
    from sqlglot import exp

    yield from shadowed_calls(tree, catalog)

    aliases: dict[str, Any] = {}
    for table in tree.find_all(exp.Table):
        if isinstance(table.this, exp.Identifier):
            aliases[table.alias_or_name.lower()] = table
    for column in tree.find_all(exp.Column):
        qualifier = column.table
        if not qualifier or qualifier.lower() not in aliases or not isinstance(column.this, exp.Identifier):
            continue  # unqualified, not a table alias, or `t.*`
        info = catalog.resolve(table_parts(aliases[qualifier.lower()]))
        name = column.name if column.this.quoted else column.name.lower()
        if info is None or name in info.column_names or name in SYSTEM_COLUMNS:
            continue
        call = f"{name}({qualifier})"
        if name in functions.DANGEROUS:
            yield SqlClass.DANGEROUS, f"{qualifier}.{name} calls {call}", name
        elif name in functions.SESSION:
            yield SqlClass.SESSION, f"{qualifier}.{name} calls {call}, which changes session settings", name
        elif catalog.is_user_function(name) or not catalog.is_builtin_function(name):
            yield (
                SqlClass.WRITE,
                f"{qualifier}.{name} calls {call}, which is not a known built-in: it may write",
                name,
            )


def elide_values(message: str, sqlstate: str | None, statement: str) -> str:
    """An error message for a statement that reads sensitive data, with the values it might echo removed.

    Data exceptions (22xxx) and integrity violations (23xxx) quote the offending value: everything from the
    first quote is cut. In other messages quoted text is kept only while it appears in the statement itself
    (identifiers the user typed); from the first quoted text that does not — or an unbalanced quote — the
    rest is cut, since a value may itself contain quotes and shift any pairing.
    """
    note = " (value not shown: the statement reads sensitive data)"
    if sqlstate and sqlstate[:2] in ("22", "23"):
        cut = min((i for i in (message.find('"'), message.find("'")) if i >= 0), default=-1)
        return (message[:cut].rstrip(": ") + note) if cut >= 0 else message
    lowered = statement.lower()
    position = 0
    while True:
        starts = [i for i in (message.find('"', position), message.find("'", position)) if i >= 0]
        if not starts:
            return message
        start = min(starts)
        end = message.find(message[start], start + 1)
        inner = message[start + 1 : end] if end > 0 else ""
        if end < 0 or not inner or inner.lower() not in lowered:
            return message[:start].rstrip() + " …" + note
        position = end + 1
