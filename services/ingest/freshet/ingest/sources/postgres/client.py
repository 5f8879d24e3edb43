"""Connections to a PostgreSQL source and the catalog queries ingest needs.

Catalog work uses psycopg 3; the replication stream uses psycopg2's
``LogicalReplicationConnection`` (the fastest robust way measured on these machines). Every
connection sets :data:`~freshet.ingest.sources.postgres.values.SESSION_OPTIONS` so values have
one text form. Identifiers are composed with ``psycopg.sql``, never concatenated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import psycopg
import psycopg2
import psycopg2.extras
from psycopg import sql
from psycopg.conninfo import make_conninfo
from pydantic import SecretStr

from freshet.common.schemas import PostgresSourceSpec
from freshet.ingest.sources.postgres.values import SESSION_OPTIONS


class ColumnMeta(NamedTuple):
    """A column as the catalog describes it; ``type`` is ``format_type(oid, typmod)``."""

    name: str
    type_oid: int
    typmod: int
    type: str


@dataclass(frozen=True)
class TableMeta:
    """A captured table as the catalog describes it."""

    oid: int
    schema: str
    name: str
    columns: tuple[ColumnMeta, ...]  # in attnum order, without dropped or generated columns
    primary_key: tuple[str, ...]
    replica_identity: str
    estimated_rows: int


def conninfo(spec: PostgresSourceSpec, password: SecretStr, **extra: Any) -> str:
    return make_conninfo(
        host=spec.host,
        port=spec.port,
        dbname=spec.database,
        user=spec.user,
        password=password.get_secret_value(),
        sslmode=spec.sslmode,
        options=SESSION_OPTIONS,
        application_name=f"freshet-ingest-{spec.name}",
        connect_timeout=10,
        **extra,
    )


def catalog_connect(spec: PostgresSourceSpec, password: SecretStr) -> psycopg.Connection[Any]:
    return psycopg.connect(conninfo(spec, password), autocommit=True)


def replication_connect(spec: PostgresSourceSpec, password: SecretStr) -> Any:
    return psycopg2.connect(
        conninfo(spec, password), connection_factory=psycopg2.extras.LogicalReplicationConnection
    )


def ensure_publication(conn: psycopg.Connection[Any], spec: PostgresSourceSpec) -> None:
    """Create the source's publication, or make its table list match the spec."""
    pub = sql.Identifier(spec.publication_name)
    exists = conn.execute(
        "SELECT puballtables FROM pg_publication WHERE pubname = %s", (spec.publication_name,)
    ).fetchone()
    if spec.tables is None:
        if exists is None:
            conn.execute(sql.SQL("CREATE PUBLICATION {} FOR ALL TABLES").format(pub))
        elif not exists[0]:
            conn.execute(sql.SQL("DROP PUBLICATION {}").format(pub))
            conn.execute(sql.SQL("CREATE PUBLICATION {} FOR ALL TABLES").format(pub))
        return
    tables = sql.SQL(", ").join(sql.Identifier(*t.split(".", 1)) for t in spec.tables)
    if exists is None:
        conn.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(pub, tables))
    elif exists[0]:
        conn.execute(sql.SQL("DROP PUBLICATION {}").format(pub))
        conn.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(pub, tables))
    else:
        conn.execute(sql.SQL("ALTER PUBLICATION {} SET TABLE {}").format(pub, tables))


def missing_tables(conn: psycopg.Connection[Any], spec: PostgresSourceSpec) -> list[str]:
    """The spec's tables that do not exist in the database."""
    missing = []
    for qualified in spec.tables or ():
        schema, name = qualified.split(".", 1)
        row = conn.execute(
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
            (schema, name),
        ).fetchone()
        if row is None:
            missing.append(qualified)
    return missing


def published_tables(conn: psycopg.Connection[Any], publication: str) -> list[TableMeta]:
    rows = conn.execute(
        "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s "
        "ORDER BY schemaname, tablename",
        (publication,),
    ).fetchall()
    return [table_meta(conn, schema, name) for schema, name in rows]


def table_meta(conn: psycopg.Connection[Any], schema: str, name: str) -> TableMeta:
    oid, identity, estimate = conn.execute(
        "SELECT c.oid, c.relreplident, c.reltuples::bigint FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
        (schema, name),
    ).fetchone() or (None, None, None)
    if oid is None:
        raise LookupError(f"table {schema}.{name} does not exist")
    return table_meta_by_oid(conn, oid, schema, name, identity, estimate)


def table_meta_by_oid(
    conn: psycopg.Connection[Any],
    oid: int,
    schema: str | None = None,
    name: str | None = None,
    identity: str | None = None,
    estimate: int | None = None,
) -> TableMeta:
    if schema is None or name is None or identity is None:
        row = conn.execute(
            "SELECT n.nspname, c.relname, c.relreplident, c.reltuples::bigint FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s",
            (oid,),
        ).fetchone()
        if row is None:
            raise LookupError(f"relation {oid} does not exist")
        schema, name, identity, estimate = row
    columns = conn.execute(
        "SELECT attname, atttypid::int, atttypmod, format_type(atttypid, atttypmod) "
        "FROM pg_attribute WHERE attrelid = %s "
        "AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
        (oid,),
    ).fetchall()
    pk = conn.execute(
        "SELECT a.attname FROM pg_index i JOIN LATERAL unnest(i.indkey) WITH ORDINALITY "
        "AS k(attnum, ord) ON true JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = k.attnum WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.ord",
        (oid,),
    ).fetchall()
    return TableMeta(
        oid=oid,
        schema=schema,
        name=name,
        columns=tuple(ColumnMeta(c[0], c[1], c[2], c[3]) for c in columns),
        primary_key=tuple(p[0] for p in pk),
        replica_identity=identity,
        estimated_rows=max(int(estimate or 0), 0),
    )


def format_types(conn: psycopg.Connection[Any], types: list[tuple[int, int]]) -> list[str]:
    """``format_type(oid, typmod)`` of each ``(oid, typmod)``, in order."""
    if not types:
        return []
    rows = conn.execute(
        "SELECT format_type(t.oid, t.typmod) FROM unnest(%s::oid[], %s::int4[]) "
        "WITH ORDINALITY AS t(oid, typmod, n) ORDER BY t.n",
        ([oid for oid, _ in types], [typmod for _, typmod in types]),
    ).fetchall()
    return [r[0] for r in rows]


@dataclass(frozen=True)
class SlotInfo:
    plugin: str | None
    database: str | None
    wal_status: str | None
    retained_bytes: int | None
    confirmed_flush: str | None
    active: bool


def slot_info(conn: psycopg.Connection[Any], slot: str) -> SlotInfo | None:
    row = conn.execute(
        "SELECT plugin, database, wal_status, "
        "pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, "
        "confirmed_flush_lsn::text, active FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    ).fetchone()
    if row is None:
        return None
    return SlotInfo(row[0], row[1], row[2], row[3], row[4], bool(row[5]))


def drop_slot(conn: psycopg.Connection[Any], slot: str) -> None:
    """Drop a replication slot if it exists, ending a stale walsender that still holds it."""
    conn.execute(
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
        "WHERE slot_name = %s AND active_pid IS NOT NULL",
        (slot,),
    )
    for _ in range(50):
        row = conn.execute(
            "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)
        ).fetchone()
        if row is None:
            return
        if not row[0]:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            return
        conn.execute("SELECT pg_sleep(0.1)")
    raise RuntimeError(f"replication slot {slot} stays active; cannot drop it")


def drop_publication(conn: psycopg.Connection[Any], publication: str) -> None:
    conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(publication)))
