"""``python -m freshet.devstack run``: the whole platform in the foreground, with a live demo.

Start-up, in order: the state directory and its keys; Tansu, PostgreSQL and Redis; the demo
database ``shop`` (created and seeded once) and serve's target database; the four services, each
waited for on its ``/health``; the demo source and then the demo view registered through the
control API (the view once ingest has published the source's table schemas); the workload that
keeps changing ``shop``. Then the stack supervises its services (a service that dies is
reported and restarted) until SIGINT or SIGTERM, and stops everything in reverse order: the
workload, the services, Redis, PostgreSQL, the broker. A server (broker, PostgreSQL, Redis)
that dies is fatal: the stack stops and exits 1.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import psycopg
import redis
from psycopg import sql

from freshet.devstack import demo, servers
from freshet.devstack.config import DevstackSettings
from freshet.devstack.exceptions import DevstackError
from freshet.devstack.services import SERVICES, ServiceSpec, StackContext
from freshet.devstack.state import StateDir, process_start_time
from freshet.devstack.summary import render_summary
from freshet.devstack.supervisor import (
    Child,
    Supervisor,
    describe_exit,
    indent,
    log_tail,
    wait_healthy,
)
from freshet.devstack.workload import Workload, WorkloadThread

SERVE_DATABASE = "freshet_serve"
REGISTER_RETRY_S = 5.0
VIEW_WAIT_S = 60.0
"""How long start-up waits for the demo view's registration before it prints the summary."""
VIEW_RETRY_LIMIT_S = 300.0
"""After this long without the source's table schemas, the demo view is given up."""
LOOP_TICK_S = 0.5


def port_in_use(port: int) -> bool:
    """Whether something listens on 127.0.0.1:``port`` (a bind with SO_REUSEADDR fails)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def reset_derived_state(redis_url: str, pg: servers.PgInfo, serve_database: str) -> None:
    """Clear what was derived from the previous run's topics: Redis and serve's database.

    The embedded broker keeps its topics in memory, so every start begins with empty topics
    (ingest snapshots the demo database again). Transform's view state in Redis and serve's
    materialized views (Redis and ``serve_database``) record offsets of the old topics; kept,
    they would resume at those offsets in the new topics and skip records. The source database
    and the state directory's keys are kept.
    """
    client = redis.Redis.from_url(redis_url)
    try:
        client.flushdb()
    finally:
        client.close()
    with psycopg.connect(pg.conninfo(), autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(serve_database)
            )
        )
    demo.ensure_database(pg, serve_database)


class Stack:
    """One run of the developer stack. Not reusable: build a new one for every run."""

    def __init__(
        self, settings: DevstackSettings, say: Callable[[str], None] | None = None
    ) -> None:
        self.settings = settings
        self.state = StateDir(settings.state_dir)
        self._say = say or (lambda text: print(text, flush=True))
        self._stop = threading.Event()
        self._servers: dict[str, servers.Managed] = {}
        self._supervisor: Supervisor | None = None
        self._workload: WorkloadThread | None = None
        self._pg: servers.PgInfo | None = None
        self._ctx: StackContext | None = None
        self._admin_token_from_env = bool(settings.admin_token.get_secret_value())
        self._health: dict[str, str] = {}
        self._registration = "not tried"
        self._register_at: float | None = None
        self._view_registration = "not tried"
        self._product_registration = "not tried"
        self._view_register_at: float | None = None
        self._view_give_up_at: float | None = None
        self._pids: dict[str, int | None] = {}
        self._started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self._signal: str | None = None

    # --- entry point --------------------------------------------------------------------------

    def run(self) -> int:
        """Start, supervise until a signal, stop. Returns the process exit code."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        code = 0
        claimed = False
        try:
            running = self.state.running_pid()
            if running is not None and running != os.getpid():
                raise DevstackError(
                    f"the devstack already runs (pid {running}): `make status` shows it, "
                    "`make down` stops it"
                )
            self.state.create()
            self.state.claim_pid(os.getpid())
            claimed = True
            self._start()
            if not self._stop.is_set():
                code = self._supervise()
        except (DevstackError, servers.ServerError, psycopg.Error, OSError) as exc:
            self._say(f"error: {exc}")
            code = 1
        finally:
            self._shutdown()
            if claimed:
                self.state.clear_stack(os.getpid())
                self.state.release_pid(os.getpid())
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return code

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only flag it: printing here could re-enter a print the main thread is in.
        if self._signal is None:
            self._signal = signal.Signals(signum).name
        self._stop.set()

    # --- start-up -----------------------------------------------------------------------------

    def _ports(self) -> list[tuple[str, int, str]]:
        """Each component's name, port and the variable that moves it."""
        s = self.settings
        ports = [
            ("kafka", s.kafka_port, "FRESHET_KAFKA_PORT"),
            ("postgresql", s.pg_port, "FRESHET_PG_PORT"),
            ("redis", s.redis_port, "FRESHET_REDIS_PORT"),
        ]
        ports += [(spec.name, spec.port(s), spec.port_env) for spec in SERVICES]
        return ports

    def _check_ports(self) -> None:
        taken = [(name, port, var) for name, port, var in self._ports() if port_in_use(port)]
        if taken:
            raise DevstackError(
                "ports in use on 127.0.0.1: "
                + ", ".join(f"{port} ({name}, moved with {var})" for name, port, var in taken)
                + ". Stop what uses them (`make down` if it is an earlier stack) or set the "
                "variables to free ports"
            )

    def _start(self) -> None:
        s, state = self.settings, self.state
        self._check_ports()
        admin_token = state.admin_token(s.admin_token)
        secret_key = state.secret_key(s.secret_key)
        pg_password = state.pg_password()

        steps: list[tuple[str, Callable[[], None]]] = [
            (f"kafka (tansu) on {s.kafka_port}", self._start_kafka),
            (f"postgresql on {s.pg_port}", lambda: self._start_postgres(pg_password)),
            (f"redis on {s.redis_port}", self._start_redis),
        ]
        for label, step in steps:
            if self._stop.is_set():
                return
            self._say(f"starting {label} ...")
            step()
        assert self._pg is not None
        if demo.ensure_demo_database(self._pg):
            self._say(f"created the demo database {demo.DEMO_DATABASE} and seeded it")
        self._reset_derived_state()

        self._ctx = StackContext(
            kafka_bootstrap=s.kafka_bootstrap,
            secret_key=secret_key,
            admin_token=admin_token,
            redis_url=f"redis://127.0.0.1:{s.redis_port}/0",
            target_database_url=(
                f"postgresql+psycopg://postgres:{urllib.parse.quote(pg_password, safe='')}"
                f"@127.0.0.1:{s.pg_port}/{SERVE_DATABASE}"
            ),
            state_dir=state.root,
            topic_partitions=s.topic_partitions,
        )
        if self._stop.is_set():
            return
        children = [self._child(spec, self._ctx) for spec in SERVICES]
        self._supervisor = Supervisor(
            children, s.restart_backoff_s, s.restart_backoff_max_s, report=self._say
        )
        self._say("starting " + ", ".join(f"{c.name} on {c.port}" for c in children) + " ...")
        self._supervisor.start_all()
        for child in children:
            result = wait_healthy(child, s.health_timeout_s, self._stop)
            if self._stop.is_set():
                return
            self._health[child.name] = "healthy" if result.ok else result.detail
            if not result.ok:
                tail = log_tail(child.log_path)
                self._say(
                    f"{child.name} did not come up: {result.detail}. End of "
                    f"{state.display(child.log_path)}:\n{indent(tail) if tail else '    (empty)'}"
                )
        self._register_source()
        self._wait_view_registered(VIEW_WAIT_S)
        if s.workload_rate > 0:
            self._workload = WorkloadThread(
                Workload(self._pg.conninfo(demo.DEMO_DATABASE), rate=s.workload_rate)
            )
            self._workload.start()
        self._write_status(ready=True)
        self._say(
            render_summary(
                self.state.read_stack() or {},
                self._health,
                footer="Ctrl-C stops everything (`make down` from another shell).",
            )
        )

    def _reset_derived_state(self) -> None:
        assert self._pg is not None
        reset_derived_state(
            f"redis://127.0.0.1:{self.settings.redis_port}/0", self._pg, SERVE_DATABASE
        )

    def _start_kafka(self) -> None:
        self._servers["kafka"] = servers.start_kafka(
            self.settings.kafka_port, self.state.log("kafka")
        )

    def _start_postgres(self, password: str) -> None:
        servers.init_postgres(self.state.pg_data, password)
        self._servers["postgresql"] = servers.start_postgres(
            self.state.pg_data, self.settings.pg_port, self.state.log("postgresql"), durable=True
        )
        self._pg = servers.PgInfo("127.0.0.1", self.settings.pg_port, "postgres", password)

    def _start_redis(self) -> None:
        self._servers["redis"] = servers.start_redis(
            self.settings.redis_port, self.state.redis_data, self.state.log("redis")
        )

    def _child(self, spec: ServiceSpec, ctx: StackContext) -> Child:
        env = {**os.environ, **spec.env(self.settings, ctx)}
        return Child(
            spec.name,
            spec.argv(),
            env,
            self.state.log(spec.name),
            port=spec.port(self.settings),
            health_url=spec.health_url(self.settings),
        )

    def _register_source(self) -> None:
        assert self._pg is not None and self._ctx is not None
        result = demo.register_source(
            self._control_url(), self._ctx.admin_token, demo.source_spec(self._pg)
        )
        first = self._registration == "not tried"
        if result.done:
            self._registration = f"source {demo.DEMO_SOURCE}: {result.detail}"
            self._register_at = None
            self._view_register_at = time.monotonic()
            self._say(self._registration)
        elif result.retry:
            self._registration = f"source {demo.DEMO_SOURCE} not registered yet: {result.detail}"
            self._register_at = time.monotonic() + REGISTER_RETRY_S
            if first:
                self._say(f"{self._registration}; retrying every {REGISTER_RETRY_S:.0f}s")
        else:
            self._registration = f"source {demo.DEMO_SOURCE} was refused: {result.detail}"
            self._register_at = None
            self._say(self._registration)

    def _control_url(self) -> str:
        control = next(spec for spec in SERVICES if spec.name == "control")
        return f"http://127.0.0.1:{control.port(self.settings)}"

    def _register_view(self) -> None:
        """One attempt at registering the demo view; schedules the next one if it may help.

        Control refuses the view's SQL (422, unknown table) until ingest has published the
        schemas of the source's tables, a few seconds after the source was registered: that is
        retried until :data:`VIEW_RETRY_LIMIT_S` has passed.
        """
        assert self._ctx is not None
        now = time.monotonic()
        if self._view_give_up_at is None:
            self._view_give_up_at = now + VIEW_RETRY_LIMIT_S
        result = demo.register_view(self._control_url(), self._ctx.admin_token)
        name = demo.DEMO_VIEW
        if result.done:
            self._view_registration = f"view {name}: {result.detail}"
            self._view_register_at = None
            self._say(self._view_registration)
            self._register_product()
        elif result.retry and now < self._view_give_up_at:
            self._view_registration = f"view {name} not registered yet: {result.detail}"
            self._view_register_at = now + 1.0
        else:
            why = "gave up after retrying" if result.retry else "was refused"
            self._view_registration = f"view {name} {why}: {result.detail}"
            self._view_register_at = None
            self._say(self._view_registration)

    def _register_product(self) -> None:
        """Register the demo product and make an API key that reads it (once the view is)."""
        assert self._ctx is not None
        product = demo.register_product(self._control_url(), self._ctx.admin_token)
        self._product_registration = f"product {demo.DEMO_PRODUCT}: {product.detail}"
        self._say(self._product_registration)
        if product.done:
            key = demo.create_key(
                self._control_url(), self._ctx.admin_token, self.state.root / "demo-api-key"
            )
            self._say(f"demo API key: {key.detail}")

    def _wait_view_registered(self, seconds: float) -> None:
        """Retry the demo view's registration for up to ``seconds``.

        So the summary printed next can say the view is registered; later attempts, if needed,
        run in :meth:`_supervise`.
        """
        until = time.monotonic() + seconds
        while self._view_register_at is not None and not self._stop.is_set():
            if time.monotonic() >= self._view_register_at:
                self._register_view()
            if time.monotonic() >= until:
                if self._view_register_at is not None:
                    self._say(f"{self._view_registration}; still retrying")
                return
            self._stop.wait(0.2)

    # --- running ------------------------------------------------------------------------------

    def _supervise(self) -> int:
        assert self._supervisor is not None
        while not self._stop.wait(LOOP_TICK_S):
            for name, managed in self._servers.items():
                if not managed.alive():
                    tail = log_tail(managed.log_path)
                    self._say(
                        f"{name} {describe_exit(managed.proc.returncode)}; the stack cannot go "
                        f"on without it. End of {self.state.display(managed.log_path)}:\n"
                        f"{indent(tail) if tail else '    (empty)'}"
                    )
                    return 1
            self._supervisor.check()
            if self._register_at is not None and time.monotonic() >= self._register_at:
                self._register_source()
            if self._view_register_at is not None and time.monotonic() >= self._view_register_at:
                self._register_view()
                if self._view_register_at is None:
                    self._write_status(ready=True)
            pids = {c.name: c.pid for c in self._supervisor.children}
            if pids != self._pids:
                self._write_status(ready=True)
        return 0

    def _write_status(self, ready: bool) -> None:
        components: list[dict[str, Any]] = [
            {
                "name": name,
                "port": managed.port,
                "pid": managed.proc.pid,
                "log": self.state.display(managed.log_path),
                "started": process_start_time(managed.proc.pid),
                "stop_signal": int(managed.stop_signal),
            }
            for name, managed in self._servers.items()
        ]
        children = self._supervisor.children if self._supervisor else []
        for child in children:
            components.append(
                {
                    "name": child.name,
                    "port": child.port,
                    "pid": child.pid,
                    "log": self.state.display(child.log_path),
                    "health_url": child.health_url,
                    "started": process_start_time(child.pid) if child.pid else None,
                    "stop_signal": int(signal.SIGTERM),
                }
            )
        self._pids = {c.name: c.pid for c in children}
        self.state.write_stack(
            {
                "pid": os.getpid(),
                "ready": ready,
                "started_at": self._started_at,
                "state_dir": self.state.display(self.state.root),
                "components": components,
                "workload": {"rate": self.settings.workload_rate if self._workload else 0},
                "registration": self._registration,
                "view_registration": self._view_registration,
                "product_registration": self._product_registration,
                "demo_key_file": self.state.display(self.state.root / "demo-api-key"),
                "admin_token": "$FRESHET_ADMIN_TOKEN"
                if self._admin_token_from_env
                else self.state.display(self.state.root / "admin-token"),
                "kafka_bootstrap": self.settings.kafka_bootstrap,
            }
        )

    # --- shutdown -----------------------------------------------------------------------------

    def _shutdown(self) -> None:
        if self._signal is not None:
            self._say(f"\n{self._signal}: stopping the stack ...")
        if self._workload is not None:
            self._workload.stop()
            stats = self._workload.workload.stats
            self._say(
                f"workload stopped: {stats.transactions} transactions, {stats.inserts} inserts, "
                f"{stats.updates} updates, {stats.deletes} deletes"
            )
        if self._supervisor is not None:
            codes = self._supervisor.stop_all()
            stopped = ", ".join(
                f"{name} {describe_exit(code) if code is not None else 'never started'}"
                for name, code in codes.items()
            )
            self._say(f"services stopped: {stopped}")
        for name in ("redis", "postgresql", "kafka"):
            managed = self._servers.pop(name, None)
            if managed is not None:
                with contextlib.suppress(OSError):
                    managed.stop(timeout=30)
                self._say(f"{name} stopped")
