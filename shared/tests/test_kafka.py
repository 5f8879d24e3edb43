"""The Kafka helpers against the real embedded broker."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, Producer

from freshet.common import codec
from freshet.common.kafka import (
    CompactedTopicView,
    consumer_config,
    ensure_topics,
    produce_sync,
    producer_config,
    read_to_end,
)
from freshet.common.topics import COMPACTED, TopicSpec


def test_ensure_topics_is_idempotent(kafka, unique):
    specs = [TopicSpec(f"{unique}.a", 3, COMPACTED), TopicSpec(f"{unique}.b", 1)]
    ensure_topics(kafka.bootstrap, specs)
    ensure_topics(kafka.bootstrap, specs)
    consumer = Consumer(consumer_config(kafka.bootstrap, unique))
    try:
        topics = consumer.list_topics(timeout=5).topics
        assert len(topics[f"{unique}.a"].partitions) == 3
        assert len(topics[f"{unique}.b"].partitions) == 1
    finally:
        consumer.close()


def test_read_to_end_returns_every_record_including_the_last_batch(kafka, unique):
    topic = f"{unique}.log"
    ensure_topics(kafka.bootstrap, [TopicSpec(topic, 3)])
    producer = Producer(producer_config(kafka.bootstrap))
    for i in range(5000):
        producer.produce(topic, key=str(i % 50).encode(), value=str(i).encode())
    assert producer.flush(30) == 0
    consumer = Consumer(consumer_config(kafka.bootstrap, unique))
    try:
        values = sorted(int(m.value()) for m in read_to_end(consumer, topic))
    finally:
        consumer.close()
    assert values == list(range(5000))


def test_read_to_end_from_given_offsets(kafka, unique):
    topic = f"{unique}.from"
    ensure_topics(kafka.bootstrap, [TopicSpec(topic, 2)])
    producer = Producer(producer_config(kafka.bootstrap))
    for i in range(40):
        producer.produce(topic, value=str(i).encode(), partition=i % 2)
    assert producer.flush(30) == 0
    consumer = Consumer(consumer_config(kafka.bootstrap, unique))
    try:
        got = [
            (m.partition(), m.offset())
            for m in read_to_end(consumer, topic, timeout=20, start={0: 15, 1: 20})
        ]
    finally:
        consumer.close()
    assert sorted(got) == [(0, o) for o in range(15, 20)]  # partition 1 is read to its end


def test_read_to_end_of_an_empty_topic_ends(kafka, unique):
    topic = f"{unique}.empty"
    ensure_topics(kafka.bootstrap, [TopicSpec(topic, 2)])
    consumer = Consumer(consumer_config(kafka.bootstrap, unique))
    try:
        assert list(read_to_end(consumer, topic, timeout=20)) == []
    finally:
        consumer.close()


def test_compacted_view_folds_and_follows(kafka, unique):
    topic = f"{unique}.state"
    ensure_topics(kafka.bootstrap, [TopicSpec(topic, 2, COMPACTED)])
    producer = Producer(producer_config(kafka.bootstrap))
    produce_sync(producer, topic, b"a", codec.dumps({"v": 1}))
    produce_sync(producer, topic, b"b", codec.dumps({"v": 2}))
    produce_sync(producer, topic, b"a", codec.dumps({"v": 3}))
    produce_sync(producer, topic, b"b", None)
    seen: list[tuple[str, object]] = []
    view = CompactedTopicView(kafka.bootstrap, topic, codec.loads, lambda k, v: seen.append((k, v)))
    view.start()
    try:
        assert view.items() == [("a", {"v": 3})]
        produce_sync(producer, topic, b"c", codec.dumps({"v": 4}))
        deadline = time.monotonic() + 20
        while view.get("c") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert view.get("c") == {"v": 4}
        assert ("b", None) in seen
    finally:
        view.close()
