"""A throwaway PostgreSQL database for a benchmark run, dropped however the run ends."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

if TYPE_CHECKING:
    from tests.shopdb import Shop

ADMIN = os.environ.get("BASTION_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextmanager
def throwaway_database() -> Iterator[str]:
    """Yields the DSN of a new, empty database on the benchmark server."""
    name = f"bastion_bench_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield psycopg.conninfo.make_conninfo(ADMIN, dbname=name)
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def throwaway_shop() -> Iterator[Shop]:
    """The sample shop (tests/shopdb.py) in a throwaway database; its login roles dropped afterwards."""
    from tests.shopdb import create_shop

    with throwaway_database() as dsn:
        shops = create_shop(dsn)
        shop = next(shops)
        try:
            yield shop
        finally:
            for _ in shops:
                pass
