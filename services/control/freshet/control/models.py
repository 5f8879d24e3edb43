"""Request and response bodies of the control API.

Views are ``{"name", "sql"}``; control compiles the SQL and shows what the compiler derived
(``key``, ``columns``, ``tables``) with the view's status.

Pipelines are ``{"name", "nodes"}`` with the nodes of :mod:`freshet.common.pipelines.spec`. A
mask node's ``salt`` is accepted in clear, encrypted before it is stored, and shown as
``"********"``; a request may not carry ``salt_encrypted``.

Sources are a union discriminated by ``kind``; only ``"postgres"`` exists. To add a kind, add its
``...SourceCreate``/``...SourceReplace``/``...SourceOut`` models here, a member to each union
below, and its spec to :mod:`freshet.common.schemas`.

Secrets: a request's ``password`` is a :class:`~pydantic.SecretStr`; it is encrypted before it is
stored and no response ever carries it: responses show ``"password": "********"`` (always this
mask, whatever the password is), so a client sees that one is set and nothing more.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, StringConstraints

from freshet.common import topics
from freshet.common.events import lsn_to_str
from freshet.common.pipelines import MASK_SHOWN, PipelineSpec
from freshet.common.pipelines.spec import MAX_NODES, Node
from freshet.common.schemas import (
    QUALIFIED_TABLE,
    DataflowStatus,
    Name,
    OutputColumn,
    PostgresSourceSpec,
    SourceStatus,
    ViewSpec,
)
from freshet.control.exceptions import InvalidSpecError

PASSWORD_MASK: Final = "********"  # noqa: S105 - the mask shown instead of a password

PG_IDENTIFIER_PATTERN = r"^[a-z_][a-z0-9_]{0,62}$"
PgIdentifier = Annotated[str, StringConstraints(pattern=PG_IDENTIFIER_PATTERN)]
"""A PostgreSQL replication slot or publication name: lower case, digits, ``_``, at most 63."""

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
SnapshotMode = Literal["initial", "never"]


def _check_table(value: str) -> str:
    if not QUALIFIED_TABLE.match(value):
        raise ValueError(
            "a table must be given as 'schema.table': a schema and a table name separated by "
            "one dot, without spaces (e.g. 'public.orders')"
        )
    return value


QualifiedTable = Annotated[str, AfterValidator(_check_table)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class _PostgresFields(_Request):
    kind: Literal["postgres"]
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(default=5432, ge=1, le=65535)
    database: str = Field(min_length=1, max_length=63)
    user: str = Field(min_length=1, max_length=63)
    sslmode: SslMode = "prefer"
    tables: list[QualifiedTable] | None = Field(
        default=None,
        min_length=1,
        description="Tables to capture as 'schema.table'; omit to capture every table.",
    )
    snapshot: SnapshotMode = "initial"
    slot_name: PgIdentifier | None = Field(default=None, description="Default: freshet_<name>.")
    publication_name: PgIdentifier | None = Field(
        default=None, description="Default: freshet_<name>."
    )

    def to_spec(self, name: str, password_encrypted: str, generation: int) -> PostgresSourceSpec:
        """The desired-state spec of this request.

        Raises:
            InvalidSpecError: a default slot or publication name would be longer than PostgreSQL
                allows (the source name is too long for it).
        """
        return PostgresSourceSpec(
            name=name,
            kind="postgres",
            host=self.host,
            port=self.port,
            database=self.database,
            user=self.user,
            password_encrypted=password_encrypted,
            sslmode=self.sslmode,
            tables=None if self.tables is None else tuple(self.tables),
            snapshot=self.snapshot,
            slot_name=self.slot_name or _default_identifier(name, "slot_name"),
            publication_name=self.publication_name or _default_identifier(name, "publication_name"),
            generation=generation,
        )


def _default_identifier(name: str, field: str) -> str:
    value = f"freshet_{name}"
    if len(value) > 63:
        raise InvalidSpecError(
            ("body", field),
            f"the default {field} 'freshet_<name>' is longer than PostgreSQL's 63 characters: "
            f"give {field} explicitly",
        )
    return value


class PostgresSourceCreate(_PostgresFields):
    """Body of ``POST /v1/sources`` for a PostgreSQL source."""

    name: Name
    password: SecretStr = Field(min_length=1)


class PostgresSourceReplace(_PostgresFields):
    """Body of ``PUT /v1/sources/{name}`` for a PostgreSQL source: the whole new spec.

    ``name`` may be repeated but must then equal the path's. ``password`` may be omitted to keep
    the stored one, but only while ``host``, ``port`` and ``user`` stay the same: otherwise the
    stored password could be sent to another server.
    """

    name: Name | None = None
    password: SecretStr | None = Field(default=None, min_length=1)


SourceCreate = Annotated[PostgresSourceCreate, Field(discriminator="kind")]
SourceReplace = Annotated[PostgresSourceReplace, Field(discriminator="kind")]


class PendingStatus(BaseModel):
    """The status of a source that ingest has not reported on yet."""

    model_config = ConfigDict(extra="forbid")

    state: Literal["pending"] = "pending"


class PostgresSourceOut(BaseModel):
    """A PostgreSQL source as the API shows it: its spec without the secret, and its status."""

    name: str
    kind: Literal["postgres"] = "postgres"
    host: str
    port: int
    database: str
    user: str
    password: Literal["********"] = PASSWORD_MASK
    sslmode: SslMode
    tables: list[str] | None
    snapshot: SnapshotMode
    slot_name: str
    publication_name: str
    generation: int
    status: SourceStatus | PendingStatus

    @classmethod
    def from_spec(cls, spec: PostgresSourceSpec, status: SourceStatus | None) -> PostgresSourceOut:
        return cls(
            name=spec.name,
            host=spec.host,
            port=spec.port,
            database=spec.database,
            user=spec.user,
            sslmode=spec.sslmode,
            tables=None if spec.tables is None else list(spec.tables),
            snapshot=spec.snapshot,
            slot_name=spec.slot_name,
            publication_name=spec.publication_name,
            generation=spec.generation,
            status=status if status is not None else PendingStatus(),
        )


SourceOut = PostgresSourceOut


class SourceList(BaseModel):
    """Body of ``GET /v1/sources``: every source, sorted by name."""

    sources: list[SourceOut]


MAX_SQL_LENGTH = 100_000


MAX_INDEXES = 32

_INDEXES_DESCRIPTION = (
    "Output columns serve keeps a Redis index on, so that a product's rows can be sorted on "
    "them and an equality filter on one reads only the rows that match. Every field can be "
    "filtered on without one (rows are then examined in key order, a page at a time), and the "
    "first key column is always sortable. Each index costs serve and Redis work on every change "
    "of the field: index what clients sort or select on."
)


class ViewCreate(_Request):
    """Body of ``POST /v1/views``: a name, a ``SELECT`` over captured tables, indexes."""

    name: Name
    sql: str = Field(min_length=1, max_length=MAX_SQL_LENGTH)
    indexes: list[str] = Field(default=[], max_length=MAX_INDEXES, description=_INDEXES_DESCRIPTION)


class ViewReplace(_Request):
    """Body of ``PUT /v1/views/{name}``: the new SQL and indexes (``name`` may be repeated)."""

    name: Name | None = None
    sql: str = Field(min_length=1, max_length=MAX_SQL_LENGTH)
    indexes: list[str] = Field(default=[], max_length=MAX_INDEXES, description=_INDEXES_DESCRIPTION)


class DataflowStatusOut(DataflowStatus):
    """A view's or a pipeline's status as transform reports it, with ``applied`` also in X/Y."""

    applied_lsn: dict[str, str] = Field(
        default_factory=dict, description="``applied`` in PostgreSQL's X/Y notation."
    )

    @classmethod
    def from_status(cls, status: DataflowStatus) -> DataflowStatusOut:
        return cls(
            **status.model_dump(),
            applied_lsn={source: lsn_to_str(lsn) for source, lsn in status.applied.items()},
        )


class ViewOut(BaseModel):
    """A view as the API shows it: its SQL, what the compiler derived, and its status."""

    name: str
    sql: str
    key: list[str]
    columns: list[OutputColumn]
    tables: list[str] = Field(description="The source tables read, source.schema.table.")
    indexes: list[str] = Field(description=_INDEXES_DESCRIPTION)
    generation: int
    status: DataflowStatusOut | PendingStatus

    @classmethod
    def from_spec(cls, spec: ViewSpec, status: DataflowStatus | None) -> ViewOut:
        return cls(
            name=spec.name,
            sql=spec.sql,
            key=list(spec.key),
            columns=list(spec.columns),
            tables=list(spec.tables),
            indexes=list(spec.indexes),
            generation=spec.generation,
            status=PendingStatus() if status is None else DataflowStatusOut.from_status(status),
        )


class ViewList(BaseModel):
    """Body of ``GET /v1/views``: every view, sorted by name."""

    views: list[ViewOut]


class PipelineCreate(_Request):
    """Body of ``POST /v1/pipelines`` (and of ``POST /v1/pipelines/validate``)."""

    name: Name
    nodes: list[Node] = Field(min_length=1, max_length=MAX_NODES)


class PipelineReplace(_Request):
    """Body of ``PUT /v1/pipelines/{name}``: the new nodes (``name`` may be repeated, unchanged).

    A mask node that gives no ``salt`` keeps the stored salt of the node with the same id.
    """

    name: Name | None = None
    nodes: list[Node] = Field(min_length=1, max_length=MAX_NODES)


def _shown_node(node: Any) -> dict[str, Any]:
    shown: dict[str, Any] = node.model_dump(mode="json", exclude_none=True)
    if shown.pop("salt_encrypted", None) is not None:
        shown["salt"] = MASK_SHOWN
    return shown


class PipelineOut(BaseModel):
    """A pipeline as the API shows it: its nodes (salts masked), topics, and its status."""

    name: str
    nodes: list[dict[str, Any]]
    generation: int
    sources: list[str] = Field(description="The sources whose tables the pipeline reads.")
    sinks: list[str] = Field(description="The topics its sinks write.")
    dlq_topic: str = Field(description="Where events the pipeline cannot handle go.")
    status: DataflowStatusOut | PendingStatus

    @classmethod
    def from_spec(cls, spec: PipelineSpec, status: DataflowStatus | None) -> PipelineOut:
        return cls(
            name=spec.name,
            nodes=[_shown_node(n) for n in spec.nodes],
            generation=spec.generation,
            sources=list(spec.sources),
            sinks=list(dict.fromkeys(n.topic for n in spec.nodes if n.kind == "sink")),
            dlq_topic=topics.dlq_topic(spec.name),
            status=PendingStatus() if status is None else DataflowStatusOut.from_status(status),
        )


class PipelineList(BaseModel):
    """Body of ``GET /v1/pipelines``: every pipeline, sorted by name."""

    pipelines: list[PipelineOut]


class PipelineCheck(BaseModel):
    """Answer of ``POST /v1/pipelines/validate``: the fields of every node's output, by type."""

    valid: Literal[True] = True
    nodes: dict[str, dict[str, str]]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
