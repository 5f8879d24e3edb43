"""The desired state of a pipeline: a declarative DAG of nodes on ``freshet.control.pipelines``.

A pipeline is ``{"name", "nodes": [...]}``. Every node has a stable ``id`` (metrics, status and
errors name it) and a ``kind``; every node but a source takes ``inputs``: the ids of the nodes
whose output it reads, or ``"<route id>.<output>"`` for one output of a route node. Expressions
are the SQL expression language of :mod:`freshet.common.sql.expr` over the fields of the row.

Change events flow through the DAG as whole Debezium envelopes: each node transforms the
``before`` and ``after`` images of an event (or decides where the event goes), and a sink writes
the event with its original key. Kinds:

``source``
    ``source``: a registered source; ``tables``: ``schema.table`` (or ``table`` when
    unambiguous) of that source. Emits the change events of those tables.
``sink``
    ``topic``: the Kafka topic the events are written to (key kept; a delete is followed by a
    tombstone, as Debezium does).
``filter``
    ``where``: a boolean expression; only rows for which it is true pass (see
    :mod:`freshet.common.pipelines.compiler` for how updates that enter or leave are handled).
``project`` / ``drop``
    ``fields``: the fields kept (in that order) / removed.
``rename``
    ``fields``: ``{old name: new name}``.
``compute``
    ``fields``: ``{name: expression}``, added or replaced; every expression sees the input row.
``cast``
    ``fields``: ``{name: SQL type}``, e.g. ``{"amount": "float8", "code": "integer"}``.
``mask``
    ``fields``: ``{name: {"method": "hash" | "redact" | "keep_last" | "null", ...}}``. ``hash``
    is the hexadecimal HMAC-SHA256 of the value's text under the node's ``salt``; ``redact``
    replaces it by ``replacement``; ``keep_last`` keeps the last ``keep`` characters and replaces
    the others by ``mask_char``; ``null`` sets it to NULL. The salt is given in clear to the API
    only: control encrypts it (``salt_encrypted``, see :mod:`freshet.common.secrets`) and no API
    answer or record shows it.
``union``
    Merges its inputs (two or more); the fields it exposes are those every input has with the
    same type.
``lookup``
    Enriches each row with fields of the current row of another captured table: ``table``,
    ``on``: ``{primary-key column of that table: expression over the input row}`` (every key
    column), ``fields``: the columns taken, as a list (named ``prefix`` + column) or as
    ``{column: output name}``. A row with no match gets NULLs.
``route``
    ``routes``: ``[{"name", "where"}]``; a row goes to the first route whose condition is true,
    else to ``default`` (if set). Other nodes take ``"<id>.<name>"`` as input.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints

from freshet.common.schemas import Name

ID_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
NodeId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
"""A node id (or a route's output name): lower-case letter, then letters, digits or ``_``."""

PortRef = Annotated[
    str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}(\.[a-z][a-z0-9_]{0,62})?$")
]
"""An input edge: ``<node id>``, or ``<route node id>.<route name>``."""

MAX_EXPRESSION = 10_000
Expression = Annotated[str, StringConstraints(min_length=1, max_length=MAX_EXPRESSION)]
FieldName = Annotated[str, StringConstraints(min_length=1, max_length=63)]


class _Node(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: NodeId
    description: str | None = Field(default=None, max_length=1000)

    @property
    def edges(self) -> tuple[str, ...]:
        """The node's inputs (none for a source)."""
        inputs: tuple[str, ...] = getattr(self, "inputs", ())
        return inputs


class _Transform(_Node):
    inputs: tuple[PortRef, ...] = ()


class SourceNode(_Node):
    kind: Literal["source"] = "source"
    source: Name
    tables: tuple[str, ...] = Field(min_length=1)


class SinkNode(_Transform):
    kind: Literal["sink"] = "sink"
    topic: str


class FilterNode(_Transform):
    kind: Literal["filter"] = "filter"
    where: Expression


class ProjectNode(_Transform):
    kind: Literal["project"] = "project"
    fields: tuple[FieldName, ...] = Field(min_length=1)


class DropNode(_Transform):
    kind: Literal["drop"] = "drop"
    fields: tuple[FieldName, ...] = Field(min_length=1)


class RenameNode(_Transform):
    kind: Literal["rename"] = "rename"
    fields: dict[FieldName, FieldName] = Field(min_length=1)


class ComputeNode(_Transform):
    kind: Literal["compute"] = "compute"
    fields: dict[FieldName, Expression] = Field(min_length=1)


class CastNode(_Transform):
    kind: Literal["cast"] = "cast"
    fields: dict[FieldName, Annotated[str, StringConstraints(min_length=1, max_length=100)]] = (
        Field(min_length=1)
    )


class MaskRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["hash", "redact", "keep_last", "null"]
    keep: int = Field(default=4, ge=0, le=1000, description="keep_last: characters kept.")
    mask_char: str = Field(default="*", min_length=1, max_length=1)
    replacement: str = Field(default="***", max_length=100, description="redact: the text.")


MASK_SHOWN = "********"
"""What an API shows instead of a salt."""


class MaskNode(_Transform):
    kind: Literal["mask"] = "mask"
    fields: dict[FieldName, MaskRule] = Field(min_length=1)
    salt: SecretStr | None = Field(
        default=None,
        exclude=True,
        description="The HMAC key of 'hash', in clear: accepted by the API, never stored or "
        "returned (excluded from every dump).",
    )
    salt_encrypted: str | None = Field(
        default=None, description="The salt as a Fernet token (freshet.common.secrets)."
    )

    @property
    def hashes(self) -> bool:
        return any(rule.method == "hash" for rule in self.fields.values())


class UnionNode(_Transform):
    kind: Literal["union"] = "union"


class LookupNode(_Transform):
    kind: Literal["lookup"] = "lookup"
    table: str
    on: dict[FieldName, Expression] = Field(min_length=1)
    fields: tuple[FieldName, ...] | dict[FieldName, FieldName] = Field(min_length=1)
    prefix: str = Field(default="", max_length=30)

    def outputs(self) -> dict[str, str]:
        """Looked-up column -> the field it becomes."""
        if isinstance(self.fields, dict):
            return dict(self.fields)
        return {column: self.prefix + column for column in self.fields}


class Route(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: NodeId
    where: Expression


class RouteNode(_Transform):
    kind: Literal["route"] = "route"
    routes: tuple[Route, ...] = Field(min_length=1)
    default: NodeId | None = None

    @property
    def ports(self) -> tuple[str, ...]:
        names = tuple(r.name for r in self.routes)
        return (*names, self.default) if self.default is not None else names


Node = Annotated[
    SourceNode
    | SinkNode
    | FilterNode
    | ProjectNode
    | DropNode
    | RenameNode
    | ComputeNode
    | CastNode
    | MaskNode
    | UnionNode
    | LookupNode
    | RouteNode,
    Field(discriminator="kind"),
]

NODE_KINDS = (
    "source",
    "sink",
    "filter",
    "project",
    "drop",
    "rename",
    "compute",
    "cast",
    "mask",
    "union",
    "lookup",
    "route",
)
MAX_NODES = 200


class PipelineSpec(BaseModel):
    """Desired state of a pipeline on ``freshet.control.pipelines`` (key = name).

    ``generation`` changes whenever the spec does; transform then starts the pipeline afresh
    (new state, inputs read from their beginning). Control validates the spec with
    :func:`freshet.common.pipelines.compiler.compile_pipeline` before writing it; transform
    compiles it again against ``freshet.schemas``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name
    nodes: tuple[Node, ...] = Field(min_length=1, max_length=MAX_NODES)
    generation: int = 1

    def node(self, node_id: str) -> Any:
        """The node with ``node_id`` (``KeyError`` if none)."""
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    @property
    def sources(self) -> tuple[str, ...]:
        """The sources the pipeline reads (of its source nodes; lookups are checked at compile)."""
        seen: dict[str, None] = {}
        for node in self.nodes:
            if isinstance(node, SourceNode):
                seen.setdefault(node.source, None)
        return tuple(seen)
