"""Payload schemas of Freshet's own topics (desired state and status).

Change events follow Debezium's envelope and are built in :mod:`freshet.common.events`.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
"""A Freshet object name: lower-case letter, then letters, digits or ``_`` (at most 63)."""

QUALIFIED_TABLE = re.compile(r"^[^.\s]+\.[^.\s]+$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PostgresSourceSpec(_Frozen):
    """Desired state of a PostgreSQL source on ``freshet.control.sources``.

    ``password_encrypted`` is a Fernet token (see :mod:`freshet.common.secrets`), never plain.
    ``tables`` lists ``schema.table`` names; ``None`` captures every table of the database.
    ``generation`` changes whenever the spec does, so ingest knows when to restart.
    """

    name: Name
    kind: Literal["postgres"] = "postgres"
    host: str
    port: int = Field(ge=1, le=65535)
    database: str
    user: str
    password_encrypted: str = ""
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    tables: tuple[str, ...] | None = None
    snapshot: Literal["initial", "never"] = "initial"
    slot_name: str
    publication_name: str
    generation: int = 1

    def capture_fields(self) -> dict[str, Any]:
        """The fields whose change needs a new snapshot (a new slot and publication)."""
        return {
            "host": self.host,
            "port": self.port,
            "database": self.database,
            "tables": self.tables,
            "slot_name": self.slot_name,
            "publication_name": self.publication_name,
        }


SourceSpec = PostgresSourceSpec


SourceState = Literal["pending", "snapshotting", "streaming", "error", "stopped"]


class SnapshotProgress(BaseModel):
    tables_total: int = 0
    tables_done: int = 0
    current_table: str | None = None
    rows_done: int = 0
    rows_estimate: int = 0


class SourceStatus(BaseModel):
    """Status of one source as ingest reports it on ``freshet.status`` (key ``source/<name>``)."""

    kind: Literal["source"] = "source"
    name: str
    state: SourceState
    reason: str | None = None
    generation: int = 0
    lsn: str | None = Field(default=None, description="Last LSN confirmed to the slot, X/Y form.")
    events: int = 0
    bytes: int = 0
    retained_wal_bytes: int | None = None
    slot_wal_status: str | None = None
    snapshot: SnapshotProgress | None = None
    instance: str = ""
    updated_at_ms: int = Field(default_factory=lambda: int(time.time() * 1000))


class ColumnSchema(_Frozen):
    """One column of a captured table: its name, PostgreSQL type (oid, typmod, ``format_type``)."""

    name: str
    type_oid: int
    typmod: int = -1
    type: str = Field(description="format_type(oid, typmod), e.g. 'numeric(10,2)', 'text[]'.")


class TableSchema(_Frozen):
    """A captured table as ingest publishes it on ``freshet.schemas`` (key ``source.schema.table``).

    Published when a snapshot or a stream starts, and again when a Relation message shows a
    changed column list.
    """

    source: str
    schema_name: str = Field(alias="schema")
    table: str
    topic: str
    columns: tuple[ColumnSchema, ...]
    primary_key: tuple[str, ...]

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @property
    def qualified(self) -> str:
        return f"{self.source}.{self.schema_name}.{self.table}"


class SourcePosition(_Frozen):
    """Ingest's confirmed position of one source on ``freshet.positions`` (key = source name).

    Every change committed at or before ``lsn`` (an integer LSN) has been acknowledged by Kafka,
    at an offset below ``offsets[topic][partition]`` (the next offset after the last one ingest
    wrote there). Partitions absent from ``offsets`` hold nothing ingest wrote since it started;
    readers keep the maximum they have seen per partition.
    """

    source: str
    lsn: int
    ts_ms: int
    offsets: dict[str, dict[int, int]] = Field(default_factory=dict)


class OutputColumn(_Frozen):
    """A column of a view's rows: its name and PostgreSQL type name (``int8``, ``numeric``...)."""

    name: str
    type: str


class KeyColumn(OutputColumn):
    """A key field of a view's rows: its name, type and whether it may be NULL.

    ``nullable`` is False only where the compiler knows the value is never NULL: a primary-key
    column of a table that no ``LEFT JOIN`` null-extends.
    """

    nullable: bool = True


class ViewSpec(_Frozen):
    """Desired state of an incremental materialized view on ``freshet.control.views``.

    Control compiles ``sql`` before writing the record and stores what the compiler derived
    (``key``, ``columns``, ``tables``) so that serve can build tables without a compiler.
    Transform compiles ``sql`` again against ``freshet.schemas``.
    """

    name: Name
    sql: str
    key: tuple[str, ...]
    columns: tuple[OutputColumn, ...]
    tables: tuple[str, ...] = Field(description="The source tables read, source.schema.table.")
    generation: int = 1
    key_columns: tuple[KeyColumn, ...] = Field(
        default=(),
        description="The key fields with their types, in the order of ``key`` (a key field that "
        "is not an output column is named ``_key<n>``). Empty in specs written before it existed.",
    )
    indexes: tuple[str, ...] = Field(
        default=(),
        description="Output columns serve keeps a Redis index on: rows can be sorted on them and "
        "an equality filter on one reads only the matching rows. Any field can be filtered on "
        "without one (rows are examined in key order); the first key column needs none.",
    )


DataflowState = Literal["pending", "loading", "running", "stalled", "error", "stopped"]


class NodeCounts(BaseModel):
    events_in: int = 0
    events_out: int = 0


class DataflowStatus(BaseModel):
    """Status of a view or a pipeline as transform reports it on ``freshet.status``.

    Key ``view/<name>`` or ``pipeline/<name>``. ``applied`` maps a source name to the LSN (an
    integer) up to which every change of that source has been applied and its output acknowledged
    by Kafka; read-your-writes waits on it. ``freshness_ms`` is the time between now and the source
    commit of the last applied change (0 when caught up with nothing pending).
    """

    kind: Literal["view", "pipeline"]
    name: str
    state: DataflowState
    reason: str | None = None
    generation: int = 0
    applied: dict[str, int] = Field(default_factory=dict)
    last_commit_ts_ms: int | None = None
    freshness_ms: int | None = None
    lag: int = Field(default=0, description="Input messages not yet applied.")
    outputs: dict[int, int] = Field(
        default_factory=dict,
        description="A view's topic: per partition, the offset after the last record this "
        "worker wrote there (since it started). Every row reflecting ``applied`` lies below; "
        "readers keep the maximum per partition, as for freshet.positions.",
    )
    nodes: dict[str, NodeCounts] = Field(default_factory=dict)
    events_in: int = 0
    events_out: int = 0
    instance: str = ""
    updated_at_ms: int = Field(default_factory=lambda: int(time.time() * 1000))
