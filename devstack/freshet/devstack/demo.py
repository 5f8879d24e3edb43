"""The demo that ``make run`` captures: shop schema, seed data, the source and a view.

Four tables with primary keys (one composite), foreign keys, ``numeric`` prices, timestamps, a
``jsonb`` column and customer e-mail addresses: enough to exercise CDC, joins and aggregates.
Every statement is a literal or takes its values as parameters.
"""

from __future__ import annotations

import json
import os
import random
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
from psycopg import sql

from freshet.devstack.servers import PgInfo

DEMO_DATABASE = "shop"
DEMO_SOURCE = "shop"
DEMO_TABLES = ("public.customers", "public.products", "public.orders", "public.order_items")
DEMO_VIEW = "customer_revenue"
DEMO_VIEW_SQL = (
    "SELECT c.id, c.name, left(c.email, 2) || '***' AS email, count(DISTINCT o.id) AS orders, "
    "coalesce(sum(i.quantity * i.unit_price), 0) AS revenue "
    "FROM customers c "
    "LEFT JOIN orders o ON o.customer_id = c.id AND o.status <> 'cancelled' "
    "LEFT JOIN order_items i ON i.order_id = o.id "
    "GROUP BY c.id, c.name, left(c.email, 2) || '***'"
)
"""Per customer: orders that are not cancelled and their revenue, with a masked e-mail. Grouped
by the masked address rather than ``c.email``, so that the full address is not part of the
view's key either."""
DEMO_VIEW_INDEXES = ("orders", "revenue")
"""The demo product can be sorted on these (the README sorts it by revenue)."""
DEMO_PRODUCT = "customer_revenue"
DEMO_PRODUCT_SPEC: dict[str, object] = {
    "name": DEMO_PRODUCT,
    "view": DEMO_VIEW,
    "roles": {
        "demo": {},
        "support": {
            "row_filter": "orders > 0",
            "masks": {"revenue": {"method": "redact", "replacement": "hidden"}},
        },
    },
}
"""The demo view as a data product: role ``demo`` sees every row, role ``support`` only the
customers with orders, and not their revenue. (The view's text columns are its key, which no
role can mask.)"""
DEMO_KEY_SPEC: dict[str, object] = {"name": "demo", "roles": ["demo"], "products": [DEMO_PRODUCT]}
UNKNOWN_TABLE = "is not a table of any source"
"""What control's 422 says while ingest has not published a table's schema yet."""

ORDER_STATUSES = ("pending", "paid", "shipped", "delivered", "cancelled")
OPEN_STATUSES = ("pending", "paid", "shipped")
COUNTRIES = ("DE", "FR", "NL", "PL", "SE", "ES", "IT", "US", "GB", "JP")
CATEGORIES = ("kitchen", "garden", "books", "toys", "tools", "audio")
COLORS = ("red", "green", "blue", "black", "white", "oak")
FIRST_NAMES = (
    "Ada",
    "Alan",
    "Grace",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "Ken",
    "Radia",
    "Tim",
    "Margaret",
    "Linus",
    "Sophie",
    "Niklaus",
    "Leslie",
    "Hedy",
)
LAST_NAMES = (
    "Lovelace",
    "Turing",
    "Hopper",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Thompson",
    "Perlman",
    "Berners-Lee",
    "Hamilton",
    "Torvalds",
    "Wilson",
    "Wirth",
    "Lamport",
)
PRODUCT_NOUNS = (
    "kettle",
    "trowel",
    "novel",
    "robot",
    "wrench",
    "speaker",
    "lamp",
    "mug",
    "saw",
    "puzzle",
    "headphones",
    "planter",
)

SCHEMA = (
    """
    CREATE TABLE customers (
        id bigserial PRIMARY KEY,
        email text NOT NULL UNIQUE,
        name text NOT NULL,
        country char(2) NOT NULL,
        marketing_opt_in boolean NOT NULL DEFAULT false,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE products (
        id bigserial PRIMARY KEY,
        sku text NOT NULL UNIQUE,
        name text NOT NULL,
        category text NOT NULL,
        price numeric(10, 2) NOT NULL CHECK (price >= 0),
        attributes jsonb NOT NULL DEFAULT '{}'::jsonb,
        updated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE orders (
        id bigserial PRIMARY KEY,
        customer_id bigint NOT NULL REFERENCES customers (id),
        status text NOT NULL DEFAULT 'pending'
            CHECK (status IN ('pending', 'paid', 'shipped', 'delivered', 'cancelled')),
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    "CREATE INDEX orders_customer_id ON orders (customer_id)",
    "CREATE INDEX orders_open ON orders (id) WHERE status IN ('pending', 'paid', 'shipped')",
    "CREATE INDEX orders_closed ON orders (id) WHERE status IN ('delivered', 'cancelled')",
    """
    CREATE TABLE order_items (
        order_id bigint NOT NULL REFERENCES orders (id),
        line_no integer NOT NULL CHECK (line_no > 0),
        product_id bigint NOT NULL REFERENCES products (id),
        quantity integer NOT NULL CHECK (quantity > 0),
        unit_price numeric(10, 2) NOT NULL CHECK (unit_price >= 0),
        PRIMARY KEY (order_id, line_no)
    )
    """,
    "CREATE INDEX order_items_product_id ON order_items (product_id)",
)


@dataclass(frozen=True)
class SeedSize:
    customers: int = 120
    products: int = 40
    orders: int = 300


def database_exists(admin: psycopg.Connection, dbname: str) -> bool:
    row = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
    return row is not None


def ensure_database(pg: PgInfo, dbname: str) -> bool:
    """Create database ``dbname`` if it is missing. Returns whether it was created."""
    with psycopg.connect(pg.conninfo(), autocommit=True) as admin:
        if database_exists(admin, dbname):
            return False
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        return True


def create_schema(conn: psycopg.Connection) -> None:
    """Create the four demo tables (in the caller's transaction)."""
    for statement in SCHEMA:
        conn.execute(statement)


def customer_email(rng: random.Random, name: str) -> str:
    """A unique-enough address for ``name``; the random suffix keeps the UNIQUE constraint."""
    local = name.lower().replace(" ", ".").replace("-", "")
    return f"{local}.{rng.getrandbits(40):010x}@example.com"


def random_name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def seed(conn: psycopg.Connection, rng: random.Random, size: SeedSize = SeedSize()) -> None:
    """Insert the seed rows (in the caller's transaction): customers, products, orders, items."""
    now = datetime.now(UTC)
    customers = []
    for _ in range(size.customers):
        name = random_name(rng)
        created = now - timedelta(days=rng.uniform(30, 400))
        customers.append(
            (
                customer_email(rng, name),
                name,
                rng.choice(COUNTRIES),
                rng.random() < 0.4,
                created,
                created,
            )
        )
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO customers (email, name, country, marketing_opt_in, created_at, updated_at)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            customers,
        )
        products = []
        for i in range(size.products):
            noun = rng.choice(PRODUCT_NOUNS)
            color = rng.choice(COLORS)
            attributes = {
                "color": color,
                "weight_g": rng.randrange(50, 5000, 10),
                "tags": rng.sample(("new", "eco", "gift", "sale", "bulky"), 2),
            }
            products.append(
                (
                    f"SKU-{i + 1:05d}",
                    f"{color.title()} {noun}",
                    rng.choice(CATEGORIES),
                    Decimal(rng.randrange(199, 19999)) / 100,
                    json.dumps(attributes),
                )
            )
        cur.executemany(
            "INSERT INTO products (sku, name, category, price, attributes)"
            " VALUES (%s, %s, %s, %s, %s::jsonb)",
            products,
        )
        customer_ids = [r[0] for r in cur.execute("SELECT id FROM customers ORDER BY id")]
        product_rows = cur.execute("SELECT id, price FROM products ORDER BY id").fetchall()
        for _ in range(size.orders):
            created = now - timedelta(minutes=rng.uniform(1, 30 * 24 * 60))
            status = rng.choices(ORDER_STATUSES, weights=(2, 2, 2, 5, 1))[0]
            row = cur.execute(
                "INSERT INTO orders (customer_id, status, created_at, updated_at)"
                " VALUES (%s, %s, %s, %s) RETURNING id",
                (rng.choice(customer_ids), status, created, created),
            ).fetchone()
            assert row is not None
            items = [
                (row[0], line, product_id, rng.randint(1, 5), price)
                for line, (product_id, price) in enumerate(
                    rng.sample(product_rows, rng.randint(1, 4)), start=1
                )
            ]
            cur.executemany(
                "INSERT INTO order_items (order_id, line_no, product_id, quantity, unit_price)"
                " VALUES (%s, %s, %s, %s, %s)",
                items,
            )


def ensure_demo_database(pg: PgInfo, dbname: str = DEMO_DATABASE, seed_value: int = 7) -> bool:
    """Create and seed the demo database unless its tables exist. Returns whether it seeded.

    Schema and seed rows commit in one transaction, so a run interrupted half-way seeds again
    next time instead of leaving a half-filled database.
    """
    ensure_database(pg, dbname)
    with psycopg.connect(pg.conninfo(dbname)) as conn:
        row = conn.execute("SELECT to_regclass('public.order_items') IS NOT NULL").fetchone()
        if row is not None and row[0]:
            return False
        create_schema(conn)
        seed(conn, random.Random(seed_value))  # noqa: S311 - demo data, not security
        conn.commit()
    return True


def source_spec(pg: PgInfo, dbname: str = DEMO_DATABASE) -> dict[str, object]:
    """The control API's body that registers the demo database as source ``shop``."""
    return {
        "name": DEMO_SOURCE,
        "kind": "postgres",
        "host": pg.host,
        "port": pg.port,
        "database": dbname,
        "user": pg.user,
        "password": pg.password,
        "tables": list(DEMO_TABLES),
    }


@dataclass(frozen=True)
class Registration:
    """Outcome of registering a demo object: ``done`` (created or already there) or not."""

    done: bool
    retry: bool
    detail: str


def _post(
    control_url: str,
    path: str,
    admin_token: str,
    body: dict[str, object],
    timeout: float,
    answer: list[bytes] | None = None,
) -> Registration:
    """POST ``body`` to the control API; 409 (it exists) counts as done.

    ``retry`` is true when trying again later may help (control unreachable, 5xx); a 4xx other
    than 409 means the request itself is wrong and is not retried.
    """
    request = urllib.request.Request(  # noqa: S310 - the stack's own control API on 127.0.0.1
        f"{control_url}{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {admin_token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310
            if answer is not None:
                answer.append(resp.read())
            return Registration(True, False, f"registered (HTTP {resp.status})")
    except urllib.error.HTTPError as exc:
        detail = exc.read(600).decode(errors="replace").strip()
        if exc.code == 409:
            return Registration(True, False, "already registered")
        return Registration(False, exc.code >= 500, f"HTTP {exc.code}: {detail}")
    except OSError as exc:
        return Registration(False, True, f"control unreachable: {getattr(exc, 'reason', exc)}")


def register_source(
    control_url: str, admin_token: str, spec: dict[str, object], timeout: float = 10.0
) -> Registration:
    """POST ``spec`` to ``<control_url>/v1/sources`` (see :func:`_post` for the outcome)."""
    return _post(control_url, "/v1/sources", admin_token, spec, timeout)


def register_view(
    control_url: str,
    admin_token: str,
    name: str = DEMO_VIEW,
    sql: str = DEMO_VIEW_SQL,
    timeout: float = 10.0,
    indexes: tuple[str, ...] = DEMO_VIEW_INDEXES,
) -> Registration:
    """POST view ``name`` to ``<control_url>/v1/views``.

    Control compiles the SQL against the table schemas ingest has published; until ingest has
    published those of the demo source, the answer is a 422 naming an unknown table, which is
    worth retrying (the caller bounds how long). Any other 422 is final.
    """
    body: dict[str, object] = {"name": name, "sql": sql, "indexes": list(indexes)}
    result = _post(control_url, "/v1/views", admin_token, body, timeout)
    if not result.done and UNKNOWN_TABLE in result.detail:
        return Registration(False, True, "waiting for ingest to publish the tables' schemas")
    return result


def register_product(control_url: str, admin_token: str, timeout: float = 10.0) -> Registration:
    """POST the demo product (:data:`DEMO_PRODUCT_SPEC`) to ``<control_url>/v1/products``."""
    return _post(control_url, "/v1/products", admin_token, DEMO_PRODUCT_SPEC, timeout)


def create_key(
    control_url: str, admin_token: str, key_file: Path, timeout: float = 10.0
) -> Registration:
    """Create an API key that reads the demo product and write it to ``key_file`` (mode 0600).

    Control shows a key's secret only in the answer that creates it, so it is kept in the file
    for the summary's ``curl``; a new key is made on every start (the embedded broker keeps the
    desired state in memory, so the previous run's key is gone with it).
    """
    answer: list[bytes] = []
    result = _post(control_url, "/v1/keys", admin_token, DEMO_KEY_SPEC, timeout, answer)
    if result.done and answer:
        key = json.loads(answer[0])["key"]
        key_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(key + "\n")
        return Registration(True, False, f"written to {key_file}")
    return result
