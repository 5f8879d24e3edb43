"""Views stay exact when change events arrive twice (ingest's at-least-once delivery after a
crash) and across TRUNCATE."""

from __future__ import annotations

import random
import uuid
from typing import Any

from confluent_kafka import Consumer, Producer

from freshet.common import topics
from freshet.common.kafka import consumer_config, producer_config, read_to_end
from freshet.devstack.harness import wait_applied

from .test_views_oracle import assert_views_equal_oracle, current_lsn
from .views_workload import SCHEMA, TABLES, VIEWS, Workload


def replay(bootstrap: str, topic: str, fraction: float, rng: random.Random) -> int:
    """Write the last ``fraction`` of every partition of ``topic`` again, in order, as ingest
    does when it resumes from an older confirmed position; returns how many records."""
    consumer = Consumer(consumer_config(bootstrap, f"replay-{uuid.uuid4().hex}"))
    producer = Producer(producer_config(bootstrap))
    records: dict[int, list[Any]] = {}
    try:
        for msg in read_to_end(consumer, topic):
            records.setdefault(msg.partition() or 0, []).append(msg)
    finally:
        consumer.close()
    count = 0
    for partition, msgs in records.items():
        start = int(len(msgs) * (1 - fraction * rng.uniform(0.5, 1.0)))
        for msg in msgs[start:]:
            producer.produce(
                topic,
                key=msg.key(),
                value=msg.value(),
                headers=msg.headers(),
                partition=partition,
            )
            count += 1
    assert producer.flush(30) == 0
    return count


def test_duplicated_change_events_are_recognised_and_skipped(
    kafka: Any, pg_database: Any, control: Any, ingest: Any, transform: Any, unique: str
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    conn = pg_database.connect()
    conn.execute(SCHEMA)
    work = Workload(seed)
    work.seed_rows(conn)
    control.add_source(pg_database, unique, TABLES)
    catalog = control.catalog({f"{unique}.{t}" for t in TABLES})
    names = {view: f"{unique}_{view}" for view in VIEWS}
    for view, sql in VIEWS.items():
        control.add_view(names[view], sql, catalog)
    for _ in range(80):
        work.step(conn)
    wait_applied(kafka.bootstrap, list(names.values()), unique, current_lsn(conn))

    replayed = sum(
        replay(kafka.bootstrap, topics.cdc_topic(unique, *t.split(".")), 0.5, rng) for t in TABLES
    )
    assert replayed > 50
    # Changes after the duplicates, then wait for them: the views must have gone through the
    # duplicates without applying any of them a second time.
    for _ in range(40):
        work.step(conn)
    statuses = wait_applied(kafka.bootstrap, list(names.values()), unique, current_lsn(conn))
    assert_views_equal_oracle(kafka, conn, names, catalog)
    skipped = [
        s.nodes[node].events_in - s.nodes[node].events_out
        for s in statuses.values()
        for node in s.nodes
        if node.startswith("table:")
    ]
    assert sum(skipped) > 0, f"seed {seed}: no duplicate was recognised"


def test_truncate_empties_the_table_in_every_view(
    kafka: Any, pg_database: Any, control: Any, ingest: Any, transform: Any, unique: str
) -> None:
    seed = random.randrange(1 << 30)
    conn = pg_database.connect()
    conn.execute(SCHEMA)
    work = Workload(seed)
    work.seed_rows(conn)
    control.add_source(pg_database, unique, TABLES)
    catalog = control.catalog({f"{unique}.{t}" for t in TABLES})
    names = {view: f"{unique}_{view}" for view in VIEWS}
    for view, sql in VIEWS.items():
        control.add_view(names[view], sql, catalog)
    conn.execute("TRUNCATE order_items")
    conn.execute("TRUNCATE orders CASCADE")
    for _ in range(30):
        work.step(conn)
    wait_applied(kafka.bootstrap, list(names.values()), unique, current_lsn(conn))
    assert_views_equal_oracle(kafka, conn, names, catalog)
