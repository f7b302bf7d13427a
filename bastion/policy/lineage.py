"""Masking layer two: which base-table columns each result column of a statement may come from.

The first masking layer trusts what the server reports (``ftable``/``ftablecol``), which covers plain
column references only; the third looks at values. This layer reads the statement against the live catalog
(:mod:`bastion.targets.catalog`) and answers, per output column, the set of ``("schema.table", "column")``
base columns its value may derive from (through any expression, function, aggregate, CASE, cast, subquery,
window, CTE, set operation or view), or ``None``: *cannot be proven*, with a reason. The caller masks a
column whose sources intersect the sensitive set, or are None, whenever the statement reads a sensitive
table. So every doubt resolves towards None or a larger set, never a smaller one.

How it works. The statement is parsed with sqlglot (postgres dialect); identifiers are folded the way the
server folds them (ASCII lower case, 63-byte cut); every relation reference is resolved along the catalog's
search path (CTE names shadow tables exactly where PostgreSQL says they do) and rewritten fully qualified;
``t AS a(x, y)`` renames become ``(SELECT * FROM t) AS a(x, y)`` and known set-returning functions get their
real column names, because sqlglot gets both wrong. Then ``sqlglot.optimizer.qualify`` with a
``MappingSchema`` of the referenced relations expands ``*`` (USING/NATURAL merges included) and qualifies
columns (correlated references included). A small evaluator then walks the qualified tree scope by scope
and propagates lineage. It does its own resolution for what qualify leaves behind (whole-row references,
RETURNING lists, columns of sources with unknown columns), unions its own reading of every name qualify
placed (a sqlglot mistake can only widen the answer), and runs alone if qualify raises.

Decisions:
  * An expression's sources are the union over every column it mentions, conditions included: CASE
    conditions, FILTER clauses, aggregate ORDER BY, and window PARTITION BY / ORDER BY, named windows too
    (``rank() OVER (ORDER BY ssn)`` reveals how SSNs compare, so it derives from ssn). WHERE / GROUP BY /
    HAVING / ORDER BY of the query itself do not count: they choose rows, they are not values.
    ``count(*)`` has no sources.
  * A scalar, IN, EXISTS or ARRAY subquery contributes the union of all its output columns.
  * Whole-row references (``t``, ``t.*`` inside an expression, ``row_to_json(t)``, ``t::text``, ``(t).f``)
    derive from every column of ``t``, with the reason "whole-row reference"; ``(t).*`` expands like ``t.*``.
  * An unqualified name qualify could not place resolves as PostgreSQL does: innermost query level first;
    several candidates at one level (PostgreSQL would say "ambiguous" unless it is a USING column) give the
    union of all, with a reason; a source whose columns are unknown makes it None; no column at all falls
    back to a whole-row reference to a FROM item of that name.
  * None: relations not in the catalog (system catalogs, relations created after the catalog was read),
    user-defined functions and anything with the name of one (overloads cannot be told apart without
    types), functions that are not built-in, built-ins that read data by name or run SQL text
    (query_to_xml, table_to_xml, ts_stat, ...), qualified references to a column a source does not have
    (``t.f`` may call f(t)), unparseable statements (sqlglot's Command fallback), and anything the
    evaluator does not model.
  * Views and materialized views are expanded from ``pg_get_viewdef`` recursively (depth-limited, memoized
    per catalog). Partitions and inheritance children also report the same column of each ancestor.
  * RETURNING: columns of the target table plus whatever the statement writes into them (SET expressions,
    inserted VALUES / SELECT, ON CONFLICT DO UPDATE), plus the FROM / USING items for UPDATE / DELETE.
  * Output list contract: one entry per result column, in order. When the column count cannot be
    determined (a ``*`` over a source with unknown columns) the list carries a ``"*"`` entry with sources
    None; a caller that finds the list length differs from the result's column count must treat every
    column as unknown. Statements that return no rows give [].
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.optimizer.qualify import qualify
from sqlglot.schema import MappingSchema

from bastion.targets.catalog import Catalog, TableInfo, fold_identifier, fold_name

__all__ = [
    "OutputColumn",
    "clear_lineage_cache",
    "lineage_cache_info",
    "may_change_catalog",
    "result_lineage",
]

Sources = frozenset[tuple[str, str]]
Lin = tuple[Sources | None, tuple[str, ...]]  # (sources or None = unknown, reasons)

DIALECT = Dialect.get_or_raise("postgres")
CACHE_SIZE = 2048
MAX_VIEW_DEPTH = 16  # nested view expansion
MAX_FIXPOINT_ROUNDS = 12  # recursive CTEs
MAX_REASONS = 6
MEMO_LIMIT = 4096  # per-catalog memo entries (view lineage, schemas) before schemas are dropped

_EMPTY: Lin = (frozenset(), ())
_UNKNOWN_DB = (
    "\x00unknown"  # schema given to relations the catalog does not know (so qualify leaves them alone)
)
_SYSTEM_DB = "\x00system"

# Built-ins whose result is not a function of their arguments' columns: they read tables by name, run SQL text
# or read data outside tables.
_OPAQUE_FUNCTIONS = frozenset(
    {
        "query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema", "cursor_to_xml",
        "cursor_to_xmlschema", "table_to_xml", "table_to_xmlschema", "table_to_xml_and_xmlschema",
        "schema_to_xml", "schema_to_xmlschema", "schema_to_xml_and_xmlschema", "database_to_xml",
        "database_to_xmlschema", "database_to_xml_and_xmlschema", "ts_stat", "ts_rewrite", "dblink",
        "dblink_fetch", "dblink_get_result", "lo_get", "loread", "pg_read_file", "pg_read_binary_file",
        "pg_stat_get_activity", "pg_ls_dir", "pg_stat_file",
    }
)  # fmt: skip

# Set-returning built-ins with more than one output column (the rest return one, named after the alias).
_SRF_COLUMNS: dict[str, tuple[str, ...]] = {
    "jsonb_each": ("key", "value"),
    "jsonb_each_text": ("key", "value"),
    "json_each": ("key", "value"),
    "json_each_text": ("key", "value"),
    "pg_options_to_table": ("option_name", "option_value"),
    "regexp_matches": ("regexp_matches",),
}
# Anonymous (to sqlglot) set-returning built-ins with one output column, named after the alias if any.
_SCALAR_SRFS = frozenset(
    {
        "generate_series", "generate_subscripts", "unnest", "jsonb_array_elements",
        "jsonb_array_elements_text", "json_array_elements", "json_array_elements_text", "jsonb_object_keys",
        "json_object_keys", "regexp_split_to_table", "string_to_table", "jsonb_path_query", "pg_ls_dir",
        "txid_snapshot_xip", "pg_snapshot_xip",
    }
)  # fmt: skip
# Built-ins returning a record whose columns come from a column definition list or a row type: count unknown.
_RECORD_FUNCTIONS = frozenset(
    {
        "jsonb_to_record", "jsonb_to_recordset", "json_to_record", "json_to_recordset",
        "jsonb_populate_record", "jsonb_populate_recordset", "json_populate_record",
        "json_populate_recordset", "xmltable",
    }
)  # fmt: skip

# SQL constructs that look like calls but are grammar, not pg_proc entries; they compute from their arguments.
_SYNTAX_FUNCTIONS = frozenset(
    {
        "row", "grouping", "coalesce", "nullif", "greatest", "least", "xmlelement", "xmlforest", "xmlconcat",
        "xmlpi", "xmlroot", "xmlexists", "xmlparse", "xmlserialize", "xmlattributes", "json", "json_object",
        "json_array", "json_objectagg", "json_arrayagg", "json_scalar", "json_serialize", "json_query",
        "json_value", "json_exists", "merge_action",
    }
)  # fmt: skip
# System columns of stored tables; no user column may have these names.
_SYSTEM_COLUMNS = frozenset({"tableoid", "ctid", "xmin", "xmax", "cmin", "cmax"})
# Unquoted names that PostgreSQL parses as SQL value functions, never as columns.
_SQL_VALUE_WORDS = frozenset({"user", "current_user", "session_user", "current_role", "current_catalog"})

_NO_ROWS = (
    exp.Create, exp.Drop, exp.Alter, exp.Set, exp.Transaction, exp.Commit, exp.Rollback, exp.Grant,
    exp.TruncateTable, exp.Analyze, exp.Comment, exp.Use,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class OutputColumn:
    """One result column: its name and the base columns it may derive from (None = unknown, see reasons)."""

    name: str
    sources: frozenset[tuple[str, str]] | None
    reasons: tuple[str, ...] = ()

    @property
    def unknown(self) -> bool:
        """Whether lineage could not be proven (the caller masks it when the query reads sensitive data)."""
        return self.sources is None


# -- lineage values ------------------------------------------------------------------------------------------


def _unknown(reason: str) -> Lin:
    return (None, (reason,))


def _join(lins: Iterable[Lin], reason: str | None = None) -> Lin:
    """Union of lineages: None absorbs; reasons are kept once each, in order, capped."""
    sources: set[tuple[str, str]] = set()
    reasons: list[str] = [reason] if reason else []
    unknown = False
    for src, why in lins:
        if src is None:
            unknown = True
        elif src:
            sources.update(src)
        for r in why:
            if r not in reasons:
                reasons.append(r)
    return (None if unknown else frozenset(sources), tuple(reasons[:MAX_REASONS]))


def _with_reason(lin: Lin, reason: str) -> Lin:
    return lin if reason in lin[1] else (lin[0], (*lin[1], reason)[:MAX_REASONS])


class _Cols(list[tuple[str, Lin]]):
    """Output columns of a query. ``exact`` is False when their number is unknown (an unexpandable ``*``)."""

    def __init__(self, items: Iterable[tuple[str, Lin]] = ()) -> None:
        super().__init__(items)
        self.exact = True
        self.bottom = False  # the "no rows yet" start of a recursive CTE fixed point
        self.alts: dict[int, str] = {}  # position -> the name qualify gave it, when it differs (_col_0, ...)

    @classmethod
    def make(
        cls, items: Iterable[tuple[str, Lin]], exact: bool = True, alts: dict[int, str] | None = None
    ) -> _Cols:
        out = cls(items)
        out.exact = exact
        if alts:
            out.alts = {i: a for i, a in alts.items() if i < len(out)}
        return out

    def union_lin(self) -> Lin:
        lin = _join(lin for _, lin in self)
        if not self.exact and not self.bottom:
            return _join([lin, _unknown("column count unknown")])
        return lin

    def same(self, other: _Cols) -> bool:
        return self.exact == other.exact and self.bottom == other.bottom and list(self) == list(other)


def _bottom() -> _Cols:
    out = _Cols.make((), exact=False)
    out.bottom = True
    return out


class _Source:
    """A FROM item as seen from its query: ordered columns (None = unknown) and a fallback for any name."""

    __slots__ = ("alias", "alts", "columns", "default", "note", "system_columns")

    def __init__(
        self,
        alias: str,
        columns: list[tuple[str, Lin]] | None,
        default: Lin | None = None,
        note: str = "",
        alts: dict[int, str] | None = None,
    ) -> None:
        self.alias = alias
        self.columns = columns
        self.alts = alts or {}  # position -> second name (qualify's name for an unnamed expression)
        self.default = default  # lineage of any column when ``columns`` is None (None: unknown)
        self.note = note  # why the columns are unknown
        self.system_columns = False  # a stored table: ctid, xmin, tableoid, ... exist and hold no user data

    def lookup(self, name: str) -> Lin | None:
        """Lineage of column ``name``; None when the source certainly has no such column."""
        if self.columns is None:
            return (
                self.default if self.default is not None else _unknown(self.note or f"{self.alias}: unknown")
            )
        hits = [lin for col, lin in self.columns if col == name]
        if not hits and self.alts:
            hits = [self.columns[i][1] for i, alt in self.alts.items() if alt == name]
        if not hits:
            return _EMPTY if self.system_columns and name in _SYSTEM_COLUMNS else None
        return hits[0] if len(hits) == 1 else _join(hits)

    def certainly_has(self, name: str) -> bool | None:
        if self.columns is None:
            return None
        return (
            any(col == name for col, _ in self.columns)
            or name in self.alts.values()
            or (self.system_columns and name in _SYSTEM_COLUMNS)
        )

    def whole(self) -> Lin:
        reason = f"whole-row reference {self.alias}"
        if self.columns is None:
            base = (
                self.default if self.default is not None else _unknown(self.note or f"{self.alias}: unknown")
            )
            return _with_reason(base, reason)
        return _join((lin for _, lin in self.columns), reason)


class _Scope:
    """The FROM items of one query level; ``parent`` is the enclosing level (correlated references)."""

    __slots__ = ("parent", "sources", "using", "windows")

    def __init__(self, parent: _Scope | None) -> None:
        self.parent = parent
        self.sources: dict[str, _Source] = {}
        self.using = False  # a USING / NATURAL join: an unexpanded * cannot be reproduced
        self.windows: list[exp.Expr] = []  # WINDOW w AS (...) definitions of this query level

    def add(self, source: _Source) -> None:
        self.sources[source.alias] = source

    def find(self, alias: str) -> _Source | None:
        scope: _Scope | None = self
        while scope is not None:
            src = scope.sources.get(alias)
            if src is not None:
                return src
            scope = scope.parent
        return None


# -- cache ---------------------------------------------------------------------------------------------------

_cache: OrderedDict[tuple[str, int], tuple[OutputColumn, ...]] = OrderedDict()
_cache_lock = threading.Lock()
_cache_stats = {"hits": 0, "misses": 0}


def clear_lineage_cache() -> None:
    """Forget every cached result (tests, benchmarks)."""
    with _cache_lock:
        _cache.clear()
        _cache_stats.update(hits=0, misses=0)


def lineage_cache_info() -> dict[str, int]:
    """Hits, misses and current size of the statement cache."""
    with _cache_lock:
        return {**_cache_stats, "size": len(_cache), "max": CACHE_SIZE}


def _normalize_sql(sql: str) -> str:
    """Cache key text: surrounding whitespace and trailing semicolons do not change a statement."""
    return sql.strip().rstrip(";").rstrip()


# -- entry point ---------------------------------------------------------------------------------------------


def result_lineage(
    tree_or_sql: exp.Expr | str, catalog: Catalog, *, sql: str | None = None, use_cache: bool = True
) -> list[OutputColumn]:
    """Lineage of each result column of ONE statement (postgres dialect). Never raises on bad SQL.

    Pass the SQL text (or, with a parsed tree, the text it came from as ``sql``) to use the cache, keyed by
    (normalized text, catalog token). A tree without ``sql`` is not cached. The tree is never modified.
    Statements that return no rows (DDL, DML without RETURNING, SELECT INTO) give []. See the module docstring
    for the list-length contract.
    """
    text = tree_or_sql if isinstance(tree_or_sql, str) else sql
    key = (_normalize_sql(text), catalog.token) if (use_cache and text is not None) else None
    if key is not None:
        with _cache_lock:
            hit = _cache.get(key)
            if hit is not None:
                _cache.move_to_end(key)
                _cache_stats["hits"] += 1
                return list(hit)
            _cache_stats["misses"] += 1
    result = tuple(_compute(tree_or_sql, catalog, sql))
    if key is not None:
        with _cache_lock:
            _cache[key] = result
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
    return list(result)


def _compute(tree_or_sql: exp.Expr | str, catalog: Catalog, sql: str | None = None) -> list[OutputColumn]:
    try:
        if isinstance(tree_or_sql, str):
            text = tree_or_sql
            trees = [t for t in sqlglot.parse(text, dialect=DIALECT) if t is not None]
            if len(trees) != 1:
                return [_marker("not exactly one statement")] if trees else []
            tree = trees[0]

            def fresh() -> exp.Expr:
                return sqlglot.parse_one(text, dialect=DIALECT)

        else:
            original = tree_or_sql
            tree = original.copy()
            fresh = original.copy
        scanned = tree_or_sql if isinstance(tree_or_sql, str) else sql
        cols = _Evaluator(catalog).statement(tree, scanned, fresh)
    except RecursionError:
        return [_marker("statement nested too deeply")]
    except Exception as err:
        return [_marker(f"not understood: {type(err).__name__}: {str(err)[:120]}")]
    if cols is None:
        return []
    out = [OutputColumn(name, src, why) for name, (src, why) in cols]
    if not cols.exact and not any(c.name == "*" and c.sources is None for c in out):
        out.append(_marker("column count unknown"))
    return out


def may_change_catalog(tree_or_sql: exp.Expr | str, catalog: Catalog) -> bool:
    """Whether running the statement may leave ``catalog`` stale, so that the caller reloads it.

    Lineage is only as good as the snapshot: a temporary table created after it shadows a catalogued one and
    would be read as the wrong relation. Only plain reads are exempt: one SELECT / VALUES / set operation
    without INTO and without data-modifying CTEs, calling built-in functions only (a user function may run
    DDL) and not set_config (search_path). DDL, SET, DML (triggers may run DDL) and anything unparseable
    say True.
    """
    try:
        if isinstance(tree_or_sql, str):
            trees = [t for t in sqlglot.parse(tree_or_sql, dialect=DIALECT) if t is not None]
            if len(trees) != 1:
                return bool(trees)
            tree = trees[0]
        else:
            tree = tree_or_sql
    except Exception:
        return True
    if not isinstance(tree, (exp.Query, exp.Values)):
        return True
    if tree.find(exp.Into, exp.Insert, exp.Update, exp.Delete):
        return True
    for func in tree.find_all(exp.Func):
        name = _function_name(func)
        if catalog.is_user_function(name) or name == "set_config":
            return True
        unknown = bool(catalog.builtin_functions) and not catalog.is_builtin_function(name)
        if isinstance(func, exp.Anonymous) and unknown and name not in _SYNTAX_FUNCTIONS:
            return True
    return False


def _marker(reason: str) -> OutputColumn:
    return OutputColumn("*", None, (reason,))


# -- preparation: identifiers, relations, renames ------------------------------------------------------------


def _fold_tree(tree: exp.Expr) -> None:
    """Fold identifiers as the server does; quote the ones Python's lower() would fold differently.

    Also marks column references written without a qualifier, for the cross-check after qualify.
    """
    for node in tree.walk():
        if type(node) is exp.Column and not node.args.get("table"):
            node.meta["bastion_bare"] = True
        elif isinstance(node, exp.Select):
            for proj in node.expressions:
                if not isinstance(proj, (exp.Alias, exp.Column, exp.Star)):
                    proj.meta["bastion_unnamed"] = True  # qualify will name it _col_N; PostgreSQL would not
        elif type(node) is exp.Identifier:
            text = node.this
            if not isinstance(text, str):
                continue
            folded = fold_identifier(node)
            if folded != text:
                node.set("this", folded)
            if not node.quoted and not folded.isascii():
                node.set("quoted", True)


def _cte_visible(table: exp.Table, name: str) -> bool:
    """Whether an unqualified relation name refers to a CTE at this point (PostgreSQL's scoping rules)."""
    child: exp.Expr = table
    node = table.parent
    while node is not None:
        if isinstance(node, exp.CTE) and isinstance(node.parent, exp.With):
            with_ = node.parent
            ctes = list(with_.expressions)
            position = next(i for i, c in enumerate(ctes) if c is node)
            visible = ctes if with_.args.get("recursive") else ctes[:position]
            if any(c.alias == name for c in visible):
                return True
            child, node = with_, with_.parent
            continue
        with_ = node.args.get("with_")
        if (
            isinstance(with_, exp.With)
            and with_ is not child
            and any(c.alias == name for c in with_.expressions)
        ):
            return True
        child, node = node, node.parent
    return False


def _function_name(func: exp.Expr) -> str:
    if isinstance(func, exp.Anonymous):
        name = func.this
        return fold_identifier(name) if isinstance(name, exp.Identifier) else fold_name(str(name))
    return func.sql_name().lower() if isinstance(func, exp.Func) else type(func).__name__.lower()


def _function_columns(func: exp.Expr, alias: str | None) -> list[str] | None:
    """Output column names of a known built-in set-returning (or scalar) function in FROM; None if unknown."""
    if isinstance(func, exp.Unnest):
        n = len(func.expressions)
        return [alias or "unnest"] if n == 1 else ["unnest"] * n
    if isinstance(func, exp.ExplodingGenerateSeries):
        return [alias or "generate_series"]
    name = _function_name(func)
    if name in _SRF_COLUMNS:
        return list(_SRF_COLUMNS[name])
    if name in _RECORD_FUNCTIONS:
        return None
    if isinstance(func, exp.Anonymous) and name not in _SCALAR_SRFS:
        return (
            None  # composite-returning built-ins, user functions, unknown names: count unknown unless aliased
        )
    return [alias or name]


class _Prepared:
    """A parsed statement made ready for qualify: relations resolved, renames and SRF columns explicit."""

    def __init__(self, tree: exp.Expr, catalog: Catalog) -> None:
        self.tree = tree
        self.tables: dict[tuple[str, str], TableInfo] = {}
        _fold_tree(tree)
        for table in list(tree.find_all(exp.Table)):
            self._relation(table, catalog)
        for node in list(tree.find_all(exp.Table, exp.Unnest, exp.Lateral)):
            self._function_source(node)
        for node in tree.find_all(exp.CTE, exp.Subquery, exp.Lateral, exp.Values, exp.Table, exp.Unnest):
            alias = node.args.get("alias")
            if isinstance(alias, exp.TableAlias) and alias.columns:
                # qualify moves these into the select list by position, wrongly when a * stays unexpanded
                node.meta["bastion_alias_columns"] = [c.name for c in alias.columns]

    def _relation(self, table: exp.Table, catalog: Catalog) -> None:
        if not isinstance(table.this, exp.Identifier) or table.args.get("rows_from"):
            return  # a function in FROM
        if isinstance(table.parent, exp.Into):
            return
        parts = [p for p in (table.args.get("catalog"), table.args.get("db"), table.this) if p is not None]
        name = table.name
        if len(parts) == 1 and _cte_visible(table, name):
            table.meta["bastion_cte"] = True
            return
        found = catalog.locate([exp.Identifier(this=p.name, quoted=True) for p in parts])  # already folded
        table.set("catalog", None)
        if isinstance(found, TableInfo):
            self.tables[(found.schema, found.name)] = found
            table.set("db", exp.Identifier(this=found.schema, quoted=True))
            table.set("this", exp.Identifier(this=found.name, quoted=True))
        else:
            shown = ".".join(p.name for p in parts)
            table.meta["bastion_missing"] = (
                f"{shown} is a system catalog relation"
                if found == "system"
                else f"relation {shown} is not in the catalog"
            )
            table.set(
                "db", exp.Identifier(this=_SYSTEM_DB if found == "system" else _UNKNOWN_DB, quoted=True)
            )
        alias = table.args.get("alias")
        if isinstance(alias, exp.TableAlias) and alias.columns:
            # PostgreSQL renames the first columns; sqlglot ignores such renames for tables. A derived table
            # over the relation renames exactly as the server does.
            table.set("alias", None)
            inner = exp.Select(expressions=[exp.Star()]).from_(table.copy(), copy=False)
            table.replace(exp.Subquery(this=inner, alias=alias))

    def _function_source(self, node: exp.Expr) -> None:
        if isinstance(node, exp.Table):
            func = node.this
            if not isinstance(func, exp.Func) or node.args.get("rows_from"):
                return
            holder: exp.Expr = node
        elif isinstance(node, exp.Lateral):
            func = node.this
            if not isinstance(func, exp.Func):
                return
            holder = node
        else:  # exp.Unnest directly in FROM
            if not isinstance(node.parent, (exp.From, exp.Join)):
                return
            func = holder = node
        alias = holder.args.get("alias")
        if isinstance(alias, exp.TableAlias) and alias.columns:
            return
        alias_name = alias.name if isinstance(alias, exp.TableAlias) and alias.name else None
        names = _function_columns(func, alias_name)
        if names is None:
            return
        ordinality = holder.args.get("ordinality") or (
            isinstance(func, exp.Unnest) and func.args.get("offset")
        )
        if isinstance(func, exp.Unnest):
            if ordinality is True:
                func.set("offset", exp.to_identifier("ordinality"))
            names_ids = [exp.to_identifier(n) for n in names]
        else:
            names_ids = [exp.to_identifier(n) for n in names]
            if ordinality:
                names_ids.append(exp.to_identifier("ordinality"))
                holder.set("ordinality", None)
        new_alias = exp.TableAlias(
            this=exp.to_identifier(alias_name or _function_name(func)), columns=names_ids
        )
        holder.set("alias", new_alias)


# -- evaluation ----------------------------------------------------------------------------------------------


class _Evaluator:
    """Walks a (qualified) statement scope by scope and propagates lineage."""

    def __init__(self, catalog: Catalog, depth: int = 0) -> None:
        self.catalog = catalog
        self.depth = depth
        self._names: dict[type, tuple[str, ...]] = {}

    # statement level

    def statement(
        self, tree: exp.Expr, text: str | None = None, fresh: Callable[[], exp.Expr] | None = None
    ) -> _Cols | None:
        """Output columns of a statement; None when it returns no rows. ``tree`` is modified.

        ``text`` is the statement's SQL, scanned for calls of user-defined functions that sqlglot turned into
        something else (a typed node under another name); None generates it from the tree. ``fresh`` gives an
        unmodified copy of the tree for the path without qualify (cheaper than copying up front).
        """
        if text is None:
            text = tree.sql(DIALECT)
        cols = self._statement(tree, fresh)
        if cols is None or not self.catalog.functions:
            return cols
        hidden = _called_user_functions(text, self.catalog)
        hidden -= {_function_name(f) for f in tree.find_all(exp.Anonymous)}
        if not hidden:
            return cols
        problem = _unknown(
            f"user-defined function {sorted(hidden)[0]}() called where lineage cannot place it"
        )
        return _Cols.make(
            [(name, _join([lin, problem])) for name, lin in cols], exact=cols.exact, alts=cols.alts
        )

    def _statement(self, tree: exp.Expr, fresh: Callable[[], exp.Expr] | None) -> _Cols | None:
        if isinstance(tree, exp.Select) and tree.args.get("into"):
            return None
        if isinstance(tree, (exp.Insert, exp.Update, exp.Delete)) and not tree.args.get("returning"):
            return None
        if isinstance(tree, exp.Merge) and not tree.args.get("returning"):
            return None
        if isinstance(tree, _NO_ROWS):
            return None
        if isinstance(tree, exp.Command):
            return _Cols.make(
                [("*", _unknown(f"{tree.name} statement: sqlglot could not parse it"))], exact=False
            )
        if not isinstance(tree, (exp.Query, exp.Values, exp.Insert, exp.Update, exp.Delete)):
            return _Cols.make(
                [("*", _unknown(f"{type(tree).__name__} statement is not modelled"))], exact=False
            )
        if fresh is None:
            original = tree.copy()
            fresh = original.copy
        prepared = _Prepared(tree, self.catalog)
        try:
            qualified = qualify(
                prepared.tree,
                dialect=DIALECT,
                schema=self._schema(prepared.tables),
                expand_alias_refs=False,
                validate_qualify_columns=False,
                quote_identifiers=False,
                identify=False,
            )
        except Exception:
            qualified = _Prepared(fresh(), self.catalog).tree
        return self.query(qualified, None, {})

    def _schema(self, tables: dict[tuple[str, str], TableInfo]) -> MappingSchema:
        """A MappingSchema of just the referenced relations, memoized per catalog by relation set."""
        key = ("schema", frozenset(tables))
        memo = self.catalog.memo
        schema = memo.get(key)
        if schema is None:
            mapping: dict[str, dict[str, dict[str, str]]] = {}
            for (nsp, name), info in tables.items():
                mapping.setdefault(nsp, {})[name] = {c.name: "text" for c in info.columns}
            schema = MappingSchema(mapping, dialect=DIALECT, normalize=False)
            if len(memo) > MEMO_LIMIT:
                for stale in [k for k in memo if k[0] == "schema"]:
                    memo.pop(stale, None)
            memo[key] = schema
        return schema

    # queries

    def query(self, node: exp.Expr, outer: _Scope | None, env: dict[str, _Cols]) -> _Cols:
        """Output columns of any query-shaped node."""
        if isinstance(node, exp.Select):
            return self._select(node, outer, env)
        if isinstance(node, exp.SetOperation):
            return self._set_operation(node, outer, env)
        if isinstance(node, (exp.Subquery, exp.Paren)):
            inner_env = self._with(node, outer, env)
            return self.query(node.this, outer, inner_env)
        if isinstance(node, exp.Values):
            return self._values(node, outer, env)
        if isinstance(node, (exp.Insert, exp.Update, exp.Delete)):
            return self._dml(node, outer, env)
        return _Cols.make([("*", _unknown(f"{type(node).__name__} query is not modelled"))], exact=False)

    def _with(self, node: exp.Expr, outer: _Scope | None, env: dict[str, _Cols]) -> dict[str, _Cols]:
        with_ = node.args.get("with_")
        if not isinstance(with_, exp.With):
            return env
        env = dict(env)
        ctes = [(c.alias, c) for c in with_.expressions]
        if not with_.args.get("recursive"):
            for name, cte in ctes:
                env[name] = self._rename(self.query(cte.this, outer, env), cte)
            return env
        current = {name: _bottom() for name, _ in ctes}
        for _ in range(MAX_FIXPOINT_ROUNDS):
            round_env = {**env, **current}
            changed = False
            for name, cte in ctes:
                cols = self._rename(self.query(cte.this, outer, round_env), cte)
                merged = _merge(current[name], cols)
                if not merged.same(current[name]):
                    changed = True
                current[name] = merged
                round_env[name] = merged
            if not changed:
                env.update(current)
                return env
        for name, _ in ctes:
            env[name] = _Cols.make([("*", _unknown(f"recursive CTE {name}: no fixed point"))], exact=False)
        return env

    def _select(self, sel: exp.Select, outer: _Scope | None, env: dict[str, _Cols]) -> _Cols:
        env = self._with(sel, outer, env)
        scope = _Scope(outer)
        from_ = sel.args.get("from_")
        if isinstance(from_, exp.From):
            self._add_item(from_.this, scope, outer, env)
        for join in sel.args.get("joins") or ():
            self._add_join(join, scope, outer, env)
        scope.windows = list(sel.args.get("windows") or ())
        return self._projections(sel.expressions, scope, env)

    def _projections(self, projections: Sequence[exp.Expr], scope: _Scope, env: dict[str, _Cols]) -> _Cols:
        out = _Cols()
        for proj in projections:
            if isinstance(proj, exp.Star):
                expanded = self._expand_star(scope, None)
            elif isinstance(proj, exp.Column) and isinstance(proj.this, exp.Star):
                expanded = self._expand_star(scope, proj.table)
            elif isinstance(proj, exp.Dot) and isinstance(proj.expression, exp.Star):
                expanded = self._expand_composite(proj.this, scope, env)
            else:
                name = _output_name(proj)
                if proj.alias_or_name != name:
                    out.alts[len(out)] = proj.alias_or_name
                out.append((name, self.expr(proj, scope, env)))
                continue
            if expanded is None:
                out.exact = False
                out.append(("*", _unknown("cannot expand * over a source with unknown columns")))
            else:
                out.extend(expanded)
        return out

    def _expand_star(self, scope: _Scope, table: str | None) -> list[tuple[str, Lin]] | None:
        if table:
            src = scope.find(table)
            return list(src.columns) if src is not None and src.columns is not None else None
        if scope.using or not scope.sources:
            return None
        out: list[tuple[str, Lin]] = []
        for src in scope.sources.values():
            if src.columns is None:
                return None
            out.extend(src.columns)
        return out

    def _expand_composite(
        self, node: exp.Expr, scope: _Scope, env: dict[str, _Cols]
    ) -> list[tuple[str, Lin]] | None:
        """``(c).*`` / ``(c.*).*``: the columns of FROM item c; other ``(expr).*`` have an unknown count."""
        inner = node.this if isinstance(node, exp.Paren) else node
        if isinstance(inner, exp.TableColumn):
            alias = inner.name
        elif isinstance(inner, exp.Column) and isinstance(inner.this, exp.Star):
            alias = inner.table
        elif isinstance(inner, exp.Column) and not inner.table:
            alias = inner.name  # a whole-row reference only if no FROM item has a column of that name
            level: _Scope | None = scope
            while level is not None:
                if any(src.certainly_has(alias) is not False for src in level.sources.values()):
                    return None
                level = level.parent
        else:
            return None
        src = scope.find(alias)
        return list(src.columns) if src is not None and src.columns is not None else None

    def _set_operation(self, node: exp.SetOperation, outer: _Scope | None, env: dict[str, _Cols]) -> _Cols:
        env = self._with(node, outer, env)
        left = self.query(node.left, outer, env)
        right = self.query(node.right, outer, env)
        if left.bottom:
            return right
        if right.bottom:
            return left
        if not (left.exact and right.exact) or len(left) != len(right):
            lin = _join([left.union_lin(), right.union_lin(), _unknown("set operation branches differ")])
            return _Cols.make([("*", lin)], exact=False)
        return _Cols.make(
            ((ln, _join([ll, rl])) for (ln, ll), (_, rl) in zip(left, right, strict=True)), alts=left.alts
        )

    def _values(self, node: exp.Values, outer: _Scope | None, env: dict[str, _Cols]) -> _Cols:
        scope = _Scope(outer)
        rows = [r.expressions if isinstance(r, exp.Tuple) else [r] for r in node.expressions]
        width = max((len(r) for r in rows), default=0)
        if any(len(r) != width for r in rows):
            return _Cols.make([("*", _unknown("VALUES rows differ in length"))], exact=False)
        cols = _Cols.make(
            (f"column{i + 1}", _join(self.expr(r[i], scope, env) for r in rows)) for i in range(width)
        )
        return self._rename(cols, node)

    def _dml(self, node: exp.Expr, outer: _Scope | None, env: dict[str, _Cols]) -> _Cols:
        """RETURNING: target columns plus what the statement writes into them, plus FROM / USING items."""
        env = self._with(node, outer, env)
        target = node.this
        insert_columns: list[str] | None = None
        if isinstance(target, exp.Schema):
            insert_columns = [i.name for i in target.expressions if isinstance(i, exp.Identifier)]
            target = target.this
        scope = _Scope(outer)
        if not isinstance(target, exp.Table):
            return _Cols.make([("*", _unknown("DML target not understood"))], exact=False)
        target_src = self._add_item(target, scope, outer, env)
        written: dict[str, list[Lin]] = {}
        if isinstance(node, exp.Update):
            from_ = node.args.get("from_")
            if isinstance(from_, exp.From):
                self._add_item(from_.this, scope, outer, env)
            for join in node.args.get("joins") or ():
                self._add_join(join, scope, outer, env)
            self._assignments(node.expressions, scope, env, written)
        elif isinstance(node, exp.Delete):
            for item in node.args.get("using") or ():
                self._add_item(item, scope, outer, env)
        elif isinstance(node, exp.Insert):
            self._insert_values(node, target_src, insert_columns, outer, env, written)
            conflict = node.args.get("conflict")
            if conflict is not None and conflict.expressions:
                excluded = _Source(
                    "excluded",
                    [(c, _join([lin, *written.get(c, [])])) for c, lin in target_src.columns or []]
                    if target_src.columns is not None
                    else None,
                    note="excluded row of an unknown relation",
                )
                conflict_scope = _Scope(outer)
                conflict_scope.sources = dict(scope.sources)
                conflict_scope.add(excluded)
                self._assignments(conflict.expressions, conflict_scope, env, written)
        if target_src.columns is not None and written:
            target_src.columns = [(c, _join([lin, *written.get(c, [])])) for c, lin in target_src.columns]
        returning = node.args.get("returning")
        return self._projections(returning.expressions if returning else [], scope, env)

    def _assignments(
        self,
        assignments: Sequence[exp.Expr],
        scope: _Scope,
        env: dict[str, _Cols],
        written: dict[str, list[Lin]],
    ) -> None:
        for eq in assignments:
            if not isinstance(eq, exp.EQ):
                written.setdefault("*", []).append(_unknown("assignment not understood"))
                continue
            lin = self.expr(eq.expression, scope, env)
            targets = eq.this.expressions if isinstance(eq.this, exp.Tuple) else [eq.this]
            for target in targets:
                written.setdefault(_assigned_column(target), []).append(lin)
        if "*" in written:  # an assignment we could not read: every column may have been written
            for name in list(written):
                written[name].extend(written["*"])

    def _insert_values(
        self,
        node: exp.Insert,
        target_src: _Source,
        insert_columns: list[str] | None,
        outer: _Scope | None,
        env: dict[str, _Cols],
        written: dict[str, list[Lin]],
    ) -> None:
        source = node.expression
        if source is None:
            return
        cols = self.query(source, outer, env)
        names = insert_columns or [c for c, _ in target_src.columns or []]
        if not cols.exact or target_src.columns is None:
            lin = _with_reason(cols.union_lin(), "inserted values")
            for name in names or ["*"]:
                written.setdefault(name, []).append(lin)
            if target_src.columns is not None and not insert_columns:
                for name, _ in target_src.columns:
                    written.setdefault(name, []).append(lin)
            return
        for name, (_, lin) in zip(names, cols, strict=False):
            written.setdefault(name, []).append(lin)

    # FROM items

    def _add_join(self, join: exp.Join, scope: _Scope, outer: _Scope | None, env: dict[str, _Cols]) -> None:
        if join.args.get("using") or join.args.get("method"):
            scope.using = True
        self._add_item(join.this, scope, outer, env)

    def _add_item(
        self, item: exp.Expr, scope: _Scope, outer: _Scope | None, env: dict[str, _Cols]
    ) -> _Source:
        if (
            isinstance(item, exp.Subquery)
            and isinstance(item.this, (exp.Table, exp.Subquery))
            and not item.alias
        ):
            source = self._add_item(item.this, scope, outer, env)  # (a JOIN b): members visible by name
        else:
            source = self._item_source(item, scope, outer, env)
            scope.add(source)
        for join in item.args.get("joins") or ():  # comma lists and parenthesized joins nest here
            self._add_join(join, scope, outer, env)
        return source

    def _item_source(
        self, item: exp.Expr, scope: _Scope, outer: _Scope | None, env: dict[str, _Cols]
    ) -> _Source:
        alias_node = item.args.get("alias")
        alias = alias_node.name if isinstance(alias_node, exp.TableAlias) and alias_node.name else ""
        if isinstance(item, exp.Table):
            if item.args.get("rows_from") or isinstance(item.this, exp.Func):
                funcs = item.args.get("rows_from") or [item.this]
                lin = _join(self.expr(f, scope, env) for f in funcs)
                if item.this is not None and item.args.get("db") and item.db != "pg_catalog":
                    lin = _join(
                        [lin, _unknown(f"schema-qualified function {item.db}.{_function_name(item.this)}")]
                    )
                return self._function_source(alias or _function_name(item.this or funcs[0]), item, lin)
            return self._relation_source(item, alias or item.name, env)
        if isinstance(item, exp.Subquery):
            inner = item.this
            if isinstance(inner, exp.Table):  # (a JOIN b) AS j: qualify turns it into a derived table
                return _Source(alias, None, note=f"join construct {alias} not expanded")
            cols = self.query(item, outer, env)
            return self._derived_source(alias, cols, item)
        if isinstance(item, exp.Lateral):
            inner = item.this
            if isinstance(inner, exp.Func):
                return self._function_source(
                    alias or _function_name(inner), item, self.expr(inner, scope, env)
                )
            cols = self.query(inner, scope, env)
            return self._derived_source(alias, cols, item)
        if isinstance(item, exp.Unnest):
            lin = _join(self.expr(e, scope, env) for e in item.expressions)
            src = self._function_source(alias or "unnest", item, lin)
            offset = item.args.get("offset")
            if src.columns is not None and isinstance(offset, exp.Identifier):
                src.columns.append((offset.name, _EMPTY))
            return src
        if isinstance(item, exp.Values):
            return self._derived_source(alias, self._values(item, outer, env), None)
        return _Source(
            alias or type(item).__name__, None, note=f"FROM item {type(item).__name__} not modelled"
        )

    def _relation_source(self, table: exp.Table, alias: str, env: dict[str, _Cols]) -> _Source:
        db = table.db
        name = table.name
        if not db:
            cols = env.get(name)
            if cols is None:
                return _Source(alias, None, note=f"relation {name} is not resolved")
            return self._derived_source(alias, cols, table)
        missing = table.meta.get("bastion_missing")
        info = self.catalog.get(db, name)
        if info is None:
            return _Source(alias, None, note=missing or f"relation {db}.{name} is not in the catalog")
        cols = list(zip(info.column_names, self._table_lineage(info), strict=True))
        source = self._derived_source(alias, _Cols.make(cols), table)
        source.system_columns = info.relkind in ("r", "p", "m")
        return source

    def _derived_source(self, alias: str, cols: _Cols, owner: exp.Expr | None) -> _Source:
        cols = self._rename(cols, owner)
        if cols.bottom:
            return _Source(alias, None, default=_EMPTY)
        if not cols.exact:
            return _Source(alias, None, default=cols.union_lin(), note=f"{alias}: column count unknown")
        return _Source(alias, list(cols), alts=cols.alts)

    def _function_source(self, alias: str, owner: exp.Expr, lin: Lin) -> _Source:
        names = _alias_columns(owner)
        if names:
            return _Source(alias, [(n, lin) for n in names], default=lin)
        return _Source(alias, None, default=lin, note=f"function {alias}: output columns unknown")

    @staticmethod
    def _rename(cols: _Cols, owner: exp.Expr | None) -> _Cols:
        names = _alias_columns(owner)
        if not names or not cols.exact:
            return cols
        renamed = [(names[i] if i < len(names) else n, lin) for i, (n, lin) in enumerate(cols)]
        return _Cols.make(renamed, alts={i: a for i, a in cols.alts.items() if i >= len(names)})

    # base tables and views

    def _table_lineage(self, info: TableInfo) -> list[Lin]:
        memo = self.catalog.memo
        key = ("lineage", info.oid)
        cached = memo.get(key)
        if isinstance(cached, list):
            return cached
        if info.is_view:
            if cached == "busy" or self.depth >= MAX_VIEW_DEPTH:
                return [_unknown(f"view {info.qualified}: nesting too deep")] * len(info.columns)
            memo[key] = "busy"
            try:
                lins = self._view_lineage(info)
            finally:
                memo.pop(key, None)
        else:
            lins = self._stored_lineage(info)
        memo[key] = lins
        return lins

    def _stored_lineage(self, info: TableInfo) -> list[Lin]:
        """A stored column is itself, the same column of every ancestor and descendant in its partition or
        inheritance tree (the same rows are read through either), and for a generated column also the
        columns its expression reads."""
        related = [*self.catalog.ancestors(info), *self.catalog.descendants(info)]
        names = info.column_names
        lins: list[Lin] = []
        for col in info.columns:
            pairs = {(info.qualified, col.name)}
            pairs.update((t.qualified, col.name) for t in related if col.name in t.column_names)
            reasons: tuple[str, ...] = ()
            if col.generated is not None:
                reads = _generated_reads(col.generated, names)
                pairs.update((info.qualified, n) for n in reads)
                reasons = (f"generated from {', '.join(sorted(reads))}",)
            lins.append((frozenset(pairs), reasons))
        return lins

    def _view_lineage(self, info: TableInfo) -> list[Lin]:
        via = f"via view {info.qualified}"
        n = len(info.columns)
        if not info.definition:
            return [_unknown(f"view {info.qualified}: no definition")] * n
        try:
            trees = [t for t in sqlglot.parse(info.definition, dialect=DIALECT) if t is not None]
            if len(trees) != 1:
                return [_unknown(f"view {info.qualified}: definition not understood")] * n
            definition = info.definition
            cols = _Evaluator(self.catalog, self.depth + 1).statement(
                trees[0], definition, lambda: sqlglot.parse_one(definition, dialect=DIALECT)
            )
        except RecursionError:
            raise
        except Exception as err:
            return [_unknown(f"view {info.qualified}: {type(err).__name__}")] * n
        if cols is None or not cols.exact or len(cols) != n:
            return [_unknown(f"view {info.qualified}: columns do not match its definition")] * n
        return [_with_reason(lin, via) for _, lin in cols]

    # expressions

    def expr(self, node: exp.Expr, scope: _Scope, env: dict[str, _Cols]) -> Lin:
        """Union of the lineage of everything an expression mentions."""
        found: list[Lin] = []
        stack = [node]
        while stack:
            n = stack.pop()
            cls = type(n)
            if cls is exp.Column:
                found.append(self._column(n, scope, env))
                continue
            if cls is exp.Star:
                continue
            if cls is exp.Collate:  # the collation name is not data
                stack.append(n.this)
                continue
            if cls is exp.TableColumn:  # qualify's spelling of a whole-row reference
                src = scope.find(n.name)
                found.append(src.whole() if src is not None else _unknown(f"{n.name}: no FROM item"))
                continue
            if cls is exp.Identifier:
                if not _benign_identifier(n):
                    found.append(_unknown(f"identifier {n.name} in an unexpected place"))
                continue
            if isinstance(n, (exp.Query, exp.Values)) or cls in (exp.Insert, exp.Update, exp.Delete):
                found.append(self.query(n, scope, env).union_lin())
                continue
            if cls is exp.Window and isinstance(n.args.get("alias"), exp.Identifier):
                found.append(self._named_windows(scope, env))  # OVER w: w's PARTITION BY / ORDER BY count
            if isinstance(n, exp.Func):
                problem = self._function_problem(n)
                if problem:
                    found.append(_unknown(problem))
                    continue
            stack.extend(n.iter_expressions())
        if not found:
            return _EMPTY
        return found[0] if len(found) == 1 else _join(found)

    def _named_windows(self, scope: _Scope, env: dict[str, _Cols]) -> Lin:
        parts: list[Lin] = []
        for window in scope.windows:
            for key in ("partition_by", "order", "spec"):
                value = window.args.get(key)
                for item in value if isinstance(value, list) else [value] if value is not None else []:
                    parts.append(self.expr(item, scope, env))
        return _join(parts)

    def _column(self, col: exp.Column, scope: _Scope, env: dict[str, _Cols]) -> Lin:
        table = col.table
        if isinstance(col.this, exp.Star):
            src = scope.find(table) if table else None
            return src.whole() if src is not None else _unknown(f"{table}.* does not name a FROM item")
        name = col.name
        if table:
            src = scope.find(table)
            if src is None:
                return _unknown(f"{table}.{name}: no FROM item {table}")
            lin = src.lookup(name)
            if lin is None:
                lin = _unknown(f"{table} has no column {name} (function-call notation?)")
            if col.meta.get("bastion_bare"):
                # qualify placed a bare name: union with our own reading of PostgreSQL's rules, so that a
                # sqlglot mistake can only widen the answer
                lin = _join([lin, self._unqualified(col, name, scope)])
            return lin
        return self._unqualified(col, name, scope)

    def _unqualified(self, col: exp.Column, name: str, scope: _Scope) -> Lin:
        level: _Scope | None = scope
        while level is not None:
            hits: list[Lin] = []
            for src in level.sources.values():
                has = src.certainly_has(name)
                if has is None:
                    hits.append(src.lookup(name) or _unknown(src.note))
                elif has:
                    hits.append(src.lookup(name) or _EMPTY)
            if len(hits) == 1:
                return hits[0]
            if hits:
                return _join(hits, f"{name}: {len(hits)} candidate sources, union taken")
            level = level.parent
        src = scope.find(name)
        if src is not None:
            return src.whole()
        ident = col.this
        if name in _SQL_VALUE_WORDS and isinstance(ident, exp.Identifier) and not ident.quoted:
            return _EMPTY
        return _unknown(f"column {name} cannot be resolved")

    def _function_problem(self, func: exp.Func) -> str | None:
        if isinstance(func, exp.Anonymous):
            names: tuple[str, ...] = (_function_name(func),)
        else:
            cls = type(func)
            names = self._names.get(cls) or ()
            if not names:
                names = tuple({n.lower() for n in cls.sql_names()} | {func.sql_name().lower()})
                self._names[cls] = names
        for name in names:
            if self.catalog.is_user_function(name):
                return f"user-defined function {name}() may read any table"
            if name in _OPAQUE_FUNCTIONS:
                return f"{name}() reads data around column lineage"
        if (
            isinstance(func, exp.Anonymous)
            and self.catalog.builtin_functions
            and not self.catalog.is_builtin_function(names[0])
            and names[0] not in _SYNTAX_FUNCTIONS
        ):
            return f"unknown function {names[0]}()"
        return None


_CALL = re.compile(r'(?:"((?:[^"]|"")+)"|([^\W\d][\w$]*))\s*\(')


def _called_user_functions(text: str, catalog: Catalog) -> set[str]:
    """Names followed by "(" anywhere in the text that are user-defined functions (over-approximate)."""
    out: set[str] = set()
    for quoted, bare in _CALL.findall(text):
        name = fold_name(quoted.replace('""', '"'), quoted=True) if quoted else fold_name(bare)
        if catalog.is_user_function(name):
            out.add(name)
    return out


def _benign_identifier(ident: exp.Identifier) -> bool:
    """Identifiers that name no data: aliases, function names, schema prefixes, field names, type names."""
    parent = ident.parent
    key = ident.arg_key
    if isinstance(parent, (exp.Alias, exp.TableAlias, exp.DataType, exp.Anonymous, exp.ColumnDef)):
        return True
    if isinstance(parent, exp.XMLElement):
        return key == "this"  # the element name
    if isinstance(parent, exp.Dot):
        # schema.func(...) prefix, or the field name in (row).field: the data is on the other side
        return key == "expression" or isinstance(parent.expression, exp.Func)
    if isinstance(parent, exp.Window):
        return key == "alias"
    return False


def _generated_reads(expression: str, columns: Sequence[str]) -> set[str]:
    """Columns a generation expression reads (every column of the table when it cannot be parsed)."""
    try:
        tree = sqlglot.parse_one(expression, dialect=DIALECT)
    except Exception:
        return set(columns)
    _fold_tree(tree)
    reads = {c.name for c in tree.find_all(exp.Column)}
    return reads & set(columns) if reads <= set(columns) else set(columns)


def _assigned_column(target: exp.Expr) -> str:
    """The column an assignment target writes: ``a``, ``a[1]``, ``a.field`` all write column a."""
    col = target if isinstance(target, exp.Column) else target.find(exp.Column)
    if not isinstance(col, exp.Column):
        return "*"
    return col.parts[0].name  # SET never names the table: a qualified-looking target is column.field


def _merge(old: _Cols, new: _Cols) -> _Cols:
    """Positional union for the recursive-CTE fixed point."""
    if old.bottom:
        return new
    if new.bottom:
        return old
    if not (old.exact and new.exact) or len(old) != len(new):
        return _Cols.make([("*", _join([old.union_lin(), new.union_lin()]))], exact=False)
    return _Cols.make(((n, _join([a, b])) for (n, a), (_, b) in zip(old, new, strict=True)), alts=new.alts)


def _alias_columns(owner: exp.Expr | None) -> list[str]:
    """Column names of ``owner``'s ``AS alias(a, b)``, as written (recorded before qualify rewrites them)."""
    if owner is None:
        return []
    recorded = owner.meta.get("bastion_alias_columns")
    if recorded is not None:
        return recorded
    alias = owner.args.get("alias")
    if not isinstance(alias, exp.TableAlias):
        return []
    return [c.name for c in alias.columns]


def _output_name(proj: exp.Expr) -> str:
    """PostgreSQL's name for a result column (FigureColname, roughly); cosmetic only."""
    if isinstance(proj, exp.Alias):
        if not proj.this.meta.get("bastion_unnamed"):
            return proj.alias
        proj = proj.this
    while isinstance(proj, exp.Paren):
        proj = proj.this
    if isinstance(proj, exp.Column):
        return proj.name
    if isinstance(proj, exp.Cast):
        inner = _output_name(proj.this)
        return inner if inner != "?column?" else proj.to.sql(DIALECT).lower()
    if isinstance(proj, exp.Case):
        return "case"
    if isinstance(proj, exp.Subquery) and isinstance(proj.this, exp.Select) and proj.this.expressions:
        return _output_name(proj.this.expressions[0])
    if isinstance(proj, exp.Window):
        return _output_name(proj.this)
    if isinstance(proj, exp.Anonymous):
        return _function_name(proj)
    if isinstance(proj, exp.Func):
        match = _LEADING_CALL.match(proj.sql(DIALECT))
        return match.group(1).lower() if match else "?column?"
    return "?column?"


_LEADING_CALL = re.compile(r"([A-Za-z_][\w$]*)\s*\(")
