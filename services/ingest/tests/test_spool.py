"""The spool of streamed (large, in-progress) transactions, and Table.row, without servers."""

from __future__ import annotations

from pathlib import Path

import pytest

from freshet.common import events
from freshet.ingest.sources.postgres.changes import Table, _Change, _Spool
from freshet.ingest.sources.postgres.pgoutput import UNCHANGED_TOAST
from freshet.ingest.sources.postgres.values import converter

ORDERS = Table(
    topic="cdc.src.public.orders",
    schema="public",
    name="orders",
    columns=("id", "note"),
    converters=(int, str),
    key_positions=(0,),
)
ITEMS = Table(
    topic="cdc.src.public.items",
    schema="public",
    name="items",
    columns=("id",),
    converters=(int,),
    key_positions=(0,),
)
TABLES = {ORDERS.topic: ORDERS, ITEMS.topic: ITEMS}


def change(n: int, table: Table = ORDERS, headers=None) -> _Change:
    return _Change(
        events.OP_CREATE, table, {"id": n}, None, {"id": n, "note": f"n{n}"}, 1000 + n, headers
    )


def replayed(spool: _Spool, xid: int) -> list[int]:
    return [c.key["id"] for c in spool.replay(xid, TABLES)]  # type: ignore[index]


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def spool(spool_dir: Path) -> _Spool:
    return _Spool(spool_dir)


def test_two_blocks_of_one_transaction_and_an_interleaved_one(spool, spool_dir):
    spool.start(100, first_segment=True)
    spool.write(100, change(1))
    spool.write(100, change(2))
    spool.stop()
    spool.start(200, first_segment=True)
    spool.write(200, change(10, ITEMS))
    spool.stop()
    spool.start(100, first_segment=False)
    spool.write(100, change(3))
    spool.stop()
    spool.start(200, first_segment=False)
    spool.write(200, change(11, ITEMS))
    spool.stop()

    assert sorted(p.name for p in spool_dir.iterdir()) == ["100.jsonl", "200.jsonl"]
    out = list(spool.replay(100, TABLES))
    assert [c.key for c in out] == [{"id": 1}, {"id": 2}, {"id": 3}]
    assert [c.lsn for c in out] == [1001, 1002, 1003]
    assert all(c.table is ORDERS and c.op == "c" and c.before is None for c in out)
    assert out[2].after == {"id": 3, "note": "n3"}
    assert not (spool_dir / "100.jsonl").exists()  # replayed, then removed

    assert replayed(spool, 200) == [10, 11]
    assert [c.table for c in spool.replay(200, TABLES)] == []  # already consumed
    assert list(spool_dir.iterdir()) == []


def test_replay_of_an_unknown_transaction_is_empty(spool):
    assert replayed(spool, 12345) == []


def test_headers_survive_the_spool(spool):
    headers = [
        (events.HEADER_NEW_KEY, b'{"id":2}'),
        ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ]
    spool.start(1, True)
    spool.write(1, change(1, headers=headers))
    spool.write(1, change(2))
    spool.stop()
    first, second = spool.replay(1, TABLES)
    assert first.headers == headers
    assert second.headers is None


def test_aborted_subtransaction_is_skipped(spool):
    spool.start(100, True)
    spool.write(100, change(1))
    spool.write(101, change(2))  # in subtransaction 101
    spool.write(102, change(3))  # in subtransaction 102
    spool.stop()
    spool.abort(100, 101)  # ROLLBACK TO SAVEPOINT: only 101 goes
    spool.start(100, False)
    spool.write(100, change(4))
    spool.write(101, change(5))
    spool.stop()
    assert replayed(spool, 100) == [1, 3, 4]


def test_subtransaction_abort_concerns_only_its_transaction(spool):
    for xid in (100, 200):
        spool.start(xid, True)
        spool.write(xid + 1, change(xid))
        spool.stop()
    spool.abort(100, 101)
    assert replayed(spool, 100) == []
    assert replayed(spool, 200) == [200]


def test_aborted_transaction_leaves_no_file(spool, spool_dir):
    spool.start(100, True)
    spool.write(100, change(1))
    spool.stop()
    spool.start(200, True)
    spool.write(200, change(2, ITEMS))
    spool.stop()
    assert (spool_dir / "100.jsonl").exists()
    spool.abort(100, 100)
    assert not (spool_dir / "100.jsonl").exists()
    assert replayed(spool, 100) == []
    assert replayed(spool, 200) == [2]  # the other one is untouched


def test_abort_of_an_unknown_transaction_is_harmless(spool, spool_dir):
    spool.abort(7, 7)
    spool.abort(7, 8)
    assert list(spool_dir.iterdir()) == []


def test_first_segment_truncates_a_leftover_file(spool, spool_dir):
    (spool_dir / "100.jsonl").write_bytes(b"stale garbage, not JSON\n")
    spool.start(100, first_segment=True)
    spool.write(100, change(1))
    spool.stop()
    assert replayed(spool, 100) == [1]


def test_later_segment_appends_to_an_existing_file(spool, spool_dir):
    spool.start(100, True)
    spool.write(100, change(1))
    spool.stop()
    size = (spool_dir / "100.jsonl").stat().st_size
    spool.start(100, first_segment=False)
    spool.write(100, change(2))
    spool.stop()
    assert (spool_dir / "100.jsonl").stat().st_size > size
    assert replayed(spool, 100) == [1, 2]


def test_a_new_spool_starts_from_an_empty_directory(spool_dir):
    old = _Spool(spool_dir)
    old.start(100, True)
    old.write(100, change(1))
    old.stop()
    (spool_dir / "999.jsonl").write_bytes(b"left by a crash\n")
    new = _Spool(spool_dir)  # a restarted stream: PostgreSQL re-sends from the first segment
    assert list(spool_dir.iterdir()) == []
    new.start(100, first_segment=True)
    new.write(100, change(2))
    new.stop()
    assert replayed(new, 100) == [2]


def test_clear_removes_everything(spool, spool_dir):
    spool.start(100, True)
    spool.write(100, change(1))
    spool.stop()
    spool.abort(100, 101)
    spool.clear()
    assert spool_dir.is_dir()
    assert list(spool_dir.iterdir()) == []
    assert replayed(spool, 100) == []


def test_changes_go_to_disk_not_memory(spool, spool_dir):
    path = spool_dir / "100.jsonl"
    spool.start(100, True)
    spool.write(100, change(0))
    spool.stop()
    assert path.exists()
    sizes = [path.stat().st_size]
    assert sizes[0] > 0
    for block in range(3):
        spool.start(100, False)
        for i in range(200):
            spool.write(100, change(block * 1000 + i))
        spool.stop()  # a Stream Stop flushes the block
        sizes.append(path.stat().st_size)
    assert sizes == sorted(sizes)
    assert len(set(sizes)) == len(sizes)  # grew with every block
    assert sizes[-1] > 600 * len(b'{"id":1}')
    assert len(path.read_bytes().splitlines()) == 601
    assert len(replayed(spool, 100)) == 601


def test_write_outside_a_stream_block_is_an_error(spool):
    with pytest.raises(RuntimeError):
        spool.write(1, change(1))
    spool.start(1, True)
    spool.stop()
    with pytest.raises(RuntimeError):
        spool.write(1, change(1))


# --- Table.row -----------------------------------------------------------------------------


def test_row_converts_values():
    table = Table(
        "t",
        "public",
        "t",
        ("id", "flag", "ts", "tags"),
        (converter(23, -1), converter(16, -1), converter(1114, 3), converter(1007, -1)),
        (0,),
    )
    row = table.row(["7", "t", "1970-01-01 00:00:01", "{1,NULL}"])
    assert row == {"id": 7, "flag": True, "ts": 1000, "tags": [1, None]}
    assert table.key(row) == {"id": 7}


def test_row_null_and_unchanged_toast():
    row = ORDERS.row(["1", None])
    assert row == {"id": 1, "note": None}
    row = ORDERS.row(["1", UNCHANGED_TOAST])
    assert row == {"id": 1, "note": events.UNAVAILABLE_VALUE}


def test_row_unchanged_toast_from_the_full_old_tuple():
    assert ORDERS.row(["1", UNCHANGED_TOAST], ["1", "big"]) == {"id": 1, "note": "big"}
    # The old tuple may not have it either.
    assert ORDERS.row(["1", UNCHANGED_TOAST], ["1", UNCHANGED_TOAST]) == {
        "id": 1,
        "note": events.UNAVAILABLE_VALUE,
    }


def test_key_of_a_table_without_primary_key_is_none():
    table = Table("t", "public", "t", ("a",), (str,), ())
    assert table.key(table.row(["x"])) is None
