"""Products published as Kafka topics (``publish_topic``): the Kafka side of delivery.

What a product topic holds (see :func:`freshet.common.topics.product_topic`): a topic reader
presents no API key, so the rows and masks are those of the one role the product names for its
topic (``topic_role``). Each record of the view's topic becomes one record of the product's
topic, in the same partition: the same key, byte for byte, and as value the row as that role
sees it (a JSON object of the product's fields, masked), or a tombstone when the view record is
one or the role's row filter hides the row. The ``freshet.applied`` header is copied. The output
is a function of the view record alone, so a replayed record writes what it wrote before, and a
row that leaves the role's filter is tombstoned without remembering what the role saw.

Delivery is at-least-once with order per key (a key stays in its view partition, which is read
in order, and is produced to the same partition by an idempotent producer). Progress is a Redis
hash per product (``<prefix>:publish:<product>``): the rule published (a digest of what decides
the output: view, fields and types, the role's filter and masks, the salt), whether its first
pass is complete, and the next view-topic offset per partition, written only after every record
produced before was acknowledged. A restart resumes from those offsets.

A first pass (a new product, or a rule that changed: another role, filter, mask, field or view)
re-reads the view topic from its beginning and writes every key again; it first folds the
product topic to the keys it holds, and once the view topic was read to its end it tombstones
those it did not write (left by an earlier rule, e.g. over another view). Its offsets are saved
only when it completes, so a pass cut short starts over. A product deleted, or no longer
published, has its topic tombstoned key by key (it folds to nothing) and its progress removed.

Scale-out: as for views (:mod:`freshet.serve.service`), every replica consumes
``freshet.control.products`` in one consumer group (``<serve_group>-products``) and publishes
the products whose names fall in its partitions, reading them from the beginning on every
assignment and starting only once read to their end. A replica that lost its session while
still writing (a zombie) can interleave records of an older rule with a newer pass for as long as
it runs on: the broker offers no transactions that would fence it (DESIGN.md).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition
from pydantic import ValidationError

from freshet.common import topics
from freshet.common.exceptions import KafkaError
from freshet.common.kafka import (
    CONTROL_FETCH_WAIT_MS,
    consumer_config,
    ensure_topics,
    partitions_of,
    producer_config,
    read_to_end,
)
from freshet.common.products import ProductSpec
from freshet.common.secrets import SecretBox
from freshet.common.topics import COMPACTED, TopicSpec
from freshet.serve import metrics
from freshet.serve.access import Grant, Grants
from freshet.serve.config import ServeSettings
from freshet.serve.exceptions import ServeError

log = logging.getLogger(__name__)

Headers = list[tuple[str, str | bytes | None]]

WATCH_INTERVAL_S = 0.5
SWEEP_RETRY_S = 5.0
CONFIRM_TIMEOUT_S = 30.0


class PublishError(ServeError):
    """A product cannot be published as it is (its spec, or its topic, does not allow it)."""


def rule_of(spec: ProductSpec) -> str:
    """A digest of everything that decides what a product's topic holds.

    A product's generation is not part of it: replacing a product with the same rule for its
    topic (say, another role changed) does not publish it again.
    """
    role = spec.roles.get(spec.topic_role) if spec.topic_role is not None else None
    decisive = {
        "view": spec.view,
        "fields": spec.fields,
        "columns": [c.model_dump(mode="json") for c in spec.columns],
        "role": spec.topic_role,
        "rule": role.model_dump(mode="json") if role is not None else None,
        "salt": spec.hash_salt_encrypted,
    }
    return hashlib.sha256(orjson.dumps(decisive, option=orjson.OPT_SORT_KEYS)).hexdigest()


# --- progress ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    rule: str | None
    complete: bool
    offsets: dict[int, int]


class ProgressStore:
    """One product's progress hash in Redis (see the module docstring)."""

    def __init__(self, client: redis.Redis, prefix: str, product: str) -> None:
        self._redis = client
        self.key = progress_key(prefix, product)

    def load(self) -> Progress:
        raw: dict[bytes, bytes] = self._redis.hgetall(self.key)  # type: ignore[assignment]
        held = {k.decode(): v.decode() for k, v in raw.items()}
        offsets = {int(k[1:]): int(v) for k, v in held.items() if k.startswith("p")}
        return Progress(held.get("rule"), held.get("complete") == "1", offsets)

    def begin(self, rule: str) -> None:
        """A first pass of ``rule`` starts: no offsets, not complete."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(self.key)
        pipe.hset(self.key, mapping={"rule": rule, "complete": "0"})
        pipe.execute()

    def save(self, offsets: dict[int, int], complete: bool = False) -> None:
        """Store the next offsets (and, with ``complete``, that the first pass is done)."""
        mapping: dict[str | bytes, str | bytes] = {f"p{p}": str(o) for p, o in offsets.items()}
        if complete:
            mapping["complete"] = "1"
        self._redis.hset(self.key, mapping=mapping)  # type: ignore[arg-type]

    def exists(self) -> bool:
        return bool(self._redis.exists(self.key))

    def clear(self) -> None:
        self._redis.delete(self.key)


def progress_key(prefix: str, product: str) -> str:
    return f"{prefix}:publish:{product}"


def published_products(client: redis.Redis, prefix: str) -> list[str]:
    """The products whose progress this deployment holds (it has published them)."""
    start = len(progress_key(prefix, ""))
    return sorted(
        key.decode()[start:]
        for key in client.scan_iter(match=progress_key(prefix, "*"), count=1000)
    )


# --- producing --------------------------------------------------------------------------------


class _Sender:
    """Records sent to explicit partitions, confirmed together (acks=all, idempotent)."""

    def __init__(self, producer: Producer, topic: str) -> None:
        self._producer = producer
        self._topic = topic
        self._error: Any = None
        self.pending = 0

    def send(self, partition: int, key: bytes, value: bytes | None, headers: Headers) -> None:
        while True:
            try:
                self._producer.produce(
                    self._topic,
                    key=key,
                    value=value,
                    partition=partition,
                    headers=headers,
                    on_delivery=self._delivered,
                )
                break
            except BufferError:
                self._producer.poll(0.05)
        self.pending += 1

    def confirm(self) -> int:
        """Wait until the broker acknowledged every record sent; returns how many.

        Raises:
            KafkaError: a record was refused or not acknowledged in time.
        """
        if not self.pending:
            return 0
        remaining = self._producer.flush(CONFIRM_TIMEOUT_S)
        count, self.pending = self.pending, 0
        if remaining:
            raise KafkaError(f"{remaining} records for {self._topic} were not acknowledged")
        if self._error is not None:
            err, self._error = self._error, None
            raise KafkaError(f"writing to {self._topic} failed: {err}")
        return count

    def _delivered(self, err: Any, _msg: Message) -> None:
        if err is not None and self._error is None:
            self._error = err


def live_keys(bootstrap: str, topic: str) -> dict[bytes, int]:
    """The keys whose last record on ``topic`` is not a tombstone, with their partition."""
    consumer = Consumer(
        consumer_config(bootstrap, f"freshet-serve-publish-scan-{uuid.uuid4().hex}")
    )
    live: dict[bytes, int] = {}
    try:
        for msg in read_to_end(consumer, topic, timeout=120):
            key = msg.key()
            if key is None:
                continue
            if msg.value() is None:
                live.pop(key, None)
            else:
                live[key] = msg.partition() or 0
    finally:
        consumer.close()
    return live


def _topic_exists(bootstrap: str, topic: str) -> bool:
    consumer = Consumer(consumer_config(bootstrap, f"freshet-serve-publish-{uuid.uuid4().hex}"))
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        return meta is not None and meta.error is None and bool(meta.partitions)
    finally:
        consumer.close()


def retire(settings: ServeSettings, client: redis.Redis, product: str) -> bool:
    """Empty the topic of a product no longer published, then forget its progress.

    Only a product whose progress this deployment holds: a topic it never wrote is left alone.
    Returns whether there was anything to retire.

    Raises:
        KafkaError: the topic could not be read or written; the progress is kept, to retry.
    """
    progress = ProgressStore(client, settings.serve_redis_prefix, product)
    if not progress.exists():
        return False
    topic = topics.product_topic(product)
    bootstrap = settings.kafka_bootstrap
    if _topic_exists(bootstrap, topic):
        keys = live_keys(bootstrap, topic)
        producer = Producer(producer_config(bootstrap))
        sender = _Sender(producer, topic)
        for key, partition in keys.items():
            sender.send(partition, key, None, [(topics.APPLIED_HEADER, b"{}")])
        sender.confirm()
        log.info("product %s: tombstoned the %d keys of %s", product, len(keys), topic)
    progress.clear()
    metrics.forget_product(product)
    return True


# --- one product ------------------------------------------------------------------------------


class ProductPublisher:
    """Publishes one product's rule until ``stop`` is set (see the module docstring).

    Raises from :meth:`run` on failures (the broker, Redis, an unreadable view record); the
    reconciler retries with backoff, and the publisher resumes from its saved progress.
    """

    def __init__(
        self, spec: ProductSpec, grant: Grant, settings: ServeSettings, client: redis.Redis
    ) -> None:
        self.spec = spec
        self.grant = grant
        self.rule = rule_of(spec)
        self.source = topics.view_topic(spec.view)
        self.topic = topics.product_topic(spec.name)
        self._settings = settings
        self._progress = ProgressStore(client, settings.serve_redis_prefix, spec.name)
        self._next: dict[int, int] = {}
        self._partitions: list[int] = []
        self._last_watch = 0.0
        self.state = "starting"
        self.published = 0
        self.lag: int | None = None

    def describe(self) -> dict[str, Any]:
        return {"state": self.state, "published": self.published, "lag": self.lag}

    def run(self, stop: threading.Event) -> None:
        settings = self._settings
        bootstrap = settings.kafka_bootstrap
        ensure_topics(bootstrap, [TopicSpec(self.source, settings.topic_partitions, COMPACTED)])
        consumer = Consumer(
            consumer_config(bootstrap, f"freshet-serve-publish-{self.spec.name}-assigned")
        )
        producer = Producer(producer_config(bootstrap))
        try:
            self._partitions = partitions_of(consumer, self.source)
            self._ensure_topic(consumer)
            leftovers = self._resume()
            sender = _Sender(producer, self.topic)
            consumer.assign(
                [TopicPartition(self.source, p, self._next[p]) for p in self._partitions]
            )
            while not stop.is_set():
                messages = self._poll(consumer)
                written = self._publish(messages, sender)
                if leftovers is None:
                    if messages:
                        self._progress.save(self._next)
                else:
                    for key in written:
                        leftovers.pop(key, None)
                caught_up = self._watch(consumer)
                if leftovers is not None and caught_up:
                    self._complete(leftovers, sender)
                    leftovers = None
        finally:
            consumer.close()
            producer.flush(5)
        log.info(
            "product %s generation %d: publishing stopped", self.spec.name, self.spec.generation
        )

    def _ensure_topic(self, consumer: Consumer) -> None:
        count = len(self._partitions)
        ensure_topics(self._settings.kafka_bootstrap, [TopicSpec(self.topic, count, COMPACTED)])
        have = partitions_of(consumer, self.topic)
        if max(self._partitions) >= len(have):
            raise PublishError(
                f"topic {self.topic} has {len(have)} partitions and the view's topic "
                f"{self.source} {count}: a product topic needs as many (delete {self.topic} to "
                "have it created again)"
            )

    def _resume(self) -> dict[bytes, int] | None:
        """Where to start; the keys a first pass must account for, None when it resumes."""
        held = self._progress.load()
        if held.rule == self.rule and held.complete:
            self._next = {p: held.offsets.get(p, 0) for p in self._partitions}
            self.state = "publishing"
            log.info("product %s: publishing resumes at %s", self.spec.name, self._next)
            return None
        leftovers = live_keys(self._settings.kafka_bootstrap, self.topic)
        self._progress.begin(self.rule)
        self._next = dict.fromkeys(self._partitions, 0)
        self.state = "republishing"
        log.info(
            "product %s generation %d: publishing %s from the beginning of %s as role %s",
            self.spec.name,
            self.spec.generation,
            self.topic,
            self.source,
            self.spec.topic_role,
        )
        return leftovers

    def _complete(self, leftovers: dict[bytes, int], sender: _Sender) -> None:
        """End a first pass: tombstone what an earlier rule left, then save the offsets."""
        for key, partition in leftovers.items():
            sender.send(partition, key, None, [(topics.APPLIED_HEADER, b"{}")])
        count = sender.confirm()
        self.published += count
        metrics.PRODUCT_RECORDS.labels(self.spec.name, "tombstone").inc(count)
        self._progress.save(self._next, complete=True)
        self.state = "publishing"
        log.info(
            "product %s: first pass complete (%d keys left by an earlier rule tombstoned)",
            self.spec.name,
            len(leftovers),
        )

    def _poll(self, consumer: Consumer) -> list[Message]:
        first = consumer.poll(0.1)
        if first is None:
            return []
        return [first, *consumer.consume(self._settings.serve_batch_max - 1, timeout=0)]

    def _publish(self, messages: list[Message], sender: _Sender) -> list[bytes]:
        """Send what the records become and wait for the acks; returns the keys written."""
        keys: list[bytes] = []
        values = tombstones = 0
        next_offsets = dict(self._next)
        for msg in messages:
            err = msg.error()
            if err is not None:
                raise KafkaError(f"consuming {self.source}: {err}")
            partition, offset = msg.partition() or 0, msg.offset() or 0
            next_offsets[partition] = offset + 1
            key = msg.key()
            if key is None:
                continue
            value = self._value(msg.value(), partition, offset)
            headers: Headers = [
                (h[0], h[1]) for h in msg.headers() or () if h[0] == topics.APPLIED_HEADER
            ]
            sender.send(partition, key, value, headers)
            keys.append(key)
            if value is None:
                tombstones += 1
            else:
                values += 1
        sender.confirm()
        self._next = next_offsets
        self.published += values + tombstones
        metrics.PRODUCT_RECORDS.labels(self.spec.name, "value").inc(values)
        metrics.PRODUCT_RECORDS.labels(self.spec.name, "tombstone").inc(tombstones)
        return keys

    def _value(self, raw: bytes | None, partition: int, offset: int) -> bytes | None:
        if raw is None:
            return None
        try:
            row = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise PublishError(
                f"product {self.spec.name}: the record at {self.source}/{partition}@{offset} is "
                "not a JSON row"
            ) from None
        if not isinstance(row, dict):
            raise PublishError(
                f"product {self.spec.name}: the record at {self.source}/{partition}@{offset} is "
                "not a JSON object"
            )
        seen = self.grant.present(row)
        return None if seen is None else orjson.dumps(seen)

    def _watch(self, consumer: Consumer) -> bool:
        """Update the lag, every half second at most.

        Returns True once the view topic was read to its end (by the fetch high watermarks).
        """
        now = time.monotonic()
        if now - self._last_watch < WATCH_INTERVAL_S:
            return False
        self._last_watch = now
        lag = 0
        for p in self._partitions:
            tp = TopicPartition(self.source, p)
            _low, high = consumer.get_watermark_offsets(tp, cached=True)
            if high < 0:
                self.lag = None
                return False
            position = consumer.position([tp])[0].offset
            lag += max(0, high - max(self._next.get(p, 0), position))
        self.lag = lag
        metrics.PRODUCT_LAG.labels(self.spec.name).set(lag)
        return lag == 0


# --- the reconciler ---------------------------------------------------------------------------


@dataclass
class _Running:
    spec: ProductSpec
    partition: int
    publisher: ProductPublisher | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    failures: int = 0
    retry_at: float = 0.0
    error: str | None = None


class ProductPublishing:
    """Runs the publishers of this replica's published products until ``stop`` is set."""

    def __init__(self, settings: ServeSettings, client: redis.Redis) -> None:
        self._settings = settings
        self._redis = client
        key = settings.secret_key
        self._box = SecretBox(key) if key.get_secret_value() else None
        self.group = f"{settings.serve_group}-products"
        self._desired: dict[str, tuple[int, ProductSpec]] = {}
        self._running: dict[str, _Running] = {}
        self._unpublished: dict[str, int] = {}
        """Products deleted or no longer published (with their partition), to retire once the
        desired state was read to its end: a product deleted and created again is not."""
        self._assigned: set[int] = set()
        self._caught_up = False
        self._sweep_at: float | None = 0.0
        self._heartbeat = time.monotonic()
        self._lock = threading.Lock()

    # --- status -------------------------------------------------------------------------------

    def alive(self) -> bool:
        return time.monotonic() - self._heartbeat < 15

    def describe(self) -> dict[str, Any]:
        """Per product this replica publishes: its topic, role, state, records published, lag."""
        with self._lock:
            running = list(self._running.items())
        out: dict[str, Any] = {}
        for name, r in running:
            product: dict[str, Any] = {
                "generation": r.spec.generation,
                "topic": topics.product_topic(name),
                "role": r.spec.topic_role,
            }
            if r.publisher is not None:
                product.update(r.publisher.describe())
            if r.error:
                # The last failure; the state says whether it runs again since.
                product["error"] = r.error
                if r.thread is None or not r.thread.is_alive():
                    product["state"] = "error"
            out[name] = product
        return out

    # --- main loop ----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Reconcile until ``stop``.

        A failure of the reconciler itself (say, the broker down at start) is logged and
        retried: it never ends publishing.
        """
        while not stop.is_set():
            try:
                self._run(stop)
            except Exception as exc:
                log.warning("publishing products failed (%s); retrying", exc, exc_info=True)
                self._heartbeat = time.monotonic()
                stop.wait(self._settings.serve_retry_max_s)

    def _run(self, stop: threading.Event) -> None:
        settings = self._settings
        self._desired.clear()
        self._unpublished.clear()
        self._assigned.clear()
        self._caught_up = False
        ensure_topics(settings.kafka_bootstrap, topics.control_topics(settings.topic_partitions))
        consumer = Consumer(
            consumer_config(
                settings.kafka_bootstrap, self.group, **{"fetch.wait.max.ms": CONTROL_FETCH_WAIT_MS}
            )
        )
        consumer.subscribe(
            [topics.CONTROL_PRODUCTS],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        try:
            while not stop.is_set():
                self._heartbeat = time.monotonic()
                msg = consumer.poll(0.2)
                if msg is not None and not msg.error():
                    self._apply(msg.partition() or 0, msg.key(), msg.value())
                if self._caught_up or self._check_caught_up(consumer):
                    self._reconcile()
                if self._sweep_at is not None and time.monotonic() >= self._sweep_at:
                    self._sweep()
        finally:
            consumer.close()
            for name in list(self._running):
                self._stop(name)

    def _check_caught_up(self, consumer: Consumer) -> bool:
        if not self._assigned:
            return False
        for partition in self._assigned:
            tp = TopicPartition(topics.CONTROL_PRODUCTS, partition)
            _low, high = consumer.get_watermark_offsets(tp, cached=True)
            if high < 0:
                return False
            position = consumer.position([tp])[0].offset
            if high > 0 and position < high:
                return False
        self._caught_up = True
        return True

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._caught_up = False
        for p in partitions:
            p.offset = OFFSET_BEGINNING
            self._assigned.add(p.partition)
        consumer.assign(partitions)
        log.info("assigned product partitions %s", sorted(self._assigned))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {p.partition for p in partitions}
        self._assigned -= revoked
        for name, (partition, _spec) in list(self._desired.items()):
            if partition in revoked:
                del self._desired[name]
        for name, partition in list(self._unpublished.items()):
            if partition in revoked:
                del self._unpublished[name]
        for name, running in list(self._running.items()):
            if running.partition in revoked:
                self._stop(name)
        consumer.unassign()

    def _apply(self, partition: int, raw_key: bytes | None, raw_value: bytes | None) -> None:
        if raw_key is None:
            return
        name = raw_key.decode()
        spec = None
        if raw_value is not None:
            try:
                spec = ProductSpec.model_validate_json(raw_value)
            except ValidationError as exc:
                fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors())
                log.error("ignoring invalid desired state for product %s (%s)", name, fields)
                return
        if spec is None or not spec.publish_topic:
            # Deleted, or no longer published: its topic is to fold to nothing.
            self._desired.pop(name, None)
            self._stop(name)
            self._unpublished[name] = partition
            return
        self._unpublished.pop(name, None)
        previous = self._desired.get(name)
        if previous is not None and previous[1] != spec:
            self._stop(name)
        self._desired[name] = (partition, spec)

    # --- retiring -----------------------------------------------------------------------------

    def _retire(self, name: str) -> None:
        try:
            retire(self._settings, self._redis, name)
        except Exception as exc:
            log.warning("product %s: could not empty its topic (%s); retrying later", name, exc)
            self._sweep_at = time.monotonic() + SWEEP_RETRY_S
        self._unpublished.pop(name, None)

    def _sweep(self) -> None:
        """Retire the products this deployment published that are no longer published."""
        try:
            held = set(published_products(self._redis, self._settings.serve_redis_prefix))
            if held:
                for name in sorted(held - self._read_desired()):
                    log.info("product %s is no longer published: emptying its topic", name)
                    retire(self._settings, self._redis, name)
        except Exception as exc:
            log.warning("could not sweep unpublished products (%s); retrying later", exc)
            self._sweep_at = time.monotonic() + SWEEP_RETRY_S
            return
        self._sweep_at = None

    def _read_desired(self) -> set[str]:
        """Every published product of the desired state (all partitions), read to the end now."""
        consumer = Consumer(
            consumer_config(
                self._settings.kafka_bootstrap, f"freshet-serve-publish-sweep-{uuid.uuid4().hex}"
            )
        )
        names: set[str] = set()
        try:
            for msg in read_to_end(consumer, topics.CONTROL_PRODUCTS):
                key, raw = msg.key(), msg.value()
                if key is None:
                    continue
                published = False
                if raw is not None:
                    try:
                        published = ProductSpec.model_validate_json(raw).publish_topic
                    except ValidationError:
                        published = True  # unreadable: leave its topic alone
                if published:
                    names.add(key.decode())
                else:
                    names.discard(key.decode())
        finally:
            consumer.close()
        return names

    # --- reconciliation -----------------------------------------------------------------------

    def _reconcile(self) -> None:
        for name in list(self._unpublished):
            self._retire(name)
        now = time.monotonic()
        for name, (partition, spec) in self._desired.items():
            running = self._running.get(name)
            if running is None:
                with self._lock:
                    running = self._running[name] = _Running(spec, partition)
            idle = running.thread is None or not running.thread.is_alive()
            if idle and now >= running.retry_at:
                self._start(running)
        for name in [n for n in self._running if n not in self._desired]:
            self._stop(name)

    def _salt(self, product: ProductSpec) -> bytes | None:
        if not product.hash_salt_encrypted:
            return None
        box = self._box or SecretBox(self._settings.secret_key)  # raises: no key set
        return box.decrypt(product.hash_salt_encrypted).get_secret_value().encode()

    def _start(self, running: _Running) -> None:
        spec = running.spec
        try:
            if spec.topic_role is None or spec.topic_role not in spec.roles:
                raise PublishError(
                    f"topic_role {spec.topic_role!r} is not a role of the product: it says whose "
                    "rows and masks the topic carries (replace the product to set it)"
                )
            grant = Grants.build(spec, spec.topic_role, self._salt)
            publisher = ProductPublisher(spec, grant, self._settings, self._redis)
        except Exception as exc:
            self._fail(running, f"{type(exc).__name__}: {exc}")
            return
        running.publisher = publisher
        running.stop = threading.Event()

        def target() -> None:
            try:
                publisher.run(running.stop)
                running.failures = 0
            except Exception as exc:
                log.warning("product %s: publishing failed", spec.name, exc_info=True)
                if publisher.published:
                    running.failures = 0  # it worked for a while: back off from the start
                self._fail(running, f"{type(exc).__name__}: {exc}")

        running.thread = threading.Thread(
            target=target, name=f"serve-publish-{spec.name}", daemon=True
        )
        running.thread.start()

    def _fail(self, running: _Running, reason: str) -> None:
        running.failures += 1
        settings = self._settings
        delay = min(
            settings.serve_retry_max_s,
            settings.serve_retry_initial_s * 2 ** (running.failures - 1),
        )
        running.retry_at = time.monotonic() + delay
        running.error = f"{reason} (retrying in {delay:.0f}s)"

    def _stop(self, name: str) -> None:
        with self._lock:
            running = self._running.pop(name, None)
        if running is None:
            return
        running.stop.set()
        if running.thread is not None:
            running.thread.join(timeout=30)
        metrics.forget_product(name)
