"""What serve needs to know about one view to store it: fields, key, types, indexed fields.

Built from the :class:`~freshet.common.schemas.ViewSpec` on ``freshet.control.views``. A record
of the view's topic decodes into a :class:`Change`: the view key (its values and its
order-preserving encoding, :mod:`.keys`) and the row JSON as transform wrote it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import orjson

from freshet.common.schemas import KeyColumn, OutputColumn, ViewSpec
from freshet.common.sql.types import is_ordered
from freshet.serve.exceptions import BadValueError
from freshet.serve.materialize.keys import field_encoder, tuple_encoder
from freshet.serve.materialize.values import decoder

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Change:
    """One record of a view topic, decoded.

    ``key`` is the order-preserving encoding of ``key_values`` (:mod:`.keys`); ``row`` is the
    row JSON as the topic carries it, ``None`` when the row left the view.
    """

    partition: int
    offset: int
    key: bytes
    key_values: tuple[Any, ...]
    row: bytes | None
    applied: bytes | None
    """The ``freshet.applied`` header: JSON ``{source: lsn}``."""


@dataclass(frozen=True)
class ViewLayout:
    """The fields of one view (one generation of it) as serve stores them.

    ``columns`` are the view's output columns; ``key`` its key fields, typed. A key field that is
    not an output column (``_key<n>``) is stored too, after the columns (``table_columns``).
    """

    name: str
    generation: int
    columns: tuple[OutputColumn, ...]
    key: tuple[KeyColumn, ...]
    indexes: tuple[str, ...] = ()
    """The columns the view asks serve to index (:attr:`ViewSpec.indexes`)."""

    @classmethod
    def of(cls, spec: ViewSpec) -> ViewLayout:
        by_name = {c.name: c for c in spec.columns}
        if spec.key_columns:
            key = spec.key_columns
        else:
            # A spec written before key_columns existed: a key field that is not an output column
            # has no known type; jsonb stores its JSON value as it is.
            key = tuple(
                KeyColumn(name=k, type=by_name[k].type if k in by_name else "jsonb")
                for k in spec.key
            )
            if any(k not in by_name for k in spec.key):
                log.warning(
                    "view %s: key types unknown, storing key-only fields as jsonb", spec.name
                )
        if tuple(k.name for k in key) != spec.key:
            raise BadValueError(f"view {spec.name}: key_columns do not match key {spec.key}")
        return cls(spec.name, spec.generation, spec.columns, key, spec.indexes)

    @property
    def key_names(self) -> tuple[str, ...]:
        return tuple(k.name for k in self.key)

    @property
    def key_only(self) -> tuple[KeyColumn, ...]:
        """Key fields that are not output columns."""
        names = {c.name for c in self.columns}
        return tuple(k for k in self.key if k.name not in names)

    @property
    def table_columns(self) -> tuple[OutputColumn, ...]:
        """Every stored field: the output columns, then the key-only fields."""
        return (*self.columns, *(OutputColumn(name=k.name, type=k.type) for k in self.key_only))

    @cached_property
    def indexed(self) -> tuple[OutputColumn, ...]:
        """Output columns with a Redis index: the view's ``indexes``, in their order.

        Not the first key column (the view's keys are in its order already), nor columns without
        an order (control refuses those; a spec written otherwise is served without them).
        """
        by_name = {c.name: c for c in self.columns}
        first_key = self.key[0].name if self.key else None
        out = []
        for name in dict.fromkeys(self.indexes):
            column = by_name.get(name)
            if column is None or not is_ordered(column.type):
                log.warning("view %s: no index on %r: not a column with an order", self.name, name)
            elif name != first_key:
                out.append(column)
        return tuple(out)

    def describe(self) -> dict[str, Any]:
        """The layout as JSON-able data (stored next to the data, for readers and for DDL)."""
        return {
            "generation": self.generation,
            "columns": [c.model_dump() for c in self.columns],
            "key": [k.model_dump() for k in self.key],
            "indexed": [c.name for c in self.indexed],
        }

    # --- codecs ---------------------------------------------------------------------------

    def key_decoder(self) -> Callable[[bytes], tuple[tuple[Any, ...], bytes]]:
        """Raw topic key (JSON object) -> (key values, encoded key)."""
        names = self.key_names
        decoders = [decoder(k.type) for k in self.key]
        encode = tuple_encoder([k.type for k in self.key])

        def decode(raw: bytes) -> tuple[tuple[Any, ...], bytes]:
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise BadValueError(f"view {self.name}: a key is not JSON") from None
            if not isinstance(obj, dict) or obj.keys() != set(names):
                got = sorted(obj) if isinstance(obj, dict) else obj
                raise BadValueError(f"view {self.name}: a key has the fields {got!r}, not {names}")
            values = tuple(d(obj[n]) for d, n in zip(decoders, names, strict=True))
            return values, encode(values)

        return decode

    def row_decoder(self) -> Callable[[bytes, tuple[Any, ...]], list[Any]]:
        """(row JSON, key values) -> the values of :attr:`table_columns`, in order."""
        columns = [(c.name, decoder(c.type)) for c in self.columns]
        key_positions = [self.key_names.index(k.name) for k in self.key_only]

        def decode(raw: bytes, key_values: tuple[Any, ...]) -> list[Any]:
            obj = orjson.loads(raw)
            if not isinstance(obj, dict):
                raise BadValueError(f"view {self.name}: a row is not a JSON object")
            out = [d(obj.get(n)) for n, d in columns]
            out.extend(key_values[p] for p in key_positions)
            return out

        return decode

    def index_encoder(self) -> Callable[[bytes], list[bytes]]:
        """Row JSON -> the encoded value of every indexed field (:attr:`indexed`), in order."""
        fields = [(c.name, decoder(c.type), field_encoder(c.type)) for c in self.indexed]

        def encode(raw: bytes) -> list[bytes]:
            obj = orjson.loads(raw)
            return [enc(dec(obj.get(name))) for name, dec, enc in fields]

        return encode
