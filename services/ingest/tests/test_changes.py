"""ChangeWriter's fast path (inserts and key-less updates decoded straight into rows) writes
exactly the events of the general path, without servers."""

from __future__ import annotations

import random
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from freshet.common import codec
from freshet.ingest.sink import KafkaSink
from freshet.ingest.sources.postgres import changes
from freshet.ingest.sources.postgres.changes import ChangeWriter
from freshet.ingest.sources.postgres.client import ColumnMeta, TableMeta
from freshet.ingest.sources.postgres.pgoutput import UNCHANGED_TOAST, Decoder

COLUMNS = [
    ("id", 20, -1),  # int8
    ("note", 25, -1),  # text
    ("at", 1184, -1),  # timestamptz
    ("amount", 1700, 786438),  # numeric(12,2)
    ("flag", 16, -1),  # bool
    ("tags", 1009, -1),  # text[]
]
META = TableMeta(
    oid=16384,
    schema="public",
    name="t",
    columns=tuple(ColumnMeta(n, o, m, "?") for n, o, m in COLUMNS),
    primary_key=("id",),
    replica_identity="d",
    estimated_rows=0,
)


def _tuple(values: list[Any]) -> bytes:
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


def _relation() -> bytes:
    out = b"R" + struct.pack(">I", META.oid) + b"public\0t\0d" + struct.pack(">h", len(COLUMNS))
    for name, oid, typmod in COLUMNS:
        out += struct.pack(">B", 1 if name == "id" else 0) + name.encode() + b"\0"
        out += struct.pack(">Ii", oid, typmod)
    return out


class RecordingSink(KafkaSink):
    def __init__(self) -> None:
        super().__init__("127.0.0.1:1", log_level=0)
        self.sent: list[tuple[str, Any, Any]] = []

    def send(self, topic, key, value, headers=None) -> None:
        event = codec.loads(value) if value is not None else None
        if event is not None:
            for clock in ("ts_ms", "ts_us", "ts_ns"):  # the time the event was built
                event.pop(clock)
        self.sent.append((topic, codec.loads(key) if key else None, event))


class GeneralPathOnly(ChangeWriter):
    text_change = None  # type: ignore[assignment]


def _row(rng: random.Random, i: int) -> list[Any]:
    def maybe(text: str) -> str | None:
        return None if rng.random() < 0.15 else text

    return [
        str(i),
        maybe(rng.choice(["plain", 'quote " and \\ backslash', "naïve ünïcode", ""])),
        maybe(f"2024-0{rng.randint(1, 9)}-1{rng.randint(0, 9)} 0{rng.randint(0, 9)}:04:05.5+00"),
        maybe(f"{rng.randint(0, 10**6)}.{rng.randint(0, 99):02d}"),
        maybe(rng.choice(["t", "f"])),
        maybe(rng.choice(["{}", '{a,"b c",NULL}'])),
    ]


def _messages(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = [_relation(), b"B" + struct.pack(">QqI", 9000, 0, 77)]
    for i in range(200):
        row = _row(rng, i)
        kind = rng.random()
        if kind < 0.6:
            out.append(b"I" + struct.pack(">I", META.oid) + b"N" + _tuple(row))
        elif kind < 0.8:  # update without an old tuple (REPLICA IDENTITY DEFAULT, same key)
            if rng.random() < 0.3:
                row[1] = UNCHANGED_TOAST
            out.append(b"U" + struct.pack(">I", META.oid) + b"N" + _tuple(row))
        else:  # key change: old key tuple, general path only
            old = [str(i + 1000)] + [None] * (len(COLUMNS) - 1)
            out.append(b"U" + struct.pack(">I", META.oid) + b"K" + _tuple(old) + b"N" + _tuple(row))
    out.append(b"C" + struct.pack(">BQQq", 0, 9000, 9100, 0))
    return out


def _run(writer_cls: type[ChangeWriter], messages: list[bytes], spool: Path) -> RecordingSink:
    sink = RecordingSink()
    writer = writer_cls("src", "db", sink, lambda relid: META, lambda topic: None, spool)
    decoder = Decoder(writer)
    for lsn, message in enumerate(messages, start=1000):
        decoder.decode(message, lsn)
    sink._producer.purge()
    return sink


@pytest.mark.parametrize("seed", range(5))
def test_fast_path_writes_the_events_of_the_general_path(seed, tmp_path):
    messages = _messages(seed)
    fast = _run(ChangeWriter, messages, tmp_path / "fast")
    general = _run(GeneralPathOnly, messages, tmp_path / "general")
    assert len(fast.sent) > 200  # key changes add a delete, a tombstone and a create
    assert fast.sent == general.sent


def test_fast_path_is_taken_for_text_rows_only(tmp_path):
    taken: list[str] = []

    class Spy(ChangeWriter):
        def text_change(self, op, relid, buf, pos, lsn):
            done = super().text_change(op, relid, buf, pos, lsn)
            taken.append(f"{op}:{done}")
            return done

    all_text = ["1", "a", "2024-01-02 03:04:05+00", "1.00", "t", "{}"]
    with_null = ["2", None, "2024-01-02 03:04:05+00", "1.00", "t", "{}"]
    messages = [
        b"B" + struct.pack(">QqI", 9000, 0, 77),
        b"I" + struct.pack(">I", META.oid) + b"N" + _tuple(all_text),  # relation not known yet
        _relation(),
        b"I" + struct.pack(">I", META.oid) + b"N" + _tuple(all_text),
        b"I" + struct.pack(">I", META.oid) + b"N" + _tuple(with_null),
        b"U" + struct.pack(">I", META.oid) + b"N" + _tuple(all_text),
        b"C" + struct.pack(">BQQq", 0, 9000, 9100, 0),
    ]
    sink = _run(Spy, messages, tmp_path)
    assert taken == ["c:False", "c:True", "c:False", "u:True"]
    assert [event["op"] for _, _, event in sink.sent] == ["c", "c", "c", "u"]


class HeaderSink(RecordingSink):
    """Keeps each event's traceparent header next to its key."""

    def send(self, topic, key, value, headers=None) -> None:
        self.sent.append((topic, codec.loads(key) if key else None, dict(headers or {})))


def test_one_span_per_window_of_transactions(tmp_path, monkeypatch):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()  # this test's own, every span sampled
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(changes, "_tracer", provider.get_tracer("test"))
    monkeypatch.setattr(changes, "SPAN_WINDOW_S", 3600.0)  # no test machine is that slow
    sink = HeaderSink()
    writer = ChangeWriter("src", "db", sink, lambda relid: META, lambda topic: None, tmp_path)
    decoder = Decoder(writer)
    decoder.decode(_relation(), 1)

    def transaction(i: int) -> None:
        decoder.decode(b"B" + struct.pack(">QqI", 9000 + i, 0, 100 + i), 2)
        decoder.decode(b"I" + struct.pack(">I", META.oid) + b"N" + _tuple(_row(rng, i)), 3)
        writer.end_span()  # inside a transaction: ignored, the transaction keeps its span
        decoder.decode(b"I" + struct.pack(">I", META.oid) + b"N" + _tuple(_row(rng, -i)), 4)
        decoder.decode(b"C" + struct.pack(">BQQq", 0, 9000 + i, 9100 + i, 0), 5)

    rng = random.Random(7)
    for i in range(3):  # one batch: the stream drains after each, within the span's window
        transaction(i)
        writer.end_span(time.monotonic())
    writer.end_span(time.monotonic() + changes.SPAN_WINDOW_S)  # the window is over
    transaction(3)  # the next batch
    writer.end_span()
    writer.end_span()  # nothing open: harmless
    for i in range(4, 4 + 2 * changes.SPAN_MAX_TRANSACTIONS + 1):  # a backlog never drains
        transaction(i)
    writer.close()
    sink._producer.purge()

    spans = exporter.get_finished_spans()
    counts = [span.attributes["freshet.transactions"] for span in spans]
    assert counts == [3, 1, changes.SPAN_MAX_TRANSACTIONS, changes.SPAN_MAX_TRANSACTIONS, 1]
    assert {span.name for span in spans} == {"ingest.transactions"}
    assert spans[0].attributes["db.postgresql.xid"] == 100
    assert spans[0].attributes["db.postgresql.last_xid"] == 102
    # Each event names the span of its batch: the first 6 events the first span, and so on.
    names = [f"{s.context.trace_id:032x}-{s.context.span_id:016x}" for s in spans]
    expected = [names[0]] * 6 + [names[1]] * 2
    for n in range(3):
        expected += [names[2 + n]] * 2 * counts[2 + n]
    assert [headers["traceparent"].decode()[3:-3] for _, _, headers in sink.sent] == expected
