"""Transform's reconciler: runs the views the desired state asks for and reports their status.

The views' desired state (``freshet.control.views``, compacted) is consumed by every transform
worker in one consumer group; a worker runs the views whose keys fall in its partitions, so views
spread over workers and move to a survivor when one dies. The survivor resumes from the view's
durable store (:mod:`freshet.transform.store`), which the dead worker's successor-fencing epoch
keeps exact. On every assignment the partitions are read from the beginning (the topic is the
whole desired state), and views start only once it was read to its end.

Views compile against ``freshet.schemas`` (the tables ingest captures). A view that fails is
reported ``error`` with the reason and retried with backoff; a view whose inputs have changes
but that made no progress for ``transform_stall_after_s`` is reported ``stalled``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from freshet.common import codec, topics
from freshet.common.kafka import CompactedTopicView, consumer_config, ensure_topics, producer_config
from freshet.common.schemas import DataflowStatus, TableSchema, ViewSpec
from freshet.common.sql.errors import SqlError
from freshet.common.sql.views import Catalog, compile_view
from freshet.transform.config import TransformSettings
from freshet.transform.store import Fenced, Store
from freshet.transform.views.task import ViewTask

log = logging.getLogger(__name__)

EVENTS_IN = Counter("freshet_transform_events_in_total", "Change events applied", ["view"])
ROWS_OUT = Counter("freshet_transform_rows_out_total", "View rows written", ["view"])
LAG = Gauge("freshet_transform_lag_messages", "Input messages not yet applied", ["view"])
FRESHNESS = Gauge(
    "freshet_transform_freshness_ms",
    "Now minus the commit time of the last applied change",
    ["view"],
)


@dataclass
class _Running:
    spec: ViewSpec
    partition: int
    task: ViewTask | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    failures: int = 0
    retry_at: float = 0.0
    error: str | None = None
    counted_in: int = 0
    counted_out: int = 0


class TransformService:
    def __init__(self, settings: TransformSettings, instance: str) -> None:
        self._settings = settings
        self._instance = instance
        self._redis = redis.Redis.from_url(settings.redis_url)
        self._producer = Producer(producer_config(settings.kafka_bootstrap))
        self._desired: dict[str, tuple[int, ViewSpec]] = {}
        self._running: dict[str, _Running] = {}
        self._assigned: set[int] = set()
        self._caught_up = False
        self._schemas: CompactedTopicView | None = None
        self._heartbeat = time.monotonic()
        self._lock = threading.Lock()

    def health(self) -> tuple[bool, dict[str, Any]]:
        alive = time.monotonic() - self._heartbeat < 15
        with self._lock:
            views = {n: (r.task.state if r.task else "pending") for n, r in self._running.items()}
        return alive, {"views": views}

    # --- main loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        settings = self._settings
        ensure_topics(settings.kafka_bootstrap, topics.control_topics(settings.topic_partitions))
        self._schemas = CompactedTopicView(
            settings.kafka_bootstrap, topics.SCHEMAS, TableSchema.model_validate_json
        )
        self._schemas.start()
        # Not the faust app's own group (the same id would mix two assignment protocols).
        consumer = Consumer(
            consumer_config(settings.kafka_bootstrap, f"{settings.transform_group}.views")
        )
        consumer.subscribe(
            [topics.CONTROL_VIEWS],
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
                if time.monotonic() - last_status >= 1.0:
                    self._watch()
                    last_status = time.monotonic()
        finally:
            consumer.close()
            for name in list(self._running):
                self._stop(name)
            self._schemas.close()
            self._producer.flush(10)

    def _check_caught_up(self, consumer: Consumer) -> bool:
        if not self._assigned:
            return False
        for partition in self._assigned:
            tp = TopicPartition(topics.CONTROL_VIEWS, partition)
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
        log.info("assigned view partitions %s", sorted(self._assigned))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {p.partition for p in partitions}
        self._assigned -= revoked
        for name, (partition, _spec) in list(self._desired.items()):
            if partition in revoked:
                del self._desired[name]
        for name, running in list(self._running.items()):
            if running.partition in revoked:
                self._stop(name)
        consumer.unassign()

    def _apply(self, partition: int, raw_key: bytes | None, raw_value: bytes | None) -> None:
        if raw_key is None:
            return
        name = raw_key.decode()
        if raw_value is None:
            previous = self._desired.pop(name, None)
            self._stop(name)
            if previous is not None:
                self._drop(previous[1])
            return
        try:
            spec = ViewSpec.model_validate_json(raw_value)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                for e in exc.errors(include_input=False)
            )
            log.error("ignoring invalid desired state for view %s: %s", name, problems)
            return
        previous = self._desired.get(name)
        if previous is not None and previous[1].generation != spec.generation:
            self._stop(name)
            self._drop(previous[1])
        self._desired[name] = (partition, spec)

    def _drop(self, spec: ViewSpec) -> None:
        try:
            Store(self._redis, "view", spec.name, spec.generation).drop()
        except redis.RedisError as exc:
            log.warning(
                "view %s: could not drop the state of generation %d: %s",
                spec.name,
                spec.generation,
                exc,
            )
        self._producer.produce(
            topics.STATUS, key=topics.status_key("view", spec.name).encode(), value=None
        )

    # --- reconciliation ----------------------------------------------------------------------

    def _reconcile(self) -> None:
        now = time.monotonic()
        for name, (partition, spec) in self._desired.items():
            running = self._running.get(name)
            if running is None:
                running = self._running[name] = _Running(spec, partition)
            idle = running.thread is None or not running.thread.is_alive()
            if idle and now >= running.retry_at:
                self._start(running)
        for name in [n for n in self._running if n not in self._desired]:
            self._stop(name)

    def _catalog(self, spec: ViewSpec) -> Catalog:
        """The tables control resolved the SQL to: a source added later cannot change the view."""
        assert self._schemas is not None
        return Catalog(s for _key, s in self._schemas.items() if s.qualified in spec.tables)

    def _start(self, running: _Running) -> None:
        spec = running.spec
        try:
            plan = compile_view(spec.name, spec.sql, self._catalog(spec))
        except SqlError as exc:
            self._fail(
                running, f"the view's SQL does not compile against the captured tables: {exc}"
            )
            return
        store = Store(self._redis, "view", spec.name, spec.generation)
        task = ViewTask(spec, plan, self._settings, store, self._publish, self._instance)
        running.task = task
        running.stop = threading.Event()

        def target() -> None:
            try:
                task.run(running.stop)
                running.failures = 0
            except Fenced as exc:
                log.warning("view %s: %s; stopping", spec.name, exc)
            except Exception as exc:
                log.warning("view %s failed", spec.name, exc_info=True)
                self._fail(running, f"{type(exc).__name__}: {exc}")

        running.thread = threading.Thread(target=target, name=f"view-{spec.name}", daemon=True)
        running.thread.start()

    def _fail(self, running: _Running, reason: str) -> None:
        running.failures += 1
        settings = self._settings
        delay = min(
            settings.transform_retry_max_s,
            settings.transform_retry_initial_s * 2 ** (running.failures - 1),
        )
        running.retry_at = time.monotonic() + delay
        running.error = f"{reason} (retrying in {delay:.0f}s)"
        status = (
            running.task.status("error", running.error)
            if running.task is not None
            else DataflowStatus(
                kind="view",
                name=running.spec.name,
                state="error",
                reason=running.error,
                generation=running.spec.generation,
                instance=self._instance,
            )
        )
        self._publish(status)

    def _stop(self, name: str) -> None:
        running = self._running.pop(name, None)
        if running is None:
            return
        running.stop.set()
        if running.thread is not None:
            running.thread.join(timeout=30)

    # --- status ------------------------------------------------------------------------------

    def _publish(self, status: DataflowStatus) -> None:
        self._producer.produce(
            topics.STATUS,
            key=topics.status_key(status.kind, status.name).encode(),
            value=codec.dumps(status.model_dump(mode="json")),
        )
        self._producer.poll(0)

    def _watch(self) -> None:
        """Report stalls and export metrics, once a second."""
        now = time.monotonic()
        for name, running in list(self._running.items()):
            task = running.task
            if task is None or running.thread is None or not running.thread.is_alive():
                continue
            stalled = (
                task.lag > 0 and now - task.last_progress > self._settings.transform_stall_after_s
            )
            if stalled and task.state == "running":
                task.state = "stalled"
                self._publish(
                    task.status(
                        reason=f"inputs have {task.lag} changes but nothing was applied for "
                        f"{now - task.last_progress:.0f}s"
                    )
                )
            elif not stalled and task.state == "stalled":
                task.state = "running"
            engine = task.engine
            EVENTS_IN.labels(name).inc(max(0, engine.events_in - running.counted_in))
            ROWS_OUT.labels(name).inc(max(0, task.events_out - running.counted_out))
            running.counted_in, running.counted_out = engine.events_in, task.events_out
            LAG.labels(name).set(task.lag)
            status = task.status()
            if status.freshness_ms is not None:
                FRESHNESS.labels(name).set(status.freshness_ms)
