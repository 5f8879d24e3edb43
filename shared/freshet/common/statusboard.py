"""The status the services report on ``freshet.status``, and waiting for it to change.

Control answers status requests and read-your-writes waits from it; serve waits on views'
statuses the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from freshet.common import codec, topics
from freshet.common.exceptions import FreshetError
from freshet.common.kafka import FETCH_WAIT_MS, CompactedTopicView

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


class NotReadyError(FreshetError):
    """The status topic has not been read yet."""


def _describe(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


class _Waiter:
    """One coroutine waiting for a key's status to change, woken from the follower thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.event = asyncio.Event()

    def wake(self) -> None:
        # RuntimeError: the loop has closed, so nobody waits any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.event.set)


class StatusBoard:
    """The latest status of every component, key ``<kind>/<name>``, folded from ``freshet.status``.

    Coroutines can wait until a component's status satisfies a condition
    (:meth:`wait_until`) without polling and without blocking their event loop: the follower
    thread wakes the waiters of a key each time it applies a record of that key.
    """

    def __init__(self) -> None:
        self._view: CompactedTopicView | None = None
        self._lock = threading.Lock()
        self._waiters: dict[str, set[_Waiter]] = {}

    def start(self, bootstrap: str, timeout: float = 30.0) -> None:
        """Read ``freshet.status`` to its end, then follow it.

        Raises:
            freshet.common.exceptions.KafkaError: the topic cannot be read within ``timeout``.
        """
        view = CompactedTopicView(
            bootstrap, topics.STATUS, codec.loads, self._changed, fetch_wait_ms=FETCH_WAIT_MS
        )
        view.start(timeout)
        self._view = view

    def close(self) -> None:
        """Stop following the topic; safe to call more than once."""
        if self._view is not None:
            self._view.close()
            self._view = None

    @property
    def started(self) -> bool:
        return self._view is not None

    def get(self, kind: str, name: str, model: type[M]) -> M | None:
        """The status last reported for ``kind/name`` as ``model``, ``None`` if there is none.

        A record that does not validate as ``model`` is logged (without its values) and taken
        as no status.

        Raises:
            NotReadyError: :meth:`start` has not read the topic yet.
        """
        if self._view is None:
            raise NotReadyError("the status has not been read yet: retry soon")
        raw = self._view.get(topics.status_key(kind, name))
        if raw is None:
            return None
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            log.warning("ignoring an unreadable status of %s %s: %s", kind, name, _describe(exc))
            return None

    async def wait_until(
        self,
        kind: str,
        name: str,
        model: type[M],
        done: Callable[[M | None], bool],
        timeout: float,
    ) -> tuple[bool, M | None]:
        """Wait until ``done(status)`` holds for ``kind/name``, at most ``timeout`` seconds.

        ``done`` is checked at once and then each time a record of that key arrives. Returns
        whether it held and the last status seen (``None`` if none).
        """
        key = topics.status_key(kind, name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        waiter = _Waiter(loop)
        with self._lock:
            self._waiters.setdefault(key, set()).add(waiter)
        try:
            while True:
                # Cleared before reading: a record applied after the read sets it again.
                waiter.event.clear()
                status = self.get(kind, name, model)
                if done(status):
                    return True, status
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False, status
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await waiter.event.wait()
        finally:
            with self._lock:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del self._waiters[key]

    def _changed(self, key: str, _value: Any) -> None:
        with self._lock:
            waiters = list(self._waiters.get(key, ()))
        for waiter in waiters:
            waiter.wake()
