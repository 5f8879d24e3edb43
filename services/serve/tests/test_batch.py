"""Batches: the last change per key, offsets per partition, records a store already holds."""

from __future__ import annotations

from freshet.serve.materialize.batch import Batch
from freshet.serve.materialize.layout import Change


def _change(
    partition: int, offset: int, key: bytes, row: bytes | None, applied: bytes | None = None
) -> Change:
    return Change(partition, offset, key, (key.decode(),), row, applied)


def test_the_last_change_of_a_key_wins_and_offsets_move_per_partition() -> None:
    records = [
        _change(0, 10, b"a", b'{"v":1}', b'{"s":1}'),
        _change(1, 4, b"b", b'{"v":2}'),
        _change(0, 11, b"a", None, b'{"s":2}'),
        _change(0, 12, b"c", b'{"v":3}'),
        (1, 5),  # a record without a key: moves the offset only
        _change(0, 13, b"a", b'{"v":4}', b'{"s":3}'),
    ]
    batch = Batch.of(records, {0: 10, 1: 0})
    assert {k: c.row for k, c in batch.changes.items()} == {
        b"a": b'{"v":4}',
        b"b": b'{"v":2}',
        b"c": b'{"v":3}',
    }
    assert batch.start == {0: 10, 1: 0}
    assert batch.end == {0: 14, 1: 6}
    assert batch.applied == {0: b'{"s":3}'}
    assert [c.key for c in batch.upserts] == [b"a", b"b", b"c"]
    assert batch.deletes == []


def test_a_delete_after_an_upsert_is_a_delete() -> None:
    batch = Batch.of([_change(0, 0, b"a", b"{}"), _change(0, 1, b"a", None)], {})
    assert [c.key for c in batch.deletes] == [b"a"]
    assert batch.upserts == []


def test_records_below_the_stores_offsets_are_skipped() -> None:
    records = [_change(0, 5, b"a", b"{}"), _change(0, 6, b"b", b"{}"), _change(1, 2, b"c", b"{}")]
    batch = Batch.of(records, {0: 6, 1: 3})
    assert list(batch.changes) == [b"b"]
    assert (batch.start, batch.end) == ({0: 6}, {0: 7})
    assert not Batch.of(records, {0: 7, 1: 3})
