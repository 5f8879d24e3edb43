"""Delivery of change events to Kafka, and which source positions are safe to confirm.

Contract: a source position (e.g. a transaction's end LSN) becomes *confirmed* only once the
broker acknowledged every event produced before it, in order. Only a confirmed position may be
reported to the source (``send_feedback``), so a crash at any moment loses nothing: the source
replays everything after the last confirmed position (at-least-once; consumers see the
replayed events again, in the same order per key). A failed delivery is fatal for the stream:
:meth:`KafkaSink.check` raises and the connector restarts from the confirmed position.
"""

from __future__ import annotations

import functools
from collections import deque
from typing import Any

from confluent_kafka import KafkaError as ConfluentKafkaError
from confluent_kafka import Message, Producer

from freshet.common.kafka import produce_sync, producer_config
from freshet.common.telemetry import Headers
from freshet.ingest.exceptions import DeliveryFailed


class _Batch:
    """Events produced for one source position (a transaction, or a snapshot)."""

    __slots__ = ("closed", "position", "remaining")

    def __init__(self) -> None:
        self.remaining = 0
        self.closed = False
        self.position: int | None = None


class KafkaSink:
    """An idempotent producer that tracks acknowledgements per source position."""

    def __init__(self, bootstrap: str, **overrides: Any) -> None:
        self._producer = Producer(producer_config(bootstrap, **overrides))
        self._batches: deque[_Batch] = deque()
        self._current: _Batch | None = None
        self._error: ConfluentKafkaError | None = None
        self.confirmed: int | None = None
        self.events = 0
        self.bytes = 0

    def begin(self) -> None:
        """Start the events of a new position; :meth:`end` closes it."""
        self._current = _Batch()
        self._batches.append(self._current)

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None = None
    ) -> None:
        batch = self._current
        if batch is None:
            raise RuntimeError("send() outside begin()/end()")
        batch.remaining += 1
        callback = functools.partial(self._delivered, batch)
        while True:
            try:
                self._producer.produce(topic, value, key, headers=headers, on_delivery=callback)
                break
            except BufferError:
                self._producer.poll(0.05)
        self.events += 1
        self.bytes += len(value or b"") + len(key or b"")

    def end(self, position: int | None) -> None:
        """Close the current batch; ``position`` is confirmed once all of it is acknowledged."""
        if self._current is None:
            return
        self._current.position = position
        self._current.closed = True
        self._current = None

    def _delivered(self, batch: _Batch, err: ConfluentKafkaError | None, _msg: Message) -> None:
        if err is not None and self._error is None:
            self._error = err
        batch.remaining -= 1

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

    def produce_raw(self, topic: str, key: bytes, value: bytes | None) -> None:
        """Produce a record outside position tracking (status, offsets) and wait for it."""
        produce_sync(self._producer, topic, key, value)

    def close(self) -> None:
        self._producer.flush(10)
