"""A pipeline task on the real broker and Redis: sinks, dead letters, status, and a restart that
resumes from its store (offsets, looked-up rows and counts committed together)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from confluent_kafka import Consumer, Producer
from pydantic import SecretStr

from freshet.common import topics
from freshet.common.kafka import consumer_config, ensure_topics, producer_config, read_to_end
from freshet.common.pipelines import PipelineSpec, compile_pipeline
from freshet.common.schemas import ColumnSchema, DataflowStatus, TableSchema
from freshet.common.secrets import SecretBox
from freshet.common.topics import TopicSpec
from freshet.transform.config import TransformSettings
from freshet.transform.pipelines.task import PipelineTask, salts_of
from freshet.transform.store import Store

INT4, TEXT, NUMERIC = 23, 25, 1700


def _table(source: str, name: str, columns: dict[str, int]) -> TableSchema:
    return TableSchema(
        source=source,
        schema="public",
        table=name,
        topic=topics.cdc_topic(source, "public", name),
        columns=tuple(ColumnSchema(name=n, type_oid=oid, type="x") for n, oid in columns.items()),
        primary_key=("id",),
    )


class Harness:
    def __init__(self, kafka: Any, redis_url: str, unique: str, tmp_path: Path) -> None:
        self.bootstrap = kafka.bootstrap
        self.unique = unique
        self.orders = _table(
            unique,
            "orders",
            {"id": INT4, "customer_id": INT4, "amount": NUMERIC, "code": TEXT, "email": TEXT},
        )
        self.customers = _table(unique, "customers", {"id": INT4, "name": TEXT})
        self.settings = TransformSettings(
            kafka_bootstrap=kafka.bootstrap,
            redis_url=redis_url,
            transform_data_dir=tmp_path,
            topic_partitions=2,
        )
        ensure_topics(
            kafka.bootstrap, [TopicSpec(t.topic, 2) for t in (self.orders, self.customers)]
        )
        self.redis = redis.Redis.from_url(redis_url)
        self.box = SecretBox(SecretStr(SecretBox.generate_key()))
        self.producer = Producer(producer_config(kafka.bootstrap))
        self.statuses: list[DataflowStatus] = []
        self.lsn = 1000
        self.spec = PipelineSpec.model_validate(
            {
                "name": unique,
                "nodes": [
                    {"id": "src", "kind": "source", "source": unique, "tables": ["orders"]},
                    {
                        "id": "who",
                        "kind": "lookup",
                        "inputs": ["src"],
                        "table": self.customers.qualified,
                        "on": {"id": "customer_id"},
                        "fields": {"name": "customer"},
                    },
                    {
                        "id": "typed",
                        "kind": "cast",
                        "inputs": ["who"],
                        "fields": {"code": "integer"},
                    },
                    {
                        "id": "hide",
                        "kind": "mask",
                        "inputs": ["typed"],
                        "salt_encrypted": self.box.encrypt(SecretStr("s")),
                        "fields": {"email": {"method": "hash"}},
                    },
                    {
                        "id": "split",
                        "kind": "route",
                        "inputs": ["hide"],
                        "routes": [{"name": "big", "where": "amount >= 100"}],
                        "default": "small",
                    },
                    {
                        "id": "big",
                        "kind": "sink",
                        "inputs": ["split.big"],
                        "topic": f"{unique}.big",
                    },
                    {
                        "id": "small",
                        "kind": "sink",
                        "inputs": ["split.small"],
                        "topic": f"{unique}.small",
                    },
                ],
            }
        )

    def change(self, table: TableSchema, op: str, row: dict[str, Any]) -> None:
        self.lsn += 8
        value = {
            "before": row if op == "d" else None,
            "after": None if op == "d" else row,
            "source": {
                "name": self.unique,
                "table": table.table,
                "lsn": self.lsn,
                "commit_lsn": self.lsn,
                "ts_ms": int(time.time() * 1000),
            },
            "op": op,
            "ts_ms": int(time.time() * 1000),
        }
        self.producer.produce(
            table.topic, key=orjson.dumps({"id": row["id"]}), value=orjson.dumps(value)
        )
        self.producer.flush(10)

    def raw(self, table: TableSchema, key: bytes, value: bytes) -> None:
        self.producer.produce(table.topic, key=key, value=value)
        self.producer.flush(10)

    def task(self) -> PipelineTask:
        plan = compile_pipeline(self.spec, [self.orders, self.customers])
        store = Store(self.redis, "pipeline", self.spec.name, self.spec.generation)
        return PipelineTask(
            self.spec,
            plan,
            salts_of(self.spec, self.box),
            self.settings,
            store,
            self.statuses.append,
            "test",
        )

    def read(self, topic: str) -> list[tuple[bytes | None, Any, dict[str, bytes]]]:
        consumer = Consumer(consumer_config(self.bootstrap, f"read-{uuid.uuid4().hex}"))
        try:
            ensure_topics(self.bootstrap, [TopicSpec(topic, 2)])
            return [
                (
                    m.key(),
                    None if m.value() is None else orjson.loads(m.value()),
                    dict(m.headers() or []),
                )
                for m in read_to_end(consumer, topic)
            ]
        finally:
            consumer.close()


@pytest.fixture
def harness(kafka, redis_server, unique, tmp_path) -> Harness:
    return Harness(kafka, redis_server, unique, tmp_path)


@pytest.fixture
def running(
    harness,
) -> Iterator[Callable[[], tuple[PipelineTask, threading.Event, threading.Thread]]]:
    started: list[tuple[threading.Event, threading.Thread]] = []

    def start() -> tuple[PipelineTask, threading.Event, threading.Thread]:
        task = harness.task()
        stop = threading.Event()
        thread = threading.Thread(target=task.run, args=(stop,), daemon=True)
        thread.start()
        started.append((stop, thread))
        return task, stop, thread

    yield start
    for stop, thread in started:
        stop.set()
        thread.join(30)


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_sinks_dead_letters_status_and_a_restart_that_resumes(harness, running):
    h = harness
    h.change(h.customers, "c", {"id": 7, "name": "Ada"})
    task, stop, thread = running()
    wait_for(lambda: task.executor.counts["src"].events_in == 0 and len(task.lookups) == 1)
    h.change(
        h.orders, "c", {"id": 1, "customer_id": 7, "amount": "150.00", "code": "12", "email": "a@x"}
    )
    h.change(
        h.orders, "c", {"id": 2, "customer_id": 8, "amount": "5.00", "code": "x", "email": "b@x"}
    )  # poison
    h.raw(h.orders, b'{"id": 3}', b"not json")  # poison
    h.change(
        h.orders, "c", {"id": 4, "customer_id": 7, "amount": "5.00", "code": "4", "email": None}
    )
    wait_for(lambda: task.events_out == 2 and task.dead_letters == 2)  # acknowledged and committed

    big, small = h.read(f"{h.unique}.big"), h.read(f"{h.unique}.small")
    assert [(k, v["op"], v["after"]) for k, v, _ in big] == [
        (
            b'{"id":1}',
            "c",
            {
                "id": 1,
                "customer_id": 7,
                "amount": "150.00",
                "code": 12,
                "email": SecretHash.of("a@x"),
                "customer": "Ada",
            },
        )
    ]
    assert [v["after"] for _k, v, _ in small] == [
        {"id": 4, "customer_id": 7, "amount": "5.00", "code": 4, "email": None, "customer": "Ada"}
    ]
    letters = sorted(h.read(topics.dlq_topic(h.unique)), key=lambda letter: letter[1]["node"])
    assert [(k, v["node"], v["error"].split(":")[0]) for k, v, _ in letters] == [
        (b'{"id": 3}', "src", "not a change event"),
        (b'{"id":2}', "typed", "invalid input syntax for type integer"),
    ]
    letters.reverse()
    assert letters[0][1]["error"] == 'invalid input syntax for type integer: "x"'
    assert orjson.loads(letters[0][1]["value"])["after"]["code"] == "x"  # the original event
    assert letters[1][1]["value"] == "not json" and letters[1][1]["topic"] == h.orders.topic
    assert letters[0][2]["freshet.dlq.node"] == b"typed"

    status = task.status()
    assert status.kind == "pipeline" and status.state == "running"
    assert status.nodes["src"].events_in == 3 and status.nodes["typed"].events_out == 2
    assert status.nodes["big"].events_out == 1 and status.nodes["_dlq"].events_in == 2
    assert status.events_in == 5 and status.events_out == 2  # 1 customer + 4 orders read
    assert h.statuses and h.statuses[-1].kind == "pipeline"

    # Stop, change the looked-up row and add an order while stopped, restart: the new task
    # resumes from the committed offsets (nothing written twice) with the committed lookup rows.
    stop.set()
    thread.join(30)
    h.change(h.customers, "u", {"id": 7, "name": "Bea"})
    task2, _stop2, _thread2 = running()
    # A lookup sees its table as read so far: let the new task read the change first (the two
    # topics are fetched in no particular order).
    wait_for(lambda: task2.status().events_in == 6)
    h.change(
        h.orders, "c", {"id": 5, "customer_id": 7, "amount": "500.00", "code": "5", "email": "c@x"}
    )
    wait_for(lambda: task2.events_out == 3)
    big = h.read(f"{h.unique}.big")
    assert sorted((v["after"]["id"], v["after"]["customer"]) for _k, v, _ in big) == [
        (1, "Ada"),
        (5, "Bea"),
    ]
    assert len(h.read(f"{h.unique}.small")) == 1
    assert task2.status().nodes["_dlq"].events_in == 2  # counts were committed with the offsets
    assert task2.status().nodes["src"].events_in == 4


class SecretHash:
    @staticmethod
    def of(text: str) -> str:
        import hashlib
        import hmac

        return hmac.new(b"s", text.encode(), hashlib.sha256).hexdigest()
