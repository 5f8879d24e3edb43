"""Decoder of PostgreSQL's ``pgoutput`` logical replication protocol, versions 1 and 2.

:func:`decode` turns one CopyData payload into a call on a :class:`PgOutputHandler`. Version 2
adds streamed in-progress transactions (``streaming=on``): their changes arrive between
Stream Start and Stream Stop, carry their (sub)transaction id, and are committed or aborted by
Stream Commit / Stream Abort later. Column values are delivered as text (``binary`` is off).

Reference: PostgreSQL 15 documentation, "Logical Replication Message Formats".
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_U64 = struct.Struct(">Q")

PG_EPOCH_US = 946_684_800_000_000
"""Microseconds from 1970-01-01 to PostgreSQL's epoch, 2000-01-01."""


class _Unchanged:
    """An unchanged TOAST value: the update did not touch it and the source did not send it."""

    _instance: _Unchanged | None = None

    def __new__(cls) -> _Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"


UNCHANGED_TOAST = _Unchanged()

Value = str | None | _Unchanged
Tuple = list[Value]


class ProtocolError(ValueError):
    """A message did not follow the pgoutput format."""


@dataclass(frozen=True)
class Column:
    name: str
    type_oid: int
    typmod: int
    is_key: bool


@dataclass(frozen=True)
class Relation:
    relid: int
    namespace: str
    name: str
    replica_identity: str  # 'd' default, 'n' nothing, 'f' full, 'i' index
    columns: tuple[Column, ...]


class PgOutputHandler(Protocol):
    """What a consumer of the stream implements. ``xid`` is set only inside streamed blocks."""

    def begin(self, final_lsn: int, commit_ts_us: int, xid: int) -> None: ...
    def commit(self, commit_lsn: int, end_lsn: int, commit_ts_us: int) -> None: ...
    def relation(self, rel: Relation) -> None: ...
    def insert(self, xid: int | None, relid: int, new: Tuple, lsn: int) -> None: ...
    def update(
        self, xid: int | None, relid: int, old: Tuple | None, old_is_key: bool, new: Tuple, lsn: int
    ) -> None: ...
    def delete(
        self, xid: int | None, relid: int, old: Tuple, old_is_key: bool, lsn: int
    ) -> None: ...
    def truncate(
        self, xid: int | None, relids: list[int], cascade: bool, restart_identity: bool, lsn: int
    ) -> None: ...
    def stream_start(self, xid: int, first_segment: bool) -> None: ...
    def stream_stop(self) -> None: ...
    def stream_commit(self, xid: int, commit_lsn: int, end_lsn: int, commit_ts_us: int) -> None: ...
    def stream_abort(self, xid: int, subxid: int) -> None: ...


TextFields = tuple[tuple[str, Callable[[str], Any] | None], ...]
"""Per column, its name and the converter of its text (``None``: the value is the text)."""

TextChange = Callable[[str, int, bytes, int, int], bool]
"""``text_change(op, relid, buf, pos, lsn)``: see :class:`Decoder`."""


class Decoder:
    """Stateful decoder of one replication stream (it tracks whether a stream block is open).

    A handler may also offer ``text_change(op, relid, buf, pos, lsn) -> bool``: the decoder
    then hands it, undecoded, the new tuple (at ``buf[pos:]``) of an Insert (op ``c``) or of an
    Update without an old tuple (op ``u``) outside stream blocks, the bulk of most streams. The
    handler decodes it with :func:`text_row` straight into its row and returns True, or returns
    False and the decoder calls ``insert``/``update`` as usual.
    """

    def __init__(self, handler: PgOutputHandler) -> None:
        self._handler = handler
        self._in_stream = False
        self._text_change: TextChange | None = getattr(handler, "text_change", None)

    def decode(self, buf: bytes, lsn: int) -> None:
        """Decode one message; ``lsn`` is the WAL position the server gave it."""
        kind = buf[0]
        h = self._handler
        if kind == 0x49 and not self._in_stream:  # I: Insert, the most common message
            if buf[5] != 0x4E:
                raise ProtocolError("insert without a new tuple")
            relid = _U32.unpack_from(buf, 1)[0]
            if self._text_change is None or not self._text_change("c", relid, buf, 6, lsn):
                h.insert(None, relid, _tuple(buf, 6)[0], lsn)
            return
        if kind == 0x55 and not self._in_stream and buf[5] == 0x4E:  # U: Update, new tuple only
            relid = _U32.unpack_from(buf, 1)[0]
            if self._text_change is None or not self._text_change("u", relid, buf, 6, lsn):
                h.update(None, relid, None, False, _tuple(buf, 6)[0], lsn)
            return
        pos = 1
        if kind == 0x42:  # B: Begin
            final_lsn = _U64.unpack_from(buf, 1)[0]
            ts = _I64.unpack_from(buf, 9)[0]
            h.begin(final_lsn, ts + PG_EPOCH_US, _U32.unpack_from(buf, 17)[0])
            return
        if kind == 0x43:  # C: Commit
            commit_lsn = _U64.unpack_from(buf, 2)[0]
            end_lsn = _U64.unpack_from(buf, 10)[0]
            ts = _I64.unpack_from(buf, 18)[0]
            h.commit(commit_lsn, end_lsn, ts + PG_EPOCH_US)
            return
        xid: int | None = None
        if self._in_stream and kind in b"IUDTRYM":
            xid = _U32.unpack_from(buf, 1)[0]
            pos = 5
        if kind == 0x49:  # I: Insert
            relid = _U32.unpack_from(buf, pos)[0]
            if buf[pos + 4] != 0x4E:
                raise ProtocolError("insert without a new tuple")
            new, _ = _tuple(buf, pos + 5)
            h.insert(xid, relid, new, lsn)
        elif kind == 0x55:  # U: Update
            relid = _U32.unpack_from(buf, pos)[0]
            pos += 4
            old: Tuple | None = None
            old_is_key = False
            marker = buf[pos]
            if marker in (0x4B, 0x4F):  # K (key) or O (old, replica identity full)
                old_is_key = marker == 0x4B
                old, pos = _tuple(buf, pos + 1)
                marker = buf[pos]
            if marker != 0x4E:
                raise ProtocolError("update without a new tuple")
            new, _ = _tuple(buf, pos + 1)
            h.update(xid, relid, old, old_is_key, new, lsn)
        elif kind == 0x44:  # D: Delete
            relid = _U32.unpack_from(buf, pos)[0]
            marker = buf[pos + 4]
            old, _ = _tuple(buf, pos + 5)
            h.delete(xid, relid, old, marker == 0x4B, lsn)
        elif kind == 0x52:  # R: Relation
            h.relation(_relation(buf, pos))
        elif kind == 0x54:  # T: Truncate
            count = _I32.unpack_from(buf, pos)[0]
            options = buf[pos + 4]
            relids = [_U32.unpack_from(buf, pos + 5 + 4 * i)[0] for i in range(count)]
            h.truncate(xid, relids, bool(options & 1), bool(options & 2), lsn)
        elif kind == 0x53:  # S: Stream Start
            self._in_stream = True
            h.stream_start(_U32.unpack_from(buf, 1)[0], buf[5] == 1)
        elif kind == 0x45:  # E: Stream Stop
            self._in_stream = False
            h.stream_stop()
        elif kind == 0x63:  # c: Stream Commit
            sxid = _U32.unpack_from(buf, 1)[0]
            commit_lsn = _U64.unpack_from(buf, 6)[0]
            end_lsn = _U64.unpack_from(buf, 14)[0]
            ts = _I64.unpack_from(buf, 22)[0]
            h.stream_commit(sxid, commit_lsn, end_lsn, ts + PG_EPOCH_US)
        elif kind == 0x41:  # A: Stream Abort
            h.stream_abort(_U32.unpack_from(buf, 1)[0], _U32.unpack_from(buf, 5)[0])
        elif kind in (0x4F, 0x59, 0x4D):  # Origin, Type, Message: nothing to emit
            return
        else:
            raise ProtocolError(f"unknown pgoutput message type {chr(kind)!r}")


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(0, pos)
    return buf[pos:end].decode(), end + 1


def _relation(buf: bytes, pos: int) -> Relation:
    relid = _U32.unpack_from(buf, pos)[0]
    namespace, pos = _cstring(buf, pos + 4)
    name, pos = _cstring(buf, pos)
    identity = chr(buf[pos])
    ncols = _I16.unpack_from(buf, pos + 1)[0]
    pos += 3
    columns = []
    for _ in range(ncols):
        flags = buf[pos]
        col_name, pos = _cstring(buf, pos + 1)
        type_oid = _U32.unpack_from(buf, pos)[0]
        typmod = _I32.unpack_from(buf, pos + 4)[0]
        pos += 8
        columns.append(Column(col_name, type_oid, typmod, bool(flags & 1)))
    return Relation(relid, namespace or "pg_catalog", name, identity, tuple(columns))


def _tuple(buf: bytes, pos: int) -> tuple[Tuple, int]:
    ncols = _I16.unpack_from(buf, pos)[0]
    pos += 2
    values: Tuple = []
    append = values.append
    for _ in range(ncols):
        kind = buf[pos]
        pos += 1
        if kind == 0x74 or kind == 0x62:  # t: text (b: binary, not requested)
            length = _I32.unpack_from(buf, pos)[0]
            pos += 4
            append(buf[pos : pos + length].decode())
            pos += length
        elif kind == 0x6E:  # n: null
            append(None)
        elif kind == 0x75:  # u: unchanged toast
            append(UNCHANGED_TOAST)
        else:
            raise ProtocolError(f"unknown tuple column kind {chr(kind)!r}")
    return values, pos


def text_row(buf: bytes, pos: int, fields: TextFields) -> dict[str, Any] | None:
    """Decode the TupleData at ``pos`` straight into ``{column: value}`` if every value is text.

    ``None`` when the tuple has another number of columns than ``fields`` or holds a null or an
    unchanged TOAST value: the caller then takes the general path (:func:`_tuple`).
    """
    if _I16.unpack_from(buf, pos)[0] != len(fields):
        return None
    pos += 2
    out: dict[str, Any] = {}
    unpack = _I32.unpack_from
    for column, convert in fields:
        if buf[pos] != 0x74:  # t: text
            return None
        end = pos + 5 + unpack(buf, pos + 1)[0]
        text = buf[pos + 5 : end].decode()
        out[column] = text if convert is None else convert(text)
        pos = end
    return out
