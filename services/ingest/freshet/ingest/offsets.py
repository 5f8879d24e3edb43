"""Ingest's own progress per source, on the compacted ``freshet.ingest.offsets`` topic.

Like Kafka Connect's offsets topic, it records what the source database cannot: whether the
initial snapshot of the current capture (tables, slot) finished. The stream position itself
lives in the replication slot (its confirmed LSN), which only advances after Kafka acknowledged
the events. If the broker loses this topic (the embedded broker keeps it in memory), the source
snapshots again, which is right: the change topics were lost with it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from confluent_kafka import Consumer

from freshet.common import codec, topics
from freshet.common.kafka import consumer_config, read_to_end
from freshet.common.schemas import PostgresSourceSpec
from freshet.ingest.sink import KafkaSink


def capture_hash(spec: PostgresSourceSpec) -> str:
    """Identifies what a snapshot captured; a different value needs a new snapshot."""
    return hashlib.sha256(codec.dumps(spec.capture_fields())).hexdigest()[:16]


class OffsetStore:
    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap

    def load(self, source: str) -> dict[str, Any] | None:
        consumer = Consumer(consumer_config(self._bootstrap, f"freshet-ingest-offsets-{source}"))
        value: dict[str, Any] | None = None
        try:
            for msg in read_to_end(consumer, topics.INGEST_OFFSETS):
                if msg.key() == source.encode():
                    raw = msg.value()
                    value = None if raw is None else codec.loads(raw)
        finally:
            consumer.close()
        return value

    def save(self, sink: KafkaSink, source: str, value: dict[str, Any] | None) -> None:
        sink.produce_raw(
            topics.INGEST_OFFSETS, source.encode(), None if value is None else codec.dumps(value)
        )
