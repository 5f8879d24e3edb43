"""The operators of a pipeline, run over one change event at a time.

:class:`Executor` takes a compiled :class:`~freshet.common.pipelines.PipelinePlan` and turns one
input event (a Debezium envelope) into the records its sinks get. The event enters at every
source node of its topic and flows depth-first along the edges; each node transforms the
event's ``before`` and ``after`` images, or decides which of its outputs the event takes.

Row semantics of ``filter`` and ``route`` (a filter is a route with one output): a row's
output is the first route whose condition is true (SQL: NULL is not true), else the default.

* ``c``/``r``: to the output of ``after``;
* ``u`` with a ``before`` image: to the output of both when they agree; when they differ the
  row moved: a ``d`` (``before``) to the old output and a ``c`` (``after``) to the new one, so a
  consumer that keeps the last row per key sees it leave and enter;
* ``u`` without ``before`` (``REPLICA IDENTITY DEFAULT``): to the output of ``after`` alone - a
  row that stops matching is not retracted; use ``REPLICA IDENTITY FULL`` on tables whose
  pipelines filter or route on columns that change;
* ``d``: to the output of ``before``; a ``before`` holding only the key (``REPLICA IDENTITY
  DEFAULT``: every other column NULL) decides nothing, so the delete goes to every output (a
  delete of a key a consumer never had is harmless to it);
* ``t`` (truncate): to every output.

Every other node maps both images (``None`` stays ``None``); a sink writes the event with its
key and the envelope's other fields unchanged, ``op``/``before``/``after`` as they arrived,
and a tombstone after a delete, as Debezium does.

A value a node cannot handle raises :class:`NodeFailure` naming the node; the task sends the
whole input event to the dead-letter topic (none of its outputs is written).
"""

from __future__ import annotations

import decimal
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from freshet.common.events import UNAVAILABLE_VALUE
from freshet.common.pipelines import PipelinePlan, PlanNode
from freshet.common.pipelines.compiler import MaskStep, Port
from freshet.common.pipelines.values import lookup_key
from freshet.common.schemas import NodeCounts
from freshet.common.sql.expr import EvalError
from freshet.transform.pipelines.lookup import LookupTables

Row = dict[str, Any]
OPS = frozenset({"c", "u", "d", "r", "t"})


class NodeFailure(Exception):
    """A node could not process an event; ``node`` is its id, the message says why."""

    def __init__(self, node: str, message: str) -> None:
        super().__init__(message)
        self.node = node
        self.message = message


@dataclass(frozen=True, slots=True)
class Change:
    """An event inside the pipeline: its operation and images.

    ``partial``: the ``before`` of a delete holds only the key.
    """

    op: str
    before: Row | None
    after: Row | None
    partial: bool = False


@dataclass(frozen=True, slots=True)
class Output:
    """What a sink writes for one change: ``value`` is the envelope, None for a tombstone."""

    topic: str
    node: str
    value: dict[str, Any] | None


_VALUE_ERRORS = (EvalError, ValueError, TypeError, ArithmeticError, decimal.InvalidOperation)


class Executor:
    """Runs a plan over events. ``salts`` maps a mask node's id to its decrypted salt."""

    def __init__(self, plan: PipelinePlan, lookups: LookupTables, salts: dict[str, bytes]) -> None:
        self.plan = plan
        self.lookups = lookups
        self._salts = salts
        self.counts: dict[str, NodeCounts] = {n: NodeCounts() for n in plan.nodes}
        self._apply: dict[str, Callable[[PlanNode, Change], list[tuple[str | None, Change]]]] = {
            "filter": self._route,
            "route": self._route,
            "union": _identity,
            "sink": _identity,
            "project": self._map(_project),
            "drop": self._map(_drop),
            "rename": self._map(_rename),
            "compute": self._map(_compute),
            "cast": self._map(_compute),
            "mask": self._map(self._mask),
            "lookup": self._map(self._lookup),
        }
        # Primary keys of the source tables, to recognise a key-only before image.
        self._keys = {topic: _key_columns(plan, topic) for topic in plan.entry}
        # The lookup nodes of each looked-up table's topic, named when its event is poison.
        self._lookup_nodes = {
            table.topic: ",".join(plan.lookups[qualified])
            for qualified, table in plan.lookup_tables.items()
        }

    # --- entry ---------------------------------------------------------------------------------

    def run(self, topic: str, key: bytes | None, value: dict[str, Any]) -> list[Output]:
        """The sink records of one input event (lookup tables updated first).

        Every node counts the event in (and out, if it passed it on) as it processed it; when a
        node fails, the event's sink records are discarded and so are the sinks' counts.

        Raises:
            NodeFailure: a node could not process the event (a lookup table's row it changed
                stays changed: that change is the table's, not the pipeline's).
        """
        if topic in self._lookup_nodes:
            try:
                self.lookups.apply(topic, key, value)
            except _VALUE_ERRORS as exc:
                raise NodeFailure(self._lookup_nodes[topic], str(exc)) from None
        sources = self.plan.entry.get(topic, ())
        if not sources:
            return []
        change = _change(value, self._keys[topic])
        counts: dict[str, list[int]] = {}
        out: list[Output] = []
        failed = True
        try:
            for node_id in sources:
                counts[node_id] = [1, 1]
                self._push((node_id, None), change, value, out, counts)
            failed = False
        finally:
            for node_id, (n_in, n_out) in counts.items():
                if failed and self.plan.nodes[node_id].topic is not None:
                    continue  # the sinks' records of a failed event are not written
                c = self.counts[node_id]
                c.events_in += n_in
                c.events_out += n_out
        return out

    def _push(
        self,
        port: Port,
        change: Change,
        envelope: dict[str, Any],
        out: list[Output],
        counts: dict[str, list[int]],
    ) -> None:
        for node_id in self.plan.consumers.get(port, ()):
            node = self.plan.nodes[node_id]
            tally = counts.setdefault(node_id, [0, 0])
            tally[0] += 1
            try:
                results = self._apply[node.kind](node, change)
            except _VALUE_ERRORS as exc:
                raise NodeFailure(node_id, str(exc)) from None
            for out_port, result in results:
                tally[1] += 1
                if node.topic is not None:
                    out.append(Output(node.topic, node_id, _envelope(envelope, result)))
                    if result.op == "d":
                        out.append(Output(node.topic, node_id, None))
                else:
                    self._push((node_id, out_port), result, envelope, out, counts)

    # --- filter and route ----------------------------------------------------------------------

    def _route(self, node: PlanNode, change: Change) -> list[tuple[str | None, Change]]:
        if node.kind == "filter":
            assert node.predicate is not None
            routes: tuple[tuple[str | None, Any], ...] = ((None, node.predicate),)
            default = None
            ports: tuple[str | None, ...] = (None,)
        else:
            routes = node.routes
            default = node.default
            ports = (*(name for name, _ in routes), *((default,) if default else ()))
        missing = object()

        def port_of(row: Row) -> Any:
            for name, predicate in routes:
                if predicate.fn(row) is True:
                    return name
            return default if default is not None else missing

        op = change.op
        if op == "t" or (op == "d" and (change.partial or change.before is None)):
            return [(p, change) for p in ports]
        if op == "d":
            assert change.before is not None
            old = port_of(change.before)
            return [] if old is missing else [(old, change)]
        assert change.after is not None
        new = port_of(change.after)
        if op != "u" or change.before is None:
            return [] if new is missing else [(new, change)]
        old = port_of(change.before)
        if old is new or old == new:
            return [] if new is missing else [(new, change)]
        moved: list[tuple[str | None, Change]] = []
        if old is not missing:
            moved.append((old, Change("d", change.before, None)))
        if new is not missing:
            moved.append((new, Change("c", None, change.after)))
        return moved

    # --- row maps ------------------------------------------------------------------------------

    @staticmethod
    def _map(
        fn: Callable[[PlanNode, Row], Row],
    ) -> Callable[[PlanNode, Change], list[tuple[str | None, Change]]]:
        def apply(node: PlanNode, change: Change) -> list[tuple[str | None, Change]]:
            before = None if change.before is None else fn(node, change.before)
            after = None if change.after is None else fn(node, change.after)
            return [(None, Change(change.op, before, after, change.partial))]

        return apply

    def _mask(self, node: PlanNode, row: Row) -> Row:
        new = dict(row)
        for step in node.masks:
            raw = row.get(step.field)
            if raw is None or raw == UNAVAILABLE_VALUE:
                continue  # NULL stays NULL; an unsent TOAST value carries no data
            new[step.field] = self._masked(node, step, row)
        return new

    def _masked(self, node: PlanNode, step: MaskStep, row: Row) -> str | None:
        rule = step.rule
        if step.to_text is None:
            return None
        if rule.method == "redact":
            return rule.replacement
        text = step.to_text(row)
        if rule.method == "hash":
            return hmac.new(self._salts[node.id], text.encode(), hashlib.sha256).hexdigest()
        kept = text[-rule.keep :] if rule.keep else ""
        return rule.mask_char * (len(text) - len(kept)) + kept

    def _lookup(self, node: PlanNode, row: Row) -> Row:
        lookup = node.lookup
        assert lookup is not None
        key = lookup_key([p.fn(row) for p in lookup.probes], lookup.key_types)
        found = self.lookups.get(lookup.table.qualified, key)
        new = dict(row)
        for column, name in lookup.outputs.items():
            new[name] = None if found is None else found.get(column)
        return new


def _identity(node: PlanNode, change: Change) -> list[tuple[str | None, Change]]:
    return [(None, change)]


def _project(node: PlanNode, row: Row) -> Row:
    fields = node.spec.fields
    try:
        return {name: row[name] for name in fields}
    except KeyError as exc:
        raise EvalError(f"field {exc.args[0]} is missing from the event") from None


def _drop(node: PlanNode, row: Row) -> Row:
    dropped = node.spec.fields
    return {k: v for k, v in row.items() if k not in dropped}


def _rename(node: PlanNode, row: Row) -> Row:
    mapping = node.spec.fields
    return {mapping.get(k, k): v for k, v in row.items()}


def _compute(node: PlanNode, row: Row) -> Row:
    new = dict(row)
    for name, compiled, encode in node.computed:
        new[name] = encode(compiled.fn(row))
    return new


def _key_columns(plan: PipelinePlan, topic: str) -> frozenset[str]:
    for node_id in plan.entry[topic]:
        for table in plan.nodes[node_id].tables:
            if table.topic == topic:
                return frozenset(table.primary_key)
    return frozenset()


def _change(value: dict[str, Any], key_columns: frozenset[str]) -> Change:
    op = value["op"]
    before, after = value.get("before"), value.get("after")
    partial = False
    if op == "d" and before is not None:
        others = [v for k, v in before.items() if k not in key_columns]
        partial = bool(key_columns) and bool(others) and all(v is None for v in others)
    return Change(op, before, after, partial)


def _envelope(original: dict[str, Any], change: Change) -> dict[str, Any]:
    out = dict(original)
    out["before"] = change.before
    out["after"] = change.after
    out["op"] = change.op
    return out


def check_event(value: Any) -> None:
    """Raise ``ValueError`` naming what is wrong when ``value`` is not a change event."""
    if not isinstance(value, dict):
        raise ValueError("the value is not a JSON object")
    op = value.get("op")
    if op not in OPS:
        raise ValueError(f"'op' is {op!r}, not one of c, u, d, r, t")
    if not isinstance(value.get("source"), dict):
        raise ValueError("the event has no 'source' block")
    for image in ("before", "after"):
        if not isinstance(value.get(image), dict | None):
            raise ValueError(f"'{image}' is neither an object nor null")
    if op in ("c", "r", "u") and value.get("after") is None:
        raise ValueError(f"a {op!r} event has no 'after'")
    if op == "d" and value.get("before") is None:
        raise ValueError("a 'd' event has no 'before'")
