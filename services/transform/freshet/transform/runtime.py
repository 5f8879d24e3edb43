"""Pieces every dataflow task (a view, a pipeline) uses around its Kafka clients.

* :func:`assign_inputs`: assign the input topics at the offsets of the task's store (the
  beginning when it has none) and ``freshet.positions`` from its beginning, and build the
  :class:`Frontier` of the sources read;
* :func:`poll_batch`: up to ``limit`` input messages, positions fed to the frontier;
* :class:`Outbox`: produce records and wait until the broker acknowledged every one of them -
  the condition for committing the offsets they came from;
* :func:`consumer_lag`: input messages not consumed yet, from the high watermarks of fetch
  responses (never ListOffsets, which the embedded broker answers wrongly);
* :func:`freeze_survivors`: keep the garbage collector off the state tasks hold.
"""

from __future__ import annotations

import gc
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer
from confluent_kafka import KafkaError as CKafkaError
from confluent_kafka import TopicPartition as TP
from pydantic import ValidationError

from freshet.common import topics
from freshet.common.exceptions import KafkaError
from freshet.common.kafka import CHANGE_FETCH_WAIT_MS, partitions_of
from freshet.common.schemas import SourcePosition

log = logging.getLogger(__name__)

Headers = list[tuple[str, str | bytes | None]]

FETCH_WAIT_MS = CHANGE_FETCH_WAIT_MS
"""``fetch.wait.max.ms`` of the tasks' consumers (see ``CHANGE_FETCH_WAIT_MS``)."""


FREEZE_INTERVAL_S = 5.0
_last_freeze = 0.0


def freeze_survivors() -> None:
    """Keep the garbage collector off long-lived state, at most every few seconds per process.

    Collects the young generations, then moves everything that survived out of the collector's
    reach (:func:`gc.freeze`).

    A view holds millions of long-lived row objects; without this, every full collection walks
    all of them, a pause of hundreds of milliseconds that every change waits for. Rows are
    tuples, dicts and values without reference cycles, so freed rows go by reference counting.
    """
    global _last_freeze
    now = time.monotonic()
    if now - _last_freeze < FREEZE_INTERVAL_S:
        return
    _last_freeze = now
    gc.collect(1)
    gc.freeze()


class Frontier:
    """Per source, the LSN up to which a consumer has everything, from ``freshet.positions``.

    Ingest publishes ``(lsn, offsets)``: every change committed at or before ``lsn`` lies below
    ``offsets`` in its partition. Once the consumed offsets of all the partitions this task reads
    reach those offsets, ``lsn`` is applied.
    """

    def __init__(self, partitions: dict[str, list[tuple[str, int]]]) -> None:
        self._partitions = partitions  # source -> the (topic, partition) pairs read
        self._required: dict[str, dict[tuple[str, int], int]] = {s: {} for s in partitions}
        self._queue: dict[str, deque[tuple[int, dict[tuple[str, int], int]]]] = {
            s: deque() for s in partitions
        }
        self.applied: dict[str, int] = {}

    def note(self, position: SourcePosition) -> None:
        source = position.source
        if source not in self._partitions:
            return
        required = self._required[source]
        for topic, parts in position.offsets.items():
            for partition, offset in parts.items():
                tp = (topic, int(partition))
                if offset > required.get(tp, 0):
                    required[tp] = offset
        queue = self._queue[source]
        if queue and queue[-1][0] >= position.lsn:
            return
        if position.lsn <= self.applied.get(source, -1):
            return
        wanted = {tp: required[tp] for tp in self._partitions[source] if tp in required}
        queue.append((position.lsn, wanted))

    def advance(self, consumed: dict[tuple[str, int], int]) -> dict[str, int]:
        """Move past every position the ``consumed`` offsets satisfy; returns the applied LSNs."""
        for source, queue in self._queue.items():
            while queue and all(consumed.get(tp, 0) >= off for tp, off in queue[0][1].items()):
                lsn, _ = queue.popleft()
                self.applied[source] = lsn
        return dict(self.applied)

    def pending(self) -> bool:
        return any(self._queue.values())


STATUS_INTERVAL_S = 1.0
"""A running task's status is published at least this often."""
STATUS_MIN_INTERVAL_S = 0.2
"""...and news (applied positions moved, a state changed) at most this often: a status record
per applied advance (~20/s under load) made every follower of ``freshet.status`` list that
growing partition on each of its fetches (Tansu 0.6, see :mod:`freshet.common.kafka`)."""


class StatusPacer:
    """When a task publishes its status.

    News (``due(news=True)``) is published at once when the last status is older than
    :data:`STATUS_MIN_INTERVAL_S`, otherwise at the first call after that (tasks call
    :meth:`due` on every turn of their loop, a tenth of a second apart when idle); without news,
    every :data:`STATUS_INTERVAL_S`. So a lone change is reported at once, and a stream of them
    a few times a second.
    """

    def __init__(
        self,
        min_interval_s: float = STATUS_MIN_INTERVAL_S,
        interval_s: float = STATUS_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._min_interval = min_interval_s
        self._interval = interval_s
        self._clock = clock
        self._last = float("-inf")
        self._news = False

    def due(self, news: bool = False) -> bool:
        """Whether to publish now (then it counts as published)."""
        self._news = self._news or news
        now = self._clock()
        if now - self._last < (self._min_interval if self._news else self._interval):
            return False
        self._last = now
        self._news = False
        return True


def assign_inputs(
    consumer: Consumer, inputs: Mapping[str, str], committed: Mapping[tuple[str, int], int]
) -> Frontier:
    """Assign every partition of ``inputs`` (topic -> source) and of ``freshet.positions``.

    Input partitions start at their ``committed`` offset (the beginning without one), positions
    at the beginning. Returns the frontier of the sources read.
    """
    assignment: list[TP] = []
    by_source: dict[str, list[tuple[str, int]]] = {}
    for topic, source in inputs.items():
        for p in partitions_of(consumer, topic):
            by_source.setdefault(source, []).append((topic, p))
            assignment.append(TP(topic, p, committed.get((topic, p), OFFSET_BEGINNING)))
    for p in partitions_of(consumer, topics.POSITIONS):
        assignment.append(TP(topics.POSITIONS, p, OFFSET_BEGINNING))
    consumer.assign(assignment)
    return Frontier(by_source)


def poll_batch(consumer: Consumer, frontier: Frontier, limit: int) -> list[Message]:
    """Up to ``limit`` messages of the input topics (waiting at most 0.1 s for the first).

    Records of ``freshet.positions`` are noted in ``frontier`` and not returned.

    Raises:
        KafkaError: the consumer reported an error other than a partition's end.
    """
    first = consumer.poll(0.1)
    if first is None:
        return []
    messages = [first, *consumer.consume(limit - 1, timeout=0)]
    out: list[Message] = []
    for msg in messages:
        err = msg.error()
        if err is not None:
            if err.code() == CKafkaError._PARTITION_EOF:
                continue
            raise KafkaError(f"consuming {msg.topic()}: {err}")
        if msg.topic() == topics.POSITIONS:
            raw = msg.value()
            if raw is None:
                continue
            try:
                frontier.note(SourcePosition.model_validate_json(raw))
            except ValidationError:
                log.warning("skipping an unreadable record on %s", topics.POSITIONS)
            continue
        out.append(msg)
    return out


def consumer_lag(consumer: Consumer, consumed: Mapping[tuple[str, int], int]) -> int:
    """Messages between the ``consumed`` offsets and the high watermarks last fetched."""
    lag = 0
    for (topic, partition), offset in consumed.items():
        _low, high = consumer.get_watermark_offsets(TP(topic, partition), cached=True)
        if high > offset:
            lag += high - offset
    return lag


class Outbox:
    """Records produced by one batch, confirmed together.

    :meth:`send` queues a record (waiting for room in the producer's queue when it is full);
    :meth:`confirm` waits until the broker acknowledged every queued record. Only then may the
    offsets of the inputs that produced them be committed: a crash before the commit replays the
    batch and writes its records again (at-least-once; keyed records make that idempotent for
    a consumer that keeps the last value per key).
    """

    def __init__(self, producer: Producer, what: str) -> None:
        self._producer = producer
        self._what = what
        self._error: Any = None
        self.pending = 0
        self.next_offsets: dict[tuple[str, int], int] = {}
        """Per (topic, partition), the offset after the last record acknowledged there."""

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None = None
    ) -> None:
        while True:
            try:
                self._producer.produce(
                    topic, key=key, value=value, headers=headers, on_delivery=self._delivered
                )
                break
            except BufferError:
                self._producer.poll(0.05)
        self.pending += 1

    def confirm(self, timeout: float = 30.0) -> int:
        """Wait for every queued record; returns how many there were.

        Raises:
            KafkaError: a record was refused, or not acknowledged within ``timeout``.
        """
        if not self.pending:
            return 0
        remaining = self._producer.flush(timeout)
        count, self.pending = self.pending, 0
        if remaining:
            raise KafkaError(f"{remaining} records of {self._what} were not acknowledged")
        if self._error is not None:
            err, self._error = self._error, None
            raise KafkaError(f"writing {self._what} failed: {err}")
        return count

    def _delivered(self, err: Any, msg: Message) -> None:
        if err is not None:
            if self._error is None:
                self._error = err
            return
        tp = (msg.topic() or "", msg.partition() or 0)
        end = (msg.offset() or 0) + 1
        if end > self.next_offsets.get(tp, 0):
            self.next_offsets[tp] = end


def changed_offsets(
    consumed: Mapping[tuple[str, int], int], committed: Mapping[tuple[str, int], int]
) -> dict[tuple[str, int], int]:
    """The offsets of ``consumed`` that differ from ``committed`` (what a commit must write)."""
    return {tp: o for tp, o in consumed.items() if committed.get(tp) != o}


def headers_of(msg: Message) -> Headers:
    """A message's headers as a list (empty when it has none)."""
    found = msg.headers()
    if not found:
        return []
    if isinstance(found, dict):
        return list(found.items())
    return list(found)
