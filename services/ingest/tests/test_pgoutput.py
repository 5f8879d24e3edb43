"""The pgoutput decoder, fed binary messages built by hand.

Every message is laid out as in the PostgreSQL 15 documentation, "Logical Replication Message
Formats" (protocol versions 1 and 2): big-endian integers, NUL-terminated strings, and an
Int32 transaction id after the type byte of I/U/D/T/R/Y/M only inside a Stream Start ... Stream
Stop block.
"""

from __future__ import annotations

import random
import struct
from datetime import UTC, datetime
from typing import Any

import pytest

from freshet.ingest.sources.postgres.pgoutput import (
    PG_EPOCH_US,
    UNCHANGED_TOAST,
    Column,
    Decoder,
    ProtocolError,
    Relation,
)

try:
    from hypothesis import given
    from hypothesis import strategies as st
except ModuleNotFoundError:  # hypothesis is not among the Makefile's test packages yet
    given = None

# --- message builders ----------------------------------------------------------------------


def _xid(xid: int | None) -> bytes:
    return b"" if xid is None else struct.pack(">I", xid)


def _cstr(text: str) -> bytes:
    return text.encode() + b"\0"


def tuple_data(values: list[Any]) -> bytes:
    out = struct.pack(">h", len(values))
    for value in values:
        if value is None:
            out += b"n"
        elif value is UNCHANGED_TOAST:
            out += b"u"
        else:
            raw = value.encode()
            out += b"t" + struct.pack(">i", len(raw)) + raw
    return out


def begin(final_lsn: int, ts: int, xid: int) -> bytes:
    return b"B" + struct.pack(">QqI", final_lsn, ts, xid)


def commit(commit_lsn: int, end_lsn: int, ts: int, flags: int = 0) -> bytes:
    return b"C" + struct.pack(">BQQq", flags, commit_lsn, end_lsn, ts)


def relation(
    relid: int,
    namespace: str,
    name: str,
    identity: bytes,
    columns: list[tuple[int, str, int, int]],
    xid: int | None = None,
) -> bytes:
    out = b"R" + _xid(xid) + struct.pack(">I", relid) + _cstr(namespace) + _cstr(name)
    out += identity + struct.pack(">h", len(columns))
    for flags, col, oid, typmod in columns:
        out += struct.pack(">B", flags) + _cstr(col) + struct.pack(">Ii", oid, typmod)
    return out


def insert(relid: int, new: list[Any], xid: int | None = None) -> bytes:
    return b"I" + _xid(xid) + struct.pack(">I", relid) + b"N" + tuple_data(new)


def update(
    relid: int,
    new: list[Any],
    old: list[Any] | None = None,
    marker: bytes = b"",
    xid: int | None = None,
) -> bytes:
    out = b"U" + _xid(xid) + struct.pack(">I", relid)
    if old is not None:
        out += marker + tuple_data(old)
    return out + b"N" + tuple_data(new)


def delete(relid: int, old: list[Any], marker: bytes, xid: int | None = None) -> bytes:
    return b"D" + _xid(xid) + struct.pack(">I", relid) + marker + tuple_data(old)


def truncate(relids: list[int], options: int, xid: int | None = None) -> bytes:
    out = b"T" + _xid(xid) + struct.pack(">iB", len(relids), options)
    return out + b"".join(struct.pack(">I", r) for r in relids)


def origin(lsn: int, name: str) -> bytes:
    return b"O" + struct.pack(">Q", lsn) + _cstr(name)


def type_msg(oid: int, namespace: str, name: str, xid: int | None = None) -> bytes:
    return b"Y" + _xid(xid) + struct.pack(">I", oid) + _cstr(namespace) + _cstr(name)


def logical_message(prefix: str, content: bytes, xid: int | None = None) -> bytes:
    head = b"M" + _xid(xid) + struct.pack(">BQ", 1, 0x1234) + _cstr(prefix)
    return head + struct.pack(">i", len(content)) + content


def stream_start(xid: int, first_segment: bool) -> bytes:
    return b"S" + struct.pack(">IB", xid, 1 if first_segment else 0)


def stream_stop() -> bytes:
    return b"E"


def stream_commit(xid: int, commit_lsn: int, end_lsn: int, ts: int) -> bytes:
    return b"c" + struct.pack(">IBQQq", xid, 0, commit_lsn, end_lsn, ts)


def stream_abort(xid: int, subxid: int) -> bytes:
    return b"A" + struct.pack(">II", xid, subxid)


# --- a handler that records every call -----------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def begin(self, final_lsn: int, commit_ts_us: int, xid: int) -> None:
        self.calls.append(("begin", final_lsn, commit_ts_us, xid))

    def commit(self, commit_lsn: int, end_lsn: int, commit_ts_us: int) -> None:
        self.calls.append(("commit", commit_lsn, end_lsn, commit_ts_us))

    def relation(self, rel: Relation) -> None:
        self.calls.append(("relation", rel))

    def insert(self, xid, relid, new, lsn) -> None:
        self.calls.append(("insert", xid, relid, new, lsn))

    def update(self, xid, relid, old, old_is_key, new, lsn) -> None:
        self.calls.append(("update", xid, relid, old, old_is_key, new, lsn))

    def delete(self, xid, relid, old, old_is_key, lsn) -> None:
        self.calls.append(("delete", xid, relid, old, old_is_key, lsn))

    def truncate(self, xid, relids, cascade, restart_identity, lsn) -> None:
        self.calls.append(("truncate", xid, relids, cascade, restart_identity, lsn))

    def stream_start(self, xid: int, first_segment: bool) -> None:
        self.calls.append(("stream_start", xid, first_segment))

    def stream_stop(self) -> None:
        self.calls.append(("stream_stop",))

    def stream_commit(self, xid, commit_lsn, end_lsn, commit_ts_us) -> None:
        self.calls.append(("stream_commit", xid, commit_lsn, end_lsn, commit_ts_us))

    def stream_abort(self, xid: int, subxid: int) -> None:
        self.calls.append(("stream_abort", xid, subxid))


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def dec(rec: Recorder) -> Decoder:
    return Decoder(rec)


def unix_us(*args: int) -> int:
    dt = datetime(*args, tzinfo=UTC)  # type: ignore[misc]
    return int(dt.timestamp()) * 1_000_000 + dt.microsecond


# Values that go wrong if a field is read signed, at the wrong offset or with the wrong width.
BIG_LSN = 0xFFFF_FFFF_0000_0010
BIG_XID = 0xFFFF_FFF0
BIG_RELID = 4_000_000_000

# --- transactions and timestamps -----------------------------------------------------------


def test_pg_epoch_is_2000_01_01():
    assert unix_us(2000, 1, 1) == PG_EPOCH_US


def test_begin(dec, rec):
    ts_unix = unix_us(2024, 1, 2, 3, 4, 5, 123456)
    dec.decode(begin(BIG_LSN, ts_unix - PG_EPOCH_US, BIG_XID), 0)
    assert rec.calls == [("begin", BIG_LSN, ts_unix, BIG_XID)]
    assert rec.calls[0][2] == 1704164645123456


def test_timestamp_before_2000_is_negative_in_postgres(dec, rec):
    dec.decode(begin(1, -1_000_000, 7), 0)
    assert rec.calls == [("begin", 1, unix_us(1999, 12, 31, 23, 59, 59), 7)]


def test_commit_skips_the_flags_byte(dec, rec):
    ts_unix = unix_us(2024, 6, 1, 12)
    dec.decode(commit(0x0100_0000_0000_0028, BIG_LSN, ts_unix - PG_EPOCH_US, flags=0xFF), 0)
    assert rec.calls == [("commit", 0x0100_0000_0000_0028, BIG_LSN, ts_unix)]


def test_whole_transaction(dec, rec):
    dec.decode(begin(0x30, 0, 42), 0x10)
    dec.decode(insert(16384, ["1", "a"]), 0x20)
    dec.decode(commit(0x30, 0x38, 0), 0x38)
    assert rec.calls == [
        ("begin", 0x30, PG_EPOCH_US, 42),
        ("insert", None, 16384, ["1", "a"], 0x20),
        ("commit", 0x30, 0x38, PG_EPOCH_US),
    ]


# --- relations -----------------------------------------------------------------------------


def test_relation(dec, rec):
    msg = relation(
        BIG_RELID,
        "public",
        "orders",
        b"d",
        [(1, "id", 23, -1), (0, "price", 1700, (12 << 16 | 3) + 4), (0, "ts", 1114, 3)],
    )
    dec.decode(msg, 0)
    assert rec.calls == [
        (
            "relation",
            Relation(
                BIG_RELID,
                "public",
                "orders",
                "d",
                (
                    Column("id", 23, -1, True),
                    Column("price", 1700, (12 << 16 | 3) + 4, False),
                    Column("ts", 1114, 3, False),
                ),
            ),
        )
    ]


def test_relation_in_pg_catalog_has_an_empty_namespace(dec, rec):
    dec.decode(relation(1, "", "pg_thing", b"n", []), 0)
    (_, rel) = rec.calls[0]
    assert rel.namespace == "pg_catalog"
    assert rel.replica_identity == "n"
    assert rel.columns == ()


@pytest.mark.parametrize("identity", [b"d", b"n", b"f", b"i"])
def test_relation_replica_identity(dec, rec, identity):
    dec.decode(relation(5, "s", "t", identity, [(1, "k", 25, -1)]), 0)
    assert rec.calls[0][1].replica_identity == identity.decode()


def test_relation_with_unicode_names(dec, rec):
    dec.decode(relation(5, "schéma", "tablé", b"f", [(1, "clé", 25, -1)]), 0)
    rel = rec.calls[0][1]
    assert (rel.namespace, rel.name, rel.columns[0].name) == ("schéma", "tablé", "clé")


# --- row changes ---------------------------------------------------------------------------


def test_insert_with_every_tuple_kind(dec, rec):
    dec.decode(insert(BIG_RELID, ["1", None, UNCHANGED_TOAST, "", "héllo ✓"]), 0x99)
    assert rec.calls == [
        ("insert", None, BIG_RELID, ["1", None, UNCHANGED_TOAST, "", "héllo ✓"], 0x99)
    ]
    assert rec.calls[0][3][2] is UNCHANGED_TOAST


def test_insert_without_new_tuple_is_an_error(dec):
    bad = b"I" + struct.pack(">I", 1) + b"K" + tuple_data(["1"])
    with pytest.raises(ProtocolError):
        dec.decode(bad, 0)


def test_update_without_old_tuple(dec, rec):
    dec.decode(update(7, ["1", "new", UNCHANGED_TOAST]), 0x50)
    assert rec.calls == [("update", None, 7, None, False, ["1", "new", UNCHANGED_TOAST], 0x50)]


def test_update_with_key_old_tuple(dec, rec):
    # REPLICA IDENTITY DEFAULT and the key changed: 'K' with only key columns, others null.
    dec.decode(update(7, ["2", "x"], old=["1", None], marker=b"K"), 0x51)
    assert rec.calls == [("update", None, 7, ["1", None], True, ["2", "x"], 0x51)]


def test_update_with_full_old_tuple(dec, rec):
    dec.decode(update(7, ["1", "b", UNCHANGED_TOAST], old=["1", "a", "big"], marker=b"O"), 0x52)
    assert rec.calls == [
        ("update", None, 7, ["1", "a", "big"], False, ["1", "b", UNCHANGED_TOAST], 0x52)
    ]


def test_update_without_new_tuple_is_an_error(dec):
    bad = b"U" + struct.pack(">I", 7) + b"O" + tuple_data(["1"]) + b"X" + tuple_data(["1"])
    with pytest.raises(ProtocolError):
        dec.decode(bad, 0)


@pytest.mark.parametrize(("marker", "is_key"), [(b"K", True), (b"O", False)])
def test_delete(dec, rec, marker, is_key):
    dec.decode(delete(BIG_RELID, ["1", None, "x"], marker), 0x60)
    assert rec.calls == [("delete", None, BIG_RELID, ["1", None, "x"], is_key, 0x60)]


@pytest.mark.parametrize(
    ("options", "cascade", "restart"),
    [(0, False, False), (1, True, False), (2, False, True), (3, True, True)],
)
def test_truncate_options(dec, rec, options, cascade, restart):
    dec.decode(truncate([16384, BIG_RELID, 3], options), 0x70)
    assert rec.calls == [("truncate", None, [16384, BIG_RELID, 3], cascade, restart, 0x70)]


def test_truncate_of_one_relation(dec, rec):
    dec.decode(truncate([9], 0), 1)
    assert rec.calls == [("truncate", None, [9], False, False, 1)]


# --- ignored messages ----------------------------------------------------------------------


def test_origin_type_and_message_are_ignored(dec, rec):
    dec.decode(origin(0x1234, "node_a"), 0)
    dec.decode(type_msg(16400, "public", "mood"), 0)
    dec.decode(logical_message("pfx", b"\x00\x01payload"), 0)
    assert rec.calls == []


def test_ignored_messages_inside_a_stream_do_not_disturb_it(dec, rec):
    dec.decode(stream_start(900, True), 0)
    dec.decode(type_msg(16400, "public", "mood", xid=901), 0)
    dec.decode(logical_message("pfx", b"x", xid=901), 0)
    dec.decode(insert(5, ["1"], xid=901), 0x10)
    dec.decode(stream_stop(), 0)
    assert rec.calls == [
        ("stream_start", 900, True),
        ("insert", 901, 5, ["1"], 0x10),
        ("stream_stop",),
    ]


# --- streamed transactions (protocol v2) ---------------------------------------------------


def test_stream_block_carries_xids(dec, rec):
    dec.decode(stream_start(BIG_XID, True), 0)
    dec.decode(relation(5, "public", "t", b"f", [(1, "id", 23, -1)], xid=BIG_XID), 0)
    dec.decode(insert(5, ["1"], xid=BIG_XID), 0x10)
    dec.decode(update(5, ["2"], old=["1"], marker=b"O", xid=BIG_XID + 1), 0x11)
    dec.decode(delete(5, ["2"], b"K", xid=BIG_XID + 1), 0x12)
    dec.decode(truncate([5], 1, xid=BIG_XID), 0x13)
    dec.decode(stream_stop(), 0)
    assert rec.calls == [
        ("stream_start", BIG_XID, True),
        ("relation", Relation(5, "public", "t", "f", (Column("id", 23, -1, True),))),
        ("insert", BIG_XID, 5, ["1"], 0x10),
        ("update", BIG_XID + 1, 5, ["1"], False, ["2"], 0x11),
        ("delete", BIG_XID + 1, 5, ["2"], True, 0x12),
        ("truncate", BIG_XID, [5], True, False, 0x13),
        ("stream_stop",),
    ]


def test_no_xid_after_stream_stop(dec, rec):
    dec.decode(stream_start(10, False), 0)
    dec.decode(stream_stop(), 0)
    dec.decode(begin(0x80, 0, 11), 0)
    dec.decode(insert(5, ["1"]), 0x81)
    dec.decode(commit(0x80, 0x88, 0), 0)
    assert rec.calls[0] == ("stream_start", 10, False)
    assert ("insert", None, 5, ["1"], 0x81) in rec.calls


def test_stream_commit_and_abort(dec, rec):
    ts_unix = unix_us(2023, 3, 4, 5, 6, 7, 890000)
    dec.decode(stream_start(300, True), 0)
    dec.decode(insert(5, ["1"], xid=300), 1)
    dec.decode(stream_stop(), 0)
    dec.decode(stream_abort(300, 301), 0)
    dec.decode(stream_abort(400, 400), 0)
    dec.decode(stream_commit(300, BIG_LSN, BIG_LSN + 8, ts_unix - PG_EPOCH_US), 0)
    assert rec.calls[-3:] == [
        ("stream_abort", 300, 301),
        ("stream_abort", 400, 400),
        ("stream_commit", 300, BIG_LSN, BIG_LSN + 8, ts_unix),
    ]


def test_interleaved_stream_blocks(dec, rec):
    dec.decode(stream_start(1, True), 0)
    dec.decode(insert(5, ["a"], xid=1), 1)
    dec.decode(stream_stop(), 0)
    dec.decode(stream_start(2, True), 0)
    dec.decode(insert(5, ["b"], xid=2), 2)
    dec.decode(stream_stop(), 0)
    dec.decode(stream_start(1, False), 0)
    dec.decode(insert(5, ["c"], xid=1), 3)
    dec.decode(stream_stop(), 0)
    inserts = [c for c in rec.calls if c[0] == "insert"]
    assert inserts == [
        ("insert", 1, 5, ["a"], 1),
        ("insert", 2, 5, ["b"], 2),
        ("insert", 1, 5, ["c"], 3),
    ]
    assert ("stream_start", 1, False) in rec.calls


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [b"Z", b"x", b"\x00", b"b"])
def test_unknown_message_type(dec, kind):
    with pytest.raises(ProtocolError, match="unknown pgoutput message type"):
        dec.decode(kind + b"\x00" * 32, 0)


@pytest.mark.parametrize("kind", [b"x", b"N", b"\x00"])
def test_unknown_tuple_kind(dec, rec, kind):
    bad = b"I" + struct.pack(">I", 5) + b"N" + struct.pack(">h", 2) + b"n" + kind
    with pytest.raises(ProtocolError, match="unknown tuple column kind"):
        dec.decode(bad, 0)
    assert rec.calls == []


def test_protocol_error_is_a_value_error():
    assert issubclass(ProtocolError, ValueError)


# --- tuple data round trip -----------------------------------------------------------------


def _round_trip(values: list[Any]) -> None:
    rec = Recorder()
    Decoder(rec).decode(insert(1, values), 0)
    [(_, _, _, decoded, _)] = rec.calls
    assert decoded == values
    for got, sent in zip(decoded, values, strict=True):
        if sent is UNCHANGED_TOAST or sent is None:
            assert got is sent


def test_tuple_round_trip_seeded():
    rng = random.Random(20240102)
    alphabet = ["a", "Z", "0", " ", "\n", "'", '"', "\\", "é", "日", "🦆", "\u0000"]
    for _ in range(500):
        values: list[Any] = []
        for _ in range(rng.randrange(0, 12)):
            pick = rng.random()
            if pick < 0.2:
                values.append(None)
            elif pick < 0.35:
                values.append(UNCHANGED_TOAST)
            else:
                values.append("".join(rng.choices(alphabet, k=rng.randrange(0, 20))))
        _round_trip(values)


if given is not None:

    @given(
        st.lists(
            st.one_of(st.none(), st.just(UNCHANGED_TOAST), st.text()),
            max_size=40,
        )
    )
    def test_tuple_round_trip_property(values):
        _round_trip(values)

else:

    @pytest.mark.skip(reason="hypothesis is not installed")
    def test_tuple_round_trip_property():
        pass
