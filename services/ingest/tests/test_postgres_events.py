"""Snapshot then stream, every supported type, checked field by field against Debezium's
envelope, on the real broker and PostgreSQL."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from typing import Any

from freshet.common import events, topics

TYPES_DDL = """
CREATE TABLE public.everything (
    id int PRIMARY KEY,
    b bool, i2 int2, i8 int8, f4 float4, f8 float8, n numeric(12, 3), nn numeric,
    t text, vc varchar(20), ch char(3),
    d date, tm time, tmtz timetz, ts timestamp, ts3 timestamp(3), tstz timestamptz,
    iv interval, u uuid, j json, jb jsonb, by bytea, ia int[], ta text[], na numeric[],
    big text
);
CREATE TABLE public.full_identity (id int PRIMARY KEY, note text, big text);
ALTER TABLE public.full_identity REPLICA IDENTITY FULL;
CREATE TABLE public.nokey (a int, b text);
"""

ROW_SQL = """
INSERT INTO public.everything VALUES (
    1, true, -32768, 9223372036854775807, 1.5, 3.141592653589793, 12345.678, 'NaN',
    'hello ''world''', 'varchar', 'ab', '2024-02-29', '13:14:15.123456', '10:00:00+02',
    '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05.123', '2024-01-02 03:04:05.5+01',
    '1 year 2 mons 3 days 04:05:06.5', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
    '{"a": [1, 2]}', '{"b": {"c": null}}', '\\x00ff10', '{1,NULL,3}', '{"a b","c\\"d",NULL}',
    '{1.50,2}', (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 1000) g)
)
"""


# Incompressible enough to be stored out of line (TOAST), as the SQL builds it.
BIG = "".join(hashlib.md5(str(g).encode()).hexdigest() for g in range(1, 1001))
BIG_SQL = "(SELECT string_agg(md5(g::text), '') FROM generate_series(1, 1000) g)"


def commit_order(records: list[Any]) -> list[Any]:
    """Records of several partitions in the source's commit order.

    Order holds per partition only, so records are sorted by their change's position; a
    tombstone takes its delete's place, and at one position (a primary-key change) the delete
    and its tombstone come before the create.
    """
    last: dict[str, tuple[int, int]] = {}
    keyed = []
    for r in records:
        key = repr(r.key)
        if r.value is None:
            rank, (commit, lsn) = 1, last[key]
        else:
            source = r.value["source"]
            commit, lsn = source["commit_lsn"], source["lsn"]
            last[key] = (commit, lsn)
            rank = 0 if r.value["op"] == "d" else 2
        keyed.append(((commit, lsn, rank), r))
    return [r for _pos, r in sorted(keyed, key=lambda item: item[0])]


def test_snapshot_then_stream_every_type_and_operation(ingest, reader, pg_database, unique):
    with pg_database.connect() as conn:
        conn.execute(TYPES_DDL)
        conn.execute(ROW_SQL)
        conn.execute(f"INSERT INTO public.full_identity VALUES (1, 'first', {BIG_SQL})")
        conn.execute("INSERT INTO public.nokey VALUES (1, 'one')")
    everything = topics.cdc_topic(unique, "public", "everything")
    full = topics.cdc_topic(unique, "public", "full_identity")
    nokey = topics.cdc_topic(unique, "public", "nokey")
    ingest.start()
    ingest.register(pg_database, unique, None)
    reader.follow(everything, full, nokey)

    # --- snapshot ---------------------------------------------------------------------------
    reader.wait_for(lambda rs: len([r for r in rs if r.value and r.value["op"] == "r"]) == 3)
    snap = [r for r in reader.on(everything) if r.value["op"] == "r"]
    assert len(snap) == 1
    rec = snap[0]
    assert rec.key == {"id": 1}
    value = rec.value
    assert set(value) == {
        "before",
        "after",
        "source",
        "transaction",
        "op",
        "ts_ms",
        "ts_us",
        "ts_ns",
    }
    assert value["before"] is None
    after = value["after"]
    assert after["b"] is True
    assert after["i2"] == -32768
    assert after["i8"] == 9223372036854775807
    assert after["f4"] == 1.5
    assert after["f8"] == 3.141592653589793
    assert after["n"] == "12345.678"
    assert after["nn"] == "NaN"
    assert after["t"] == "hello 'world'"
    assert after["vc"] == "varchar"
    assert after["ch"] == "ab "
    assert after["d"] == (dt.date(2024, 2, 29) - dt.date(1970, 1, 1)).days
    assert after["tm"] == ((13 * 60 + 14) * 60 + 15) * 1_000_000 + 123456
    assert after["tmtz"] == "08:00:00Z"
    epoch = dt.datetime(1970, 1, 1)
    assert after["ts"] == int(
        (dt.datetime(2024, 1, 2, 3, 4, 5, 123456) - epoch).total_seconds() * 1e6
    )
    assert after["ts3"] == int(
        (dt.datetime(2024, 1, 2, 3, 4, 5, 123000) - epoch).total_seconds() * 1e3
    )
    assert after["tstz"] == "2024-01-02T02:04:05.5Z"
    month_us = 365.25 / 12 * 86_400_000_000
    assert (
        after["iv"]
        == round(14 * month_us) + 3 * 86_400_000_000 + (4 * 3600 + 5 * 60 + 6) * 1_000_000 + 500_000
    )
    assert after["u"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert after["j"] == '{"a": [1, 2]}'
    assert after["jb"] == '{"b": {"c": null}}'
    assert base64.b64decode(after["by"]) == b"\x00\xff\x10"
    assert after["ia"] == [1, None, 3]
    assert after["ta"] == ["a b", 'c"d', None]
    assert after["na"] == ["1.50", "2"]
    assert after["big"] == BIG
    source = value["source"]
    assert source["connector"] == "postgresql"
    assert source["name"] == unique
    assert source["db"] == pg_database.dbname
    assert source["schema"] == "public" and source["table"] == "everything"
    assert source["snapshot"] in ("first", "true", "last")
    assert isinstance(source["lsn"], int) and source["lsn"] > 0
    assert value["op"] == "r"
    markers = sorted(r.value["source"]["snapshot"] for r in reader.records if r.value)
    assert markers == ["first", "last", "true"]
    nokey_snap = reader.on(nokey)
    assert nokey_snap[0].key is None and nokey_snap[0].value["after"] == {"a": 1, "b": "one"}

    ingest.wait_status(unique, lambda s: s.state == "streaming")
    reader.records.clear()

    # --- stream ------------------------------------------------------------------------------
    with pg_database.connect() as conn:
        conn.execute(ROW_SQL.replace("(\n    1,", "(\n    2,"))
        conn.execute("UPDATE public.everything SET t = 'changed', n = 0.5 WHERE id = 2")
        conn.execute("UPDATE public.everything SET id = 3 WHERE id = 2")
        conn.execute("UPDATE public.full_identity SET note = 'second' WHERE id = 1")
        conn.execute("DELETE FROM public.everything WHERE id = 1")
        conn.execute("DELETE FROM public.full_identity WHERE id = 1")
        conn.execute("UPDATE public.everything SET b = NULL, ia = '{}' WHERE id = 3")
        conn.execute("TRUNCATE public.nokey")
        lsn_after = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]

    reader.wait_for(
        lambda rs: any(r.topic == nokey and r.value and r.value["op"] == "t" for r in rs)
    )
    reader.read_to_end(everything)  # the truncate came last, but on another topic
    ev = commit_order(reader.on(everything))
    ops = [(r.key, r.value["op"] if r.value else None) for r in ev]
    assert ops == [
        ({"id": 2}, "c"),
        ({"id": 2}, "u"),
        ({"id": 2}, "d"),
        ({"id": 2}, None),  # tombstone
        ({"id": 3}, "c"),
        ({"id": 1}, "d"),
        ({"id": 1}, None),
        ({"id": 3}, "u"),
    ]
    create, update, pk_delete, _tomb, pk_create, delete, _tomb2, last = ev
    assert create.value["before"] is None and create.value["after"]["id"] == 2
    assert create.value["source"]["snapshot"] == "false"
    assert create.value["source"]["txId"] > 0
    assert create.value["source"]["commit_lsn"] >= create.value["source"]["lsn"]
    # REPLICA IDENTITY DEFAULT: no before image; the untouched TOAST column is unavailable.
    assert update.value["before"] is None
    assert update.value["after"]["t"] == "changed" and update.value["after"]["n"] == "0.500"
    assert update.value["after"]["big"] == events.UNAVAILABLE_VALUE
    # Primary-key change: delete of the old key, tombstone, create of the new one.
    assert pk_delete.value["before"]["id"] == 2 and pk_delete.value["after"] is None
    assert pk_delete.headers[events.HEADER_NEW_KEY] == b'{"id":3}'
    assert (
        pk_create.value["after"]["id"] == 3
        and pk_create.headers[events.HEADER_OLD_KEY] == b'{"id":2}'
    )
    # Delete with DEFAULT identity: the key columns, the rest null.
    assert delete.value["before"]["id"] == 1 and delete.value["before"]["t"] is None
    assert last.value["after"]["b"] is None and last.value["after"]["ia"] == []
    # REPLICA IDENTITY FULL: full before image, and the unchanged TOAST value is filled in.
    fu = [r for r in reader.on(full) if r.value]
    assert [r.value["op"] for r in fu] == ["u", "d"]
    assert fu[0].value["before"] == {"id": 1, "note": "first", "big": BIG}
    assert fu[0].value["after"] == {"id": 1, "note": "second", "big": BIG}
    assert fu[1].value["before"]["big"] == BIG
    trunc = next(r for r in reader.on(nokey) if r.value)
    assert trunc.key is None and trunc.value["before"] is None and trunc.value["after"] is None
    # Commit order: commit LSNs never go backwards.
    commit_lsns = [r.value["source"]["commit_lsn"] for r in ev if r.value]
    assert commit_lsns == sorted(commit_lsns)
    # Trace context travels in the headers.
    assert all("traceparent" in r.headers for r in ev)
    _assert_spans_exported(ingest.settings.kafka_bootstrap, unique, ev)
    status = ingest.wait_status(
        unique,
        lambda s: (
            s.lsn is not None and events.lsn_from_str(s.lsn) >= events.lsn_from_str(lsn_after)
        ),
    )
    assert (
        status.state == "streaming"
        and status.events >= 14
        and status.retained_wal_bytes is not None
    )


def _assert_spans_exported(bootstrap, source, records):
    """The ``ingest.transactions`` spans reach the otlp_spans topic as OTLP protobuf, and the
    trace context in each event's headers names one of them (every span is sampled here)."""
    import time

    from confluent_kafka import Consumer
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from freshet.common.kafka import consumer_config, read_to_end

    wanted = set()
    for record in records:
        version, trace_id, span_id, flags = record.headers["traceparent"].decode().split("-")
        assert version == "00" and int(flags, 16) & 1, record.headers["traceparent"]  # sampled
        wanted.add((trace_id, span_id))
    found: set[tuple[str, str]] = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        consumer = Consumer(consumer_config(bootstrap, f"spans-{time.time_ns()}"))
        try:
            for msg in read_to_end(consumer, topics.SPANS):
                request = ExportTraceServiceRequest.FromString(msg.value())
                for resource_spans in request.resource_spans:
                    service = {
                        a.key: a.value.string_value for a in resource_spans.resource.attributes
                    }
                    for scope in resource_spans.scope_spans:
                        for span in scope.spans:
                            attrs = {a.key: a.value for a in span.attributes}
                            if (
                                span.name == "ingest.transactions"
                                and attrs["freshet.source"].string_value == source
                                and service["service.name"] == "freshet-ingest"
                            ):
                                assert attrs["freshet.transactions"].int_value >= 1
                                found.add((span.trace_id.hex(), span.span_id.hex()))
        finally:
            consumer.close()
        if found >= wanted:
            return
        time.sleep(1)
    raise AssertionError(
        f"spans named by the events' traceparent headers not on otlp_spans: {wanted - found}"
    )
