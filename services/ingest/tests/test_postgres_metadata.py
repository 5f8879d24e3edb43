"""Table schemas on ``freshet.schemas`` and confirmed positions on ``freshet.positions``, on the
real broker and PostgreSQL."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from freshet.common import codec, events, topics
from freshet.common.kafka import consumer_config, partitions_of
from freshet.common.schemas import SourcePosition, TableSchema


@dataclass
class Keyed:
    partition: int
    offset: int
    value: Any


class KeyedFollower:
    """Follows a compacted topic with string keys, keeping the records of one key in order."""

    def __init__(self, bootstrap: str, topic: str, key: str) -> None:
        self._consumer = Consumer(consumer_config(bootstrap, f"follow-{time.time_ns()}"))
        self._consumer.assign(
            [
                TopicPartition(topic, p, OFFSET_BEGINNING)
                for p in partitions_of(self._consumer, topic)
            ]
        )
        self._key = key.encode()
        self.records: list[Keyed] = []

    def wait_for(self, predicate: Callable[[list[Keyed]], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.records):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; records so far: {self.records[-3:]}")
            msg = self._consumer.poll(0.1)
            if msg is None or msg.error() or msg.key() != self._key:
                continue
            raw = msg.value()
            self.records.append(
                Keyed(msg.partition() or 0, msg.offset() or 0, codec.loads(raw) if raw else None)
            )

    def close(self) -> None:
        self._consumer.close()


def _columns(schema: TableSchema) -> list[tuple[str, int, int, str]]:
    return [(c.name, c.type_oid, c.typmod, c.type) for c in schema.columns]


ITEMS_COLUMNS = [
    ("id", 23, -1, "integer"),
    ("sku", 1043, 24, "character varying(20)"),
    ("price", 1700, (10 << 16 | 2) + 4, "numeric(10,2)"),
    ("tags", 1009, -1, "text[]"),
    ("seen", 1184, -1, "timestamp with time zone"),
]


def test_schemas_are_published_at_start_and_when_a_column_is_added(
    ingest, reader, pg_database, unique
):
    with pg_database.connect() as conn:
        conn.execute(
            "CREATE TABLE public.items (id int, sku varchar(20), price numeric(10, 2), "
            "tags text[], seen timestamptz, gone int, PRIMARY KEY (sku, id))"
        )
        conn.execute("ALTER TABLE public.items DROP COLUMN gone")
        conn.execute("CREATE TABLE public.nokey (a bigint, b jsonb)")
    key = f"{unique}.public.items"
    ingest.start()
    ingest.register(pg_database, unique, ["public.items", "public.nokey"])
    items = KeyedFollower(ingest.settings.kafka_bootstrap, topics.SCHEMAS, key)
    nokey = KeyedFollower(ingest.settings.kafka_bootstrap, topics.SCHEMAS, f"{unique}.public.nokey")
    try:
        items.wait_for(lambda rs: len(rs) >= 1)
        first = TableSchema.model_validate(items.records[0].value)
        assert items.records[0].value["schema"] == "public"  # the contract's field name
        assert (first.source, first.schema_name, first.table) == (unique, "public", "items")
        assert first.qualified == key
        assert first.topic == topics.cdc_topic(unique, "public", "items")
        assert _columns(first) == ITEMS_COLUMNS
        assert first.primary_key == ("sku", "id")
        nokey.wait_for(lambda rs: len(rs) >= 1)
        plain = TableSchema.model_validate(nokey.records[0].value)
        assert _columns(plain) == [("a", 20, -1, "bigint"), ("b", 3802, -1, "jsonb")]
        assert plain.primary_key == ()

        ingest.wait_status(unique, lambda s: s.state == "streaming")
        topic = topics.cdc_topic(unique, "public", "items")
        reader.follow(topic)
        with pg_database.connect() as conn:
            conn.execute("INSERT INTO public.items (id, sku) VALUES (1, 'a')")
            conn.execute("ALTER TABLE public.items ADD COLUMN note varchar(5)")
            conn.execute("INSERT INTO public.items (id, sku, note) VALUES (2, 'b', 'hi')")
        reader.wait_for(lambda rs: any(r.key == {"sku": "b", "id": 2} for r in rs))
        items.wait_for(
            lambda rs: any(r.value and len(r.value["columns"]) == 6 for r in rs), timeout=30
        )
        schemas = [TableSchema.model_validate(r.value) for r in items.records]
        before = [s for s in schemas if len(s.columns) == 5]
        assert before and all(_columns(s) == ITEMS_COLUMNS for s in before)
        latest = schemas[-1]
        assert _columns(latest) == [*ITEMS_COLUMNS, ("note", 1043, 9, "character varying(5)")]
        assert latest.primary_key == ("sku", "id")
        # Once published, the new column list is never followed by the old one.
        first_new = next(i for i, s in enumerate(schemas) if len(s.columns) == 6)
        assert all(len(s.columns) == 6 for s in schemas[first_new:])
    finally:
        items.close()
        nokey.close()


def _read_topic(bootstrap: str, topic: str, up_to: dict[int, int]) -> dict[tuple[int, int], Any]:
    """(partition, offset) -> decoded key of every record below ``up_to[partition]``."""
    consumer = Consumer(consumer_config(bootstrap, f"upto-{time.time_ns()}"))
    found: dict[tuple[int, int], Any] = {}
    try:
        wanted = {p: end for p, end in up_to.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in wanted])
        deadline = time.monotonic() + 30
        while any(
            consumer.position([TopicPartition(topic, p)])[0].offset < end
            for p, end in wanted.items()
        ):
            assert time.monotonic() < deadline, f"could not read {topic} up to {wanted}"
            msg = consumer.poll(0.1)
            if msg is None or msg.error() or msg.offset() >= wanted[msg.partition()]:
                continue
            found[(msg.partition(), msg.offset())] = codec.loads(msg.key())
    finally:
        consumer.close()
    return found


def test_positions_cover_every_change_committed_before_them(ingest, reader, pg_database, unique):
    with pg_database.connect() as conn:
        conn.execute("CREATE TABLE public.t (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO public.t VALUES (0, 'before the snapshot')")
    topic = topics.cdc_topic(unique, "public", "t")
    bootstrap = ingest.settings.kafka_bootstrap
    ingest.start()
    ingest.register(pg_database, unique, ["public.t"])
    positions = KeyedFollower(bootstrap, topics.POSITIONS, unique)
    try:
        # After the snapshot: its position is the consistent point and covers the 'r' event.
        positions.wait_for(lambda rs: len(rs) >= 1)
        snapshot = SourcePosition.model_validate(positions.records[0].value)
        assert snapshot.source == unique
        below = _read_topic(bootstrap, topic, snapshot.offsets.get(topic, {}))
        assert {"id": 0} in below.values()

        ingest.wait_status(unique, lambda s: s.state == "streaming")
        reader.follow(topic)
        committed: list[tuple[int, str, int]] = []  # (id, op, pg_current_wal_lsn() after commit)
        with pg_database.connect() as conn:
            for i in range(1, 301):
                if i % 3:
                    conn.execute("INSERT INTO public.t VALUES (%s, 'x')", (i,))
                    change = (i, "c")
                else:
                    conn.execute("UPDATE public.t SET v = %s WHERE id = %s", (f"u{i}", i - 1))
                    change = (i - 1, "u")
                lsn = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
                committed.append((*change, events.lsn_from_str(lsn)))
        last = committed[-1][2]
        positions.wait_for(lambda rs: any(r.value and r.value["lsn"] >= last for r in rs))
        # Where each change landed in Kafka.
        reader.wait_for(lambda rs: len([r for r in rs if r.value]) == 1 + len(committed))
        where = {(r.key["id"], r.value["op"]): (r.partition, r.offset) for r in reader.records}
        assert set(where) >= {(row_id, op) for row_id, op, _ in committed}

        seen = [SourcePosition.model_validate(r.value) for r in positions.records]
        assert [p.lsn for p in seen] == sorted(p.lsn for p in seen)
        assert len({p.lsn for p in seen}) == len(seen), "a position was published twice"
        assert len(seen) > 2  # the snapshot's, some while the changes streamed, the last
        for position in seen:
            bounds = position.offsets.get(topic, {})
            for row_id, op, lsn in committed:
                if lsn <= position.lsn:
                    partition, offset = where[(row_id, op)]
                    assert offset < bounds.get(partition, 0), (
                        f"{op} of id {row_id} committed at {lsn} is at {partition}/{offset}, "
                        f"not below {bounds} of the position at {position.lsn}"
                    )
        # Reading the partitions only up to the final position finds every committed change.
        final = next(p for p in seen if p.lsn >= last)
        keys = list(_read_topic(bootstrap, topic, final.offsets[topic]).values())
        assert {k["id"] for k in keys} >= {row_id for row_id, _, _ in committed}
        for partition, end in final.offsets[topic].items():  # and nothing beyond what exists
            assert end == 1 + max(r.offset for r in reader.records if r.partition == partition)
    finally:
        positions.close()


def test_idle_source_publishes_the_server_position(ingest, pg_database, unique):
    with pg_database.connect() as conn:
        conn.execute("CREATE TABLE public.t (id int PRIMARY KEY)")
        conn.execute("CREATE TABLE public.other (id int PRIMARY KEY)")
    ingest.start()
    ingest.register(pg_database, unique, ["public.t"], snapshot="never")
    ingest.wait_status(unique, lambda s: s.state == "streaming")
    positions = KeyedFollower(ingest.settings.kafka_bootstrap, topics.POSITIONS, unique)
    try:
        with pg_database.connect() as conn:
            conn.execute("INSERT INTO public.other VALUES (1)")  # not captured
            lsn = events.lsn_from_str(
                conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
            )
        positions.wait_for(lambda rs: any(r.value and r.value["lsn"] >= lsn for r in rs))
        final = next(r.value for r in positions.records if r.value["lsn"] >= lsn)
        assert final["offsets"] == {}  # nothing of this source was written since ingest started
    finally:
        positions.close()


def test_idle_position_reaches_the_server_wal_position_with_many_open_files(
    ingest, pg_database, unique
):
    """A process with over FD_SETSIZE (1024) open files still streams and goes idle.

    The stream's socket then has a descriptor above 1023, which ``select()`` refuses. Once idle,
    ingest must publish the server's WAL position even though the WAL after the last captured
    change holds nothing for its publication (a table it does not capture), so a reader that
    waits for ``pg_current_wal_lsn()`` taken after its commit gets there.
    """
    with pg_database.connect() as conn:
        conn.execute("CREATE TABLE public.t (id int PRIMARY KEY)")
        conn.execute("CREATE TABLE public.other (id int PRIMARY KEY, v text)")
    held: list[int] = []
    try:
        while not held or held[-1] < 1100:
            held.append(os.open(os.devnull, os.O_RDONLY))
        ingest.start()  # every socket it opens from now on has a descriptor above 1100
        ingest.register(pg_database, unique, ["public.t"], snapshot="never")
        ingest.wait_status(unique, lambda s: s.state == "streaming")
        positions = KeyedFollower(ingest.settings.kafka_bootstrap, topics.POSITIONS, unique)
        try:
            with pg_database.connect() as conn:
                conn.execute("INSERT INTO public.t VALUES (1)")
                changed = events.lsn_from_str(
                    conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
                )
                conn.execute("INSERT INTO public.other VALUES (1, repeat('x', 20000))")
                lsn = events.lsn_from_str(
                    conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
                )
            assert lsn > changed
            positions.wait_for(lambda rs: any(r.value and r.value["lsn"] >= lsn for r in rs))
            final = next(r.value for r in positions.records if r.value["lsn"] >= lsn)
            topic = topics.cdc_topic(unique, "public", "t")
            assert sum(final["offsets"][topic].values()) == 1  # the captured insert, and only it
            status = ingest.status(unique)
            assert status is not None and status.state == "streaming", status
        finally:
            positions.close()
    finally:
        for fd in held:
            os.close(fd)
