"""Field values inside pipelines: decoding, encoding back into change events, lookup keys.

Rows travel through a pipeline as the ``before``/``after`` dicts of Debezium envelopes, in the
JSON value mapping ingest writes (:mod:`freshet.common.events`). A field an expression reads is
decoded with :func:`freshet.common.sql.types.decoder`; a field a node computes is encoded with
:func:`event_encoder`, the inverse, so that every field of an output event - passed through or
computed - reads the way a Debezium consumer expects (a ``date`` as days since the epoch, a
``timestamp`` as microseconds, ``numeric`` as a decimal string...).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import orjson

from freshet.common.sql import types as t

_EPOCH_DATE = date(1970, 1, 1)
_EPOCH = datetime(1970, 1, 1)
_MICROS = timedelta(microseconds=1)


@dataclass(frozen=True)
class FieldType:
    """A field's canonical SQL type and the modifier that changes how it is encoded.

    Only ``timestamp(0..3)`` is encoded differently (milliseconds, as Debezium does), so the
    modifier is normalised: 3 for those, -1 for everything else.
    """

    type: str
    typmod: int = -1

    @classmethod
    def of(cls, type: str, typmod: int = -1) -> FieldType:
        base = type[:-2] if t.is_array(type) else type
        millis = base == t.TIMESTAMP and 0 <= typmod <= 3
        return cls(type, 3 if millis else -1)

    def __str__(self) -> str:
        return t.sql_name(self.type)


def _numeric(value: Decimal) -> str:
    encode = t.encoder(t.NUMERIC)
    text: str = encode(value)
    return text


def _float(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    return value


def _date(value: date) -> int:
    return (value - _EPOCH_DATE).days


def _time(value: time) -> int:
    return ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond


def _timestamp(unit: int) -> Callable[[datetime], int]:
    def encode(value: datetime) -> int:
        return (value - _EPOCH) // _MICROS // unit

    return encode


def _timestamptz(value: datetime) -> str:
    text = value.astimezone(UTC).replace(tzinfo=None).isoformat()
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text + "Z"


def _interval(value: timedelta) -> int:
    return value // _MICROS


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _bytea(value: bytes) -> str:
    return base64.b64encode(value).decode()


def _identity(value: Any) -> Any:
    return value


def _scalar(field: FieldType) -> Callable[[Any], Any]:
    base = field.type[:-2] if t.is_array(field.type) else field.type
    if base == t.TIMESTAMP:
        return _timestamp(1000 if field.typmod == 3 else 1)
    encoders: dict[str, Callable[[Any], Any]] = {
        t.NUMERIC: _numeric,
        t.FLOAT4: _float,
        t.FLOAT8: _float,
        t.DATE: _date,
        t.TIME: _time,
        t.TIMESTAMPTZ: _timestamptz,
        t.INTERVAL: _interval,
        t.JSON: _json,
        t.JSONB: _json,
        t.BYTEA: _bytea,
    }
    return encoders.get(base, _identity)


def event_encoder(field: FieldType) -> Callable[[Any], Any]:
    """The function turning a Python value of ``field``'s type into a change-event JSON value.

    The inverse of ``decoder(field.type, field.typmod)``; ``None`` stays ``None``.
    """
    convert = _scalar(field)
    if t.is_array(field.type):

        def each(value: Any) -> Any:
            if value is None:
                return None
            if isinstance(value, list):
                return [each(item) for item in value]
            return convert(value)

        return each

    def encode(value: Any) -> Any:
        return None if value is None else convert(value)

    return encode


_NUMBERS = frozenset({t.INT2, t.INT4, t.INT8, t.NUMERIC, t.FLOAT4, t.FLOAT8})


def comparable(probe: str, key: str) -> bool:
    """Whether a lookup probe of type ``probe`` can match a key column of type ``key``."""
    return probe == key or (probe in _NUMBERS and key in _NUMBERS)


def _canonical(value: Any, type: str) -> Any:
    if value is None:
        return None
    if type in _NUMBERS:
        number = Decimal(value) if not isinstance(value, Decimal) else value
        return "NaN" if number.is_nan() else str(number.normalize())
    encoded = t.encoder(type)(value)
    return encoded


def lookup_key(values: Sequence[Any], types: Sequence[str]) -> str | None:
    """The key of a lookup table's row by its primary-key values (Python values of ``types``).

    Equal values give equal keys whatever their width: ``5``, ``5.0`` and ``5.00`` are one key,
    as ``=`` finds them in PostgreSQL. ``None`` when a value is NULL (NULL matches nothing).
    """
    out = []
    for value, type in zip(values, types, strict=True):
        if value is None:
            return None
        out.append(_canonical(value, type))
    return orjson.dumps(out).decode()
