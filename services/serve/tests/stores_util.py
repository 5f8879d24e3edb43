"""Helpers of the store tests: specs and records."""

from __future__ import annotations

from typing import Any

import orjson

from freshet.common.schemas import KeyColumn, OutputColumn, ViewSpec
from freshet.serve.materialize.batch import Batch
from freshet.serve.materialize.layout import Change, ViewLayout


def spec(
    name: str,
    columns: dict[str, str],
    key: dict[str, tuple[str, bool]],
    generation: int = 1,
    indexes: tuple[str, ...] = (),
) -> ViewSpec:
    """A view spec: ``key`` maps a key field to (type, nullable); ``indexes`` as control's."""
    return ViewSpec(
        name=name,
        sql="-",
        key=tuple(key),
        columns=tuple(OutputColumn(name=n, type=t) for n, t in columns.items()),
        tables=("s.public.t",),
        generation=generation,
        key_columns=tuple(KeyColumn(name=n, type=t, nullable=nl) for n, (t, nl) in key.items()),
        indexes=indexes,
    )


class Records:
    """Builds view-topic records of one layout, with increasing offsets per partition."""

    def __init__(self, layout: ViewLayout) -> None:
        self.layout = layout
        self.decode = layout.key_decoder()
        self.next: dict[int, int] = {}

    def change(
        self, key: dict[str, Any], row: dict[str, Any] | None, partition: int = 0, lsn: int = 1
    ) -> Change:
        offset = self.next.get(partition, 0)
        self.next[partition] = offset + 1
        values, encoded = self.decode(orjson.dumps(key))
        raw = None if row is None else orjson.dumps(row)
        return Change(partition, offset, encoded, values, raw, orjson.dumps({"src": lsn}))

    def batch(self, changes: list[Change], stored: dict[int, int]) -> Batch:
        return Batch.of(changes, stored)
