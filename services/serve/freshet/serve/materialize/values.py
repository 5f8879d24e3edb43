"""View-row values: from their JSON form on view topics back to Python, per SQL type.

Transform encodes every value with :func:`freshet.common.sql.types.encoder`; :func:`decoder`
is its inverse and gives the Python value that psycopg writes as the same PostgreSQL value (and
that :mod:`freshet.serve.materialize.keys` orders): numeric strings to ``Decimal`` (``"NaN"``,
``"Infinity"`` included), float strings ``"NaN"``/``"Infinity"``/``"-Infinity"`` to floats, ISO
dates and times to ``datetime`` objects (a timestamptz or timetz in UTC), ISO-8601 intervals to
``timedelta``, base64 to ``bytes``, arrays element-wise. Other types (bool, integers, text, uuid,
json) stay as JSON gave them, checked for their JSON type. ``None`` is SQL NULL.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from freshet.common.sql.types import is_array
from freshet.serve.exceptions import BadValueError

Decode = Callable[[Any], Any]

_INTERVAL = re.compile(
    r"^P(?:(?P<d>-?\d+)D)?(?:T(?:(?P<h>-?\d+)H)?(?:(?P<m>-?\d+)M)?"
    r"(?:(?P<s>-?\d+)(?:\.(?P<f>\d{1,6}))?S)?)?$"
)


def _float(value: Any) -> float:
    if isinstance(value, str):
        if value not in ("NaN", "Infinity", "-Infinity"):
            raise BadValueError(f"not a float: {value!r}")
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise BadValueError(f"not a float: {value!r}")
    return float(value)


def _numeric(value: Any) -> Decimal:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise BadValueError(f"not a numeric: {value!r}")
    try:
        return Decimal(value)
    except ArithmeticError:
        raise BadValueError(f"not a numeric: {value!r}") from None


def _date(value: Any) -> date:
    return date.fromisoformat(value)


def _time(value: Any) -> time:
    return time.fromisoformat(value)


def _timetz(value: Any) -> time:
    parsed = time.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _timestamp(value: Any) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is not None:
        raise BadValueError(f"a timestamp without time zone has one: {value!r}")
    return parsed


def _timestamptz(value: Any) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_interval(value: str) -> timedelta:
    """The inverse of :func:`freshet.common.sql.types.encode_interval` (``P1DT-2H3.5S``...)."""
    match = _INTERVAL.match(value) if isinstance(value, str) else None
    if match is None or value in ("P", "PT"):
        raise BadValueError(f"not an ISO-8601 interval: {value!r}")
    days, hours, minutes = (int(match[g] or 0) for g in ("d", "h", "m"))
    seconds = match["s"] or "0"
    micros = int((match["f"] or "").ljust(6, "0"))
    sign = -1 if seconds.startswith("-") else 1
    total = ((days * 24 + hours) * 60 + minutes) * 60_000_000
    total += int(seconds) * 1_000_000 + sign * micros
    return timedelta(microseconds=total)


def _bytea(value: Any) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (ValueError, TypeError):
        raise BadValueError(f"not base64: {value!r}") from None


def _identity(value: Any) -> Any:
    return value


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadValueError(f"not an integer: {value!r}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise BadValueError(f"not a boolean: {value!r}")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise BadValueError(f"not a string: {value!r}")
    return value


_SCALARS: dict[str, Decode] = {
    "bool": _bool,
    "int2": _int,
    "int4": _int,
    "int8": _int,
    "text": _str,
    "uuid": _str,
    "numeric": _numeric,
    "float4": _float,
    "float8": _float,
    "date": _date,
    "time": _time,
    "timetz": _timetz,
    "timestamp": _timestamp,
    "timestamptz": _timestamptz,
    "interval": parse_interval,
    "bytea": _bytea,
}


def _elementwise(convert: Decode) -> Decode:
    def decode(value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, list):
            raise BadValueError(f"not an array: {value!r}")
        return [
            decode(v) if isinstance(v, list) else (None if v is None else convert(v)) for v in value
        ]

    return decode


def decoder(type_: str) -> Decode:
    """The function turning the JSON value of a view-row field of ``type_`` into Python.

    Raises :class:`~freshet.serve.exceptions.BadValueError` (or ``ValueError``) on a value
    that is not of the type.
    """
    convert = _SCALARS.get(type_[:-2] if is_array(type_) else type_, _identity)
    if is_array(type_):
        return _elementwise(convert)

    def decode(value: Any) -> Any:
        return None if value is None else convert(value)

    return decode
