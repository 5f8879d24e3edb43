"""One view at work: consume its topic and keep each of its stores up to date.

Each store (:class:`~freshet.serve.materialize.stores.base.ViewStore`) is followed by its own
thread with its own consumer (assigned, not in a group) over every partition of the view's
topic, from the store's own positions. So a store that fails (PostgreSQL or Redis down) neither
stops nor holds back the other, and a slow commit in one (a PostgreSQL transaction) never delays
the next change in the other (the Redis read path). A failed store is re-opened after a backoff;
it reads its positions again and its consumer goes back to them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, Message
from confluent_kafka import KafkaError as CKafkaError
from confluent_kafka import TopicPartition as TP

from freshet.common import topics
from freshet.common.exceptions import KafkaError
from freshet.common.kafka import consumer_config, ensure_topics, partitions_of
from freshet.common.topics import COMPACTED, TopicSpec
from freshet.serve import metrics
from freshet.serve.config import ServeSettings
from freshet.serve.exceptions import BadValueError, Fenced, StaleGeneration
from freshet.serve.materialize.batch import Batch
from freshet.serve.materialize.layout import Change, ViewLayout
from freshet.serve.materialize.stores.base import ViewStore

log = logging.getLogger(__name__)

FENCED_RETRY_S = 0.2
WATCH_INTERVAL_S = 0.5

Record = Change | tuple[int, int]


@dataclass
class StoreState:
    """A store as its materializer sees it."""

    store: ViewStore
    offsets: dict[int, int] | None = None
    """Next offset per partition, as the store holds it; None while the store is not open."""
    applied: dict[int, bytes] = field(default_factory=dict)
    retry_at: float = 0.0
    failures: int = 0
    error: str | None = None
    stale: bool = False
    ready: bool = False
    lag: int | None = None
    watched_at: float = 0.0

    def describe(self) -> dict[str, Any]:
        state = (
            "stale"
            if self.stale
            else "error"
            if self.error
            else "ready"
            if self.ready
            else ("loading" if self.offsets is not None else "pending")
        )
        out: dict[str, Any] = {"state": state, "lag": self.lag}
        if self.error:
            out["error"] = self.error
        return out


def _chunks(records: list[Record], size: int | None) -> Iterator[list[Record]]:
    if size is None or len(records) <= size:
        yield records
        return
    for start in range(0, len(records), size):
        yield records[start : start + size]


class ViewMaterializer:
    """Materializes one generation of one view until ``stop`` is set.

    Raises on failures that concern the view itself (its topic unreadable, a record that does
    not decode); the service retries it with backoff. Store failures are handled here.
    """

    def __init__(
        self, layout: ViewLayout, stores: list[ViewStore], settings: ServeSettings
    ) -> None:
        self.layout = layout
        self.stores = [StoreState(s) for s in stores]
        self._settings = settings
        self._topic = topics.view_topic(layout.name)
        self._decode_key = self.layout.key_decoder()
        self.last_progress = time.monotonic()

    def describe(self) -> dict[str, Any]:
        return {s.store.kind: s.describe() for s in self.stores}

    # --- the loop -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Follow the topic into every store until ``stop`` is set or every store is stale.

        Raises the first failure that concerns the view itself (from any store's thread) after
        stopping the other threads.
        """
        settings = self._settings
        ensure_topics(
            settings.kafka_bootstrap,
            [TopicSpec(self._topic, settings.topic_partitions, COMPACTED)],
        )
        halt = threading.Event()
        failures: list[BaseException] = []

        def follow(state: StoreState) -> None:
            try:
                self._follow(state, stop, halt)
            except BaseException as exc:
                failures.append(exc)
                halt.set()

        threads = [
            threading.Thread(
                target=follow,
                args=(state,),
                name=f"serve-{self.layout.name}-{state.store.kind}",
                daemon=True,
            )
            for state in self.stores
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                if stop.is_set():
                    halt.set()
                thread.join(0.2)
        if failures:
            raise failures[0]
        if not stop.is_set():
            log.info("view %s: a newer generation took over; stopping", self.layout.name)
        log.info("view %s generation %d stopped", self.layout.name, self.layout.generation)

    def _follow(self, state: StoreState, stop: threading.Event, halt: threading.Event) -> None:
        """One store's loop: its own consumer, from its own positions.

        A store with a ``batch_interval_s`` is paced while it keeps up (ready, and less than a
        batch behind): its consumer is replaced by one that fetches only when its queue is empty
        (librdkafka otherwise keeps fetching ahead, each fetch a listing on the embedded broker),
        and the loop takes a batch at most every interval. Until it caught up, after it
        re-opens, and whenever it falls a batch behind, it reads as fast as it can.
        """
        settings = self._settings
        interval = state.store.batch_interval_s
        paced = False
        consumer = self._consumer(state, paced)
        try:
            partitions = partitions_of(consumer, self._topic)
            while not (stop.is_set() or halt.is_set()):
                if state.offsets is None:
                    if state.stale:
                        return
                    wait = state.retry_at - time.monotonic()
                    if wait > 0:
                        halt.wait(min(wait, 0.2))
                        continue
                    if self._open(state, partitions):
                        assert state.offsets is not None
                        consumer.assign(
                            [TP(self._topic, p, state.offsets.get(p, 0)) for p in partitions]
                        )
                    continue
                behind = state.lag is None or state.lag >= settings.serve_batch_max
                if paced != (interval > 0 and state.ready and not behind):
                    # What the old consumer fetched ahead is dropped: the new one starts at the
                    # store's positions.
                    paced = not paced
                    consumer.close()
                    consumer = self._consumer(state, paced)
                    consumer.assign(
                        [TP(self._topic, p, state.offsets.get(p, 0)) for p in partitions]
                    )
                polled = time.monotonic()
                messages = self._poll(consumer)
                self._write(state, self._decode(messages))
                self._watch(consumer, state, partitions)
                if paced and len(messages) < settings.serve_batch_max:
                    halt.wait(max(0.0, polled + interval - time.monotonic()))
        finally:
            consumer.close()

    def _consumer(self, state: StoreState, paced: bool) -> Consumer:
        """A consumer (assigned, not in a group) for ``state``'s store; see :meth:`_follow`."""
        overrides: dict[str, Any] = {"fetch.wait.max.ms": state.store.fetch_wait_ms}
        if paced:
            overrides["queued.min.messages"] = 1
            overrides["fetch.queue.backoff.ms"] = max(1, round(state.store.batch_interval_s * 1000))
        return Consumer(
            consumer_config(
                self._settings.kafka_bootstrap,
                f"freshet-serve-{self.layout.name}-{state.store.kind}-assigned",
                **overrides,
            )
        )

    def _poll(self, consumer: Consumer) -> list[Message]:
        first = consumer.poll(0.1)
        if first is None:
            return []
        return [first, *consumer.consume(self._settings.serve_batch_max - 1, timeout=0)]

    def _decode(self, messages: list[Message]) -> list[Record]:
        records: list[Record] = []
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() == CKafkaError._PARTITION_EOF:
                    continue
                raise KafkaError(f"consuming {self._topic}: {err}")
            partition, offset = msg.partition() or 0, msg.offset() or 0
            raw_key = msg.key()
            if raw_key is None:
                records.append((partition, offset))
                continue
            try:
                values, key = self._decode_key(raw_key)
            except (BadValueError, ValueError, TypeError) as exc:
                raise BadValueError(
                    f"view {self.layout.name}: the key at {self._topic}/{partition}@{offset} does "
                    f"not fit the view's key {list(self.layout.key_names)}: {exc}"
                ) from None
            applied = None
            for header in msg.headers() or ():
                if header[0] == topics.APPLIED_HEADER and isinstance(header[1], bytes):
                    applied = header[1]
            records.append(Change(partition, offset, key, values, msg.value(), applied))
        return records

    def _write(self, state: StoreState, records: list[Record]) -> None:
        store = state.store
        assert state.offsets is not None
        for chunk in _chunks(records, store.max_records):
            batch = Batch.of(chunk, state.offsets)
            if not batch:
                continue
            try:
                store.write(batch)
            except Exception as exc:
                self._fail(state, exc)
                return
            state.offsets.update(batch.end)
            state.applied.update(batch.applied)
            self.last_progress = time.monotonic()
            upserts = len(batch.upserts)
            labels = (self.layout.name, store.kind)
            metrics.BATCHES.labels(*labels).inc()
            metrics.ROWS_APPLIED.labels(*labels, "upsert").inc(upserts)
            metrics.ROWS_APPLIED.labels(*labels, "delete").inc(len(batch.changes) - upserts)

    # --- opening and failing stores -------------------------------------------------------

    def _open(self, state: StoreState, partitions: list[int]) -> bool:
        """Open the store; True if it opened (its positions are in ``state.offsets``)."""
        try:
            offsets = state.store.open(partitions)
        except Exception as exc:
            self._fail(state, exc)
            return False
        state.offsets = dict(offsets)
        state.error = None
        state.ready = False
        log.info(
            "view %s generation %d: %s resumes at %s",
            self.layout.name,
            self.layout.generation,
            state.store.kind,
            state.offsets,
        )
        return True

    def _fail(self, state: StoreState, exc: Exception) -> None:
        kind = state.store.kind
        metrics.ERRORS.labels(self.layout.name, kind).inc()
        state.offsets = None
        if isinstance(exc, StaleGeneration):
            state.stale = True
            state.error = None
            log.info("view %s: %s: %s", self.layout.name, kind, exc)
            return
        if isinstance(exc, Fenced):
            # Another writer moved the store: read its positions again, soon.
            state.retry_at = time.monotonic() + FENCED_RETRY_S
            log.warning("view %s: %s: %s; re-reading its positions", self.layout.name, kind, exc)
            return
        state.failures += 1
        settings = self._settings
        delay = min(
            settings.serve_retry_max_s, settings.serve_retry_initial_s * 2 ** (state.failures - 1)
        )
        state.retry_at = time.monotonic() + delay
        state.error = f"{type(exc).__name__}: {exc} (retrying in {delay:.0f}s)"
        log.warning("view %s: %s failed: %s", self.layout.name, kind, state.error)

    # --- lag and readiness ----------------------------------------------------------------

    def _watch(self, consumer: Consumer, state: StoreState, partitions: list[int]) -> None:
        now = time.monotonic()
        if now - state.watched_at < WATCH_INTERVAL_S or state.offsets is None:
            return
        highs: dict[int, int] = {}
        for p in partitions:
            _low, high = consumer.get_watermark_offsets(TP(self._topic, p), cached=True)
            if high >= 0:
                highs[p] = high
        if len(highs) < len(partitions):
            # This consumer has not fetched from every partition yet (it was just made, on a
            # switch to or from pacing): the lag stays the last one known.
            return
        state.watched_at = now
        lag = sum(max(0, high - state.offsets.get(p, 0)) for p, high in highs.items())
        state.lag = lag
        labels = (self.layout.name, state.store.kind)
        metrics.LAG.labels(*labels).set(lag)
        if lag == 0 and not state.ready:
            try:
                state.store.caught_up()
            except Exception as exc:
                self._fail(state, exc)
                return
            state.ready = True
            metrics.READY.labels(*labels).set(1)
            log.info(
                "view %s generation %d: %s caught up",
                self.layout.name,
                self.layout.generation,
                state.store.kind,
            )
