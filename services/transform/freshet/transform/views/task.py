"""One view at work: consume its tables' change topics, maintain it, write its topic.

A batch is: poll what the inputs have (sorted by source position, so a multi-table transaction
is applied together), apply it to the :class:`~freshet.transform.views.engine.ViewEngine`,
write the changed view rows and wait for the broker's acknowledgement, then commit the changed
base rows and the consumed offsets to the :class:`~freshet.transform.store.Store` in one
transaction. A crash before the commit replays the batch from the old offsets against the old
state: the same rows are written again (the view topic is keyed, so that is idempotent). Events
that ingest itself sent twice are recognised by their position and skipped by the engine.

While the inputs hold more, the wait for a batch's acknowledgements and its commit run in a
thread while the next batch is read and applied; the next batch's rows are written only after
that commit succeeded. So, as without the overlap, a batch's state and offsets are committed
together, after its rows were acknowledged and after every earlier batch's commit, and a task
fenced by a successor writes no rows beyond the batch whose commit failed.

The task also follows ``freshet.positions`` to know, per source, the LSN up to which every change
has been applied (:class:`Frontier`), and reports it in its status and in the
``freshet.applied`` header of every record it writes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from operator import itemgetter

import orjson
from confluent_kafka import Consumer, Producer

from freshet.common import topics
from freshet.common.kafka import (
    consumer_config,
    end_offsets,
    ensure_topics,
    producer_config,
    read_to_end,
)
from freshet.common.schemas import DataflowStatus, NodeCounts, ViewSpec
from freshet.common.sql.views import ViewPlan
from freshet.common.topics import COMPACTED, TopicSpec
from freshet.transform.config import TransformSettings
from freshet.transform.runtime import (
    FETCH_WAIT_MS,
    Frontier,
    Headers,
    Outbox,
    StatusPacer,
    assign_inputs,
    changed_offsets,
    consumer_lag,
    freeze_survivors,
    poll_batch,
)
from freshet.transform.store import Store
from freshet.transform.views.engine import (
    ChangeEvent,
    Pos,
    Table,
    ViewEngine,
    ViewError,
    exact_decimals,
    load_row,
)

log = logging.getLogger(__name__)


MAX_BATCH = 100_000
"""Events per batch at most: a view that is behind takes big batches, so a group changed many
times in a batch is computed and written once (a view of 20,000 groups catching up on 242,000
changes wrote 134,000 rows in batches of 20,000, 57,000 in batches of 100,000)."""


class ViewTask:
    """Runs one view until ``stop`` is set; raises on a failure (the service retries)."""

    def __init__(
        self,
        spec: ViewSpec,
        plan: ViewPlan,
        settings: TransformSettings,
        store: Store,
        publish_status: Callable[[DataflowStatus], None],
        instance: str,
    ) -> None:
        self.spec = spec
        self.plan = plan
        self._settings = settings
        self._store = store
        self._publish = publish_status
        self._instance = instance
        self.engine = ViewEngine(plan)
        self.state = "loading"
        self.events_out = 0
        self.lag = 0
        self.last_progress = time.monotonic()
        self.busy_since: float | None = None
        """When the batch in hand started (``None`` between batches): one that never ends,
        blocked on the broker or the store, is a stall too."""
        self._consumed: dict[tuple[str, int], int] = {}
        self._outputs: dict[int, int] = {}
        self._topic = topics.view_topic(spec.name)
        self._pacer = StatusPacer()
        self._frontier: Frontier | None = None
        self._committer = ThreadPoolExecutor(1, thread_name_prefix=f"view-{spec.name}-commit")
        self._commit: tuple[Future[tuple[Outbox, int]], bool] | None = None
        """The store commit in flight, and whether its status report must be published."""

    # --- status ---------------------------------------------------------------------------

    def status(self, state: str | None = None, reason: str | None = None) -> DataflowStatus:
        engine = self.engine
        now_ms = int(time.time() * 1000)
        freshness = None
        if engine.last_commit_ts_ms is not None:
            freshness = 0 if self.lag == 0 else max(now_ms - engine.last_commit_ts_ms, 0)
        # One node per table read (events read / events that changed a row), and the output
        # (events applied / view rows written).
        nodes = {
            f"table:{t.qualified}": NodeCounts(events_in=t.events, events_out=t.applied)
            for t in engine.tables.values()
        }
        applied = sum(t.applied for t in engine.tables.values())
        nodes["output"] = NodeCounts(events_in=applied, events_out=self.events_out)
        return DataflowStatus(
            kind="view",
            name=self.spec.name,
            state=state or self.state,
            reason=reason,
            generation=self.spec.generation,
            applied=dict(self._frontier.applied) if self._frontier else {},
            last_commit_ts_ms=engine.last_commit_ts_ms,
            freshness_ms=freshness,
            lag=self.lag,
            outputs=dict(self._outputs),
            nodes=nodes,
            events_in=engine.events_in,
            events_out=self.events_out,
            instance=self._instance,
        )

    def _report(self, force: bool = False) -> None:
        """Publish the status if due (``force``: it has news; see :class:`StatusPacer`)."""
        if self._pacer.due(news=force):
            self._publish(self.status())

    # --- the loop -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        exact_decimals()  # this thread's context: sums of numerics must not round
        settings = self._settings
        plan = self.plan
        specs = [TopicSpec(t.topic, settings.topic_partitions) for t in self.engine.tables.values()]
        specs.append(TopicSpec(self._topic, settings.topic_partitions, COMPACTED))
        ensure_topics(settings.kafka_bootstrap, specs)
        producer = Producer(producer_config(settings.kafka_bootstrap, **{"linger.ms": 1}))
        # A short fetch wait, as every consumer a change passes through (CHANGE_FETCH_WAIT_MS).
        consumer = Consumer(
            consumer_config(
                settings.kafka_bootstrap,
                f"freshet-view-{self.spec.name}-assigned",
                **{"fetch.wait.max.ms": FETCH_WAIT_MS},
            )
        )
        try:
            self._start(consumer, producer)
            self.state = "running"
            self._report(force=True)
            while not stop.is_set():
                self._batch(consumer, producer)
            self._settle(consumer)
        finally:
            if self._commit is not None:  # failed meanwhile: let the commit end, then stop
                with contextlib.suppress(Exception):
                    self._commit[0].result()
                self._commit = None
            self._committer.shutdown()
            consumer.close()
            producer.flush(10)
        log.info("view %s stopped", plan.name)

    def _start(self, consumer: Consumer, producer: Producer) -> None:
        store = self._store
        store.claim()
        fresh = not store.exists()
        truncated = store.meta("t")
        for qualified in self.engine.tables:
            rows = ((pk, *load_row(raw)) for pk, raw in store.rows(qualified))
            mark = truncated.get(qualified)
            self.engine.load(
                qualified,
                rows,
                tuple(orjson.loads(mark)) if mark else None,
            )
        initial = self.engine.drain()
        self._consumed = store.offsets()
        inputs = {t.topic: t.source for t in self.engine.tables.values()}
        self._frontier = assign_inputs(consumer, inputs, self._consumed)
        if fresh:
            # A new view (or a new generation of one): remove what an earlier generation left
            # on the topic, write the first rows (an aggregate over no rows has one), and claim
            # the store as created, so a restart does not do it again.
            stale = self._live_keys() - {key for key, value in initial if value is not None}
            self._produce(producer, [(key, None) for key in sorted(stale)])
            self._produce(producer, initial)
            store.commit({}, {})
        else:
            # Rows this view wrote before the restart lie below the topic's current end: the
            # status's outputs start there, so a reader waiting for outputs (serve's
            # read-your-writes) waits for them too, not only for what this run writes.
            self._outputs = self._topic_ends()
        log.info(
            "view %s loaded %d rows of %d tables; consuming their topics",
            self.spec.name,
            sum(len(t.rows) for t in self.engine.tables.values()),
            len(self.engine.tables),
        )

    def _batch(self, consumer: Consumer, producer: Producer) -> None:
        frontier = self._frontier
        assert frontier is not None
        messages = poll_batch(consumer, frontier, MAX_BATCH)
        started = time.monotonic() if messages else None
        if started is not None and self.busy_since is None:
            self.busy_since = started
        engine = self.engine
        read = engine.read
        data: list[tuple[Pos, Table, bytes | None, ChangeEvent]] = []
        consumed = dict(self._consumed)
        for msg in messages:
            topic = msg.topic() or ""
            consumed[(topic, msg.partition() or 0)] = (msg.offset() or 0) + 1
            raw = msg.value()
            if raw is None:
                continue  # a tombstone after a delete: compaction's, not ours
            try:
                table, event, pos = read(topic, raw)
            except (TypeError, ValueError) as exc:
                raise ViewError(
                    f"the record at {topic}/{msg.partition()}/{msg.offset()} is not a change "
                    f"event ({type(exc).__name__}: {exc})"
                ) from None
            data.append((pos, table, msg.key(), event))
        if data:
            data.sort(key=itemgetter(0))  # stable: a position's duplicates keep their order
            apply = engine.apply
            for pos, table, key, event in data:
                apply(table, pos, key, event)
        # The previous batch's commit ran while this one was read and applied; this batch's
        # rows are written only once it succeeded (a task fenced meanwhile writes nothing more).
        self._settle(consumer)
        if started is not None:
            self.busy_since = started
        if consumed != self._consumed:
            applied_before = dict(frontier.applied)
            applied = frontier.advance(consumed)
            outbox = self._send(producer, engine.drain(), applied)
            rows = engine.take_dirty()
            meta = {
                f"t:{t.qualified}": orjson.dumps(list(t.truncated))
                for t in engine.tables.values()
                if t.truncated is not None and t.qualified in rows
            }
            offsets = changed_offsets(consumed, self._consumed)
            self._consumed = consumed
            future = self._committer.submit(self._deliver, outbox, rows, offsets, meta)
            self._commit = (future, applied != applied_before)
            freeze_survivors()
            if consumer_lag(consumer, consumed) == 0:
                self._settle(consumer)  # caught up: nothing to overlap the commit with
        else:
            before = dict(frontier.applied)
            after = frontier.advance(self._consumed)
            self.lag = consumer_lag(consumer, self._consumed)
            self._report(force=after != before)

    def _deliver(
        self,
        outbox: Outbox,
        rows: dict[str, dict[str, bytes]],
        offsets: dict[tuple[str, int], int],
        meta: dict[str, bytes],
    ) -> tuple[Outbox, int]:
        """Wait until the broker acknowledged a batch's rows, then commit its state and offsets.

        Runs in the commit thread; returns the outbox and how many rows it held.
        """
        count = outbox.confirm()
        self._store.commit(rows, offsets, meta)
        return outbox, count

    def _settle(self, consumer: Consumer) -> None:
        """Wait for the commit in flight (raising its failure, e.g. ``Fenced``); report it."""
        if self._commit is None:
            return
        future, force = self._commit
        self._commit = None
        self._confirmed(*future.result())
        self.last_progress = time.monotonic()
        self.busy_since = None
        self.lag = consumer_lag(consumer, self._consumed)
        self._report(force=force)

    def _topic_ends(self) -> dict[int, int]:
        consumer = Consumer(
            consumer_config(
                self._settings.kafka_bootstrap,
                f"freshet-view-{self.spec.name}-ends",
                **{"max.partition.fetch.bytes": 1024},
            )
        )
        try:
            return end_offsets(consumer, self._topic, timeout=120)
        finally:
            consumer.close()

    def _live_keys(self) -> set[bytes]:
        """The keys whose last record on the view topic is a row (not a tombstone)."""
        consumer = Consumer(
            consumer_config(self._settings.kafka_bootstrap, f"freshet-view-{self.spec.name}-scan")
        )
        live: set[bytes] = set()
        try:
            for msg in read_to_end(consumer, self._topic, timeout=120):
                key = msg.key()
                if key is None:
                    continue
                if msg.value() is None:
                    live.discard(key)
                else:
                    live.add(key)
        finally:
            consumer.close()
        return live

    def _produce(
        self,
        producer: Producer,
        outputs: list[tuple[bytes, bytes | None]],
        applied: dict[str, int] | None = None,
    ) -> None:
        outbox = self._send(producer, outputs, applied)
        self._confirmed(outbox, outbox.confirm())

    def _send(
        self,
        producer: Producer,
        outputs: list[tuple[bytes, bytes | None]],
        applied: dict[str, int] | None = None,
    ) -> Outbox:
        """Queue view rows to the producer; :meth:`Outbox.confirm` waits for their acks."""
        outbox = Outbox(producer, f"view {self.spec.name}")
        if outputs:
            headers: Headers = [(topics.APPLIED_HEADER, orjson.dumps(applied or {}))]
            send, topic = outbox.send, self._topic
            for key, value in outputs:
                send(topic, key, value, headers)
        return outbox

    def _confirmed(self, outbox: Outbox, count: int) -> None:
        """Count a confirmed outbox's rows and the view topic's end offsets they reached."""
        self.events_out += count
        for (_topic, partition), end in outbox.next_offsets.items():
            if end > self._outputs.get(partition, 0):
                self._outputs[partition] = end
