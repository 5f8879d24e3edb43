"""The PostgreSQL source: publication and slot, snapshot, then the replication stream.

Pipeline (see :mod:`freshet.ingest.sources.base` for the guarantees):

1. make the publication match the spec's tables;
2. if the slot exists and the offsets topic says the snapshot of this capture finished, resume
   streaming from the slot's confirmed LSN; otherwise create the slot with an exported
   snapshot, snapshot the tables in it, flush, record the snapshot as done;
3. stream pgoutput v2 (``streaming=on``), producing events as they are decoded and confirming
   a transaction's end LSN to the slot only once Kafka acknowledged all its events.

Table schemas go to ``freshet.schemas`` when the snapshot or the stream starts and when a
Relation message shows a changed column list; every confirmed LSN (at most every 50 ms) goes
to ``freshet.positions`` with the offsets that cover it (see :mod:`freshet.ingest.metadata`).
"""

from __future__ import annotations

import logging
import select
import threading
import time
from typing import Any

import psycopg
import psycopg2
from pydantic import SecretStr

from freshet.common import events, topics
from freshet.common.kafka import ensure_topics
from freshet.common.schemas import (
    ColumnSchema,
    PostgresSourceSpec,
    SnapshotProgress,
    SourceStatus,
    TableSchema,
)
from freshet.common.topics import TopicSpec
from freshet.ingest.config import IngestSettings
from freshet.ingest.exceptions import SlotInvalidated, SourceError
from freshet.ingest.metadata import (
    POSITION_INTERVAL_S,
    PositionPublisher,
    SchemaPublisher,
    ensure_metadata_topics,
)
from freshet.ingest.offsets import OffsetStore, capture_hash
from freshet.ingest.sink import KafkaSink, ProducerSupply
from freshet.ingest.sources.base import Source
from freshet.ingest.sources.postgres import client
from freshet.ingest.sources.postgres.changes import ChangeWriter
from freshet.ingest.sources.postgres.client import TableMeta
from freshet.ingest.sources.postgres.pgoutput import Decoder, Relation
from freshet.ingest.sources.postgres.snapshot import SnapshotInterrupted, run_snapshot

log = logging.getLogger(__name__)

CONFIRM_INTERVAL_S = POSITION_INTERVAL_S
"""An LSN is confirmed to the slot and published as a position at most this often."""
IDLE_POLL_S = 0.005
"""Between messages, acknowledgements are collected at most this often."""
WAKE_INTERVAL_S = 0.001
"""The stream waits for the server at most this often: under a steady trickle of small
transactions, each wake-up then takes several (waking per transaction cost ~100 us of CPU
each), for at most this much added latency."""
SLOT_CHECK_INTERVAL_S = 5.0


class PostgresSource(Source):
    def __init__(
        self,
        spec: PostgresSourceSpec,
        password: SecretStr,
        settings: IngestSettings,
        instance: str,
        producers: ProducerSupply | None = None,
    ) -> None:
        self.spec = spec
        self._producers = producers
        self._password = password
        self._settings = settings
        self._instance = instance
        self._offsets = OffsetStore(settings.kafka_bootstrap)
        self._state = "pending"
        self._reason: str | None = None
        self._lsn: int | None = None
        self._events = 0
        self._bytes = 0
        self._retained: int | None = None
        self._wal_status: str | None = None
        self._progress: SnapshotProgress | None = None
        self._known_topics: set[str] = set()
        self._sink: KafkaSink | None = None
        self._acked: dict[tuple[str, int], int] = {}  # offsets acknowledged since start-up
        self._metadata_topics = False
        self._schemas = SchemaPublisher()
        self._positions = PositionPublisher(spec.name)

    # --- status ------------------------------------------------------------------------------

    def status(self) -> SourceStatus:
        sink = self._sink
        return SourceStatus(
            name=self.spec.name,
            state=self._state,
            reason=self._reason,
            generation=self.spec.generation,
            lsn=events.lsn_to_str(self._lsn) if self._lsn is not None else None,
            events=self._events + (sink.events if sink else 0),
            bytes=self._bytes + (sink.bytes if sink else 0),
            retained_wal_bytes=self._retained,
            slot_wal_status=self._wal_status,
            snapshot=self._progress.model_copy() if self._progress is not None else None,
            instance=self._instance,
        )

    def report_error(self, reason: str) -> None:
        self._state, self._reason = "error", reason

    def _set_state(self, state: str) -> None:
        self._state, self._reason = state, None

    # --- lifecycle ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        sink = KafkaSink(
            self._settings.kafka_bootstrap,
            producer=self._producers.take() if self._producers is not None else None,
            acked=self._acked,
            **{"linger.ms": self._settings.ingest_linger_ms},
        )
        self._sink = sink
        self._schemas.reset()
        repl = None
        try:
            if not self._metadata_topics:
                ensure_metadata_topics(
                    self._settings.kafka_bootstrap, self._settings.topic_partitions
                )
                self._metadata_topics = True
            with client.catalog_connect(self.spec, self._password) as catalog:
                missing = client.missing_tables(catalog, self.spec)
                if missing:
                    raise SourceError(
                        f"tables not found in database {self.spec.database}: {', '.join(missing)}"
                    )
                client.ensure_publication(catalog, self.spec)
                repl = client.replication_connect(self.spec, self._password)
                if not self._can_resume(catalog):
                    self._create_slot_and_snapshot(catalog, repl, sink, stop)
                if stop.is_set():
                    return
                self._stream(catalog, repl, sink, stop)
        finally:
            self._events += sink.events
            self._bytes += sink.bytes
            self._sink = None
            if repl is not None:
                repl.close()
            sink.close()

    def _can_resume(self, catalog: psycopg.Connection[Any]) -> bool:
        slot = client.slot_info(catalog, self.spec.slot_name)
        offsets = self._offsets.load(self.spec.name)
        done = (
            offsets is not None
            and offsets.get("snapshot_done")
            and offsets.get("capture") == capture_hash(self.spec)
        )
        if slot is not None and slot.wal_status == "lost":
            raise SlotInvalidated(self._invalidated_reason())
        if done and slot is not None:
            if slot.confirmed_flush:
                self._lsn = events.lsn_from_str(slot.confirmed_flush)
            return True
        if offsets is not None and offsets.get("slot") not in (None, self.spec.slot_name):
            client.drop_slot(catalog, offsets["slot"])
        if slot is not None:
            log.info(
                "source %s: slot %s exists but its snapshot is not recorded; snapshotting again",
                self.spec.name,
                self.spec.slot_name,
            )
            client.drop_slot(catalog, self.spec.slot_name)
        return False

    def _invalidated_reason(self) -> str:
        return (
            f"replication slot {self.spec.slot_name} was invalidated: PostgreSQL removed WAL it "
            "still needed (max_slot_wal_keep_size), so changes were lost. Take a new snapshot "
            "by replacing the source with a new slot_name (PUT), or delete and re-create it."
        )

    def _create_slot_and_snapshot(
        self, catalog: psycopg.Connection[Any], repl: Any, sink: KafkaSink, stop: threading.Event
    ) -> None:
        initial = self.spec.snapshot == "initial"
        cur = repl.cursor()
        mode = "EXPORT_SNAPSHOT" if initial else "NOEXPORT_SNAPSHOT"
        # Slot names are validated identifiers (control's spec), and the replication protocol
        # has no parameters for this command.
        cur.execute(f'CREATE_REPLICATION_SLOT "{self.spec.slot_name}" LOGICAL pgoutput {mode}')
        _slot, consistent_point, snapshot_name, _plugin = cur.fetchone()
        point = events.lsn_from_str(consistent_point)
        self._lsn = point
        if initial:
            self._set_state("snapshotting")
            self._progress = SnapshotProgress()
            tables = client.published_tables(catalog, self.spec.publication_name)
            self._publish_schemas(sink, tables)
            try:
                rows = run_snapshot(
                    self.spec,
                    self._password,
                    snapshot_name,
                    point,
                    tables,
                    sink,
                    self._progress,
                    self._settings.ingest_snapshot_chunk_rows,
                    stop,
                    self._ensure_topic,
                )
            except SnapshotInterrupted:
                return
            sink.flush()
            # Every 'r' event reflects commits before the consistent point and is acknowledged.
            self._positions.publish(sink, point, force=True)
            log.info(
                "source %s: snapshot of %d rows in %d tables done at %s",
                self.spec.name,
                rows,
                len(tables),
                consistent_point,
            )
        self._offsets.save(
            sink,
            self.spec.name,
            {
                "slot": self.spec.slot_name,
                "capture": capture_hash(self.spec),
                "snapshot_done": True,
                "consistent_point": consistent_point,
            },
        )

    def _publish_schemas(self, sink: KafkaSink, tables: list[TableMeta]) -> None:
        for meta in tables:
            self._schemas.publish(
                sink,
                self._table_schema(
                    meta, [(c.name, c.type_oid, c.typmod, c.type) for c in meta.columns]
                ),
            )

    def _table_schema(
        self, meta: TableMeta, columns: list[tuple[str, int, int, str]]
    ) -> TableSchema:
        names = {c[0] for c in columns}
        return TableSchema(
            source=self.spec.name,
            schema_name=meta.schema,
            table=meta.name,
            topic=topics.cdc_topic(self.spec.name, meta.schema, meta.name),
            columns=tuple(
                ColumnSchema(name=name, type_oid=oid, typmod=typmod, type=type_text)
                for name, oid, typmod, type_text in columns
            ),
            primary_key=tuple(k for k in meta.primary_key if k in names),
        )

    def _relation_seen(
        self, sink: KafkaSink, catalog: psycopg.Connection[Any], rel: Relation, meta: TableMeta
    ) -> None:
        """Republish a table's schema when the stream shows a changed column list.

        The columns are the Relation message's (the stream's view of the table, which can be
        older than the catalog while a backlog is read), typed with ``format_type``.
        """
        columns = [(c.name, c.type_oid, c.typmod) for c in rel.columns]
        names = {c[0] for c in columns}
        primary_key = tuple(k for k in meta.primary_key if k in names)
        qualified = f"{self.spec.name}.{meta.schema}.{meta.name}"
        if self._schemas.unchanged(qualified, columns, primary_key):
            return
        types = client.format_types(catalog, [(oid, typmod) for _, oid, typmod in columns])
        self._schemas.publish(
            sink,
            self._table_schema(meta, [(*c, t) for c, t in zip(columns, types, strict=True)]),
        )

    def _confirm(self, cur: Any, sink: KafkaSink, confirmed: int) -> None:
        """Tell the slot ``confirmed`` and publish it as the source's position.

        Call it right after :meth:`KafkaSink.poll` confirmed it: every event before it is
        acknowledged, so the sink's offsets cover them.
        """
        if confirmed != self._lsn:
            cur.send_feedback(write_lsn=confirmed, flush_lsn=confirmed, force=True)
            self._lsn = confirmed
        self._positions.publish(sink, confirmed, force=True)

    def _ensure_topic(self, topic: str) -> None:
        if topic not in self._known_topics:
            ensure_topics(
                self._settings.kafka_bootstrap, [TopicSpec(topic, self._settings.topic_partitions)]
            )
            self._known_topics.add(topic)

    def _stream(
        self, catalog: psycopg.Connection[Any], repl: Any, sink: KafkaSink, stop: threading.Event
    ) -> None:
        writer = ChangeWriter(
            self.spec.name,
            self.spec.database,
            sink,
            lambda relid: client.table_meta_by_oid(catalog, relid),
            self._ensure_topic,
            self._settings.ingest_spool_dir / self.spec.name,
            lambda rel, meta: self._relation_seen(sink, catalog, rel, meta),
        )
        decoder = Decoder(writer)
        cur = repl.cursor()
        try:
            cur.start_replication(
                slot_name=self.spec.slot_name,
                decode=False,
                status_interval=10,
                options={
                    "proto_version": "2",
                    "publication_names": self.spec.publication_name,
                    "streaming": "on",
                },
            )
        except psycopg2.errors.ObjectNotInPrerequisiteState as exc:
            if "can no longer get changes" in str(exc) or "invalidated" in str(exc):
                raise SlotInvalidated(self._invalidated_reason()) from exc
            raise
        self._publish_schemas(sink, client.published_tables(catalog, self.spec.publication_name))
        self._set_state("streaming")
        self._progress = None
        last_poll = last_confirm = last_slot_check = last_wake = 0.0
        sent = 0
        # poll(2), not select(2): select refuses descriptors above FD_SETSIZE (1024), which a
        # process with many sources or Kafka clients reaches; every stream would then fail at
        # its first wait and the source never get past its last change.
        server = select.poll()
        server.register(cur.fileno(), select.POLLIN)
        confirmable = self._lsn or 0
        try:
            while not stop.is_set():
                msg = cur.read_message()
                if msg is not None:
                    decoder.decode(msg.payload, msg.data_start)
                    sent += 1
                    if sent % 256:
                        continue
                now = time.monotonic()
                if now - last_poll >= (IDLE_POLL_S if msg is None else CONFIRM_INTERVAL_S):
                    confirmable = sink.poll(0) or 0
                    if msg is None and sink.idle and not writer.in_transaction:
                        # Everything received is delivered: confirm the server's position, so
                        # the slot does not hold WAL written by other databases or tables.
                        # (It is 0 until the server sent something.)
                        confirmable = max(confirmable, cur.wal_end)
                    last_poll = now
                    if confirmable > (self._lsn or 0) and now - last_confirm >= CONFIRM_INTERVAL_S:
                        self._confirm(cur, sink, confirmable)
                        last_confirm = now
                if now - last_slot_check >= SLOT_CHECK_INTERVAL_S:
                    self._check_slot(catalog)
                    last_slot_check = now
                if msg is None:
                    writer.end_span(now)  # everything the server sent so far is written
                    # While events wait for acknowledgements or a confirmation is due, come
                    # back soon; otherwise wait for the server.
                    due = not sink.idle or confirmable > (self._lsn or 0)
                    pause = last_wake + WAKE_INTERVAL_S - now
                    if pause > 0:
                        time.sleep(pause)
                    server.poll((IDLE_POLL_S if due else 0.05) * 1000)
                    last_wake = time.monotonic()
            sink.flush(10)
            confirmed = sink.poll(0)
            if confirmed is not None and confirmed > (self._lsn or 0):
                self._confirm(cur, sink, confirmed)
        finally:
            writer.close()

    def _check_slot(self, catalog: psycopg.Connection[Any]) -> None:
        info = client.slot_info(catalog, self.spec.slot_name)
        if info is None:
            raise SourceError(f"replication slot {self.spec.slot_name} was dropped outside Freshet")
        self._retained = info.retained_bytes
        self._wal_status = info.wal_status
        if info.wal_status == "lost":
            raise SlotInvalidated(self._invalidated_reason())

    def cleanup(self) -> None:
        with client.catalog_connect(self.spec, self._password) as catalog:
            client.drop_slot(catalog, self.spec.slot_name)
            client.drop_publication(catalog, self.spec.publication_name)
