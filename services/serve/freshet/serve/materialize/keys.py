"""Order-preserving byte encoding of SQL values, for Redis sorted sets ranged by lex.

``encode(values)`` of a tuple of values compares, byte by byte (``memcmp``, as Redis compares
members in ``ZRANGEBYLEX``), the way PostgreSQL's ``ORDER BY`` compares the tuples in ascending
order with ``NULLS LAST``. Values PostgreSQL holds equal encode equal (``1.0`` and ``1.00``,
``-0.0`` and ``0.0``), so the encoding is also the identity of a key.

Each value is a tag byte, ``0x01`` then the value, or ``0x02`` for NULL, followed by:

==========================  ===============================================================
type                        bytes
==========================  ===============================================================
bool                        ``00`` / ``01``
int2/4/8, date, time,       8-byte big-endian integer offset by 2^63 (dates: days from
timetz, timestamp(tz)       0001-01-01; times: microseconds, timetz in UTC; timestamps:
                            microseconds from 0001-01-01 UTC)
interval                    16-byte big-endian microseconds offset by 2^127
float4/8                    the IEEE-754 double with its sign bit flipped (all bits when
                            negative); NaN above +Infinity
numeric                     a class byte (-Inf, negative, zero, positive, +Inf, NaN), then for
                            non-zero finite values the decimal exponent (8 bytes) and the
                            significant digits in ASCII ending with ``00``; both inverted for
                            negative values (digits end with ``FF``)
text, uuid, bytea           the bytes (UTF-8), ``00`` escaped as ``00 FF``, ending with ``00``
json, jsonb                 the canonical JSON text (sorted keys) as text: a stable order that
                            is **not** PostgreSQL's
arrays                      the flattened elements, each tagged as above, ``00``, then the
                            number of dimensions and each dimension's length
==========================  ===============================================================

Every encoding is self-delimiting, so tuples concatenate without separators and an encoded
prefix of a tuple is a byte prefix of its encoding.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import orjson

from freshet.common.sql.types import is_array

Encode = Callable[[Any], bytes]
"""Encodes one non-NULL value (without its tag)."""

VALUE, NULL = b"\x01", b"\x02"
_OFFSET64 = 1 << 63
_OFFSET128 = 1 << 127
_MASK64 = (1 << 64) - 1
_DATE0 = date(1, 1, 1)
_TS0 = datetime(1, 1, 1)
_TSTZ0 = datetime(1, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def _int64(value: int) -> bytes:
    return (value + _OFFSET64).to_bytes(8, "big")


def _bool(value: Any) -> bytes:
    return b"\x01" if value else b"\x00"


def _int(value: Any) -> bytes:
    return _int64(int(value))


def _float(value: Any) -> bytes:
    value = float(value)
    if value != value:
        return b"\xff" * 8
    if value == 0.0:
        value = 0.0  # -0.0 equals 0.0
    (bits,) = struct.unpack(">Q", struct.pack(">d", value))
    bits = bits ^ _MASK64 if bits >> 63 else bits | (1 << 63)
    return bits.to_bytes(8, "big")


_NUM_NEG_INF, _NUM_NEG, _NUM_ZERO, _NUM_POS, _NUM_POS_INF, _NUM_NAN = (
    b"\x01",
    b"\x02",
    b"\x03",
    b"\x04",
    b"\x05",
    b"\x06",
)


def _numeric(value: Any) -> bytes:
    if not isinstance(value, Decimal):
        value = Decimal(value)
    if value.is_nan():
        return _NUM_NAN
    if value.is_infinite():
        return _NUM_NEG_INF if value < 0 else _NUM_POS_INF
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits)).lstrip("0")
    if not text:
        return _NUM_ZERO
    stripped = text.rstrip("0")
    # value = 0.d1d2... * 10^adjusted: a larger adjusted exponent is a larger magnitude.
    adjusted = exponent + len(digits) - (len(digits) - len(text))
    if sign:
        inverted = bytes(0xFF - b for b in stripped.encode())
        return _NUM_NEG + (_MASK64 - (adjusted + _OFFSET64)).to_bytes(8, "big") + inverted + b"\xff"
    return _NUM_POS + (adjusted + _OFFSET64).to_bytes(8, "big") + stripped.encode() + b"\x00"


def _bytes(value: bytes) -> bytes:
    return value.replace(b"\x00", b"\x00\xff") + b"\x00"


def _text(value: Any) -> bytes:
    return _bytes(str(value).encode())


def _bytea(value: Any) -> bytes:
    return _bytes(bytes(value))


def _json(value: Any) -> bytes:
    return _bytes(orjson.dumps(value, option=orjson.OPT_SORT_KEYS))


def _date(value: date) -> bytes:
    return _int64((value - _DATE0).days)


def _micros(delta: timedelta) -> int:
    return delta // _MICRO


def _time(value: time) -> bytes:
    micros = ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000
    micros += value.microsecond
    offset = value.utcoffset()
    if offset is not None:
        micros -= _micros(offset)
    return _int64(micros)


def _timestamp(value: datetime) -> bytes:
    if value.tzinfo is not None:
        return _int64(_micros(value - _TSTZ0))
    return _int64(_micros(value - _TS0))


def _interval(value: timedelta) -> bytes:
    return (_micros(value) + _OFFSET128).to_bytes(16, "big")


_SCALARS: dict[str, Encode] = {
    "bool": _bool,
    "int2": _int,
    "int4": _int,
    "int8": _int,
    "numeric": _numeric,
    "float4": _float,
    "float8": _float,
    "date": _date,
    "time": _time,
    "timetz": _time,
    "timestamp": _timestamp,
    "timestamptz": _timestamp,
    "interval": _interval,
    "bytea": _bytea,
    "json": _json,
    "jsonb": _json,
}


def _array(element: Encode) -> Encode:
    def encode(value: Any) -> bytes:
        out = bytearray()
        shape: list[int] = []

        def walk(items: list[Any], depth: int) -> None:
            if len(shape) <= depth:
                shape.append(len(items))
            for item in items:
                if isinstance(item, list):
                    walk(item, depth + 1)
                elif item is None:
                    out.extend(NULL)
                else:
                    out.extend(VALUE)
                    out.extend(element(item))

        walk(value, 0)
        out.append(0)
        dims = shape if any(shape) else []
        out.append(len(dims))
        for length in dims:
            out.extend(length.to_bytes(4, "big"))
        return bytes(out)

    return encode


def value_encoder(type_: str) -> Encode:
    """The encoding of non-NULL Python values of ``type_`` (as :mod:`.values` decodes them)."""
    if is_array(type_):
        return _array(value_encoder(type_[:-2]))
    return _SCALARS.get(type_, _text)


def field_encoder(type_: str) -> Callable[[Any], bytes]:
    """One tagged field: ``VALUE`` and the value, or ``NULL``."""
    encode = value_encoder(type_)

    def tagged(value: Any) -> bytes:
        return NULL if value is None else VALUE + encode(value)

    return tagged


def tuple_encoder(types: Sequence[str]) -> Callable[[Sequence[Any]], bytes]:
    """The encoding of tuples of values of ``types``: the tagged fields concatenated."""
    fields = [field_encoder(t) for t in types]

    def encode(values: Sequence[Any]) -> bytes:
        return b"".join(f(v) for f, v in zip(fields, values, strict=True))

    return encode


# --- splitting encodings -------------------------------------------------------------------

_FIXED = {
    "bool": 1,
    "int2": 8,
    "int4": 8,
    "int8": 8,
    "float4": 8,
    "float8": 8,
    "date": 8,
    "time": 8,
    "timetz": 8,
    "timestamp": 8,
    "timestamptz": 8,
    "interval": 16,
}


def _terminated(data: bytes, pos: int) -> int:
    """The end of an escaped byte string at ``pos``: after the ``00`` not followed by ``FF``."""
    while True:
        at = data.index(b"\x00", pos)
        if at + 1 < len(data) and data[at + 1] == 0xFF:
            pos = at + 2
            continue
        return at + 1


def _numeric_end(data: bytes, pos: int) -> int:
    kind = data[pos : pos + 1]
    if kind == _NUM_POS:
        return data.index(b"\x00", pos + 9) + 1
    if kind == _NUM_NEG:
        return data.index(b"\xff", pos + 9) + 1
    return pos + 1


def field_end(type_: str) -> Callable[[bytes, int], int]:
    """Where the tagged field of ``type_`` that starts at ``pos`` in ``data`` ends.

    Every scalar encoding is self-delimiting; an index entry (the field's encoding followed by
    the row's key) is split with it. Arrays are not indexed and have no splitter.

    Raises:
        ValueError: ``type_`` is an array.
    """
    if is_array(type_):
        raise ValueError(f"arrays are not indexed: {type_}")
    fixed = _FIXED.get(type_)

    def end(data: bytes, pos: int) -> int:
        if data[pos : pos + 1] == NULL:
            return pos + 1
        pos += 1
        if fixed is not None:
            return pos + fixed
        if type_ == "numeric":
            return _numeric_end(data, pos)
        return _terminated(data, pos)

    return end
