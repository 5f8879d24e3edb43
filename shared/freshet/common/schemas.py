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
