"""Rendering hostile text safely: target output, SQL, error messages and names never reach the terminal
as markup or control sequences.

Rich markup in a string could carry `[@click=app.…]` actions; an escape sequence in a cell could rewrite the
user's terminal (OSC 52 clipboard, title, cursor). Everything shown from outside goes through `text()` or
`cell()`, which build `rich.text.Text` objects (never parsed as markup) with control characters made
visible.
"""

from __future__ import annotations

import json
import re
from typing import Any

from rich.text import Text

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x80-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NEWLINE = re.compile(r"\r\n|\r|\n")


def _visible(match: re.Match[str]) -> str:
    char = match.group(0)
    code = ord(char)
    if code < 0x20:
        return chr(0x2400 + code)  # ␀ ␁ … ␛ …
    if code == 0x7F:
        return "␡"
    return "�"


def clean(value: str, *, single_line: bool = False) -> str:
    """Control characters (and bidi overrides) replaced by visible symbols; tabs kept as spaces."""
    text = value.replace("\t", "    ")
    if single_line:
        text = _NEWLINE.sub("↵", text)
        return _CONTROL.sub(_visible, text)
    return _CONTROL.sub(lambda m: m.group(0) if m.group(0) == "\n" else _visible(m), text)


def text(value: Any, style: str = "", *, single_line: bool = False) -> Text:
    return Text(clean(str(value), single_line=single_line), style=style)


def cell(value: Any, *, limit: int = 200) -> Text:
    """One result cell: NULL shown as such, JSON as compact JSON, long values cut."""
    if value is None:
        return Text("NULL", style="italic dim")
    if isinstance(value, dict | list):
        shown = json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
    elif isinstance(value, bytes | memoryview):
        raw = bytes(value)
        shown = "\\x" + raw[: limit // 2].hex()
    else:
        shown = str(value)
    if len(shown) > limit:
        shown = shown[: limit - 1] + "…"
    return Text(clean(shown, single_line=True))
