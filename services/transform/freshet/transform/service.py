"""Transform's reconciler: runs the views and pipelines of the desired state, reports status.

The desired state of views and of pipelines (``freshet.control.views`` and
``freshet.control.pipelines``, compacted) is consumed by every transform worker in one consumer
group; a worker runs the views and pipelines whose keys fall in its partitions, so they spread
over workers and move to a survivor when one dies. The survivor resumes from the dataflow's
durable store (:mod:`freshet.transform.store`), which the dead worker's successor-fencing epoch
keeps exact. On every assignment the partitions are read from the beginning (the topics are the
whole desired state), and dataflows start only once they were read to their end.

Views and pipelines compile against ``freshet.schemas`` (the tables ingest captures). One that
fails is reported ``error`` with the reason and retried with backoff; one whose inputs have
changes but that made no progress for ``transform_stall_after_s`` is reported ``stalled``.
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
from freshet.common.exceptions import ConfigError
from freshet.common.kafka import (
    CONTROL_FETCH_WAIT_MS,
    CompactedTopicView,
    consumer_config,
    ensure_topics,
    producer_config,
)
from freshet.common.pipelines import PipelineError, PipelineSpec, compile_pipeline
from freshet.common.schemas import DataflowStatus, TableSchema, ViewSpec
from freshet.common.secrets import SecretBox
from freshet.common.sql.errors import SqlError
from freshet.common.sql.views import Catalog, compile_view
from freshet.transform.config import TransformSettings
from freshet.transform.pipelines.task import PipelineTask, salts_of
from freshet.transform.store import Fenced, Store
from freshet.transform.views.task import ViewTask

log = logging.getLogger(__name__)

_LABELS = ["kind", "name"]
EVENTS_IN = Counter("freshet_transform_events_in_total", "Change events applied", _LABELS)
ROWS_OUT = Counter(
    "freshet_transform_rows_out_total", "View rows and pipeline sink records written", _LABELS
)
LAG = Gauge("freshet_transform_lag_messages", "Input messages not yet applied", _LABELS)
FRESHNESS = Gauge(
    "freshet_transform_freshness_ms",
    "Now minus the commit time of the last applied change",
    _LABELS,
)

KINDS = {topics.CONTROL_VIEWS: "view", topics.CONTROL_PIPELINES: "pipeline"}
"""The desired-state topics transform follows, and the kind of dataflow each one holds."""

Spec = ViewSpec | PipelineSpec
Task = ViewTask | PipelineTask
Key = tuple[str, str]
"""A dataflow: (kind, name)."""


@dataclass
class _Running:
    spec: Spec
    partition: int
    task: Task | None = None
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
        self._desired: dict[Key, tuple[int, Spec]] = {}
        self._running: dict[Key, _Running] = {}
        self._assigned: set[tuple[str, int]] = set()
        self._caught_up = False
        self._schemas: CompactedTopicView | None = None
        self._heartbeat = time.monotonic()
        self._lock = threading.Lock()

    def health(self) -> tuple[bool, dict[str, Any]]:
        alive = time.monotonic() - self._heartbeat < 15
        with self._lock:
            states = {k: (r.task.state if r.task else "pending") for k, r in self._running.items()}
        views = {name: state for (kind, name), state in states.items() if kind == "view"}
        pipelines = {name: state for (kind, name), state in states.items() if kind == "pipeline"}
        return alive, {"views": views, "pipelines": pipelines}

    # --- main loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        settings = self._settings
        ensure_topics(settings.kafka_bootstrap, topics.control_topics(settings.topic_partitions))
        self._schemas = CompactedTopicView(
            settings.kafka_bootstrap, topics.SCHEMAS, TableSchema.model_validate_json
        )
        self._schemas.start()
        # Not the faust app's own group (the same id would mix two assignment protocols). The
        # group kept its first name when pipelines joined the views on it.
        consumer = Consumer(
            consumer_config(
                settings.kafka_bootstrap,
                f"{settings.transform_group}.views",
                **{"fetch.wait.max.ms": CONTROL_FETCH_WAIT_MS},
            )
        )
        consumer.subscribe(
            list(KINDS),
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
                    self._apply(msg.topic() or "", msg.partition() or 0, msg.key(), msg.value())
                if self._caught_up or self._check_caught_up(consumer):
                    self._reconcile()
                if time.monotonic() - last_status >= 1.0:
                    self._watch()
                    last_status = time.monotonic()
        finally:
            consumer.close()
            for key in list(self._running):
                self._stop(key)
            self._schemas.close()
            self._producer.flush(10)

    def _check_caught_up(self, consumer: Consumer) -> bool:
        if not self._assigned:
            return False
        for topic, partition in self._assigned:
            tp = TopicPartition(topic, partition)
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
            self._assigned.add((p.topic, p.partition))
        consumer.assign(partitions)
        log.info("assigned desired-state partitions %s", sorted(self._assigned))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(p.topic, p.partition) for p in partitions}
        self._assigned -= revoked
        for key, (partition, _spec) in list(self._desired.items()):
            if (_topic_of(key[0]), partition) in revoked:
                del self._desired[key]
        for key, running in list(self._running.items()):
            if (_topic_of(key[0]), running.partition) in revoked:
                self._stop(key)
        consumer.unassign()

    def _apply(
        self, topic: str, partition: int, raw_key: bytes | None, raw_value: bytes | None
    ) -> None:
        kind = KINDS.get(topic)
        if raw_key is None or kind is None:
            return
        key = (kind, raw_key.decode())
        if raw_value is None:
            previous = self._desired.pop(key, None)
            self._stop(key)
            if previous is not None:
                self._drop(kind, previous[1])
            return
        model: type[Spec] = ViewSpec if kind == "view" else PipelineSpec
        try:
            spec = model.model_validate_json(raw_value)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                for e in exc.errors(include_input=False)
            )
            log.error("ignoring invalid desired state for %s %s: %s", kind, key[1], problems)
            return
        previous = self._desired.get(key)
        if previous is not None and previous[1].generation != spec.generation:
            self._stop(key)
            self._drop(kind, previous[1])
        self._desired[key] = (partition, spec)

    def _drop(self, kind: str, spec: Spec) -> None:
        try:
            Store(self._redis, kind, spec.name, spec.generation).drop()
        except redis.RedisError as exc:
            log.warning(
                "%s %s: could not drop the state of generation %d: %s",
                kind,
                spec.name,
                spec.generation,
                exc,
            )
        self._producer.produce(
            topics.STATUS, key=topics.status_key(kind, spec.name).encode(), value=None
        )

    # --- reconciliation ----------------------------------------------------------------------

    def _reconcile(self) -> None:
        now = time.monotonic()
        for key, (partition, spec) in self._desired.items():
            running = self._running.get(key)
            if running is None:
                running = self._running[key] = _Running(spec, partition)
            idle = running.thread is None or not running.thread.is_alive()
            if idle and now >= running.retry_at:
                self._start(running)
        for key in [k for k in self._running if k not in self._desired]:
            self._stop(key)

    def _catalog(self, spec: ViewSpec) -> Catalog:
        """The tables control resolved the SQL to: a source added later cannot change the view."""
        assert self._schemas is not None
        return Catalog(s for _key, s in self._schemas.items() if s.qualified in spec.tables)

    def _view_task(self, running: _Running, spec: ViewSpec) -> ViewTask | None:
        try:
            plan = compile_view(spec.name, spec.sql, self._catalog(spec))
        except SqlError as exc:
            self._fail(
                running, f"the view's SQL does not compile against the captured tables: {exc}"
            )
            return None
        store = Store(self._redis, "view", spec.name, spec.generation)
        return ViewTask(spec, plan, self._settings, store, self._publish, self._instance)

    def _pipeline_task(self, running: _Running, spec: PipelineSpec) -> PipelineTask | None:
        assert self._schemas is not None
        try:
            plan = compile_pipeline(spec, (s for _key, s in self._schemas.items()))
        except PipelineError as exc:
            self._fail(running, f"the pipeline does not compile against the captured tables: {exc}")
            return None
        key = self._settings.secret_key
        try:
            salts = salts_of(spec, SecretBox(key) if key.get_secret_value() else None)
        except (ValueError, ConfigError) as exc:
            self._fail(running, str(exc))
            return None
        store = Store(self._redis, "pipeline", spec.name, spec.generation)
        return PipelineTask(spec, plan, salts, self._settings, store, self._publish, self._instance)

    def _start(self, running: _Running) -> None:
        spec = running.spec
        task: Task | None
        if isinstance(spec, ViewSpec):
            task = self._view_task(running, spec)
        else:
            task = self._pipeline_task(running, spec)
        if task is None:
            return
        kind = "view" if isinstance(spec, ViewSpec) else "pipeline"
        running.task = task
        running.stop = threading.Event()

        def target() -> None:
            try:
                task.run(running.stop)
                running.failures = 0
            except Fenced as exc:
                log.warning("%s %s: %s; stopping", kind, spec.name, exc)
            except Exception as exc:
                log.warning("%s %s failed", kind, spec.name, exc_info=True)
                self._fail(running, f"{type(exc).__name__}: {exc}")

        running.thread = threading.Thread(target=target, name=f"{kind}-{spec.name}", daemon=True)
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
                kind="view" if isinstance(running.spec, ViewSpec) else "pipeline",
                name=running.spec.name,
                state="error",
                reason=running.error,
                generation=running.spec.generation,
                instance=self._instance,
            )
        )
        self._publish(status)

    def _stop(self, key: Key) -> None:
        running = self._running.pop(key, None)
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
        """Report stalls and export metrics, once a second.

        A failure here is logged; it never stops the reconciler.
        """
        try:
            self._watch_tasks()
        except Exception:
            log.exception("watching the running tasks failed")

    def _watch_tasks(self) -> None:
        now = time.monotonic()
        for (kind, name), running in list(self._running.items()):
            task = running.task
            if task is None or running.thread is None or not running.thread.is_alive():
                continue
            limit = self._settings.transform_stall_after_s
            busy_since = getattr(task, "busy_since", None)
            stalled = (task.lag > 0 and now - task.last_progress > limit) or (
                busy_since is not None and now - busy_since > limit
            )
            if stalled and task.state == "running":
                task.state = "stalled"
                if busy_since is not None and now - busy_since > limit:
                    reason = (
                        f"a batch of changes read {now - busy_since:.0f}s ago is not applied yet "
                        "(waiting on the broker or the store); nothing was applied since"
                    )
                else:
                    reason = (
                        f"inputs have {task.lag} changes but nothing was applied for "
                        f"{now - task.last_progress:.0f}s"
                    )
                self._publish(task.status(reason=reason))
            elif not stalled and task.state == "stalled":
                task.state = "running"
            events_in = task.engine.events_in if isinstance(task, ViewTask) else task.events_in
            EVENTS_IN.labels(kind, name).inc(max(0, events_in - running.counted_in))
            ROWS_OUT.labels(kind, name).inc(max(0, task.events_out - running.counted_out))
            running.counted_in, running.counted_out = events_in, task.events_out
            LAG.labels(kind, name).set(task.lag)
            status = task.status()
            if status.freshness_ms is not None:
                FRESHNESS.labels(kind, name).set(status.freshness_ms)


def _topic_of(kind: str) -> str:
    return next(topic for topic, k in KINDS.items() if k == kind)
