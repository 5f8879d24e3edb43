"""KafkaSink's position tracking, without a broker.

The producer points at a port where nothing listens, so no delivery report ever arrives by
itself (librdkafka would only time the messages out after ``message.timeout.ms``, minutes
away); the tests play the broker by calling the ``_delivered`` callback themselves.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaError

from freshet.ingest.exceptions import DeliveryFailed
from freshet.ingest.sink import KafkaSink, _Batch


@pytest.fixture
def sink() -> Iterator[KafkaSink]:
    s = KafkaSink("127.0.0.1:1", log_level=0)
    yield s
    s._producer.purge()  # drop the queued messages; never wait for the unreachable broker


def batch(sink: KafkaSink, position: int | None, events: int) -> _Batch:
    sink.begin()
    for i in range(events):
        sink.send("topic", f"k{i}".encode(), b"value", [("h", b"v")])
    current = sink._current
    assert current is not None
    sink.end(position)
    return current


class _Acked:
    """What the producer hands a delivery callback: the event's topic, partition and offset."""

    def __init__(self, topic: str, partition: int, offset: int | None) -> None:
        self._where = (topic, partition, offset)

    def topic(self) -> str:
        return self._where[0]

    def partition(self) -> int:
        return self._where[1]

    def offset(self) -> int | None:
        return self._where[2]


def ack(
    sink: KafkaSink,
    b: _Batch,
    n: int = 1,
    err: KafkaError | None = None,
    where: tuple[str, int, int] = ("topic", 0, 0),
) -> None:
    topic, partition, offset = where
    for i in range(n):
        b.delivered(err, _Acked(topic, partition, offset + i))  # type: ignore[arg-type]


def test_nothing_is_confirmed_before_acknowledgement(sink):
    b = batch(sink, 100, 2)
    assert sink.poll(0) is None
    assert not sink.idle
    ack(sink, b, 1)
    assert sink.poll(0) is None  # one of two events still unacknowledged
    ack(sink, b, 1)
    assert sink.poll(0) == 100
    assert sink.confirmed == 100
    assert sink.idle


def test_positions_are_confirmed_strictly_in_order(sink):
    b1 = batch(sink, 100, 1)
    b2 = batch(sink, 200, 1)
    b3 = batch(sink, 300, 2)
    ack(sink, b3, 2)
    ack(sink, b2, 1)
    assert sink.poll(0) is None  # 200 and 300 wait for 100
    assert sink.confirmed is None
    ack(sink, b1, 1)
    assert sink.poll(0) == 300
    assert sink.idle


def test_never_past_an_unacknowledged_batch(sink):
    b1 = batch(sink, 100, 1)
    b2 = batch(sink, 200, 3)
    b3 = batch(sink, 300, 1)
    ack(sink, b1)
    ack(sink, b3)
    assert sink.poll(0) == 100
    ack(sink, b2, 2)
    assert sink.poll(0) == 100
    ack(sink, b2, 1)
    assert sink.poll(0) == 300


def test_open_batch_blocks_confirmation_even_when_acknowledged(sink):
    b1 = batch(sink, 100, 1)
    sink.begin()
    sink.send("topic", b"k", b"v")
    open_batch = sink._current
    ack(sink, b1)
    ack(sink, open_batch)
    assert sink.poll(0) == 100  # the open batch has no position yet and is not closed
    assert not sink.idle
    sink.end(200)
    assert sink.poll(0) == 200
    assert sink.idle


def test_empty_batch_confirms_once_earlier_ones_do(sink):
    b1 = batch(sink, 100, 1)
    batch(sink, 150, 0)  # a transaction with no events for the published tables
    assert sink.poll(0) is None
    ack(sink, b1)
    assert sink.poll(0) == 150


def test_batch_without_position_confirms_nothing_new(sink):
    b1 = batch(sink, 100, 1)
    b2 = batch(sink, None, 1)  # e.g. a snapshot chunk
    ack(sink, b1)
    ack(sink, b2)
    assert sink.poll(0) == 100
    assert sink.idle
    b3 = batch(sink, 400, 1)
    ack(sink, b3)
    assert sink.poll(0) == 400


def test_confirmed_is_kept_between_polls(sink):
    b1 = batch(sink, 100, 1)
    ack(sink, b1)
    assert sink.poll(0) == 100
    batch(sink, 200, 1)
    assert sink.poll(0) == 100


def test_delivery_error_makes_poll_raise(sink):
    b1 = batch(sink, 100, 1)
    b2 = batch(sink, 200, 1)
    sink.check()
    ack(sink, b1, err=KafkaError(KafkaError._MSG_TIMED_OUT))
    ack(sink, b2)
    with pytest.raises(DeliveryFailed, match="Message timed out"):
        sink.poll(0)
    assert sink.confirmed is None  # the failed batch's position is never confirmed
    with pytest.raises(DeliveryFailed):
        sink.check()
    with pytest.raises(DeliveryFailed):
        sink.poll(0)  # it stays failed


def test_first_error_is_the_one_reported(sink):
    b = batch(sink, 100, 2)
    ack(sink, b, err=KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    ack(sink, b, err=KafkaError(KafkaError._MSG_TIMED_OUT))
    with pytest.raises(DeliveryFailed, match=r"(?i)authori"):
        sink.poll(0)


def test_send_outside_a_batch_is_an_error(sink):
    with pytest.raises(RuntimeError):
        sink.send("topic", b"k", b"v")
    batch(sink, 1, 0)
    with pytest.raises(RuntimeError):
        sink.send("topic", b"k", b"v")


def test_end_without_begin_is_harmless(sink):
    sink.end(100)
    assert sink.idle
    assert sink.poll(0) is None


def test_counts_events_and_bytes(sink):
    sink.begin()
    sink.send("topic", b"key", b"value")
    sink.send("topic", b"key", None)  # a tombstone
    sink.send("topic", None, b"v")
    sink.end(1)
    assert sink.events == 3
    assert sink.bytes == len(b"keyvalue") + len(b"key") + len(b"v")


def test_acked_offsets_are_the_next_offset_after_the_highest_acknowledged(sink):
    b1 = batch(sink, 100, 4)
    assert sink.acked_offsets() == {}
    ack(sink, b1, 2, where=("a", 0, 10))  # offsets 10, 11
    ack(sink, b1, 1, where=("a", 2, 5))
    ack(sink, b1, 1, where=("b", 0, 0))
    assert sink.poll(0) == 100
    assert sink.acked_offsets() == {"a": {0: 12, 2: 6}, "b": {0: 1}}
    b2 = batch(sink, 200, 1)
    ack(sink, b2, 1, where=("a", 0, 3))  # a lower offset never lowers the watermark
    assert sink.acked_offsets()["a"][0] == 12


def test_failed_events_do_not_count_as_acknowledged(sink):
    b = batch(sink, 100, 1)
    ack(sink, b, err=KafkaError(KafkaError._MSG_TIMED_OUT), where=("a", 0, 7))
    assert sink.acked_offsets() == {}


def test_acked_offsets_carry_over_to_the_next_sink_of_a_source():
    acked: dict[tuple[str, int], int] = {}
    first = KafkaSink("127.0.0.1:1", acked=acked, log_level=0)
    following = KafkaSink("127.0.0.1:1", acked=acked, log_level=0)
    try:
        ack(first, batch(first, 100, 1), where=("a", 1, 41))
        assert following.acked_offsets() == {"a": {1: 42}}
        assert following.confirmed is None and following.idle
        ack(following, batch(following, 200, 1), where=("a", 1, 50))
        assert first.acked_offsets() == following.acked_offsets() == {"a": {1: 51}}
    finally:
        first._producer.purge()
        following._producer.purge()


def test_an_acknowledgement_without_offset_makes_offsets_unknown(sink):
    b = batch(sink, 100, 1)
    assert not sink.offsets_unknown
    b.delivered(None, _Acked("a", 0, -1001))  # type: ignore[arg-type]
    assert sink.offsets_unknown
    assert sink.acked_offsets() == {}
