"""Serve's reconciler: materializes the views the desired state names, in Redis and PostgreSQL.

Scale-out: every serve replica consumes the views' desired state (``freshet.control.views``,
compacted, keyed by view name) in one consumer group (``serve_group``). A replica materializes
the views whose names fall in its partitions, so views spread over replicas and move to a
survivor when one dies; the survivor resumes each store from the positions stored with its rows.
A replica that lost a view but still writes (a zombie) is fenced by the stores: they refuse a
batch whose starting positions are not the ones they hold (see
:class:`~freshet.serve.materialize.stores.base.ViewStore`). As in transform, a replica reads its
partitions from the beginning on every assignment, starts views only once they were read to
their end, and keeps group sessions short (Tansu, see DESIGN.md).

A view deleted (a tombstone) loses its PostgreSQL table and Redis keys; a new generation
replaces the old one (see the stores). At start, and whenever it failed to drop, a replica drops
what the stores hold of views that no longer exist: it reads what the stores hold first, then the
desired state to its end, so a view created meanwhile is never taken for a deleted one.

Beside the views, a replica publishes the products whose ``publish_topic`` is set as Kafka
topics (:class:`~freshet.serve.publish.ProductPublishing`, in a thread of its own, with its own
consumer group on the products' desired state).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from pydantic import ValidationError

from freshet.common import topics
from freshet.common.kafka import CONTROL_FETCH_WAIT_MS, consumer_config, ensure_topics, read_to_end
from freshet.common.schemas import ViewSpec
from freshet.serve import metrics
from freshet.serve.config import ServeSettings
from freshet.serve.materialize.layout import ViewLayout
from freshet.serve.materialize.stores.base import ViewStore
from freshet.serve.materialize.stores.postgres import PostgresStore, PostgresTarget
from freshet.serve.materialize.stores.redis import RedisStore, built_views, drop_view
from freshet.serve.materialize.task import ViewMaterializer
from freshet.serve.publish import ProductPublishing

log = logging.getLogger(__name__)

SWEEP_RETRY_S = 5.0


@dataclass
class _Running:
    spec: ViewSpec
    partition: int
    task: ViewMaterializer | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    failures: int = 0
    retry_at: float = 0.0
    error: str | None = None


class ServeService:
    """Runs the materializers of this replica's views until ``stop`` is set."""

    def __init__(self, settings: ServeSettings, instance: str) -> None:
        self._settings = settings
        self._instance = instance
        self.redis = redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=2, socket_timeout=10
        )
        url = settings.target_database_url.get_secret_value()
        self.target = (
            PostgresTarget(url, settings.serve_target_schema, settings.serve_target_pool)
            if url
            else None
        )
        self.publishing = ProductPublishing(settings, self.redis)
        self._desired: dict[str, tuple[int, ViewSpec]] = {}
        self._running: dict[str, _Running] = {}
        self._assigned: set[int] = set()
        self._caught_up = False
        self._sweep_at: float | None = 0.0
        self._heartbeat = time.monotonic()
        self._lock = threading.Lock()

    # --- status -------------------------------------------------------------------------------

    def alive(self) -> bool:
        return time.monotonic() - self._heartbeat < 15

    def products(self) -> dict[str, Any]:
        """Per product this replica publishes as a topic: its state, records published, lag."""
        return self.publishing.describe()

    def views(self) -> dict[str, Any]:
        """Per view this replica runs: the generation and each store's state and lag."""
        with self._lock:
            running = list(self._running.items())
        out: dict[str, Any] = {}
        for name, r in running:
            view: dict[str, Any] = {"generation": r.spec.generation}
            if r.task is not None:
                view["stores"] = r.task.describe()
            if r.error:
                view["error"] = r.error
            out[name] = view
        return out

    # --- main loop ----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        settings = self._settings
        ensure_topics(settings.kafka_bootstrap, topics.control_topics(settings.topic_partitions))
        consumer = Consumer(
            consumer_config(
                settings.kafka_bootstrap,
                settings.serve_group,
                **{"fetch.wait.max.ms": CONTROL_FETCH_WAIT_MS},
            )
        )
        consumer.subscribe(
            [topics.CONTROL_VIEWS],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        publishing = threading.Thread(
            target=self.publishing.run, args=(stop,), name="serve-publishing", daemon=True
        )
        publishing.start()
        try:
            while not stop.is_set():
                self._heartbeat = time.monotonic()
                msg = consumer.poll(0.2)
                if msg is not None and not msg.error():
                    self._apply(msg.partition() or 0, msg.key(), msg.value())
                if self._caught_up or self._check_caught_up(consumer):
                    self._reconcile()
                if self._sweep_at is not None and time.monotonic() >= self._sweep_at:
                    self._sweep()
        finally:
            consumer.close()
            for name in list(self._running):
                self._stop(name)
            publishing.join(timeout=60)
            self.redis.close()
            if self.target is not None:
                self.target.close()

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
            self._desired.pop(name, None)
            self._stop(name)
            self._drop(name)
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
        self._desired[name] = (partition, spec)

    # --- dropping -----------------------------------------------------------------------------

    def _drop(self, name: str) -> None:
        try:
            drop_view(self.redis, self._settings.serve_redis_prefix, name)
            if self.target is not None:
                self.target.drop(name)
        except Exception as exc:
            log.warning("view %s: could not drop its stores (%s); retrying later", name, exc)
            self._sweep_at = time.monotonic() + SWEEP_RETRY_S

    def _sweep(self) -> None:
        """Drop what the stores hold of views that are not in the desired state."""
        settings = self._settings
        try:
            held = set(built_views(self.redis, settings.serve_redis_prefix))
            if self.target is not None:
                held |= set(self.target.built())
            if held:
                desired = self._read_desired()
                for name in sorted(held - desired):
                    log.info("view %s no longer exists: dropping what serve holds of it", name)
                    drop_view(self.redis, settings.serve_redis_prefix, name)
                    if self.target is not None:
                        self.target.drop(name)
        except Exception as exc:
            log.warning("could not sweep deleted views (%s); retrying later", exc)
            self._sweep_at = time.monotonic() + SWEEP_RETRY_S
            return
        self._sweep_at = None

    def _read_desired(self) -> set[str]:
        """Every view of the desired state (all partitions), read to the end now."""
        consumer = Consumer(
            consumer_config(
                self._settings.kafka_bootstrap, f"freshet-serve-sweep-{uuid.uuid4().hex}"
            )
        )
        names: set[str] = set()
        try:
            for msg in read_to_end(consumer, topics.CONTROL_VIEWS):
                key = msg.key()
                if key is None:
                    continue
                if msg.value() is None:
                    names.discard(key.decode())
                else:
                    names.add(key.decode())
        finally:
            consumer.close()
        return names

    # --- reconciliation -----------------------------------------------------------------------

    def _reconcile(self) -> None:
        now = time.monotonic()
        for name, (partition, spec) in self._desired.items():
            running = self._running.get(name)
            if running is None:
                with self._lock:
                    running = self._running[name] = _Running(spec, partition)
            idle = running.thread is None or not running.thread.is_alive()
            if idle and now >= running.retry_at:
                self._start(running)
        for name in [n for n in self._running if n not in self._desired]:
            self._stop(name)

    def _stores(self, layout: ViewLayout) -> list[ViewStore]:
        settings = self._settings
        stores: list[ViewStore] = [
            RedisStore(
                self.redis,
                settings.serve_redis_prefix,
                layout,
                settings.serve_redis_batch,
                settings.serve_changes_retained,
            )
        ]
        if self.target is not None:
            stores.append(
                PostgresStore(self.target, layout, settings.serve_target_interval_ms / 1000)
            )
        return stores

    def _start(self, running: _Running) -> None:
        spec = running.spec
        try:
            layout = ViewLayout.of(spec)
            task = ViewMaterializer(layout, self._stores(layout), self._settings)
        except Exception as exc:
            self._fail(running, f"{type(exc).__name__}: {exc}")
            return
        running.task = task
        running.stop = threading.Event()

        def target() -> None:
            try:
                task.run(running.stop)
                if not running.stop.is_set():
                    # Every store holds a newer generation: wait for its desired state.
                    self._fail(running, "a newer generation of the view is materialized")
                else:
                    running.failures = 0
            except Exception as exc:
                log.warning("view %s failed", spec.name, exc_info=True)
                self._fail(running, f"{type(exc).__name__}: {exc}")

        running.thread = threading.Thread(target=target, name=f"serve-{spec.name}", daemon=True)
        running.thread.start()

    def _fail(self, running: _Running, reason: str) -> None:
        running.failures += 1
        settings = self._settings
        delay = min(
            settings.serve_retry_max_s,
            settings.serve_retry_initial_s * 2 ** (running.failures - 1),
        )
        running.retry_at = time.monotonic() + delay
        running.error = f"{reason} (retrying in {delay:.0f}s)"

    def _stop(self, name: str) -> None:
        with self._lock:
            running = self._running.pop(name, None)
        if running is None:
            return
        running.stop.set()
        if running.thread is not None:
            running.thread.join(timeout=30)
        if running.task is not None:
            metrics.forget(name, [s.store.kind for s in running.task.stores])
