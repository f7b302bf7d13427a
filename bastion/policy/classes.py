"""What the classifier says about a statement, without the parser: verdicts, screens and evidence need
these types, and importing them must not load sqlglot (tens of megabytes) into every login."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class SqlClass(StrEnum):
    READ = "read"
    WRITE = "write"
    DDL = "ddl"
    DCL = "dcl"
    SESSION = "session"
    DANGEROUS = "dangerous"
    UNKNOWN = "unknown"


# Strictest last: the class that names a statement is the most severe one found in it.
SEVERITY = {
    SqlClass.READ: 0,
    SqlClass.WRITE: 1,
    SqlClass.DDL: 2,
    SqlClass.DCL: 3,
    SqlClass.SESSION: 4,
    SqlClass.DANGEROUS: 5,
    SqlClass.UNKNOWN: 6,
}


@dataclass(frozen=True)
class Classification:
    """What one statement is. `tree` is sqlglot's parse (None when it could not parse)."""

    text: str
    sql_class: SqlClass
    classes: frozenset[SqlClass]
    reasons: tuple[str, ...]
    warnings: tuple[str, ...]
    kind: str
    tables_read: frozenset[str]
    tables_written: frozenset[str]
    opaque_functions: frozenset[str]  # calls that are not known built-ins: output cannot be traced
    tree: Any  # sqlglot's parse (an exp.Expression), None when it could not parse

    @property
    def returns_rows(self) -> bool:
        if self.kind in {"SELECT", "VALUES", "SHOW", "EXPLAIN"}:
            return True
        return self.tree is not None and bool(self.tree.args.get("returning"))
