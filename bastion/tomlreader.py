"""Typed reads of a parsed TOML document that collect one error line per problem, naming the key path.

Config is hostile input too: every read checks the type, every table reports keys nobody read as unknown,
and nothing raises until all problems are collected, so an operator fixes them in one pass.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from bastion.units import parse_duration, parse_size

T = TypeVar("T")
_MISSING: Any = object()
NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")

_TYPE_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "a table",
}


def describe(value: Any) -> str:
    """What a TOML value is, for 'expected X, got Y' messages (never the value itself: it may be a secret)."""
    for kind, name in _TYPE_NAMES.items():
        if type(value) is kind:
            return name
    return f"a {type(value).__name__}"


class Errors:
    """Accumulates 'path: reason' lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, path: str, reason: str) -> None:
        self.lines.append(f"{path}: {reason}")

    def __bool__(self) -> bool:
        return bool(self.lines)


class Table:
    """A TOML table being read; call done() to report the keys that were not read as unknown."""

    def __init__(self, data: dict[str, Any], path: str, errors: Errors) -> None:
        self.data = data
        self.path = path
        self.errors = errors
        self._read: set[str] = set()

    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.data

    def _get(self, key: str, default: Any) -> Any:
        self._read.add(key)
        if key in self.data:
            return self.data[key]
        if default is _MISSING:
            self.errors.add(self.key_path(key), "required key is missing")
        return _MISSING

    def _typed(self, key: str, default: Any, kinds: tuple[type, ...], expected: str) -> Any:
        value = self._get(key, default)
        if value is _MISSING:
            return default if default is not _MISSING else None
        # bool is an int subclass in Python; TOML keeps them apart and so do we.
        if isinstance(value, bool) and bool not in kinds:
            self.errors.add(self.key_path(key), f"expected {expected}, got a boolean")
            return default if default is not _MISSING else None
        if not isinstance(value, kinds):
            self.errors.add(self.key_path(key), f"expected {expected}, got {describe(value)}")
            return default if default is not _MISSING else None
        return value

    def str(self, key: str, default: Any = _MISSING, *, choices: Iterable[str] | None = None) -> Any:
        value = self._typed(key, default, (str,), "a string")
        if isinstance(value, str) and choices is not None and key in self.data:
            allowed = list(choices)
            if value not in allowed:
                self.errors.add(self.key_path(key), f"must be one of {', '.join(allowed)}, got {value!r}")
                return default if default is not _MISSING else None
        return value

    def name(self, key: str = "name") -> str | None:
        value = self.str(key)
        if isinstance(value, str) and not NAME_RE.match(value):
            self.errors.add(
                self.key_path(key),
                f"{value!r} is not a valid name (lowercase letter first, then a-z 0-9 _ . -, at most 63)",
            )
            return None
        return value

    def bool(self, key: str, default: Any = _MISSING) -> Any:
        return self._typed(key, default, (bool,), "a boolean")

    def int(
        self, key: str, default: Any = _MISSING, *, minimum: int | None = None, maximum: int | None = None
    ) -> Any:
        value = self._typed(key, default, (int,), "an integer")
        if isinstance(value, int) and key in self.data:
            if minimum is not None and value < minimum:
                self.errors.add(self.key_path(key), f"must be at least {minimum}, got {value}")
                return default if default is not _MISSING else None
            if maximum is not None and value > maximum:
                self.errors.add(self.key_path(key), f"must be at most {maximum}, got {value}")
                return default if default is not _MISSING else None
        return value

    def str_list(self, key: str, default: Any = _MISSING, *, unique: bool = True) -> Any:
        value = self._typed(key, default, (list,), "an array of strings")
        if not isinstance(value, list) or key not in self.data:
            return value
        out: list[str] = []
        for index, item in enumerate(value):
            if not isinstance(item, str):
                self.errors.add(f"{self.key_path(key)}[{index}]", f"expected a string, got {describe(item)}")
            elif unique and item in out:
                self.errors.add(f"{self.key_path(key)}[{index}]", f"duplicate entry {item!r}")
            else:
                out.append(item)
        return out

    def converted(self, key: str, default: Any, convert: Callable[[Any], T], expected: str) -> Any:
        """A value given as text or number and converted (durations, sizes); the default is converted too."""
        if key not in self.data:
            self._get(key, default)
            return None if default is _MISSING or default is None else convert(default)
        value = self._typed(key, _MISSING, (str, int, float), expected)
        if value is None:
            return None
        try:
            return convert(value)
        except ValueError as exc:
            self.errors.add(self.key_path(key), str(exc))
            return None

    def duration(self, key: str, default: Any = _MISSING) -> Any:
        """Seconds (float); the default may be given as a duration string."""
        return self.converted(key, default, parse_duration, "a duration such as 30s, 5m, 8h or 7d")

    def size(self, key: str, default: Any = _MISSING) -> Any:
        return self.converted(key, default, parse_size, "a size such as 512MiB or 2GB")

    def table(self, key: str, *, required: bool = False) -> Table | None:
        value = self._get(key, _MISSING if required else None)
        if value is None or value is _MISSING:
            return None
        if not isinstance(value, dict):
            self.errors.add(self.key_path(key), f"expected a table, got {describe(value)}")
            return None
        return Table(value, self.key_path(key), self.errors)

    def tables(self, key: str) -> list[Table]:
        """An array of tables ([[key]]); each is named by its 'name' key in paths when it has a valid one."""
        value = self._get(key, [])
        if value is _MISSING or value == []:
            return []
        if not isinstance(value, list):
            self.errors.add(
                self.key_path(key), f"expected an array of tables ([[{key}]]), got {describe(value)}"
            )
            return []
        out = []
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                self.errors.add(f"{self.key_path(key)}[{index}]", f"expected a table, got {describe(item)}")
                continue
            label = item.get("name")
            label = label if isinstance(label, str) and NAME_RE.match(label) else str(index)
            out.append(Table(item, f"{self.key_path(key)}[{label}]", self.errors))
        return out

    def mapping(self, key: str) -> dict[str, Any]:
        """A table of free-form keys whose values the caller checks (e.g. class -> verdict)."""
        table = self.table(key)
        if table is None:
            return {}
        table._read.update(table.data)
        return dict(table.data)

    def done(self) -> None:
        for key in self.data:
            if key not in self._read:
                self.errors.add(self.key_path(key), "unknown key")
