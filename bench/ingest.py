"""Ingest benchmark: PostgreSQL -> Kafka, the real service as a separate process.

One run starts its own Tansu broker and a durable PostgreSQL 15 (fsync on) in a temporary
directory, registers a source (``snapshot: never``) through ``freshet.control.sources`` exactly
as control does, runs ``python -m freshet.ingest`` as its own process, and measures:

1. **Latency commit -> Kafka** at a paced rate, on the running source: a writer process
   commits INSERT transactions (single-row, then 10-row) on a fixed schedule and records the
   clock when each COMMIT returned; a consumer started before the workload records when each
   event arrives. Baseline: the broker alone (a plain producer with ingest's settings, the same
   rate, size and consumer).
2. **Throughput from a backlog.** A slot for ``pg_recvlogical`` is created next to ingest's,
   ingest stops (SIGTERM), a backlog of single-row INSERTs (transactions of 100 rows)
   interleaved with UPDATE transactions is committed; ``pg_recvlogical`` (pgoutput, proto 1,
   to /dev/null, ``--endpos``) reads it first, then ingest starts again with a consumer
   already counting the topic, timed from the moment its walsender holds the slot (=
   ``streaming``; process start-up is reported apart) to the last event in Kafka.

Nothing here is a timed assertion: the figures are printed and written to BENCHMARKS.md.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from pydantic import SecretStr

from bench import common
from freshet.common import codec, topics
from freshet.common.kafka import (
    consumer_config,
    ensure_topics,
    partitions_of,
    produce_sync,
    producer_config,
    read_to_end,
)
from freshet.common.schemas import PostgresSourceSpec, SourceStatus
from freshet.common.secrets import SecretBox
from freshet.common.topics import TopicSpec
from freshet.devstack import servers
from freshet.ingest.config import IngestSettings

HEADING = "## Ingest (PostgreSQL -> Kafka)"
SOURCE = "bench"
DATABASE = "bench"
SLOT = f"freshet_{SOURCE}"
PUBLICATION = f"freshet_{SOURCE}"
RECV_SLOT = "bench_recvlogical"
ORDERS_TOPIC = topics.cdc_topic(SOURCE, "public", "orders")
TICKS_TOPIC = topics.cdc_topic(SOURCE, "public", "ticks")
FLOOR_TOPIC = "bench.broker-floor"
PARTITIONS = common.PARTITIONS

INGEST_LINGER_MS = IngestSettings.model_fields["ingest_linger_ms"].default
"""The change-event producer's linger.ms (ingest's default); the broker floor uses it too."""

TARGET_THROUGHPUT = 50_000
TARGET_P99_MS = 50.0

SCHEMA = """
CREATE TABLE public.orders (
    id bigint PRIMARY KEY,
    customer_id integer NOT NULL,
    status text NOT NULL,
    amount numeric(12, 2) NOT NULL,
    note text,
    created_at timestamptz NOT NULL DEFAULT now()
) WITH (autovacuum_enabled = false);
CREATE TABLE public.ticks (
    id bigint PRIMARY KEY,
    customer_id integer NOT NULL,
    status text NOT NULL,
    amount numeric(12, 2) NOT NULL,
    note text,
    sent_at_us bigint NOT NULL
) WITH (autovacuum_enabled = false);
CREATE TABLE public.marker (id int);
"""
INSERT_ORDER = (
    "INSERT INTO public.orders (id, customer_id, status, amount, note) VALUES (%s, %s, %s, %s, %s)"
)
UPDATE_ORDER = "UPDATE public.orders SET status = %s, amount = amount + %s WHERE id = %s"
WORDS = ("express", "gift wrap", "leave at door", "fragile", "call first", "weekend", "office")
STATUSES = ("paid", "packed", "shipped", "delivered")


@dataclass
class Settings:
    inserts: int = 200_000
    updates: int = 50_000
    tx_rows: int = 100
    rate: int = 5_000
    seconds: float = 20.0
    warmup_s: float = 2.0
    connections: int = 4
    latency_rows: tuple[int, ...] = (1, 10)
    backlog_rounds: int = 2
    budget_s: float = 290.0
    profile: bool = False


# --- the stack -------------------------------------------------------------------------------


class Stack:
    """Broker, PostgreSQL, ingest and helper processes of one run, all in one temporary dir."""

    def __init__(self, deadline: common.Deadline) -> None:
        self.deadline = deadline
        self.work = Path(tempfile.mkdtemp(prefix="freshet-bench-ingest-"))
        self.work.chmod(0o755)  # the postgres account must reach its data dir
        self._servers: list[servers.Managed] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._children: list[Any] = []
        self.secret_key = SecretBox.generate_key()
        self.pg_password = uuid.uuid4().hex
        self.bootstrap = ""
        self.pg: servers.PgInfo | None = None
        self.pg_version = ""
        self.ingest: subprocess.Popen[Any] | None = None
        self.ingest_log: Path | None = None
        self.failed = False

    # servers

    def start_servers(self) -> None:
        kafka_port = servers.free_port()
        self._servers.append(servers.start_kafka(kafka_port, self.work / "tansu.log"))
        self.bootstrap = f"127.0.0.1:{kafka_port}"
        data = self.work / "pg"
        servers.init_postgres(data, self.pg_password)
        pg_port = servers.free_port()
        self._servers.append(
            servers.start_postgres(data, pg_port, self.work / "postgres.log", durable=True)
        )
        self.pg = servers.PgInfo("127.0.0.1", pg_port, "postgres", self.pg_password)
        with psycopg.connect(self.pg.conninfo(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {DATABASE}")
            row = admin.execute("SHOW server_version").fetchone()
            self.pg_version = str(row[0]) if row else "?"
            fsync = admin.execute("SHOW fsync").fetchone()
            if not fsync or fsync[0] != "on":
                raise common.BenchError("PostgreSQL runs with fsync off; the bench needs it on")
        ensure_topics(self.bootstrap, topics.control_topics(PARTITIONS))
        # The change topics exist before the consumers that measure them start; ingest leaves
        # existing topics as they are. FLOOR_TOPIC is for the broker's own latency.
        ensure_topics(
            self.bootstrap,
            [TopicSpec(t, PARTITIONS) for t in (ORDERS_TOPIC, TICKS_TOPIC, FLOOR_TOPIC)],
        )

    @property
    def broker_pid(self) -> int:
        return self._servers[0].proc.pid

    def conninfo(self) -> str:
        assert self.pg is not None
        return self.pg.conninfo(DATABASE)

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.conninfo(), autocommit=True)

    # ingest, as it is deployed: its own process, configured by environment variables

    def start_ingest(self, tag: str) -> subprocess.Popen[Any]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHET_")}
        env.update(
            FRESHET_KAFKA_BOOTSTRAP=self.bootstrap,
            FRESHET_SECRET_KEY=self.secret_key,
            FRESHET_INGEST_PORT=str(servers.free_port()),
            FRESHET_INGEST_SPOOL_DIR=str(self.work / "spool"),
            FRESHET_TOPIC_PARTITIONS=str(PARTITIONS),
        )
        self.ingest_log = self.work / f"ingest-{tag}.log"
        with open(self.ingest_log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "freshet.ingest"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.work,
                start_new_session=True,
            )
        self._procs.append(proc)
        self.ingest = proc
        return proc

    def stop_ingest(self) -> None:
        common.stop_process(self.ingest, timeout=45)
        self.ingest = None

    def spawn(self, cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[Any]:
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        self._procs.append(proc)
        return proc

    def adopt(self, child: Any) -> None:
        """A multiprocessing child to terminate on cleanup."""
        self._children.append(child)

    def check_ingest(self) -> None:
        if self.ingest is not None and self.ingest.poll() is not None:
            raise common.BenchError(
                f"ingest exited with {self.ingest.returncode}; last lines of "
                f"{self.ingest_log}:\n{common.tail(self.ingest_log) if self.ingest_log else ''}"
            )

    def close(self) -> None:
        for child in self._children:
            with contextlib.suppress(Exception):
                if child.is_alive():
                    child.terminate()
                child.join(10)
                if child.is_alive():
                    child.kill()
        for proc in reversed(self._procs):
            with contextlib.suppress(Exception):
                common.stop_process(proc, timeout=45)
        for managed in reversed(self._servers):
            with contextlib.suppress(Exception):
                managed.stop()
        if self.failed:
            keep = Path(tempfile.mkdtemp(prefix="freshet-bench-ingest-logs-"))
            for log in self.work.glob("*.log"):
                with contextlib.suppress(OSError):
                    shutil.copy(log, keep / log.name)
            print(f"bench: logs of the failed run are in {keep}", file=sys.stderr)
        shutil.rmtree(self.work, ignore_errors=True)


# --- control-plane side: register the source, read its status -------------------------------


def register_source(stack: Stack) -> None:
    assert stack.pg is not None
    box = SecretBox(SecretStr(stack.secret_key))
    spec = PostgresSourceSpec(
        name=SOURCE,
        host=stack.pg.host,
        port=stack.pg.port,
        database=DATABASE,
        user=stack.pg.user,
        password_encrypted=box.encrypt(SecretStr(stack.pg.password)),
        tables=("public.orders", "public.ticks"),
        snapshot="never",
        slot_name=SLOT,
        publication_name=PUBLICATION,
    )
    producer = Producer(producer_config(stack.bootstrap))
    produce_sync(
        producer,
        topics.CONTROL_SOURCES,
        spec.name.encode(),
        codec.dumps(spec.model_dump(mode="json")),
    )
    producer.flush(10)


def source_status(bootstrap: str) -> SourceStatus | None:
    consumer = Consumer(consumer_config(bootstrap, f"bench-status-{uuid.uuid4().hex[:8]}"))
    key = topics.status_key("source", SOURCE).encode()
    found: SourceStatus | None = None
    try:
        for msg in read_to_end(consumer, topics.STATUS, timeout=10):
            if msg.key() == key:
                raw = msg.value()
                found = SourceStatus.model_validate(codec.loads(raw)) if raw else None
    finally:
        consumer.close()
    return found


def wait_streaming(stack: Stack, timeout: float) -> float:
    """Wait for status ``streaming``; return the seconds it took."""
    started = time.monotonic()
    deadline = started + stack.deadline.cap(timeout)
    last: SourceStatus | None = None
    while time.monotonic() < deadline:
        stack.check_ingest()
        last = source_status(stack.bootstrap)
        if last is not None and last.state == "streaming":
            return time.monotonic() - started
        time.sleep(0.3)
    raise common.BenchError(f"the source never reported streaming; last status: {last}")


def slot_state(conn: psycopg.Connection[Any], slot: str) -> tuple[int | None, int]:
    """(walsender pid or None, confirmed_flush_lsn as an integer) of a slot."""
    row = conn.execute(
        "SELECT active_pid, (confirmed_flush_lsn - '0/0'::pg_lsn)::bigint "
        "FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    ).fetchone()
    if row is None:
        raise common.BenchError(f"replication slot {slot} does not exist")
    return row[0], int(row[1] or 0)


def current_lsn(conn: psycopg.Connection[Any]) -> tuple[int, str]:
    row = conn.execute(
        "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint, pg_current_wal_lsn()::text"
    ).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


# --- phase 1: the backlog --------------------------------------------------------------------


@dataclass
class Backlog:
    inserts: int
    updates: int
    transactions: int
    seconds: float
    start_lsn: int
    end_lsn: int
    end_lsn_text: str

    @property
    def changes(self) -> int:
        return self.inserts + self.updates

    @property
    def wal_mib(self) -> float:
        return (self.end_lsn - self.start_lsn) / 1024 / 1024


def write_backlog(stack: Stack, settings: Settings, first_id: int) -> Backlog:
    """Commit ``inserts`` single-row INSERTs in transactions of ``tx_rows``, interleaved with
    transactions of ``tx_rows`` single-row UPDATEs of existing rows so that updates keep pace
    with inserts (one update transaction per four insert transactions by default)."""
    rng = random.Random(first_id)
    every = max(1, settings.inserts // max(1, settings.updates))
    with stack.connect() as admin:
        start_lsn, _ = current_lsn(admin)
    started = time.monotonic()
    inserted = updated = transactions = 0
    with psycopg.connect(stack.conninfo()) as conn, conn.cursor() as cur:
        next_id = first_id
        while inserted < settings.inserts:
            n = min(settings.tx_rows, settings.inserts - inserted)
            rows = []
            for i in range(next_id, next_id + n):
                customer = rng.randrange(1, 50_000)
                rows.append(
                    (
                        i,
                        customer,
                        "new",
                        f"{rng.randrange(100, 1_000_000) / 100:.2f}",
                        f"order {i} of customer {customer}: {rng.choice(WORDS)}",
                    )
                )
            cur.executemany(INSERT_ORDER, rows)
            conn.commit()
            transactions += 1
            next_id += n
            inserted += n
            stack.deadline.cap(1)
            # Keep the ratio of updates to inserts over the whole backlog.
            while updated < settings.updates and updated * every < inserted:
                m = min(settings.tx_rows, settings.updates - updated)
                cur.executemany(
                    UPDATE_ORDER,
                    [
                        (
                            rng.choice(STATUSES),
                            f"{rng.randrange(1, 500) / 100:.2f}",
                            rng.randrange(first_id, next_id),
                        )
                        for _ in range(m)
                    ],
                )
                conn.commit()
                transactions += 1
                updated += m
    seconds = time.monotonic() - started
    with stack.connect() as admin:
        end_lsn, end_text = current_lsn(admin)
        # WAL past the end (a table no slot publishes), so a reader at the end of the backlog
        # learns at once that it is there instead of waiting for the next WAL record.
        admin.execute("INSERT INTO public.marker VALUES (1)")
    return Backlog(inserted, updated, transactions, seconds, start_lsn, end_lsn, end_text)


@dataclass
class RecvResult:
    seconds: float
    cpu_s: float
    returncode: int
    machine_busy: float
    machine_steal: float

    def rate(self, changes: int) -> float:
        return changes / self.seconds if self.seconds > 0 else float("nan")


def run_recvlogical(stack: Stack, backlog: Backlog, timeout: float) -> RecvResult:
    assert stack.pg is not None
    env = dict(os.environ, PGPASSWORD=stack.pg.password, PGAPPNAME="bench-pg_recvlogical")
    cmd = [
        str(servers.PG_BIN / "pg_recvlogical"),
        "-h",
        stack.pg.host,
        "-p",
        str(stack.pg.port),
        "-U",
        stack.pg.user,
        "-d",
        DATABASE,
        f"--slot={RECV_SLOT}",
        "--start",
        "--no-loop",
        "-f",
        "/dev/null",
        f"--endpos={backlog.end_lsn_text}",
        "-o",
        "proto_version=1",
        "-o",
        f"publication_names={PUBLICATION}",
    ]
    before, machine0 = os.times(), common.machine_cpu()
    started = time.perf_counter()
    proc = stack.spawn(cmd, stack.work / "pg_recvlogical.log", env)
    try:
        returncode = proc.wait(stack.deadline.cap(timeout))
    except subprocess.TimeoutExpired as exc:
        raise common.BenchError(f"pg_recvlogical did not reach the end within {timeout}s") from exc
    seconds = time.perf_counter() - started
    after, machine1 = os.times(), common.machine_cpu()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    if returncode != 0:
        raise common.BenchError(
            f"pg_recvlogical exited with {returncode}:\n"
            + common.tail(stack.work / "pg_recvlogical.log")
        )
    with stack.connect() as conn:
        _pid, confirmed = slot_state(conn, RECV_SLOT)
    if confirmed < backlog.end_lsn:
        raise common.BenchError("pg_recvlogical exited before the end of the backlog")
    return RecvResult(
        seconds,
        cpu,
        returncode,
        machine1.busy_since(machine0),
        machine1.steal_since(machine0),
    )


class TopicCounter:
    """Counts the records of a topic (from ``start``, else the beginning) as they arrive.

    Records are counted, not decoded, so it costs little CPU next to the service under test.
    """

    def __init__(
        self, bootstrap: str, topic: str, expected: int, start: dict[int, int] | None = None
    ) -> None:
        self._consumer = Consumer(
            consumer_config(
                bootstrap, f"bench-counter-{uuid.uuid4().hex[:8]}", **{"fetch.wait.max.ms": 10}
            )
        )
        parts = partitions_of(self._consumer, topic)
        start = start or {}
        self._consumer.assign(
            [TopicPartition(topic, p, start.get(p, OFFSET_BEGINNING)) for p in parts]
        )
        self.expected = expected
        self.count = 0
        self.first_at: float | None = None
        self.done_at: float | None = None
        self.samples: list[tuple[float, int]] = []
        self.cpu_s = 0.0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="counter", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        cpu0 = time.thread_time()
        try:
            while not self._stop.is_set():
                batch = self._consumer.consume(10_000, 0.02)
                if not batch:
                    continue
                now = time.perf_counter()
                self.count += sum(1 for m in batch if not m.error())
                if self.first_at is None:
                    self.first_at = now
                self.samples.append((now, self.count))
                if self.done_at is None and self.count >= self.expected:
                    self.done_at = now
        except BaseException as exc:  # reported by the main thread
            self.error = exc
        finally:
            self.cpu_s = time.thread_time() - cpu0

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


@dataclass
class CatchUp:
    completed: bool
    startup_s: float  # ingest process start -> its walsender holds the slot ("streaming")
    stream_s: float  # slot held -> the last event of the backlog seen in Kafka
    first_event_s: float  # slot held -> first event seen in Kafka
    steady_rate: float  # changes/s while the topic went from 10% to 90% of the backlog
    confirm_lag_s: float  # last event in Kafka -> slot's confirmed_flush_lsn at the backlog's end
    ingest_cpu_s: float
    walsender_cpu_s: float
    broker_cpu_s: float
    counter_cpu_s: float
    machine_busy: float
    machine_steal: float
    seen: int
    counted: dict[str, int] = field(default_factory=dict)
    profile: str = ""

    def rate(self, changes: int) -> float:
        return changes / self.stream_s if self.completed and self.stream_s > 0 else float("nan")


def measure_catchup(
    stack: Stack,
    backlog: Backlog,
    timeout: float,
    start: dict[int, int] | None,
    profile: bool,
) -> CatchUp:
    counter = TopicCounter(stack.bootstrap, ORDERS_TOPIC, backlog.changes, start)
    counter.start()
    profiler: subprocess.Popen[Any] | None = None
    try:
        with stack.connect() as conn:
            spawned = time.perf_counter()
            proc = stack.start_ingest("catchup")
            limit = spawned + stack.deadline.cap(timeout)
            walsender = 0
            while time.perf_counter() < limit:
                walsender = slot_state(conn, SLOT)[0] or 0
                if walsender:
                    break
                stack.check_ingest()
                time.sleep(0.005)
            else:
                raise common.BenchError(f"ingest never started streaming within {timeout:.0f}s")
            active_at = time.perf_counter()
            cpu0 = (
                common.cpu_seconds(proc.pid),
                common.cpu_seconds(walsender),
                common.cpu_seconds(stack.broker_pid),
            )
            machine0 = common.machine_cpu()
            if profile:
                profiler = start_profiler(stack, proc.pid)
            while counter.done_at is None and time.perf_counter() < limit:
                if counter.error is not None:
                    raise common.BenchError(f"the counting consumer failed: {counter.error}")
                stack.check_ingest()
                time.sleep(0.01)
            cpu1 = (
                common.cpu_seconds(proc.pid),
                common.cpu_seconds(walsender),
                common.cpu_seconds(stack.broker_pid),
            )
            machine1 = common.machine_cpu()
            profile_text = ""
            if profiler is not None:
                profile_text = stop_profiler(stack, profiler)
                profiler = None
            # How long until the slot learns that everything is delivered (its WAL is freed,
            # and a restart would not replay the backlog).
            confirm_lag = float("nan")
            if counter.done_at is not None:
                confirm_limit = time.perf_counter() + stack.deadline.cap(20)
                while time.perf_counter() < confirm_limit:
                    if slot_state(conn, SLOT)[1] >= backlog.end_lsn:
                        confirm_lag = time.perf_counter() - counter.done_at
                        break
                    time.sleep(0.01)
    finally:
        if profiler is not None:
            stop_profiler(stack, profiler)
        counter.close()
    done_at = counter.done_at
    end = done_at if done_at is not None else time.perf_counter()
    return CatchUp(
        completed=done_at is not None,
        startup_s=active_at - spawned,
        stream_s=end - active_at,
        first_event_s=(counter.first_at - active_at) if counter.first_at else float("nan"),
        steady_rate=_steady_rate(counter.samples, backlog.changes),
        confirm_lag_s=confirm_lag,
        ingest_cpu_s=cpu1[0] - cpu0[0],
        walsender_cpu_s=cpu1[1] - cpu0[1],
        broker_cpu_s=cpu1[2] - cpu0[2],
        counter_cpu_s=counter.cpu_s,
        machine_busy=machine1.busy_since(machine0),
        machine_steal=machine1.steal_since(machine0),
        seen=counter.count,
        profile=profile_text,
    )


def _steady_rate(samples: list[tuple[float, int]], expected: int) -> float:
    """Changes/s while the topic went from 10% to 90% of the expected events."""
    low = next(((t, n) for t, n in samples if n >= expected // 10), None)
    high = next(((t, n) for t, n in samples if n >= expected * 9 // 10), None)
    if low is None or high is None or high[0] <= low[0]:
        return float("nan")
    return (high[1] - low[1]) / (high[0] - low[0])


def count_topic(
    bootstrap: str, topic: str, expected: int, timeout: float, start: dict[int, int] | None
) -> tuple[dict[str, int], dict[int, int]]:
    """Read ``topic`` from ``start`` (or the beginning) to its end (the fetch high watermark);
    count the events by op. Returns the counts and the end offsets."""
    consumer = Consumer(
        consumer_config(
            bootstrap, f"bench-count-{uuid.uuid4().hex[:8]}", **{"fetch.wait.max.ms": 10}
        )
    )
    counts: dict[str, int] = {}
    try:
        parts = partitions_of(consumer, topic)
        start = start or {}
        consumer.assign([TopicPartition(topic, p, start.get(p, OFFSET_BEGINNING)) for p in parts])
        deadline = time.monotonic() + timeout
        seen = {p: start.get(p, 0) for p in parts}
        while time.monotonic() < deadline:
            for msg in consumer.consume(10_000, 0.2):
                if msg.error():
                    continue
                seen[msg.partition() or 0] = (msg.offset() or 0) + 1
                value = msg.value()
                op = orjson.loads(value)["op"] if value is not None else "tombstone"
                counts[op] = counts.get(op, 0) + 1
            ends = [
                consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)[1]
                for p in parts
            ]
            at_end = all(h >= 0 and seen[p] >= h for p, h in zip(parts, ends, strict=True))
            if at_end and sum(counts.values()) >= expected:
                break
    finally:
        consumer.close()
    return counts, seen


# --- profiling (optional, --profile) ---------------------------------------------------------


def start_profiler(stack: Stack, pid: int) -> subprocess.Popen[Any] | None:
    py_spy = shutil.which("py-spy") or os.environ.get("PY_SPY")
    if not py_spy:
        print("bench: --profile needs py-spy on PATH (or PY_SPY=/path/to/py-spy)", file=sys.stderr)
        return None
    out = stack.work / "profile.txt"
    return stack.spawn(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "250",
            "--idle",
            "--threads",
            "--nonblocking",
            "--format",
            "raw",
            "-o",
            str(out),
        ],
        stack.work / "py-spy.log",
        dict(os.environ),
    )


def stop_profiler(stack: Stack, proc: subprocess.Popen[Any]) -> str:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(2)  # SIGINT: py-spy writes its output and exits
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(30)
    path = stack.work / "profile.txt"
    if not path.exists():
        return ""
    kept = Path(tempfile.gettempdir()) / "freshet-bench-ingest-profile.txt"
    shutil.copy(path, kept)
    print(f"bench: py-spy samples (raw, collapsed, with idle) in {kept}", file=sys.stderr)
    return summarize_profile(path.read_text())


def summarize_profile(raw: str, top: int = 30) -> str:
    """Where ingest's source thread spent its time, from a py-spy ``raw`` file recorded with
    ``--threads --idle``: inclusive and self shares of the busiest functions."""
    incl: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in raw.splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        frames = stack_text.split(";")
        if not count_text.isdigit() or "source-" not in frames[0]:
            continue  # other threads: the reconciler loop, span exporter, health server
        count = int(count_text)
        total += count
        names = [_frame(f) for f in frames[1:]] or ["?"]
        own[names[-1]] = own.get(names[-1], 0) + count
        for name in set(names):
            incl[name] = incl.get(name, 0) + count
    if not total:
        return ""
    lines = [f"source thread: {total} samples (on CPU, waiting for the GIL or for input)", ""]
    lines.append("incl %  self %  function")
    for name, count in sorted(incl.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * count / total:6.1f}  {100 * own.get(name, 0) / total:6.1f}  {name}")
    return "\n".join(lines)


def _frame(frame: str) -> str:
    # "function (path/to/file.py:123)" -> "function (file.py)"
    name, _, where = frame.partition(" (")
    file = where.rsplit("/", 1)[-1].split(":", 1)[0]
    return f"{name} ({file})" if file else name


# --- phase 2: latency at a paced rate --------------------------------------------------------

TICK_COLUMNS = "id, customer_id, status, amount, note, sent_at_us"
TICK_TYPES = ("int8", "int4", "text", "numeric", "text", "int8")


def _tick_sql(rows: int) -> bytes:
    """One INSERT of ``rows`` rows, parameters typed ($1::int8, ...)."""
    groups = []
    for r in range(rows):
        base = r * len(TICK_TYPES)
        groups.append(
            "(" + ", ".join(f"${base + i + 1}::{t}" for i, t in enumerate(TICK_TYPES)) + ")"
        )
    return f"INSERT INTO public.ticks ({TICK_COLUMNS}) VALUES {', '.join(groups)}".encode()


def _writer_main(
    conninfo: str,
    changes_per_s: int,
    rows_per_tx: int,
    transactions: int,
    connections: int,
    first_id: int,
    out_path: str,
) -> None:
    """Child process: commit ``transactions`` INSERT transactions of ``rows_per_tx`` rows
    (autocommit, one statement each) on a fixed schedule of ``changes_per_s`` rows per second,
    spread over ``connections`` connections. Records, per transaction, its first id, the clock
    just before the statement went out and just after COMMIT returned (ns), and the CPU the
    writer and its PostgreSQL backends used.

    Prepared statements through psycopg's low-level ``pq`` layer keep the writer's own CPU
    small: it shares the machine with everything it measures.
    """
    gc.disable()
    conns = [psycopg.connect(conninfo, autocommit=True) for _ in range(connections)]
    for conn in conns:
        res = conn.pgconn.prepare(b"tick", _tick_sql(rows_per_tx))
        if res.status != psycopg.pq.ExecStatus.COMMAND_OK:
            raise RuntimeError((res.error_message or b"").decode())
    backends = [conn.pgconn.backend_pid for conn in conns]
    interval = rows_per_tx / changes_per_s
    results: list[list[tuple[int, int, int]]] = [[] for _ in conns]
    errors: list[BaseException] = []

    def work(j: int) -> None:
        pgconn = conns[j].pgconn
        rng = random.Random(j)
        out = results[j]
        try:
            for i in range(j, transactions, len(conns)):
                delay = start + i * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                first = first_id + i * rows_per_tx
                params: list[bytes] = []
                before = time.time_ns()
                for tick in range(first, first + rows_per_tx):
                    customer = rng.randrange(1, 50_000)
                    params += [
                        str(tick).encode(),
                        str(customer).encode(),
                        b"new",
                        b"12.50",
                        f"tick {tick} of customer {customer}".encode(),
                        str(before // 1000).encode(),
                    ]
                res = pgconn.exec_prepared(b"tick", params)
                after = time.time_ns()
                if res.status != psycopg.pq.ExecStatus.COMMAND_OK:
                    raise RuntimeError((res.error_message or b"").decode())
                out.append((first, before, after))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(j,)) for j in range(len(conns))]
    cpu0 = time.process_time()
    backends0 = sum(common.cpu_seconds(pid) for pid in backends)
    start = time.monotonic() + 0.2
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    window = time.monotonic() - start
    cpu = time.process_time() - cpu0
    backends_cpu = sum(common.cpu_seconds(pid) for pid in backends) - backends0
    for conn in conns:
        conn.close()
    if errors:
        raise errors[0]
    Path(out_path).write_bytes(
        orjson.dumps(
            {
                "commits": [r for part in results for r in part],
                "writer_cpu_s": cpu,
                "backends_cpu_s": backends_cpu,
                "window_s": window,
            }
        )
    )


class ArrivalRecorder:
    """Consumes a topic from where it ends now and stamps each event on arrival.

    Events are identified by ``after.id``; ``ts_us`` is when the producer built them. The
    topic is read from the beginning: earlier records are skipped by id.
    """

    def __init__(
        self, bootstrap: str, topic: str, first_id: int, start: dict[int, int] | None = None
    ) -> None:
        self._consumer = Consumer(
            consumer_config(
                bootstrap,
                f"bench-latency-{uuid.uuid4().hex[:8]}",
                **{"fetch.wait.max.ms": 10, "fetch.min.bytes": 1},
            )
        )
        parts = partitions_of(self._consumer, topic)
        start = start or {}
        self._assignment = [TopicPartition(topic, p, start.get(p, OFFSET_BEGINNING)) for p in parts]
        self._consumer.assign(self._assignment)
        self._first_id = first_id
        self.arrivals: dict[int, tuple[int, int]] = {}  # id -> (arrival ns, producer's ts_us)
        self.duplicates = 0
        self.value_bytes = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="arrivals", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        # One poll() per event, stamped as it returns: consume(n, timeout) returns only when
        # it has n events or the timeout passed, so it would stamp a batch up to that late.
        try:
            while not self._stop.is_set():
                msg = self._consumer.poll(0.02)
                now = time.time_ns()
                if msg is None:
                    continue
                value = msg.value()
                if msg.error() or value is None:
                    continue
                event = orjson.loads(value)
                tick = int(event["after"]["id"])
                if tick < self._first_id:
                    continue
                if tick in self.arrivals:
                    self.duplicates += 1
                    continue
                self.arrivals[tick] = (now, int(event["ts_us"]))
                self.value_bytes += len(value)
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def wait_for(self, ids: int, stack: Stack, seconds: float) -> None:
        until = time.monotonic() + stack.deadline.cap(seconds)
        while len(self.arrivals) < ids and time.monotonic() < until:
            if self.error is not None:
                raise common.BenchError(f"the latency consumer failed: {self.error}")
            time.sleep(0.05)

    def close(self) -> dict[int, int]:
        """Stop; return where it got to per partition (a later reader can start there)."""
        self._stop.set()
        self._thread.join(10)
        positions = {
            tp.partition: tp.offset
            for tp in self._consumer.position(self._assignment)
            if tp.offset >= 0
        }
        self._consumer.close()
        return positions


def _ms(values: Sequence[float]) -> list[float]:
    return sorted(v / 1e6 for v in values)


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """No garbage-collector pauses in the measuring process while it stamps arrivals."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


@dataclass
class Latency:
    rows_per_tx: int
    changes_per_s: int
    committed: int
    measured: int
    missing: int
    duplicates: int
    achieved_rate: float
    to_consumer_ms: list[float]  # COMMIT returned -> consumer got the event
    before_commit_ms: list[float]  # statement sent -> consumer got the event
    to_emit_ms: list[float]  # COMMIT returned -> ingest built the event (its ts_us)
    emit_to_consumer_ms: list[float]  # ingest built the event -> consumer got it
    commit_ms: list[float]  # the INSERT + COMMIT round trip itself
    event_bytes: float
    seconds: float
    cpu: dict[str, float]  # share of one core per part, during the phase
    machine_busy: float  # share of all CPUs busy during the phase
    machine_steal: float  # share of all CPU time stolen by the hypervisor
    # (COMMIT returned ns, event built ns, consumer received ns) per measured event, for analysis
    samples: list[tuple[int, int, int]] = field(default_factory=list, repr=False)
    # where the consumer got to in the topic, so the next workload's reader starts there
    positions: dict[int, int] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return common.percentile(self.to_consumer_ms, 99) <= TARGET_P99_MS and not self.missing


def measure_latency(
    stack: Stack,
    settings: Settings,
    rows_per_tx: int,
    first_id: int,
    start: dict[int, int] | None = None,
) -> Latency:
    transactions = int(settings.rate * (settings.warmup_s + settings.seconds)) // rows_per_tx
    recorder = ArrivalRecorder(stack.bootstrap, TICKS_TOPIC, first_id, start)
    recorder.start()
    out_path = stack.work / f"writer-{rows_per_tx}.json"
    writer = multiprocessing.get_context("spawn").Process(
        target=_writer_main,
        args=(
            stack.conninfo(),
            settings.rate,
            rows_per_tx,
            transactions,
            settings.connections,
            first_id,
            str(out_path),
        ),
        name="bench-writer",
        daemon=True,
    )
    assert stack.ingest is not None
    ingest_pid = stack.ingest.pid
    with stack.connect() as conn:
        walsender = slot_state(conn, SLOT)[0] or 0
    pids = {"ingest": ingest_pid, "its walsender": walsender, "broker": stack.broker_pid}
    try:
        with _no_gc():
            cpu0 = {name: common.cpu_seconds(pid) for name, pid in pids.items()}
            own0, machine0 = common.own_cpu_seconds(), common.machine_cpu()
            started = time.monotonic()
            writer.start()
            stack.adopt(writer)
            writer.join(stack.deadline.cap(settings.warmup_s + settings.seconds + 60))
            seconds = time.monotonic() - started
            cpu1 = {name: common.cpu_seconds(pid) for name, pid in pids.items()}
            own1, machine1 = common.own_cpu_seconds(), common.machine_cpu()
            if writer.is_alive() or writer.exitcode != 0 or not out_path.exists():
                raise common.BenchError(f"the latency writer failed (exit code {writer.exitcode})")
            written = orjson.loads(out_path.read_bytes())
            commits: list[list[int]] = written["commits"]
            recorder.wait_for(len(commits) * rows_per_tx, stack, 20)
            stack.check_ingest()
    finally:
        positions = recorder.close()
    cpu = {name: (cpu1[name] - cpu0[name]) / seconds for name in pids}
    cpu["PostgreSQL backends of the writer"] = written["backends_cpu_s"] / written["window_s"]
    cpu["writer"] = written["writer_cpu_s"] / written["window_s"]
    cpu["bench consumer"] = (own1 - own0) / seconds
    warm = first_id + int(settings.rate * settings.warmup_s)
    measured = [c for c in commits if c[0] >= warm]
    to_consumer, before, to_emit, emit_to_consumer, commit = [], [], [], [], []
    samples: list[tuple[int, int, int]] = []
    missing = 0
    for first, before_ns, after_ns in measured:
        commit.append(after_ns - before_ns)
        for tick in range(first, first + rows_per_tx):
            seen = recorder.arrivals.get(tick)
            if seen is None:
                missing += 1
                continue
            arrival_ns, emit_us = seen
            to_consumer.append(arrival_ns - after_ns)
            before.append(arrival_ns - before_ns)
            to_emit.append(emit_us * 1000 - after_ns)
            emit_to_consumer.append(arrival_ns - emit_us * 1000)
            samples.append((after_ns, emit_us * 1000, arrival_ns))
    window = (max(c[2] for c in measured) - min(c[2] for c in measured)) / 1e9 if measured else 0
    return Latency(
        rows_per_tx=rows_per_tx,
        changes_per_s=settings.rate,
        committed=len(commits) * rows_per_tx,
        measured=len(measured) * rows_per_tx,
        missing=missing,
        duplicates=recorder.duplicates,
        achieved_rate=(len(measured) - 1) * rows_per_tx / window if window > 0 else float("nan"),
        to_consumer_ms=_ms(to_consumer),
        before_commit_ms=_ms(before),
        to_emit_ms=_ms(to_emit),
        emit_to_consumer_ms=_ms(emit_to_consumer),
        commit_ms=_ms(commit),
        event_bytes=recorder.value_bytes / max(1, len(recorder.arrivals)),
        seconds=seconds,
        cpu=cpu,
        machine_busy=machine1.busy_since(machine0),
        machine_steal=machine1.steal_since(machine0),
        samples=samples,
        positions=positions,
    )


@dataclass
class Floor:
    """The broker's own latency: a plain producer with ingest's producer settings, same rate,
    same consumer settings, events of the same size."""

    sent: int
    missing: int
    to_consumer_ms: list[float]  # produce() called -> consumer got it
    ack_ms: list[float]  # produce() called -> delivery report (acks=all)
    achieved_rate: float
    broker_cpu: float  # share of one core


def measure_floor(stack: Stack, settings: Settings, event_bytes: float) -> Floor:
    recorder = ArrivalRecorder(stack.bootstrap, FLOOR_TOPIC, 1)
    recorder.start()
    producer = Producer(producer_config(stack.bootstrap, **{"linger.ms": INGEST_LINGER_MS}))
    total = int(settings.rate * (settings.warmup_s + settings.seconds))
    pad = "x" * max(0, int(event_bytes) - 60)
    sent: list[int] = [0] * total
    acked: list[int] = [0] * total

    def on_delivery(index: int, err: Any, _msg: Any) -> None:
        if err is None:
            acked[index] = time.time_ns()

    try:
        with _no_gc():
            time.sleep(1.0)  # a new idempotent producer needs a moment before its first send
            cpu0 = common.cpu_seconds(stack.broker_pid)
            start = time.monotonic() + 0.2
            interval = 1.0 / settings.rate
            for i in range(total):
                delay = start + i * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                now = time.time_ns()
                value = orjson.dumps({"after": {"id": i + 1}, "ts_us": now // 1000, "pad": pad})
                producer.produce(
                    FLOOR_TOPIC,
                    value,
                    orjson.dumps({"id": i + 1}),
                    on_delivery=functools.partial(on_delivery, i),
                )
                sent[i] = now
                producer.poll(0)
            elapsed = time.monotonic() - start
            broker_cpu = (common.cpu_seconds(stack.broker_pid) - cpu0) / elapsed
            producer.flush(stack.deadline.cap(30))
            recorder.wait_for(total, stack, 20)
    finally:
        recorder.close()
    warm = int(settings.rate * settings.warmup_s)
    to_consumer, ack = [], []
    missing = 0
    for i in range(warm, total):
        seen = recorder.arrivals.get(i + 1)
        if seen is None:
            missing += 1
            continue
        to_consumer.append(seen[0] - sent[i])
        if acked[i]:
            ack.append(acked[i] - sent[i])
    return Floor(
        sent=total - warm,
        missing=missing,
        to_consumer_ms=_ms(to_consumer),
        ack_ms=_ms(ack),
        achieved_rate=total / elapsed if elapsed > 0 else float("nan"),
        broker_cpu=broker_cpu,
    )


# --- the whole run ---------------------------------------------------------------------------


@dataclass
class Round:
    """One backlog, read by ``pg_recvlogical`` and then by ingest."""

    backlog: Backlog
    unconfirmed_before: int  # WAL bytes ingest's slot had not confirmed before the backlog
    recv: RecvResult
    catchup: CatchUp


@dataclass
class Result:
    settings: Settings
    pg_version: str
    tansu_version: str
    first_streaming_s: float
    latencies: list[Latency]
    floor: Floor
    rounds: list[Round]
    total_s: float
    load_before: str


def stop_ingest_and_release(stack: Stack) -> None:
    stack.stop_ingest()
    with stack.connect() as conn:
        for _ in range(100):
            if slot_state(conn, SLOT)[0] is None:
                return
            time.sleep(0.1)
    raise common.BenchError("the slot stayed active after ingest stopped")


def run(settings: Settings | None = None) -> Result:
    settings = settings or Settings()
    began = time.monotonic()
    load_before = common.load_average()
    deadline = common.Deadline(settings.budget_s)
    stack = Stack(deadline)
    try:
        _log("starting Tansu and PostgreSQL (fsync on) in %s", stack.work)
        stack.start_servers()
        with stack.connect() as conn:
            conn.execute(SCHEMA)
        register_source(stack)
        stack.start_ingest("first")
        first_streaming = wait_streaming(stack, 90)
        _log("source streaming after %.1fs (first start, new slot)", first_streaming)

        latencies: list[Latency] = []
        first_id = 1
        for rows in settings.latency_rows:
            _log(
                "latency: %d changes/s in transactions of %d row(s) for %.0fs (+%.0fs warm-up)",
                settings.rate,
                rows,
                settings.seconds,
                settings.warmup_s,
            )
            start = latencies[-1].positions if latencies else None
            lat = measure_latency(stack, settings, rows, first_id, start)
            first_id += lat.committed
            latencies.append(lat)
            _log(
                "latency: %s changes/s achieved, commit -> consumer p50 %s p99 %s",
                common.fmt_int(lat.achieved_rate),
                common.fmt_ms(common.percentile(lat.to_consumer_ms, 50)),
                common.fmt_ms(common.percentile(lat.to_consumer_ms, 99)),
            )

        with stack.connect() as conn:
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (RECV_SLOT,))
        stop_ingest_and_release(stack)
        floor = measure_floor(stack, settings, latencies[0].event_bytes)
        _log(
            "broker alone: produce -> consumer p50 %s p99 %s",
            common.fmt_ms(common.percentile(floor.to_consumer_ms, 50)),
            common.fmt_ms(common.percentile(floor.to_consumer_ms, 99)),
        )

        rounds: list[Round] = []
        positions: dict[int, int] | None = None
        first_order = 1
        for n in range(1, settings.backlog_rounds + 1):
            if n > 1:
                stop_ingest_and_release(stack)
            with stack.connect() as conn:
                unconfirmed = current_lsn(conn)[0] - slot_state(conn, SLOT)[1]
            _log(
                "round %d: writing the backlog: %d inserts + %d updates, %d rows per transaction",
                n,
                settings.inserts,
                settings.updates,
                settings.tx_rows,
            )
            backlog = write_backlog(stack, settings, first_order)
            first_order += backlog.inserts
            _log(
                "round %d: %d changes in %d transactions, %.1f MiB of WAL, written in %.1fs",
                n,
                backlog.changes,
                backlog.transactions,
                backlog.wal_mib,
                backlog.seconds,
            )
            recv = run_recvlogical(stack, backlog, 120)
            _log(
                "round %d: pg_recvlogical %.2fs, %s changes/s",
                n,
                recv.seconds,
                common.fmt_int(recv.rate(backlog.changes)),
            )
            catchup = measure_catchup(stack, backlog, 150, positions, settings.profile and n == 1)
            _log(
                "round %d: ingest start-up %.1fs, stream %.2fs, %s changes/s%s",
                n,
                catchup.startup_s,
                catchup.stream_s,
                common.fmt_int(catchup.rate(backlog.changes)),
                "" if catchup.completed else " (DID NOT FINISH)",
            )
            catchup.counted, positions = count_topic(
                stack.bootstrap, ORDERS_TOPIC, backlog.changes, deadline.cap(60), positions
            )
            _log("round %d: the topic got %s", n, catchup.counted)
            rounds.append(Round(backlog, unconfirmed, recv, catchup))
        stack.stop_ingest()
        return Result(
            settings=settings,
            pg_version=stack.pg_version,
            tansu_version=tansu_version(),
            first_streaming_s=first_streaming,
            latencies=latencies,
            floor=floor,
            rounds=rounds,
            total_s=time.monotonic() - began,
            load_before=load_before,
        )
    except BaseException:
        stack.failed = True
        if stack.ingest_log is not None:
            print(
                f"bench: last lines of {stack.ingest_log.name}:\n{common.tail(stack.ingest_log)}",
                file=sys.stderr,
            )
        raise
    finally:
        stack.close()


def tansu_version() -> str:
    try:
        out = subprocess.run(
            [str(servers.tansu_binary()), "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError, servers.ServerError):
        return "Tansu (version unknown)"
    return out.replace("tansu", "Tansu") or "Tansu (version unknown)"


def _log(fmt: str, *args: Any) -> None:
    print("bench ingest: " + (fmt % args if args else fmt), file=sys.stderr, flush=True)


# --- the report ------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _pair(values: list[float]) -> str:
    return (
        f"{common.fmt_ms(common.percentile(values, 50))} / "
        f"{common.fmt_ms(common.percentile(values, 99))}"
    )


def _quantiles(values: list[float], bold_p99: bool) -> str:
    pct = common.percentile
    p99 = common.fmt_ms(pct(values, 99))
    return " | ".join(
        [
            common.fmt_ms(pct(values, 50)),
            common.fmt_ms(pct(values, 95)),
            f"**{p99}**" if bold_p99 else p99,
            common.fmt_ms(values[-1] if values else float("nan")),
        ]
    )


def _busy(busy: float, steal: float) -> str:
    return f"{100 * busy:.0f}% ({100 * steal:.0f}%)"


def _tx_label(rows: int) -> str:
    return "single-row transactions" if rows == 1 else f"transactions of {rows} rows"


def _from_first(rd: Round) -> float:
    c, n = rd.catchup, rd.backlog.changes
    ok = c.completed and c.stream_s > c.first_event_s
    return n / (c.stream_s - c.first_event_s) if ok else float("nan")


def report(r: Result) -> str:
    s, fl, rounds = r.settings, r.floor, r.rounds
    b0 = rounds[0].backlog

    def cells(fmt: Any) -> str:
        return " | ".join(fmt(rd) for rd in rounds)

    worst = min(rd.catchup.rate(rd.backlog.changes) for rd in rounds)
    all_done = all(rd.catchup.completed for rd in rounds)
    throughput = [
        f"Throughput from a backlog of {b0.changes:,} changes, {len(rounds)} rounds (target >= "
        f"{TARGET_THROUGHPUT:,} changes/s on 2 cores; the verdict takes the slower round):",
        "",
        "| reader of the same backlog, same run, changes/s | "
        + " | ".join(f"round {n}" for n in range(1, len(rounds) + 1))
        + " | vs target |",
        "|---|" + "---|" * len(rounds) + "---|",
        "| **Freshet ingest -> Kafka**, from `streaming` to the last event in Kafka | "
        + cells(
            lambda rd: (
                f"**{common.fmt_int(rd.catchup.rate(rd.backlog.changes))}** "
                f"({rd.catchup.stream_s:.2f} s)"
            )
        )
        + f" | {_verdict(all_done and worst >= TARGET_THROUGHPUT)} |",
        "| Freshet ingest, from the first to the last event in Kafka | "
        + cells(lambda rd: common.fmt_int(_from_first(rd)))
        + " | |",
        "| Freshet ingest, steady part (10% -> 90% of the events in Kafka) | "
        + cells(lambda rd: common.fmt_int(rd.catchup.steady_rate))
        + " | |",
        "| baseline: `pg_recvlogical` pgoutput -> /dev/null | "
        + cells(
            lambda rd: (
                f"**{common.fmt_int(rd.recv.rate(rd.backlog.changes))}** ({rd.recv.seconds:.2f} s)"
            )
        )
        + " | |",
        "| machine busy (steal) while ingest / `pg_recvlogical` read | "
        + cells(
            lambda rd: (
                f"{_busy(rd.catchup.machine_busy, rd.catchup.machine_steal)} / "
                f"{_busy(rd.recv.machine_busy, rd.recv.machine_steal)}"
            )
        )
        + " | |",
        "",
        "Ingest reached "
        + " / ".join(
            f"{100 * rd.catchup.rate(rd.backlog.changes) / rd.recv.rate(rd.backlog.changes):.0f}%"
            for rd in rounds
        )
        + " of `pg_recvlogical`'s rate.",
    ]
    latency = [
        f"Latency commit -> Kafka at {s.rate:,} changes/s, measured as COMMIT returned -> a Kafka "
        f"consumer received the event (target p99 <= {TARGET_P99_MS:.0f} ms):",
        "",
        "| workload | achieved changes/s | p50 | p95 | p99 | max | vs target |",
        "|---|---|---|---|---|---|---|",
    ]
    for lat in r.latencies:
        latency.append(
            f"| Freshet ingest, {_tx_label(lat.rows_per_tx)} "
            f"| {common.fmt_int(lat.achieved_rate)} | {_quantiles(lat.to_consumer_ms, True)} "
            f"| {_verdict(lat.ok)} |"
        )
    latency.append(
        "| baseline: the broker alone (plain producer with ingest's settings -> same consumer) "
        f"| {common.fmt_int(fl.achieved_rate)} | {_quantiles(fl.to_consumer_ms, False)} | |"
    )
    latency += [
        "",
        "Where the time goes, p50 / p99 (COMMIT returned -> ingest built the event, from the "
        "event's `ts_us`; event built -> consumer received it):",
        "",
        "| workload | COMMIT round trip | COMMIT -> event built | event built -> consumer "
        "| CPU, share of one core | machine busy (steal) |",
        "|---|---|---|---|---|---|",
    ]
    for lat in r.latencies:
        cpu = ", ".join(f"{name} {100 * v:.0f}%" for name, v in lat.cpu.items())
        latency.append(
            f"| {_tx_label(lat.rows_per_tx)} | {_pair(lat.commit_ms)} | {_pair(lat.to_emit_ms)} "
            f"| {_pair(lat.emit_to_consumer_ms)} | {cpu} "
            f"| {_busy(lat.machine_busy, lat.machine_steal)} |"
        )
    latency.append(
        f"| broker alone | | | produce() -> consumer {_pair(fl.to_consumer_ms)}, "
        f"-> acked {_pair(fl.ack_ms)} | broker {100 * fl.broker_cpu:.0f}% | |"
    )

    def per_round(fmt: Any) -> str:
        return " / ".join(fmt(rd) for rd in rounds)

    def confirm(rd: Round) -> str:
        lag = rd.catchup.confirm_lag_s
        return f"{lag:.1f} s" if lag == lag else "more than 20 s"

    def whole(rd: Round) -> str:
        seconds = rd.catchup.startup_s + rd.catchup.stream_s
        return f"{seconds:.1f} s ({common.fmt_int(rd.backlog.changes / seconds)} changes/s)"

    def cpu_line(rd: Round) -> str:
        c, n = rd.catchup, rd.backlog.changes
        return (
            f"ingest {c.ingest_cpu_s:.2f} s ({100 * c.ingest_cpu_s / c.stream_s:.0f}% of one "
            f"core, {1e6 * c.ingest_cpu_s / n:.1f} us per change), its walsender "
            f"{c.walsender_cpu_s:.2f} s, broker {c.broker_cpu_s:.2f} s, counting consumer "
            f"{c.counter_cpu_s:.2f} s"
        )

    lat0 = r.latencies[0]
    details = [
        "How it was measured:",
        "",
        f"- Servers: {r.tansu_version} (memory storage) and PostgreSQL {r.pg_version} with "
        "`fsync=on`, `full_page_writes=on`, `wal_level=logical`, both on 127.0.0.1 and started "
        "by the benchmark in a temporary directory; autovacuum is off for the two bench tables so "
        "that it does not run in the middle of a measurement. Ingest runs as its own process "
        f"(`python -m freshet.ingest`, {common.partitions_phrase()}, its default settings: "
        "pgoutput v2 with `streaming=on`, idempotent producer with `acks=all` and "
        f"`linger.ms={INGEST_LINGER_MS}`, "
        "5% of transactions traced). The source (`snapshot: never`) is registered by writing "
        "its spec (password Fernet-encrypted) to `freshet.control.sources`, as control does; "
        f"the new source reported `streaming` {r.first_streaming_s:.1f} s after ingest started. "
        "The machine is a shared 2-vCPU VM: compare figures within one run; repeated runs "
        "vary, the p99 latencies most, because the single-row workload brings the machine "
        "close to saturation.",
        f"- Latency first, on the running source: table `ticks` (6 columns: bigint key, int, "
        "text, numeric(12,2), text, bigint). A separate writer process commits INSERTs "
        f"(autocommit, prepared, one statement per transaction) over {s.connections} "
        f"connections on a fixed schedule of {s.rate:,} rows/s: {s.warmup_s:.0f} s of warm-up, "
        f"then {s.seconds:.0f} s measured ({lat0.measured:,} rows per workload). Latency = the "
        "clock when a consumer (started before the workload, `fetch.wait.max.ms=10`) received "
        "the event (stamped as each `poll()` returns it) minus the clock when COMMIT returned in "
        "the writer (one host, one clock). "
        + "; ".join(
            f"{_tx_label(lat.rows_per_tx)}: missing {lat.missing}, duplicates {lat.duplicates}"
            for lat in r.latencies
        )
        + f". Events are {lat0.event_bytes:.0f} bytes of JSON. The bench process runs with its "
        "garbage collector off while it stamps arrivals.",
        "- The broker alone: after ingest stopped, a plain producer with ingest's producer "
        f"settings sends {fl.sent:,} events of the same size at {s.rate:,}/s (after the same "
        f"warm-up) to a topic partitioned like ingest's ({PARTITIONS}) and read by the same "
        "kind of consumer, "
        f"missing {fl.missing}. This is the floor any producer gets on this broker.",
        f"- Backlog, per round: table `orders` (6 columns: bigint key, int, text, numeric(12,2), "
        f"text, timestamptz); {b0.inserts:,} single-row INSERTs in transactions of {s.tx_rows} "
        f"rows, interleaved with {b0.updates:,} single-row UPDATEs in transactions of "
        f"{s.tx_rows} ({b0.transactions:,} transactions, {b0.wal_mib:.0f} MiB of WAL, committed "
        f"in {per_round(lambda rd: f'{rd.backlog.seconds:.1f} s')} by one psycopg connection) "
        "while ingest was stopped (SIGTERM). Both slots (ingest's, created by ingest when the "
        "source was registered, and `pg_recvlogical`'s) existed before the backlogs; ingest's had "
        "confirmed all but "
        f"{per_round(lambda rd: f'{rd.unconfirmed_before:,}')} bytes of the WAL before each.",
        "- Baseline: `pg_recvlogical --start --no-loop -f /dev/null --endpos=<WAL end after the "
        "backlog> -o proto_version=1 -o publication_names=<ingest's publication>`, run first in "
        "each round; wall time from process start to exit, connection included (it used "
        f"{per_round(lambda rd: f'{rd.recv.cpu_s:.2f} s')} of CPU itself).",
        "- Ingest: started again after that, with a consumer already counting the new records "
        f"of `{ORDERS_TOPIC}` (not decoding them). Timed from the moment ingest's walsender held "
        "the slot (that is when it reports `streaming`; process start-up until then took "
        f"{per_round(lambda rd: f'{rd.catchup.startup_s:.1f} s')}: imports, consumer-group "
        "join, reading the desired state and the offsets) until the consumer had seen all "
        f"{b0.changes:,} events; the first one arrived "
        f"{per_round(lambda rd: f'{rd.catchup.first_event_s:.2f} s')} after the start. From "
        "process start the catch-up took "
        + per_round(whole)
        + ". Read back afterwards, the topic got "
        + per_round(
            lambda rd: (
                f"{sum(rd.catchup.counted.values()):,} events ("
                + ", ".join(f"{k}: {v:,}" for k, v in sorted(rd.catchup.counted.items()))
                + ")"
            )
        )
        + f"; expected {b0.changes:,} each.",
        "- CPU while ingest streamed the backlog: " + per_round(cpu_line) + ".",
        "- The slot's `confirmed_flush_lsn` reached the end of the backlog "
        f"{per_round(confirm)} after the last event was in Kafka.",
        f"- Whole benchmark: {r.total_s:.0f} s.",
    ]
    for n, rd in enumerate(rounds, 1):
        if not rd.catchup.completed:
            details.append(
                f"- Round {n}: ingest did NOT deliver the whole backlog within the time limit: "
                f"{rd.catchup.seen:,} of {rd.backlog.changes:,} events after "
                f"{rd.catchup.stream_s:.0f} s."
            )
    lines = [
        *common.machine_lines(
            [
                ("Load average before the run", r.load_before),
                ("Broker", f"{r.tansu_version}, memory storage"),
                ("PostgreSQL", r.pg_version),
            ]
        ),
        "- Reproduce: `make bench-ingest` (or `.venv/bin/python -m bench.run ingest`)",
        "",
        *throughput,
        "",
        *latency,
        "",
        *details,
    ]
    return "\n".join(lines) + "\n"
