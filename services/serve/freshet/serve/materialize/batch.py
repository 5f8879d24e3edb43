"""A batch of view-topic records as one store applies it in one commit.

Records of one key always share a partition and come in order, so within a batch only the last
change of each key matters: :class:`Batch` keeps that one (a later upsert replaces an earlier
delete and the other way round). Applying a batch is idempotent: the same batch applied twice
leaves the same rows, which is what makes a replay after a crash harmless.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from freshet.serve.materialize.layout import Change


@dataclass
class Batch:
    """The changes one store applies in one commit, and where its offsets move.

    ``start[p]`` is the next offset of partition ``p`` that the store holds before the batch
    (the writer expects exactly that: see :class:`~freshet.serve.exceptions.Fenced`), ``end[p]``
    the one after it. ``applied[p]`` is the ``freshet.applied`` header of the last record of
    ``p`` in the batch. Partitions the batch does not move are absent from all three.
    """

    changes: dict[bytes, Change] = field(default_factory=dict)
    start: dict[int, int] = field(default_factory=dict)
    end: dict[int, int] = field(default_factory=dict)
    applied: dict[int, bytes] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        records: Iterable[Change | tuple[int, int]],
        stored: Mapping[int, int],
    ) -> Batch:
        """The batch of ``records`` that a store whose next offsets are ``stored`` has not seen.

        ``records`` are changes, or ``(partition, offset)`` pairs for records without a change
        (no key): those only move the offsets. Records below the store's offset are skipped.
        """
        batch = cls()
        for record in records:
            if isinstance(record, Change):
                partition, offset = record.partition, record.offset
            else:
                partition, offset = record
            held = stored.get(partition, 0)
            if offset < held:
                continue
            batch.start.setdefault(partition, held)
            batch.end[partition] = offset + 1
            if isinstance(record, Change):
                # dict order: a key keeps its first position; its value is the last change.
                batch.changes[record.key] = record
                if record.applied is not None:
                    batch.applied[partition] = record.applied
        return batch

    def __bool__(self) -> bool:
        return bool(self.end)

    @property
    def upserts(self) -> list[Change]:
        return [c for c in self.changes.values() if c.row is not None]

    @property
    def deletes(self) -> list[Change]:
        return [c for c in self.changes.values() if c.row is None]
