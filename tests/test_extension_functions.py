"""Functions an extension installed are told apart from user functions of the same name by the catalog
(pg_depend): pgcrypto's crypt() is a read, a user's crypt() beside it is not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.sql_pipeline import SqlPipeline
from tests.shopdb import Shop, create_shop, open_session, shop_config


@pytest.fixture(scope="module")
def shop(pg_dsn: str) -> Iterator[Shop]:
    shops = create_shop(pg_dsn)
    shop = next(shops)
    with shop.admin() as admin:
        if admin.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'pgcrypto'").fetchone() is None:
            pytest.skip("pgcrypto is not installed with this PostgreSQL (Debian: postgresql-contrib)")
        admin.execute("CREATE EXTENSION IF NOT EXISTS pgcrypto SCHEMA public")
    try:
        yield shop
    finally:
        with shop.admin() as admin:  # the run's database is shared with later modules
            admin.execute("DROP FUNCTION IF EXISTS public.crypt(int)")
            admin.execute("DROP EXTENSION IF EXISTS pgcrypto")
        next(shops, None)


def statuses(shop: Shop, tmp_path: Path, text: str) -> list[str]:
    session = open_session(shop_config(tmp_path, shop))
    pipeline = SqlPipeline(session, "pg-readonly")
    pipeline.open()
    try:
        out = []
        for result in pipeline.run(text):
            out.append(result.status)
            result.close()
        return out
    finally:
        pipeline.close()
        session.end()


def test_extension_function_is_a_read_and_a_user_twin_is_not(shop: Shop, tmp_path: Path) -> None:
    assert statuses(shop, tmp_path / "a", "SELECT crypt('secret', gen_salt('md5')) IS NOT NULL") == ["ok"]
    with shop.admin() as admin:
        admin.execute("CREATE FUNCTION public.crypt(i int) RETURNS int LANGUAGE sql AS 'SELECT i'")
    # Now crypt(...) may resolve to either: judged as the user function, whatever the arguments look like.
    assert statuses(shop, tmp_path / "b", "SELECT crypt(1)") == ["blocked"]
    assert statuses(shop, tmp_path / "c", "SELECT crypt('secret', gen_salt('md5'))") == ["blocked"]
