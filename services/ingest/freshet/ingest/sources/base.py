"""The contract of a CDC source connector.

A source reads one database's changes and writes them as Debezium-compatible events to Kafka.

Guarantees every implementation gives:

* At-least-once with order per key: a position is confirmed to the database only after Kafka
  acknowledged every event up to it (see :class:`freshet.ingest.sink.KafkaSink`); after a crash
  the source resumes from the last confirmed position and may repeat events after it.
* ``run()`` returns only when ``stop`` is set; any failure raises, and the caller retries with
  backoff while :meth:`status` reports ``error`` with the reason.
* ``status()`` may be called from another thread at any time.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod

from freshet.common.schemas import SourceStatus


class Source(ABC):
    @abstractmethod
    def run(self, stop: threading.Event) -> None:
        """Snapshot if needed, then stream until ``stop`` is set. Raises on failure."""

    @abstractmethod
    def status(self) -> SourceStatus:
        """The current status (state, position, counters), safe to call from any thread."""

    @abstractmethod
    def report_error(self, reason: str) -> None:
        """Record that the last run failed; ``status()`` reports ``error`` with ``reason``."""

    @abstractmethod
    def cleanup(self) -> None:
        """Release what the source holds in the database (slot, publication) after a delete."""
