"""Transform benchmark: incremental materialized views, the real services as separate processes.

One run starts its own Tansu broker, a durable PostgreSQL 15 (fsync on) and Redis in a temporary
directory, runs ``python -m freshet.ingest`` and ``python -m freshet.transform`` as their own
processes, registers sources and views by writing their specs to the desired-state topics
exactly as control does, and measures:

1. **Throughput** of transform alone. Ingest first writes a backlog into the change topics: the
   snapshot of ``customers`` and ``orders`` plus a stream of UPDATEs, DELETEs, INSERTs and
   customers moving between regions. Once ingest's confirmed position (``freshet.positions``)
   covers the whole backlog, a join + GROUP BY view is registered and timed from registration
   to the moment its status reports the final LSN applied (what ``wait_applied`` and control's
   ``GET /v1/views/{name}/wait`` wait for). Two views over the same backlog, one after the
   other: grouped by region (12 groups) and by customer (one group per customer). Baseline in
   the same run: a plain consumer that only reads and JSON-decodes the same change events.
2. **Freshness on a 1M-row base.** ``big_orders`` (1M rows) joined with ``big_customers`` and
   grouped by region; once the view caught up, single-row UPDATEs, spaced, each set a unique
   amount larger than any other: the time from COMMIT returned to the changed row (its new
   ``max``) arriving on the view topic. Baseline in the same run: ``REFRESH MATERIALIZED VIEW``
   of a PostgreSQL materialized view with the same SQL over the same tables.

Every view's folded topic is compared with PostgreSQL's result of the same SQL. Nothing here is a
timed assertion: the figures are printed and written to BENCHMARKS.md.
"""

from __future__ import annotations

import contextlib
import decimal
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import orjson
import psycopg
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, Producer, TopicPartition
from pydantic import SecretStr

from bench import common
from bench.ingest import current_lsn, tansu_version
from freshet.common import codec, topics
from freshet.common.events import lsn_to_str
from freshet.common.kafka import (
    consumer_config,
    ensure_topics,
    partitions_of,
    produce_sync,
    producer_config,
)
from freshet.common.schemas import DataflowStatus, PostgresSourceSpec, SourcePosition
from freshet.common.secrets import SecretBox
from freshet.devstack import servers
from freshet.devstack.harness import Control, fold

HEADING = "## Transform (incremental materialized views)"
DATABASE = "bench"
PARTITIONS = common.PARTITIONS
SOURCE_A = "tput"
SOURCE_B = "fresh"

TARGET_THROUGHPUT = 20_000
TARGET_FRESHNESS_MS = 100.0

REGIONS = (
    "north",
    "south",
    "east",
    "west",
    "central",
    "alpine",
    "coast",
    "islands",
    "lakes",
    "plains",
    "valley",
    "capital",
)
STATUSES = ("new", "paid", "packed", "shipped", "delivered")

SCHEMA = """
CREATE TABLE public.customers (
    id integer PRIMARY KEY, name text NOT NULL, email text NOT NULL, region text NOT NULL
) WITH (autovacuum_enabled = false);
CREATE TABLE public.orders (
    id bigint PRIMARY KEY,
    customer_id integer NOT NULL,
    status text NOT NULL,
    amount numeric(12, 2) NOT NULL,
    note text,
    created_at timestamptz NOT NULL DEFAULT now()
) WITH (autovacuum_enabled = false);
CREATE TABLE public.big_customers (
    id integer PRIMARY KEY, name text NOT NULL, email text NOT NULL, region text NOT NULL
) WITH (autovacuum_enabled = false);
CREATE TABLE public.big_orders (
    id bigint PRIMARY KEY,
    customer_id integer NOT NULL,
    status text NOT NULL,
    amount numeric(12, 2) NOT NULL,
    note text,
    created_at timestamptz NOT NULL DEFAULT now()
) WITH (autovacuum_enabled = false);
CREATE TABLE public.marker (id int);
"""

AGGREGATES = (
    "count(*) AS orders, sum(o.amount) AS revenue, avg(o.amount) AS avg_amount, "
    "min(o.amount) AS min_amount, max(o.amount) AS max_amount"
)
VIEW_BY_REGION = (
    f"SELECT c.region, {AGGREGATES} FROM orders o JOIN customers c ON c.id = o.customer_id "
    "GROUP BY c.region"
)
VIEW_BY_CUSTOMER = (
    f"SELECT c.id, c.name, {AGGREGATES} FROM orders o JOIN customers c ON c.id = o.customer_id "
    "GROUP BY c.id, c.name"
)
VIEW_BIG = (
    f"SELECT c.region, {AGGREGATES} FROM big_orders o JOIN big_customers c "
    "ON c.id = o.customer_id GROUP BY c.region"
)
PG_MATVIEW = "bench_big_by_region"
WARMUP = "SELECT region, count(*) AS n FROM customers GROUP BY region"

T = TypeVar("T")


@dataclass
class Settings:
    customers: int = 20_000
    orders: int = 160_000
    updates: int = 40_000
    deletes: int = 10_000
    inserts: int = 10_000
    moves: int = 2_000  # customers moving to another region (each moves all its orders)
    tx_rows: int = 100
    big_customers: int = 50_000
    big_orders: int = 1_000_000
    fresh_changes: int = 30
    fresh_spacing_s: float = 1.0
    refresh_runs: int = 5
    budget_s: float = 1500.0
    profile: bool = False

    @property
    def stream_changes(self) -> int:
        return self.updates + self.deletes + self.inserts + self.moves


# --- the stack -------------------------------------------------------------------------------


class Stack:
    """Broker, PostgreSQL, Redis, ingest and transform of one run, all in one temporary dir."""

    def __init__(self, deadline: common.Deadline) -> None:
        self.deadline = deadline
        self.work = Path(tempfile.mkdtemp(prefix="freshet-bench-transform-"))
        self.work.chmod(0o755)  # the postgres account must reach its data dir
        self._servers: dict[str, servers.Managed] = {}
        self._procs: list[subprocess.Popen[Any]] = []
        self.secret_key = SecretBox.generate_key()
        self.pg_password = uuid.uuid4().hex
        self.bootstrap = ""
        self.redis_url = ""
        self.pg: servers.PgInfo | None = None
        self.pg_version = ""
        self.redis_version = ""
        self.services: dict[str, tuple[subprocess.Popen[Any], Path]] = {}
        self.failed = False

    def start_servers(self) -> None:
        kafka_port = servers.free_port()
        self._servers["kafka"] = servers.start_kafka(kafka_port, self.work / "tansu.log")
        self.bootstrap = f"127.0.0.1:{kafka_port}"
        data = self.work / "pg"
        servers.init_postgres(data, self.pg_password)
        pg_port = servers.free_port()
        self._servers["postgresql"] = servers.start_postgres(
            data, pg_port, self.work / "postgres.log", durable=True
        )
        self.pg = servers.PgInfo("127.0.0.1", pg_port, "postgres", self.pg_password)
        redis_port = servers.free_port()
        self._servers["redis"] = servers.start_redis(
            redis_port, self.work / "redis", self.work / "redis.log"
        )
        self.redis_url = f"redis://127.0.0.1:{redis_port}/0"
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            self.redis_version = (
                subprocess.run(
                    ["redis-server", "--version"], capture_output=True, text=True, timeout=10
                )
                .stdout.split()[2]
                .removeprefix("v=")
            )
        with psycopg.connect(self.pg.conninfo(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {DATABASE}")
            row = admin.execute("SHOW server_version").fetchone()
            self.pg_version = str(row[0]) if row else "?"
        ensure_topics(self.bootstrap, topics.control_topics(PARTITIONS))

    def own_cpu_seconds(self) -> float:
        """CPU of everything this benchmark runs: servers (PostgreSQL with its backends),
        services and the benchmark process itself."""
        pids = [m.proc.pid for m in self._servers.values()]
        pids += [proc.pid for proc, _log in self.services.values()]
        return sum(common.tree_cpu_seconds(p) for p in pids) + common.own_cpu_seconds()

    def pid(self, name: str) -> int:
        if name in self._servers:
            return self._servers[name].proc.pid
        return self.services[name][0].pid

    def conninfo(self) -> str:
        assert self.pg is not None
        return self.pg.conninfo(DATABASE)

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.conninfo(), autocommit=True)

    def start_service(self, name: str, env: dict[str, str]) -> subprocess.Popen[Any]:
        """``python -m freshet.<name>`` as its own process, configured by environment."""
        full = {k: v for k, v in os.environ.items() if not k.startswith("FRESHET_")}
        full.update(
            FRESHET_KAFKA_BOOTSTRAP=self.bootstrap,
            FRESHET_SECRET_KEY=self.secret_key,
            FRESHET_TOPIC_PARTITIONS=str(PARTITIONS),
            **env,
        )
        log = self.work / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", f"freshet.{name}"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=full,
                cwd=self.work,
                start_new_session=True,
            )
        self._procs.append(proc)
        self.services[name] = (proc, log)
        return proc

    def check(self) -> None:
        """Raise if a service or server died."""
        for name, (proc, log) in self.services.items():
            if proc.poll() is not None:
                raise common.BenchError(
                    f"{name} exited with {proc.returncode}; last lines of {log}:\n"
                    f"{common.tail(log)}"
                )
        for name, managed in self._servers.items():
            if not managed.alive():
                raise common.BenchError(f"{name} died; see {managed.log_path}")

    def close(self) -> None:
        for proc in reversed(self._procs):
            with contextlib.suppress(Exception):
                common.stop_process(proc, timeout=45)
        for managed in reversed(list(self._servers.values())):
            with contextlib.suppress(Exception):
                managed.stop()
        if self.failed:
            keep = Path(tempfile.mkdtemp(prefix="freshet-bench-transform-logs-"))
            for log in self.work.glob("*.log"):
                with contextlib.suppress(OSError):
                    shutil.copy(log, keep / log.name)
            print(f"bench: logs of the failed run are in {keep}", file=sys.stderr)
        shutil.rmtree(self.work, ignore_errors=True)


def wait_http(url: str, stack: Stack, timeout: float) -> float:
    """Wait for ``url`` to answer 200; return the seconds it took."""
    started = time.monotonic()
    limit = started + stack.deadline.cap(timeout)
    while time.monotonic() < limit:
        stack.check()
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(url, timeout=2) as resp,  # noqa: S310 - our own service
        ):
            if resp.status == 200:
                return time.monotonic() - started
        time.sleep(0.2)
    raise common.BenchError(f"{url} did not answer 200 within {timeout:.0f}s")


# --- following the status and positions topics ----------------------------------------------


class Follower:
    """Follows a compacted topic from its beginning in a thread; every record is kept with its
    arrival time (``perf_counter``), and waiters wake on each one."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = Consumer(
            consumer_config(
                bootstrap, f"bench-follow-{uuid.uuid4().hex[:8]}", **{"fetch.wait.max.ms": 10}
            )
        )
        parts = partitions_of(self._consumer, topic)
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        self.records: list[tuple[float, str, bytes | None]] = []
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"follow-{topic}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                batch = self._consumer.consume(1000, 0.05)
                now = time.perf_counter()
                got = [(now, (m.key() or b"").decode(), m.value()) for m in batch if not m.error()]
                if got:
                    with self._cond:
                        self.records.extend(got)
                        self._cond.notify_all()
        except BaseException as exc:  # reported to waiters
            self.error = exc
            with self._cond:
                self._cond.notify_all()

    def of(self, key: str) -> list[tuple[float, bytes | None]]:
        with self._cond:
            return [(t, v) for t, k, v in self.records if k == key]

    def wait(self, check: Callable[[], T | None], stack: Stack, timeout: float, what: str) -> T:
        """Wait until ``check()`` (called on every new record) returns something."""
        limit = time.monotonic() + stack.deadline.cap(timeout)
        last_check = 0.0
        with self._cond:
            while True:
                found = check()
                if found is not None:
                    return found
                if self.error is not None:
                    raise common.BenchError(f"following a topic failed: {self.error}")
                if time.monotonic() > limit:
                    raise common.BenchError(f"{what}: not within {timeout:.0f}s")
                self._cond.wait(0.5)
                if time.monotonic() - last_check > 1.0:
                    self._cond.release()
                    try:
                        stack.check()
                    finally:
                        self._cond.acquire()
                    last_check = time.monotonic()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


def position_of(positions: Follower, source: str) -> SourcePosition | None:
    recs = positions.of(source)
    if not recs or recs[-1][1] is None:
        return None
    return SourcePosition.model_validate_json(recs[-1][1] or b"")


def statuses_of(status: Follower, view: str) -> list[tuple[float, DataflowStatus]]:
    return [
        (t, DataflowStatus.model_validate_json(v))
        for t, v in status.of(topics.status_key("view", view))
        if v is not None
    ]


# --- control-plane side ----------------------------------------------------------------------


def register_source(stack: Stack, name: str, tables: tuple[str, ...]) -> None:
    assert stack.pg is not None
    box = SecretBox(SecretStr(stack.secret_key))
    spec = PostgresSourceSpec(
        name=name,
        host=stack.pg.host,
        port=stack.pg.port,
        database=DATABASE,
        user=stack.pg.user,
        password_encrypted=box.encrypt(SecretStr(stack.pg.password)),
        tables=tables,
        snapshot="initial",
        slot_name=f"freshet_{name}",
        publication_name=f"freshet_{name}",
    )
    producer = Producer(producer_config(stack.bootstrap))
    produce_sync(
        producer, topics.CONTROL_SOURCES, name.encode(), codec.dumps(spec.model_dump(mode="json"))
    )
    producer.flush(10)


def wait_slot(stack: Stack, slot: str, timeout: float) -> float:
    """Wait until ingest created the source's slot: changes committed after it are streamed,
    not part of the snapshot. Returns the seconds it took."""
    started = time.monotonic()
    limit = started + stack.deadline.cap(timeout)
    with stack.connect() as conn:
        while time.monotonic() < limit:
            stack.check()
            query = "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s"
            if conn.execute(query, (slot,)).fetchone():
                return time.monotonic() - started
            time.sleep(0.05)
    raise common.BenchError(f"ingest did not create slot {slot} within {timeout:.0f}s")


def end_of_writes(stack: Stack) -> int:
    """The WAL position after everything committed so far; a write to a table no source
    publishes follows, so ingest learns at once that it has seen everything before it."""
    with stack.connect() as conn:
        lsn, _ = current_lsn(conn)
        conn.execute("INSERT INTO public.marker VALUES (1)")
    return lsn


def wait_ingested(stack: Stack, positions: Follower, source: str, lsn: int, timeout: float) -> None:
    def done() -> bool | None:
        pos = position_of(positions, source)
        return True if pos is not None and pos.lsn >= lsn else None

    positions.wait(done, stack, timeout, f"ingest of source {source} reaching {lsn_to_str(lsn)}")


# --- data --------------------------------------------------------------------------------------


def _email(name: str, i: int) -> str:
    return f"{name.lower().replace(' ', '.')}.{i}@example.com"


def load_tables(
    conn: psycopg.Connection[Any], prefix: str, customers: int, orders: int, seed: int
) -> tuple[float, list[int]]:
    """COPY ``customers`` and ``orders`` rows into ``<prefix>customers`` / ``<prefix>orders``.

    Returns the seconds it took and, per customer id, its region index.
    """
    rng = random.Random(seed)
    regions = [rng.randrange(len(REGIONS)) for _ in range(customers + 1)]
    started = time.monotonic()
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy(f"COPY public.{prefix}customers (id, name, email, region) FROM STDIN") as cp:
            for i in range(1, customers + 1):
                name = f"Customer {i}"
                cp.write_row((i, name, _email(name, i), REGIONS[regions[i]]))
        with cur.copy(
            f"COPY public.{prefix}orders (id, customer_id, status, amount, note) FROM STDIN"
        ) as cp:
            for i in range(1, orders + 1):
                cp.write_row(
                    (
                        i,
                        rng.randrange(1, customers + 1),
                        rng.choice(STATUSES),
                        f"{rng.randrange(100, 1_000_000) / 100:.2f}",
                        f"order {i}",
                    )
                )
    conn.execute(f"VACUUM ANALYZE public.{prefix}customers, public.{prefix}orders")
    return time.monotonic() - started, regions


@dataclass
class Stream:
    updates: int = 0
    deletes: int = 0
    inserts: int = 0
    moves: int = 0
    transactions: int = 0
    seconds: float = 0.0

    @property
    def changes(self) -> int:
        return self.updates + self.deletes + self.inserts + self.moves


def write_stream(stack: Stack, settings: Settings, seed: int) -> Stream:
    """Transactions of ``tx_rows`` changes in a random mix: order UPDATEs (amount and status),
    DELETEs, INSERTs, and customers moving to another region."""
    rng = random.Random(seed)
    live = list(range(1, settings.orders + 1))
    next_id = settings.orders + 1
    left = {
        "updates": settings.updates,
        "deletes": settings.deletes,
        "inserts": settings.inserts,
        "moves": settings.moves,
    }
    out = Stream()
    started = time.monotonic()
    with psycopg.connect(stack.conninfo()) as conn, conn.cursor() as cur:
        while any(left.values()):
            for _ in range(settings.tx_rows):
                if not any(left.values()):
                    break
                kinds = [k for k, n in left.items() if n]
                kind = rng.choices(kinds, weights=[left[k] for k in kinds])[0]
                left[kind] -= 1
                if kind == "updates":
                    cur.execute(
                        "UPDATE public.orders SET amount = %s, status = %s WHERE id = %s",
                        (
                            f"{rng.randrange(100, 1_000_000) / 100:.2f}",
                            rng.choice(STATUSES),
                            rng.choice(live),
                        ),
                    )
                    out.updates += 1
                elif kind == "deletes":
                    index = rng.randrange(len(live))
                    live[index], live[-1] = live[-1], live[index]
                    cur.execute("DELETE FROM public.orders WHERE id = %s", (live.pop(),))
                    out.deletes += 1
                elif kind == "inserts":
                    cur.execute(
                        "INSERT INTO public.orders (id, customer_id, status, amount, note) "
                        "VALUES (%s, %s, %s, %s, %s)",
                        (
                            next_id,
                            rng.randrange(1, settings.customers + 1),
                            "new",
                            f"{rng.randrange(100, 1_000_000) / 100:.2f}",
                            f"order {next_id}",
                        ),
                    )
                    live.append(next_id)
                    next_id += 1
                    out.inserts += 1
                else:
                    cur.execute(
                        "UPDATE public.customers SET region = %s WHERE id = %s",
                        (rng.choice(REGIONS), rng.randrange(1, settings.customers + 1)),
                    )
                    out.moves += 1
            conn.commit()
            out.transactions += 1
            stack.deadline.cap(1)
    out.seconds = time.monotonic() - started
    return out


# --- reading the change topics: the counts, and the floor of any consumer ----------------------


@dataclass
class ReadFloor:
    changes: int  # change events (tombstones not counted)
    tombstones: int
    by_op: dict[str, int]
    seconds: float
    cpu_s: float

    @property
    def rate(self) -> float:
        return self.changes / self.seconds if self.seconds > 0 else float("nan")


def read_floor(stack: Stack, topic_names: list[str], timeout: float) -> ReadFloor:
    """Read ``topic_names`` from the beginning to their end with one plain consumer and decode
    every value with orjson: what any Python consumer of these topics must spend at least."""
    consumer = Consumer(
        consumer_config(
            stack.bootstrap, f"bench-floor-{uuid.uuid4().hex[:8]}", **{"fetch.wait.max.ms": 10}
        )
    )
    parts = [(t, p) for t in topic_names for p in partitions_of(consumer, t)]
    by_op: dict[str, int] = {}
    tombstones = 0
    try:
        cpu0 = common.own_cpu_seconds()
        started = time.perf_counter()
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in parts])
        seen = dict.fromkeys(parts, 0)
        limit = time.monotonic() + stack.deadline.cap(timeout)
        while time.monotonic() < limit:
            for msg in consumer.consume(10_000, 0.05):
                if msg.error():
                    continue
                seen[(msg.topic() or "", msg.partition() or 0)] = (msg.offset() or 0) + 1
                value = msg.value()
                if value is None:
                    tombstones += 1
                    continue
                op = orjson.loads(value)["op"]
                by_op[op] = by_op.get(op, 0) + 1
            ends = {
                tp: consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)[1]
                for tp in parts
            }
            if all(h >= 0 and seen[tp] >= h for tp, h in ends.items()):
                break
        else:
            raise common.BenchError(f"could not read {topic_names} to their end")
        seconds = time.perf_counter() - started
        cpu = common.own_cpu_seconds() - cpu0
    finally:
        consumer.close()
    return ReadFloor(sum(by_op.values()), tombstones, by_op, seconds, cpu)


# --- one view catching up --------------------------------------------------------------------


@dataclass
class CatchUp:
    view: str
    sql: str
    changes: int  # change events in the view's input topics
    total_s: float  # registration -> final LSN applied
    startup_s: float  # registration -> first status (the task loaded, consuming)
    events_in: int
    events_out: int
    steady_rate: float  # events_in/s while events_in went from 10% to 90%
    transform_cpu_s: float
    broker_cpu_s: float
    redis_cpu_s: float
    machine_busy: float
    machine_steal: float
    other_cpu_s: float  # CPU of processes on the machine that are not the benchmark's
    rss_mib: float
    view_rows: int = 0
    equal: bool = False
    mismatch: str = ""
    oracle_s: float = 0.0  # PostgreSQL running the view's SELECT once
    profile: str = ""

    @property
    def rate(self) -> float:
        return self.changes / self.total_s if self.total_s > 0 else float("nan")

    @property
    def after_start_rate(self) -> float:
        s = self.total_s - self.startup_s
        return self.changes / s if s > 0 else float("nan")


def rss_mib(pid: int) -> float:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure_view(
    stack: Stack,
    control: Control,
    status: Follower,
    name: str,
    sql: str,
    wanted: set[str],
    source: str,
    lsn: int,
    changes: int,
    timeout: float,
    profile: bool = False,
) -> CatchUp:
    """Register view ``name`` and time it until it reports ``lsn`` of ``source`` applied."""
    catalog = control.catalog(wanted)
    transform = stack.pid("transform")
    pids = (transform, stack.pid("kafka"), stack.pid("redis"))
    cpu0 = [common.cpu_seconds(p) for p in pids]
    machine0, own0 = common.machine_cpu(), stack.own_cpu_seconds()
    registered = time.perf_counter()
    control.add_view(name, sql, catalog)
    profiler = start_profiler(stack, transform, name) if profile else None
    summary = ""

    def applied() -> tuple[float, DataflowStatus] | None:
        for t, st in statuses_of(status, name):
            if st.state == "error":
                raise common.BenchError(f"view {name} failed: {st.reason}")
            if st.applied.get(source, -1) >= lsn:
                return t, st
        return None

    try:
        done_at, final = status.wait(applied, stack, timeout, f"view {name} applying {lsn}")
    finally:
        if profiler is not None:
            summary = stop_profiler(stack, profiler, name)
    cpu1 = [common.cpu_seconds(p) for p in pids]
    machine1, own1 = common.machine_cpu(), stack.own_cpu_seconds()
    history = statuses_of(status, name)
    first = history[0][0]
    return CatchUp(
        view=name,
        sql=sql,
        changes=changes,
        total_s=done_at - registered,
        startup_s=first - registered,
        events_in=final.events_in,
        events_out=final.events_out,
        steady_rate=_steady_rate([(t, s.events_in) for t, s in history], final.events_in),
        transform_cpu_s=cpu1[0] - cpu0[0],
        broker_cpu_s=cpu1[1] - cpu0[1],
        redis_cpu_s=cpu1[2] - cpu0[2],
        machine_busy=machine1.busy_since(machine0),
        machine_steal=machine1.steal_since(machine0),
        other_cpu_s=max(0.0, machine1.cpu_seconds_since(machine0) - (own1 - own0)),
        rss_mib=rss_mib(transform),
        profile=summary,
    )


def _steady_rate(samples: list[tuple[float, int]], total: int) -> float:
    low = next(((t, n) for t, n in samples if n >= total // 10), None)
    high = next(((t, n) for t, n in samples if n >= total * 9 // 10), None)
    if low is None or high is None or high[0] <= low[0]:
        return float("nan")
    return (high[1] - low[1]) / (high[0] - low[0])


def compare_with_postgres(stack: Stack, result: CatchUp, key: tuple[str, ...]) -> None:
    """Fold the view's topic and compare it, row by row, with PostgreSQL's result."""
    got = fold(stack.bootstrap, topics.view_topic(result.view), timeout=120)
    with stack.connect() as conn:
        started = time.perf_counter()
        cur = conn.execute(result.sql)
        rows = cur.fetchall()
        result.oracle_s = time.perf_counter() - started
        names = [d.name for d in cur.description or ()]
    want = {}
    for row in rows:
        record = dict(zip(names, row, strict=True))
        want[tuple(str(record[k]) for k in key)] = record
    have = {tuple(str(v[k]) for k in key): v for v in got.values()}
    result.view_rows = len(have)
    problems = []
    for k in sorted(set(want) | set(have))[:100_000]:
        w, h = want.get(k), have.get(k)
        if w is None or h is None:
            problems.append(f"{k}: {'missing' if h is None else 'extra'}")
        elif any(not _same(h.get(c), w[c]) for c in names):
            problems.append(f"{k}: view {h} vs PostgreSQL {w}")
        if len(problems) >= 3:
            break
    result.equal = not problems
    result.mismatch = "; ".join(problems)


def _same(view_value: Any, pg_value: Any) -> bool:
    if isinstance(pg_value, Decimal | int) and not isinstance(pg_value, bool):
        try:
            return Decimal(str(view_value)) == Decimal(pg_value)
        except decimal.InvalidOperation:
            return False
    return bool(view_value == pg_value)


# --- freshness: one change in a big base ------------------------------------------------------


class Arrivals:
    """Stamps, in a thread, the first arrival of records whose value matches a marker.

    ``match(value dict)`` returns the marker a record carries (or None). The consumer starts at
    ``start`` (OFFSET_BEGINNING or OFFSET_END) of every partition.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        start: int,
        match: Callable[[dict[str, Any]], Decimal | None],
    ) -> None:
        self._consumer = Consumer(
            consumer_config(
                bootstrap,
                f"bench-fresh-{uuid.uuid4().hex[:8]}",
                **{"fetch.wait.max.ms": 5, "fetch.min.bytes": 1},
            )
        )
        self._consumer.assign(
            [TopicPartition(topic, p, start) for p in partitions_of(self._consumer, topic)]
        )
        self._match = match
        # marker -> (arrival ns, the record's Kafka timestamp in ms, the event's ts_us or 0)
        self.seen: dict[Decimal, tuple[int, int, int]] = {}
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"arrivals-{topic}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                batch = self._consumer.consume(1000, 0.01)
                now = time.time_ns()
                for msg in batch:
                    raw = msg.value()
                    if msg.error() or raw is None:
                        continue
                    value = orjson.loads(raw)
                    marker = self._match(value)
                    if marker is not None and marker not in self.seen:
                        built = int(value.get("ts_us") or 0)
                        self.seen[marker] = (now, msg.timestamp()[1], built)
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


def _decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except decimal.InvalidOperation:
        return None


@dataclass
class Freshness:
    changes: int
    missing: int
    to_view_ms: list[float]  # COMMIT returned -> the view row arrived at a consumer
    to_event_ms: list[float]  # COMMIT returned -> ingest built the change event (its ts_us)
    event_to_view_ms: list[float]  # event built -> transform produced the view row (ms stamp)
    view_to_consumer_ms: list[float]  # transform produced the view row -> a consumer got it
    commit_ms: list[float]  # the UPDATE's own round trip, COMMIT included
    refresh_s: list[float]
    create_s: float
    query_s: float  # the SELECT alone, once
    view_rows: int
    machine_busy: float  # while the updates ran
    machine_steal: float
    transform_cpu: float  # share of one core while the updates ran
    other_cpu: float  # share of one core other processes on the machine used meanwhile


def measure_freshness(stack: Stack, settings: Settings, view: str) -> Freshness:
    cdc_topic = topics.cdc_topic(SOURCE_B, "public", "big_orders")
    markers: dict[Decimal, int] = {}  # marker -> order id

    def view_marker(row: dict[str, Any]) -> Decimal | None:
        value = _decimal(row.get("max_amount"))
        return value if value in markers else None

    def cdc_marker(event: dict[str, Any]) -> Decimal | None:
        after = event.get("after") or {}
        value = _decimal(after.get("amount"))
        return value if value in markers else None

    view_topic = topics.view_topic(view)
    view_arrivals = Arrivals(stack.bootstrap, view_topic, OFFSET_BEGINNING, view_marker)
    # ListOffsets(latest) on Tansu may point before the true end: a few old records are read
    # again, which no marker matches.
    cdc_arrivals = Arrivals(stack.bootstrap, cdc_topic, OFFSET_END, cdc_marker)
    rng = random.Random(11)
    commits: list[tuple[Decimal, int, int]] = []  # marker, before ns, after ns
    transform = stack.pid("transform")
    try:
        time.sleep(2.0)  # both consumers are at the end
        machine0, cpu0, began = (
            common.machine_cpu(),
            common.cpu_seconds(transform),
            time.monotonic(),
        )
        own0 = stack.own_cpu_seconds()
        with stack.connect() as conn:
            conn.execute("SELECT 1")
            for i in range(settings.fresh_changes):
                stack.check()
                marker = Decimal(f"{5_000_000 + i}.37")
                order = rng.randrange(1, settings.big_orders + 1)
                markers[marker] = order
                before = time.time_ns()
                conn.execute(
                    "UPDATE public.big_orders SET amount = %s WHERE id = %s", (marker, order)
                )
                after = time.time_ns()
                commits.append((marker, before, after))
                limit = time.monotonic() + stack.deadline.cap(10)
                while marker not in view_arrivals.seen and time.monotonic() < limit:
                    failed = view_arrivals.error or cdc_arrivals.error
                    if failed:
                        raise common.BenchError(f"a freshness consumer failed: {failed}")
                    time.sleep(0.001)
                time.sleep(settings.fresh_spacing_s * rng.uniform(0.7, 1.3))
        limit = time.monotonic() + stack.deadline.cap(10)
        while len(cdc_arrivals.seen) < len(commits) and time.monotonic() < limit:
            time.sleep(0.05)
    finally:
        view_arrivals.close()
        cdc_arrivals.close()
    to_view, to_event, event_to_view, view_to_consumer, commit = [], [], [], [], []
    missing = 0
    for marker, before, after in commits:
        commit.append((after - before) / 1e6)
        seen = view_arrivals.seen.get(marker)
        cdc = cdc_arrivals.seen.get(marker)
        if seen is None:
            missing += 1
            continue
        to_view.append((seen[0] - after) / 1e6)
        view_to_consumer.append(seen[0] / 1e6 - seen[1])
        if cdc is not None and cdc[2]:
            to_event.append((cdc[2] * 1000 - after) / 1e6)
            event_to_view.append(seen[1] - cdc[2] / 1000)

    machine1, cpu1, seconds = (
        common.machine_cpu(),
        common.cpu_seconds(transform),
        time.monotonic() - began,
    )
    others = machine1.cpu_seconds_since(machine0) - (stack.own_cpu_seconds() - own0)
    # The baseline: PostgreSQL's own materialized view of the same SQL over the same tables.
    with stack.connect() as conn:
        started = time.perf_counter()
        conn.execute(VIEW_BIG).fetchall()
        query_s = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute(f"CREATE MATERIALIZED VIEW {PG_MATVIEW} AS {VIEW_BIG}")
        create_s = time.perf_counter() - started
        refresh = []
        for _ in range(settings.refresh_runs):
            stack.deadline.cap(60)
            started = time.perf_counter()
            conn.execute(f"REFRESH MATERIALIZED VIEW {PG_MATVIEW}")
            refresh.append(time.perf_counter() - started)
        row = conn.execute(f"SELECT count(*) FROM {PG_MATVIEW}").fetchone()
    return Freshness(
        changes=len(commits),
        missing=missing,
        to_view_ms=sorted(to_view),
        to_event_ms=sorted(to_event),
        event_to_view_ms=sorted(event_to_view),
        view_to_consumer_ms=sorted(view_to_consumer),
        commit_ms=sorted(commit),
        refresh_s=refresh,
        create_s=create_s,
        query_s=query_s,
        view_rows=int(row[0]) if row else 0,
        machine_busy=machine1.busy_since(machine0),
        machine_steal=machine1.steal_since(machine0),
        transform_cpu=(cpu1 - cpu0) / seconds if seconds > 0 else float("nan"),
        other_cpu=max(0.0, others) / seconds if seconds > 0 else float("nan"),
    )


# --- profiling (optional, --profile) ---------------------------------------------------------


def start_profiler(stack: Stack, pid: int, view: str) -> subprocess.Popen[Any] | None:
    venv_spy = Path(sys.executable).with_name("py-spy")
    py_spy = (
        os.environ.get("PY_SPY")
        or shutil.which("py-spy")
        or (str(venv_spy) if venv_spy.exists() else None)
    )
    if not py_spy:
        print("bench: --profile needs py-spy on PATH (or PY_SPY=/path/to/py-spy)", file=sys.stderr)
        return None
    with open(stack.work / "py-spy.log", "ab") as out:
        proc = subprocess.Popen(
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
                str(stack.work / f"profile-{view}.txt"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc


def stop_profiler(stack: Stack, proc: subprocess.Popen[Any], view: str) -> str:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(2)  # SIGINT: py-spy writes its output and exits
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(30)
    path = stack.work / f"profile-{view}.txt"
    if not path.exists():
        return ""
    kept = Path(tempfile.gettempdir()) / f"freshet-bench-transform-profile-{view}.txt"
    shutil.copy(path, kept)
    print(f"bench: py-spy samples (raw, collapsed, with idle) in {kept}", file=sys.stderr)
    return summarize_profile(path.read_text(), f"view-{view}")


def summarize_profile(raw: str, thread: str, top: int = 40) -> str:
    """Inclusive and self shares of the busiest functions of one thread, from a py-spy ``raw``
    file recorded with ``--threads --idle``."""
    incl: dict[str, int] = {}
    own: dict[str, int] = {}
    lines_own: dict[str, int] = {}
    total = 0
    for line in raw.splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        frames = stack_text.split(";")
        if not count_text.isdigit() or thread not in frames[0]:
            continue
        count = int(count_text)
        total += count
        names = [_frame(f) for f in frames[1:]] or ["?"]
        own[names[-1]] = own.get(names[-1], 0) + count
        leaf = _frame(frames[-1], line=True)
        lines_own[leaf] = lines_own.get(leaf, 0) + count
        for name in set(names):
            incl[name] = incl.get(name, 0) + count
    if not total:
        return ""
    lines = [f"thread {thread}: {total} samples (on CPU, waiting for the GIL or for input)", ""]
    lines.append("incl %  self %  function")
    for name, count in sorted(incl.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * count / total:6.1f}  {100 * own.get(name, 0) / total:6.1f}  {name}")
    lines += [
        "",
        "self %  line (a C call such as orjson.loads or a librdkafka call counts on its line)",
    ]
    for name, count in sorted(lines_own.items(), key=lambda kv: -kv[1])[:25]:
        lines.append(f"{100 * count / total:6.1f}  {name}")
    return "\n".join(lines)


def _frame(frame: str, line: bool = False) -> str:
    # "function (path/to/file.py:123)" -> "function (file.py)", or "(file.py:123)" with line
    name, _, where = frame.partition(" (")
    file = where.rstrip(")").rsplit("/", 1)[-1]
    if not line:
        file = file.split(":", 1)[0]
    return f"{name} ({file})" if file else name


# --- the whole run ---------------------------------------------------------------------------


@dataclass
class Result:
    settings: Settings
    pg_version: str
    tansu_version: str
    redis_version: str
    load_before: str
    load_after: str = ""
    load_a_s: float = 0.0
    stream: Stream = field(default_factory=Stream)
    ingest_a_s: float = 0.0  # source registered -> its position covers the backlog
    floor: ReadFloor | None = None
    views: list[CatchUp] = field(default_factory=list)
    load_b_s: float = 0.0
    ingest_b_s: float = 0.0
    big: CatchUp | None = None
    fresh: Freshness | None = None
    transform_ready_s: float = 0.0
    total_s: float = 0.0


def _log(fmt: str, *args: Any) -> None:
    print("bench transform: " + (fmt % args if args else fmt), file=sys.stderr, flush=True)


def _delete_view(control: Control, stack: Stack, status: Follower, name: str) -> None:
    """Delete a view and wait until transform dropped it (its status is tombstoned)."""
    control.delete_view(name)
    key = topics.status_key("view", name)

    def gone() -> bool | None:
        recs = status.of(key)
        return True if recs and recs[-1][1] is None else None

    status.wait(gone, stack, 60, f"view {name} being dropped")


def run(settings: Settings | None = None) -> Result:
    settings = settings or Settings()
    began = time.monotonic()
    result = Result(settings, "", tansu_version(), "", common.load_average())
    deadline = common.Deadline(settings.budget_s)
    stack = Stack(deadline)
    status: Follower | None = None
    positions: Follower | None = None
    try:
        _log("starting Tansu, PostgreSQL (fsync on) and Redis in %s", stack.work)
        stack.start_servers()
        result.pg_version, result.redis_version = stack.pg_version, stack.redis_version
        with stack.connect() as conn:
            conn.execute(SCHEMA)
        stack.start_service(
            "ingest",
            {
                "FRESHET_INGEST_PORT": str(servers.free_port()),
                "FRESHET_INGEST_SPOOL_DIR": str(stack.work / "spool"),
            },
        )
        transform_port = servers.free_port()
        stack.start_service(
            "transform",
            {
                "FRESHET_REDIS_URL": stack.redis_url,
                "FRESHET_TRANSFORM_PORT": str(transform_port),
                "FRESHET_TRANSFORM_DATA_DIR": str(stack.work / "transform"),
            },
        )
        status = Follower(stack.bootstrap, topics.STATUS)
        positions = Follower(stack.bootstrap, topics.POSITIONS)
        control = Control(stack.bootstrap, SecretStr(stack.secret_key))
        result.transform_ready_s = wait_http(f"http://127.0.0.1:{transform_port}/health", stack, 90)

        # --- 1. throughput ---------------------------------------------------------------
        _log("loading %d customers and %d orders", settings.customers, settings.orders)
        with stack.connect() as conn:
            result.load_a_s, _ = load_tables(conn, "", settings.customers, settings.orders, 1)
        registered = time.monotonic()
        register_source(stack, SOURCE_A, ("public.customers", "public.orders"))
        wait_slot(stack, f"freshet_{SOURCE_A}", 120)
        _log("source %s registered; writing %d changes", SOURCE_A, settings.stream_changes)
        result.stream = write_stream(stack, settings, 2)
        lsn_a = end_of_writes(stack)
        wait_ingested(stack, positions, SOURCE_A, lsn_a, 300)
        result.ingest_a_s = time.monotonic() - registered
        _log("ingest wrote the backlog up to %s in %.1fs", lsn_to_str(lsn_a), result.ingest_a_s)
        # A first view, deleted again: transform's reconciler holds its partitions and has run
        # the code path once before the measured views.
        wanted_a = {f"{SOURCE_A}.public.customers", f"{SOURCE_A}.public.orders"}
        warm = measure_view(
            stack, control, status, "warmup", WARMUP, wanted_a, SOURCE_A, lsn_a, 0, 300
        )
        _log("warm-up view applied the backlog's customers in %.1fs", warm.total_s)
        _delete_view(control, stack, status, "warmup")
        inputs_a = [topics.cdc_topic(SOURCE_A, "public", t) for t in ("customers", "orders")]
        result.floor = read_floor(stack, inputs_a, 120)
        _log(
            "baseline: %d change events (%s) read and decoded in %.2fs, %s/s",
            result.floor.changes,
            result.floor.by_op,
            result.floor.seconds,
            common.fmt_int(result.floor.rate),
        )
        for name, sql, key in (
            ("tput_by_region", VIEW_BY_REGION, ("region",)),
            ("tput_by_customer", VIEW_BY_CUSTOMER, ("id",)),
        ):
            _log("view %s: registering", name)
            catch = measure_view(
                stack,
                control,
                status,
                name,
                sql,
                wanted_a,
                SOURCE_A,
                lsn_a,
                result.floor.changes,
                600,
                profile=settings.profile,
            )
            compare_with_postgres(stack, catch, key)
            result.views.append(catch)
            _log(
                "view %s: %d changes in %.2fs = %s changes/s (first status after %.2fs), "
                "transform CPU %.1fs, %d rows, equal to PostgreSQL: %s %s",
                name,
                catch.changes,
                catch.total_s,
                common.fmt_int(catch.rate),
                catch.startup_s,
                catch.transform_cpu_s,
                catch.view_rows,
                catch.equal,
                catch.mismatch,
            )
            if catch.profile:
                print(catch.profile, file=sys.stderr)
            _delete_view(control, stack, status, name)

        # --- 2. freshness on a 1M-row base ------------------------------------------------
        _log("loading %d customers and %d orders", settings.big_customers, settings.big_orders)
        with stack.connect() as conn:
            result.load_b_s, _ = load_tables(
                conn, "big_", settings.big_customers, settings.big_orders, 3
            )
        registered = time.monotonic()
        register_source(stack, SOURCE_B, ("public.big_customers", "public.big_orders"))
        lsn_b = end_of_writes(stack)
        wait_ingested(stack, positions, SOURCE_B, lsn_b, 600)
        result.ingest_b_s = time.monotonic() - registered
        _log("ingest snapshot of the big tables done in %.1fs", result.ingest_b_s)
        big = measure_view(
            stack,
            control,
            status,
            "fresh_by_region",
            VIEW_BIG,
            {f"{SOURCE_B}.public.big_customers", f"{SOURCE_B}.public.big_orders"},
            SOURCE_B,
            lsn_b,
            settings.big_customers + settings.big_orders,
            900,
        )
        compare_with_postgres(stack, big, ("region",))
        result.big = big
        _log(
            "view %s loaded %d rows in %.1fs (%s/s), RSS %.0f MiB, equal to PostgreSQL: %s %s",
            big.view,
            big.changes,
            big.total_s,
            common.fmt_int(big.rate),
            big.rss_mib,
            big.equal,
            big.mismatch,
        )
        _log("freshness: %d single-row updates", settings.fresh_changes)
        result.fresh = measure_freshness(stack, settings, big.view)
        fr = result.fresh
        _log(
            "freshness: commit -> view p50 %s p99 %s (missing %d); REFRESH median %.2fs",
            common.fmt_ms(common.percentile(fr.to_view_ms, 50)),
            common.fmt_ms(common.percentile(fr.to_view_ms, 99)),
            fr.missing,
            statistics.median(fr.refresh_s),
        )
        result.total_s = time.monotonic() - began
        result.load_after = common.load_average()
        return result
    except BaseException:
        stack.failed = True
        for name, (_proc, log) in stack.services.items():
            print(f"bench: last lines of {name}.log:\n{common.tail(log)}", file=sys.stderr)
        raise
    finally:
        for follower in (status, positions):
            if follower is not None:
                with contextlib.suppress(Exception):
                    follower.close()
        stack.close()


# --- the report ------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _busy(busy: float, steal: float) -> str:
    return f"{100 * busy:.0f}% ({100 * steal:.0f}%)"


def _quantiles(values: list[float]) -> str:
    pct = common.percentile
    return " | ".join(
        common.fmt_ms(v)
        for v in (
            pct(values, 50),
            pct(values, 90),
            pct(values, 99),
            values[-1] if values else float("nan"),
        )
    )


def _plain(sql: str) -> str:
    return "`" + sql + "`"


def _ops(by_op: dict[str, int]) -> str:
    names = {"r": "snapshot reads", "c": "inserts", "u": "updates", "d": "deletes"}
    return ", ".join(f"{v:,} {names.get(k, k)}" for k, v in sorted(by_op.items()))


def _cpu(c: CatchUp) -> str:
    return (
        f"transform {c.transform_cpu_s:.1f} s ({100 * c.transform_cpu_s / c.total_s:.0f}% of one "
        f"core, {1e6 * c.transform_cpu_s / max(1, c.changes):.0f} us per change), broker "
        f"{c.broker_cpu_s:.1f} s, Redis {c.redis_cpu_s:.1f} s; processes that are not the "
        f"benchmark's {c.other_cpu_s:.1f} s ({100 * c.other_cpu_s / c.total_s:.0f}% of one core)"
    )


def report(r: Result) -> str:
    s, floor, fr, big = r.settings, r.floor, r.fresh, r.big
    assert floor is not None and fr is not None and big is not None
    worst = min(v.rate for v in r.views)
    p50, p99 = common.percentile(fr.to_view_ms, 50), common.percentile(fr.to_view_ms, 99)
    lines = [
        *common.machine_lines(
            [
                ("Load average before the run", r.load_before),
                ("Broker", f"{r.tansu_version}, memory storage"),
                ("PostgreSQL", r.pg_version),
                ("Redis", r.redis_version),
            ]
        ),
        "- Reproduce: `make bench-transform` (or `.venv/bin/python -m bench.run transform`; "
        "`--profile` samples transform with py-spy)",
        "",
        f"Throughput from a backlog of {floor.changes:,} change events (target >= "
        f"{TARGET_THROUGHPUT:,} source changes/s through a join + GROUP BY view on 2 cores; the "
        "verdict takes the slower view):",
        "",
        "| view over the same backlog, same run | changes/s, registration -> final LSN applied "
        "| after the task started | steady (10% -> 90%) | vs target |",
        "|---|---|---|---|---|",
    ]
    for v in r.views:
        lines.append(
            f"| **{v.view}** ({v.view_rows:,} rows) | **{common.fmt_int(v.rate)}** "
            f"({v.total_s:.2f} s) | {common.fmt_int(v.after_start_rate)} "
            f"| {common.fmt_int(v.steady_rate)} | {_verdict(v.rate >= TARGET_THROUGHPUT)} |"
        )
    lines += [
        f"| baseline: a plain consumer reading and JSON-decoding the same events "
        f"| **{common.fmt_int(floor.rate)}** ({floor.seconds:.2f} s) | | | |",
        "",
        f"The slower view reached {100 * worst / TARGET_THROUGHPUT:.0f}% of the target and "
        + " / ".join(f"{100 * v.rate / floor.rate:.0f}%" for v in r.views)
        + " of the bare consumer's rate.",
        "",
        f"Freshness on a {s.big_orders:,}-row base: {fr.changes} single-row UPDATEs, "
        f"{s.fresh_spacing_s:.1f} s apart (+-30%), COMMIT returned -> the changed row on the view "
        f"topic (target < {TARGET_FRESHNESS_MS:.0f} ms):",
        "",
        "| path | p50 | p90 | p99 | max | vs target |",
        "|---|---|---|---|---|---|",
        f"| **COMMIT -> view row at a consumer** (missing {fr.missing}) | "
        f"{_quantiles(fr.to_view_ms)} | "
        f"p50 {_verdict(not fr.missing and p50 < TARGET_FRESHNESS_MS)}, "
        f"p99 {_verdict(not fr.missing and p99 < TARGET_FRESHNESS_MS)} |",
        f"| COMMIT -> ingest built the change event (its `ts_us`) | {_quantiles(fr.to_event_ms)} "
        "| |",
        "| change event built -> transform produced the view row (the view record's timestamp, "
        f"1 ms resolution) | {_quantiles(fr.event_to_view_ms)} | |",
        "| transform produced the view row -> a consumer received it (1 ms resolution) "
        f"| {_quantiles(fr.view_to_consumer_ms)} | |",
        f"| the UPDATE's own round trip (COMMIT included, fsync on) | {_quantiles(fr.commit_ms)} "
        "| |",
        "",
        "| the same SQL in PostgreSQL, same tables, same run | seconds |",
        "|---|---|",
        f"| **`REFRESH MATERIALIZED VIEW`**, median of {len(fr.refresh_s)} | "
        f"**{statistics.median(fr.refresh_s):.2f}** (runs: "
        + ", ".join(f"{x:.2f}" for x in fr.refresh_s)
        + ") |",
        f"| `CREATE MATERIALIZED VIEW` | {fr.create_s:.2f} |",
        f"| the SELECT alone | {fr.query_s:.2f} |",
        "",
        f"One change is visible through the Freshet view "
        f"{1000 * statistics.median(fr.refresh_s) / common.percentile(fr.to_view_ms, 50):,.0f} "
        f"times sooner (p50) than one REFRESH takes "
        f"({1000 * statistics.median(fr.refresh_s) / common.percentile(fr.to_view_ms, 99):,.0f}"
        " times at p99).",
        "",
        "How it was measured:",
        "",
        f"- Servers: {r.tansu_version} (memory storage), PostgreSQL {r.pg_version} (`fsync=on`, "
        f"`wal_level=logical`) and Redis {r.redis_version} (append-only file, `everysec`), all on "
        "127.0.0.1 and started by the benchmark in a temporary directory. Ingest and transform "
        "run as their own processes (`python -m freshet.ingest`, `python -m freshet.transform`, "
        f"default settings, {common.partitions_phrase()}); the transform worker was healthy "
        f"{r.transform_ready_s:.1f} s after it started. Sources (`snapshot: initial`) and views "
        "are registered by writing their specs to `freshet.control.sources` / "
        "`freshet.control.views`, as control does (views compiled against `freshet.schemas` "
        "first). The machine is a shared 2-vCPU VM: compare figures within one run.",
        f"- Backlog: `customers` ({s.customers:,} rows, {len(REGIONS)} regions) and `orders` "
        f"({s.orders:,} rows: bigint key, int, text, numeric(12,2), text, timestamptz), COPYed "
        f"in {r.load_a_s:.1f} s before the source was registered, so they arrive as snapshot "
        f"reads; then, while ingest streamed, {r.stream.changes:,} changes in "
        f"{r.stream.transactions:,} transactions of {s.tx_rows} in a random mix: "
        f"{r.stream.updates:,} order UPDATEs (amount and status), {r.stream.deletes:,} DELETEs, "
        f"{r.stream.inserts:,} INSERTs and {r.stream.moves:,} customers moved to another region "
        "(each move retracts all the customer's orders from one group and adds them to another). "
        f"Ingest had all of it in Kafka {r.ingest_a_s:.1f} s after the source was registered "
        "(its position on `freshet.positions` covered the WAL end). The change topics then held "
        f"{floor.changes:,} change events ({_ops(floor.by_op)}) and {floor.tombstones:,} "
        "tombstones.",
        "- Each view: "
        + "; ".join(f"{v.view} = {_plain(v.sql)}" for v in r.views)
        + ". Timed from the moment its spec was written until the first status record on "
        "`freshet.status` whose `applied` reached the backlog's final LSN (every change applied, "
        "the view rows acknowledged by Kafka and the state committed to Redis). First status "
        "(the task had created its topic, loaded its empty state and started consuming) after "
        + " / ".join(f"{v.startup_s:.2f} s" for v in r.views)
        + "; the views reported events_in "
        + " / ".join(f"{v.events_in:,}" for v in r.views)
        + " and wrote "
        + " / ".join(f"{v.events_out:,}" for v in r.views)
        + " view rows. The views were deleted after their measurement (state dropped), so each "
        "ran alone.",
        "- CPU during each view's catch-up: "
        + " / ".join(_cpu(v) for v in r.views)
        + "; machine busy (steal) "
        + " / ".join(_busy(v.machine_busy, v.machine_steal) for v in r.views)
        + ". Transform's resident memory at the end: "
        + " / ".join(f"{v.rss_mib:,.0f} MiB" for v in r.views)
        + ".",
        "- Baseline: one confluent-kafka consumer in the benchmark process, assigned the two "
        "change topics from the beginning, `orjson.loads` of every value, until the fetch high "
        f"watermarks; it used {floor.cpu_s:.2f} s of CPU.",
        "- Every view's topic, folded, equals PostgreSQL's result of the same SQL at the end: "
        + "; ".join(
            f"{v.view} {'yes' if v.equal else 'NO (' + v.mismatch + ')'} ({v.view_rows:,} rows)"
            for v in [*r.views, big]
        )
        + ".",
        f"- Freshness: `big_customers` ({s.big_customers:,} rows) and `big_orders` "
        f"({s.big_orders:,} rows, same columns as above) COPYed in {r.load_b_s:.1f} s, "
        f"captured by a second source whose snapshot was in Kafka {r.ingest_b_s:.1f} s after it "
        f"was registered. View {big.view} = {_plain(VIEW_BIG)} then loaded "
        f"{big.changes:,} snapshot rows in {big.total_s:.1f} s ({common.fmt_int(big.rate)} "
        f"changes/s; {_cpu(big)}; resident memory {big.rss_mib:,.0f} MiB). Then each UPDATE "
        "sets one random order's amount to a new unique value larger than any other, so its "
        "region's `max_amount` becomes that value: the latency ends when a consumer of "
        f"`{topics.view_topic(big.view)}` (assigned, `fetch.wait.max.ms=5`, started before the "
        "updates) receives a row carrying it. The split uses the time ingest built the change "
        "event (its `ts_us`, read by a second consumer) and the view record's Kafka timestamp "
        "(set when transform produced it). Autocommit, one UPDATE per transaction, clocks of "
        "one host; the benchmark process polls in threads, so its own consumers add up to a few "
        f"ms. While the updates ran, transform used {100 * fr.transform_cpu:.0f}% of one core and "
        f"the machine was {_busy(fr.machine_busy, fr.machine_steal)} busy (steal), "
        f"{100 * fr.other_cpu:.0f}% of one core by processes that are not the benchmark's: other "
        "work on this shared VM shows in the tails (compare the UPDATE's own round trip).",
        f"- Baseline: `CREATE MATERIALIZED VIEW {PG_MATVIEW} AS <the same SQL>`, then `REFRESH "
        f"MATERIALIZED VIEW` {len(fr.refresh_s)} times (PostgreSQL's default settings for "
        "parallel query), after the freshness samples, with ingest and transform idle; "
        f"{fr.view_rows} rows. Tables were `VACUUM ANALYZE`d after loading.",
        f"- Whole benchmark: {r.total_s:.0f} s; load average after it: {r.load_after}.",
    ]
    return "\n".join(lines) + "\n"
