"""The sample shop database on the real PostgreSQL, with planted PII, login roles and a bastion config.

Login roles are cluster-wide, so their names carry a random suffix and the fixture drops them afterwards.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from bastion.audit.log import AuditLog
from bastion.audit.signing import generate_key, load_private_key
from bastion.config import Config, load_config
from bastion.identity.keys import parse_public_key
from bastion.session import Session
from bastion.store import TinyDBStore
from tests.configs import ALICE_KEY, base_config, secret, write_config

REPO = Path(__file__).resolve().parent.parent

# Planted values: none of them may ever leave the bastion in any form once masked.
PLANTED = [
    {"name": "Ada Lovelace", "email": "ada.lovelace@example.org", "ssn": "123-45-6789",
     "phone": "+1 415 555 0134", "card_number": "4111111111111111",
     "notes": {"vip": True, "backup_email": "ada.backup@example.net"}},
    {"name": "Grace Hopper", "email": "grace.hopper@navy.example.com", "ssn": "219-09-9999",
     "phone": "(212) 555-0187", "card_number": "5500005555555559", "notes": {"tier": "gold"}},
    {"name": "Alan Turing", "email": "alan@bletchley.example.co.uk", "ssn": "078-05-1120",
     "phone": "+44 20 7946 0958", "card_number": "340000000000009", "notes": {}},
]  # fmt: skip


@dataclass
class Shop:
    admin_dsn: str
    ro_user: str
    rw_user: str
    host: str
    port: int
    dbname: str

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.admin_dsn, autocommit=True)


def create_shop(pg_dsn: str) -> Iterator[Shop]:
    params = conninfo_to_dict(pg_dsn)
    suffix = secrets.token_hex(3)
    ro, rw = f"bastion_ro_{suffix}", f"bastion_rw_{suffix}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public")
        conn.execute((REPO / "examples" / "shop.sql").read_text())
        for row in PLANTED:
            conn.execute(
                "INSERT INTO customers (name, email, ssn, phone, card_number, notes) VALUES (%s,%s,%s,%s,%s,%s)",
                (row["name"], row["email"], row["ssn"], row["phone"], row["card_number"],
                 psycopg.types.json.Jsonb(row["notes"])),
            )  # fmt: skip
        conn.execute(
            "INSERT INTO orders (customer_id, total, status) SELECT id, id * 10.5, 'shipped' FROM customers"
        )
        for role in (ro, rw):
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal("pw-" + suffix)
                )
            )
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(role)))
            conn.execute(
                sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(role))
            )
        conn.execute(
            sql.SQL("GRANT INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public TO {}").format(
                sql.Identifier(rw)
            )
        )
        conn.execute(
            sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {}").format(sql.Identifier(rw))
        )
        conn.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(rw)))
    shop = Shop(
        pg_dsn, ro, rw, params.get("host", "127.0.0.1"), int(params.get("port", 5432)), params["dbname"]
    )
    try:
        yield shop
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            for role in (ro, rw):
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


MASKING = """
[masking]
hmac_key_file = "secrets/masking.key"

[[masking.columns]]
column = "customers.email"
style = "pseudonym"

[[masking.columns]]
column = "customers.ssn"

[[masking.columns]]
column = "customers.phone"
style = "partial"
exempt_roles = ["dba"]

[[masking.columns]]
column = "customers.card_number"
style = "partial"
"""


def shop_config(
    directory: Path,
    shop: Shop,
    *,
    extra: str = "",
    masking_key: str | None = None,
    state: str | None = None,
    name: str = "bastion-test",
) -> Config:
    """A config whose pg-readonly / pg-guarded connections reach the shop database."""
    secret(directory / "secrets" / "pg.password", "pw-" + shop.ro_user.rsplit("_", 1)[1])
    secret(directory / "secrets" / "masking.key", masking_key or secrets.token_hex(32))
    text = base_config(directory, extra=MASKING + extra, state=state, name=name)
    for name, user in (("pg-readonly", shop.ro_user), ("pg-guarded", shop.rw_user)):
        block_start = text.index(f'name = "{name}"')
        block_end = (
            text.index("[[connections]]", block_start)
            if "[[connections]]" in text[block_start:]
            else len(text)
        )
        block = text[block_start:block_end]
        new = block.replace('host = "127.0.0.1"', f'host = "{shop.host}"\nport = {shop.port}')
        new = (
            new.replace('database = "shop"', f'database = "{shop.dbname}"')
            .replace('user = "ro"', f'user = "{user}"')
            .replace('user = "rw"', f'user = "{user}"')
        )
        text = text[:block_start] + new + text[block_end:]
    text = text.replace('connections = ["pg-readonly"]', 'connections = ["pg-readonly", "pg-guarded"]', 1)
    config = load_config(write_config(directory, text))
    generate_key(config.audit.signing_key)
    return config


def open_session(config: Config, user: str = "alice", key: str = ALICE_KEY) -> Session:
    store = TinyDBStore(Path(config.bastion.state.removeprefix("tinydb:")))
    audit = AuditLog(config.audit.log, config.bastion.name, load_private_key(config.audit.signing_key))
    session = Session(config, store, audit, config.users[user], parse_public_key(key).fingerprint, "headless")
    session.start()
    return session
