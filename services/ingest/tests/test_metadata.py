"""The rules of SchemaPublisher and PositionPublisher, without a broker (the sink records what
it would write)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from freshet.common import codec, topics
from freshet.common.schemas import ColumnSchema, TableSchema
from freshet.ingest.metadata import PositionPublisher, SchemaPublisher
from freshet.ingest.sink import KafkaSink


class RecordingSink(KafkaSink):
    def __init__(self) -> None:
        super().__init__("127.0.0.1:1", log_level=0)
        self.written: list[tuple[str, bytes, bytes | None]] = []

    def produce_control(self, topic: str, key: bytes, value: bytes | None) -> None:
        self.written.append((topic, key, value))


@pytest.fixture
def sink() -> Iterator[RecordingSink]:
    s = RecordingSink()
    yield s
    s._producer.purge()


def test_positions_only_move_forward_and_at_most_every_interval(sink):
    publisher = PositionPublisher("src", interval_s=3600)
    assert publisher.publish(sink, 100)
    assert not publisher.publish(sink, 200)  # within the interval
    assert not publisher.publish(sink, 50, force=True)  # never backwards
    assert not publisher.publish(sink, 100, force=True)  # nor the same again
    assert publisher.publish(sink, 200, force=True)
    assert publisher.lsn == 200
    assert [(t, k) for t, k, _ in sink.written] == [(topics.POSITIONS, b"src")] * 2
    assert [codec.loads(v)["lsn"] for _, _, v in sink.written] == [100, 200]


def test_a_position_carries_the_acknowledged_offsets(sink):
    publisher = PositionPublisher("src", interval_s=0)
    sink.acked("src.public.t", 2, 9)
    publisher.publish(sink, 100)
    value = codec.loads(sink.written[0][2])
    assert value["source"] == "src" and value["offsets"] == {"src.public.t": {"2": 10}}


def test_no_position_without_offsets(sink):
    publisher = PositionPublisher("src", interval_s=0)
    sink.acked("src.public.t", 0, -1001)
    assert not publisher.publish(sink, 100, force=True)
    assert sink.written == []


def _schema(*columns: str) -> TableSchema:
    return TableSchema(
        source="src",
        schema_name="public",
        table="t",
        topic="src.public.t",
        columns=tuple(ColumnSchema(name=c, type_oid=25, type="text") for c in columns),
        primary_key=(columns[0],),
    )


def test_schemas_are_written_again_only_when_they_change(sink):
    publisher = SchemaPublisher()
    assert publisher.publish(sink, _schema("a"))
    assert not publisher.publish(sink, _schema("a"))
    assert publisher.unchanged("src.public.t", [("a", 25, -1)], ("a",))
    assert not publisher.unchanged("src.public.t", [("a", 25, -1), ("b", 25, -1)], ("a",))
    assert not publisher.unchanged("src.public.t", [("a", 25, -1)], ())
    assert publisher.publish(sink, _schema("a", "b"))
    publisher.reset()
    assert publisher.publish(sink, _schema("a", "b"))  # a new run publishes every table again
    assert [codec.loads(v)["schema"] for _, _, v in sink.written] == ["public"] * 3
    assert [k for _, k, _ in sink.written] == [b"src.public.t"] * 3
