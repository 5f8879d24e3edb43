"""Serve benchmark: source commit -> row visible through REST, and point reads per second.

One run starts its own Tansu broker, a durable PostgreSQL 15 (fsync on) and Redis in a temporary
directory, runs ``python -m freshet.ingest``, ``python -m freshet.transform`` and
``python -m freshet.serve`` as their own processes (serve with its PostgreSQL target, as
``make run`` has it), registers a source, a view, a data product and an API key by writing their
specs to the desired-state topics exactly as control does, and measures:

1. **Freshness through serve** at a steady workload. A writer process commits UPDATEs of
   random rows of ``items`` (single-row transactions by default) at a fixed rate (2,000
   changes/s); meanwhile a probe process commits an UPDATE of one probe row (a new unique
   ``price``) every 50-100 ms, records when COMMIT returned, then polls
   ``GET /v1/products/<product>/rows/<key>`` until the new price is served. Baseline in the
   same run, for the same probes: a Kafka consumer of the view topic, stamping when the row
   carrying that price arrived (what serve starts from).
2. **Point reads.** With the workload stopped and the product serving the whole table, a load
   generator in its own process (asyncio, one keep-alive HTTP/1.1 connection per concurrent
   client, a fixed number of them) reads random keys for a fixed time. Baseline in the same run:
   the same generator, the same concurrency, doing what serve does in Redis for a point read
   directly, over RESP: serve's script (``EVALSHA``) that checks the ready generation and
   returns the row, one round trip.

Nothing here is a timed assertion: the figures are printed and written to BENCHMARKS.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition
from pydantic import SecretStr

from bench import common, transform
from bench.ingest import tansu_version
from freshet.common import codec, topics
from freshet.common.kafka import (
    CHANGE_FETCH_WAIT_MS,
    consumer_config,
    end_offsets,
    partitions_of,
    produce_sync,
    producer_config,
    read_to_end,
)
from freshet.common.products import ApiKeySpec, ProductRole, ProductSpec
from freshet.common.schemas import ViewSpec
from freshet.devstack import servers
from freshet.devstack.harness import Control
from freshet.serve.config import ServeSettings
from freshet.serve.read.rows import READY_ROW as READY_ROW_SCRIPT

HEADING = "## Serve (source commit -> REST, point reads)"
DATABASE = transform.DATABASE
TARGET_DATABASE = "serve_target"
SOURCE = "shop"
VIEW = "bench_items"
PRODUCT = "items"
ROLE = "reader"
REDIS_ROOT = ServeSettings.model_fields["serve_redis_prefix"].default

TARGET_P50_MS = 50.0
TARGET_P99_MS = 200.0
TARGET_READS = 3_000
TARGET_READ_P99_MS = 20.0

STATUSES = ("active", "backorder", "discontinued")
SCHEMA = """
CREATE TABLE public.items (
    id bigint PRIMARY KEY,
    sku text NOT NULL,
    name text NOT NULL,
    price numeric(12, 2) NOT NULL,
    stock integer NOT NULL,
    status text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
) WITH (autovacuum_enabled = false);
CREATE TABLE public.marker (id int);
"""
VIEW_SQL = (
    "SELECT id, sku, name, price, stock, status, updated_at FROM items WHERE status <> 'retired'"
)
UPDATE_ITEMS = (
    b"UPDATE public.items SET price = $1::numeric, stock = $2::int4, updated_at = now() "
    b"WHERE id = ANY($3::int8[])"
)
PROBE_BASE = 1_000_000  # probe prices start here: no workload price reaches it
WRITER_NICENESS = 10
GIVE_UP = 5  # probes in a row not served within their timeout end the probing


@dataclass
class Settings:
    rows: int = 100_000
    rate: int = 2_000  # workload changes/s while the probes run
    tx_sizes: tuple[int, ...] = (1, 10)  # one freshness round per workload transaction size
    writer_connections: int = 8
    warmup_s: float = 5.0  # workload alone before the first probe
    probes: int = 400
    probe_spacing_s: tuple[float, float] = (0.05, 0.1)
    probe_timeout_s: float = 10.0
    # Each GET costs serve ~0.25 ms of CPU: polling every 2 ms took a quarter of a core.
    poll_interval_s: float = 0.005
    read_warmup_s: float = 3.0
    read_seconds: float = 20.0
    concurrency: int = 16
    serve_target: bool = True  # serve also materializes into its PostgreSQL target database
    # The target database on a PostgreSQL cluster of its own (as a deployment would have it)
    # rather than in the source's cluster, as `make run` has it. No clear difference measured
    # once serve paced its PostgreSQL batches (BENCHMARKS.md).
    target_cluster: bool = False
    indexes: tuple[str, ...] = ()  # the view's indexes (none, as a view has unless it asks)
    # A consumer of the view topic during the probes, stamping arrivals (what serve starts
    # from). Off by default: it is one more reader of the topic serve reads, and each costs
    # the embedded broker CPU in proportion to the batches the topic holds.
    live_baseline: bool = False
    budget_s: float = 1500.0
    profile: bool = False


# --- the stack -------------------------------------------------------------------------------


class Stack(transform.Stack):
    """Transform's stack (broker, PostgreSQL, Redis, services as processes) in a dir of its own."""

    def __init__(self, deadline: common.Deadline) -> None:
        super().__init__(deadline)
        shutil.rmtree(self.work, ignore_errors=True)
        self.work = Path(tempfile.mkdtemp(prefix="freshet-bench-serve-"))
        self.work.chmod(0o755)  # the postgres account must reach its data dir
        self.serve_port = 0
        self.target_pg: servers.PgInfo | None = None

    def start_target(self, own_cluster: bool) -> None:
        """Create serve's target database: in a cluster of its own, or in the source's."""
        assert self.pg is not None
        self.target_pg = self.pg
        if own_cluster:
            data = self.work / "pg-target"
            servers.init_postgres(data, self.pg_password)
            port = servers.free_port()
            self._servers["target postgresql"] = servers.start_postgres(
                data,
                port,
                self.work / "postgres-target.log",
                durable=True,
                extra={"wal_level": "replica"},
            )
            self.target_pg = servers.PgInfo("127.0.0.1", port, "postgres", self.pg_password)
        with psycopg.connect(self.target_pg.conninfo(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {TARGET_DATABASE}")

    def target_cpu_seconds(self) -> float:
        """CPU of the target's own cluster (0 when the target shares the source's)."""
        managed = self._servers.get("target postgresql")
        return common.tree_cpu_seconds(managed.proc.pid) if managed else 0.0

    def target_url(self) -> str:
        pg = self.target_pg
        assert pg is not None
        password = urllib.parse.quote(pg.password, safe="")
        return f"postgresql+psycopg://{pg.user}:{password}@{pg.host}:{pg.port}/{TARGET_DATABASE}"


def load_items(conn: psycopg.Connection[Any], rows: int) -> float:
    """COPY ``rows`` items (ids 1..rows) plus the probe row (id rows + 1); seconds it took."""
    rng = random.Random(1)
    started = time.monotonic()
    copy = "COPY public.items (id, sku, name, price, stock, status) FROM STDIN"
    with conn.transaction(), conn.cursor() as cur, cur.copy(copy) as cp:
        for i in range(1, rows + 2):
            cp.write_row(
                (
                    i,
                    f"SKU-{i:08d}",
                    f"Item {i}",
                    f"{rng.randrange(100, 100_000) / 100:.2f}",
                    rng.randrange(0, 500),
                    rng.choice(STATUSES),
                )
            )
    conn.execute("VACUUM ANALYZE public.items")
    return time.monotonic() - started


# --- control-plane side: the product and its key ---------------------------------------------


def publish_product(stack: Stack, view: ViewSpec) -> tuple[ProductSpec, str]:
    """The product over ``view`` (every field, one role without filter or mask) and an API key
    that reads it, written to their control topics as control does; returns the key's secret
    form."""
    product = ProductSpec(
        name=PRODUCT,
        view=view.name,
        fields=tuple(c.name for c in view.columns),
        key=view.key,
        columns=view.columns,
        indexes=view.indexes,
        roles={ROLE: ProductRole()},
    )
    key_id = uuid.uuid4().hex[:12]
    secret = uuid.uuid4().hex
    key = ApiKeySpec(
        id=key_id,
        name="bench",
        secret_sha256=hashlib.sha256(secret.encode()).hexdigest(),
        roles=(ROLE,),
        products=(PRODUCT,),
    )
    producer = Producer(producer_config(stack.bootstrap))
    produce_sync(
        producer,
        topics.CONTROL_PRODUCTS,
        product.name.encode(),
        codec.dumps(product.model_dump(mode="json")),
    )
    produce_sync(
        producer, topics.CONTROL_KEYS, key_id.encode(), codec.dumps(key.model_dump(mode="json"))
    )
    producer.flush(10)
    return product, f"fsk_{key_id}_{secret}"


def wait_served(stack: Stack, api_key: str, key: int, timeout: float) -> float:
    """Wait until serve answers 200 for row ``key`` (the view is ready: caught up once)."""
    import httpx

    started = time.monotonic()
    limit = started + stack.deadline.cap(timeout)
    url = f"http://127.0.0.1:{stack.serve_port}/v1/products/{PRODUCT}/rows/{key}"
    last = ""
    with httpx.Client(headers={"Authorization": f"Bearer {api_key}"}, timeout=5) as client:
        while time.monotonic() < limit:
            stack.check()
            with contextlib.suppress(httpx.HTTPError):
                r = client.get(url)
                if r.status_code == 200:
                    return time.monotonic() - started
                last = f"{r.status_code} {r.text[:200]}"
            time.sleep(0.2)
    raise common.BenchError(f"serve did not serve row {key} within {timeout:.0f}s (last: {last})")


def wait_drained(stack: Stack, api_key: str, probe_id: int, round_: int, timeout: float) -> float:
    """Commit one more change to the probe row and wait until serve serves it: every change
    committed before it has then been applied too. Returns the seconds it took."""
    import httpx

    marker = Decimal(f"{PROBE_BASE - 1 - round_}.75")
    url = f"http://127.0.0.1:{stack.serve_port}/v1/products/{PRODUCT}/rows/{probe_id}"
    with stack.connect() as conn:
        conn.execute("UPDATE public.items SET price = %s WHERE id = %s", (marker, probe_id))
    started = time.monotonic()
    limit = started + stack.deadline.cap(timeout)
    with httpx.Client(headers={"Authorization": f"Bearer {api_key}"}, timeout=5) as client:
        while time.monotonic() < limit:
            stack.check()
            with contextlib.suppress(httpx.HTTPError):
                r = client.get(url)
                if r.status_code == 200 and Decimal(str(r.json()["price"])) == marker:
                    return time.monotonic() - started
            time.sleep(0.05)
    raise common.BenchError(f"serve did not apply the last change within {timeout:.0f}s")


# --- the workload: UPDATEs of random rows at a fixed rate (its own process) -------------------


def _writer_main(
    conninfo: str,
    rate: int,
    tx_rows: int,
    rows: int,
    connections: int,
    stop: Any,
    out_path: str,
) -> None:
    """Child process: UPDATE transactions of ``tx_rows`` random items each (autocommit, one
    prepared statement) on a fixed schedule of ``rate`` changed rows per second over
    ``connections`` connections, until ``stop`` is set. Writes how many rows it changed, over
    which window, and the CPU it and its PostgreSQL backends used."""
    import gc

    gc.disable()
    # The writer stands for the applications that write to the source database, which do not
    # share the pipeline's machine: when both want the CPU, the pipeline goes first. (It keeps
    # its schedule all the same: the report counts its late transactions and the rate reached.)
    os.nice(WRITER_NICENESS)
    conns = [psycopg.connect(conninfo, autocommit=True) for _ in range(connections)]
    for conn in conns:
        res = conn.pgconn.prepare(b"upd", UPDATE_ITEMS)
        if res.status != psycopg.pq.ExecStatus.COMMAND_OK:
            raise RuntimeError((res.error_message or b"").decode())
    backends = [conn.pgconn.backend_pid for conn in conns]
    interval = connections * tx_rows / rate
    done = [0] * connections
    late = [0] * connections
    errors: list[BaseException] = []

    def work(j: int) -> None:
        pgconn = conns[j].pgconn
        rng = random.Random(100 + j)
        try:
            i = 0
            while not stop.is_set():
                delay = start + (j / connections + i) * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -0.05:
                    late[j] += 1
                params = [
                    f"{rng.randrange(100, 100_000) / 100:.2f}".encode(),
                    str(rng.randrange(0, 500)).encode(),
                    (
                        "{" + ",".join(map(str, rng.sample(range(1, rows + 1), tx_rows))) + "}"
                    ).encode(),
                ]
                res = pgconn.exec_prepared(b"upd", params)
                if res.status != psycopg.pq.ExecStatus.COMMAND_OK:
                    raise RuntimeError((res.error_message or b"").decode())
                done[j] += tx_rows
                i += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(j,)) for j in range(connections)]
    cpu0 = time.process_time()
    backends0 = sum(common.cpu_seconds(pid) for pid in backends)
    start = time.monotonic() + 0.1
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    window = time.monotonic() - start
    result = {
        "committed": sum(done),
        "late": sum(late),
        "window_s": window,
        "writer_cpu_s": time.process_time() - cpu0,
        "backends_cpu_s": sum(common.cpu_seconds(pid) for pid in backends) - backends0,
        "error": repr(errors[0]) if errors else None,
    }
    for conn in conns:
        conn.close()
    Path(out_path).write_bytes(orjson.dumps(result))


# --- the probe: commit, then poll REST until the change is served (its own process) -----------


def probe_marker(i: int, round_: int) -> Decimal:
    return Decimal(f"{PROBE_BASE + 100_000 * round_ + i}.25")


def _probe_main(
    conninfo: str,
    url: str,
    api_key: str,
    probe_id: int,
    round_: int,
    probes: int,
    spacing: tuple[float, float],
    timeout: float,
    poll_interval: float,
    out_path: str,
) -> None:
    """Child process: ``probes`` times, UPDATE the probe row to a new unique price, then GET it
    through serve until that price is served. Writes, per probe: COMMIT sent and returned, the
    GET that first showed it sent and answered (ns, time.time_ns), the GETs it took and how many
    of them failed (not 200, or no answer)."""
    import gc
    import http.client

    gc.disable()
    rng = random.Random(7)
    results: list[tuple[int, int, int, int, int, int, int]] = []
    # http.client on one keep-alive connection: about half the CPU per GET of httpx, and the
    # probe shares the machine with what it measures.
    parts = urllib.parse.urlsplit(url)
    headers = {"Authorization": f"Bearer {api_key}"}
    http_conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=5)

    def get() -> tuple[int, bytes]:
        try:
            http_conn.request("GET", parts.path, headers=headers)
            response = http_conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            http_conn.close()  # the next request connects again
            raise

    def price(body: bytes) -> Decimal:
        return Decimal(str(orjson.loads(body)["price"]))

    with psycopg.connect(conninfo, autocommit=True) as conn:
        get()  # connected before the first probe
        next_at = time.monotonic()
        for i in range(probes):
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            marker = probe_marker(i, round_)
            before = time.time_ns()
            conn.execute("UPDATE public.items SET price = %s WHERE id = %s", (marker, probe_id))
            after = time.time_ns()
            next_at = time.monotonic() + rng.uniform(*spacing)
            sent = seen = polls = failed = 0
            limit = time.monotonic() + timeout
            while time.monotonic() < limit:
                sent = time.time_ns()
                try:
                    status, body = get()
                except (OSError, http.client.HTTPException):
                    failed += 1  # counted and reported; the probe goes on polling
                    time.sleep(poll_interval)
                    continue
                got = time.time_ns()
                polls += 1
                if status == 200 and price(body) == marker:
                    seen = got
                    break
                if status != 200:
                    failed += 1
                time.sleep(poll_interval)
            results.append((i, before, after, sent if seen else 0, seen, polls, failed))
            if not seen or i % 50 == 0:
                shown = f"{(seen - after) / 1e6:.1f} ms" if seen else "not served"
                print(
                    f"bench serve: probe {i}: {shown} ({polls} GETs, {failed} failed)",
                    file=sys.stderr,
                    flush=True,
                )
            if len(results) >= GIVE_UP and not any(r[4] for r in results[-GIVE_UP:]):
                print(
                    f"bench serve: {GIVE_UP} probes in a row not served within {timeout:.0f} s: "
                    "the stack does not keep up; the probes stop here",
                    file=sys.stderr,
                    flush=True,
                )
                break
    Path(out_path).write_bytes(orjson.dumps(results))


def probe_records(
    bootstrap: str, topic: str, start: dict[int, int], probe_id: int
) -> dict[Decimal, int]:
    """Probe price -> the Kafka timestamp (ms, set when transform produced it) of the first view
    row carrying it, read from ``start`` to the topic's end."""
    consumer = Consumer(consumer_config(bootstrap, f"bench-serve-{uuid.uuid4().hex[:8]}"))
    produced: dict[Decimal, int] = {}
    try:
        for msg in read_to_end(consumer, topic, timeout=120, start=start):
            raw, key = msg.value(), msg.key()
            if raw is None or key is None or orjson.loads(key).get("id") != probe_id:
                continue
            price = Decimal(str(orjson.loads(raw)["price"]))
            if price >= PROBE_BASE:
                produced.setdefault(price, msg.timestamp()[1])
    finally:
        consumer.close()
    return produced


def topic_end(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = Consumer(
        consumer_config(
            bootstrap, f"bench-serve-{uuid.uuid4().hex[:8]}", **{"max.partition.fetch.bytes": 1024}
        )
    )
    try:
        return end_offsets(consumer, topic)
    finally:
        consumer.close()


class ViewArrivals:
    """Stamps (``time.time_ns``, as each ``poll()`` returns it) the first arrival on the view
    topic of the probe row with each probe price; started at the topic's end."""

    def __init__(self, bootstrap: str, topic: str, probe_id: int) -> None:
        self._consumer = Consumer(
            consumer_config(
                bootstrap,
                f"bench-serve-{uuid.uuid4().hex[:8]}",
                **{"fetch.wait.max.ms": CHANGE_FETCH_WAIT_MS, "fetch.min.bytes": 1},
            )
        )
        self._consumer.assign(
            [TopicPartition(topic, p, OFFSET_END) for p in partitions_of(self._consumer, topic)]
        )
        self._probe_id = probe_id
        # probe price -> (arrival ns, the record's Kafka timestamp in ms)
        self.seen: dict[Decimal, tuple[int, int]] = {}
        self.records = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="view-arrivals", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                msg = self._consumer.poll(0.05)
                if msg is None:
                    continue
                now = time.time_ns()
                raw, key = msg.value(), msg.key()
                if msg.error() or raw is None or key is None:
                    continue
                self.records += 1
                if orjson.loads(key).get("id") != self._probe_id:
                    continue
                price = Decimal(str(orjson.loads(raw)["price"]))
                if price >= PROBE_BASE and price not in self.seen:
                    self.seen[price] = (now, msg.timestamp()[1])
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


@dataclass
class Freshness:
    tx_rows: int
    rate: int
    committed: int  # workload UPDATEs during the phase
    achieved_rate: float
    late: int  # workload transactions started > 50 ms behind schedule
    probes: int
    missing: int  # probes never served within the timeout
    missing_topic: int  # probes whose row is not on the view topic
    to_rest_ms: list[float]  # COMMIT returned -> the GET that showed it answered
    to_rest_sent_ms: list[float]  # COMMIT returned -> that GET was sent (the lower bound)
    to_produced_ms: list[float]  # COMMIT returned -> transform produced the view row (1 ms res.)
    produced_to_rest_ms: list[float]  # transform produced the view row -> served, per probe
    to_topic_ms: list[float]  # COMMIT returned -> the view row at a live consumer (if any)
    topic_to_rest_ms: list[float]  # view row at the live consumer -> served (per probe)
    commit_ms: list[float]  # the probe UPDATE's own round trip
    polls: float  # GETs per probe, mean
    failed_polls: int  # GETs that were not answered 200
    seconds: float
    cpu: dict[str, float]  # share of one core per part
    machine_busy: float
    machine_steal: float
    other_cpu: float  # share of one core used by processes that are not the benchmark's
    profile: str = ""  # py-spy summary of serve's materializer thread (--profile)


def tx_label(rows: int) -> str:
    return "single-row UPDATE transactions" if rows == 1 else f"UPDATE transactions of {rows} rows"


def _cpu_pids(stack: Stack) -> dict[str, int]:
    return {
        "serve": stack.pid("serve"),
        "transform": stack.pid("transform"),
        "ingest": stack.pid("ingest"),
        "broker": stack.pid("kafka"),
        "Redis": stack.pid("redis"),
    }


def measure_freshness(
    stack: Stack, settings: Settings, api_key: str, tx_rows: int, round_: int
) -> Freshness:
    probe_id = settings.rows + 1
    ctx = multiprocessing.get_context("spawn")
    view_topic = topics.view_topic(VIEW)
    start = topic_end(stack.bootstrap, view_topic)
    arrivals = (
        ViewArrivals(stack.bootstrap, view_topic, probe_id) if settings.live_baseline else None
    )
    stop = ctx.Event()
    writer_out = stack.work / f"writer-{round_}.json"
    probe_out = stack.work / f"probe-{round_}.json"
    writer = ctx.Process(
        target=_writer_main,
        args=(
            stack.conninfo(),
            settings.rate,
            tx_rows,
            settings.rows,
            settings.writer_connections,
            stop,
            str(writer_out),
        ),
        name="bench-writer",
    )
    probe = ctx.Process(
        target=_probe_main,
        args=(
            stack.conninfo(),
            f"http://127.0.0.1:{stack.serve_port}/v1/products/{PRODUCT}/rows/{probe_id}",
            api_key,
            probe_id,
            round_,
            settings.probes,
            settings.probe_spacing_s,
            settings.probe_timeout_s,
            settings.poll_interval_s,
            str(probe_out),
        ),
        name="bench-probe",
    )
    pids = _cpu_pids(stack)
    profile = ""
    try:
        time.sleep(1.0)  # the consumer is at the end
        writer.start()
        time.sleep(settings.warmup_s)
        cpu0 = {name: common.cpu_seconds(pid) for name, pid in pids.items()}
        pg0 = common.tree_cpu_seconds(stack.pid("postgresql"))
        target0 = stack.target_cpu_seconds()
        machine0, own0, began = common.machine_cpu(), stack.own_cpu_seconds(), time.monotonic()
        probe.start()
        profiler = (
            transform.start_profiler(stack, stack.pid("serve"), f"serve-fresh-{tx_rows}")
            if settings.profile
            else None
        )
        limit = time.monotonic() + stack.deadline.cap(
            settings.probes * (settings.probe_spacing_s[1] + settings.probe_timeout_s) + 60
        )
        while probe.is_alive() and time.monotonic() < limit:
            stack.check()
            if not writer.is_alive():
                raise common.BenchError(f"the workload writer exited ({writer.exitcode})")
            if arrivals is not None and arrivals.error is not None:
                raise common.BenchError(f"the view-topic consumer failed: {arrivals.error}")
            probe.join(0.5)
        if probe.is_alive() or probe.exitcode != 0:
            raise common.BenchError(f"the probe did not finish (exit code {probe.exitcode})")
        seconds = time.monotonic() - began
        cpu1 = {name: common.cpu_seconds(pid) for name, pid in pids.items()}
        pg1 = common.tree_cpu_seconds(stack.pid("postgresql"))
        target1 = stack.target_cpu_seconds()
        machine1, own1 = common.machine_cpu(), stack.own_cpu_seconds()
        if profiler is not None:
            profile = _stop_profiler(stack, profiler, f"serve-fresh-{tx_rows}", f"serve-{VIEW}")
        stop.set()
        writer.join(30)
        time.sleep(0.5)  # the last probes' rows reach the consumer
    finally:
        stop.set()
        for proc in (probe, writer):
            if proc.is_alive():
                proc.terminate()
                proc.join(10)
        if arrivals is not None:
            arrivals.close()
    work = orjson.loads(writer_out.read_bytes())
    if work["error"]:
        raise common.BenchError(f"the workload writer failed: {work['error']}")
    probes = orjson.loads(probe_out.read_bytes())
    produced_at = probe_records(stack.bootstrap, view_topic, start, probe_id)
    to_rest, to_sent, to_topic, topic_to_rest, commit = [], [], [], [], []
    produced, produced_to_rest = [], []
    missing = missing_topic = 0
    for i, before, after, sent, seen, _polls, _failed in probes:
        commit.append((after - before) / 1e6)
        if seen:
            to_rest.append((seen - after) / 1e6)
            to_sent.append(max(0, sent - after) / 1e6)
        else:
            missing += 1
        marker = probe_marker(i, round_)
        stamp = produced_at.get(marker)
        if stamp is None:
            missing_topic += 1
        else:
            produced.append(stamp - after / 1e6)
            if seen:
                produced_to_rest.append(seen / 1e6 - stamp)
        arrived = arrivals.seen.get(marker) if arrivals is not None else None
        if arrived is not None:
            to_topic.append((arrived[0] - after) / 1e6)
            if seen:
                topic_to_rest.append((seen - arrived[0]) / 1e6)
    cpu = {name: (cpu1[name] - cpu0[name]) / seconds for name in pids}
    if stack.target_pg is stack.pg:
        cpu["PostgreSQL (all backends, source and target)"] = (pg1 - pg0) / seconds
    else:
        cpu["PostgreSQL source (all backends)"] = (pg1 - pg0) / seconds
        cpu["PostgreSQL target (all backends)"] = (target1 - target0) / seconds
    cpu["workload writer"] = work["writer_cpu_s"] / work["window_s"]
    others = machine1.cpu_seconds_since(machine0) - (own1 - own0)
    return Freshness(
        tx_rows=tx_rows,
        rate=settings.rate,
        committed=work["committed"],
        achieved_rate=work["committed"] / work["window_s"],
        late=work["late"],
        probes=len(probes),
        missing=missing,
        missing_topic=missing_topic,
        to_rest_ms=sorted(to_rest),
        to_rest_sent_ms=sorted(to_sent),
        to_produced_ms=sorted(produced),
        produced_to_rest_ms=sorted(produced_to_rest),
        to_topic_ms=sorted(to_topic),
        topic_to_rest_ms=sorted(topic_to_rest),
        commit_ms=sorted(commit),
        polls=sum(p[5] for p in probes) / max(1, len(probes)),
        failed_polls=sum(p[6] for p in probes),
        seconds=seconds,
        cpu=cpu,
        machine_busy=machine1.busy_since(machine0),
        machine_steal=machine1.steal_since(machine0),
        other_cpu=max(0.0, others) / seconds,
        profile=profile,
    )


# --- point reads: the load generator (its own process) ---------------------------------------


@dataclass
class LoadSpec:
    """What the load generator reads, and how hard."""

    mode: str  # "http" (serve) or "redis" (the same reads straight from Redis)
    port: int
    rows: int
    concurrency: int
    warmup_s: float
    seconds: float
    api_key: str = ""
    redis_root: str = ""


def _resp(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


async def _read_bulk(reader: asyncio.StreamReader) -> bytes | None:
    line = await reader.readline()
    if not line.startswith(b"$"):
        raise ValueError(f"unexpected Redis reply {line[:80]!r}")
    n = int(line[1:-2])
    if n < 0:
        return None
    return (await reader.readexactly(n + 2))[:-2]


async def _loadgen(spec: LoadSpec) -> dict[str, Any]:
    from freshet.serve.materialize.keys import tuple_encoder
    from freshet.serve.materialize.stores.redis import RedisKeys

    encode = tuple_encoder(["int8"])
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2
    measure_from = start + spec.warmup_s
    end = measure_from + spec.seconds
    latencies: list[int] = []
    counts = {"ok": 0, "errors": 0, "warmup": 0}
    first_error: list[str] = []
    prefix = f"GET /v1/products/{PRODUCT}/rows/".encode()
    host = f"Host: 127.0.0.1:{spec.port}\r\n"
    suffix = f" HTTP/1.1\r\n{host}Authorization: Bearer {spec.api_key}\r\n\r\n".encode()
    gen_key = RedisKeys(spec.redis_root, VIEW).gen.encode()

    async def one_http(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: int
    ) -> str | None:
        writer.write(prefix + str(key).encode() + suffix)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at < 0:
            raise ValueError("a response without content-length")
        length = int(lower[at + 17 : lower.index(b"\r\n", at + 2)])
        body = await reader.readexactly(length)
        if status != 200:
            return f"HTTP {status}: {body[:200]!r}"
        if orjson.loads(body).get("id") != key:
            return f"wrong row for key {key}: {body[:200]!r}"
        return None

    async def one_redis(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: int
    ) -> str | None:
        # What serve does for a point read: its script, with the generation it saw last.
        writer.write(_resp(b"EVALSHA", sha, b"2", gen_key, rows_key, generation, encode([key])))
        head = await reader.readline()
        found = await reader.readline()
        if head != b"*2\r\n" or found != b":1\r\n":
            return f"unexpected reply {head + found!r}"
        raw = await _read_bulk(reader)
        if raw is None:
            return f"no row for key {key}"
        if orjson.loads(raw).get("id") != key:
            return f"wrong row for key {key}"
        return None

    one = one_http if spec.mode == "http" else one_redis
    if spec.mode == "redis":
        reader, writer = await asyncio.open_connection("127.0.0.1", spec.port)
        writer.write(_resp(b"SCRIPT", b"LOAD", READY_ROW_SCRIPT.encode()))
        sha = await _read_bulk(reader) or b""
        writer.write(_resp(b"HGET", gen_key, b"ready"))
        generation = await _read_bulk(reader) or b"0"
        rows_key = RedisKeys(spec.redis_root, VIEW, int(generation)).rows.encode()
        writer.close()

    async def client(n: int) -> None:
        rng = random.Random(n)
        reader, writer = await asyncio.open_connection("127.0.0.1", spec.port)
        while loop.time() < start:
            await asyncio.sleep(0.01)
        try:
            while True:
                t0 = loop.time()
                if t0 >= end:
                    return
                sent = time.perf_counter_ns()
                try:
                    problem = await one(reader, writer, rng.randrange(1, spec.rows + 1))
                except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", spec.port)
                took = time.perf_counter_ns() - sent
                if t0 < measure_from:
                    counts["warmup"] += 1
                elif problem is None:
                    counts["ok"] += 1
                    latencies.append(took)
                else:
                    counts["errors"] += 1
                    if not first_error:
                        first_error.append(problem)
        finally:
            writer.close()

    cpu0 = time.process_time()
    await asyncio.gather(*(client(n) for n in range(spec.concurrency)))
    return {
        "latencies_ns": latencies,
        "ok": counts["ok"],
        "errors": counts["errors"],
        "warmup": counts["warmup"],
        "first_error": first_error[0] if first_error else "",
        "seconds": spec.seconds,
        "cpu_s": time.process_time() - cpu0,
    }


def _loadgen_main(spec: LoadSpec, out_path: str) -> None:
    """Child process: run the load generator (on uvloop when installed) and write its results."""
    import gc

    gc.disable()
    try:
        import uvloop

        result = uvloop.run(_loadgen(spec))
    except ImportError:
        result = asyncio.run(_loadgen(spec))
    Path(out_path).write_bytes(orjson.dumps(result))


@dataclass
class Reads:
    mode: str
    concurrency: int
    ok: int
    errors: int
    first_error: str
    seconds: float
    latency_ms: list[float]
    loadgen_cpu: float  # share of one core
    cpu: dict[str, float]  # share of one core: serve, Redis
    machine_busy: float
    machine_steal: float
    other_cpu: float
    profile: str = ""

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else float("nan")


def measure_reads(stack: Stack, spec: LoadSpec, profile: bool = False) -> Reads:
    ctx = multiprocessing.get_context("spawn")
    out = stack.work / f"reads-{spec.mode}.json"
    proc = ctx.Process(target=_loadgen_main, args=(spec, str(out)), name="bench-loadgen")
    pids = {"serve": stack.pid("serve"), "Redis": stack.pid("redis")}
    proc.start()
    # Sample the CPU over the measured window only (the child starts, then warms up).
    time.sleep(1.0 + spec.warmup_s)
    cpu0 = {name: common.cpu_seconds(pid) for name, pid in pids.items()}
    machine0, own0, began = common.machine_cpu(), stack.own_cpu_seconds(), time.monotonic()
    profiler = (
        transform.start_profiler(stack, stack.pid("serve"), f"serve-{spec.mode}")
        if profile
        else None
    )
    summary = ""
    try:
        proc.join(stack.deadline.cap(spec.seconds + 120))
    finally:
        if profiler is not None:
            summary = _stop_profiler(stack, profiler, f"serve-{spec.mode}")
        if proc.is_alive():
            proc.terminate()
            proc.join(10)
    seconds = time.monotonic() - began
    cpu1 = {name: common.cpu_seconds(pid) for name, pid in pids.items()}
    machine1, own1 = common.machine_cpu(), stack.own_cpu_seconds()
    if proc.exitcode != 0:
        raise common.BenchError(f"the load generator failed (exit code {proc.exitcode})")
    result = orjson.loads(out.read_bytes())
    return Reads(
        mode=spec.mode,
        concurrency=spec.concurrency,
        ok=result["ok"],
        errors=result["errors"],
        first_error=result["first_error"],
        seconds=result["seconds"],
        latency_ms=sorted(v / 1e6 for v in result["latencies_ns"]),
        loadgen_cpu=result["cpu_s"] / (result["seconds"] + spec.warmup_s),
        cpu={name: (cpu1[name] - cpu0[name]) / seconds for name in pids},
        machine_busy=machine1.busy_since(machine0),
        machine_steal=machine1.steal_since(machine0),
        other_cpu=max(0.0, machine1.cpu_seconds_since(machine0) - (own1 - own0)) / seconds,
        profile=summary,
    )


def _stop_profiler(stack: Stack, proc: Any, name: str, thread: str = "MainThread") -> str:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(2)  # SIGINT: py-spy writes its output and exits
    with contextlib.suppress(Exception):
        proc.wait(30)
    path = stack.work / f"profile-{name}.txt"
    if not path.exists():
        return ""
    kept = Path(tempfile.gettempdir()) / f"freshet-bench-serve-profile-{name}.txt"
    shutil.copy(path, kept)
    print(f"bench: py-spy samples (raw, collapsed, with idle) in {kept}", file=sys.stderr)
    return transform.summarize_profile(path.read_text(), thread)


# --- the whole run ---------------------------------------------------------------------------


@dataclass
class Result:
    settings: Settings
    tansu_version: str
    load_before: str
    pg_version: str = ""
    redis_version: str = ""
    load_s: float = 0.0
    ingest_s: float = 0.0
    view_s: float = 0.0
    served_s: float = 0.0
    serve_ready_s: float = 0.0
    fresh: list[Freshness] = field(default_factory=list)
    drain_s: list[float] = field(default_factory=list)  # workload stopped -> serve applied it
    reads: list[Reads] = field(default_factory=list)
    total_s: float = 0.0
    load_after: str = ""


def _log(fmt: str, *args: Any) -> None:
    print("bench serve: " + (fmt % args if args else fmt), file=sys.stderr, flush=True)


def run(settings: Settings | None = None) -> Result:
    settings = settings or Settings()
    began = time.monotonic()
    result = Result(settings, tansu_version(), common.load_average())
    stack = Stack(common.Deadline(settings.budget_s))
    followers: list[transform.Follower] = []
    try:
        _log("starting Tansu, PostgreSQL (fsync on) and Redis in %s", stack.work)
        stack.start_servers()
        result.pg_version, result.redis_version = stack.pg_version, stack.redis_version
        if settings.serve_target:
            stack.start_target(settings.target_cluster)
        with stack.connect() as conn:
            conn.execute(SCHEMA)
            result.load_s = load_items(conn, settings.rows)
        _log("loaded %d items in %.1fs", settings.rows + 1, result.load_s)
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
        stack.serve_port = servers.free_port()
        serve_env = {
            "FRESHET_REDIS_URL": stack.redis_url,
            "FRESHET_SERVE_PORT": str(stack.serve_port),
        }
        if settings.serve_target:
            serve_env["FRESHET_TARGET_DATABASE_URL"] = stack.target_url()
        stack.start_service("serve", serve_env)
        status = transform.Follower(stack.bootstrap, topics.STATUS)
        followers.append(status)
        positions = transform.Follower(stack.bootstrap, topics.POSITIONS)
        followers.append(positions)
        control = Control(stack.bootstrap, SecretStr(stack.secret_key))
        transform.wait_http(f"http://127.0.0.1:{transform_port}/health", stack, 90)
        result.serve_ready_s = transform.wait_http(
            f"http://127.0.0.1:{stack.serve_port}/health", stack, 90
        )

        started = time.monotonic()
        transform.register_source(stack, SOURCE, ("public.items",))
        lsn = transform.end_of_writes(stack)
        transform.wait_ingested(stack, positions, SOURCE, lsn, 300)
        result.ingest_s = time.monotonic() - started
        _log("ingest snapshot of %d items in Kafka after %.1fs", settings.rows + 1, result.ingest_s)

        started = time.monotonic()
        catalog = control.catalog({f"{SOURCE}.public.items"})
        view = control.add_view(VIEW, VIEW_SQL, catalog, indexes=settings.indexes)

        def applied() -> bool | None:
            for _t, st in transform.statuses_of(status, VIEW):
                if st.state == "error":
                    raise common.BenchError(f"view {VIEW} failed: {st.reason}")
                if st.applied.get(SOURCE, -1) >= lsn:
                    return True
            return None

        status.wait(applied, stack, 600, f"view {VIEW} applying the snapshot")
        result.view_s = time.monotonic() - started
        _log("view %s applied the snapshot in %.1fs", VIEW, result.view_s)
        started = time.monotonic()
        _product, api_key = publish_product(stack, view)
        wait_served(stack, api_key, settings.rows + 1, 600)
        result.served_s = time.monotonic() - started
        _log("serve serves product %s after %.1fs more", PRODUCT, result.served_s)
        # The bench's own followers of the status and positions topics are done: left running
        # (each fetching every 10 ms a topic that grows all the time) they would cost the
        # broker CPU that no Freshet service spends.
        while followers:
            followers.pop().close()

        for round_, tx_rows in enumerate(settings.tx_sizes):
            _log(
                "freshness: %d probes under %d changes/s of %s",
                settings.probes,
                settings.rate,
                tx_label(tx_rows),
            )
            fr = measure_freshness(stack, settings, api_key, tx_rows, round_)
            result.fresh.append(fr)
            _log(
                "freshness: commit -> REST p50 %s p99 %s; commit -> view row produced p50 %s "
                "p99 %s; workload %.0f changes/s, missing %d/%d",
                common.fmt_ms(common.percentile(fr.to_rest_ms, 50)),
                common.fmt_ms(common.percentile(fr.to_rest_ms, 99)),
                common.fmt_ms(common.percentile(fr.to_produced_ms, 50)),
                common.fmt_ms(common.percentile(fr.to_produced_ms, 99)),
                fr.achieved_rate,
                fr.missing,
                fr.missing_topic,
            )
            result.drain_s.append(wait_drained(stack, api_key, settings.rows + 1, round_, 600))
            _log(
                "serve had applied every workload change %.1fs after the workload stopped",
                result.drain_s[-1],
            )
        redis_port = urllib.parse.urlsplit(stack.redis_url).port or 6379
        for mode in ("http", "redis"):
            spec = LoadSpec(
                mode=mode,
                port=stack.serve_port if mode == "http" else redis_port,
                rows=settings.rows,
                concurrency=settings.concurrency,
                warmup_s=settings.read_warmup_s,
                seconds=settings.read_seconds,
                api_key=api_key,
                redis_root=REDIS_ROOT,
            )
            _log("point reads (%s), concurrency %d", mode, spec.concurrency)
            reads = measure_reads(stack, spec, profile=settings.profile and mode == "http")
            result.reads.append(reads)
            _log(
                "point reads (%s): %s/s, p50 %s p99 %s, errors %d %s",
                mode,
                common.fmt_int(reads.rate),
                common.fmt_ms(common.percentile(reads.latency_ms, 50)),
                common.fmt_ms(common.percentile(reads.latency_ms, 99)),
                reads.errors,
                reads.first_error,
            )
            if reads.profile:
                print(reads.profile, file=sys.stderr)
        result.total_s = time.monotonic() - began
        result.load_after = common.load_average()
        return result
    except BaseException:
        stack.failed = True
        for name, (_proc, log) in stack.services.items():
            print(f"bench: last lines of {name}.log:\n{common.tail(log)}", file=sys.stderr)
        raise
    finally:
        for follower in followers:
            with contextlib.suppress(Exception):
                follower.close()
        stack.close()


# --- the report ------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _quantiles(values: list[float]) -> str:
    pct = common.percentile
    return " | ".join(
        common.fmt_ms(v)
        for v in (
            pct(values, 50),
            pct(values, 95),
            pct(values, 99),
            values[-1] if values else float("nan"),
        )
    )


def _shares(cpu: dict[str, float]) -> str:
    return ", ".join(f"{name} {100 * share:.0f}%" for name, share in cpu.items())


def _fresh_table(s: Settings, fr: Freshness) -> list[str]:
    p50, p99 = common.percentile(fr.to_rest_ms, 50), common.percentile(fr.to_rest_ms, 99)
    return [
        f"**{tx_label(fr.tx_rows).capitalize()}**: {fr.probes} probes"
        + (
            f" (of {s.probes} planned: probing stopped after {GIVE_UP} in a row were not "
            f"served within {s.probe_timeout_s:.0f} s)"
            if fr.probes < s.probes
            else ""
        )
        + f", the workload changed {fr.achieved_rate:,.0f} rows/s (set: {fr.rate:,}/s):",
        "",
        "| path, same probes | p50 | p95 | p99 | max | vs target |",
        "|---|---|---|---|---|---|",
        f"| **COMMIT -> row served by `GET /v1/products/{PRODUCT}/rows/<key>`** (missing "
        f"{fr.missing}) | {_quantiles(fr.to_rest_ms)} | p50 "
        f"{_verdict(not fr.missing and p50 <= TARGET_P50_MS)}, p99 "
        f"{_verdict(not fr.missing and p99 <= TARGET_P99_MS)} |",
        f"| baseline: COMMIT -> transform produced the view row on `{topics.view_topic(VIEW)}` "
        f"(the record's timestamp, 1 ms resolution; missing {fr.missing_topic}) "
        f"| {_quantiles(fr.to_produced_ms)} | |",
        f"| what serve adds: view row produced -> served, per probe "
        f"| {_quantiles(fr.produced_to_rest_ms)} | |",
        *(
            [
                f"| COMMIT -> the view row at a live Kafka consumer (`--live-baseline`) "
                f"| {_quantiles(fr.to_topic_ms)} | |",
                f"| view row at that consumer -> served, per probe "
                f"| {_quantiles(fr.topic_to_rest_ms)} | |",
            ]
            if fr.to_topic_ms
            else []
        ),
        f"| COMMIT -> the GET that first showed it was sent (the lower bound) "
        f"| {_quantiles(fr.to_rest_sent_ms)} | |",
        f"| the probe UPDATE's own round trip (COMMIT included, fsync on) "
        f"| {_quantiles(fr.commit_ms)} | |",
        "",
    ]


def _fresh_detail(fr: Freshness, drain_s: float) -> str:
    return (
        f"{tx_label(fr.tx_rows)}: {fr.committed:,} rows changed during the probes "
        f"({fr.late} transactions started more than 50 ms late), {fr.polls:.1f} GETs per probe "
        f"on average ({fr.failed_polls} of all of them not answered 200); during the probes "
        f"({fr.seconds:.0f} s), share of one core: {_shares(fr.cpu)}; machine busy (steal) "
        f"{100 * fr.machine_busy:.0f}% ({100 * fr.machine_steal:.0f}%), "
        f"{100 * fr.other_cpu:.0f}% of one core used by processes that are not the benchmark's; "
        f"after the workload stopped, serve served a last change of the probe row {drain_s:.1f} "
        "s later"
    )


def report(r: Result) -> str:
    s = r.settings
    assert r.fresh and r.reads
    pct = common.percentile
    http = next(x for x in r.reads if x.mode == "http")
    direct = next(x for x in r.reads if x.mode == "redis")
    read_p99 = pct(http.latency_ms, 99)
    lines = [
        *common.machine_lines(
            [
                ("Load average before the run", r.load_before),
                ("Broker", f"{r.tansu_version}, memory storage"),
                ("PostgreSQL", r.pg_version),
                ("Redis", r.redis_version),
            ]
        ),
        "- Reproduce: `make bench-serve` (or `.venv/bin/python -m bench.run serve`; `--profile` "
        "samples serve with py-spy during the point reads)",
        "",
        f"Freshness through serve: probes, each an UPDATE of one probe row committed every "
        f"{1000 * s.probe_spacing_s[0]:.0f}-{1000 * s.probe_spacing_s[1]:.0f} ms, while a "
        f"workload changes {s.rate:,} random rows/s of the same table; COMMIT returned -> the "
        f"new value visible (target p50 <= {TARGET_P50_MS:.0f} ms, p99 <= "
        f"{TARGET_P99_MS:.0f} ms at {s.rate:,} changes/s). One round per workload transaction "
        "size, one after the other:",
        "",
        *(line for fr in r.fresh for line in _fresh_table(s, fr)),
        f"Point reads: a load generator in its own process reads random keys of the "
        f"{s.rows + 1:,}-row product over {s.concurrency} keep-alive connections for "
        f"{s.read_seconds:.0f} s (after {s.read_warmup_s:.0f} s of warm-up), the workload "
        f"stopped (target >= {TARGET_READS:,} reads/s with p99 <= {TARGET_READ_P99_MS:.0f} ms):",
        "",
        "| reads, same run | reads/s | p50 | p95 | p99 | max | errors | vs target |",
        "|---|---|---|---|---|---|---|---|",
        f"| **`GET /v1/products/{PRODUCT}/rows/<key>` through serve** | "
        f"**{common.fmt_int(http.rate)}** | {_quantiles(http.latency_ms)} | {http.errors} | "
        f"rate {_verdict(not http.errors and http.rate >= TARGET_READS)}, p99 "
        f"{_verdict(not http.errors and read_p99 <= TARGET_READ_P99_MS)} |",
        "| baseline: the same reads in Redis directly (serve's script: ready generation "
        f"check + row, one `EVALSHA`) | "
        f"**{common.fmt_int(direct.rate)}** | {_quantiles(direct.latency_ms)} | "
        f"{direct.errors} | |",
        "",
        f"Serve answered {100 * http.rate / direct.rate:.0f}% of the direct Redis reads' rate; "
        f"CPU while reading through serve: {_shares(http.cpu)}, load generator "
        f"{100 * http.loadgen_cpu:.0f}%; machine busy (steal) {100 * http.machine_busy:.0f}% "
        f"({100 * http.machine_steal:.0f}%); directly from Redis: {_shares(direct.cpu)}, load "
        f"generator {100 * direct.loadgen_cpu:.0f}%.",
        "",
        "How it was measured:",
        "",
        f"- Servers: {r.tansu_version} (memory storage), PostgreSQL {r.pg_version} (`fsync=on`, "
        f"`wal_level=logical`) and Redis {r.redis_version} (append-only file, `everysec`), all on "
        "127.0.0.1 and started by the benchmark in a temporary directory. Ingest, transform and "
        "serve run as their own processes (`python -m freshet.<service>`, default settings, "
        f"{common.partitions_phrase()}); serve materializes into Redis"
        + (
            " and into its PostgreSQL target database"
            + (
                " (on a PostgreSQL cluster of its own, `fsync=on`, `--target-cluster`)"
                if s.target_cluster
                else " (in the source's cluster, as `make run` has it)"
            )
            if s.serve_target
            else " only"
        )
        + f" and was healthy {r.serve_ready_s:.1f} s after it started. The source "
        "(`snapshot: initial`), the view, the product and the API key are written to their "
        "`freshet.control.*` topics, as control does. The machine is a shared 2-vCPU VM: "
        "compare figures within one run.",
        f"- Data: table `items` (bigint key, text, text, numeric(12,2), int, text, timestamptz), "
        f"{s.rows + 1:,} rows COPYed in {r.load_s:.1f} s before the source was registered; "
        f"ingest had its snapshot in Kafka after {r.ingest_s:.1f} s. View {VIEW} = "
        f"`{VIEW_SQL}` (a projection and a filter; every row passes it), "
        + (
            f"indexes on {', '.join(s.indexes)} (`--indexes`), "
            if s.indexes
            else "no `indexes` (the default: serve keeps no Redis index beside the keys), "
        )
        + "applied the snapshot "
        f"{r.view_s:.1f} s after it was registered; serve served product `{PRODUCT}` (every "
        f"field, role `{ROLE}` without row filter or mask) {r.served_s:.1f} s after that.",
        f"- Freshness: the workload is a separate process committing `UPDATE items SET price, "
        f"stock, updated_at WHERE id = ANY(<random ids>)` (autocommit, prepared) on a fixed "
        f"schedule over {s.writer_connections} connections, after {s.warmup_s:.0f} s of "
        f"warm-up, at niceness {WRITER_NICENESS} (it stands for the applications writing to "
        "the source, which do not share the pipeline's machine; its PostgreSQL backends run at "
        "normal priority). The probe is another process at normal priority: it UPDATEs the "
        "probe row (a key the workload never touches) to a new unique price, then GETs it "
        "through serve with `http.client` (one keep-alive connection) every "
        f"{1000 * s.poll_interval_s:.0f} ms until that price is served; the "
        "latency ends when the GET that showed it returned. The baseline is when transform "
        "handed each probe's view row to its producer (the record's Kafka timestamp), read from "
        "the view topic after the round, so that no reader but serve's own fetches the topic "
        "during the probes"
        + (
            f"; with `--live-baseline`, a consumer (confluent-kafka, assigned, "
            f"`fetch.wait.max.ms={CHANGE_FETCH_WAIT_MS}` as serve's own, started before the "
            "workload) also stamped each record as `poll()` returned it"
            if s.live_baseline
            else ""
        )
        + ". One host, one clock. "
        + "; ".join(_fresh_detail(fr, d) for fr, d in zip(r.fresh, r.drain_s, strict=True))
        + ". The point reads started after that.",
        f"- Point reads: the load generator is a separate process (uvloop, {s.concurrency} "
        "concurrent clients, each with its own connection, sending one request at a time and "
        "timing it from send to the last byte of the answer; it checks that each answer is 200 "
        "and carries the row asked for). Serve's path per read: API-key check, grant, the "
        "view's ready generation and the row from Redis in one script call, the role's view of "
        "it, JSON. The baseline client speaks RESP over the same kind of connection and calls "
        "the same script with the same keys (one round trip), decoding the row. Keys uniform "
        "over the whole table. The load generator "
        f"and serve share the 2 vCPUs; the VM's other load: {100 * http.other_cpu:.0f}% / "
        f"{100 * direct.other_cpu:.0f}% of one core during the two runs.",
        f"- Whole benchmark: {r.total_s:.0f} s; load average after it: {r.load_after}.",
    ]
    return "\n".join(lines) + "\n"
