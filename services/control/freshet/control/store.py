"""One kind of desired state (sources, views) on its compacted topic, with read-your-writes.

Every control replica folds the topic into memory with
:class:`~freshet.common.kafka.CompactedTopicView`, so all replicas answer from the same log. A
write is acknowledged by the broker before it is answered, and is visible to the next read of the
replica that made it (read-your-writes), even before the follower has read it back.

Writes are serialised within one replica (check and write happen under one lock per kind). Two
replicas writing the same name at the same moment are not serialised: the later record in the log
wins, as in Kafka Connect's config topic.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from confluent_kafka import Producer
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError

from freshet.common import codec
from freshet.common.exceptions import KafkaError
from freshet.common.kafka import CompactedTopicView, produce_sync
from freshet.control.exceptions import AlreadyExistsError, NotFoundError, StateUnavailableError

V = TypeVar("V")
M = TypeVar("M", bound=BaseModel)


def describe(exc: ValidationError) -> str:
    """The errors of ``exc`` as ``field: message``, without the input (it may hold secrets)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '<record>'}: {e['msg']}" for e in exc.errors()
    )


def decoder(model: type[M], what: str) -> Callable[[bytes], M]:
    """A decoder of a topic's JSON records into ``model``.

    The decoder raises ``ValueError("not a <what>: ...")`` for a record this version does not
    understand; the message names the fields, never their values.
    """

    def decode(raw: bytes) -> M:
        try:
            return model.model_validate_json(raw)
        except ValidationError as exc:
            raise ValueError(f"not a {what}: {describe(exc)}") from None

    return decode


class _LocalWrites(Generic[V]):
    """Records this replica wrote that its follower has not read back yet, per key, in order.

    A record's key always maps to one partition, so the follower reads this replica's writes of
    a key back in the order they were acknowledged; each one read back is dropped here. Until
    then the newest local write of a key is the answer for that key, which also hides older
    records of the key that the follower may still be reading. (``CompactedTopicView.put_local``
    alone does not: the follower would overwrite it with those older records, so an object
    deleted here could reappear for a moment.)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, deque[V | None]] = {}

    def add(self, key: str, value: V | None) -> None:
        with self._lock:
            self._pending.setdefault(key, deque()).append(value)

    def discard(self, key: str, value: V | None) -> None:
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

    def seen(self, key: str, value: V | None) -> None:
        """Called by the follower for every record it applies."""
        with self._lock:
            queue = self._pending.get(key)
            if queue and queue[0] == value:
                queue.popleft()
                if not queue:
                    del self._pending[key]

    def latest(self) -> dict[str, V | None]:
        with self._lock:
            return {key: queue[-1] for key, queue in self._pending.items()}

    def latest_of(self, key: str) -> tuple[bool, V | None]:
        with self._lock:
            queue = self._pending.get(key)
            return (True, queue[-1]) if queue else (False, None)


class SpecStore(Generic[M]):
    """The specs of one kind of object, keyed by name, on one compacted topic.

    Call :meth:`start` before anything else and :meth:`close` at the end. Thread-safe: the API
    calls it from its worker threads.

    Args:
        kind: the object's kind in messages and paths (``"view"``: ``/v1/views``).
        topic: the compacted desired-state topic; key = name, value = spec JSON, tombstone =
            deleted.
        model: the spec's model; records that do not validate are skipped (and logged).
        writes: a counter labelled ``op`` (``create``, ``replace``, ``delete``).
    """

    def __init__(self, kind: str, topic: str, model: type[M], writes: Counter) -> None:
        self.kind = kind
        self._topic = topic
        self._decode = decoder(model, f"{kind} spec")
        self._writes = writes
        self._write_lock = threading.Lock()
        self._local: _LocalWrites[M] = _LocalWrites()
        self._producer: Producer | None = None
        self._view: CompactedTopicView | None = None

    def start(self, bootstrap: str, producer: Producer, timeout: float = 30.0) -> None:
        """Read the topic to its end, then follow it; writes go through ``producer``.

        Raises:
            freshet.common.exceptions.KafkaError: the topic cannot be read within ``timeout``.
        """
        view = CompactedTopicView(bootstrap, self._topic, self._decode, on_change=self._local.seen)
        view.start(timeout)
        self._view, self._producer = view, producer

    def close(self) -> None:
        """Stop following the topic; safe to call more than once."""
        if self._view is not None:
            self._view.close()
        self._view = self._producer = None

    @property
    def started(self) -> bool:
        return self._view is not None

    def _followed(self) -> CompactedTopicView:
        if self._view is None:
            raise StateUnavailableError("control has not read the desired state yet: retry soon")
        return self._view

    def get(self, name: str) -> M | None:
        """The current spec of ``name``, or ``None`` if there is none."""
        view = self._followed()
        found, value = self._local.latest_of(name)
        if found:
            return value
        spec: M | None = view.get(name)
        return spec

    def require(self, name: str) -> M:
        """The current spec of ``name``.

        Raises:
            NotFoundError: there is none.
        """
        spec = self.get(name)
        if spec is None:
            raise NotFoundError(self.kind, name)
        return spec

    def specs(self) -> list[M]:
        """Every current spec, sorted by name."""
        merged: dict[str, M | None] = dict(self._followed().items())
        merged.update(self._local.latest())
        return [spec for _, spec in sorted(merged.items()) if spec is not None]

    def create(self, name: str, spec: M) -> None:
        """Write a new object.

        Raises:
            AlreadyExistsError: an object of that name exists.
            StateUnavailableError: the broker did not acknowledge the write.
        """
        with self._write_lock:
            if self.get(name) is not None:
                raise AlreadyExistsError(self.kind, name)
            self._write(name, spec)
        self._writes.labels("create").inc()

    def replace(self, name: str, build: Callable[[M], M]) -> M:
        """Replace ``name`` by ``build(current)`` and return the new spec.

        ``build`` runs under the write lock, so it sees the spec it replaces; whatever it raises
        propagates and nothing is written.

        Raises:
            NotFoundError: there is no object ``name``.
            StateUnavailableError: the broker did not acknowledge the write.
        """
        with self._write_lock:
            spec = build(self.require(name))
            self._write(name, spec)
        self._writes.labels("replace").inc()
        return spec

    def delete(self, name: str) -> None:
        """Write a tombstone for ``name``.

        Raises:
            NotFoundError: there is no object ``name``.
            StateUnavailableError: the broker did not acknowledge the write.
        """
        with self._write_lock:
            self.require(name)
            self._write(name, None)
        self._writes.labels("delete").inc()

    def _write(self, name: str, spec: M | None) -> None:
        if self._producer is None:
            raise StateUnavailableError("control has not started: retry soon")
        value = None if spec is None else codec.dumps(spec.model_dump(mode="json"))
        # Registered before producing: the follower may read the record back before the ack.
        self._local.add(name, spec)
        try:
            produce_sync(self._producer, self._topic, name.encode(), value)
        except KafkaError as exc:
            self._local.discard(name, spec)
            raise StateUnavailableError(
                f"the change to {self.kind} {name!r} was not acknowledged by Kafka ({exc}); it "
                "may or may not take effect: check with GET and retry"
            ) from exc
