"""Sample data for the demo's shop database: believable customers whose PII the masking has to catch.

Values look real but are safe to show: emails are under example.com/.org/.net (RFC 2606), phones use the
555-01XX numbers reserved for fiction, card numbers start with the issuers' published test BINs (and pass
Luhn, so the detectors see them as cards), SSNs are in the valid ranges (area 001-899 except 666, group and
serial not zero). Generation is seeded: every demo shows the same shop.

The login roles' passwords are random, written to 0600 files, and reach the server only as SCRAM verifiers
computed here (libpq's PQencryptPasswordConn): the plain password is never in SQL, argv or a server log.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from bastion.demo import DemoError
from bastion.demo.cluster import DATABASE, Cluster
from bastion.demo.sshd import write_private

SCHEMA = Path(__file__).resolve().parent.parent.parent / "examples" / "shop.sql"
CUSTOMERS = 300

FIRST = [
    "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David", "Elizabeth",
    "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Christopher",
    "Karen", "Charles", "Lisa", "Daniel", "Nancy", "Matthew", "Betty", "Anthony", "Sandra", "Mark",
    "Margaret", "Donald", "Ashley", "Steven", "Kimberly", "Andrew", "Emily", "Paul", "Donna", "Joshua",
    "Michelle", "Kenneth", "Carol", "Kevin", "Amanda", "Brian", "Melissa", "Timothy", "Deborah", "Ronald",
    "Stephanie", "Jason", "Rebecca", "George", "Laura", "Edward", "Sharon", "Jeffrey", "Cynthia", "Ryan",
    "Kathleen", "Jacob", "Amy", "Gary", "Angela", "Nicholas", "Shirley", "Eric", "Anna", "Jonathan",
    "Brenda", "Maria", "Luis", "Priya", "Wei", "Aisha", "Mateo", "Sofia", "Hiroshi", "Yuki", "Olga",
    "Dmitri", "Fatima", "Omar", "Ingrid", "Lars", "Chloe", "Noah", "Zoe",
]  # fmt: skip
LAST = [
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
    "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson",
    "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis",
    "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores",
    "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter", "Roberts",
    "Patel", "Kim", "Chen", "Singh", "Cohen", "Murphy", "O'Brien", "Schmidt", "Novak", "Kowalski", "Rossi",
    "Tanaka", "Ivanova", "Larsen", "Dubois",
]  # fmt: skip
DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com", "shop.example.net")
AREA_CODES = (201, 212, 305, 312, 415, 503, 512, 617, 646, 702, 713, 718, 202, 404, 206, 303, 602, 919)
# Issuers' published test BINs, with the card length each issues.
TEST_BINS = (("411111", 16), ("424242", 16), ("400005", 16), ("555555", 16), ("510510", 16),
             ("222300", 16), ("378282", 15), ("371449", 15), ("601111", 16))  # fmt: skip
STATUSES = ("new", "paid", "shipped", "shipped", "delivered",
            "delivered", "delivered", "cancelled", "refunded")  # fmt: skip


def luhn_ok(number: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(number)):
        digit = int(char)
        if index % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _card(rng: random.Random) -> str:
    prefix, length = rng.choice(TEST_BINS)
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    return next(body + d for d in "0123456789" if luhn_ok(body + d))


def _ssn(rng: random.Random) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def _phone(rng: random.Random) -> str:
    area, line = rng.choice(AREA_CODES), rng.randint(100, 199)
    return rng.choice((f"({area}) 555-{line:04d}", f"+1 {area} 555 {line:04d}", f"{area}-555-{line:04d}"))


def _notes(rng: random.Random, first: str, last: str) -> dict[str, object]:
    """Mostly harmless notes; about one in six holds an email, the kind of leak only detectors catch."""
    roll = rng.random()
    if roll < 0.10:
        return {
            "contact": "prefers email",
            "alt_email": f"{first[0].lower()}{last.lower()}@{rng.choice(DOMAINS)}",
        }
    if roll < 0.17:
        return {
            "support": f"Customer asked us to write to {first.lower()}.backup@{rng.choice(DOMAINS)} instead"
        }
    if roll < 0.35:
        return {"tier": rng.choice(("silver", "gold", "platinum")), "newsletter": rng.random() < 0.5}
    if roll < 0.45:
        return {"gift_message": rng.choice(("Happy birthday!", "Congratulations!", "Thank you!"))}
    if roll < 0.50:
        return {"vip": True, "account_manager": rng.choice(FIRST)}
    return {}


def customers(count: int = CUSTOMERS, seed: int = 20240611) -> Iterator[tuple[object, ...]]:
    """(name, email, ssn, phone, card_number, notes) rows; every fifth customer has no card on file."""
    rng = random.Random(seed)
    seen: set[str] = set()
    while len(seen) < count:
        first, last = rng.choice(FIRST), rng.choice(LAST)
        local = rng.choice(
            (f"{first}.{last}", f"{first[0]}{last}", f"{first}{rng.randint(1, 99)}", f"{first}_{last}")
        )
        email = f"{local.lower().replace(chr(39), '')}@{rng.choice(DOMAINS)}"
        if email in seen:
            continue
        seen.add(email)
        card = _card(rng) if rng.random() < 0.8 else None
        yield (f"{first} {last}", email, _ssn(rng), _phone(rng), card, Jsonb(_notes(rng, first, last)))


def orders(customer_ids: list[int], seed: int = 20240611) -> Iterator[tuple[object, ...]]:
    rng = random.Random(seed + 1)
    for customer_id in customer_ids:
        for _ in range(rng.choice((0, 1, 1, 2, 2, 3, 4, 6))):
            total = round(rng.lognormvariate(3.8, 0.9), 2)
            yield (customer_id, f"{min(total, 4999.99):.2f}", rng.choice(STATUSES))


@dataclass(frozen=True)
class Seeded:
    customers: int
    orders: int


def write_password(path: Path) -> str:
    """A random password in a new 0600 file; returned for the verifier, never printed."""
    password = secrets.token_urlsafe(24)
    write_private(path, (password + "\n").encode())
    return password


def seed(cluster: Cluster, passwords: dict[str, str]) -> Seeded:
    """Create the shop database, its schema and data, and the login roles (role name → password)."""
    if not SCHEMA.exists():
        raise DemoError(f"the sample schema {SCHEMA} is missing: run the demo from a bastion checkout")
    with psycopg.connect(cluster.admin_dsn("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    with psycopg.connect(cluster.admin_dsn(DATABASE)) as conn:
        conn.execute(SCHEMA.read_text())
        with conn.cursor() as cur:
            with cur.copy("COPY customers (name, email, ssn, phone, card_number, notes) FROM STDIN") as copy:
                for row in customers():
                    copy.write_row(row)
            ids = [row[0] for row in cur.execute("SELECT id FROM customers ORDER BY id").fetchall()]
            with cur.copy("COPY orders (customer_id, total, status) FROM STDIN") as copy:
                count = 0
                for row in orders(ids):
                    copy.write_row(row)
                    count += 1
        for role, password in passwords.items():
            verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT 20 PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(verifier.decode())
                )
            )
        _grant(conn, passwords)
        conn.execute("ANALYZE")
    return Seeded(len(ids), count)


def _grant(conn: psycopg.Connection, passwords: dict[str, str]) -> None:
    """bastion_ro reads; bastion_rw reads and changes rows (no DDL, no TRUNCATE); nobody else connects."""
    roles = sql.SQL(", ").join(sql.Identifier(r) for r in passwords)
    db = sql.Identifier(DATABASE)
    conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
    conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(db, roles))
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(roles))
    conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(roles))
    if "bastion_rw" in passwords:
        rw = sql.Identifier("bastion_rw")
        conn.execute(sql.SQL("GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}").format(rw))
        conn.execute(sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {}").format(rw))
    if "bastion_ro" in passwords:
        conn.execute("ALTER ROLE bastion_ro SET default_transaction_read_only = on")
