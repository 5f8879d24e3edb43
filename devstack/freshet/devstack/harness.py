"""Support for tests and benchmarks that span services.

Run services in threads, register sources and views through their desired-state topics, fold
topics, wait for positions.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, Producer
from pydantic import SecretStr

from freshet.common import codec, events, topics
from freshet.common.kafka import consumer_config, produce_sync, producer_config, read_to_end
from freshet.common.schemas import (
    DataflowStatus,
    PostgresSourceSpec,
    TableSchema,
    ViewSpec,
)
from freshet.common.secrets import SecretBox
from freshet.common.sql.views import Catalog, compile_view


def fold(bootstrap: str, topic: str, timeout: float = 30.0) -> dict[str, Any]:
    """A compacted topic read to its end and folded: ``{key text: decoded value}``."""
    consumer = Consumer(consumer_config(bootstrap, f"fold-{uuid.uuid4().hex}"))
    out: dict[str, Any] = {}
    try:
        for msg in read_to_end(consumer, topic, timeout=timeout):
            key = msg.key()
            if key is None:
                continue
            raw = msg.value()
            if raw is None:
                out.pop(key.decode(), None)
            else:
                out[key.decode()] = codec.loads(raw)
    finally:
        consumer.close()
    return out


@dataclass
class ServiceThread:
    """A service's ``run(stop)`` in a daemon thread."""

    run: Callable[[threading.Event], None]
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> ServiceThread:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, args=(self.stop,), daemon=True)
        self.thread.start()
        return self

    def shutdown(self, timeout: float = 60.0) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout)
            if self.thread.is_alive():
                raise AssertionError("service did not stop")


@dataclass
class Control:
    """Writes desired state the way the control service does, for tests below the HTTP API."""

    bootstrap: str
    secret_key: SecretStr
    producer: Producer = field(init=False)
    created: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.producer = Producer(producer_config(self.bootstrap))

    def add_source(self, db: Any, name: str, tables: list[str] | None = None) -> PostgresSourceSpec:
        server = db.server
        spec = PostgresSourceSpec(
            name=name,
            host=server.host,
            port=server.port,
            database=db.dbname,
            user=server.user,
            password_encrypted=SecretBox(self.secret_key).encrypt(SecretStr(server.password)),
            tables=tuple(tables) if tables is not None else None,
            slot_name=f"freshet_{name}",
            publication_name=f"freshet_{name}",
        )
        produce_sync(
            self.producer,
            topics.CONTROL_SOURCES,
            name.encode(),
            codec.dumps(spec.model_dump(mode="json")),
        )
        self.created.append((topics.CONTROL_SOURCES, name))
        return spec

    def catalog(self, wanted: set[str], timeout: float = 60.0) -> Catalog:
        """The catalog of the sources of ``wanted`` (``source.schema.table`` names).

        Returned once every table in ``wanted`` was published; other sources on the broker
        (other tests') are left out.
        """
        sources = {w.split(".", 1)[0] for w in wanted}
        deadline = time.monotonic() + timeout
        while True:
            tables = [
                t
                for t in (
                    TableSchema.model_validate(v)
                    for v in fold(self.bootstrap, topics.SCHEMAS).values()
                )
                if t.source in sources
            ]
            if wanted <= {t.qualified for t in tables}:
                return Catalog(tables)
            if time.monotonic() > deadline:
                raise AssertionError(f"schemas of {wanted} never appeared")
            time.sleep(0.2)

    def add_view(
        self,
        name: str,
        sql: str,
        catalog: Catalog,
        generation: int = 1,
        indexes: tuple[str, ...] = (),
    ) -> ViewSpec:
        plan = compile_view(name, sql, catalog)
        spec = ViewSpec(
            name=name,
            sql=sql,
            key=plan.key,
            columns=plan.columns,
            tables=plan.tables,
            generation=generation,
            key_columns=plan.key_columns,
            indexes=indexes,
        )
        produce_sync(
            self.producer,
            topics.CONTROL_VIEWS,
            name.encode(),
            codec.dumps(spec.model_dump(mode="json")),
        )
        self.created.append((topics.CONTROL_VIEWS, name))
        return spec

    def delete_view(self, name: str) -> None:
        produce_sync(self.producer, topics.CONTROL_VIEWS, name.encode(), None)

    def remove_all(self) -> None:
        """Delete everything this object created (views first, then sources)."""
        for topic, name in sorted(self.created, key=lambda c: c[0] != topics.CONTROL_VIEWS):
            produce_sync(self.producer, topic, name.encode(), None)
        self.created.clear()


def view_status(bootstrap: str, name: str) -> DataflowStatus | None:
    value = fold(bootstrap, topics.STATUS).get(topics.status_key("view", name))
    return DataflowStatus.model_validate(value) if value is not None else None


def first_view_status(
    bootstrap: str, name: str, predicate: Any, timeout: float = 60.0
) -> DataflowStatus:
    """The first status of view ``name`` that satisfies ``predicate``.

    Read from the topic's beginning, every record checked: a state that lasted one report is
    not missed, as it can be by folding the topic to its latest state now and then.
    """
    deadline = time.monotonic() + timeout
    last = None
    consumer = Consumer(consumer_config(bootstrap, f"first-{uuid.uuid4().hex}"))
    try:
        for msg in _follow(consumer, topics.STATUS, deadline):
            if msg is None or msg.value() is None:
                continue
            if (msg.key() or b"").decode() != topics.status_key("view", name):
                continue
            last = DataflowStatus.model_validate(codec.loads(msg.value()))
            if predicate(last):
                return last
    finally:
        consumer.close()
    raise AssertionError(f"view {name} never reported a matching status; last: {last}")


def wait_applied(
    bootstrap: str, views: list[str], source: str, lsn: int, timeout: float = 120.0
) -> dict[str, DataflowStatus]:
    """Wait until every view reports ``applied[source] >= lsn``; the statuses it ended with."""
    deadline = time.monotonic() + timeout
    pending = set(views)
    found: dict[str, DataflowStatus] = {}
    consumer = Consumer(consumer_config(bootstrap, f"wait-{uuid.uuid4().hex}"))
    try:
        for msg in _follow(consumer, topics.STATUS, deadline):
            if msg is None:
                continue
            kind, _, name = (msg.key() or b"").decode().partition("/")
            if kind != "view" or name not in views or msg.value() is None:
                continue
            status = DataflowStatus.model_validate(codec.loads(msg.value()))
            found[name] = status
            if status.applied.get(source, -1) >= lsn:
                pending.discard(name)
            if not pending:
                return found
    finally:
        consumer.close()
    states = {n: (s.state, s.reason, s.applied) for n, s in found.items()}
    raise AssertionError(
        f"views {sorted(pending)} did not apply {events.lsn_to_str(lsn)} in {timeout:.0f}s: "
        f"{states}"
    )


def _follow(consumer: Consumer, topic: str, deadline: float) -> Any:
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
    while time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is not None and msg.error():
            continue
        yield msg
