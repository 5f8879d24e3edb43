"""The oracle workload of the view tests: a small shop schema, view definitions that cover what
views support, a randomized workload, and the comparison of a view topic with PostgreSQL."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import psycopg

from freshet.common.codec import loads
from freshet.common.sql.types import encoder
from freshet.common.sql.views import Catalog, compile_view

SCHEMA = """
CREATE TABLE customers (
    id int PRIMARY KEY, name text NOT NULL, email text, region text, score numeric(8, 2)
);
CREATE TABLE products (id int PRIMARY KEY, name text NOT NULL, price numeric(10, 2), category text);
CREATE TABLE orders (
    id int PRIMARY KEY, customer_id int, referrer_id int, status text NOT NULL,
    amount numeric(10, 2), qty int NOT NULL, placed date
);
CREATE TABLE order_items (
    order_id int, line int, product_id int, qty int NOT NULL, PRIMARY KEY (order_id, line)
);
"""

TABLES = ["public.customers", "public.products", "public.orders", "public.order_items"]

VIEWS: dict[str, str] = {
    # projections, WHERE, CASE, COALESCE, casts, arithmetic, string functions
    "v_project": (
        "SELECT o.id, o.amount * o.qty AS total, upper(o.status) AS st, "
        "CASE WHEN o.amount > 50 THEN 'big' WHEN o.amount IS NULL THEN 'none' ELSE 'small' END "
        "AS size, COALESCE(o.customer_id, -1) AS cid, o.qty::numeric / 3 AS third, "
        "o.qty / 2 AS half, length(o.status) || '-' || lower(o.status) AS tag, o.placed "
        "FROM orders o WHERE o.status <> 'cancelled' AND o.qty > 0"
    ),
    # inner join
    "v_inner": (
        "SELECT o.id, c.name, c.region, o.amount FROM orders o "
        "JOIN customers c ON c.id = o.customer_id"
    ),
    # a chain of LEFT and INNER joins with a composite key
    "v_chain": (
        "SELECT oi.order_id, oi.line, o.status, c.name AS customer, p.name AS product, "
        "oi.qty * p.price AS line_total FROM order_items oi "
        "LEFT JOIN orders o ON o.id = oi.order_id "
        "LEFT JOIN customers c ON c.id = o.customer_id "
        "JOIN products p ON p.id = oi.product_id"
    ),
    # a table joined twice, one of them LEFT
    "v_twice": (
        "SELECT o.id, a.name AS buyer, b.name AS referrer FROM orders o "
        "JOIN customers a ON a.id = o.customer_id LEFT JOIN customers b ON b.id = o.referrer_id"
    ),
    # GROUP BY over a LEFT JOIN with every aggregate, HAVING
    "v_by_region": (
        "SELECT c.region, count(*) AS n, count(o.id) AS orders, "
        "count(DISTINCT o.status) AS statuses, sum(o.amount) AS revenue, "
        "avg(o.amount) AS avg_amount, min(o.amount) AS min_amount, max(o.amount) AS max_amount, "
        "min(c.name) AS first_name, max(o.placed) AS last_placed "
        "FROM customers c LEFT JOIN orders o ON o.customer_id = c.id "
        "GROUP BY c.region HAVING count(*) > 1"
    ),
    # GROUP BY two columns, expressions over aggregates
    "v_by_customer_status": (
        "SELECT customer_id, status, count(*) AS n, sum(qty) AS qty, avg(qty) AS avg_qty, "
        "sum(amount) * 2 AS double_revenue, max(amount) - min(amount) AS spread "
        "FROM orders GROUP BY customer_id, status HAVING sum(qty) > 2"
    ),
    # an aggregate without GROUP BY: always one row
    "v_totals": "SELECT count(*) AS n, sum(amount) AS total, max(amount) AS top FROM orders",
    # SELECT DISTINCT
    "v_distinct": "SELECT DISTINCT region, category FROM customers c JOIN orders o "
    "ON o.customer_id = c.id JOIN order_items i ON i.order_id = o.id "
    "JOIN products p ON p.id = i.product_id",
}

REGIONS = ["north", "south", "east", "west", None]
STATUSES = ["new", "paid", "sent", "cancelled", "returned"]
CATEGORIES = ["books", "games", "tools", None]


class Workload:
    """Random changes to the shop tables; ids stay small so joins and groups collide often."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def _amount(self) -> Decimal | None:
        if self.rng.random() < 0.1:
            return None
        return Decimal(self.rng.randint(0, 20000)) / 100

    def seed_rows(self, conn: psycopg.Connection[Any]) -> None:
        r = self.rng
        for i in range(1, 16):
            conn.execute(
                "INSERT INTO customers VALUES (%s, %s, %s, %s, %s)",
                (i, f"cust{i:02d}", f"c{i}@example.com", r.choice(REGIONS), self._amount()),
            )
        for i in range(1, 9):
            conn.execute(
                "INSERT INTO products VALUES (%s, %s, %s, %s)",
                (i, f"prod{i}", self._amount(), r.choice(CATEGORIES)),
            )
        for i in range(1, 31):
            self._insert_order(conn, i)
        for i in range(1, 31):
            for line in range(r.randint(0, 3)):
                conn.execute(
                    "INSERT INTO order_items VALUES (%s, %s, %s, %s)",
                    (i, line, r.randint(1, 10), r.randint(0, 5)),
                )

    def _insert_order(self, conn: psycopg.Connection[Any], oid: int) -> None:
        r = self.rng
        conn.execute(
            "INSERT INTO orders VALUES (%s, %s, %s, %s, %s, %s, "
            "date '2026-01-01' + %s) ON CONFLICT (id) DO NOTHING",
            (
                oid,
                r.choice([None, *range(1, 18)]),
                r.choice([None, None, *range(1, 18)]),
                r.choice(STATUSES),
                self._amount(),
                r.randint(0, 6),
                r.randint(0, 400),
            ),
        )

    def step(self, conn: psycopg.Connection[Any]) -> None:
        """One transaction of one to four random changes, often over several tables."""
        r = self.rng
        with conn.transaction():
            for _ in range(r.randint(1, 4)):
                self._change(conn)

    def _change(self, conn: psycopg.Connection[Any]) -> None:
        r = self.rng
        roll = r.random()
        oid = r.randint(1, 40)
        if roll < 0.2:
            self._insert_order(conn, oid)
        elif roll < 0.35:
            conn.execute(
                "UPDATE orders SET customer_id = %s, status = %s WHERE id = %s",
                (r.choice([None, *range(1, 18)]), r.choice(STATUSES), oid),
            )
        elif roll < 0.5:
            conn.execute(
                "UPDATE orders SET amount = %s, qty = %s WHERE id = %s",
                (self._amount(), r.randint(0, 6), oid),
            )
        elif roll < 0.57:
            conn.execute("DELETE FROM orders WHERE id = %s", (oid,))
        elif roll < 0.67:
            conn.execute(
                "UPDATE customers SET region = %s, name = %s WHERE id = %s",
                (r.choice(REGIONS), f"cust{r.randint(1, 99):02d}", r.randint(1, 18)),
            )
        elif roll < 0.72:
            cid = r.randint(1, 18)
            conn.execute("DELETE FROM customers WHERE id = %s", (cid,))
            conn.execute(
                "INSERT INTO customers VALUES (%s, %s, NULL, %s, NULL) ON CONFLICT DO NOTHING",
                (cid + 20 if r.random() < 0.5 else cid, f"new{cid}", r.choice(REGIONS)),
            )
        elif roll < 0.77:
            # a primary-key change: a delete and a create in the change stream
            conn.execute(
                "UPDATE orders SET id = %s WHERE id = %s AND NOT EXISTS "
                "(SELECT 1 FROM orders WHERE id = %s)",
                (oid + 40, oid, oid + 40),
            )
        elif roll < 0.85:
            conn.execute(
                "INSERT INTO order_items VALUES (%s, %s, %s, %s) ON CONFLICT (order_id, line) "
                "DO UPDATE SET product_id = excluded.product_id, qty = excluded.qty",
                (oid, r.randint(0, 3), r.randint(1, 10), r.randint(0, 5)),
            )
        elif roll < 0.9:
            conn.execute("DELETE FROM order_items WHERE order_id = %s", (oid,))
        elif roll < 0.95:
            conn.execute(
                "UPDATE products SET price = %s, category = %s WHERE id = %s",
                (self._amount(), r.choice(CATEGORIES), r.randint(1, 10)),
            )
        else:
            pid = r.randint(1, 10)
            conn.execute(
                "INSERT INTO products VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO UPDATE "
                "SET name = excluded.name",
                (pid, f"prod{pid}-{r.randint(0, 9)}", self._amount(), r.choice(CATEGORIES)),
            )


def oracle_rows(
    conn: psycopg.Connection[Any], name: str, sql: str, catalog: Catalog
) -> list[dict[str, Any]]:
    """The view's rows as PostgreSQL computes them, encoded as view rows are."""
    plan = compile_view(name, sql, catalog)
    encoders = [(c.name, encoder(c.type)) for c in plan.columns]
    rows = conn.execute(sql).fetchall()
    return [{n: enc(v) for (n, enc), v in zip(encoders, row, strict=True)} for row in rows]


def canonical(rows: list[dict[str, Any]]) -> list[str]:
    """Rows as sorted JSON texts, for multiset comparison with readable diffs."""
    from freshet.common.codec import dumps

    return sorted(dumps(r).decode() for r in rows)


def view_rows(folded: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(v) for v in folded.values()]


__all__ = [
    "SCHEMA",
    "TABLES",
    "VIEWS",
    "Workload",
    "canonical",
    "loads",
    "oracle_rows",
    "view_rows",
]
