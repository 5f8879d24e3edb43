"""What a view reports on ``freshet.status``: running with counts, positions and freshness; an
error with its reason; stalled when its inputs have changes it does not apply."""

from __future__ import annotations

import time
import uuid
from typing import Any

import redis
from confluent_kafka import Consumer

from freshet.common import topics
from freshet.common.kafka import consumer_config, read_to_end
from freshet.common.schemas import DataflowStatus
from freshet.devstack.harness import (
    ServiceThread,
    first_view_status,
    fold,
    view_status,
    wait_applied,
)
from freshet.transform.service import TransformService

from .test_views_oracle import current_lsn


def consumer_ends(bootstrap: str, topic: str) -> dict[int, int]:
    """Each partition's end, as the next offset after the last record read."""
    consumer = Consumer(consumer_config(bootstrap, f"ends-{uuid.uuid4().hex}"))
    ends: dict[int, int] = {}
    try:
        for msg in read_to_end(consumer, topic):
            ends[msg.partition() or 0] = (msg.offset() or 0) + 1
    finally:
        consumer.close()
    return ends


def wait_status(kafka: Any, name: str, predicate: Any, timeout: float = 60.0) -> DataflowStatus:
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = view_status(kafka.bootstrap, name)
        if status is not None and predicate(status):
            return status
        time.sleep(0.3)
    raise AssertionError(f"status of {name} never matched; last: {status}")


def test_a_running_view_reports_counts_positions_and_freshness(
    kafka: Any, pg_database: Any, control: Any, ingest: Any, transform: Any, unique: str
) -> None:
    conn = pg_database.connect()
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, g text, v int)")
    conn.execute("INSERT INTO t SELECT i, 'g' || (i % 3), i FROM generate_series(1, 30) i")
    control.add_source(pg_database, unique, ["public.t"])
    catalog = control.catalog({f"{unique}.public.t"})
    name = f"{unique}_sums"
    control.add_view(name, "SELECT g, sum(v) AS total FROM t GROUP BY g", catalog)
    conn.execute("UPDATE t SET v = v + 1 WHERE id <= 5")
    conn.execute("DELETE FROM t WHERE id = 30")
    lsn = current_lsn(conn)

    status = wait_applied(kafka.bootstrap, [name], unique, lsn)[name]

    assert status.state == "running"
    assert status.applied[unique] >= lsn
    table = status.nodes[f"table:{unique}.public.t"]
    assert table.events_in >= 36  # 30 snapshot reads, 5 updates, 1 delete
    assert table.events_out == table.events_in  # nothing was a duplicate
    assert status.nodes["output"].events_out >= 3
    ends = consumer_ends(kafka.bootstrap, topics.view_topic(name))
    assert status.outputs and all(ends[p] == end for p, end in status.outputs.items())
    assert status.freshness_ms is not None and status.last_commit_ts_ms is not None
    rows = fold(kafka.bootstrap, topics.view_topic(name))
    want = dict(conn.execute("SELECT g, sum(v) FROM t GROUP BY g").fetchall())
    assert {r["g"]: r["total"] for r in rows.values()} == want


def test_a_view_that_cannot_apply_an_event_reports_error_with_the_reason(
    kafka: Any, pg_database: Any, control: Any, ingest: Any, transform: Any, unique: str
) -> None:
    conn = pg_database.connect()
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, g text, v int)")
    conn.execute("INSERT INTO t VALUES (1, 'a', 1)")
    control.add_source(pg_database, unique, ["public.t"])
    catalog = control.catalog({f"{unique}.public.t"})
    name = f"{unique}_by_g"
    control.add_view(name, "SELECT g, count(*) AS n FROM t GROUP BY g", catalog)
    wait_applied(kafka.bootstrap, [name], unique, current_lsn(conn))

    conn.execute("ALTER TABLE t DROP COLUMN g")
    conn.execute("INSERT INTO t VALUES (2, 2)")

    status = wait_status(kafka, name, lambda s: s.state == "error")
    assert status.reason is not None
    # Either the event that lacks the column, or (once ingest published the altered table and
    # the view was retried) its SQL against the new schema: both name the missing column.
    reason = status.reason
    assert ("column g" in reason and "missing" in reason) or 'column "g" does not exist' in reason


def test_a_view_whose_inputs_have_changes_but_no_progress_is_reported_stalled(
    kafka: Any, pg_database: Any, control: Any, ingest: Any, transform_settings: Any, unique: str
) -> None:
    conn = pg_database.connect()
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
    control.add_source(pg_database, unique, ["public.t"])
    catalog = control.catalog({f"{unique}.public.t"})
    name = f"{unique}_stuck"
    control.add_view(name, "SELECT count(*) AS n FROM t", catalog)
    settings = transform_settings.model_copy(update={"transform_stall_after_s": 3})
    service = ServiceThread(TransformService(settings, "test").run).start()
    store = redis.Redis.from_url(settings.redis_url)
    try:
        wait_status(kafka, name, lambda s: s.state == "running")
        # Redis refuses writes for a while: the view's commit blocks, nothing progresses. (Its
        # Redis client gives up after 5 s and the view then reports an error: every report is
        # checked, not only the latest, so the stalled one between is not missed.)
        store.execute_command("CLIENT", "PAUSE", "60000", "WRITE")
        conn.execute("INSERT INTO t VALUES (1, 1)")
        status = first_view_status(kafka.bootstrap, name, lambda s: s.state == "stalled")
        assert status.reason is not None and "nothing was applied" in status.reason
        store.execute_command("CLIENT", "UNPAUSE")
        wait_applied(kafka.bootstrap, [name], unique, current_lsn(conn))
        assert wait_status(kafka, name, lambda s: s.state == "running").state == "running"
    finally:
        store.execute_command("CLIENT", "UNPAUSE")
        service.shutdown()


def test_a_replaced_view_leaves_no_rows_of_its_old_sql_on_its_topic(
    kafka: Any, pg_database: Any, control: Any, ingest: Any, transform: Any, unique: str
) -> None:
    conn = pg_database.connect()
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
    conn.execute("INSERT INTO t SELECT i, i FROM generate_series(1, 20) i")
    control.add_source(pg_database, unique, ["public.t"])
    catalog = control.catalog({f"{unique}.public.t"})
    name = f"{unique}_part"
    control.add_view(name, "SELECT id, v FROM t WHERE v <= 10", catalog)
    wait_applied(kafka.bootstrap, [name], unique, current_lsn(conn))
    assert len(fold(kafka.bootstrap, topics.view_topic(name))) == 10

    control.add_view(name, "SELECT id, v * 2 AS v FROM t WHERE v > 15", catalog, generation=2)
    lsn = current_lsn(conn)
    wait_status(kafka, name, lambda s: s.generation == 2 and s.applied.get(unique, -1) >= lsn)

    rows = fold(kafka.bootstrap, topics.view_topic(name))
    assert sorted(r["v"] for r in rows.values()) == [32, 34, 36, 38, 40]


def test_a_restarted_view_reports_the_outputs_written_before_it_restarted(
    kafka: Any, pg_database: Any, control: Any, ingest: Any, transform_settings: Any, unique: str
) -> None:
    """Serve's read-your-writes waits for the outputs a status names: after a restart they must
    still cover the rows the previous run wrote, before this run writes anything."""
    conn = pg_database.connect()
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, g text, v int)")
    conn.execute("INSERT INTO t SELECT i, 'g' || (i % 7), i FROM generate_series(1, 50) i")
    control.add_source(pg_database, unique, ["public.t"])
    catalog = control.catalog({f"{unique}.public.t"})
    name = f"{unique}_groups"
    control.add_view(name, "SELECT g, sum(v) AS total FROM t GROUP BY g", catalog)
    first = ServiceThread(TransformService(transform_settings, "first").run).start()
    try:
        wait_applied(kafka.bootstrap, [name], unique, current_lsn(conn))
    finally:
        first.shutdown()
    ends = consumer_ends(kafka.bootstrap, topics.view_topic(name))
    assert sum(ends.values()) >= 7
    second = ServiceThread(TransformService(transform_settings, "second").run).start()
    try:
        status = wait_status(kafka, name, lambda s: s.instance == "second" and s.state == "running")
        assert status.events_out == 0  # nothing written yet by this run...
        assert status.outputs == ends  # ...and still its status covers what the first one wrote
    finally:
        second.shutdown()
