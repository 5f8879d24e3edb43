"""``python -m freshet.devstack watch`` against the real broker."""

from __future__ import annotations

import io
import json
import threading
import time

from confluent_kafka import Producer

from freshet.common.kafka import ensure_topics, producer_config
from freshet.common.topics import TopicSpec
from freshet.devstack.watch import watch


def _start(bootstrap: str, topic: str, from_end: bool):
    out, err = io.StringIO(), io.StringIO()
    stop = threading.Event()
    thread = threading.Thread(target=watch, args=(bootstrap, topic, from_end, out, err, stop))
    thread.start()
    return out, err, stop, thread


def _lines(out: io.StringIO, count: int, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        if len(lines) >= count:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"only {out.getvalue().count(chr(10))} of {count} lines")


def _produce(bootstrap: str, topic: str, start: int, count: int) -> None:
    producer = Producer(producer_config(bootstrap))
    for i in range(start, start + count):
        value = None if i % 10 == 9 else json.dumps({"id": i, "note": "x"}).encode()
        producer.produce(topic, key=json.dumps({"id": i}).encode(), value=value)
    assert producer.flush(30) == 0


def test_watch_prints_a_topic_from_the_beginning_with_tombstones(kafka, unique):
    topic = f"{unique}.public.orders"
    ensure_topics(kafka.bootstrap, [TopicSpec(topic, 2)])
    _produce(kafka.bootstrap, topic, 0, 30)
    out, _err, stop, thread = _start(kafka.bootstrap, topic, from_end=False)
    try:
        lines = _lines(out, 30)
    finally:
        stop.set()
        thread.join(10)
    assert sorted(line["key"]["id"] for line in lines) == list(range(30))
    by_id = {line["key"]["id"]: line["value"] for line in lines}
    assert by_id[9] is None
    assert by_id[3] == {"id": 3, "note": "x"}


def test_watch_from_end_skips_what_was_there_even_on_tansu(kafka, unique):
    topic = f"{unique}.public.items"
    ensure_topics(kafka.bootstrap, [TopicSpec(topic, 2)])
    _produce(kafka.bootstrap, topic, 0, 500)  # ListOffsets on Tansu ends before the last batch
    out, _err, stop, thread = _start(kafka.bootstrap, topic, from_end=True)
    try:
        time.sleep(2)  # let the first fetch responses fix where "now" is
        _produce(kafka.bootstrap, topic, 1000, 5)
        lines = _lines(out, 5)
        time.sleep(0.5)
        lines = _lines(out, 5)
    finally:
        stop.set()
        thread.join(10)
    assert sorted(line["key"]["id"] for line in lines) == list(range(1000, 1005))


def test_watch_waits_for_a_missing_topic(kafka, unique):
    topic = f"{unique}.not.yet"
    out, err, stop, thread = _start(kafka.bootstrap, topic, from_end=False)
    try:
        deadline = time.monotonic() + 15
        while "waiting for topic" not in err.getvalue():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        ensure_topics(kafka.bootstrap, [TopicSpec(topic, 1)])
        _produce(kafka.bootstrap, topic, 0, 3)
        assert len(_lines(out, 3)) == 3
    finally:
        stop.set()
        thread.join(10)
