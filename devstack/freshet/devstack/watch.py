"""``python -m freshet.devstack watch TOPIC``: print a topic's records as JSON lines.

Each line is ``{"partition", "offset", "key", "value"}`` where key and value are the decoded
JSON (or the text when they are not JSON; ``null`` for a tombstone). The consumer is assigned
every partition, not subscribed in a group, so it commits nothing and disturbs no one.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from typing import IO, Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException
from confluent_kafka import TopicPartition as TP

from freshet.common.kafka import consumer_config


def decode(raw: bytes | None) -> Any:
    """JSON value of ``raw``; its text when it is not JSON; ``None`` for ``None``."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def _partitions(consumer: Consumer, topic: str) -> list[int] | None:
    try:
        meta = consumer.list_topics(topic, timeout=5).topics.get(topic)
    except KafkaException:
        return None
    if meta is None or meta.error is not None or not meta.partitions:
        return None
    return sorted(meta.partitions)


def watch(
    bootstrap: str,
    topic: str,
    from_end: bool = False,
    out: IO[str] = sys.stdout,
    err: IO[str] = sys.stderr,
    stop: threading.Event | None = None,
) -> int:
    """Print the records of ``topic`` until ``stop`` is set (or Ctrl-C); returns the exit code.

    Waits for the topic to exist. ``from_end`` prints only records written after the start. It
    does not trust the end that ListOffsets reports (on Tansu it can lie before the last batch):
    each partition prints from the high watermark of its first fetch response, which is right
    on every broker.
    """
    stop = stop or threading.Event()
    consumer = Consumer(consumer_config(bootstrap, f"freshet-watch-{uuid.uuid4().hex}"))
    try:
        parts = _partitions(consumer, topic)
        if parts is None:
            print(f"waiting for topic {topic} on {bootstrap} ...", file=err, flush=True)
        while parts is None:
            if stop.wait(1.0):
                return 0
            parts = _partitions(consumer, topic)
        start = OFFSET_END if from_end else OFFSET_BEGINNING
        consumer.assign([TP(topic, p, start) for p in parts])
        first: dict[int, int] = {}  # from_end: partition -> first offset to print
        while not stop.is_set():
            msg = consumer.poll(0.2)
            if from_end:
                for p in parts:
                    if p not in first:
                        high = consumer.get_watermark_offsets(TP(topic, p), cached=True)[1]
                        if high >= 0:
                            first[p] = high
            if msg is None:
                continue
            if msg.error():
                print(f"error: {msg.error()}", file=err, flush=True)
                time.sleep(0.5)
                continue
            partition, offset = int(msg.partition() or 0), int(msg.offset() or 0)
            if from_end and offset < first.get(partition, offset):
                continue
            line = {
                "partition": partition,
                "offset": offset,
                "key": decode(msg.key()),
                "value": decode(msg.value()),
            }
            out.write(json.dumps(line, default=str) + "\n")
            out.flush()
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        return 0
    finally:
        consumer.close()
    return 0
