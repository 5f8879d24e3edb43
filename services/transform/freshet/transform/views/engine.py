"""The incremental engine of one view: change events in, changed view rows out.

State, all in memory and all derived from the base rows except the base rows themselves:

* per source table, the current row of every primary key with the source position that wrote
  it (a deleted row keeps its position), so a replayed or duplicated event is recognised by its
  position and skipped, and a row's old values are known for every update and delete;
* per join, the tuples joined so far indexed by their join key (left side) and the rows of the
  joined table indexed by theirs (right side) - a change meets only its matching rows;
* per group, the aggregate state: counts, sums, and for MIN/MAX and DISTINCT aggregates the
  multiset of values, so deleting the current extreme finds the next one.

Changes flow as signed tuples (+1 inserted, -1 retracted). A change to a table read twice (a
self-join) is applied to each reference in ``FROM`` order, which is the standard delta rule
``d(A join B) = dA join B_old + A_new join dB``.

:meth:`ViewEngine.drain` returns the view rows that changed since the last call as
``(key, row | None)``; the runtime writes them to the view topic and commits
:meth:`ViewEngine.take_dirty` (the base rows that changed) with the consumed offsets.
"""

from __future__ import annotations

import base64
import decimal
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

import orjson

from freshet.common.events import UNAVAILABLE_VALUE
from freshet.common.sql.expr import EvalError
from freshet.common.sql.types import decoder, encoder, numeric_div, sort_key
from freshet.common.sql.views import Aggregate, Input, ViewPlan

Pos = tuple[int, int]
Row = tuple[Any, ...]
Tup = tuple[Row | None, ...]


class ViewError(Exception):
    """An event the view cannot apply (a dropped column, an unexpected value); names the cause."""


def exact_decimals() -> None:
    """Give this thread a decimal context wide enough for PostgreSQL's numeric (no rounding)."""
    ctx = decimal.getcontext()
    ctx.prec = 1000
    ctx.Emax = decimal.MAX_EMAX
    ctx.Emin = decimal.MIN_EMIN
    ctx.rounding = decimal.ROUND_HALF_UP


def event_position(value: dict[str, Any]) -> Pos:
    """The event's place in the source's commit order: ``(commit LSN, change LSN)``.

    Snapshot reads sort before every streamed change of the same commit LSN. A topic written
    by Debezium itself (no ``commit_lsn``) orders by ``lsn``.
    """
    source = value["source"]
    lsn = int(source.get("lsn") or 0)
    commit = int(source.get("commit_lsn") or lsn)
    return (commit, -1 if value["op"] == "r" else lsn)


@dataclass
class _Table:
    qualified: str
    topic: str
    source: str
    columns: list[str]
    types: list[str]
    decoders: list[Callable[[Any], Any]]
    inputs: list[int]
    rows: dict[str, tuple[Pos, Row | None]] = field(default_factory=dict)
    truncated: Pos | None = None
    events: int = 0
    """Change events of this table read (duplicates included)."""
    applied: int = 0
    """Those that changed a row (duplicates and replays skipped)."""


class _Group:
    __slots__ = ("count", "states")

    def __init__(self, aggregates: list[Aggregate]) -> None:
        self.count = 0
        self.states = [_new_state(a) for a in aggregates]


class _Extreme:
    """MIN or MAX of a multiset.

    The extreme is cached, and found again (once, when read) after the last copy of it left, so
    deleting the current extreme stays exact.
    """

    __slots__ = ("counts", "fallback", "key", "smallest", "stale", "value")

    def __init__(
        self,
        smallest: bool,
        key: Callable[[Any], Any] | None,
        fallback: Callable[[Any], Any] | None = None,
    ) -> None:
        self.counts: dict[Any, int] = {}
        self.value: Any = None
        self.smallest = smallest
        self.key = key
        """Always compare through it (PostgreSQL's order differs from Python's)."""
        self.fallback = fallback
        """Compare through it only when Python cannot (a numeric NaN)."""
        self.stale = False

    def _better(self, a: Any, b: Any) -> bool:
        key = self.key
        if key is not None:
            a, b = key(a), key(b)
        try:
            return bool(a < b if self.smallest else a > b)
        except decimal.InvalidOperation:
            assert self.fallback is not None
            a, b = self.fallback(a), self.fallback(b)
            return bool(a < b if self.smallest else a > b)

    def update(self, value: Any, m: int) -> None:
        counts = self.counts
        c = counts.get(value, 0) + m
        if c:
            counts[value] = c
            if m > 0 and not self.stale:
                current = self.value
                if current is None or self._better(value, current):
                    self.value = value
        else:
            del counts[value]
            if value is self.value or value == self.value:
                self.stale = True

    def result(self) -> Any:
        if self.stale:
            counts = self.counts
            pick = min if self.smallest else max
            if not counts:
                self.value = None
            elif self.key is not None:
                self.value = pick(counts, key=self.key)
            else:
                try:
                    self.value = pick(counts)
                except decimal.InvalidOperation:
                    self.value = pick(counts, key=self.fallback)
            self.stale = False
        return self.value


def _new_state(agg: Aggregate) -> Any:
    if agg.func in ("min", "max"):
        # PostgreSQL's order where Python's differs (NaN above all numbers, arrays, jsonb).
        plain = agg.type in ("int2", "int4", "int8", "text", "date", "timestamp", "timestamptz")
        if agg.type == "numeric":  # Python's order unless a NaN makes Decimal refuse to compare
            return _Extreme(agg.func == "min", None, sort_key(agg.type))
        return _Extreme(agg.func == "min", None if plain else sort_key(agg.type))
    if agg.distinct:
        return {}
    if agg.func == "count":
        return [0]
    return [0, 0]  # sum, count of non-null values


class ViewEngine:
    def __init__(self, plan: ViewPlan) -> None:
        exact_decimals()
        self.plan = plan
        self.inputs = plan.inputs
        self.tables: dict[str, _Table] = {}
        for inp in plan.inputs:
            t = self.tables.get(inp.table.qualified)
            if t is None:
                types = [inp.types[c] for c in inp.columns]
                t = _Table(
                    qualified=inp.table.qualified,
                    topic=inp.table.topic,
                    source=inp.table.source,
                    columns=inp.columns,
                    types=types,
                    decoders=[
                        decoder(ty, _typmod(inp, c))
                        for ty, c in zip(types, inp.columns, strict=True)
                    ],
                    inputs=[],
                )
                self.tables[t.qualified] = t
            t.inputs.append(inp.index)
        self.by_topic = {t.topic: t for t in self.tables.values()}
        joins = plan.joins
        self._left_arr: list[dict[Any, dict[Tup, int]]] = [{} for _ in joins]
        self._right_index: list[dict[Any, dict[Row, None]]] = [{} for _ in joins]
        self._left_key = [_key_fn(j.left_keys) for j in joins]
        self._right_key = [_key_fn(j.right_keys) for j in joins]
        self._filters = [inp.filter.fn if inp.filter else None for inp in plan.inputs]
        self._where = plan.where.fn if plan.where else None
        self._outputs = [o.fn for o in plan.outputs]
        self._out_encoders = [encoder(c.type) for c in plan.columns]
        self._key_fields = plan.key
        self._key_encoders = [self._key_encoder(s) for s in plan.key_sources]
        self._groups: dict[Any, _Group] = {}
        self._group_key = _tuple_fn([g.fn for g in plan.group_by])
        self._updaters = [_updater(a) for a in plan.aggregates]
        self._distinct: dict[Row, int] = {}
        self._pending: dict[Any, Any] = {}
        self._dirty: dict[str, dict[str, tuple[Pos, Row | None]]] = {}
        self.events_in = 0
        self.events_skipped = 0
        self.last_commit_ts_ms: int | None = None
        self.applied_lsn: dict[str, int] = {}
        if plan.grouped and not plan.group_by:
            self._groups[()] = _Group(plan.aggregates)
            self._pending[()] = True

    def _key_encoder(self, source: tuple[str, int]) -> Callable[[Any], Any]:
        kind, pos = source
        if kind == "group":
            return encoder(self.plan.group_by[pos].type)
        if kind == "output":
            return self._out_encoders_at(pos)
        inp = self.inputs[int(kind[2:])]
        return encoder(inp.types[inp.columns[pos]])

    def _out_encoders_at(self, pos: int) -> Callable[[Any], Any]:
        return encoder(self.plan.columns[pos].type)

    # --- input ----------------------------------------------------------------------------

    def apply(self, topic: str, key: bytes | None, value: dict[str, Any]) -> bool:
        """Apply one change event of ``topic``; False when it was a duplicate and skipped.

        Raises:
            ViewError: the event does not fit the table (a missing column, a bad value).
        """
        table = self.by_topic[topic]
        pos = event_position(value)
        op = value["op"]
        self.events_in += 1
        table.events += 1
        if table.truncated is not None and pos <= table.truncated:
            self.events_skipped += 1
            return False
        source = value["source"]
        if op == "t":
            self._truncate(table, pos)
            self._note_applied(table, source)
            return True
        if key is None:
            raise ViewError(f"an event of {table.qualified} has no key")
        pk = key.decode()
        current = table.rows.get(pk)
        if current is not None and pos <= current[0]:
            self.events_skipped += 1
            return False
        old = current[1] if current is not None else None
        if op == "d":
            new = None
        else:
            after = value.get("after")
            if after is None:
                raise ViewError(f"a {op!r} event of {table.qualified} has no 'after'")
            new = self._decode(table, after, old)
        table.rows[pk] = (pos, new)
        table.applied += 1
        self._dirty.setdefault(table.qualified, {})[pk] = (pos, new)
        self._note_applied(table, source)
        if old != new:
            self._change(table, old, new)
        return True

    def _note_applied(self, table: _Table, source: dict[str, Any]) -> None:
        ts = source.get("ts_ms")
        if ts is not None:
            self.last_commit_ts_ms = int(ts)

    def _decode(self, table: _Table, after: dict[str, Any], old: Row | None) -> Row:
        values: list[Any] = []
        for i, (column, decode) in enumerate(zip(table.columns, table.decoders, strict=True)):
            try:
                raw = after[column]
            except KeyError:
                raise ViewError(
                    f"column {column} of {table.qualified} is missing from its change events "
                    "(was it dropped or renamed?)"
                ) from None
            if raw is None:
                values.append(None)
            elif raw == UNAVAILABLE_VALUE:
                if old is None:
                    raise ViewError(
                        f"column {column} of {table.qualified} arrived as an unchanged TOAST "
                        "value and its old value is unknown; set REPLICA IDENTITY FULL"
                    )
                values.append(old[i])
            else:
                try:
                    values.append(decode(raw))
                except (ValueError, TypeError, decimal.InvalidOperation) as exc:
                    raise ViewError(
                        f"column {column} of {table.qualified}: cannot read {type(raw).__name__} "
                        f"value as {table.types[i]} ({exc})"
                    ) from None
        return tuple(values)

    def _truncate(self, table: _Table, pos: Pos) -> None:
        table.truncated = pos
        dirty = self._dirty.setdefault(table.qualified, {})
        for pk, (row_pos, row) in list(table.rows.items()):
            if row is not None and row_pos < pos:
                table.rows[pk] = (pos, None)
                dirty[pk] = (pos, None)
                self._change(table, row, None)

    def load(
        self, qualified: str, rows: Iterable[tuple[str, Pos, Row | None]], truncated: Pos | None
    ) -> None:
        """Restore a table's committed rows (at start-up); call :meth:`drain` after all loads."""
        table = self.tables[qualified]
        table.truncated = truncated
        for pk, pos, row in rows:
            table.rows[pk] = (pos, row)
            if row is not None:
                self._change(table, None, row)

    def _change(self, table: _Table, old: Row | None, new: Row | None) -> None:
        for index in table.inputs:
            f = self._filters[index]
            o = old if old is not None and (f is None or f(old) is True) else None
            n = new if new is not None and (f is None or f(new) is True) else None
            if o is None and n is None:
                continue
            if index == 0:
                delta: dict[Tup, int] = {}
                if o is not None:
                    delta[(o,)] = -1
                if n is not None:
                    delta[(n,)] = delta.get((n,), 0) + 1
                self._propagate(0, delta)
            else:
                self._change_right(index - 1, o, n)

    # --- joins ----------------------------------------------------------------------------

    def _outputs_of(self, j: int, t: Tup, k: Any) -> list[Tup]:
        join = self.plan.joins[j]
        out: list[Tup] = []
        if k is not None:
            matches = self._right_index[j].get(k)
            if matches:
                residual = join.residual.fn if join.residual else None
                for r in matches:
                    candidate = (*t, r)
                    if residual is None or residual(candidate) is True:
                        out.append(candidate)
        if not out and join.kind == "left":
            out.append((*t, None))
        return out

    def _propagate(self, step: int, delta: dict[Tup, int]) -> None:
        for j in range(step, len(self.plan.joins)):
            arr = self._left_arr[j]
            left_key = self._left_key[j]
            out: dict[Tup, int] = {}
            for t, m in delta.items():
                if m == 0:
                    continue
                k = left_key(t)
                if k is not None:
                    bucket = arr.setdefault(k, {})
                    c = bucket.get(t, 0) + m
                    if c:
                        bucket[t] = c
                    else:
                        del bucket[t]
                        if not bucket:
                            del arr[k]
                for o in self._outputs_of(j, t, k):
                    out[o] = out.get(o, 0) + m
            delta = out
        self._final(delta)

    def _change_right(self, j: int, old: Row | None, new: Row | None) -> None:
        index = self._right_index[j]
        right_key = self._right_key[j]
        ko = right_key(old) if old is not None else None
        kn = right_key(new) if new is not None else None
        lefts: dict[Tup, tuple[int, Any]] = {}
        for k in {ko, kn} - {None}:
            for t, m in self._left_arr[j].get(k, {}).items():
                lefts[t] = (m, k)
        before = {t: self._outputs_of(j, t, k) for t, (_, k) in lefts.items()}
        if ko is not None and old is not None:
            bucket = index[ko]
            del bucket[old]
            if not bucket:
                del index[ko]
        if kn is not None and new is not None:
            index.setdefault(kn, {})[new] = None
        delta: dict[Tup, int] = {}
        for t, (m, k) in lefts.items():
            for o in before[t]:
                delta[o] = delta.get(o, 0) - m
            for o in self._outputs_of(j, t, k):
                delta[o] = delta.get(o, 0) + m
        if delta:
            self._propagate(j + 1, delta)

    # --- the last operator: projection, DISTINCT or GROUP BY ----------------------------

    def _final(self, delta: dict[Tup, int]) -> None:
        where = self._where
        plan = self.plan
        for t, m in delta.items():
            if m == 0 or (where is not None and where(t) is not True):
                continue
            if plan.grouped:
                self._aggregate(t, m)
            elif plan.distinct:
                row = tuple(f(t) for f in self._outputs)
                before = self._distinct.get(row, 0)
                after = before + m
                if after:
                    self._distinct[row] = after
                else:
                    del self._distinct[row]
                if row not in self._pending:
                    self._pending[row] = before > 0
            else:
                key = tuple((t[int(kind[2:])] or _NULLS)[pos] for kind, pos in plan.key_sources)
                if m > 0:
                    self._pending[key] = tuple(f(t) for f in self._outputs)
                else:
                    self._pending[key] = None

    def _aggregate(self, t: Tup, m: int) -> None:
        gkey = self._group_key(t)
        group = self._groups.get(gkey)
        if group is None:
            group = self._groups[gkey] = _Group(self.plan.aggregates)
        group.count += m
        for update, state in zip(self._updaters, group.states, strict=True):
            if update is not None:
                update(state, t, m)
        self._pending[gkey] = True

    # --- output -----------------------------------------------------------------------------

    def drain(self) -> list[tuple[bytes, bytes | None]]:
        """The view rows changed since the last drain: ``(key JSON, row JSON or None)``."""
        pending, self._pending = self._pending, {}
        out: list[tuple[bytes, bytes | None]] = []
        plan = self.plan
        if plan.grouped:
            for gkey in pending:
                out.append(self._group_row(gkey))
        elif plan.distinct:
            for row, was_present in pending.items():
                present = row in self._distinct
                if present != was_present:
                    out.append((self._key_bytes(row), self._row_bytes(row) if present else None))
        else:
            for key, row in pending.items():
                out.append(
                    (self._key_bytes(key), self._row_bytes(row) if row is not None else None)
                )
        return out

    def _group_row(self, gkey: Any) -> tuple[bytes, bytes | None]:
        plan = self.plan
        group = self._groups.get(gkey)
        key = self._key_bytes(gkey)
        if group is None:
            return key, None
        if group.count == 0 and plan.group_by:
            del self._groups[gkey]
            return key, None
        values = tuple(
            _result(a, s, group.count) for a, s in zip(plan.aggregates, group.states, strict=True)
        )
        ctx = (gkey, values)
        if plan.having is not None and plan.having.fn(ctx) is not True:
            return key, None
        return key, self._row_bytes(tuple(f(ctx) for f in self._outputs))

    def _key_bytes(self, key: Row) -> bytes:
        return orjson.dumps(
            {n: enc(v) for n, enc, v in zip(self._key_fields, self._key_encoders, key, strict=True)}
        )

    def _row_bytes(self, row: Row) -> bytes:
        columns = self.plan.columns
        return orjson.dumps(
            {c.name: enc(v) for c, enc, v in zip(columns, self._out_encoders, row, strict=True)}
        )

    def take_dirty(self) -> dict[str, dict[str, tuple[Pos, Row | None]]]:
        """The base rows written since the last call, per table: to commit with the offsets."""
        dirty, self._dirty = self._dirty, {}
        return dirty


_NULLS: tuple[None, ...] = (None,) * 256


def _typmod(inp: Input, column: str) -> int:
    for c in inp.table.columns:
        if c.name == column:
            return c.typmod
    return -1


def _key_fn(parts: tuple[Any, ...]) -> Callable[[Any], Any]:
    fns = [p.fn for p in parts]
    if len(fns) == 1:
        (fn,) = fns

        def one(ctx: Any) -> Any:
            return fn(ctx)

        return one

    def many(ctx: Any) -> Any:
        values = tuple(f(ctx) for f in fns)
        return None if None in values else values

    return many


_NAN_DECIMAL = decimal.Decimal("NaN")
_NAN_FLOAT = float("nan")


def _nan(value: Any) -> Any:
    """The one NaN object of its type.

    PostgreSQL counts NaN equal to NaN; a dict finds NaN only as the same object (NaN is never
    equal to itself in Python).
    """
    return _NAN_DECIMAL if isinstance(value, decimal.Decimal) else _NAN_FLOAT


def _tuple_fn(fns: list[Callable[[Any], Any]]) -> Callable[[Any], tuple[Any, ...]]:
    """``ctx -> tuple(f(ctx) for f in fns)``, without a generator for the common short cases."""
    if not fns:
        return lambda ctx: ()
    if len(fns) == 1:
        (a,) = fns
        return lambda ctx: (a(ctx),)
    if len(fns) == 2:
        a, b = fns
        return lambda ctx: (a(ctx), b(ctx))
    return lambda ctx: tuple(f(ctx) for f in fns)


Updater = Callable[[Any, Tup, int], None]


def _updater(agg: Aggregate) -> Updater | None:
    """How one tuple entering (``m`` = 1) or leaving (-1) a group changes an aggregate's state."""
    if agg.arg is None:
        return None  # count(*) is the group's count
    arg = agg.arg.fn
    if agg.func in ("min", "max"):

        def extreme(state: Any, t: Tup, m: int) -> None:
            value = arg(t)
            if value is not None:
                state.update(value if value == value else _nan(value), m)

        return extreme
    if agg.distinct:

        def multiset(state: Any, t: Tup, m: int) -> None:
            value = arg(t)
            if value is not None:
                if value != value:
                    value = _nan(value)
                c = state.get(value, 0) + m
                if c:
                    state[value] = c
                else:
                    del state[value]

        return multiset
    if agg.func == "count":

        def count(state: Any, t: Tup, m: int) -> None:
            if arg(t) is not None:
                state[0] += m

        return count

    def total(state: Any, t: Tup, m: int) -> None:
        value = arg(t)
        if value is not None:
            state[0] += value if m == 1 else value * m
            state[1] += m

    return total


def _result(agg: Aggregate, state: Any, count: int) -> Any:
    func = agg.func
    if agg.arg is None:
        return count
    if isinstance(state, _Extreme):
        return state.result()
    if isinstance(state, dict):  # DISTINCT
        values = list(state)
        if func == "count":
            return len(values)
        if not values:
            return None
        return _sum_avg(agg, sum(values), len(values))
    if func == "count":
        return state[0]
    if state[1] == 0:
        return None
    return _sum_avg(agg, state[0], state[1])


def _sum_avg(agg: Aggregate, total: Any, n: int) -> Any:
    if agg.func == "sum":
        if agg.result_type == "numeric":
            return decimal.Decimal(total)
        if agg.result_type in ("float4", "float8"):
            return float(total)
        return total
    if agg.result_type == "float8":
        return float(total) / n
    try:
        return numeric_div(decimal.Decimal(total), decimal.Decimal(n))
    except decimal.DivisionByZero as exc:  # pragma: no cover - n > 0 here
        raise EvalError(str(exc)) from None


# --- persistence of base rows (the runtime's durable store) --------------------------------


def _to_json(value: Any) -> Any:
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"f": repr(value)}
    if isinstance(value, decimal.Decimal):
        return {"d": str(value)}
    if isinstance(value, datetime):
        return {"dt": value.isoformat()}
    if isinstance(value, date):
        return {"da": value.isoformat()}
    if isinstance(value, time):
        return {"t": value.isoformat()}
    if isinstance(value, timedelta):
        return {"td": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, bytes):
        return {"b": base64.b64encode(value).decode()}
    if isinstance(value, list):
        return {"l": [_to_json(v) for v in value]}
    if isinstance(value, dict):
        return {"j": value}
    raise TypeError(f"cannot store a {type(value).__name__}")


def _from_json(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    ((tag, v),) = value.items()
    if tag == "d":
        return decimal.Decimal(v)
    if tag == "f":
        return float(v)
    if tag == "dt":
        return datetime.fromisoformat(v)
    if tag == "da":
        return date.fromisoformat(v)
    if tag == "t":
        return time.fromisoformat(v)
    if tag == "td":
        return timedelta(days=v[0], seconds=v[1], microseconds=v[2])
    if tag == "b":
        return base64.b64decode(v)
    if tag == "l":
        return [_from_json(x) for x in v]
    return v  # "j": a JSON document


_PLAIN = frozenset({int, str, bool, type(None)})


def dump_row(pos: Pos, row: Row | None) -> bytes:
    """A base row as the durable store keeps it (values are tagged by their Python type)."""
    if row is None:
        return orjson.dumps([pos[0], pos[1], None])
    plain = _PLAIN
    values = [v if type(v) in plain else _to_json(v) for v in row]
    return orjson.dumps([pos[0], pos[1], values])


def load_row(raw: bytes) -> tuple[Pos, Row | None]:
    commit, lsn, values = orjson.loads(raw)
    if values is None:
        return (commit, lsn), None
    return (commit, lsn), tuple(v if type(v) is not dict else _from_json(v) for v in values)
