"""Turns decoded pgoutput messages into Debezium change events on Kafka.

Ordinary transactions arrive whole after their commit and are produced as they are decoded.
Large transactions that PostgreSQL streams while in progress (pgoutput v2, ``streaming=on``)
are spooled to a file per transaction, never held in memory, and produced when Stream Commit
arrives (or discarded on Stream Abort; an aborted subtransaction's changes are skipped).

Tracing: one ``ingest.transactions`` span covers the transactions of a window of about
:data:`SPAN_WINDOW_S` (the stream ends it at a point where it has drained what the server sent)
or of :data:`SPAN_MAX_TRANSACTIONS`, whichever comes first. Every event carries its span's W3C
context in its headers. A span per transaction cost about 10 us of CPU, a third of what
decoding and producing a single-row transaction costs.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from opentelemetry import trace

from freshet.common import events, topics
from freshet.common.codec import dumps, loads
from freshet.common.telemetry import Headers, inject_headers
from freshet.ingest.sink import KafkaSink
from freshet.ingest.sources.postgres.client import TableMeta
from freshet.ingest.sources.postgres.envelope import EnvelopeEncoder
from freshet.ingest.sources.postgres.pgoutput import Relation, TextFields, Tuple, text_row
from freshet.ingest.sources.postgres.values import Converter, converter, is_text

_tracer = trace.get_tracer("freshet.ingest")

SPAN_WINDOW_S = 0.1
"""An ``ingest.transactions`` span is ended at the first point where the stream drained after
it is this old."""
SPAN_MAX_TRANSACTIONS = 1000
"""An ``ingest.transactions`` span ends after this many transactions even if the stream never
drains (a backlog)."""


@dataclass(frozen=True)
class Table:
    """How to turn one relation's tuples into event rows."""

    topic: str
    schema: str
    name: str
    columns: tuple[str, ...]
    converters: tuple[Converter, ...]
    key_positions: tuple[int, ...]
    # Derived: the converters with None where the text is the value; the key's column names.
    _convert: tuple[Converter | None, ...] = field(init=False, repr=False, compare=False)
    _key_columns: tuple[str, ...] = field(init=False, repr=False, compare=False)
    text_fields: TextFields = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        convert = tuple(None if is_text(c) else c for c in self.converters)
        object.__setattr__(self, "_convert", convert)
        object.__setattr__(self, "text_fields", tuple(zip(self.columns, convert, strict=True)))
        object.__setattr__(self, "_key_columns", tuple(self.columns[i] for i in self.key_positions))

    def row(self, values: Tuple, fallback: Tuple | None = None) -> dict[str, Any]:
        """Column name -> JSON value of one tuple.

        An unchanged TOAST value comes from ``fallback`` when it has it (REPLICA IDENTITY FULL),
        else it is Debezium's unavailable-value placeholder.
        """
        # The hot path of the whole stream: one loop, text values first.
        out: dict[str, Any] = {}
        for column, convert, value in zip(self.columns, self._convert, values, strict=False):
            if value.__class__ is str:
                out[column] = value if convert is None else convert(value)
            elif value is None:
                out[column] = None
            else:  # unchanged TOAST
                old = fallback[len(out)] if fallback is not None else None
                if isinstance(old, str):
                    out[column] = old if convert is None else convert(old)
                else:
                    out[column] = events.UNAVAILABLE_VALUE
        return out

    def key(self, row: dict[str, Any]) -> dict[str, Any] | None:
        columns = self._key_columns
        if len(columns) == 1:  # the usual primary key, without a comprehension
            return {columns[0]: row[columns[0]]}
        if not columns:
            return None
        return {column: row[column] for column in columns}


def table_from(source: str, rel: Relation | None, meta: TableMeta) -> Table:
    """A :class:`Table` for a relation (stream) or, without one, for catalog metadata (snapshot)."""
    if rel is not None:
        cols = [(c.name, c.type_oid, c.typmod) for c in rel.columns]
    else:
        cols = [(c.name, c.type_oid, c.typmod) for c in meta.columns]
    names = tuple(c[0] for c in cols)
    return Table(
        topic=topics.cdc_topic(source, meta.schema, meta.name),
        schema=meta.schema,
        name=meta.name,
        columns=names,
        converters=tuple(converter(oid, typmod) for _, oid, typmod in cols),
        key_positions=tuple(names.index(k) for k in meta.primary_key if k in names),
    )


@dataclass
class _Change:
    op: str
    table: Table
    key: dict[str, Any] | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    lsn: int
    headers: Headers | None = None


class ChangeWriter:
    """The pgoutput handler: builds change events and hands them to the :class:`KafkaSink`.

    ``lookup(relid)`` returns the catalog metadata of a relation (its primary key above all);
    ``ensure_topic(name)`` makes sure a topic exists before the first event goes to it;
    ``on_relation(rel, meta)`` sees every Relation message (the stream's column list).
    """

    def __init__(
        self,
        source: str,
        database: str,
        sink: KafkaSink,
        lookup: Callable[[int], TableMeta],
        ensure_topic: Callable[[str], None],
        spool_dir: Path,
        on_relation: Callable[[Relation, TableMeta], None] | None = None,
    ) -> None:
        self._source = source
        self._db = database
        self._sink = sink
        self._lookup = lookup
        self._ensure_topic = ensure_topic
        self._on_relation = on_relation
        self._tables: dict[int, Table] = {}
        self._spool = _Spool(spool_dir)
        self._encoder = EnvelopeEncoder(source, database)
        self._xid: int | None = None
        self._commit_lsn = 0
        self._ts_us = 0
        self._last_commit_lsn: int | None = None
        self._headers: Headers = []
        self._span: Any = None
        self._span_transactions = 0
        self._span_started = 0.0
        self.in_transaction = False
        self.last_commit_ts_us: int | None = None

    # --- transactions ------------------------------------------------------------------------

    def begin(self, final_lsn: int, commit_ts_us: int, xid: int) -> None:
        self._start_tx(xid, final_lsn, commit_ts_us)

    def _start_tx(self, xid: int, commit_lsn: int, ts_us: int) -> None:
        self._xid, self._commit_lsn, self._ts_us = xid, commit_lsn, ts_us
        self.in_transaction = True
        if self._span is None:
            self._start_span(xid, commit_lsn)
        self._span_transactions += 1
        self._encoder.transaction(ts_us, "false", xid, commit_lsn, self._last_commit_lsn)
        self._sink.begin()

    def commit(self, commit_lsn: int, end_lsn: int, commit_ts_us: int) -> None:
        self._end_tx(commit_lsn, end_lsn)

    def _end_tx(self, commit_lsn: int, end_lsn: int) -> None:
        self._sink.end(end_lsn)
        self._last_commit_lsn = commit_lsn
        self.last_commit_ts_us = self._ts_us
        self.in_transaction = False
        if self._span_transactions >= SPAN_MAX_TRANSACTIONS:
            self.end_span()

    # --- tracing -----------------------------------------------------------------------------

    def _start_span(self, xid: int, commit_lsn: int) -> None:
        span = self._span = _tracer.start_span("ingest.transactions")
        self._span_transactions = 0
        self._span_started = time.monotonic()
        if span.is_recording():  # most spans are not sampled: skip the work
            span.set_attributes(
                {
                    "freshet.source": self._source,
                    "db.postgresql.xid": xid,
                    "db.postgresql.commit_lsn": events.lsn_to_str(commit_lsn),
                }
            )
        self._headers = inject_headers(trace.set_span_in_context(span))

    def end_span(self, now: float | None = None) -> None:
        """End the span of the transactions written so far, unless inside a transaction.

        With ``now`` (``time.monotonic()``), only if the span is :data:`SPAN_WINDOW_S` old. The
        next transaction starts a new span; its events carry the new span's context.
        """
        span = self._span
        if span is None or self.in_transaction:
            return
        if now is not None and now - self._span_started < SPAN_WINDOW_S:
            return
        if span.is_recording():
            span.set_attributes(
                {
                    "freshet.transactions": self._span_transactions,
                    "db.postgresql.last_xid": self._xid or 0,
                    "db.postgresql.last_commit_lsn": events.lsn_to_str(self._last_commit_lsn or 0),
                }
            )
        span.end()
        self._span = None

    # --- relations ---------------------------------------------------------------------------

    def relation(self, rel: Relation) -> None:
        meta = self._lookup(rel.relid)
        table = table_from(self._source, rel, meta)
        self._ensure_topic(table.topic)
        self._tables[rel.relid] = table
        if self._on_relation is not None:
            self._on_relation(rel, meta)

    def _table(self, relid: int) -> Table:
        table = self._tables.get(relid)
        if table is None:  # pgoutput always sends Relation first; be safe after a reconnect
            meta = self._lookup(relid)
            table = table_from(self._source, None, meta)
            self._ensure_topic(table.topic)
            self._tables[relid] = table
        return table

    # --- row changes -------------------------------------------------------------------------

    def text_change(self, op: str, relid: int, buf: bytes, pos: int, lsn: int) -> bool:
        """The decoder's fast path for an insert, or an update without an old tuple.

        Outside stream blocks only (see :class:`Decoder`); False if the tuple needs the general
        path (a null or unchanged TOAST value) or the relation is not known yet.
        """
        table = self._tables.get(relid)
        if table is None:
            return False
        row = text_row(buf, pos, table.text_fields)
        if row is None:
            return False
        self._send(table, op, table.key(row), None, row, lsn, None)
        return True

    def insert(self, xid: int | None, relid: int, new: Tuple, lsn: int) -> None:
        table = self._tables.get(relid) or self._table(relid)
        after = table.row(new)
        if xid is None:
            self._send(table, events.OP_CREATE, table.key(after), None, after, lsn, None)
        else:
            self._spool.write(
                xid, _Change(events.OP_CREATE, table, table.key(after), None, after, lsn)
            )

    def update(
        self, xid: int | None, relid: int, old: Tuple | None, old_is_key: bool, new: Tuple, lsn: int
    ) -> None:
        table = self._tables.get(relid) or self._table(relid)
        full_old = None if old_is_key else old
        after = table.row(new, full_old)
        before = table.row(old, None) if old is not None else None
        new_key = table.key(after)
        old_key = table.key(before) if before is not None else None
        if old_key is not None and old_key != new_key:
            # A primary-key change: Debezium emits a delete of the old key and a create.
            self._route(
                xid,
                [
                    _Change(
                        events.OP_DELETE,
                        table,
                        old_key,
                        before,
                        None,
                        lsn,
                        [(events.HEADER_NEW_KEY, dumps(new_key))],
                    ),
                    _Change(
                        events.OP_CREATE,
                        table,
                        new_key,
                        None,
                        after,
                        lsn,
                        [(events.HEADER_OLD_KEY, dumps(old_key))],
                    ),
                ],
            )
            return
        before = None if old_is_key else before
        if xid is None:
            self._send(table, events.OP_UPDATE, new_key, before, after, lsn, None)
        else:
            self._spool.write(xid, _Change(events.OP_UPDATE, table, new_key, before, after, lsn))

    def delete(self, xid: int | None, relid: int, old: Tuple, old_is_key: bool, lsn: int) -> None:
        table = self._table(relid)
        before = table.row(old)
        self._route(xid, [_Change(events.OP_DELETE, table, table.key(before), before, None, lsn)])

    def truncate(
        self, xid: int | None, relids: list[int], cascade: bool, restart_identity: bool, lsn: int
    ) -> None:
        changes = [
            _Change(events.OP_TRUNCATE, self._table(r), None, None, None, lsn) for r in relids
        ]
        self._route(xid, changes)

    def _route(self, xid: int | None, changes: list[_Change]) -> None:
        if xid is None:
            for change in changes:
                self._emit(change)
        else:
            for change in changes:
                self._spool.write(xid, change)

    def _emit(self, c: _Change) -> None:
        self._send(c.table, c.op, c.key, c.before, c.after, c.lsn, c.headers)

    def _send(
        self,
        table: Table,
        op: str,
        key: dict[str, Any] | None,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        lsn: int,
        extra_headers: Headers | None,
    ) -> None:
        value = self._encoder.encode(
            table.schema, table.name, op, before, after, lsn, time.time_ns() // 1000
        )
        raw_key = dumps(key) if key is not None else None
        headers = self._headers + extra_headers if extra_headers else self._headers
        self._sink.send(table.topic, raw_key, value, headers)
        if op == events.OP_DELETE and raw_key is not None:
            self._sink.send(table.topic, raw_key, None, headers)  # tombstone, for compaction

    # --- streamed (large, in-progress) transactions ------------------------------------------

    def stream_start(self, xid: int, first_segment: bool) -> None:
        self._spool.start(xid, first_segment)

    def stream_stop(self) -> None:
        self._spool.stop()

    def stream_abort(self, xid: int, subxid: int) -> None:
        self._spool.abort(xid, subxid)

    def stream_commit(self, xid: int, commit_lsn: int, end_lsn: int, commit_ts_us: int) -> None:
        self._start_tx(xid, commit_lsn, commit_ts_us)
        for change in self._spool.replay(xid, self._tables_by_topic()):
            self._emit(change)
        self._end_tx(commit_lsn, end_lsn)

    def _tables_by_topic(self) -> dict[str, Table]:
        return {t.topic: t for t in self._tables.values()}

    def close(self) -> None:
        self.in_transaction = False
        self.end_span()
        self._spool.clear()


class _Spool:
    """One append-only file per streamed transaction; lines are JSON ``[subxid, change...]``."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._files: dict[int, IO[bytes]] = {}
        self._aborted: dict[int, set[int]] = {}
        self._current: int | None = None
        self.clear()

    def clear(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
        self._aborted.clear()
        shutil.rmtree(self._dir, ignore_errors=True)
        self._dir.mkdir(parents=True, exist_ok=True)

    def _path(self, xid: int) -> Path:
        return self._dir / f"{xid}.jsonl"

    def start(self, xid: int, first_segment: bool) -> None:
        self._current = xid
        if xid not in self._files:
            self._files[xid] = open(self._path(xid), "wb" if first_segment else "ab")  # noqa: SIM115
            self._aborted.setdefault(xid, set())

    def stop(self) -> None:
        f = self._files.get(self._current) if self._current is not None else None
        if f is not None:
            f.flush()
        self._current = None

    def write(self, subxid: int, c: _Change) -> None:
        if self._current is None:
            raise RuntimeError("streamed change outside a stream block")
        line = dumps(
            [
                subxid,
                c.op,
                c.table.topic,
                c.key,
                c.before,
                c.after,
                c.lsn,
                [[k, v.decode() if isinstance(v, bytes) else v] for k, v in c.headers or ()],
            ]
        )
        self._files[self._current].write(line + b"\n")

    def abort(self, xid: int, subxid: int) -> None:
        if subxid == xid:
            f = self._files.pop(xid, None)
            if f is not None:
                f.close()
            self._aborted.pop(xid, None)
            self._path(xid).unlink(missing_ok=True)
        else:
            self._aborted.setdefault(xid, set()).add(subxid)

    def replay(self, xid: int, tables: dict[str, Table]) -> Iterator[_Change]:
        f = self._files.pop(xid, None)
        if f is None:
            return
        f.close()
        aborted = self._aborted.pop(xid, set())
        path = self._path(xid)
        with open(path, "rb") as lines:
            for line in lines:
                subxid, op, topic, key, before, after, lsn, headers = loads(line)
                if subxid in aborted:
                    continue
                yield _Change(
                    op,
                    tables[topic],
                    key,
                    before,
                    after,
                    lsn,
                    [(k, v.encode()) for k, v in headers] or None,
                )
        path.unlink(missing_ok=True)
