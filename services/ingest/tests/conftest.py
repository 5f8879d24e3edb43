"""Fixtures for ingest's integration tests: a running ingest service, a way to register a
source through the desired-state topic, and a reader of the change topics."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from pydantic import SecretStr

from freshet.common import codec, topics
from freshet.common.kafka import consumer_config, ensure_topics, produce_sync, producer_config
from freshet.common.schemas import PostgresSourceSpec, SourceStatus
from freshet.common.secrets import SecretBox
from freshet.common.telemetry import setup_tracing
from freshet.devstack import servers
from freshet.ingest.config import IngestSettings
from freshet.ingest.service import IngestService


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: Any
    value: Any
    headers: dict[str, bytes]


@dataclass
class TopicReader:
    """Consumes topics from the beginning and keeps every record, decoded."""

    bootstrap: str
    records: list[Record] = field(default_factory=list)
    _consumer: Consumer | None = None
    _topics: set[str] = field(default_factory=set)
    _assigned: set[str] = field(default_factory=set)

    def follow(self, *names: str) -> None:
        """Read these topics from the beginning (assigned, no group), once they exist."""
        self._topics.update(names)
        if self._consumer is None:
            self._consumer = Consumer(consumer_config(self.bootstrap, f"reader-{time.time_ns()}"))

    def _assign_new(self) -> None:
        assert self._consumer is not None
        missing = self._topics - self._assigned
        if not missing:
            return
        metadata = self._consumer.list_topics(timeout=5).topics
        ready = {t for t in missing if t in metadata and metadata[t].partitions}
        if ready:
            self._assigned |= ready
            self._consumer.incremental_assign(
                [
                    TopicPartition(t, p, OFFSET_BEGINNING)
                    for t in ready
                    for p in metadata[t].partitions
                ]
            )

    def pump(self, seconds: float = 0.2) -> None:
        assert self._consumer is not None
        self._assign_new()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = self._consumer.poll(0.05)
            if msg is None or msg.error():
                continue
            raw_key, raw_value = msg.key(), msg.value()
            self.records.append(
                Record(
                    msg.topic() or "",
                    msg.partition() or 0,
                    msg.offset() or 0,
                    codec.loads(raw_key) if raw_key else None,
                    codec.loads(raw_value) if raw_value is not None else None,
                    {k: v for k, v in (msg.headers() or [])},
                )
            )

    def wait_for(
        self, predicate: Callable[[list[Record]], bool], timeout: float = 60.0
    ) -> list[Record]:
        deadline = time.monotonic() + timeout
        while not predicate(self.records):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; {len(self.records)} records so far")
            self.pump(0.2)
        return self.records

    def read_to_end(self, topic: str, timeout: float = 60.0) -> list[Record]:
        """Read every partition of ``topic`` up to the high watermark of the last fetch.

        A record seen on one partition says nothing of how far the others were read: after
        waiting for a record that was written last, this reads what was written before it.
        """
        assert self._consumer is not None
        consumer = self._consumer
        partitions = [
            TopicPartition(topic, p)
            for p in consumer.list_topics(topic, timeout=5).topics[topic].partitions
        ]
        deadline = time.monotonic() + timeout
        while True:
            highs = [consumer.get_watermark_offsets(tp, cached=True)[1] for tp in partitions]
            positions = [tp.offset for tp in consumer.position(partitions)]
            ends = zip(highs, positions, strict=True)
            if all(high == 0 or 0 < high <= position for high, position in ends):
                return self.records
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{topic} not read to its end within {timeout:.0f}s: at {positions}, "
                    f"ends {highs}"
                )
            self.pump(0.2)

    def on(self, topic: str) -> list[Record]:
        return [r for r in self.records if r.topic == topic]

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()


@dataclass
class IngestHarness:
    settings: IngestSettings
    box: SecretBox
    producer: Producer
    service: IngestService | None = None
    thread: threading.Thread | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    registered: list[str] = field(default_factory=list)

    def start(self) -> None:
        self.stop = threading.Event()
        self.service = IngestService(self.settings, "test")
        self.thread = threading.Thread(target=self.service.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def shutdown(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(60)
            assert not self.thread.is_alive(), "ingest did not stop"

    def register(
        self, db: Any, name: str, tables: list[str] | None, **extra: Any
    ) -> PostgresSourceSpec:
        server = db.server
        spec = PostgresSourceSpec(
            name=name,
            host=server.host,
            port=server.port,
            database=db.dbname,
            user=server.user,
            password_encrypted=self.box.encrypt(SecretStr(server.password)),
            tables=tuple(tables) if tables is not None else None,
            slot_name=f"freshet_{name}",
            publication_name=f"freshet_{name}",
            **extra,
        )
        self.put(spec)
        self.registered.append(name)
        return spec

    def put(self, spec: PostgresSourceSpec) -> None:
        produce_sync(
            self.producer,
            topics.CONTROL_SOURCES,
            spec.name.encode(),
            codec.dumps(spec.model_dump(mode="json")),
        )

    def delete(self, name: str) -> None:
        produce_sync(self.producer, topics.CONTROL_SOURCES, name.encode(), None)

    def status(self, name: str, timeout: float = 10.0) -> SourceStatus | None:
        consumer = Consumer(consumer_config(self.settings.kafka_bootstrap, f"st-{time.time_ns()}"))
        from freshet.common.kafka import read_to_end

        found = None
        try:
            for msg in read_to_end(consumer, topics.STATUS, timeout=timeout):
                if msg.key() == topics.status_key("source", name).encode():
                    raw = msg.value()
                    found = SourceStatus.model_validate(codec.loads(raw)) if raw else None
        finally:
            consumer.close()
        return found

    def wait_status(
        self, name: str, predicate: Callable[[SourceStatus], bool], timeout: float = 60.0
    ) -> SourceStatus:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.status(name)
            if last is not None and predicate(last):
                return last
            time.sleep(0.3)
        raise AssertionError(f"status of {name} never matched; last: {last}")


@pytest.fixture(scope="session")
def tracing(kafka: Any) -> Iterator[None]:
    """Every span recorded and exported to the real ``otlp_spans`` topic, as in production."""
    provider = setup_tracing("ingest", "test", kafka.bootstrap, 1.0)
    yield
    provider.shutdown()


@pytest.fixture
def ingest_settings(kafka: Any, unique: str, tmp_path: Path) -> IngestSettings:
    ensure_topics(kafka.bootstrap, topics.control_topics(3))
    return IngestSettings(
        kafka_bootstrap=kafka.bootstrap,
        secret_key=SecretStr(SecretBox.generate_key()),
        ingest_port=servers.free_port(),
        ingest_group=f"ingest-{unique}",
        ingest_spool_dir=tmp_path / "spool",
        ingest_status_interval_s=0.3,
        ingest_retry_initial_s=0.5,
        ingest_retry_max_s=2.0,
        ingest_snapshot_chunk_rows=500,
        topic_partitions=3,
    )


@pytest.fixture
def ingest(
    ingest_settings: IngestSettings, pg_database: Any, tracing: None
) -> Iterator[IngestHarness]:
    """An ingest service (started by ``start()``), stopped before the test database is dropped."""
    harness = IngestHarness(
        ingest_settings,
        SecretBox(ingest_settings.secret_key),
        Producer(producer_config(ingest_settings.kafka_bootstrap)),
    )
    yield harness
    for name in harness.registered:
        harness.delete(name)
    if harness.thread is not None and harness.thread.is_alive():
        time.sleep(1.0)  # let the service drop slots of deleted sources
        harness.shutdown()


@pytest.fixture
def reader(kafka: Any) -> Iterator[TopicReader]:
    r = TopicReader(kafka.bootstrap)
    yield r
    r.close()
