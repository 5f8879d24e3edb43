"""Kafka clients configured for both Apache Kafka and the embedded Tansu broker.

Freshet stays on the subset of Kafka that both brokers implement correctly (see DESIGN.md):

* group sessions of at most 6 s with 1 s heartbeats (Tansu answers JoinGroup after half the
  session timeout);
* "read to the end" uses the high watermark carried by fetch responses
  (``get_watermark_offsets(cached=True)``), never ListOffsets;
* no broker transactions; correctness comes from idempotent writes and positions;
* an idle consumer costs the broker CPU per fetch it answers (Tansu 0.6, 3 partitions,
  measured: 8% of a core at ``fetch.wait.max.ms`` 10, 2% at 100, 1% at 250, 0.4% at 500), so only
  consumers on the path of a change (``CHANGE_FETCH_WAIT_MS``) wait briefly; followers of the
  control plane wait ``CONTROL_FETCH_WAIT_MS``;
* a fetch that finds data costs Tansu 0.6 a listing of every batch the partition holds, so a
  consumer that tails a busy topic costs the broker in proportion to its fetches times the
  partition's batches.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, Producer
from confluent_kafka import TopicPartition as TP
from confluent_kafka.admin import AdminClient, NewTopic

from freshet.common.exceptions import KafkaError
from freshet.common.topics import TopicSpec

log = logging.getLogger(__name__)

SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 1000
FETCH_WAIT_MS = 100
"""``fetch.wait.max.ms`` by default: Tansu answers a fetch when data arrives only after part of
the wait (measured at 20 records/s: produce->consume p50 5 ms at 10, 28 ms at 100, 136 ms at
500)."""
CHANGE_FETCH_WAIT_MS = 20
"""``fetch.wait.max.ms`` of the consumers a change passes through (transform's tasks, serve's
Redis materializer). Measured on Tansu 0.6, one partition, 50 single-record batches/s, three
tailing consumers: with 300-1,000 batches stored, produce->consume p50 / p99 4.5 / 22.4 ms at 10,
4.8 / 10.1 ms at 20, 13.3 / 26.5 ms at 40; with 4,000-5,000 stored, 17-28 / 95-117 ms at 10 (the
broker at 118-145% of a core), 16.1 / 40.9 ms at 20 (105%), 32.8 / 195.9 ms at 5 (145%)."""
CONTROL_FETCH_WAIT_MS = 250
"""``fetch.wait.max.ms`` of consumers that follow desired state (specs, keys, schemas): a change
there may take a little longer to be seen, and a dozen idle followers cost the broker ~12% of a
core instead of ~25%."""


def producer_config(bootstrap: str, **overrides: Any) -> dict[str, Any]:
    """Config of an idempotent, ordered producer (acks=all) partitioning keys like Java clients."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "none",
        "partitioner": "murmur2_random",
        "queue.buffering.max.messages": 500_000,
        "queue.buffering.max.kbytes": 512 * 1024,
        "batch.num.messages": 10_000,
    }
    config.update(overrides)
    return config


def consumer_config(bootstrap: str, group_id: str, **overrides: Any) -> dict[str, Any]:
    """Config of a manually committing consumer with Tansu-safe group timings."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
        "fetch.wait.max.ms": FETCH_WAIT_MS,
        "enable.partition.eof": False,
    }
    config.update(overrides)
    return config


def ensure_topics(bootstrap: str, specs: Iterable[TopicSpec], timeout: float = 30.0) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    wanted = {s.name: s for s in specs}
    deadline = time.monotonic() + timeout
    while True:
        try:
            existing = set(admin.list_topics(timeout=5).topics)
            break
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise KafkaError(f"cannot list topics at {bootstrap}: {exc}") from exc
            time.sleep(0.5)
    missing = [
        NewTopic(s.name, num_partitions=s.partitions, replication_factor=-1, config=s.config)
        for name, s in wanted.items()
        if name not in existing
    ]
    if not missing:
        return
    for name, future in admin.create_topics(missing, operation_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc):
                raise KafkaError(f"cannot create topic {name}: {exc}") from exc
    _wait_for_metadata(admin, [t.topic for t in missing], deadline)


def _wait_for_metadata(admin: AdminClient, names: list[str], deadline: float) -> None:
    while time.monotonic() < deadline:
        topics = admin.list_topics(timeout=5).topics
        if all(n in topics and topics[n].partitions for n in names):
            return
        time.sleep(0.1)
    raise KafkaError(f"topics {names} were created but never appeared in the metadata")


def partitions_of(consumer: Consumer, topic: str, timeout: float = 10.0) -> list[int]:
    """Partition ids of an existing topic."""
    meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise KafkaError(f"topic {topic} does not exist")
    return sorted(meta.partitions)


def read_to_end(
    consumer: Consumer,
    topic: str,
    timeout: float = 30.0,
    partitions: list[int] | None = None,
    start: Mapping[int, int] | None = None,
) -> Iterator[Message]:
    """Yield the messages of ``topic`` up to its current end.

    Reading starts at the beginning, or at ``start`` (an offset per partition). The end is the
    high watermark of the first fetch response of each partition, which is right on every
    broker (ListOffsets is not, on Tansu). Raises :class:`KafkaError` if the end is not reached
    within ``timeout`` seconds.
    """
    parts = partitions if partitions is not None else partitions_of(consumer, topic)
    begin = {p: (start or {}).get(p, OFFSET_BEGINNING) for p in parts}
    consumer.assign([TP(topic, p, offset) for p, offset in begin.items()])
    next_offset = {p: max(0, offset) for p, offset in begin.items()}
    pending = set(parts)
    deadline = time.monotonic() + timeout
    while pending:
        if time.monotonic() > deadline:
            raise KafkaError(f"could not read {topic} to its end within {timeout:.0f}s")
        msg = consumer.poll(0.1)
        if msg is not None:
            if msg.error():
                raise KafkaError(f"reading {topic}: {msg.error()}")
            next_offset[msg.partition() or 0] = (msg.offset() or 0) + 1
            yield msg
        for p in list(pending):
            _low, high = consumer.get_watermark_offsets(TP(topic, p), cached=True)
            if high < 0:
                continue
            position = consumer.position([TP(topic, p)])[0].offset
            if max(next_offset[p], position) >= high:
                pending.discard(p)


def end_offsets(consumer: Consumer, topic: str, timeout: float = 30.0) -> dict[int, int]:
    """The current end (high watermark) of each partition of ``topic``.

    Taken from the first fetch response of each partition, as :func:`read_to_end` does
    (ListOffsets is not reliable on Tansu): the consumer is assigned from the beginning and
    polled until every partition has answered once; what it fetched is dropped. Give it a
    consumer of its own with a small ``max.partition.fetch.bytes``.

    Raises:
        KafkaError: a partition did not answer within ``timeout`` seconds.
    """
    parts = partitions_of(consumer, topic)
    consumer.assign([TP(topic, p, OFFSET_BEGINNING) for p in parts])
    ends: dict[int, int] = {}
    deadline = time.monotonic() + timeout
    while len(ends) < len(parts):
        if time.monotonic() > deadline:
            raise KafkaError(f"could not learn the end of {topic} within {timeout:.0f}s")
        msg = consumer.poll(0.1)
        if msg is not None and msg.error():
            raise KafkaError(f"reading {topic}: {msg.error()}")
        for p in parts:
            _low, high = consumer.get_watermark_offsets(TP(topic, p), cached=True)
            if high >= 0:
                ends[p] = high
    return ends


class CompactedTopicView:
    """Folds a compacted topic into ``{key: value}`` and keeps following it in a thread.

    Values are decoded with ``decode``; a tombstone removes the key. ``on_change(key, value)`` is
    called from the follower thread for every applied record (``value`` is ``None`` when deleted).
    Every replica builds the whole view: the consumer is assigned, not in a group. It waits
    ``fetch_wait_ms`` per fetch (see the module docstring): a follower on the path of a change,
    such as the status board, passes a shorter wait.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        decode: Callable[[bytes], Any],
        on_change: Callable[[str, Any], None] | None = None,
        fetch_wait_ms: int = CONTROL_FETCH_WAIT_MS,
    ) -> None:
        self._topic = topic
        self._decode = decode
        self._on_change = on_change
        # Assigned, never subscribed: the group id is only a label and commits nothing.
        self._consumer = Consumer(
            consumer_config(
                bootstrap,
                f"freshet-follow-{uuid.uuid4().hex}",
                **{"fetch.wait.max.ms": fetch_wait_ms},
            )
        )
        self._lock = threading.Lock()
        self._data: dict[str, Any] = {}
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"follow-{topic}", daemon=True)
        self.error: Exception | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Read the topic to its end, then follow it in the background."""
        for msg in read_to_end(self._consumer, self._topic, timeout=timeout):
            self._apply(msg)
        self._caught_up.set()
        self._thread.start()

    def _apply(self, msg: Message) -> None:
        raw_key = msg.key()
        if raw_key is None:
            return
        key = raw_key.decode()
        raw = msg.value()
        try:
            value = None if raw is None else self._decode(raw)
        except Exception:
            log.exception(
                "skipping undecodable record %s at %s/%s", key, msg.partition(), msg.offset()
            )
            return
        with self._lock:
            if value is None:
                self._data.pop(key, None)
            else:
                self._data[key] = value
        if self._on_change is not None:
            self._on_change(key, value)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self._consumer.poll(0.2)
            except Exception as exc:  # keep following; report through .error
                self.error = exc
                time.sleep(1)
                continue
            if msg is None:
                continue
            if msg.error():
                self.error = KafkaError(str(msg.error()))
                continue
            self._apply(msg)

    def get(self, key: str) -> Any:
        with self._lock:
            return self._data.get(key)

    def items(self) -> list[tuple[str, Any]]:
        with self._lock:
            return sorted(self._data.items())

    def put_local(self, key: str, value: Any) -> None:
        """Apply a record this process has just written, before it comes back from the broker."""
        with self._lock:
            if value is None:
                self._data.pop(key, None)
            else:
                self._data[key] = value

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._consumer.close()


def produce_sync(
    producer: Producer, topic: str, key: bytes, value: bytes | None, timeout: float = 15.0
) -> None:
    """Produce one record and wait until the broker acknowledged it."""
    result: list[Any] = []

    def done(err: Any, msg: Message) -> None:
        result.append(err)

    producer.produce(topic, key=key, value=value, on_delivery=done)
    deadline = time.monotonic() + timeout
    while not result:
        if time.monotonic() > deadline:
            raise KafkaError(f"no acknowledgement for a record on {topic} within {timeout:.0f}s")
        producer.poll(0.05)
    if result[0] is not None:
        raise KafkaError(f"writing to {topic} failed: {result[0]}")
