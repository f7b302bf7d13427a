"""SQL classification: parse with sqlglot (postgres dialect), walk the whole tree, never regex.

Each statement gets every class found anywhere in its tree (a writable CTE inside a SELECT is a write; a
dangerous function in a subquery is dangerous), and the strictest of them names it. What sqlglot does not
fully understand — its generic `Command` fallback, a parse error, a bare word it reads as a column — is
`unknown`, the strictest class, with a best guess at what it would have been as a second class so the
reason is useful. Classification never touches a database; the same input always gives the same answer,
so results are cached.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.tokens import Token, TokenType

from bastion.policy import functions
from bastion.policy.classes import SEVERITY, Classification, SqlClass

# sqlglot logs a warning for every Command fallback; we report those ourselves.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

DIALECT = sqlglot.Dialect.get_or_raise("postgres")

__all__ = ["SEVERITY", "Classification", "SqlClass", "classify", "split_statements", "statement_at"]


class _Findings:
    """Classes, reasons and facts gathered while walking one tree."""

    def __init__(self) -> None:
        self.classes: dict[SqlClass, list[str]] = {}
        self.warnings: list[str] = []
        self.read: set[str] = set()
        self.written: set[str] = set()
        self.opaque: set[str] = set()

    def add(self, sql_class: SqlClass, reason: str) -> None:
        reasons = self.classes.setdefault(sql_class, [])
        if reason not in reasons:
            reasons.append(reason)

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    def result(self, text: str, kind: str, tree: exp.Expression | None) -> Classification:
        if not self.classes:
            self.add(SqlClass.READ, "reads data")
        worst = max(self.classes, key=SEVERITY.__getitem__)
        ordered = sorted(self.classes, key=SEVERITY.__getitem__, reverse=True)
        reasons = tuple(reason for cls in ordered for reason in self.classes[cls])
        return Classification(
            text=text,
            sql_class=worst,
            classes=frozenset(self.classes),
            reasons=reasons,
            warnings=tuple(self.warnings),
            kind=kind,
            tables_read=frozenset(self.read),
            tables_written=frozenset(self.written),
            opaque_functions=frozenset(self.opaque),
            tree=tree,
        )


# ---------------------------------------------------------------- splitting


def statement_spans(sql: str) -> list[tuple[int, int]]:
    """(start, end) offsets of each statement in sql, end exclusive, the separating `;` excluded.

    Used by the editor to run "the statement under the cursor"; fragments with no code are left out.
    """
    try:
        tokens = DIALECT.tokenize(sql)
    except SqlglotError:
        return [(0, len(sql))] if sql.strip() else []
    spans: list[tuple[int, int]] = []
    start = 0
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            spans.append((start, token.start))
            start = token.end + 1
    spans.append((start, len(sql)))
    return [(a, b) for a, b in spans if _has_code(sql[a:b])]


def statement_at(sql: str, offset: int) -> str:
    """The statement containing offset (or the nearest one before it), stripped; "" when there is none."""
    spans = statement_spans(sql)
    chosen = None
    for start, end in spans:
        if start <= offset <= end or (chosen is None and offset < start):
            chosen = (start, end)
            break
        if end <= offset:
            chosen = (start, end)
    return sql[chosen[0] : chosen[1]].strip() if chosen else ""


def split_statements(sql: str) -> list[str]:
    """Split on top-level semicolons using sqlglot's tokenizer (strings, dollar quotes, comments respected).

    Returns the exact source slices, stripped, without empty statements. When the text cannot be tokenized
    it is returned whole: it will classify as unknown, and the server never sees a guess at its parts.
    """
    try:
        tokens = DIALECT.tokenize(sql)
    except SqlglotError:
        stripped = sql.strip()
        return [stripped] if stripped else []
    parts: list[str] = []
    start = 0
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            parts.append(sql[start : token.start])
            start = token.end + 1
    parts.append(sql[start:])
    return [part.strip() for part in parts if _has_code(part)]


def _has_code(text: str) -> bool:
    """False for whitespace- or comment-only fragments (what `SELECT 1; -- done` leaves behind)."""
    if not text.strip():
        return False
    try:
        return bool(DIALECT.tokenize(text))
    except SqlglotError:
        return True


def structure_key(text: str) -> tuple[tuple[str, str], ...]:
    """The statement's tokens with literal values blanked: statements that differ only in literals share it.

    Token types stay, so a quoted identifier never collides with a bare one. On a tokenizer error the
    whole text is the key.
    """
    try:
        tokens = DIALECT.tokenize(text)
    except SqlglotError:
        return (("TEXT", text),)
    return tuple(
        (token.token_type.name, "?" if token.token_type in _LITERALS else token.text) for token in tokens
    )


_LITERALS = frozenset({TokenType.STRING, TokenType.NUMBER, TokenType.NATIONAL_STRING, TokenType.BYTE_STRING,
                       TokenType.HEX_STRING, TokenType.BIT_STRING, TokenType.UNICODE_STRING,
                       TokenType.HEREDOC_STRING, TokenType.RAW_STRING})  # fmt: skip


# ---------------------------------------------------------------- classification


@lru_cache(maxsize=1024)
def classify(text: str) -> Classification:
    """Classify ONE statement (use split_statements first). Never raises."""
    try:
        return _classify(text)
    except RecursionError:
        return _unknown(text, "the statement is nested too deeply to analyse")
    except Exception as exc:  # a sqlglot bug must not become an allow
        return _unknown(text, f"the statement could not be analysed ({type(exc).__name__})")


def _unknown(text: str, reason: str, guess: tuple[SqlClass, str] | None = None) -> Classification:
    found = _Findings()
    found.add(SqlClass.UNKNOWN, reason)
    if guess is not None:
        found.add(*guess)
    return found.result(text, _first_word(text), None)


def _first_word(text: str) -> str:
    try:
        tokens = DIALECT.tokenize(text)
    except SqlglotError:
        return "UNKNOWN"
    return tokens[0].text.upper() if tokens else "EMPTY"


_STATEMENTS: tuple[type[exp.Expression], ...] = (
    exp.Select,
    exp.SetOperation,
    exp.Values,
    exp.Subquery,
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Merge,
    exp.Create,
    exp.Drop,
    exp.Alter,
    exp.TruncateTable,
    exp.Grant,
    exp.Revoke,
    exp.Set,
    exp.Transaction,
    exp.Commit,
    exp.Rollback,
    exp.Copy,
    exp.Comment,
    exp.Analyze,
)


# sqlglot's parser backtracks on nested ARRAY[...] constructors: each level doubles the time (20 levels take
# seconds, 30 would take hours). Real queries nest two or three; deeper ones are refused unparsed.
_MAX_ARRAY_NESTING = 6


def _misread(text: str) -> str | None:
    """Why sqlglot would misread this text, from its tokens, before parsing it; None when it would not.

    Cheap substring tests come first: this runs on every statement.
    """
    if '&"' in text or text.upper().count("ARRAY") > _MAX_ARRAY_NESTING:
        tokens = _words(text)
        for before, amp, after in zip(tokens, tokens[1:], tokens[2:], strict=False):
            if (
                before.token_type == TokenType.VAR
                and before.text in {"U", "u"}
                and amp.token_type == TokenType.AMP
                and amp.start == before.end + 1
                and after.token_type == TokenType.IDENTIFIER
                and after.start == amp.end + 1
            ):
                # PostgreSQL reads U&"pg_read_fil\0065" as the name pg_read_file; sqlglot reads `U & "…"`.
                return 'a Unicode-escaped identifier (U&"…") that cannot be checked'
        depth, stack = 0, []
        for previous, token in zip([None, *tokens], tokens, strict=False):
            if token.token_type in {TokenType.L_BRACKET, TokenType.L_PAREN}:
                is_array = (
                    token.token_type == TokenType.L_BRACKET
                    and previous is not None
                    and previous.text.upper() == "ARRAY"
                )
                stack.append(is_array)
                depth += is_array
                if depth > _MAX_ARRAY_NESTING:
                    return f"ARRAY[...] nested more than {_MAX_ARRAY_NESTING} deep"
            elif token.token_type in {TokenType.R_BRACKET, TokenType.R_PAREN} and stack:
                depth -= stack.pop()
    return None


def _classify(text: str) -> Classification:
    if not text.strip():
        return _unknown(text, "empty statement")
    misread = _misread(text)
    if misread is not None:
        return _unknown(text, f"the statement contains {misread}", _guess(text))
    try:
        trees = sqlglot.parse(text, dialect=DIALECT)
    except SqlglotError:
        return _unknown(text, "sqlglot cannot parse this statement", _guess(text))
    trees = [tree for tree in trees if tree is not None]
    if len(trees) != 1:
        return _unknown(text, "expected exactly one statement")
    tree = trees[0]
    if isinstance(tree, exp.Command):
        return _command(text, tree)
    if not isinstance(tree, _STATEMENTS):
        return _unknown(text, "sqlglot does not recognise this as a statement", _guess(text))
    tree.meta["source"] = text  # what was typed, for the live-catalog checks (catalog_checks.shadowed_calls)
    found = _Findings()
    _walk(tree, found)
    return found.result(text, _kind(tree), tree)


def _kind(tree: exp.Expression) -> str:
    if isinstance(tree, exp.Subquery | exp.SetOperation):
        return "SELECT"
    if isinstance(tree, exp.TruncateTable):
        return "TRUNCATE"
    if isinstance(tree, exp.Transaction):
        return "BEGIN"
    return tree.key.upper()


def _table_name(table: exp.Table) -> str:
    """schema.table in lower case for unquoted names; unqualified names are assumed to be in public
    (session control, which could change search_path, is never allowed)."""
    parts = [
        part for part in (table.args.get("catalog"), table.args.get("db"), table.this) if part is not None
    ]
    names = []
    for part in parts:
        if isinstance(part, exp.Identifier):
            names.append(part.this if part.quoted else part.this.lower())
        else:
            names.append(part.sql(dialect=DIALECT).lower())
    if len(names) == 1:
        names.insert(0, "public")
    return ".".join(names[-2:])


def _walk(tree: exp.Expression, found: _Findings) -> None:
    """One pass over every node; handlers are looked up by node type (this runs on every statement)."""
    tables: list[exp.Table] = []
    ctes: set[str] = set()
    for node in tree.walk():
        kind = _kind_of(type(node))
        if kind is None:
            continue
        if kind == "table":
            if isinstance(node.this, exp.Identifier):
                tables.append(node)  # type: ignore[arg-type]
        elif kind == "cte":
            ctes.add(node.alias_or_name.lower())
        else:
            _HANDLERS[kind](node, found)
    for table in tables:
        name = table.name if table.this.quoted else table.name.lower()
        if not table.args.get("db") and name in ctes:
            continue
        found.read.add(_table_name(table))


def _select(node: exp.Expression, found: _Findings) -> None:
    if node.args.get("into"):
        found.add(SqlClass.WRITE, "SELECT INTO creates and fills a table")
        found.add(SqlClass.DDL, "SELECT INTO creates a table")
        target = node.args["into"].this
        if isinstance(target, exp.Table):
            found.written.add(_table_name(target))


def _drop(node: exp.Expression, found: _Findings) -> None:
    kind = str(node.args.get("kind") or "").upper()
    if kind == "DATABASE":
        found.add(SqlClass.DANGEROUS, "DROP DATABASE")
    else:
        found.add(SqlClass.DDL, f"DROP {kind}".strip())
    found.warn(f"DROP {kind}: the object and its data are gone".replace("  ", " "))


def _truncate(node: exp.Expression, found: _Findings) -> None:
    found.add(SqlClass.WRITE, "TRUNCATE removes every row")
    found.warn("TRUNCATE removes every row")
    for table in node.expressions:
        if isinstance(table, exp.Table):
            found.written.add(_table_name(table))


def _fixed(sql_class: SqlClass, reason: str) -> Callable[[exp.Expression, _Findings], None]:
    def handler(_node: exp.Expression, found: _Findings) -> None:
        found.add(sql_class, reason)

    return handler


_HANDLERS: dict[str, Callable[[Any, _Findings], None]] = {
    "write": lambda node, found: _write(node, found),
    "select": _select,
    "lock": _fixed(SqlClass.WRITE, "FOR UPDATE/SHARE takes row locks"),
    "create": lambda node, found: _create(node, found),
    "drop": _drop,
    "alter": lambda node, found: found.add(
        SqlClass.DDL, f"ALTER {str(node.args.get('kind') or '').upper()}".strip()
    ),
    "truncate": _truncate,
    "grant": lambda node, found: found.add(SqlClass.DCL, f"{node.key.upper()} changes privileges"),
    "set": _fixed(SqlClass.SESSION, "SET changes session state (search_path, role, read-only, timeouts)"),
    "transaction": _fixed(SqlClass.SESSION, "transaction control: each statement runs on its own"),
    "copy": lambda node, found: _copy(node, found),
    "comment": _fixed(SqlClass.DDL, "COMMENT ON changes the schema"),
    "analyze": _fixed(SqlClass.DDL, "ANALYZE updates planner statistics"),
    "function": lambda node, found: _function(node, found),
    "operator": lambda node, found: _operator(node, found),
    "attribute": lambda node, found: _attribute(node, found),
    # sqlglot reads PostgreSQL's `CREATE TABLE t AS EXECUTE p(1)` as an EXECUTE AS property: it runs a
    # prepared statement whose text the policy never sees.
    "execute": _fixed(SqlClass.SESSION, "EXECUTE runs a prepared statement the policy cannot see"),
    "command": lambda node, found: found.add(
        SqlClass.UNKNOWN, f"contains {node.name.upper()} that sqlglot does not parse"
    ),
}

# Node types in the order they are tested; a subclass takes its first matching entry.
_KINDS: tuple[tuple[type[exp.Expression] | tuple[type[exp.Expression], ...], str], ...] = (
    (exp.Table, "table"),
    (exp.CTE, "cte"),
    ((exp.Insert, exp.Update, exp.Delete, exp.Merge), "write"),
    (exp.Select, "select"),
    (exp.Lock, "lock"),
    (exp.Create, "create"),
    (exp.Drop, "drop"),
    (exp.Alter, "alter"),
    (exp.TruncateTable, "truncate"),
    ((exp.Grant, exp.Revoke), "grant"),
    (exp.Set, "set"),
    ((exp.Transaction, exp.Commit, exp.Rollback), "transaction"),
    (exp.Copy, "copy"),
    (exp.Comment, "comment"),
    (exp.Analyze, "analyze"),
    (exp.Func, "function"),
    (exp.Operator, "operator"),
    ((exp.Column, exp.Dot), "attribute"),
    (exp.ExecuteAsProperty, "execute"),
    (exp.Command, "command"),
)
_KIND_CACHE: dict[type, str | None] = {}


def _kind_of(node_type: type) -> str | None:
    try:
        return _KIND_CACHE[node_type]
    except KeyError:
        kind = next((name for types, name in _KINDS if issubclass(node_type, types)), None)
        _KIND_CACHE[node_type] = kind
        return kind


def _write(node: exp.Expression, found: _Findings) -> None:
    verb = node.key.upper()
    found.add(SqlClass.WRITE, f"{verb} writes data")
    target = node.this
    if isinstance(target, exp.Schema):
        target = target.this
    if isinstance(target, exp.Table):
        found.written.add(_table_name(target))
    if isinstance(node, exp.Update | exp.Delete) and not node.args.get("where"):
        found.warn(f"{verb} without WHERE affects every row")
    if node.parent is not None and node.find_ancestor(exp.CTE):
        found.add(SqlClass.WRITE, f"writable CTE: {verb} inside WITH")


def _create(node: exp.Create, found: _Findings) -> None:
    kind = str(node.args.get("kind") or "").upper()
    found.add(SqlClass.DDL, f"CREATE {kind}".strip())
    if kind == "DATABASE":  # as DROP DATABASE: a cluster-wide object, outside any one connection's policy
        found.add(SqlClass.DANGEROUS, "CREATE DATABASE")
    if kind in {"TABLE", "MATERIALIZED VIEW"} and isinstance(node.expression, exp.Query):
        found.add(SqlClass.WRITE, f"CREATE {kind} AS fills it with data")
    target = node.this
    if isinstance(target, exp.Schema):
        target = target.this
    if isinstance(target, exp.Table):
        found.written.add(_table_name(target))


def _copy(node: exp.Copy, found: _Findings) -> None:
    files = node.args.get("files") or []
    names = [f.name.upper() if isinstance(f, exp.Identifier) else None for f in files]
    loading = bool(node.args.get("kind"))
    if loading and names == ["STDIN"]:
        found.add(SqlClass.WRITE, "COPY FROM STDIN loads rows")
        if isinstance(node.this, exp.Table):
            found.written.add(_table_name(node.this))
    elif not loading and names == ["STDOUT"]:
        found.add(SqlClass.UNKNOWN, "COPY TO STDOUT would bypass result masking; use SELECT")
    else:
        found.add(SqlClass.DANGEROUS, "COPY to or from a server file or program")


def _qualifier(node: exp.Expression) -> str | None:
    """The schema a call is qualified with, as written (the last part of `db.schema.f`): in a select list
    `app.f(…)` is Dot(app, f(…)); in FROM, ROWS FROM and table functions it is Table(f(…), db=app)."""
    parent = node.parent
    if isinstance(parent, exp.Dot) and parent.expression is node:
        qualifier = parent.this
    elif isinstance(parent, exp.Table) and parent.this is node:
        qualifier = parent.args.get("db")
    else:
        return None
    while isinstance(qualifier, exp.Dot):
        qualifier = qualifier.expression
    if not isinstance(qualifier, exp.Expression):
        return None
    # Folded as PostgreSQL folds it: "PG_CATALOG" quoted is a schema anyone may create, not pg_catalog.
    ident = qualifier.this if isinstance(qualifier, exp.Column) else qualifier
    quoted = isinstance(ident, exp.Identifier) and bool(ident.args.get("quoted"))
    return qualifier.name if quoted else qualifier.name.lower()


# Typed nodes whose sqlglot name is not the PostgreSQL one (for reasons and the opaque set only).
_PG_NAMES: dict[type[exp.Expression], str] = {
    exp.ExplodingGenerateSeries: "generate_series",
    exp.GenerateSeries: "generate_series",
    exp.Explode: "unnest",
    exp.Unnest: "unnest",
}
# Names sqlglot parses into typed expressions: the built-ins the classifier already reads as plain reads
# when they are unqualified, so `pg_catalog.lower(…)` (which sqlglot leaves anonymous) is one too.
_TYPED_BUILTINS = frozenset(name.lower() for name in DIALECT.parser_class.FUNCTIONS)


def _function(node: exp.Func, found: _Findings) -> None:
    qualifier = _qualifier(node)
    if isinstance(node, exp.Anonymous):
        name, user_schema = functions.base_name(qualifier, node.name)
    else:
        name, user_schema = functions.base_name(qualifier, _PG_NAMES.get(type(node)) or node.sql_name())
    shown = f"{name}()"
    # Dangerous and session names count whatever the schema: extensions such as dblink live in any schema
    # (`public.dblink_exec`), and `shop.pg_catalog.pg_read_file` is pg_catalog's function under a
    # database-qualified name. A user function that happens to share such a name is held too: fail closed.
    if name in functions.DANGEROUS:
        found.add(SqlClass.DANGEROUS, f"calls {shown}")
    elif name in functions.SESSION:
        found.add(SqlClass.SESSION, f"calls {shown}, which changes session settings")
    elif user_schema:
        # `app.generate_series(…)` is app's function, whatever built-in it is named after.
        found.add(SqlClass.WRITE, f"calls {qualifier}.{shown}, a function outside pg_catalog: it may write")
        found.opaque.add(name)
    elif isinstance(node, exp.Anonymous) and not (
        functions.is_safe(name) or (qualifier is not None and name in _TYPED_BUILTINS)
    ):
        found.add(SqlClass.WRITE, f"calls {shown}, which is not a known built-in: it may write")
        found.opaque.add(name)
    elif name == "next_value_for":
        found.add(SqlClass.DANGEROUS, "NEXT VALUE FOR advances a sequence")


def _operator(node: exp.Operator, found: _Findings) -> None:
    """`OPERATOR(app.+)` runs whatever function app's operator is bound to; only pg_catalog's are built-in.
    (sqlglot keeps the operator as text such as `app.+`; operator symbols never contain a dot.)"""
    operator = str(node.args.get("operator") or "")
    if "." not in operator:
        return
    schema = operator.rsplit(".", 1)[0].rsplit(".", 1)[-1].strip()
    # sqlglot drops the quotes here, and a quoted "PG_CATALOG" is a schema anyone may create: only the
    # plain lower-case spelling counts as pg_catalog (an upper-case one is held: fail closed).
    if schema != "pg_catalog":
        found.add(
            SqlClass.WRITE, f"uses OPERATOR({operator}), a user-defined operator: its function may write"
        )
        found.opaque.add(f"operator {operator}")


def _attribute(node: exp.Expression, found: _Findings) -> None:
    """PostgreSQL's attribute notation calls a function: `('orders_id_seq'::regclass).nextval` is
    `nextval('orders_id_seq')` and `(t.path).pg_read_file` reads a server file, though sqlglot (like any
    reader without the catalog) sees a column. A qualified name that is a dangerous or session function
    is judged as the call. (A user-defined function called this way cannot be told from a column here.)"""
    if isinstance(node, exp.Column):
        if not node.args.get("table"):
            return  # a bare name is a column, never a call
        ident = node.this
    else:
        ident = node.expression
    if not isinstance(ident, exp.Identifier):
        return
    name = ident.this.lower()
    if name in functions.DANGEROUS:
        found.add(SqlClass.DANGEROUS, f"calls {name}() through attribute notation (x.{name})")
    elif name in functions.SESSION:
        found.add(SqlClass.SESSION, f"calls {name}() through attribute notation (x.{name})")


# ---------------------------------------------------------------- sqlglot's Command fallback

# First words of statements sqlglot only parses generically, with the class they would have.
_COMMAND_GUESS: dict[str, tuple[SqlClass, str]] = {
    "SET": (SqlClass.SESSION, "SET ROLE / SESSION AUTHORIZATION changes who the session is"),
    "RESET": (SqlClass.SESSION, "RESET changes session state"),
    "DISCARD": (SqlClass.SESSION, "DISCARD changes session state"),
    "START": (SqlClass.SESSION, "transaction control"),
    "SAVEPOINT": (SqlClass.SESSION, "transaction control"),
    "RELEASE": (SqlClass.SESSION, "transaction control"),
    "END": (SqlClass.SESSION, "transaction control"),
    "ABORT": (SqlClass.SESSION, "transaction control"),
    "PREPARE": (SqlClass.SESSION, "PREPARE/EXECUTE would hide the statement that runs"),
    "EXECUTE": (SqlClass.SESSION, "PREPARE/EXECUTE would hide the statement that runs"),
    "DEALLOCATE": (SqlClass.SESSION, "prepared statements are session state"),
    "DECLARE": (SqlClass.SESSION, "cursors are session state"),
    "FETCH": (SqlClass.SESSION, "cursors are session state"),
    "MOVE": (SqlClass.SESSION, "cursors are session state"),
    "CLOSE": (SqlClass.SESSION, "cursors are session state"),
    "LISTEN": (SqlClass.SESSION, "LISTEN/NOTIFY"),
    "UNLISTEN": (SqlClass.SESSION, "LISTEN/NOTIFY"),
    "NOTIFY": (SqlClass.DANGEROUS, "NOTIFY signals other sessions"),
    "DO": (SqlClass.DANGEROUS, "DO runs an anonymous code block"),
    "CALL": (SqlClass.DANGEROUS, "CALL runs a procedure"),
    "LOAD": (SqlClass.DANGEROUS, "LOAD loads a shared library into the server"),
    "LOCK": (SqlClass.WRITE, "LOCK TABLE takes table locks"),
    "VACUUM": (SqlClass.DDL, "VACUUM is maintenance"),
    "CLUSTER": (SqlClass.DDL, "CLUSTER rewrites a table"),
    "REINDEX": (SqlClass.DDL, "REINDEX rebuilds indexes"),
    "REFRESH": (SqlClass.WRITE, "REFRESH MATERIALIZED VIEW rewrites its data"),
    "CHECKPOINT": (SqlClass.DANGEROUS, "CHECKPOINT forces server I/O"),
    "SECURITY": (SqlClass.DDL, "SECURITY LABEL changes the schema"),
    "IMPORT": (SqlClass.DDL, "IMPORT FOREIGN SCHEMA creates tables"),
    "REASSIGN": (SqlClass.DCL, "REASSIGN OWNED changes ownership"),
}
_CREATE_ALTER_DROP_GUESS: dict[str, tuple[SqlClass, str]] = {
    "SYSTEM": (SqlClass.DANGEROUS, "ALTER SYSTEM changes the server configuration"),
    "EXTENSION": (SqlClass.DANGEROUS, "extensions run code inside the server"),
    "ROLE": (SqlClass.DCL, "roles are access control"),
    "USER": (SqlClass.DCL, "roles are access control"),
    "GROUP": (SqlClass.DCL, "roles are access control"),
    "DEFAULT": (SqlClass.DCL, "default privileges are access control"),
    "POLICY": (SqlClass.DCL, "row-level security policies are access control"),
    "DATABASE": (SqlClass.DANGEROUS, "databases"),
    "SERVER": (SqlClass.DANGEROUS, "foreign servers reach other systems"),
    "SUBSCRIPTION": (SqlClass.DANGEROUS, "subscriptions reach other systems"),
    "PUBLICATION": (SqlClass.DANGEROUS, "publications send data elsewhere"),
    "RULE": (SqlClass.DDL, "rules rewrite queries"),
    "TRIGGER": (SqlClass.DDL, "triggers run code on writes"),
    "EVENT": (SqlClass.DANGEROUS, "event triggers run code on DDL"),
    "LANGUAGE": (SqlClass.DANGEROUS, "procedural languages run code inside the server"),
}


def _words(text: str) -> list[Token]:
    try:
        return DIALECT.tokenize(text)
    except SqlglotError:
        return []


def _guess(text: str) -> tuple[SqlClass, str] | None:
    tokens = _words(text)
    if not tokens:
        return None
    first = tokens[0].text.upper()
    if first in {"CREATE", "ALTER", "DROP", "COMMENT", "GRANT", "REVOKE"}:
        words = [t.text.upper() for t in tokens[1:4]]
        for word in words:
            if word in _CREATE_ALTER_DROP_GUESS:
                return _CREATE_ALTER_DROP_GUESS[word]
        return (SqlClass.DDL, f"{first} changes the schema")
    return _COMMAND_GUESS.get(first)


def _command(text: str, tree: exp.Command) -> Classification:
    keyword = tree.name.upper()
    if keyword == "EXPLAIN":
        return _explain(text)
    if keyword == "SHOW":
        tokens = _words(text)
        if len(tokens) == 2 and tokens[1].text.replace("_", "").replace(".", "").isalnum():
            found = _Findings()
            found.add(SqlClass.READ, "SHOW reads a setting")
            return found.result(text, "SHOW", tree)
    guess = _guess(text)
    return _unknown(text, f"sqlglot parses {keyword} only generically, so it cannot be checked", guess)


_EXPLAIN_FLAGS = {"ANALYZE", "ANALYSE", "VERBOSE"}
_FALSE_WORDS = {"FALSE", "OFF", "0"}


def _explain(text: str) -> Classification:
    """EXPLAIN runs nothing, EXPLAIN ANALYZE runs its statement: classify the inner statement."""
    # The tokenizer swallows everything after a command keyword into one string: tokenize the rest anew.
    keyword = _words(text)[0]
    rest_offset = keyword.end + 1
    rest = text[rest_offset:]
    tokens = _words(rest)
    index, analyze = 0, False
    if index < len(tokens) and tokens[index].token_type == TokenType.L_PAREN:
        depth, index, option = 1, index + 1, []
        options: list[list[str]] = []
        while index < len(tokens) and depth:
            token = tokens[index]
            if token.token_type == TokenType.L_PAREN:
                depth += 1
            elif token.token_type == TokenType.R_PAREN:
                depth -= 1
            if depth == 1 and token.token_type == TokenType.COMMA:
                options.append(option)
                option = []
            elif depth >= 1:
                option.append(token.text.upper())
            index += 1
        options.append(option)
        if depth:
            return _unknown(text, "EXPLAIN options are not closed")
        for words in options:
            if words and words[0] in {"ANALYZE", "ANALYSE"}:
                # PostgreSQL takes the last spelling of a repeated option; nobody needs to repeat it, so
                # any ANALYZE that is not explicitly false means the statement runs (fail closed).
                analyze = analyze or not (len(words) > 1 and words[1] in _FALSE_WORDS)
    else:
        while index < len(tokens) and tokens[index].text.upper() in _EXPLAIN_FLAGS:
            analyze = analyze or tokens[index].text.upper() in {"ANALYZE", "ANALYSE"}
            index += 1
    if index >= len(tokens):
        return _unknown(text, "EXPLAIN without a statement")
    inner = classify(rest[tokens[index].start :])
    found = _Findings()
    if analyze:
        for cls in inner.classes:
            found.add(cls, "EXPLAIN ANALYZE runs the statement")
        for reason in inner.reasons:
            found.add(inner.sql_class, reason)
        for warning in inner.warnings:
            found.warn(warning)
        found.read |= inner.tables_read
        found.written |= inner.tables_written
        found.opaque |= inner.opaque_functions
    elif SqlClass.UNKNOWN in inner.classes:
        found.add(SqlClass.UNKNOWN, "EXPLAIN of a statement that cannot be checked")
    else:
        found.add(SqlClass.READ, "EXPLAIN shows a plan without running the statement")
        found.read |= inner.tables_read
    return found.result(text, "EXPLAIN", inner.tree)
