"""Checks that need the live catalog, run by the pipeline between classification and execution.

The classifier works without a database; these close the gaps that only the schema can: attribute notation
that is really a function call (`o.bump` is `bump(o)`), system views that expose data samples of every
table (pg_stats), encodings that hide values from the detectors, and error messages that echo values.
"""

from __future__ import annotations

from collections.abc import Iterator
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


def function_call_notation(tree: Any, catalog: Catalog) -> Iterator[tuple[SqlClass, str, str]]:
    """Qualified references `t.f` where t is a real table without a column f: PostgreSQL calls f(t).

    Yields (class, reason, function name) the way the classifier would judge the call itself.
    """
    from sqlglot import exp

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
