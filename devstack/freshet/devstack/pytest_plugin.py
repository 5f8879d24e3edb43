"""Pytest fixtures that start the real servers once per test session.

Servers start lazily, on the first test that needs them: the broker (Tansu), PostgreSQL 15 with
logical replication, Redis. Each test gets its own database and unique names, so tests share the
servers without sharing state.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from freshet.devstack import servers


@dataclass(frozen=True)
class KafkaServer:
    bootstrap: str
    managed: servers.Managed


@dataclass(frozen=True)
class PgDatabase:
    """A fresh database on the session's PostgreSQL server."""

    server: servers.PgInfo
    dbname: str

    def conninfo(self, **extra: str) -> str:
        return self.server.conninfo(self.dbname, **extra)

    def connect(self, autocommit: bool = True) -> psycopg.Connection:
        return psycopg.connect(self.conninfo(), autocommit=autocommit)


def _workdir(prefix: str) -> Path:
    # Under /tmp itself (not pytest's 0700 tree) so the postgres account can reach it.
    return Path(tempfile.mkdtemp(prefix=prefix))


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaServer]:
    """The Kafka-protocol broker of the session (Tansu, memory storage)."""
    work = _workdir("freshet-kafka-")
    port = servers.free_port()
    managed = servers.start_kafka(port, work / "tansu.log")
    yield KafkaServer(f"127.0.0.1:{port}", managed)
    managed.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[servers.PgInfo]:
    """PostgreSQL 15 of the session: wal_level=logical, superuser ``postgres``."""
    work = _workdir("freshet-pg-")
    work.chmod(0o755)
    password = uuid.uuid4().hex
    servers.init_postgres(work / "data", password)
    port = servers.free_port()
    managed = servers.start_postgres(work / "data", port, work / "postgres.log", durable=False)
    yield servers.PgInfo("127.0.0.1", port, "postgres", password)
    managed.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """The session's Redis server, as a ``redis://`` URL."""
    work = _workdir("freshet-redis-")
    port = servers.free_port()
    managed = servers.start_redis(port, work / "data", work / "redis.log")
    yield f"redis://127.0.0.1:{port}/0"
    managed.stop()


@pytest.fixture
def unique() -> str:
    """A short unique lower-case name for this test's sources, topics and groups."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def pg_database(postgres_server: servers.PgInfo, unique: str) -> Iterator[PgDatabase]:
    """A database of its own for this test; dropped afterwards with its replication slots."""
    admin = psycopg.connect(postgres_server.conninfo(), autocommit=True)
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(unique)))
    try:
        yield PgDatabase(postgres_server, unique)
    finally:
        admin.execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
            "WHERE database = %s AND active_pid IS NOT NULL",
            (unique,),
        )
        for _ in range(50):
            rows = admin.execute(
                "SELECT slot_name, active FROM pg_replication_slots WHERE database = %s", (unique,)
            ).fetchall()
            if not rows:
                break
            for slot, active in rows:
                if not active:
                    admin.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(unique)))
        admin.close()
