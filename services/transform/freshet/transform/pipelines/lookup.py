"""The current rows of the tables a pipeline looks up, kept from their change topics.

Per table, the rows by primary key (:func:`~freshet.common.pipelines.values.lookup_key`), each
with the source position that wrote it and only the columns the lookup nodes take, in the
change-event encoding (a deleted row keeps its position). An event at or before a row's position
is a replay and is skipped, so replaying a batch after a crash leaves the same state. The task
commits :meth:`LookupTables.take_dirty` with the consumed offsets, atomically, in its store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from freshet.common.events import UNAVAILABLE_VALUE
from freshet.common.pipelines import PipelinePlan
from freshet.common.pipelines.values import lookup_key
from freshet.common.sql.expr import EvalError
from freshet.transform.views.engine import event_position

Pos = tuple[int, int]
Fields = dict[str, Any]


@dataclass
class _Table:
    qualified: str
    topic: str
    key_columns: tuple[str, ...]
    key_types: tuple[str, ...]
    key_decoders: tuple[Callable[[Any], Any], ...]
    columns: tuple[str, ...]
    rows: dict[str, tuple[Pos, Fields | None]] = field(default_factory=dict)


def store_table(qualified: str) -> str:
    """The name of a looked-up table's rows in the pipeline's store."""
    return f"lookup:{qualified}"


class LookupTables:
    def __init__(self, plan: PipelinePlan) -> None:
        self._tables: dict[str, _Table] = {}
        for qualified, table in plan.lookup_tables.items():
            columns: dict[str, None] = {}
            key_types: tuple[str, ...] = ()
            key_decoders: tuple[Callable[[Any], Any], ...] = ()
            for node_id in plan.lookups[qualified]:
                lookup = plan.nodes[node_id].lookup
                assert lookup is not None
                key_types, key_decoders = lookup.key_types, lookup.key_decoders
                for column in lookup.outputs:
                    columns.setdefault(column, None)
            self._tables[qualified] = _Table(
                qualified,
                table.topic,
                table.primary_key,
                key_types,
                key_decoders,
                tuple(columns),
            )
        self.by_topic = {t.topic: t for t in self._tables.values()}
        self._dirty: dict[str, dict[str, tuple[Pos, Fields | None]]] = {}

    @property
    def tables(self) -> list[str]:
        return list(self._tables)

    def get(self, qualified: str, key: str | None) -> Fields | None:
        """The looked-up columns of the current row with ``key``, or None."""
        if key is None:
            return None
        found = self._tables[qualified].rows.get(key)
        return None if found is None else found[1]

    def apply(self, topic: str, key: bytes | None, value: dict[str, Any]) -> bool:
        """Apply a change event of a looked-up table; False when it was a replay and skipped.

        Raises:
            EvalError: the event does not fit the table (no key, a key column missing or
                unreadable).
        """
        table = self.by_topic[topic]
        pos = event_position(value)
        dirty = self._dirty.setdefault(table.qualified, {})
        if value["op"] == "t":
            for pk, (row_pos, row) in list(table.rows.items()):
                if row is not None and row_pos < pos:
                    table.rows[pk] = dirty[pk] = (pos, None)
            return True
        pk = self._key(table, key)
        current = table.rows.get(pk)
        if current is not None and pos <= current[0]:
            return False
        if value["op"] == "d":
            new = None
        else:
            after = value.get("after")
            if not isinstance(after, dict):
                raise EvalError(f"a {value['op']!r} event of {table.qualified} has no 'after'")
            old = current[1] if current is not None else None
            new = {}
            for column in table.columns:
                raw = after.get(column)
                if raw == UNAVAILABLE_VALUE:
                    raw = old.get(column) if old is not None else None
                new[column] = raw
        table.rows[pk] = dirty[pk] = (pos, new)
        return True

    @staticmethod
    def _key(table: _Table, key: bytes | None) -> str:
        if key is None:
            raise EvalError(f"an event of {table.qualified} has no key")
        try:
            fields = orjson.loads(key)
            values = [
                decode(fields[c])
                for c, decode in zip(table.key_columns, table.key_decoders, strict=True)
            ]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, ArithmeticError):
            raise EvalError(
                f"the key of an event of {table.qualified} is not its primary key "
                f"({', '.join(table.key_columns)})"
            ) from None
        found = lookup_key(values, table.key_types)
        if found is None:
            raise EvalError(f"an event of {table.qualified} has a NULL key")
        return found

    def load(self, qualified: str, rows: Iterable[tuple[str, bytes]]) -> None:
        """Restore a table's committed rows (at start-up)."""
        table = self._tables[qualified]
        for pk, raw in rows:
            commit, lsn, fields = orjson.loads(raw)
            table.rows[pk] = ((commit, lsn), fields)

    def take_dirty(self) -> dict[str, dict[str, bytes]]:
        """The rows changed since the last call, as the store keeps them (by store table)."""
        out = {
            store_table(qualified): {
                pk: orjson.dumps([pos[0], pos[1], fields]) for pk, (pos, fields) in rows.items()
            }
            for qualified, rows in self._dirty.items()
            if rows
        }
        self._dirty = {}
        return out

    def __len__(self) -> int:
        return sum(len(t.rows) for t in self._tables.values())
