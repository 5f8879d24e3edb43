"""Views materialized by serve equal PostgreSQL: in Redis and in the target database's tables.

PostgreSQL -> ingest -> Kafka -> transform -> view topics -> serve -> Redis and PostgreSQL, all
real. Waiting is on positions, never on time: transform reports (read-your-writes status) that
every view applied the source's current LSN, once that is so the view topics hold everything up
to it, and serve has applied a topic up to its end when the offsets stored with its rows (the
``freshet._offsets`` table, the Redis ``meta`` hash) reach the topic's end offsets.

The stores are compared with the oracle: the view's SQL run by the source PostgreSQL.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
import redis
from confluent_kafka import Consumer
from confluent_kafka import TopicPartition as TP
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql
from pydantic import SecretStr

from freshet.common import topics
from freshet.common.kafka import consumer_config, read_to_end
from freshet.common.products import ProductRole
from freshet.common.sql.types import encoder
from freshet.devstack import servers
from freshet.devstack.harness import ServiceThread, wait_applied
from freshet.devstack.supervisor import Child, log_tail, wait_healthy
from freshet.serve.config import ServeSettings
from freshet.serve.service import ServeService

from .serve_util import all_rows, publish_key, publish_product, wait_readable
from .test_views_chaos import Background
from .test_views_oracle import current_lsn
from .views_workload import SCHEMA, TABLES, VIEWS, Workload, canonical, oracle_rows

TARGET_SCHEMA = "freshet"


@pytest.fixture
def target(postgres_server: Any, unique: str) -> Iterator[tuple[str, str]]:
    """Serve's target database: (SQLAlchemy URL, psycopg conninfo); dropped afterwards."""
    dbname = f"{unique}_target"
    with psycopg.connect(postgres_server.conninfo(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    s = postgres_server
    yield (
        f"postgresql+psycopg://{s.user}:{s.password}@{s.host}:{s.port}/{dbname}",
        s.conninfo(dbname),
    )
    with psycopg.connect(postgres_server.conninfo(), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(dbname)))


def _serve_env(kafka: Any, redis_url: str, target_url: str, unique: str) -> dict[str, str]:
    return {
        "FRESHET_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "FRESHET_REDIS_URL": redis_url,
        "FRESHET_TARGET_DATABASE_URL": target_url,
        "FRESHET_SERVE_GROUP": f"serve-{unique}",
        "FRESHET_SERVE_REDIS_PREFIX": f"test:{unique}",
        "FRESHET_SERVE_TARGET_SCHEMA": TARGET_SCHEMA,
        "FRESHET_SERVE_RETRY_INITIAL_S": "0.5",
        "FRESHET_SERVE_RETRY_MAX_S": "2",
        "FRESHET_TOPIC_PARTITIONS": "3",
    }


# --- reading the stores ------------------------------------------------------------------------


def topic_ends(kafka: Any, topic: str) -> dict[int, int]:
    """The end offset of every partition of ``topic``, from fetch responses (never ListOffsets)."""
    consumer = Consumer(consumer_config(kafka.bootstrap, f"ends-{uuid.uuid4().hex}"))
    try:
        parts = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        for _ in read_to_end(consumer, topic, timeout=60, partitions=parts):
            pass
        return {p: consumer.get_watermark_offsets(TP(topic, p), cached=True)[1] for p in parts}
    finally:
        consumer.close()


def pg_offsets(conninfo: str, view: str) -> dict[int, int]:
    try:
        with psycopg.connect(conninfo) as pg:
            rows = pg.execute(
                sql.SQL(
                    "SELECT o.partition, o.next_offset FROM {}._offsets o JOIN {}._views v "
                    "ON v.view = o.view AND v.generation = o.generation WHERE o.view = %s"
                ).format(sql.Identifier(TARGET_SCHEMA), sql.Identifier(TARGET_SCHEMA)),
                (view,),
            ).fetchall()
    except psycopg.errors.UndefinedTable:
        return {}
    return {int(p): int(o) for p, o in rows}


def redis_prefix(unique: str, view: str, generation: int = 1) -> str:
    return f"test:{unique}:{{{view}}}:g{generation}"


def redis_offsets(client: Any, unique: str, view: str) -> dict[int, int]:
    meta = client.hgetall(redis_prefix(unique, view) + ":meta")
    return {int(k.decode()[2:]): int(v) for k, v in meta.items() if k.decode().startswith("o:")}


def wait_served(
    kafka: Any,
    views: list[str],
    conninfo: str,
    client: Any,
    unique: str,
    timeout: float = 180.0,
) -> None:
    """Wait until both stores of every view applied its topic up to the current end."""
    ends = {v: topic_ends(kafka, topics.view_topic(v)) for v in views}
    deadline = time.monotonic() + timeout
    behind: dict[str, Any] = {}
    while time.monotonic() < deadline:
        behind = {}
        for view in views:
            stored = {
                "postgres": pg_offsets(conninfo, view),
                "redis": redis_offsets(client, unique, view),
            }
            for store, offsets in stored.items():
                late = {
                    p: (offsets.get(p, 0), end)
                    for p, end in ends[view].items()
                    if offsets.get(p, 0) < end
                }
                if late:
                    behind[f"{view}/{store}"] = late
        if not behind:
            return
        time.sleep(0.1)
    raise AssertionError(f"serve did not reach the ends of the view topics: {behind}")


def _engine_value(type_: str, value: Any) -> Any:
    return encoder(type_)(value)


def pg_view_rows(conninfo: str, view: str, columns: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """The view's table as a SQL user reads it, encoded like view rows."""
    query = sql.SQL("SELECT {} FROM {}.{}").format(
        sql.SQL(", ").join(sql.Identifier(n) for n, _ in columns),
        sql.Identifier(TARGET_SCHEMA),
        sql.Identifier(view),
    )
    with psycopg.connect(conninfo) as pg:
        rows = pg.execute(query).fetchall()
    return [
        {n: _engine_value(t, v) for (n, t), v in zip(columns, row, strict=True)} for row in rows
    ]


def redis_view_rows(client: Any, unique: str, view: str) -> list[dict[str, Any]]:
    return [orjson.loads(v) for v in client.hvals(redis_prefix(unique, view) + ":rows")]


def assert_stores_equal_oracle(
    conn: Any, conninfo: str, client: Any, unique: str, names: dict[str, str], catalog: Any
) -> None:
    from freshet.common.sql.views import compile_view

    mismatches = []
    for view, view_sql in VIEWS.items():
        if view not in names:
            continue
        name = names[view]
        want = canonical(oracle_rows(conn, name, view_sql, catalog))
        columns = [(c.name, c.type) for c in compile_view(name, view_sql, catalog).columns]
        got = {
            "postgres": canonical(pg_view_rows(conninfo, name, columns)),
            "redis": canonical(redis_view_rows(client, unique, name)),
        }
        for store, rows in got.items():
            if rows != want:
                missing = sorted(set(want) - set(rows))[:5]
                extra = sorted(set(rows) - set(want))[:5]
                mismatches.append(
                    f"{view} in {store}: {len(rows)} rows vs {len(want)}; missing {missing}; "
                    f"extra {extra}"
                )
    assert not mismatches, "\n".join(mismatches)


def assert_rest_equals_oracle(
    child: Child, key: str, conn: Any, names: dict[str, str], catalog: Any
) -> None:
    """Every product's full listing over REST (all pages) equals its view's oracle."""
    mismatches = []
    with httpx.Client(base_url=f"http://127.0.0.1:{child.port}", timeout=60) as http:
        for view, view_sql in VIEWS.items():
            name = names[view]
            wait_readable(http, name, key)
            want = canonical(oracle_rows(conn, name, view_sql, catalog))
            got = canonical(all_rows(http, name, key, limit=7))
            if got != want:
                missing = sorted(set(want) - set(got))[:5]
                extra = sorted(set(got) - set(want))[:5]
                mismatches.append(
                    f"{view} over REST: {len(got)} rows vs {len(want)}; missing {missing}; "
                    f"extra {extra}"
                )
    assert not mismatches, "\n".join(mismatches)


# --- the tests ---------------------------------------------------------------------------------

SHOWN = ("v_by_region", "v_inner")
"""A GROUP BY over a LEFT JOIN (nullable key, the unique NULLS NOT DISTINCT constraint) and an
inner join (a key of two primary keys, one of them a key-only field)."""


def test_a_change_and_a_delete_reach_postgresql_and_redis(
    kafka: Any,
    pg_database: Any,
    redis_server: str,
    control: Any,
    ingest: Any,
    transform: Any,
    unique: str,
    target: tuple[str, str],
) -> None:
    target_url, conninfo = target
    conn = pg_database.connect()
    conn.execute(SCHEMA)
    Workload(11).seed_rows(conn)
    control.add_source(pg_database, unique, TABLES)
    catalog = control.catalog({f"{unique}.{t}" for t in TABLES})
    names = {view: f"{unique}_{view}" for view in SHOWN}
    for view in SHOWN:
        control.add_view(names[view], VIEWS[view], catalog)

    env = _serve_env(kafka, redis_server, target_url, unique)
    settings = ServeSettings(**{k.removeprefix("FRESHET_").lower(): v for k, v in env.items()})
    assert settings.target_database_url == SecretStr(target_url)
    serve = ServiceThread(ServeService(settings, "test").run).start()
    client = redis.Redis.from_url(redis_server)
    views = list(names.values())

    def settle() -> None:
        wait_applied(kafka.bootstrap, views, unique, current_lsn(conn))
        wait_served(kafka, views, conninfo, client, unique)

    try:
        settle()
        assert_stores_equal_oracle(conn, conninfo, client, unique, names, catalog)
        inner, by_region = names["v_inner"], names["v_by_region"]

        # A change in the source: an order's amount, and a customer moving region.
        order_id, customer_id = conn.execute(
            "SELECT o.id, o.customer_id FROM orders o JOIN customers c ON c.id = o.customer_id "
            "ORDER BY o.id LIMIT 1"
        ).fetchone()
        conn.execute("UPDATE orders SET amount = 4242.42 WHERE id = %s", (order_id,))
        conn.execute("UPDATE customers SET region = 'atlantis' WHERE id = %s", (customer_id,))
        settle()
        with psycopg.connect(conninfo) as pg:
            amount = pg.execute(
                sql.SQL("SELECT amount, region FROM {}.{} WHERE id = %s").format(
                    sql.Identifier(TARGET_SCHEMA), sql.Identifier(inner)
                ),
                (order_id,),
            ).fetchone()
            assert amount == (Decimal("4242.42"), "atlantis")
        redis_rows = {r["id"]: r for r in redis_view_rows(client, unique, inner)}
        assert (redis_rows[order_id]["amount"], redis_rows[order_id]["region"]) == (
            "4242.42",
            "atlantis",
        )
        assert_stores_equal_oracle(conn, conninfo, client, unique, names, catalog)

        # A delete: the order leaves the join view; the customers move out of a region.
        conn.execute("DELETE FROM orders WHERE id = %s", (order_id,))
        conn.execute("UPDATE customers SET region = 'north' WHERE region = 'atlantis'")
        settle()
        with psycopg.connect(conninfo) as pg:
            assert (
                pg.execute(
                    sql.SQL("SELECT count(*) FROM {}.{} WHERE id = %s").format(
                        sql.Identifier(TARGET_SCHEMA), sql.Identifier(inner)
                    ),
                    (order_id,),
                ).fetchone()[0]
                == 0
            )
            regions = pg.execute(
                sql.SQL("SELECT region FROM {}.{}").format(
                    sql.Identifier(TARGET_SCHEMA), sql.Identifier(by_region)
                )
            ).fetchall()
            assert ("atlantis",) not in regions
        assert order_id not in {r["id"] for r in redis_view_rows(client, unique, inner)}
        assert "atlantis" not in {r["region"] for r in redis_view_rows(client, unique, by_region)}
        assert_stores_equal_oracle(conn, conninfo, client, unique, names, catalog)

        # A view deleted: its table and its Redis keys go.
        control.delete_view(by_region)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with psycopg.connect(conninfo) as pg:
                table = pg.execute(
                    "SELECT to_regclass(%s)", (f"{TARGET_SCHEMA}.{by_region}",)
                ).fetchone()[0]
            if table is None and not client.keys(f"test:{unique}:{{{by_region}}}:*"):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"{by_region} was not dropped from the stores")
    finally:
        serve.shutdown()
        client.close()


class ServeProcess:
    """``python -m freshet.serve`` as a real process, restarted after each kill."""

    def __init__(self, env: dict[str, str], tmp: Path) -> None:
        self.env = env
        self.tmp = tmp
        self.child: Child | None = None
        self.starts = 0

    def start(self) -> Child:
        for _attempt in range(3):  # a free port can be taken before the child binds it
            child = self._start()
            result = wait_healthy(child, timeout=60)
            if result.ok:
                self.child = child
                return child
            child.stop()
        raise AssertionError(f"{result.detail}\n{log_tail(child.log_path, 60)}")

    def _start(self) -> Child:
        self.starts += 1
        port = servers.free_port()
        child = Child(
            "serve",
            [sys.executable, "-m", "freshet.serve"],
            {
                **os.environ,
                **self.env,
                "FRESHET_SERVE_PORT": str(port),
                "FRESHET_INSTANCE_ID": f"serve-{self.starts}",
            },
            self.tmp / f"serve-{self.starts}.log",
            port=port,
            health_url=f"http://127.0.0.1:{port}/health",
        )
        child.start()
        return child

    def kill(self) -> None:
        assert self.child is not None and self.child.proc is not None
        os.kill(self.child.proc.pid, signal.SIGKILL)
        self.child.proc.wait(10)
        self.child = None

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()


@pytest.mark.slow
def test_stores_equal_postgresql_after_serve_is_killed_repeatedly(
    kafka: Any,
    pg_database: Any,
    redis_server: str,
    control: Any,
    ingest: Any,
    transform: Any,
    unique: str,
    target: tuple[str, str],
    tmp_path: Path,
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    target_url, conninfo = target
    conn = pg_database.connect()
    conn.execute(SCHEMA)
    Workload(seed).seed_rows(conn)
    control.add_source(pg_database, unique, TABLES)
    catalog = control.catalog({f"{unique}.{t}" for t in TABLES})
    names = {view: f"{unique}_{view}" for view in VIEWS}
    for view, view_sql in VIEWS.items():
        spec = control.add_view(names[view], view_sql, catalog)
        publish_product(control, spec, names[view], {"reader": ProductRole()})
    key = publish_key(control, ["reader"], list(names.values()))
    serve = ServeProcess(_serve_env(kafka, redis_server, target_url, unique), tmp_path)
    client = redis.Redis.from_url(redis_server)
    views = list(names.values())

    def applied_so_far() -> int:
        return sum(
            sum(pg_offsets(conninfo, v).values()) + sum(redis_offsets(client, unique, v).values())
            for v in views
        )

    try:
        serve.start()
        with Background(pg_database.connect(), seed + 1) as load:
            for _ in range(4):
                # Kill only a serve that is writing: the stores moved since it started.
                before, deadline = applied_so_far(), time.monotonic() + 60
                while applied_so_far() <= before:
                    assert time.monotonic() < deadline, "serve made no progress"
                    time.sleep(0.05)
                time.sleep(rng.uniform(0.0, 2.0))
                serve.kill()
                serve.start()
            steps = load.finish()
        assert steps > 100, f"the workload made only {steps} steps"
        wait_applied(kafka.bootstrap, views, unique, current_lsn(conn), timeout=180)
        wait_served(kafka, views, conninfo, client, unique)
        assert_stores_equal_oracle(conn, conninfo, client, unique, names, catalog)
        assert serve.child is not None
        assert_rest_equals_oracle(serve.child, key, conn, names, catalog)
        assert_metrics_caught_up(serve.child, views)
    except AssertionError as exc:
        raise AssertionError(f"seed {seed}: {exc}") from None
    finally:
        serve.stop()
        client.close()


def _samples(text: str, metric: str) -> dict[tuple[str, str], float]:
    """``{(view, store): value}`` of one metric in Prometheus' text format."""
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == metric:
                out[(sample.labels["view"], sample.labels["store"])] = sample.value
    return out


def assert_metrics_caught_up(child: Child, views: list[str], timeout: float = 30) -> None:
    """/metrics shows no lag and rows applied for every view and store, /health says ready."""
    base = f"http://127.0.0.1:{child.port}"
    wanted = {(v, store) for v in views for store in ("postgres", "redis")}
    deadline = time.monotonic() + timeout
    while True:
        text = httpx.get(f"{base}/metrics").text
        lag = _samples(text, "freshet_serve_lag_messages")
        if all(lag.get(k) == 0 for k in wanted) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {k: lag.get(k) for k in wanted} == dict.fromkeys(wanted, 0.0)
    # Counters are the process's own: this one may have had nothing left to do for some views.
    rows = _samples(text, "freshet_serve_rows_applied_total")
    assert sum(rows.get(k, 0) for k in wanted) > 0, rows
    health = httpx.get(f"{base}/health").json()
    assert (health["status"], health["redis"], health["postgres"]) == ("ok", "ok", "ok")
    for view in views:
        assert health["views"][view]["stores"] == {
            "redis": {"state": "ready", "lag": 0},
            "postgres": {"state": "ready", "lag": 0},
        }


@pytest.mark.slow
def test_two_replicas_share_the_views_and_one_dies(
    kafka: Any,
    pg_database: Any,
    redis_server: str,
    control: Any,
    ingest: Any,
    transform: Any,
    unique: str,
    target: tuple[str, str],
    tmp_path: Path,
) -> None:
    seed = random.randrange(1 << 30)
    target_url, conninfo = target
    conn = pg_database.connect()
    conn.execute(SCHEMA)
    Workload(seed).seed_rows(conn)
    control.add_source(pg_database, unique, TABLES)
    catalog = control.catalog({f"{unique}.{t}" for t in TABLES})
    names = {view: f"{unique}_{view}" for view in VIEWS}
    for view, view_sql in VIEWS.items():
        control.add_view(names[view], view_sql, catalog)
    views = list(names.values())
    env = _serve_env(kafka, redis_server, target_url, unique)
    first, second = ServeProcess(env, tmp_path / "a"), ServeProcess(env, tmp_path / "b")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    client = redis.Redis.from_url(redis_server)

    def running(child: Child) -> set[str]:
        body = httpx.get(f"http://127.0.0.1:{child.port}/health").json()
        return {v for v in body.get("views", {}) if v in views}

    try:
        a, b = first.start(), second.start()
        deadline = time.monotonic() + 90
        while not (running(a) and running(b) and running(a) | running(b) == set(views)):
            assert time.monotonic() < deadline, (running(a), running(b))
            time.sleep(0.2)
        assert not running(a) & running(b), "a view runs on both replicas"
        with Background(pg_database.connect(), seed + 1) as load:
            time.sleep(3)
            first.kill()
            time.sleep(3)
            steps = load.finish()
        assert steps > 50, f"the workload made only {steps} steps"
        wait_applied(kafka.bootstrap, views, unique, current_lsn(conn), timeout=180)
        wait_served(kafka, views, conninfo, client, unique)
        assert_stores_equal_oracle(conn, conninfo, client, unique, names, catalog)
        assert running(b) == set(views), "the survivor runs every view"
    except AssertionError as exc:
        raise AssertionError(f"seed {seed}: {exc}") from None
    finally:
        first.stop()
        second.stop()
        client.close()
