"""The live schema of a PostgreSQL target, as the masking lineage layer needs it.

One query (one round trip) reads every user relation (tables, views, materialized views, foreign and
partitioned tables) with its columns and, for views, its definition; the search path as the server resolves
it; the user-defined functions (anything outside pg_catalog / information_schema: such a function may read any
table, so lineage cannot see through it); and the names of the built-in functions and system relations, so
that a name that is neither is recognised as unknown rather than assumed harmless.

The catalog is a snapshot taken at connection open and cached by the caller. It does not follow later DDL:
a relation or function created afterwards is simply unknown to it, which lineage treats as "cannot prove
clean" (fail closed), but a temporary table created later shadows a catalogued one unseen. Reload it after
any statement ``bastion.policy.lineage.may_change_catalog`` flags.

Name resolution follows PostgreSQL: unquoted identifiers fold to lower case (ASCII only, as the server does
with a UTF-8 database), identifiers are truncated to 63 bytes, and unqualified relation names are looked up
along ``current_schemas(true)`` (the temporary schema and pg_catalog first unless listed explicitly).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

__all__ = [
    "Catalog",
    "ColumnInfo",
    "FunctionInfo",
    "TableInfo",
    "build_catalog",
    "fold_identifier",
    "fold_name",
    "load_catalog",
    "split_name",
    "truncate_identifier",
]

NAMEDATALEN = 64  # PostgreSQL's compiled-in identifier limit (63 bytes + NUL)

_tokens = itertools.count(1)

# Everything in one statement: a single round trip and a single row. Columns are grouped per relation in one
# pass over pg_attribute (a correlated subquery per relation costs twice as much on large schemas).
_CATALOG_SQL = """
WITH rels AS (
    SELECT c.oid, n.nspname, c.relname, c.relkind
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_toast%'
      AND (n.nspname NOT LIKE 'pg\\_temp\\_%' OR n.oid = pg_catalog.pg_my_temp_schema())
), cols AS (
    SELECT a.attrelid,
           array_agg(a.attname::text ORDER BY a.attnum) AS names,
           array_agg(a.attnum ORDER BY a.attnum) AS nums,
           array_agg(t.typname::text ORDER BY a.attnum) AS types,
           array_agg(a.attnum) FILTER (WHERE a.attgenerated <> '') AS gen_nums,
           array_agg(pg_catalog.pg_get_expr(d.adbin, d.adrelid))
               FILTER (WHERE a.attgenerated <> '') AS gen_exprs
    FROM pg_catalog.pg_attribute a
    JOIN rels r ON r.oid = a.attrelid
    JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attnum > 0 AND NOT a.attisdropped
    GROUP BY a.attrelid
), parents AS (
    SELECT i.inhrelid, array_agg(i.inhparent::int8 ORDER BY i.inhseqno) AS oids
    FROM pg_catalog.pg_inherits i
    GROUP BY i.inhrelid
)
SELECT
    pg_catalog.current_database()::text,
    pg_catalog.current_schemas(false)::text[],
    pg_catalog.current_schemas(true)::text[],
    (SELECT coalesce(json_agg(json_build_array(
            r.oid::int8, r.nspname, r.relname, r.relkind,
            cl.names, cl.nums, cl.types, cl.gen_nums, cl.gen_exprs,
            CASE WHEN r.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(r.oid) END, p.oids)), '[]')
       FROM rels r LEFT JOIN cols cl ON cl.attrelid = r.oid LEFT JOIN parents p ON p.inhrelid = r.oid),
    (SELECT coalesce(json_agg(json_build_array(n.nspname, p.proname, p.provolatile, p.prokind, x.extname)),
                     '[]')
       FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
       LEFT JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid
            AND d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e'
       LEFT JOIN pg_catalog.pg_extension x ON x.oid = d.refobjid
      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')),
    (SELECT array_agg(DISTINCT p.proname::text)
       FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname IN ('pg_catalog', 'information_schema')),
    (SELECT array_agg(n.nspname || '.' || c.relname)
       FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname IN ('pg_catalog', 'information_schema') AND c.relkind IN ('r', 'v', 'm', 'f', 'p'))
"""


@dataclass(frozen=True, slots=True)
class ColumnInfo:
    """One live column (dropped and system columns are never listed)."""

    name: str
    attnum: int
    type_name: str
    generated: str | None = None  # GENERATED ALWAYS AS (expression): the value derives from other columns


@dataclass(frozen=True, slots=True)
class TableInfo:
    """A user relation. ``definition`` is ``pg_get_viewdef`` for views and materialized views."""

    schema: str
    name: str
    relkind: str
    oid: int
    columns: tuple[ColumnInfo, ...]
    definition: str | None = None
    parents: tuple[int, ...] = ()  # pg_inherits: partition parents and inheritance parents, nearest first

    @property
    def qualified(self) -> str:
        """``schema.table`` as lineage reports it (raw names, no quoting)."""
        return f"{self.schema}.{self.name}"

    @property
    def is_view(self) -> bool:
        """Views and materialized views: their columns are computed from a definition."""
        return self.relkind in ("v", "m")

    @property
    def column_names(self) -> tuple[str, ...]:
        """Column names in attnum order."""
        return tuple(c.name for c in self.columns)


@dataclass(frozen=True, slots=True)
class FunctionInfo:
    """A function, procedure or aggregate outside the system schemas (user-defined or from an extension)."""

    schema: str
    name: str
    volatility: str  # pg_proc.provolatile: i(mmutable) s(table) v(olatile)
    kind: str  # pg_proc.prokind: f(unction) p(rocedure) a(ggregate) w(indow)
    extension: str | None = None  # the extension that installed it (pg_depend 'e'); None: user-defined


@dataclass(frozen=True, eq=False)
class Catalog:
    """A snapshot of one connection's schema. Identity-hashed; ``token`` is unique per load (cache keys)."""

    database: str
    search_path: tuple[str, ...]  # current_schemas(false): what the user configured and may use
    effective_path: tuple[str, ...]  # current_schemas(true): the server's real lookup order
    tables: tuple[TableInfo, ...]
    functions: tuple[FunctionInfo, ...] = ()
    builtin_functions: frozenset[str] = frozenset()
    system_relations: frozenset[str] = frozenset()  # "pg_catalog.pg_class", "information_schema.tables", …
    token: int = field(default_factory=lambda: next(_tokens))
    _by_name: dict[tuple[str, str], TableInfo] = field(default_factory=dict, repr=False)
    _by_oid: dict[int, TableInfo] = field(default_factory=dict, repr=False)
    _user_functions: dict[str, tuple[FunctionInfo, ...]] = field(default_factory=dict, repr=False)
    memo: dict[Any, Any] = field(default_factory=dict, repr=False)  # derived data (lineage of views, …)

    def __post_init__(self) -> None:
        for table in self.tables:
            self._by_name[(table.schema, table.name)] = table
            self._by_oid[table.oid] = table
        grouped: dict[str, list[FunctionInfo]] = {}
        for fn in self.functions:
            grouped.setdefault(fn.name, []).append(fn)
        self._user_functions.update({k: tuple(v) for k, v in grouped.items()})

    # -- relations -------------------------------------------------------------------------------------------

    def resolve(self, name_parts: str | Sequence[Any]) -> TableInfo | None:
        """The user relation a (possibly qualified) name denotes, as the server would resolve it.

        ``name_parts`` is ``[table]``, ``[schema, table]`` or ``[database, schema, table]``; each part is a
        ``str`` (SQL spelling: ``"Quoted"`` keeps case, bare folds to lower case) or a sqlglot Identifier.
        A plain ``str`` is split on dots first. System relations and unknown names give None: use
        :meth:`is_system` to tell them apart.
        """
        found = self.locate(name_parts)
        return found if isinstance(found, TableInfo) else None

    def is_system(self, name_parts: str | Sequence[Any]) -> bool:
        """Whether the name resolves to a pg_catalog / information_schema relation."""
        return self.locate(name_parts) == "system"

    def locate(self, name_parts: str | Sequence[Any]) -> TableInfo | str | None:
        """Like :meth:`resolve`, but answers ``"system"`` for a pg_catalog / information_schema relation."""
        if isinstance(name_parts, str):
            parts = split_name(name_parts)
        else:
            parts = [fold_identifier(p) for p in name_parts]
        if len(parts) == 3:
            if parts[0] != self.database:
                return None  # cross-database references are an error in PostgreSQL
            parts = parts[1:]
        if len(parts) == 2:
            schema, name = parts
            if (schema, name) in self._by_name:
                return self._by_name[(schema, name)]
            if schema == "pg_temp":  # the alias of this session's temporary schema
                temp = next((s for s in self.effective_path if s.startswith("pg_temp_")), None)
                return self._by_name.get((temp, name)) if temp else None
            return "system" if f"{schema}.{name}" in self.system_relations else None
        if len(parts) != 1:
            return None
        name = parts[0]
        for schema in self.effective_path:
            if (schema, name) in self._by_name:
                return self._by_name[(schema, name)]
            if f"{schema}.{name}" in self.system_relations:
                return "system"
        return None

    def get(self, schema: str, name: str) -> TableInfo | None:
        """Exact lookup by already-folded schema and relation name (no search path)."""
        return self._by_name.get((schema, name))

    def by_oid(self, oid: int) -> TableInfo | None:
        """The user relation with this OID (what ``cursor.pgresult.ftable(i)`` reports)."""
        return self._by_oid.get(oid)

    def columns(self, table: TableInfo | str | Sequence[Any]) -> list[str]:
        """Column names of a relation in attnum order; [] when unknown."""
        info = table if isinstance(table, TableInfo) else self.resolve(table)
        return list(info.column_names) if info else []

    def descendants(self, table: TableInfo) -> list[TableInfo]:
        """Partitions and inheritance children, transitively (their rows are read through the parent)."""
        children: dict[int, list[TableInfo]] | None = self.memo.get(("children",))
        if children is None:
            children = {}
            for t in self.tables:
                for parent in t.parents:
                    children.setdefault(parent, []).append(t)
            self.memo[("children",)] = children
        out: list[TableInfo] = []
        seen = {table.oid}
        todo = list(children.get(table.oid, ()))
        while todo:
            child = todo.pop(0)
            if child.oid in seen:
                continue
            seen.add(child.oid)
            out.append(child)
            todo.extend(children.get(child.oid, ()))
        return out

    def ancestors(self, table: TableInfo) -> list[TableInfo]:
        """Partition / inheritance ancestors, nearest first (a partition's data is also its parent's)."""
        seen: set[int] = set()
        out: list[TableInfo] = []
        todo = list(table.parents)
        while todo:
            oid = todo.pop(0)
            parent = self._by_oid.get(oid)
            if oid in seen or parent is None:
                continue
            seen.add(oid)
            out.append(parent)
            todo.extend(parent.parents)
        return out

    # -- functions -------------------------------------------------------------------------------------------

    def user_functions(self, name: str) -> tuple[FunctionInfo, ...]:
        """User-defined functions with this (already folded) name, in any schema."""
        return self._user_functions.get(name, ())

    def is_user_function(self, name: str) -> bool:
        """Whether any non-system schema defines a function of this (folded) name."""
        return name in self._user_functions

    def is_builtin_function(self, name: str) -> bool:
        """Whether pg_catalog or information_schema has a function of this (folded) name."""
        return name in self.builtin_functions


def fold_identifier(part: Any) -> str:
    """One identifier as PostgreSQL stores it: quoted keeps case, unquoted folds ASCII A-Z; 63-byte cut.

    Accepts a sqlglot ``exp.Identifier`` (uses its ``quoted`` flag) or a ``str`` in SQL spelling.
    """
    quoted = getattr(part, "quoted", None)
    if quoted is not None:
        return fold_name(str(part.this), quoted=bool(quoted))
    text = str(part)
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return fold_name(text[1:-1].replace('""', '"'), quoted=True)
    return fold_name(text)


def fold_name(text: str, quoted: bool = False) -> str:
    """Fold raw identifier text: ASCII-only lower case unless quoted (the server's rule), then truncate."""
    return truncate_identifier(text if quoted else text.translate(_ASCII_LOWER))


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def truncate_identifier(text: str) -> str:
    """Cut to NAMEDATALEN-1 bytes on a character boundary, as the server does (with a NOTICE)."""
    raw = text.encode("utf-8")
    if len(raw) < NAMEDATALEN:
        return text
    return raw[: NAMEDATALEN - 1].decode("utf-8", errors="ignore")


def split_name(text: str) -> list[str]:
    """Split ``schema."Table"`` into folded parts, honouring double quotes."""
    parts: list[str] = []
    buf: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            end = i + 1
            while end < len(text):
                if text[end] == '"' and text[end + 1 : end + 2] == '"':
                    end += 2
                    continue
                if text[end] == '"':
                    break
                end += 1
            buf.append(text[i : end + 1])
            i = end + 1
            continue
        if ch == ".":
            parts.append(fold_identifier("".join(buf).strip()))
            buf = []
        else:
            buf.append(ch)
        i += 1
    parts.append(fold_identifier("".join(buf).strip()))
    return parts


def load_catalog(conn: psycopg.Connection[Any]) -> Catalog:
    """Read the catalog of ``conn`` in one round trip (no transaction left open when in autocommit)."""
    with conn.cursor() as cur:
        cur.execute(_CATALOG_SQL, prepare=False)
        row = cur.fetchone()
    if row is None:  # pragma: no cover - a SELECT without FROM always returns one row
        raise RuntimeError("catalog query returned no row")
    database, search_path, effective, rels, funcs, builtins, system = row
    return build_catalog(database, search_path, effective, rels, funcs, builtins, system)


def build_catalog(
    database: str,
    search_path: Iterable[str],
    effective_path: Iterable[str],
    relations: Iterable[Sequence[Any]],
    functions: Iterable[Sequence[Any]] = (),
    builtin_functions: Iterable[str] | None = (),
    system_relations: Iterable[str] | None = (),
) -> Catalog:
    """Assemble a Catalog from the catalog query's parts (also handy to build one by hand in tests)."""
    tables = tuple(
        TableInfo(
            schema=schema,
            name=name,
            relkind=relkind,
            oid=int(oid),
            columns=_columns(names, nums, types, gen_nums, gen_exprs),
            definition=definition,
            parents=tuple(int(p) for p in parents or ()),
        )
        for (
            oid,
            schema,
            name,
            relkind,
            names,
            nums,
            types,
            gen_nums,
            gen_exprs,
            definition,
            parents,
        ) in relations
    )
    fns = tuple(FunctionInfo(f[0], f[1], f[2], f[3], f[4] if len(f) > 4 else None) for f in functions)
    return Catalog(
        database=database,
        search_path=tuple(search_path),
        effective_path=tuple(effective_path),
        tables=tables,
        functions=fns,
        builtin_functions=frozenset(builtin_functions or ()),
        system_relations=frozenset(system_relations or ()),
    )


def _columns(
    names: Sequence[str] | None,
    nums: Sequence[int] | None,
    types: Sequence[str] | None,
    gen_nums: Sequence[int] | None,
    gen_exprs: Sequence[str] | None,
) -> tuple[ColumnInfo, ...]:
    generated = dict(zip(gen_nums or (), gen_exprs or (), strict=True))
    return tuple(
        ColumnInfo(n, int(a), t, generated.get(a))
        for n, a, t in zip(names or (), nums or (), types or (), strict=True)
    )
