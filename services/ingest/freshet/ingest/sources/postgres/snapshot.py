"""The consistent initial snapshot of a PostgreSQL source.

It reads every captured table inside the snapshot that ``CREATE_REPLICATION_SLOT ...
EXPORT_SNAPSHOT`` exported, so the snapshot and the stream that starts at the slot's consistent
point meet with no gap and no overlap. Tables are streamed with ``COPY ... TO STDOUT``;
progress is reported every chunk of rows. Events have ``op: "r"``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from opentelemetry import trace
from psycopg import sql
from pydantic import SecretStr

from freshet.common import events
from freshet.common.codec import dumps
from freshet.common.schemas import PostgresSourceSpec, SnapshotProgress
from freshet.common.telemetry import Headers, inject_headers
from freshet.ingest.sink import KafkaSink
from freshet.ingest.sources.postgres.changes import Table, table_from
from freshet.ingest.sources.postgres.client import TableMeta, conninfo
from freshet.ingest.sources.postgres.envelope import EnvelopeEncoder

_tracer = trace.get_tracer("freshet.ingest")


class SnapshotInterrupted(Exception):
    """The connector was asked to stop during the snapshot."""


def run_snapshot(
    spec: PostgresSourceSpec,
    password: SecretStr,
    snapshot_name: str,
    consistent_point: int,
    tables: list[TableMeta],
    sink: KafkaSink,
    progress: SnapshotProgress,
    chunk_rows: int,
    stop: threading.Event,
    ensure_topic: Callable[[str], None],
) -> int:
    """Emit every row of ``tables`` as of the exported snapshot; returns the row count."""
    progress.tables_total = len(tables)
    progress.rows_estimate = sum(t.estimated_rows for t in tables)
    ts_us = time.time_ns() // 1000
    total = 0
    with psycopg.connect(conninfo(spec, password)) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_name)))
        row = conn.execute("SELECT txid_snapshot_xmin(txid_current_snapshot())").fetchone()
        xid = int(row[0]) if row else None
        pending: tuple[Table, dict[str, Any]] | None = None
        encoder = EnvelopeEncoder(spec.name, spec.database)
        sink.begin()
        for index, meta in enumerate(tables):
            table = table_from(spec.name, None, meta)
            ensure_topic(table.topic)
            progress.current_table = f"{meta.schema}.{meta.name}"
            with _tracer.start_as_current_span(
                "ingest.snapshot.table",
                attributes={"freshet.source": spec.name, "db.sql.table": progress.current_table},
            ):
                headers = inject_headers()
                # COPY writes each value with its type's output function, the same text that
                # pgoutput sends, and streams rows without holding the table in memory.
                query = sql.SQL("COPY {} ({}) TO STDOUT").format(
                    sql.Identifier(meta.schema, meta.name),
                    sql.SQL(", ").join(sql.Identifier(c) for c in table.columns),
                )
                with conn.cursor() as cur, cur.copy(query) as copy:
                    for values in copy.rows():
                        if pending is not None:
                            _emit(
                                encoder,
                                sink,
                                *pending,
                                "first" if total == 1 else "true",
                                consistent_point,
                                ts_us,
                                xid,
                                headers,
                            )
                        pending = (table, table.row(list(values)))
                        total += 1
                        if total % chunk_rows == 0:
                            progress.rows_done = total
                            sink.poll(0)
                            if stop.is_set():
                                raise SnapshotInterrupted()
                progress.rows_done = total
            progress.tables_done = index + 1
        if pending is not None:
            _emit(encoder, sink, *pending, "last", consistent_point, ts_us, xid, inject_headers())
        sink.end(None)
        conn.rollback()
    progress.current_table = None
    return total


def _emit(
    encoder: EnvelopeEncoder,
    sink: KafkaSink,
    table: Table,
    after: dict[str, Any],
    marker: str,
    lsn: int,
    ts_us: int,
    xid: int | None,
    headers: Headers,
) -> None:
    encoder.transaction(ts_us, marker, xid, lsn, None)
    key = table.key(after)
    value = encoder.encode(
        table.schema, table.name, events.OP_READ, None, after, lsn, time.time_ns() // 1000
    )
    sink.send(table.topic, dumps(key) if key is not None else None, value, headers)
