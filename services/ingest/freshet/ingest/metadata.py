"""What ingest tells other services about a source besides its changes.

* ``freshet.schemas``: a :class:`~freshet.common.schemas.TableSchema` per captured table, when
  a snapshot or a stream starts and whenever the stream shows a changed column list.
* ``freshet.positions``: a :class:`~freshet.common.schemas.SourcePosition` whenever the
  position confirmed to the source advances, at most every :data:`POSITION_INTERVAL_S`.

Both are compacted and written through the source's :class:`~freshet.ingest.sink.KafkaSink`
without waiting; a failed write fails the sink like a failed change event does.
"""

from __future__ import annotations

import time

from freshet.common import topics
from freshet.common.kafka import ensure_topics
from freshet.common.schemas import SourcePosition, TableSchema
from freshet.ingest.sink import KafkaSink

POSITION_INTERVAL_S = 0.05
"""Positions of one source are published at most this often (read-your-writes waits on them)."""


def ensure_metadata_topics(bootstrap: str, partitions: int) -> None:
    """Create ``freshet.schemas`` and ``freshet.positions`` (as control's specs say) if missing."""
    wanted = {topics.SCHEMAS, topics.POSITIONS}
    ensure_topics(bootstrap, [s for s in topics.control_topics(partitions) if s.name in wanted])


class SchemaPublisher:
    """Publishes table schemas, skipping one identical to what this run already published."""

    def __init__(self) -> None:
        self._published: dict[str, TableSchema] = {}

    def reset(self) -> None:
        """Forget what was published: the next run publishes every table again."""
        self._published.clear()

    def unchanged(
        self, qualified: str, columns: list[tuple[str, int, int]], primary_key: tuple[str, ...]
    ) -> bool:
        """True if ``qualified`` was published with these (name, oid, typmod) columns and key."""
        last = self._published.get(qualified)
        return (
            last is not None
            and last.primary_key == primary_key
            and [(c.name, c.type_oid, c.typmod) for c in last.columns] == columns
        )

    def publish(self, sink: KafkaSink, schema: TableSchema) -> bool:
        """Write ``schema`` unless it equals the last one written; True if it was written."""
        if self._published.get(schema.qualified) == schema:
            return False
        sink.produce_control(
            topics.SCHEMAS,
            schema.qualified.encode(),
            schema.model_dump_json(by_alias=True).encode(),
        )
        self._published[schema.qualified] = schema
        return True


class PositionPublisher:
    """Publishes one source's confirmed position with the sink's acknowledged offsets.

    Call :meth:`publish` with the position just confirmed (after :meth:`KafkaSink.poll`
    returned it): the sink's offsets then cover every event before it. Positions only move
    forward, and at most every :data:`POSITION_INTERVAL_S` unless ``force`` is given.
    """

    def __init__(self, source: str, interval_s: float = POSITION_INTERVAL_S) -> None:
        self._source = source
        self._interval = interval_s
        self._last_lsn: int | None = None
        self._last_at = float("-inf")

    @property
    def lsn(self) -> int | None:
        """The last published position."""
        return self._last_lsn

    def publish(self, sink: KafkaSink, lsn: int, *, force: bool = False) -> bool:
        """Publish ``lsn`` if it advanced and the interval passed; True if it was written."""
        if self._last_lsn is not None and lsn <= self._last_lsn:
            return False
        now = time.monotonic()
        if not force and now - self._last_at < self._interval:
            return False
        if sink.offsets_unknown:
            return False
        position = SourcePosition(
            source=self._source,
            lsn=lsn,
            ts_ms=time.time_ns() // 1_000_000,
            offsets=sink.acked_offsets(),
        )
        sink.produce_control(
            topics.POSITIONS, self._source.encode(), position.model_dump_json().encode()
        )
        self._last_lsn, self._last_at = lsn, now
        return True
