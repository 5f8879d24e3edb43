"""A steady stream of changes to the demo shop database, so the platform has something to show.

Each step is one transaction chosen at random: a new order with its items, an order moving on
(pending → paid → shipped → delivered, or cancelled), a price change, an order deleted with its
items, a new customer, a customer changing their details, a customer without orders leaving.
Every statement is parameterised. One writer at a time: run one :class:`Workload` per database.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from decimal import Decimal

import psycopg

from freshet.devstack.demo import COUNTRIES, customer_email, random_name

log = logging.getLogger(__name__)

NEXT_STATUS = {"pending": "paid", "paid": "shipped", "shipped": "delivered"}


@dataclass
class WorkloadStats:
    """Rows changed so far, by kind, and the transactions that committed or failed."""

    transactions: int = 0
    inserts: int = 0
    updates: int = 0
    deletes: int = 0
    errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Workload:
    """Changes the demo database at about ``rate`` transactions per second.

    :meth:`step` runs one transaction on a connection the caller owns; :meth:`run` connects,
    paces steps and reconnects with a growing delay when the database goes away, until ``stop``
    is set. ``stats`` is updated only after a transaction committed.
    """

    def __init__(self, conninfo: str, rate: float = 20.0, seed: int | None = None) -> None:
        self._conninfo = conninfo
        self._rate = rate
        self._rng = random.Random(seed)  # noqa: S311 - demo data, not security
        self.stats = WorkloadStats()
        self._actions: list[tuple[Callable[[psycopg.Connection, WorkloadStats], bool], int]] = [
            (self._new_order, 40),
            (self._advance_order, 30),
            (self._change_price, 10),
            (self._new_customer, 7),
            (self._update_customer, 5),
            (self._delete_order, 6),
            (self._delete_customer, 2),
        ]

    # --- one transaction ----------------------------------------------------------------------

    def step(self, conn: psycopg.Connection) -> None:
        """Run one random transaction on ``conn`` (not in autocommit mode) and commit it."""
        funcs = [a for a, _ in self._actions]
        weights = [w for _, w in self._actions]
        action = self._rng.choices(funcs, weights=weights)[0]
        pending = WorkloadStats()
        try:
            changed = action(conn, pending) or self._new_order(conn, pending)
            conn.commit()
        except BaseException:
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
            raise
        if changed:
            pending.transactions = 1
            for name, value in pending.as_dict().items():
                setattr(self.stats, name, getattr(self.stats, name) + value)

    def _pick_id(self, conn: psycopg.Connection, query_max: str, query_from: str) -> int | None:
        """A random existing id: a random point in ``[1, max]``, then the next id from there."""
        row = conn.execute(query_max).fetchone()
        if row is None or row[0] is None:
            return None
        start = self._rng.randint(1, int(row[0]))
        found = conn.execute(query_from, (start,)).fetchone()
        return None if found is None else int(found[0])

    def _new_order(self, conn: psycopg.Connection, stats: WorkloadStats) -> bool:
        customer = self._pick_id(
            conn,
            "SELECT max(id) FROM customers",
            "SELECT id FROM customers WHERE id >= %s ORDER BY id LIMIT 1",
        )
        if customer is None:
            return False
        products = conn.execute(
            "SELECT id, price FROM products ORDER BY random() LIMIT %s",
            (self._rng.randint(1, 4),),
        ).fetchall()
        row = conn.execute(
            "INSERT INTO orders (customer_id) VALUES (%s) RETURNING id", (customer,)
        ).fetchone()
        assert row is not None
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO order_items (order_id, line_no, product_id, quantity, unit_price)"
                " VALUES (%s, %s, %s, %s, %s)",
                [
                    (row[0], line, product_id, self._rng.randint(1, 5), price)
                    for line, (product_id, price) in enumerate(products, start=1)
                ],
            )
        stats.inserts += 1 + len(products)
        return True

    def _advance_order(self, conn: psycopg.Connection, stats: WorkloadStats) -> bool:
        order = self._pick_id(
            conn,
            "SELECT max(id) FROM orders WHERE status IN ('pending', 'paid', 'shipped')",
            "SELECT id FROM orders WHERE id >= %s AND status IN ('pending', 'paid', 'shipped')"
            " ORDER BY id LIMIT 1",
        )
        if order is None:
            return False
        row = conn.execute(
            "SELECT status FROM orders WHERE id = %s FOR UPDATE", (order,)
        ).fetchone()
        if row is None:
            return False
        status = row[0]
        new = (
            "cancelled" if status == "pending" and self._rng.random() < 0.1 else NEXT_STATUS[status]
        )
        conn.execute(
            "UPDATE orders SET status = %s, updated_at = now() WHERE id = %s", (new, order)
        )
        stats.updates += 1
        return True

    def _change_price(self, conn: psycopg.Connection, stats: WorkloadStats) -> bool:
        product = self._pick_id(
            conn,
            "SELECT max(id) FROM products",
            "SELECT id FROM products WHERE id >= %s ORDER BY id LIMIT 1",
        )
        if product is None:
            return False
        factor = Decimal(self._rng.randint(90, 110)) / 100
        conn.execute(
            "UPDATE products SET price = greatest(round(price * %s, 2), 0.50),"
            " attributes = jsonb_set(attributes, '{on_sale}', to_jsonb(%s::boolean)),"
            " updated_at = now() WHERE id = %s",
            (factor, factor < 1, product),
        )
        stats.updates += 1
        return True

    def _new_customer(self, conn: psycopg.Connection, stats: WorkloadStats) -> bool:
        name = random_name(self._rng)
        conn.execute(
            "INSERT INTO customers (email, name, country, marketing_opt_in)"
            " VALUES (%s, %s, %s, %s)",
            (
                customer_email(self._rng, name),
                name,
                self._rng.choice(COUNTRIES),
                self._rng.random() < 0.4,
            ),
        )
        stats.inserts += 1
        return True

    def _update_customer(self, conn: psycopg.Connection, stats: WorkloadStats) -> bool:
        customer = self._pick_id(
            conn,
            "SELECT max(id) FROM customers",
            "SELECT id FROM customers WHERE id >= %s ORDER BY id LIMIT 1",
        )
        if customer is None:
            return False
        conn.execute(
            "UPDATE customers SET country = %s, marketing_opt_in = NOT marketing_opt_in,"
            " updated_at = now() WHERE id = %s",
            (self._rng.choice(COUNTRIES), customer),
        )
        stats.updates += 1
        return True

    def _delete_order(self, conn: psycopg.Connection, stats: WorkloadStats) -> bool:
        order = self._pick_id(
            conn,
            "SELECT max(id) FROM orders WHERE status IN ('delivered', 'cancelled')",
            "SELECT id FROM orders WHERE id >= %s AND status IN ('delivered', 'cancelled')"
            " ORDER BY id LIMIT 1",
        )
        if order is None:
            return False
        items = conn.execute("DELETE FROM order_items WHERE order_id = %s", (order,)).rowcount
        deleted = conn.execute("DELETE FROM orders WHERE id = %s", (order,)).rowcount
        stats.deletes += items + deleted
        return deleted > 0

    def _delete_customer(self, conn: psycopg.Connection, stats: WorkloadStats) -> bool:
        deleted = conn.execute(
            "DELETE FROM customers WHERE id = (SELECT c.id FROM customers c WHERE NOT EXISTS"
            " (SELECT 1 FROM orders o WHERE o.customer_id = c.id) ORDER BY c.id LIMIT 1)"
        ).rowcount
        stats.deletes += deleted
        return deleted > 0

    # --- the loop -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Change the database at the configured rate until ``stop`` is set."""
        interval = 1.0 / self._rate if self._rate > 0 else 0.0
        backoff = 0.5
        conn: psycopg.Connection | None = None
        next_at = time.monotonic()
        try:
            while not stop.is_set():
                try:
                    if conn is None or conn.closed:
                        conn = psycopg.connect(self._conninfo, connect_timeout=5)
                        backoff = 0.5
                    self.step(conn)
                except psycopg.OperationalError as exc:
                    self.stats.errors += 1
                    log.warning(
                        "workload: database unavailable (%s); retrying in %.1fs", exc, backoff
                    )
                    if conn is not None:
                        conn.close()
                    conn = None
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
                    next_at = time.monotonic()
                    continue
                except psycopg.Error:
                    self.stats.errors += 1
                    log.exception("workload: a transaction failed; going on")
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    stop.wait(delay)
                elif delay < -1.0:
                    next_at = time.monotonic()
        finally:
            if conn is not None:
                conn.close()


class WorkloadThread:
    """Runs a :class:`Workload` in a daemon thread; :meth:`stop` ends it and waits."""

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=workload.run, args=(self._stop,), name="workload", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
