"""The materializer of one view, on the real broker, Redis and PostgreSQL.

Records are written to a view topic the way transform writes them; every store must end up as
the fold of the topic: when another store fails, and when two materializers of the same view
run at once (a replica that lost the view but still runs).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from confluent_kafka import Producer
from confluent_kafka import TopicPartition as TP
from prometheus_client import REGISTRY

from freshet.common import topics
from freshet.common.kafka import ensure_topics, producer_config
from freshet.common.topics import COMPACTED, TopicSpec
from freshet.serve.config import ServeSettings
from freshet.serve.materialize.batch import Batch
from freshet.serve.materialize.layout import ViewLayout
from freshet.serve.materialize.stores.base import ViewStore
from freshet.serve.materialize.stores.postgres import PostgresStore, PostgresTarget
from freshet.serve.materialize.stores.redis import RedisStore
from freshet.serve.materialize.task import ViewMaterializer

from .stores_util import spec


class FlakyStore(ViewStore):
    """A store of our own that fails its first opens and writes, then keeps rows in memory."""

    kind = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.rows: dict[bytes, bytes] = {}
        self.offsets: dict[int, int] = {}
        self.attempts = 0

    def _maybe_fail(self) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise ConnectionError("the store is down")

    def open(self, partitions: list[int]) -> dict[int, int]:
        self._maybe_fail()
        return {p: self.offsets.get(p, 0) for p in partitions}

    def write(self, batch: Batch) -> None:
        self._maybe_fail()
        for change in batch.changes.values():
            if change.row is None:
                self.rows.pop(change.key, None)
            else:
                self.rows[change.key] = change.row
        self.offsets.update(batch.end)


@pytest.fixture
def client(redis_server: str) -> Iterator[Any]:
    c = redis.Redis.from_url(redis_server)
    yield c
    c.close()


def _settings(kafka: Any, redis_server: str, unique: str) -> ServeSettings:
    return ServeSettings(
        kafka_bootstrap=kafka.bootstrap,
        redis_url=redis_server,
        serve_redis_prefix=f"test:{unique}",
        serve_retry_initial_s=0.2,
        serve_retry_max_s=0.5,
        serve_batch_max=50,
        topic_partitions=3,
    )


def _write_topic(kafka: Any, view: str, n: int, seed: int) -> dict[int, dict[str, Any]]:
    """Random upserts and deletes of ``n`` keys' rows; the fold of what was written."""
    r = random.Random(seed)
    ensure_topics(kafka.bootstrap, [TopicSpec(topics.view_topic(view), 3, COMPACTED)])
    producer = Producer(producer_config(kafka.bootstrap))
    fold: dict[int, dict[str, Any]] = {}
    for i in range(1500):
        key = r.randint(1, n)
        row = None if r.random() < 0.2 else {"id": key, "v": f"v{i}", "n": r.randint(0, 9)}
        producer.produce(
            topics.view_topic(view),
            key=orjson.dumps({"id": key}),
            value=None if row is None else orjson.dumps(row),
            headers=[("freshet.applied", orjson.dumps({"src": i}))],
        )
        if row is None:
            fold.pop(key, None)
        else:
            fold[key] = row
        if i % 100 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    return fold


def _run(task: ViewMaterializer) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=task.run, args=(stop,), daemon=True)
    thread.start()
    return thread, stop


def _wait(condition: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _redis_rows(client: Any, store: RedisStore) -> dict[int, dict[str, Any]]:
    return {(row := orjson.loads(v))["id"]: row for v in client.hvals(store.keys.rows)}


def test_a_failing_store_neither_stops_nor_holds_back_the_other(
    kafka: Any, redis_server: str, client: Any, unique: str
) -> None:
    view = f"{unique}_flaky"
    layout = ViewLayout.of(
        spec(view, {"id": "int4", "v": "text", "n": "int4"}, {"id": ("int4", False)})
    )
    fold = _write_topic(kafka, view, 60, seed=1)
    flaky = FlakyStore(failures=3)
    redis_store = RedisStore(client, f"test:{unique}", layout, max_records=7)
    task = ViewMaterializer(layout, [redis_store, flaky], _settings(kafka, redis_server, unique))
    thread, stop = _run(task)
    try:
        _wait(lambda: _redis_rows(client, redis_store) == fold)
        _wait(lambda: {orjson.loads(v)["id"]: orjson.loads(v) for v in flaky.rows.values()} == fold)
        _wait(lambda: all(s.ready for s in task.stores))
        assert flaky.attempts > 3
        assert task.describe() == {
            "redis": {"state": "ready", "lag": 0},
            "flaky": {"state": "ready", "lag": 0},
        }
    finally:
        stop.set()
        thread.join(30)


def test_two_materializers_of_one_view_keep_the_stores_exact(
    kafka: Any, redis_server: str, client: Any, target_url: str, unique: str
) -> None:
    """Both write at once (a zombie and its successor): the stores' fencing keeps them exact."""
    view = f"{unique}_twice"
    layout = ViewLayout.of(
        spec(
            view, {"id": "int4", "v": "text", "n": "int4"}, {"id": ("int4", False)}, indexes=("n",)
        )
    )
    target = PostgresTarget(target_url, "freshet")
    settings = _settings(kafka, redis_server, unique)
    redis_stores = [RedisStore(client, f"test:{unique}", layout, max_records=5) for _ in range(2)]
    tasks = [
        ViewMaterializer(layout, [redis_stores[i], PostgresStore(target, layout)], settings)
        for i in range(2)
    ]
    runs = [_run(t) for t in tasks]
    try:
        fold = _write_topic(kafka, view, 40, seed=2)

        def pg_rows() -> dict[int, dict[str, Any]]:
            with target.engine.connect() as conn:
                table = PostgresStore(target, layout).table
                return {
                    r[0]: {"id": r[0], "v": r[1], "n": r[2]} for r in conn.execute(table.select())
                }

        _wait(lambda: _redis_rows(client, redis_stores[0]) == fold and pg_rows() == fold, 120)
        # ... and they stay so once both caught up.
        _wait(lambda: all(s.ready for t in tasks for s in t.stores if s.offsets is not None), 60)
        assert _redis_rows(client, redis_stores[0]) == fold
        assert pg_rows() == fold
        index = client.zrangebylex(redis_stores[0].keys.index("n"), "-", "+")
        assert len(index) == len(fold)
    finally:
        for thread, stop in runs:
            stop.set()
            thread.join(30)
        target.close()


class PacedStore(FlakyStore):
    """A store that never fails, takes its changes at most every ``interval`` s and counts its
    batches."""

    kind = "paced"

    def __init__(self, interval: float) -> None:
        super().__init__(failures=0)
        self.batch_interval_s = interval
        self.batches: list[int] = []

    def write(self, batch: Batch) -> None:
        super().write(batch)
        self.batches.append(len(batch.changes))


def test_a_paced_store_takes_what_arrived_meanwhile_in_one_batch(
    kafka: Any, redis_server: str, client: Any, unique: str
) -> None:
    """Changes trickling in (one every 20 ms, 2 s or more) reach a store paced at 0.5 s in a few
    batches (unpaced, it takes them in 40-100)."""
    view = f"{unique}_paced"
    layout = ViewLayout.of(spec(view, {"id": "int4", "v": "text"}, {"id": ("int4", False)}))
    ensure_topics(kafka.bootstrap, [TopicSpec(topics.view_topic(view), 3, COMPACTED)])
    paced = PacedStore(interval=0.5)
    settings = _settings(kafka, redis_server, unique).model_copy(update={"serve_batch_max": 1000})
    task = ViewMaterializer(layout, [paced], settings)
    consumers: list[bool] = []
    make_consumer = task._consumer

    def counted(state: Any, paced: bool) -> Any:
        consumers.append(paced)
        return make_consumer(state, paced)

    task._consumer = counted  # type: ignore[method-assign]
    thread, stop = _run(task)
    producer = Producer(producer_config(kafka.bootstrap, **{"linger.ms": 0}))
    try:
        _wait(lambda: task.stores[0].ready)
        lags = []
        for i in range(100):
            lags.append(task.stores[0].describe()["lag"])
            producer.produce(
                topics.view_topic(view),
                key=orjson.dumps({"id": i}),
                value=orjson.dumps({"id": i, "v": f"v{i}"}),
                headers=[("freshet.applied", orjson.dumps({"src": i}))],
            )
            producer.poll(0)
            time.sleep(0.02)
        assert producer.flush(30) == 0
        _wait(lambda: len(paced.rows) == 100)
        assert {orjson.loads(v)["id"] for v in paced.rows.values()} == set(range(100))
        assert sum(paced.batches) == 100
        assert len(paced.batches) <= 15, paced.batches
        # Once caught up its lag stays known, and it switched consumers once: to the paced one.
        assert None not in lags, lags
        assert consumers == [False, True], consumers
    finally:
        stop.set()
        thread.join(30)


def test_a_paced_store_catches_up_at_full_speed(
    kafka: Any, redis_server: str, client: Any, unique: str
) -> None:
    """A backlog is not paced: 1,500 records in batches of at most 50 reach a store paced at
    30 s well before one interval has passed (paced, 30 batches would take 15 minutes)."""
    view = f"{unique}_backlog"
    layout = ViewLayout.of(
        spec(view, {"id": "int4", "v": "text", "n": "int4"}, {"id": ("int4", False)})
    )
    fold = _write_topic(kafka, view, 2000, seed=3)
    paced = PacedStore(interval=30.0)
    task = ViewMaterializer(layout, [paced], _settings(kafka, redis_server, unique))
    thread, stop = _run(task)
    try:
        _wait(lambda: task.stores[0].ready, timeout=25)
        assert {orjson.loads(v)["id"]: orjson.loads(v) for v in paced.rows.values()} == fold
        # 1,500 records, at most 50 a batch (a batch keeps a key's last change only).
        assert len(paced.batches) >= 30 and max(paced.batches) <= 50
    finally:
        stop.set()
        thread.join(30)


def test_a_consumer_that_has_not_fetched_yet_keeps_the_last_lag_known(
    kafka: Any, redis_server: str, unique: str
) -> None:
    """A consumer just made (on a switch to or from pacing) knows no high watermark yet: the
    store's lag stays the last one known, in /health and /metrics alike, instead of turning
    unknown (which also read as "behind" and switched consumers again)."""
    view = f"{unique}_watch"
    layout = ViewLayout.of(
        spec(view, {"id": "int4", "v": "text", "n": "int4"}, {"id": ("int4", False)})
    )
    _write_topic(kafka, view, 30, seed=5)
    task = ViewMaterializer(
        layout, [PacedStore(interval=0.1)], _settings(kafka, redis_server, unique)
    )
    state, partitions = task.stores[0], [0, 1, 2]
    state.offsets, state.lag, state.ready = dict.fromkeys(partitions, 0), 7, True

    def lag_metric() -> float | None:
        labels = {"view": view, "store": "paced"}
        return REGISTRY.get_sample_value("freshet_serve_lag_messages", labels)

    fresh = task._consumer(state, paced=True)
    try:
        task._watch(fresh, state, partitions)
        assert (state.lag, state.describe()["lag"]) == (7, 7)
        fresh.assign([TP(topics.view_topic(view), p, 0) for p in partitions])
        deadline = time.monotonic() + 30
        while state.lag == 7:
            assert time.monotonic() < deadline, "the consumer never learned the watermarks"
            fresh.poll(0.1)
            task._watch(fresh, state, partitions)
        # Nothing was applied: the lag is all 1,500 records written.
        assert state.lag == 1500 and lag_metric() == 1500
    finally:
        fresh.close()
