"""Control's view of the desired state and the status, both kept on compacted Kafka topics.

Every control replica folds ``freshet.control.sources`` and ``freshet.status`` into memory with
:class:`~freshet.common.kafka.CompactedTopicView`, so all replicas answer from the same log. A
write is acknowledged by the broker before it is answered, and is visible to the next read of the
replica that made it (read-your-writes), even before the follower has read it back.

Writes are serialised within one replica (check and write happen under one lock). Two replicas
writing the same source at the same moment are not serialised: the later record in the log wins,
as in Kafka Connect's config topic.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from confluent_kafka import Producer
from prometheus_client import Counter
from pydantic import ValidationError

from freshet.common import codec, topics
from freshet.common.exceptions import KafkaError
from freshet.common.kafka import CompactedTopicView, ensure_topics, produce_sync, producer_config
from freshet.common.schemas import PostgresSourceSpec, SourceSpec, SourceStatus
from freshet.control.config import ControlSettings
from freshet.control.exceptions import (
    SourceExistsError,
    SourceNotFoundError,
    StateUnavailableError,
)

log = logging.getLogger(__name__)

SOURCE_WRITES = Counter(
    "freshet_control_source_writes_total",
    "Source specs written to the desired-state topic, by operation.",
    ["op"],
)


def _describe(exc: ValidationError) -> str:
    """The errors of ``exc`` as ``field: message``, without the input (it may hold secrets)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '<record>'}: {e['msg']}" for e in exc.errors()
    )


def decode_spec(raw: bytes) -> SourceSpec:
    """Decode a record of the sources topic.

    Raises:
        ValueError: the record is not a spec this version understands; the message names the
            fields, never their values.
    """
    try:
        return PostgresSourceSpec.model_validate_json(raw)
    except ValidationError as exc:
        raise ValueError(f"not a source spec: {_describe(exc)}") from None


class _LocalWrites:
    """Records this replica wrote that its follower has not read back yet, per key, in order.

    A record's key always maps to one partition, so the follower reads this replica's writes of
    a key back in the order they were acknowledged; each one read back is dropped here. Until
    then the newest local write of a key is the answer for that key, which also hides older
    records of the key that the follower may still be reading. (``CompactedTopicView.put_local``
    alone does not: the follower would overwrite it with those older records, so a source
    deleted here could reappear for a moment.)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, deque[SourceSpec | None]] = {}

    def add(self, key: str, value: SourceSpec | None) -> None:
        with self._lock:
            self._pending.setdefault(key, deque()).append(value)

    def discard(self, key: str, value: SourceSpec | None) -> None:
        """Forget a write that failed; if its record arrives after all, the follower applies it."""
        with self._lock:
            queue = self._pending.get(key)
            if queue is None:
                return
            for i in range(len(queue) - 1, -1, -1):
                if queue[i] == value:
                    del queue[i]
                    break
            if not queue:
                del self._pending[key]

    def seen(self, key: str, value: SourceSpec | None) -> None:
        """Called by the follower for every record it applies."""
        with self._lock:
            queue = self._pending.get(key)
            if queue and queue[0] == value:
                queue.popleft()
                if not queue:
                    del self._pending[key]

    def latest(self) -> dict[str, SourceSpec | None]:
        with self._lock:
            return {key: queue[-1] for key, queue in self._pending.items()}

    def latest_of(self, key: str) -> tuple[bool, SourceSpec | None]:
        with self._lock:
            queue = self._pending.get(key)
            return (True, queue[-1]) if queue else (False, None)


class ControlState:
    """Reads and writes the desired state of sources, and reads their status.

    Call :meth:`start` before anything else and :meth:`close` at the end. Thread-safe: the API
    calls it from its worker threads.
    """

    def __init__(self, settings: ControlSettings) -> None:
        self._settings = settings
        self._write_lock = threading.Lock()
        self._local = _LocalWrites()
        self._producer: Producer | None = None
        self._sources: CompactedTopicView | None = None
        self._status: CompactedTopicView | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Create the control topics if missing, then read both topics to their end.

        Raises:
            freshet.common.exceptions.KafkaError: the broker cannot be reached or the topics
                cannot be created or read within ``timeout`` seconds.
        """
        bootstrap = self._settings.kafka_bootstrap
        ensure_topics(bootstrap, topics.control_topics(self._settings.topic_partitions), timeout)
        self._producer = Producer(producer_config(bootstrap))
        self._sources = CompactedTopicView(
            bootstrap, topics.CONTROL_SOURCES, decode_spec, on_change=self._local.seen
        )
        self._sources.start(timeout)
        self._status = CompactedTopicView(bootstrap, topics.STATUS, codec.loads)
        self._status.start(timeout)
        log.info(
            "following %s (%d sources) and %s",
            topics.CONTROL_SOURCES,
            len(self._sources.items()),
            topics.STATUS,
        )

    def close(self) -> None:
        """Stop following the topics and flush the producer; safe to call more than once."""
        for view in (self._sources, self._status):
            if view is not None:
                view.close()
        self._sources = self._status = None
        if self._producer is not None:
            self._producer.flush(5)
            self._producer = None

    @property
    def started(self) -> bool:
        return self._sources is not None and self._status is not None

    def _views(self) -> tuple[CompactedTopicView, CompactedTopicView]:
        if self._sources is None or self._status is None:
            raise StateUnavailableError("control has not read the desired state yet: retry soon")
        return self._sources, self._status

    def get_source(self, name: str) -> SourceSpec | None:
        """The current spec of source ``name``, or ``None`` if there is none."""
        sources, _ = self._views()
        found, value = self._local.latest_of(name)
        if found:
            return value
        spec: SourceSpec | None = sources.get(name)
        return spec

    def list_sources(self) -> list[SourceSpec]:
        """Every source's current spec, sorted by name."""
        sources, _ = self._views()
        merged: dict[str, SourceSpec | None] = dict(sources.items())
        merged.update(self._local.latest())
        return [spec for _, spec in sorted(merged.items()) if spec is not None]

    def get_status(self, name: str) -> SourceStatus | None:
        """The status ingest last reported for source ``name``, or ``None`` if it has not yet."""
        _, status = self._views()
        raw = status.get(topics.status_key("source", name))
        if raw is None:
            return None
        try:
            return SourceStatus.model_validate(raw)
        except ValidationError as exc:
            log.warning("ignoring an unreadable status of source %s: %s", name, _describe(exc))
            return None

    def create_source(self, spec: SourceSpec) -> None:
        """Write a new source.

        Raises:
            SourceExistsError: a source of that name exists.
            StateUnavailableError: the broker did not acknowledge the write.
        """
        with self._write_lock:
            if self.get_source(spec.name) is not None:
                raise SourceExistsError(spec.name)
            self._write(spec.name, spec)
        SOURCE_WRITES.labels("create").inc()

    def replace_source(self, name: str, build: Callable[[SourceSpec], SourceSpec]) -> SourceSpec:
        """Replace source ``name`` by ``build(current)`` and return the new spec.

        ``build`` runs under the write lock, so it sees the spec it replaces; whatever it raises
        propagates and nothing is written.

        Raises:
            SourceNotFoundError: there is no source ``name``.
            StateUnavailableError: the broker did not acknowledge the write.
        """
        with self._write_lock:
            current = self.get_source(name)
            if current is None:
                raise SourceNotFoundError(name)
            spec = build(current)
            self._write(name, spec)
        SOURCE_WRITES.labels("replace").inc()
        return spec

    def delete_source(self, name: str) -> None:
        """Write a tombstone for source ``name``.

        Raises:
            SourceNotFoundError: there is no source ``name``.
            StateUnavailableError: the broker did not acknowledge the write.
        """
        with self._write_lock:
            if self.get_source(name) is None:
                raise SourceNotFoundError(name)
            self._write(name, None)
        SOURCE_WRITES.labels("delete").inc()

    def _write(self, name: str, spec: SourceSpec | None) -> None:
        if self._producer is None:
            raise StateUnavailableError("control has not started: retry soon")
        value = None if spec is None else codec.dumps(spec.model_dump(mode="json"))
        # Registered before producing: the follower may read the record back before the ack.
        self._local.add(name, spec)
        try:
            produce_sync(self._producer, topics.CONTROL_SOURCES, name.encode(), value)
        except KafkaError as exc:
            self._local.discard(name, spec)
            raise StateUnavailableError(
                f"the change to source {name!r} was not acknowledged by Kafka ({exc}); it may "
                "or may not take effect: check with GET and retry"
            ) from exc
