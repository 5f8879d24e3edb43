"""Ingest's reconciler: runs the sources the desired state asks for and reports their status.

Desired state comes from the compacted ``freshet.control.sources`` topic, consumed by every
ingest replica in one consumer group: a replica runs the sources whose keys fall in the
partitions assigned to it, so sources spread over replicas and move when one dies. On every
assignment the partitions are read from the beginning (the topic is the whole desired state).
Each source runs in its own thread; a failure is reported as ``error`` with the reason and
retried with exponential backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from prometheus_client import Counter, Gauge
from pydantic import SecretStr, ValidationError

from freshet.common import codec, topics
from freshet.common.kafka import (
    CONTROL_FETCH_WAIT_MS,
    consumer_config,
    ensure_topics,
    produce_sync,
    producer_config,
)
from freshet.common.schemas import PostgresSourceSpec, SourceStatus
from freshet.common.secrets import SecretBox
from freshet.ingest.config import IngestSettings
from freshet.ingest.sink import ProducerSupply
from freshet.ingest.sources import REGISTRY
from freshet.ingest.sources.base import Source

log = logging.getLogger(__name__)

EVENTS = Counter("freshet_ingest_events_total", "Change events produced", ["source"])
BYTES = Counter("freshet_ingest_bytes_total", "Bytes of change events produced", ["source"])
RETAINED = Gauge(
    "freshet_ingest_retained_wal_bytes", "WAL the replication slot retains", ["source"]
)
UP = Gauge("freshet_ingest_source_state", "1 for the source's current state", ["source", "state"])
STATES = ("pending", "snapshotting", "streaming", "error", "stopped")


@dataclass
class _Running:
    spec: PostgresSourceSpec
    source: Source
    partition: int
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    failures: int = 0
    retry_at: float = 0.0
    counted_events: int = 0
    counted_bytes: int = 0


class IngestService:
    def __init__(self, settings: IngestSettings, instance: str) -> None:
        self._settings = settings
        self._instance = instance
        self._box = SecretBox(settings.secret_key)
        self._running: dict[str, _Running] = {}
        self._desired: dict[str, tuple[int, PostgresSourceSpec | None]] = {}
        self._assigned: set[int] = set()
        self._producer = Producer(producer_config(settings.kafka_bootstrap))
        # Warm producers for the sources' sinks, ready before the first source starts.
        self._producers = ProducerSupply(
            settings.kafka_bootstrap, **{"linger.ms": settings.ingest_linger_ms}
        )
        self._heartbeat = time.monotonic()
        self._lock = threading.Lock()
        self._caught_up = False

    def health(self) -> tuple[bool, dict[str, Any]]:
        alive = time.monotonic() - self._heartbeat < 15
        with self._lock:
            states = {name: r.source.status().state for name, r in self._running.items()}
        return alive, {"sources": states}

    # --- main loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        ensure_topics(
            self._settings.kafka_bootstrap, topics.control_topics(self._settings.topic_partitions)
        )
        consumer = Consumer(
            consumer_config(
                self._settings.kafka_bootstrap,
                self._settings.ingest_group,
                **{"fetch.wait.max.ms": CONTROL_FETCH_WAIT_MS},
            )
        )
        consumer.subscribe(
            [topics.CONTROL_SOURCES],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        last_status = 0.0
        try:
            while not stop.is_set():
                self._heartbeat = time.monotonic()
                msg = consumer.poll(0.2)
                if msg is not None and not msg.error():
                    self._apply(msg.partition() or 0, msg.key(), msg.value())
                if self._caught_up or self._check_caught_up(consumer):
                    self._reconcile()
                if time.monotonic() - last_status >= self._settings.ingest_status_interval_s:
                    self._publish_statuses()
                    last_status = time.monotonic()
        finally:
            consumer.close()
            for name in list(self._running):
                self._stop_source(name, publish=True)
            self._producer.flush(10)

    def _check_caught_up(self, consumer: Consumer) -> bool:
        """True once every assigned partition was read to its end.

        Sources are started and stopped from the folded state only, never from a history that
        later records overturn.
        """
        if not self._assigned:
            return False
        for partition in self._assigned:
            tp = TopicPartition(topics.CONTROL_SOURCES, partition)
            _low, high = consumer.get_watermark_offsets(tp, cached=True)
            if high < 0:
                return False
            position = consumer.position([tp])[0].offset
            if high > 0 and position < high:
                return False
        self._caught_up = True
        return True

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._caught_up = False
        for p in partitions:
            p.offset = OFFSET_BEGINNING
            self._assigned.add(p.partition)
        consumer.assign(partitions)
        log.info("assigned source partitions %s", sorted(self._assigned))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {p.partition for p in partitions}
        self._assigned -= revoked
        for name, (partition, _spec) in list(self._desired.items()):
            if partition in revoked:
                del self._desired[name]
        for name, running in list(self._running.items()):
            if running.partition in revoked:
                self._stop_source(name, publish=False)
        consumer.unassign()

    def _apply(self, partition: int, raw_key: bytes | None, raw_value: bytes | None) -> None:
        if raw_key is None:
            return
        name = raw_key.decode()
        if raw_value is None:
            previous = self._desired.pop(name, None)
            if previous is not None and previous[1] is not None:
                self._delete(name, previous[1])
            return
        try:
            spec = PostgresSourceSpec.model_validate(codec.loads(raw_value))
        except ValidationError as exc:
            # Name the fields only: the input holds the (encrypted) password.
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                for e in exc.errors(include_input=False)
            )
            log.error("ignoring invalid desired state for source %s: %s", name, problems)
            return
        except ValueError:
            log.error("ignoring desired state for source %s: not JSON", name)
            return
        self._desired[name] = (partition, spec)

    # --- reconciliation ----------------------------------------------------------------------

    def _reconcile(self) -> None:
        now = time.monotonic()
        for name, (partition, spec) in self._desired.items():
            if spec is None:
                continue
            running = self._running.get(name)
            if running is not None and running.spec.generation != spec.generation:
                self._stop_source(name, publish=False)
                running = None
            if running is None:
                running = self._make(spec, partition)
                if running is None:
                    continue
                self._running[name] = running
            idle = running.thread is None or not running.thread.is_alive()
            if idle and now >= running.retry_at:
                self._start_thread(running)
        for name in [n for n in self._running if n not in self._desired]:
            self._stop_source(name, publish=False)

    def _make(self, spec: PostgresSourceSpec, partition: int) -> _Running | None:
        try:
            password = (
                self._box.decrypt(spec.password_encrypted)
                if spec.password_encrypted
                else SecretStr("")
            )
        except Exception as exc:
            log.error("source %s: %s", spec.name, exc)
            return None
        source_cls = REGISTRY[spec.kind]
        source = source_cls(  # type: ignore[call-arg]
            spec, password, self._settings, self._instance, producers=self._producers
        )
        return _Running(spec, source, partition)

    def _start_thread(self, running: _Running) -> None:
        running.stop = threading.Event()

        def target() -> None:
            try:
                running.source.run(running.stop)
                running.failures = 0
            except Exception as exc:
                running.failures += 1
                delay = min(
                    self._settings.ingest_retry_max_s,
                    self._settings.ingest_retry_initial_s * 2 ** (running.failures - 1),
                )
                running.retry_at = time.monotonic() + delay
                reason = f"{type(exc).__name__}: {exc}".strip()
                running.source.report_error(f"{reason} (retrying in {delay:.0f}s)")
                log.warning(
                    "source %s failed (attempt %d), retrying in %.0fs: %s",
                    running.spec.name,
                    running.failures,
                    delay,
                    reason,
                )

        running.thread = threading.Thread(
            target=target, name=f"source-{running.spec.name}", daemon=True
        )
        running.thread.start()

    def _stop_source(self, name: str, publish: bool) -> None:
        running = self._running.pop(name, None)
        if running is None:
            return
        running.stop.set()
        if running.thread is not None:
            running.thread.join(timeout=30)
        if publish:
            status = running.source.status().model_copy(update={"state": "stopped", "reason": None})
            self._send_status(name, status)

    def _delete(self, name: str, spec: PostgresSourceSpec) -> None:
        running = self._running.get(name)
        self._stop_source(name, publish=False)
        source = running.source if running is not None else self._make(spec, 0)
        if source is None:
            return
        source_obj = source.source if isinstance(source, _Running) else source

        def cleanup() -> None:
            try:
                source_obj.cleanup()
            except Exception as exc:
                log.warning("source %s deleted; could not drop its slot/publication: %s", name, exc)
            try:
                produce_sync(self._producer, topics.INGEST_OFFSETS, name.encode(), None)
                produce_sync(
                    self._producer, topics.STATUS, topics.status_key("source", name).encode(), None
                )
            except Exception as exc:
                log.warning("source %s deleted; could not clear its offsets/status: %s", name, exc)

        threading.Thread(target=cleanup, name=f"cleanup-{name}", daemon=True).start()

    # --- status ------------------------------------------------------------------------------

    def _publish_statuses(self) -> None:
        for name, running in list(self._running.items()):
            status = running.source.status()
            self._send_status(name, status)
            EVENTS.labels(name).inc(max(0, status.events - running.counted_events))
            BYTES.labels(name).inc(max(0, status.bytes - running.counted_bytes))
            running.counted_events, running.counted_bytes = status.events, status.bytes
            if status.retained_wal_bytes is not None:
                RETAINED.labels(name).set(status.retained_wal_bytes)
            for state in STATES:
                UP.labels(name, state).set(1 if state == status.state else 0)
        self._producer.poll(0)

    def _send_status(self, name: str, status: SourceStatus) -> None:
        self._producer.produce(
            topics.STATUS,
            key=topics.status_key("source", name).encode(),
            value=codec.dumps(status.model_dump(mode="json")),
        )
