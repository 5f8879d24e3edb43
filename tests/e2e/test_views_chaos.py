"""Views stay exact while transform workers are killed: the chaos tests.

Transform runs as real worker processes (``python -m freshet.transform``). While a random
workload runs on PostgreSQL, workers are killed with SIGKILL at random moments; in the end every
view, folded from its topic, equals the same SQL run by PostgreSQL.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from freshet.devstack import servers
from freshet.devstack.harness import wait_applied
from freshet.devstack.supervisor import Child, log_tail, wait_healthy

from .test_views_oracle import assert_views_equal_oracle, current_lsn
from .views_workload import SCHEMA, TABLES, VIEWS, Workload

pytestmark = pytest.mark.slow


class Workers:
    """Transform worker processes of one consumer group."""

    def __init__(self, kafka: Any, redis_url: str, group: str, tmp: Path) -> None:
        self.kafka = kafka
        self.redis_url = redis_url
        self.group = group
        self.tmp = tmp
        self.children: dict[str, Child] = {}
        self.starts = 0

    def start(self, name: str) -> Child:
        self.starts += 1
        port = servers.free_port()
        env = {
            **os.environ,
            "FRESHET_KAFKA_BOOTSTRAP": self.kafka.bootstrap,
            "FRESHET_REDIS_URL": self.redis_url,
            "FRESHET_TRANSFORM_GROUP": self.group,
            "FRESHET_TRANSFORM_PORT": str(port),
            "FRESHET_TRANSFORM_DATA_DIR": str(self.tmp / name),
            "FRESHET_TRANSFORM_RETRY_INITIAL_S": "0.5",
            "FRESHET_TRANSFORM_RETRY_MAX_S": "2",
            "FRESHET_INSTANCE_ID": f"{name}-{self.starts}",
        }
        child = Child(
            name,
            [sys.executable, "-m", "freshet.transform"],
            env,
            self.tmp / f"{name}-{self.starts}.log",
            port=port,
            health_url=f"http://127.0.0.1:{port}/health",
        )
        child.start()
        result = wait_healthy(child, timeout=60)
        assert result.ok, f"{result.detail}\n{log_tail(child.log_path, 60)}"
        self.children[name] = child
        return child

    def kill(self, name: str) -> None:
        child = self.children.pop(name)
        assert child.proc is not None
        os.kill(child.proc.pid, signal.SIGKILL)
        child.proc.wait(10)

    def stop_all(self) -> None:
        for child in self.children.values():
            child.stop()
        self.children.clear()


class Background:
    """The workload in a thread, until stopped."""

    def __init__(self, conn: Any, seed: int) -> None:
        self.work = Workload(seed)
        self.conn = conn
        self.stop = threading.Event()
        self.steps = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                self.work.step(self.conn)
                self.steps += 1
                time.sleep(0.005)
        except BaseException as exc:  # surfaced by finish()
            self.error = exc

    def __enter__(self) -> Background:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)

    def finish(self) -> int:
        self.stop.set()
        self.thread.join(30)
        if self.error is not None:
            raise self.error
        return self.steps


def _setup(
    pg_database: Any, control: Any, unique: str, seed: int
) -> tuple[Any, Any, dict[str, str]]:
    conn = pg_database.connect()
    conn.execute(SCHEMA)
    Workload(seed).seed_rows(conn)
    control.add_source(pg_database, unique, TABLES)
    catalog = control.catalog({f"{unique}.{t}" for t in TABLES})
    names = {view: f"{unique}_{view}" for view in VIEWS}
    for view, sql in VIEWS.items():
        control.add_view(names[view], sql, catalog)
    return conn, catalog, names


def test_views_equal_postgresql_after_workers_are_killed_repeatedly(
    kafka: Any,
    pg_database: Any,
    redis_server: str,
    control: Any,
    ingest: Any,
    unique: str,
    tmp_path: Path,
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    conn, catalog, names = _setup(pg_database, control, unique, seed)
    workers = Workers(kafka, redis_server, f"{unique}-transform", tmp_path)
    try:
        workers.start("a")
        with Background(pg_database.connect(), seed + 1) as load:
            for _ in range(4):
                time.sleep(rng.uniform(1.0, 4.0))
                workers.kill("a")
                workers.start("a")
            steps = load.finish()
        assert steps > 100, f"the workload made only {steps} steps"
        wait_applied(kafka.bootstrap, list(names.values()), unique, current_lsn(conn), timeout=180)
        assert_views_equal_oracle(kafka, conn, names, catalog)
    except AssertionError as exc:
        raise AssertionError(f"seed {seed}: {exc}") from None
    finally:
        workers.stop_all()


def test_two_workers_share_the_views_and_one_dies(
    kafka: Any,
    pg_database: Any,
    redis_server: str,
    control: Any,
    ingest: Any,
    unique: str,
    tmp_path: Path,
) -> None:
    seed = random.randrange(1 << 30)
    conn, catalog, names = _setup(pg_database, control, unique, seed)
    workers = Workers(kafka, redis_server, f"{unique}-transform", tmp_path)
    try:
        workers.start("a")
        workers.start("b")
        with Background(pg_database.connect(), seed + 1) as load:
            time.sleep(4)
            workers.kill("a")
            time.sleep(4)
            steps = load.finish()
        assert steps > 100, f"the workload made only {steps} steps"
        statuses = wait_applied(
            kafka.bootstrap, list(names.values()), unique, current_lsn(conn), timeout=180
        )
        assert {s.instance for s in statuses.values()} == {"b-2"}, "the survivor runs every view"
        assert_views_equal_oracle(kafka, conn, names, catalog)
    except AssertionError as exc:
        raise AssertionError(f"seed {seed}: {exc}") from None
    finally:
        workers.stop_all()
