"""The state store: one interface (base.Store), two backends, chosen by the `bastion.state` URL.

``tinydb:<path>`` (also ``tinydb:///abs/path``) is the embedded default for one host; ``postgresql://…`` (or
``postgres://…``) is for several hosts sharing state. The PostgreSQL backend is imported only when used, so a
TinyDB login does not pay for loading the driver.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import (
    AlreadyExists,
    Grant,
    NotFound,
    OidcBinding,
    Request,
    SessionRecord,
    Store,
    StoreError,
)
from .tinydb import TinyDBStore

if TYPE_CHECKING:
    from .postgres import PostgresStore

__all__ = [
    "AlreadyExists",
    "Grant",
    "NotFound",
    "OidcBinding",
    "PostgresStore",
    "Request",
    "SessionRecord",
    "Store",
    "StoreError",
    "TinyDBStore",
    "open_store",
]

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}")


def open_store(url: str, *, password: str | None = None) -> Store:
    """Open the store named by a `bastion.state` URL.

    ``password`` (read from bastion.state_password_file) is for PostgreSQL, whose URL should carry none.
    Errors name at most the URL's scheme: the rest may hold credentials.
    """
    scheme, colon, rest = url.partition(":")
    kind = scheme.lower() if colon else ""
    if kind == "tinydb":
        location = rest.removeprefix("//")
        if not location:
            raise StoreError("tinydb: needs a path, e.g. tinydb:/var/lib/bastion/state.json")
        return TinyDBStore(Path(location).expanduser())
    if kind in ("postgresql", "postgres") and rest.startswith("//"):
        from .postgres import PostgresStore

        return PostgresStore(url, password=password)
    shown = f" {scheme!r}" if colon and _SCHEME.fullmatch(scheme) else ""
    raise StoreError(
        f"unsupported state backend{shown}: expected tinydb:<path> or postgresql://[user@]host[:port]/dbname"
    )


def __getattr__(name: str) -> Any:
    """`from bastion.store import PostgresStore` works without importing psycopg for everyone else."""
    if name == "PostgresStore":
        from .postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
