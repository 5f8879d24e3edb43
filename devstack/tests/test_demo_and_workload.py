"""The demo shop database and its workload against the real PostgreSQL."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from freshet.devstack import demo
from freshet.devstack.workload import Workload, WorkloadThread

ORPHANS = {
    "order_items without order": "SELECT count(*) FROM order_items i"
    " LEFT JOIN orders o ON o.id = i.order_id WHERE o.id IS NULL",
    "order_items without product": "SELECT count(*) FROM order_items i"
    " LEFT JOIN products p ON p.id = i.product_id WHERE p.id IS NULL",
    "orders without customer": "SELECT count(*) FROM orders o"
    " LEFT JOIN customers c ON c.id = o.customer_id WHERE c.id IS NULL",
}


def _counts(conn: psycopg.Connection) -> dict[str, int]:
    return {
        table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        for table in ("customers", "products", "orders", "order_items")
    }


def _assert_integrity(conn: psycopg.Connection) -> None:
    for what, query in ORPHANS.items():
        assert conn.execute(query).fetchone()[0] == 0, what
    empty = conn.execute(
        "SELECT count(*) FROM orders o WHERE NOT EXISTS"
        " (SELECT 1 FROM order_items i WHERE i.order_id = o.id)"
    ).fetchone()[0]
    assert empty == 0, "every order has at least one item"


@pytest.fixture
def shop(pg_database):
    assert demo.ensure_demo_database(pg_database.server, pg_database.dbname)
    return pg_database


def test_demo_database_is_created_seeded_once_and_has_keys(shop):
    assert not demo.ensure_demo_database(shop.server, shop.dbname)  # second time: left alone
    with shop.connect() as conn:
        counts = _counts(conn)
        assert counts["customers"] == 120
        assert counts["products"] == 40
        assert counts["orders"] == 300
        assert 300 <= counts["order_items"] <= 1200
        _assert_integrity(conn)
        keys = conn.execute(
            "SELECT conrelid::regclass::text, contype, count(*) FROM pg_constraint"
            " WHERE connamespace = 'public'::regnamespace AND contype IN ('p', 'f')"
            " GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
        assert keys == [
            ("customers", "p", 1),
            ("order_items", "f", 2),
            ("order_items", "p", 1),
            ("orders", "f", 1),
            ("orders", "p", 1),
            ("products", "p", 1),
        ]
        types = dict(
            conn.execute(
                "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = 'public'"
            ).fetchall()
        )
        assert types["products.price"] == "numeric"
        assert types["products.attributes"] == "jsonb"
        assert types["customers.email"] == "text"
        assert types["orders.created_at"] == "timestamp with time zone"


def test_workload_steps_insert_update_and_delete_and_keep_integrity(shop):
    workload = Workload(shop.conninfo(), seed=11)
    with psycopg.connect(shop.conninfo()) as conn:
        before = _counts(conn)
        conn.commit()
        for _ in range(400):
            workload.step(conn)
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        stats = workload.stats
        assert stats.transactions == 400
        assert stats.inserts > 0 and stats.updates > 0 and stats.deletes > 0
        _assert_integrity(conn)
        after = _counts(conn)
        net = sum(after.values()) - sum(before.values())
        assert net == stats.inserts - stats.deletes
        statuses = dict(conn.execute("SELECT status, count(*) FROM orders GROUP BY 1").fetchall())
        assert statuses.keys() <= set(demo.ORDER_STATUSES)


def test_workload_thread_keeps_its_pace_and_survives_a_lost_connection(shop):
    rate = 50.0
    thread = WorkloadThread(Workload(shop.conninfo(), rate=rate, seed=3))
    started = time.monotonic()
    thread.start()
    try:
        stats = thread.workload.stats
        _wait(lambda: stats.transactions >= 20, 30)
        with psycopg.connect(shop.server.conninfo(), autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (shop.dbname,),
            )
        seen = stats.transactions
        _wait(lambda: stats.transactions >= seen + 20, 30)
    finally:
        thread.stop()
    elapsed = time.monotonic() - started
    assert not thread.alive()
    assert stats.inserts > 0 and stats.updates > 0
    assert stats.transactions <= rate * (elapsed + 1.5), "the workload ran faster than its rate"
    with shop.connect() as conn:
        _assert_integrity(conn)


def _wait(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        threading.Event().wait(0.05)
