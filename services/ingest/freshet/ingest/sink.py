"""Delivery of change events to Kafka, and which source positions are safe to confirm.

Contract: a source position (e.g. a transaction's end LSN) becomes *confirmed* only once the
broker acknowledged every event produced before it, in order. Only a confirmed position may be
reported to the source (``send_feedback``), so a crash at any moment loses nothing: the source
replays everything after the last confirmed position (at-least-once; consumers see the
replayed events again, in the same order per key). A failed delivery is fatal for the stream:
:meth:`KafkaSink.check` raises and the connector restarts from the confirmed position.

The sink also keeps, per topic-partition, the highest offset the broker acknowledged (see
:meth:`KafkaSink.acked_offsets`). When :meth:`KafkaSink.poll` returns a confirmed position,
every event before it was acknowledged at or below those offsets: that is the watermark a
:class:`~freshet.common.schemas.SourcePosition` publishes.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError as ConfluentKafkaError
from confluent_kafka import Message, Producer

from freshet.common.kafka import produce_sync, producer_config
from freshet.common.telemetry import Headers
from freshet.ingest.exceptions import DeliveryFailed

log = logging.getLogger(__name__)

DeliveryCallback = Callable[[ConfluentKafkaError | None, Message], None]


class _Batch:
    """Events produced for one source position (a transaction, or a snapshot).

    Its bound :meth:`delivered` is the delivery callback of every event of the batch: one
    callable per batch rather than one per event.
    """

    __slots__ = ("acked", "closed", "position", "remaining", "sink")

    def __init__(self, sink: KafkaSink) -> None:
        self.sink = sink
        self.acked = sink._acked
        self.remaining = 0
        self.closed = False
        self.position: int | None = None

    def delivered(self, err: ConfluentKafkaError | None, msg: Message) -> None:
        # Called once per event: KafkaSink.acked, inlined.
        self.remaining -= 1
        if err is None:
            offset = msg.offset()
            key = (msg.topic() or "", msg.partition() or 0)
            if offset is not None and offset > self.acked.get(key, -1):
                self.acked[key] = offset
            elif offset is None or offset < 0:
                self.sink.acked(key[0], key[1], offset)
        else:
            self.sink.failed(err)


class ProducerSupply:
    """Hands out idempotent producers that are past their start-up.

    A new idempotent producer delivers nothing for about 0.5 s: librdkafka acquires its
    producer id on a 500 ms timer once it knows the broker. The supply keeps one spare producer,
    made ahead of need (at service start, and again whenever one is taken), so a source that
    starts streaming does not wait for it. Thread-safe.
    """

    def __init__(self, bootstrap: str, **overrides: Any) -> None:
        self._config = producer_config(bootstrap, **overrides)
        self._lock = threading.Lock()
        self._spare: Producer | None = Producer(self._config)

    def take(self) -> Producer:
        with self._lock:
            producer = self._spare if self._spare is not None else Producer(self._config)
            self._spare = Producer(self._config)
        return producer


class KafkaSink:
    """An idempotent producer that tracks acknowledgements per source position.

    ``producer`` is one from a :class:`ProducerSupply` (else the sink makes its own).
    ``acked`` is where the highest acknowledged offset per (topic, partition) is kept; a source
    passes the same dict to each sink it makes, so the offsets it reports stay cumulative
    across restarts of its stream.
    """

    def __init__(
        self,
        bootstrap: str,
        producer: Producer | None = None,
        acked: dict[tuple[str, int], int] | None = None,
        **overrides: Any,
    ) -> None:
        self._producer = (
            producer if producer is not None else Producer(producer_config(bootstrap, **overrides))
        )
        self._produce = self._producer.produce
        self._batches: deque[_Batch] = deque()
        self._current: _Batch | None = None
        self._callback: DeliveryCallback | None = None
        self._error: ConfluentKafkaError | None = None
        self._acked: dict[tuple[str, int], int] = acked if acked is not None else {}
        self.offsets_unknown = False
        self.confirmed: int | None = None
        self.events = 0
        self.bytes = 0

    def begin(self) -> None:
        """Start the events of a new position; :meth:`end` closes it."""
        self._current = _Batch(self)
        self._callback = self._current.delivered
        self._batches.append(self._current)

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None = None
    ) -> None:
        batch = self._current
        if batch is None:
            raise RuntimeError("send() outside begin()/end()")
        batch.remaining += 1
        try:
            self._produce(topic, value, key, headers=headers, on_delivery=self._callback)
        except BufferError:
            while True:
                self._producer.poll(0.05)
                try:
                    self._produce(topic, value, key, headers=headers, on_delivery=self._callback)
                    break
                except BufferError:
                    continue
        self.events += 1
        self.bytes += len(value or b"") + len(key or b"")

    def end(self, position: int | None) -> None:
        """Close the current batch; ``position`` is confirmed once all of it is acknowledged."""
        if self._current is None:
            return
        self._current.position = position
        self._current.closed = True
        self._current = None
        self._callback = None

    def acked(self, topic: str | None, partition: int | None, offset: int | None) -> None:
        """Record the broker's acknowledgement of an event at ``offset``."""
        key = (topic or "", partition or 0)
        if offset is not None and offset > self._acked.get(key, -1):
            self._acked[key] = offset
        elif (offset is None or offset < 0) and not self.offsets_unknown:
            # No broker Freshet supports does this; without offsets no watermark can be given.
            log.error("the broker acknowledged an event on %s without an offset", key)
            self.offsets_unknown = True

    def failed(self, err: ConfluentKafkaError) -> None:
        """Record a failed delivery; the next :meth:`poll` or :meth:`check` raises."""
        if self._error is None:
            self._error = err

    def acked_offsets(self) -> dict[str, dict[int, int]]:
        """Per topic and partition, the offset after the last one the broker acknowledged."""
        out: dict[str, dict[int, int]] = {}
        for (topic, partition), offset in self._acked.items():
            out.setdefault(topic, {})[partition] = offset + 1
        return out

    def poll(self, timeout: float = 0.0) -> int | None:
        """Serve delivery reports; return the newest confirmed position (or ``None``)."""
        self._producer.poll(timeout)
        self.check()
        batches = self._batches
        while batches and batches[0].closed and batches[0].remaining == 0:
            position = batches.popleft().position
            if position is not None:
                self.confirmed = position
        return self.confirmed

    def check(self) -> None:
        """Raise :class:`DeliveryFailed` if any event could not be delivered."""
        if self._error is not None:
            raise DeliveryFailed(f"Kafka did not accept a change event: {self._error.str()}")

    @property
    def idle(self) -> bool:
        """No batch is open or waiting for acknowledgements."""
        return not self._batches

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until every produced event is acknowledged; raise if one was not."""
        left = self._producer.flush(timeout)
        self.poll(0)
        if left:
            raise DeliveryFailed(
                f"Kafka did not acknowledge {left} change events within {timeout:.0f}s"
            )

    def produce_control(self, topic: str, key: bytes, value: bytes | None) -> None:
        """Produce a record outside position tracking without waiting (schemas, positions).

        A failed delivery makes the sink fail like a failed change event does.
        """
        self._producer.produce(topic, value, key, on_delivery=self._control_delivered)

    def _control_delivered(self, err: ConfluentKafkaError | None, _msg: Message) -> None:
        if err is not None:
            self.failed(err)

    def produce_raw(self, topic: str, key: bytes, value: bytes | None) -> None:
        """Produce a record outside position tracking (status, offsets) and wait for it."""
        produce_sync(self._producer, topic, key, value)

    def close(self) -> None:
        self._producer.flush(10)
