"""Validation and compilation of a pipeline spec against the captured tables.

:func:`compile_pipeline` checks everything that can be checked before an event flows - the graph
(unknown inputs, cycles, arity, a sink without inputs), the tables and fields every node names,
and the types of every expression - and returns a :class:`PipelinePlan` whose expressions are
compiled closures. Control calls it to refuse a bad spec with a 422; transform calls it to run
the spec. It reports every problem it finds, each naming its node, the node's attribute and,
for an expression, the position in it (:class:`PipelineError`).

Each node's output has a schema: field name -> :class:`~freshet.common.pipelines.values.FieldType`.
A source's is the columns its tables share (same name and type); a union's the fields all its
inputs share; the others derive theirs from their input. Expressions may name only fields of
the schema of the node's input.
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pglast import ast

from freshet.common.events import UNAVAILABLE_VALUE
from freshet.common.exceptions import FreshetError
from freshet.common.pipelines.spec import (
    CastNode,
    ComputeNode,
    DropNode,
    FilterNode,
    LookupNode,
    MaskNode,
    MaskRule,
    PipelineSpec,
    ProjectNode,
    RenameNode,
    RouteNode,
    SinkNode,
    SourceNode,
    UnionNode,
)
from freshet.common.pipelines.values import FieldType, comparable, event_encoder
from freshet.common.schemas import TableSchema
from freshet.common.sql import casts
from freshet.common.sql import types as t
from freshet.common.sql.errors import SqlError
from freshet.common.sql.expr import Compiled, EvalError, compile_expr, parse_expression
from freshet.common.sql.views import Catalog

Schema = dict[str, FieldType]
Port = tuple[str, str | None]
"""An output of a node: ``(node id, route name)``; the route name is None for other nodes."""

TOPIC_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
RESERVED_TOPIC_PREFIXES = ("freshet.", "__", "otlp_spans")
_SINGLE_INPUT = frozenset(
    {"filter", "project", "drop", "rename", "compute", "cast", "mask", "lookup", "route"}
)
_CAST_PREFIX = "NULL::"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec.

    ``node`` is the node's id (None for the pipeline as a whole), ``attribute`` the path of the
    node's attribute (``"where"``, ``"fields.total"``, ``"routes.big.where"``), ``position``
    the 0-based character offset in ``text`` (the expression or type) when the problem has one.
    """

    node: str | None
    attribute: str | None
    message: str
    position: int | None = None
    text: str | None = None

    def __str__(self) -> str:
        where = f"node {self.node!r}" if self.node is not None else "pipeline"
        if self.attribute:
            where += f", {self.attribute}"
        at = f" (at character {self.position + 1})" if self.position is not None else ""
        return f"{where}: {self.message}{at}"


class PipelineError(FreshetError):
    """A spec that cannot run; ``problems`` lists every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class MaskStep:
    field: str
    rule: MaskRule
    to_text: Callable[[Any], str] | None
    """Decodes the field's event value and writes it as PostgreSQL text (None for ``null``)."""


@dataclass(frozen=True)
class LookupPlan:
    table: TableSchema
    key_types: tuple[str, ...]
    """The canonical types of the table's primary-key columns, in key order."""
    key_decoders: tuple[Callable[[Any], Any], ...]
    probes: tuple[Compiled, ...]
    """Over an input row: the value to find in each key column, in key order."""
    outputs: dict[str, str]
    """Looked-up column -> output field."""


@dataclass
class PlanNode:
    """One node, compiled. Which attributes are set depends on ``kind``."""

    id: str
    kind: str
    spec: Any
    inputs: tuple[Port, ...]
    schema: Schema | None = None
    """The node's output fields; None when a problem upstream left it unknown."""
    tables: tuple[TableSchema, ...] = ()
    predicate: Compiled | None = None
    routes: tuple[tuple[str, Compiled], ...] = ()
    default: str | None = None
    computed: tuple[tuple[str, Compiled, Callable[[Any], Any]], ...] = ()
    masks: tuple[MaskStep, ...] = ()
    lookup: LookupPlan | None = None
    topic: str | None = None


@dataclass
class PipelinePlan:
    """A pipeline ready to run: its nodes in topological order and where events enter.

    ``consumers[(id, port)]`` lists the nodes reading that output. ``entry[topic]`` lists the
    source nodes emitting that topic's events; ``lookups[table]`` the lookup nodes of a table
    (source.schema.table), whose topic the runtime also reads to keep the table's current rows.
    """

    name: str
    nodes: dict[str, PlanNode]
    consumers: dict[Port, list[str]] = field(default_factory=dict)
    entry: dict[str, list[str]] = field(default_factory=dict)
    lookups: dict[str, list[str]] = field(default_factory=dict)
    lookup_tables: dict[str, TableSchema] = field(default_factory=dict)

    @property
    def input_topics(self) -> dict[str, str]:
        """Every topic read (sources and lookups) -> the source it belongs to."""
        out: dict[str, str] = {}
        for node in self.nodes.values():
            for table in node.tables:
                out[table.topic] = table.source
        for table in self.lookup_tables.values():
            out[table.topic] = table.source
        return out

    @property
    def sink_topics(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for node in self.nodes.values():
            if node.topic is not None:
                seen.setdefault(node.topic, None)
        return tuple(seen)


# --- expressions over a row ---------------------------------------------------------------


def _field_reader(name: str, ftype: FieldType) -> Callable[[Any], Any]:
    decode = t.decoder(ftype.type, ftype.typmod)

    def read(row: dict[str, Any]) -> Any:
        try:
            raw = row[name]
        except KeyError:
            raise EvalError(
                f"field {name} is missing from the event (was its column dropped?)"
            ) from None
        if raw is None:
            return None
        if raw == UNAVAILABLE_VALUE:
            raise EvalError(
                f"field {name} is an unchanged TOAST value the source did not send; set "
                "REPLICA IDENTITY FULL on its table"
            )
        try:
            return decode(raw)
        except (ValueError, TypeError, ArithmeticError, decimal.InvalidOperation):
            raise EvalError(
                f"field {name}: a {type(raw).__name__} value cannot be read as {ftype}"
            ) from None

    return read


class RowScope:
    """Fields of one row (an event's ``before`` or ``after``), by name, with their types."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema

    def column(self, fields: tuple[str, ...], location: int) -> Compiled:
        if len(fields) != 1:
            raise SqlError(
                f'column reference "{".".join(fields)}" is not supported: name a field of the '
                "row without a qualifier",
                location,
            )
        name = fields[0]
        ftype = self.schema.get(name)
        if ftype is None:
            known = ", ".join(self.schema) or "none"
            raise SqlError(f'field "{name}" does not exist (the input has: {known})', location)
        return Compiled(_field_reader(name, ftype), ftype.type)

    def special(self, node: Any) -> Compiled | None:
        return None


def field_reader(name: str, ftype: FieldType) -> Callable[[dict[str, Any]], Any]:
    """A reader of one field's Python value from a row; raises EvalError on a bad value."""
    return _field_reader(name, ftype)


# --- the compiler -------------------------------------------------------------------------


class _Compiler:
    def __init__(
        self, spec: PipelineSpec, tables: list[TableSchema], sources: set[str] | None
    ) -> None:
        self.spec = spec
        self.tables = tables
        self.catalog = Catalog(tables)
        self.sources = sources
        self.problems: list[Problem] = []
        self.broken: set[str] = set()
        """Nodes whose inputs are wrong (unknown, too many, too few)."""

    def problem(
        self,
        node: str | None,
        attribute: str | None,
        message: str,
        position: int | None = None,
        text: str | None = None,
    ) -> None:
        self.problems.append(Problem(node, attribute, message, position, text))
        if node is not None and attribute is not None and attribute.startswith("inputs"):
            self.broken.add(node)

    # --- graph ---

    def graph(self) -> tuple[dict[str, Any], list[str]] | None:
        nodes: dict[str, Any] = {}
        for node in self.spec.nodes:
            if node.id in nodes:
                self.problem(node.id, "id", "this id is used by more than one node")
                continue
            nodes[node.id] = node
        edges: dict[str, list[str]] = {n: [] for n in nodes}
        for node in nodes.values():
            self._check_arity(node)
            for i, ref in enumerate(node.edges):
                upstream = self._resolve_ref(node, ref, nodes, f"inputs.{i}")
                if upstream is not None:
                    edges[upstream].append(node.id)
        if not any(isinstance(n, SinkNode) for n in nodes.values()):
            self.problem(None, "nodes", "a pipeline needs at least one sink node")
        order = self._toposort(nodes, edges)
        if order is None:
            return None
        return nodes, order

    def _check_arity(self, node: Any) -> None:
        count = len(node.edges)
        if isinstance(node, SourceNode):
            return
        if count == 0:
            self.problem(node.id, "inputs", f"a {node.kind} node needs an input; it has none")
        elif node.kind in _SINGLE_INPUT and count > 1:
            self.problem(
                node.id,
                "inputs",
                f"a {node.kind} node takes exactly one input, not {count}: merge them with a "
                "union node first",
            )
        elif isinstance(node, UnionNode) and count < 2:
            self.problem(node.id, "inputs", "a union node takes two or more inputs")
        if len(set(node.edges)) != count:
            self.problem(node.id, "inputs", "an input is listed more than once")

    def _resolve_ref(self, node: Any, ref: str, nodes: dict[str, Any], attr: str) -> str | None:
        upstream_id, _, port = ref.partition(".")
        upstream = nodes.get(upstream_id)
        if upstream is None:
            self.problem(node.id, attr, f"input {ref!r} is not a node of this pipeline")
            return None
        if isinstance(upstream, SinkNode):
            self.problem(node.id, attr, f"node {upstream_id!r} is a sink: it has no output to read")
            return None
        if isinstance(upstream, RouteNode):
            if not port:
                self.problem(
                    node.id,
                    attr,
                    f"node {upstream_id!r} is a route: take one of its outputs as input, e.g. "
                    f"'{upstream_id}.{upstream.ports[0]}' (its outputs: "
                    f"{', '.join(upstream.ports)})",
                )
                return None
            if port not in upstream.ports:
                self.problem(
                    node.id,
                    attr,
                    f"route {upstream_id!r} has no output {port!r} (its outputs: "
                    f"{', '.join(upstream.ports)})",
                )
                return None
        elif port:
            self.problem(
                node.id,
                attr,
                f"node {upstream_id!r} has a single output: refer to it as {upstream_id!r}",
            )
            return None
        return upstream_id

    def _toposort(self, nodes: dict[str, Any], edges: dict[str, list[str]]) -> list[str] | None:
        indegree = dict.fromkeys(nodes, 0)
        for targets in edges.values():
            for target in targets:
                indegree[target] += 1
        ready = [n for n in nodes if indegree[n] == 0]
        order: list[str] = []
        while ready:
            current = ready.pop(0)
            order.append(current)
            for target in edges[current]:
                indegree[target] -= 1
                if indegree[target] == 0:
                    ready.append(target)
        if len(order) == len(nodes):
            return order
        remaining = {n for n in nodes if n not in order}
        cycle = self._a_cycle(remaining, edges)
        for node_id in cycle[:-1]:
            self.problem(node_id, "inputs", "the node is part of a cycle: " + " -> ".join(cycle))
        return None

    @staticmethod
    def _a_cycle(remaining: set[str], edges: dict[str, list[str]]) -> list[str]:
        """One cycle among ``remaining``, as ``[a, b, ..., a]`` in the direction of the edges.

        Every node left by the topological sort has an input among the others left, so walking
        inputs backwards from any of them must come round to a node already on the path.
        """
        feeds: dict[str, list[str]] = {n: [] for n in remaining}
        for upstream, targets in edges.items():
            for target in targets:
                if upstream in remaining and target in remaining:
                    feeds[target].append(upstream)
        current = min(remaining)
        path: list[str] = [current]
        seen = {current: 0}
        while True:
            current = min(feeds[current])
            if current in seen:
                cycle = [*path[seen[current] :], current]
                return cycle[::-1]
            seen[current] = len(path)
            path.append(current)

    # --- nodes ---

    def compile(self) -> PipelinePlan:
        graph = self.graph()
        plan = PipelinePlan(self.spec.name, {})
        if graph is None:
            raise PipelineError(self.problems)
        nodes, order = graph
        input_topics: set[str] = set()
        for node_id in order:
            node = nodes[node_id]
            ports = tuple(_port(ref) for ref in node.edges)
            planned = PlanNode(node.id, node.kind, node, ports)
            plan.nodes[node_id] = planned
            for port in ports:
                plan.consumers.setdefault(port, []).append(node_id)
            upstream = [plan.nodes.get(p[0]) for p in ports]
            schemas = [None if u is None else u.schema for u in upstream]
            if isinstance(node, SourceNode):
                self._source(planned, node)
                for table in planned.tables:
                    plan.entry.setdefault(table.topic, []).append(node_id)
                    input_topics.add(table.topic)
                continue
            if any(s is None for s in schemas):
                continue  # a problem upstream: this node's fields cannot be checked
            if node_id in self.broken:
                continue  # its inputs are wrong: its fields cannot be checked
            known = [s for s in schemas if s is not None]
            method: Callable[[PlanNode, Any, list[Schema]], None] = getattr(self, "_" + node.kind)
            before = len(self.problems)
            method(planned, node, known)
            if len(self.problems) > before:
                planned.schema = None  # the nodes downstream are not checked against a guess
            if planned.lookup is not None:
                table = planned.lookup.table
                plan.lookups.setdefault(table.qualified, []).append(node_id)
                plan.lookup_tables[table.qualified] = table
                input_topics.add(table.topic)
        for planned in plan.nodes.values():
            if planned.topic is not None and planned.topic in input_topics:
                self.problem(
                    planned.id,
                    "topic",
                    f"topic {planned.topic!r} is an input of this pipeline: a sink writing to it "
                    "would feed the pipeline its own output",
                )
        if self.problems:
            raise PipelineError(self.problems)
        return plan

    def _source(self, planned: PlanNode, node: SourceNode) -> None:
        of_source = [tb for tb in self.tables if tb.source == node.source]
        if self.sources is not None and node.source not in self.sources:
            self.problem(node.id, "source", f"source {node.source!r} does not exist")
            return
        if not of_source:
            self.problem(
                node.id,
                "source",
                f"source {node.source!r} has published no captured tables yet (is it running? "
                "see GET /v1/sources)",
            )
            return
        found: list[TableSchema] = []
        for i, name in enumerate(node.tables):
            parts = tuple(name.split("."))
            matches = [
                tb
                for tb in of_source
                if (len(parts) == 2 and (tb.schema_name, tb.table) == parts)
                or (len(parts) == 1 and tb.table == parts[0])
            ]
            if len(parts) not in (1, 2):
                self.problem(
                    node.id,
                    f"tables.{i}",
                    f"table {name!r}: give schema.table or table (the source is named apart)",
                )
            elif not matches:
                self.problem(
                    node.id,
                    f"tables.{i}",
                    f"table {name!r} is not captured by source {node.source!r}",
                )
            elif len(matches) > 1:
                options = ", ".join(sorted(f"{m.schema_name}.{m.table}" for m in matches))
                self.problem(
                    node.id, f"tables.{i}", f"table name {name!r} is ambiguous: it may be {options}"
                )
            elif matches[0] in found:
                self.problem(node.id, f"tables.{i}", f"table {name!r} is listed twice")
            else:
                found.append(matches[0])
        if len(found) != len(node.tables):
            return
        planned.tables = tuple(found)
        planned.schema = _common([_table_schema(tb) for tb in found])

    def _sink(self, planned: PlanNode, node: SinkNode, schemas: list[Schema]) -> None:
        topic = node.topic
        if not TOPIC_NAME.match(topic) or topic in (".", ".."):
            self.problem(
                node.id,
                "topic",
                "not a valid Kafka topic name: use 1 to 249 letters, digits, '.', '_' or '-'",
            )
        elif topic.startswith(RESERVED_TOPIC_PREFIXES):
            self.problem(
                node.id,
                "topic",
                f"topic names starting with {', '.join(RESERVED_TOPIC_PREFIXES)} are Freshet's "
                "or Kafka's own: choose another",
            )
        planned.topic = topic
        planned.schema = {}

    def _filter(self, planned: PlanNode, node: FilterNode, schemas: list[Schema]) -> None:
        (schema,) = schemas
        planned.predicate = self._predicate(node.id, "where", node.where, schema)
        planned.schema = schema

    def _route(self, planned: PlanNode, node: RouteNode, schemas: list[Schema]) -> None:
        (schema,) = schemas
        names = [r.name for r in node.routes]
        for i, name in enumerate(names):
            if names.index(name) != i:
                self.problem(node.id, f"routes.{i}.name", f"route name {name!r} is used twice")
        if node.default is not None and node.default in names:
            self.problem(
                node.id, "default", f"the default output {node.default!r} is also a route's name"
            )
        routes = []
        for i, route in enumerate(node.routes):
            compiled = self._predicate(node.id, f"routes.{i}.where", route.where, schema)
            if compiled is not None:
                routes.append((route.name, compiled))
        planned.routes = tuple(routes)
        planned.default = node.default
        planned.schema = schema

    def _project(self, planned: PlanNode, node: ProjectNode, schemas: list[Schema]) -> None:
        (schema,) = schemas
        out: Schema = {}
        for i, name in enumerate(node.fields):
            if name in out:
                self.problem(node.id, f"fields.{i}", f"field {name!r} is listed twice")
            elif self._exists(node.id, f"fields.{i}", name, schema):
                out[name] = schema[name]
        planned.schema = out

    def _drop(self, planned: PlanNode, node: DropNode, schemas: list[Schema]) -> None:
        (schema,) = schemas
        for i, name in enumerate(node.fields):
            self._exists(node.id, f"fields.{i}", name, schema)
        planned.schema = {k: v for k, v in schema.items() if k not in node.fields}

    def _rename(self, planned: PlanNode, node: RenameNode, schemas: list[Schema]) -> None:
        (schema,) = schemas
        targets = list(node.fields.values())
        for old, new in node.fields.items():
            attr = f"fields.{old}"
            self._exists(node.id, attr, old, schema)
            if targets.count(new) > 1:
                self.problem(node.id, attr, f"two fields would be renamed to {new!r}")
            elif new in schema and new not in node.fields:
                self.problem(
                    node.id, attr, f"field {new!r} exists already: drop or rename it first"
                )
        planned.schema = {node.fields.get(k, k): v for k, v in schema.items()}

    def _compute(self, planned: PlanNode, node: ComputeNode, schemas: list[Schema]) -> None:
        (schema,) = schemas
        out = dict(schema)
        computed = []
        for name, text in node.fields.items():
            compiled = self._expression(node.id, f"fields.{name}", text, schema)
            if compiled is None:
                continue
            ftype = FieldType.of(t.TEXT if compiled.type == t.UNKNOWN else compiled.type)
            out[name] = ftype
            computed.append((name, compiled, event_encoder(ftype)))
        planned.computed = tuple(computed)
        planned.schema = out

    def _cast(self, planned: PlanNode, node: CastNode, schemas: list[Schema]) -> None:
        (schema,) = schemas
        out = dict(schema)
        computed = []
        for name, type_text in node.fields.items():
            attr = f"fields.{name}"
            if not self._exists(node.id, attr, name, schema):
                continue
            type_node = self._type_name(node.id, attr, type_text)
            if type_node is None:
                continue
            column = ast.ColumnRef(fields=(ast.String(sval=name),), location=-1)
            cast = ast.TypeCast(arg=column, typeName=type_node, location=-1)
            try:
                compiled = compile_expr(cast, RowScope(schema), 0, deterministic=False)
            except SqlError as exc:
                self.problem(node.id, attr, exc.message, 0, type_text)
                continue
            ftype = FieldType.of(compiled.type)
            out[name] = ftype
            computed.append((name, compiled, event_encoder(ftype)))
        planned.computed = tuple(computed)
        planned.schema = out

    def _type_name(self, node_id: str, attr: str, text: str) -> Any:
        """The pglast type name ``text`` spells, or None (with a problem)."""
        try:
            parsed, offset = parse_expression(_CAST_PREFIX + text)
        except SqlError as exc:
            position = None if exc.position is None else max(0, exc.position - len(_CAST_PREFIX))
            self.problem(node_id, attr, f"not a type name: {exc.message}", position, text)
            return None
        del offset
        if not (
            isinstance(parsed, ast.TypeCast)
            and isinstance(parsed.arg, ast.A_Const)
            and parsed.arg.isnull
        ):
            self.problem(
                node_id, attr, "not a type name (e.g. integer, numeric(10,2), text)", 0, text
            )
            return None
        return parsed.typeName

    def _mask(self, planned: PlanNode, node: MaskNode, schemas: list[Schema]) -> None:
        (schema,) = schemas
        if node.hashes and node.salt is None and node.salt_encrypted is None:
            self.problem(node.id, "salt", "the 'hash' method needs a salt; give one in 'salt'")
        out = dict(schema)
        steps = []
        for name, rule in node.fields.items():
            attr = f"fields.{name}"
            if not self._exists(node.id, attr, name, schema):
                continue
            ftype = schema[name]
            if rule.method == "null":
                steps.append(MaskStep(name, rule, None))
                continue
            steps.append(MaskStep(name, rule, _text_of(name, ftype)))
            out[name] = FieldType(t.TEXT)
        planned.masks = tuple(steps)
        planned.schema = out

    def _union(self, planned: PlanNode, node: UnionNode, schemas: list[Schema]) -> None:
        planned.schema = _common(schemas)

    def _lookup(self, planned: PlanNode, node: LookupNode, schemas: list[Schema]) -> None:
        (schema,) = schemas
        try:
            table = self.catalog.resolve(tuple(node.table.split(".")), None)
        except SqlError as exc:
            self.problem(node.id, "table", exc.message)
            return
        if self.sources is not None and table.source not in self.sources:
            self.problem(node.id, "table", f"source {table.source!r} does not exist")
            return
        if not table.primary_key:
            self.problem(
                node.id, "table", f"table {table.qualified} has no primary key to look rows up by"
            )
            return
        columns = _table_schema(table)
        key = table.primary_key
        ok = True
        missing = [k for k in key if k not in node.on]
        if missing:
            ok = False
            self.problem(
                node.id,
                "on",
                f"give an expression for every primary-key column of {table.qualified} "
                f"({', '.join(key)}); missing: {', '.join(missing)}",
            )
        for column in node.on:
            if column not in key:
                ok = False
                self.problem(
                    node.id,
                    f"on.{column}",
                    f"{column!r} is not a primary-key column of {table.qualified} (its key: "
                    f"{', '.join(key)})",
                )
        probes = []
        for column in key:
            text = node.on.get(column)
            if text is None:
                continue
            compiled = self._expression(node.id, f"on.{column}", text, schema)
            if compiled is None:
                ok = False
                continue
            target = columns[column].type
            if compiled.type == t.UNKNOWN:
                try:
                    compiled = _literal(compiled, target)
                except SqlError as exc:
                    ok = False
                    self.problem(node.id, f"on.{column}", exc.message, exc.position, text)
                    continue
            elif not comparable(compiled.type, target):
                ok = False
                self.problem(
                    node.id,
                    f"on.{column}",
                    f"{table.qualified}.{column} is {t.sql_name(target)} but the expression is "
                    f"{t.sql_name(compiled.type)}: cast it (expression::{t.sql_name(target)})",
                    0,
                    text,
                )
                continue
            probes.append(compiled)
        outputs = node.outputs()
        out = dict(schema)
        for column, name in outputs.items():
            attr = f"fields.{column}"
            if column not in columns:
                ok = False
                self.problem(
                    node.id,
                    attr,
                    f"column {column!r} does not exist in {table.qualified} (its columns: "
                    f"{', '.join(columns)})",
                )
            elif name in out:
                ok = False
                self.problem(
                    node.id,
                    attr,
                    f"field {name!r} exists already in the row: name it otherwise (a dict of "
                    "column: name) or set a prefix",
                )
            else:
                out[name] = columns[column]
        if not ok:
            return
        planned.lookup = LookupPlan(
            table=table,
            key_types=tuple(columns[k].type for k in key),
            key_decoders=tuple(t.decoder(columns[k].type, columns[k].typmod) for k in key),
            probes=tuple(probes),
            outputs=outputs,
        )
        planned.schema = out

    # --- helpers ---

    def _exists(self, node_id: str, attr: str, name: str, schema: Schema) -> bool:
        if name in schema:
            return True
        known = ", ".join(schema) or "none"
        self.problem(node_id, attr, f"field {name!r} does not exist (the input has: {known})")
        return False

    def _expression(self, node_id: str, attr: str, text: str, schema: Schema) -> Compiled | None:
        try:
            parsed, offset = parse_expression(text)
            return compile_expr(parsed, RowScope(schema), offset, deterministic=False)
        except SqlError as exc:
            self.problem(node_id, attr, exc.message, exc.position, text)
            return None

    def _predicate(self, node_id: str, attr: str, text: str, schema: Schema) -> Compiled | None:
        compiled = self._expression(node_id, attr, text, schema)
        if compiled is None:
            return None
        if compiled.type == t.UNKNOWN:
            try:
                return _literal(compiled, t.BOOL)
            except SqlError as exc:
                self.problem(node_id, attr, exc.message, exc.position, text)
                return None
        if compiled.type != t.BOOL:
            self.problem(
                node_id,
                attr,
                f"a condition must be of type boolean, not {t.sql_name(compiled.type)}",
                0,
                text,
            )
            return None
        return compiled


def _literal(compiled: Compiled, target: str) -> Compiled:
    """An untyped literal (``'t'``, ``NULL``) as a constant of ``target``.

    Raises:
        SqlError: the text is not a value of ``target``.
    """
    text = compiled.fn(None)
    if text is None:
        return Compiled(compiled.fn, target)
    parse = casts.input_function(target)
    if parse is None:
        raise SqlError(f"literals of type {t.sql_name(target)} are not supported", 0)
    try:
        value = parse(text)
    except EvalError as exc:
        raise SqlError(str(exc), 0) from None
    return Compiled(lambda _row: value, target)


def _text_of(name: str, ftype: FieldType) -> Callable[[Any], str]:
    read = _field_reader(name, ftype)
    out = casts.output_function(ftype.type)

    def text(row: dict[str, Any]) -> str:
        value = read(row)
        return out(value)

    return text


def _port(ref: str) -> Port:
    node_id, _, port = ref.partition(".")
    return (node_id, port or None)


def _table_schema(table: TableSchema) -> Schema:
    return {c.name: FieldType.of(t.canonical_type(c.type_oid), c.typmod) for c in table.columns}


def _common(schemas: list[Schema]) -> Schema:
    """The fields every schema has, with the same type (in the first schema's order)."""
    first, *rest = schemas
    return {k: v for k, v in first.items() if all(s.get(k) == v for s in rest)}


def compile_pipeline(
    spec: PipelineSpec, tables: Iterable[TableSchema], sources: Iterable[str] | None = None
) -> PipelinePlan:
    """Validate ``spec`` against the captured ``tables`` and compile it.

    ``sources`` are the registered sources (control passes them so a table ingest published for
    a deleted source does not count); None trusts ``tables``.

    Raises:
        PipelineError: with every problem found.
    """
    known = None if sources is None else set(sources)
    return _Compiler(spec, list(tables), known).compile()


__all__ = [
    "LookupPlan",
    "MaskStep",
    "PipelineError",
    "PipelinePlan",
    "PlanNode",
    "Problem",
    "RowScope",
    "compile_pipeline",
    "field_reader",
]
