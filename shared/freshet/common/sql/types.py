"""SQL value types: names, decoding from change events, encoding into view rows, ordering, numeric.

Every SQL value has a canonical type name (:data:`TYPES`, plus ``'<elem>[]'`` for arrays) and one
Python representation, used by the expression compiler and the view engine alike:

=============  ====================================================================
type           Python value
=============  ====================================================================
bool           ``bool``
int2/4/8       ``int`` (range-checked by the arithmetic)
numeric        ``decimal.Decimal`` with exponent <= 0 (its exponent is the display
               scale, as in PostgreSQL); ``NaN`` and ``±Infinity`` as Decimal's own
float4/float8  ``float`` (a float4 holds a value exactly representable in 32 bits)
text, uuid     ``str`` (uuid in PostgreSQL's lower-case form)
date           ``datetime.date``
time           ``datetime.time``
timetz         ``str``, ISO-8601 in UTC as ingest writes it (``'10:00:00Z'``)
timestamp      naive ``datetime.datetime``
timestamptz    aware ``datetime.datetime`` in UTC
interval       ``datetime.timedelta`` (ingest already counts a month as 30.4375 days)
json/jsonb     the parsed JSON value (dict, list, str, int, float, bool, None)
bytea          ``bytes``
arrays         ``list`` of element values (``None`` for NULL elements), nested for
               multi-dimensional arrays
=============  ====================================================================

SQL NULL is ``None`` everywhere. ``date``/``timestamp`` infinities and BC dates have no Python
value: decoding them raises :class:`EvalError`.
"""

from __future__ import annotations

import base64
import decimal
import functools
import math
import struct
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import orjson

from freshet.common.sql.errors import SqlError

BOOL, INT2, INT4, INT8, NUMERIC, FLOAT4, FLOAT8 = (
    "bool",
    "int2",
    "int4",
    "int8",
    "numeric",
    "float4",
    "float8",
)
TEXT, DATE, TIME, TIMETZ, TIMESTAMP, TIMESTAMPTZ, INTERVAL = (
    "text",
    "date",
    "time",
    "timetz",
    "timestamp",
    "timestamptz",
    "interval",
)
UUID, JSON, JSONB, BYTEA, UNKNOWN = "uuid", "json", "jsonb", "bytea", "unknown"

TYPES = (
    BOOL,
    INT2,
    INT4,
    INT8,
    NUMERIC,
    FLOAT4,
    FLOAT8,
    TEXT,
    DATE,
    TIME,
    TIMETZ,
    TIMESTAMP,
    TIMESTAMPTZ,
    INTERVAL,
    UUID,
    JSON,
    JSONB,
    BYTEA,
    UNKNOWN,
)
"""Every canonical scalar type name; ``'unknown'`` is an untyped literal or a bare NULL."""

INT_RANGES = {
    INT2: (-(2**15), 2**15 - 1),
    INT4: (-(2**31), 2**31 - 1),
    INT8: (-(2**63), 2**63 - 1),
}
INT_NAMES = {INT2: "smallint", INT4: "integer", INT8: "bigint"}


class EvalError(Exception):
    """A value PostgreSQL would refuse while evaluating an expression.

    Division by zero, integer out of range, invalid input for a cast... Pipelines send the
    event to their dead-letter topic; a view reports the error.
    """


# --- type names ------------------------------------------------------------------------------

_SCALAR_OIDS = {
    16: BOOL,
    17: BYTEA,
    20: INT8,
    21: INT2,
    23: INT4,
    26: INT8,  # oid: unsigned 32-bit, carried as an integer
    114: JSON,
    700: FLOAT4,
    701: FLOAT8,
    1082: DATE,
    1083: TIME,
    1114: TIMESTAMP,
    1184: TIMESTAMPTZ,
    1186: INTERVAL,
    1266: TIMETZ,
    1700: NUMERIC,
    2950: UUID,
    3802: JSONB,
    705: UNKNOWN,
}

_ARRAY_OIDS = {
    1000: 16,
    1001: 17,
    1002: 18,
    1003: 19,
    1016: 20,
    1005: 21,
    1007: 23,
    1009: 25,
    1028: 26,
    199: 114,
    143: 142,
    1021: 700,
    1022: 701,
    791: 790,
    1014: 1042,
    1015: 1043,
    1182: 1082,
    1183: 1083,
    1115: 1114,
    1185: 1184,
    1187: 1186,
    1270: 1266,
    1231: 1700,
    2951: 2950,
    3807: 3802,
}
"""Array type OID -> element type OID, the same built-in arrays that ingest decodes."""

TYPE_ALIASES = {
    "boolean": BOOL,
    "bool": BOOL,
    "smallint": INT2,
    "int2": INT2,
    "integer": INT4,
    "int": INT4,
    "int4": INT4,
    "bigint": INT8,
    "int8": INT8,
    "numeric": NUMERIC,
    "decimal": NUMERIC,
    "real": FLOAT4,
    "float4": FLOAT4,
    "double precision": FLOAT8,
    "float8": FLOAT8,
    "text": TEXT,
    "varchar": TEXT,
    "character varying": TEXT,
    "bpchar": TEXT,
    "char": TEXT,
    "character": TEXT,
    "name": TEXT,
    "citext": TEXT,
    "date": DATE,
    "time": TIME,
    "time without time zone": TIME,
    "timetz": TIMETZ,
    "time with time zone": TIMETZ,
    "timestamp": TIMESTAMP,
    "timestamp without time zone": TIMESTAMP,
    "timestamptz": TIMESTAMPTZ,
    "timestamp with time zone": TIMESTAMPTZ,
    "interval": INTERVAL,
    "uuid": UUID,
    "json": JSON,
    "jsonb": JSONB,
    "bytea": BYTEA,
}
"""SQL spellings of the supported types (as written in casts) -> canonical names."""

SQL_NAMES = {
    BOOL: "boolean",
    INT2: "smallint",
    INT4: "integer",
    INT8: "bigint",
    NUMERIC: "numeric",
    FLOAT4: "real",
    FLOAT8: "double precision",
    TEXT: "text",
    DATE: "date",
    TIME: "time without time zone",
    TIMETZ: "time with time zone",
    TIMESTAMP: "timestamp without time zone",
    TIMESTAMPTZ: "timestamp with time zone",
    INTERVAL: "interval",
    UUID: "uuid",
    JSON: "json",
    JSONB: "jsonb",
    BYTEA: "bytea",
    UNKNOWN: "unknown",
}


def sql_name(type: str) -> str:
    """The name PostgreSQL uses for ``type`` in its messages (``integer``, ``text[]``)."""
    if type.endswith("[]"):
        return sql_name(type[:-2]) + "[]"
    return SQL_NAMES[type]


def canonical_type(type_oid: int, typmod: int = -1) -> str:
    """The canonical name of the pg_type OID ``type_oid``.

    Other OIDs (varchar, enums, domains, citext...) are ``'text'``: ingest writes them as
    strings.
    """
    del typmod  # the modifier never changes the canonical type
    element = _ARRAY_OIDS.get(type_oid)
    if element is not None:
        return _SCALAR_OIDS.get(element, TEXT) + "[]"
    return _SCALAR_OIDS.get(type_oid, TEXT)


def is_array(type: str) -> bool:
    return type.endswith("[]")


UNORDERED = frozenset({"json", "jsonb", "bytea"})
"""Types serve gives no order to: fields of them (and arrays) cannot be indexed or sorted on."""


def is_ordered(type: str) -> bool:
    """Whether serve orders values of ``type``: it can index a field of it and sort on it."""
    return type not in UNORDERED and not is_array(type)


# --- numeric ---------------------------------------------------------------------------------

EXACT = decimal.Context(
    prec=decimal.MAX_PREC,
    rounding=decimal.ROUND_HALF_UP,
    Emax=decimal.MAX_EMAX,
    Emin=decimal.MIN_EMIN,
    traps=[decimal.DivisionByZero, decimal.Overflow],
)
"""Decimal context in which addition, subtraction and multiplication are exact (and
``Infinity - Infinity`` is NaN, as in PostgreSQL)."""

NUMERIC_MIN_SIG_DIGITS = 16
NUMERIC_MAX_DISPLAY_SCALE = 1000
_DEC_DIGITS = 4

_NAN = Decimal("NaN")


def numeric(value: Decimal) -> Decimal:
    """``value`` as PostgreSQL would hold it: no positive exponent, no negative zero."""
    if not value.is_finite():
        return value
    if value.as_tuple().exponent > 0:  # type: ignore[operator]
        value = value.quantize(Decimal(1), context=EXACT)
    if value.is_zero() and value.is_signed():
        value = value.copy_abs()
    return value


def scale(value: Decimal) -> int:
    """The display scale of a finite numeric (digits after the decimal point)."""
    return max(0, -value.as_tuple().exponent)  # type: ignore[operator]


_NUMERIC_DSCALE_MAX = 16383
_NUMERIC_MIN_ROUND = -(32767 + 1) * 4 - 1  # -(NUMERIC_WEIGHT_MAX + 1) * DEC_DIGITS - 1


def round_numeric(value: Decimal, digits: int) -> Decimal:
    """``round(numeric, digits)``: half away from zero, display scale ``max(digits, 0)``."""
    if not value.is_finite():
        return value
    digits = max(_NUMERIC_MIN_ROUND, min(digits, _NUMERIC_DSCALE_MAX))  # as PostgreSQL clamps
    if digits >= 0:
        return numeric(value.quantize(Decimal(1).scaleb(-digits), context=EXACT))
    rounded = value.quantize(Decimal(1).scaleb(-digits), context=EXACT)
    return numeric(rounded.quantize(Decimal(1), context=EXACT))


def pg_numeric_add(a: Decimal, b: Decimal) -> Decimal:
    """``a + b`` for numeric: exact, display scale the larger of both."""
    return numeric(EXACT.add(a, b))


def pg_numeric_sub(a: Decimal, b: Decimal) -> Decimal:
    """``a - b`` for numeric: exact, display scale the larger of both."""
    return numeric(EXACT.subtract(a, b))


def pg_numeric_mul(a: Decimal, b: Decimal) -> Decimal:
    """``a * b`` for numeric: exact, display scale the sum of both."""
    return numeric(EXACT.multiply(a, b))


def _weight_and_first_digit(value: Decimal) -> tuple[int, int]:
    # PostgreSQL stores numerics in base-10000 digits; weight is the position of the first
    # non-zero one (0 for [1, 10000)), its value the first digit.
    if value.is_zero():
        return 0, 0
    weight = value.adjusted() // _DEC_DIGITS
    first = int(EXACT.scaleb(value.copy_abs(), -_DEC_DIGITS * weight))
    return weight, first


def div_scale(a: Decimal, b: Decimal) -> int:
    """The result scale PostgreSQL chooses for ``a / b`` (``select_div_scale`` in numeric.c)."""
    weight1, first1 = _weight_and_first_digit(a)
    weight2, first2 = _weight_and_first_digit(b)
    qweight = weight1 - weight2
    if first1 <= first2:
        qweight -= 1
    rscale = NUMERIC_MIN_SIG_DIGITS - qweight * _DEC_DIGITS
    rscale = max(rscale, scale(a), scale(b), 0)
    return min(rscale, NUMERIC_MAX_DISPLAY_SCALE)


def divide_rounded(a: Decimal, b: Decimal, rscale: int) -> Decimal:
    """``a / b`` rounded half away from zero to ``rscale`` digits, exactly (finite, b != 0)."""
    an, ad = a.as_integer_ratio()
    bn, bd = b.as_integer_ratio()
    # a / b * 10^rscale = (an * bd * 10^rscale) / (ad * bn), rounded on the absolute value.
    num, den = abs(an) * bd * 10**rscale, ad * abs(bn)
    quotient, remainder = divmod(num, den)
    if 2 * remainder >= den:
        quotient += 1
    negative = (an < 0) != (bn < 0) and quotient != 0
    return Decimal((int(negative), tuple(map(int, str(quotient))), -rscale))


def numeric_div(a: Decimal, b: Decimal) -> Decimal:
    """``a / b`` for numeric exactly as PostgreSQL computes it (also ``avg`` = sum / count).

    The scale gives at least 16 significant digits and no less than either input's display
    scale (at most 1000); the last digit is rounded half away from zero. Division by zero
    raises :class:`EvalError`.
    """
    if a.is_nan() or b.is_nan():
        return _NAN
    if b.is_zero():
        raise EvalError("division by zero")
    if a.is_infinite():
        return _NAN if b.is_infinite() else (a if b > 0 else -a)
    if b.is_infinite():
        return Decimal(0)
    return divide_rounded(a, b, div_scale(a, b))


def numeric_mod(a: Decimal, b: Decimal) -> Decimal:
    """``a % b`` for numeric: sign of ``a``, display scale the larger of both."""
    if a.is_nan() or b.is_nan():
        return _NAN
    if b.is_zero():
        raise EvalError("division by zero")
    if a.is_infinite():
        return _NAN
    if b.is_infinite():
        return a
    return numeric(EXACT.remainder(a, b))


def numeric_trunc(value: Decimal, digits: int = 0) -> Decimal:
    """``trunc(numeric, digits)``: toward zero, display scale ``max(digits, 0)``."""
    if not value.is_finite():
        return value
    digits = max(_NUMERIC_MIN_ROUND, min(digits, _NUMERIC_DSCALE_MAX))  # as PostgreSQL clamps
    out = value.quantize(Decimal(1).scaleb(-digits), rounding=decimal.ROUND_DOWN, context=EXACT)
    return numeric(out if digits >= 0 else out.quantize(Decimal(1), context=EXACT))


def check_int(value: int, type: str) -> int:
    """``value`` if it fits ``type`` (int2/int4/int8), else :class:`EvalError`."""
    low, high = INT_RANGES[type]
    if not low <= value <= high:
        raise EvalError(f"{INT_NAMES[type]} out of range")
    return value


def float4(value: float) -> float:
    """``value`` rounded to the nearest 32-bit float (overflow: :class:`EvalError`)."""
    if math.isnan(value) or math.isinf(value):
        return value
    try:
        out: float = struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        raise EvalError("value out of range: overflow") from None
    return out


def float4_text(value: float) -> str:
    """The shortest decimal text that reads back as the float4 ``value`` (PostgreSQL 12+)."""
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        if float4(float(text)) == value:
            return text
    return repr(value)


# --- decoding change-event values ------------------------------------------------------------

_EPOCH_DATE = date(1970, 1, 1)
_EPOCH = datetime(1970, 1, 1)


def _decode_numeric(value: Any) -> Decimal:
    if type(value) is str and "E" not in value and "e" not in value:
        # PostgreSQL's own text (what ingest sends): already canonical unless it is a zero.
        d = Decimal(value)
        return d.copy_abs() if not d and d.is_signed() else d
    return numeric(Decimal(str(value)))


def _decode_float8(value: Any) -> float:
    return float(value)


def _decode_float4(value: Any) -> float:
    return float4(float(value))


def _decode_date(value: Any) -> date:
    if not isinstance(value, int):
        raise EvalError(f"date {value!r} is not supported (infinite or out of range)")
    try:
        return _EPOCH_DATE + timedelta(days=value)
    except OverflowError:
        raise EvalError(f"date {value!r} days from 1970-01-01 is out of range") from None


def _decode_time(value: Any) -> time:
    micros = int(value)
    if micros >= 86_400_000_000:
        raise EvalError("time 24:00:00 is not supported")
    seconds, micro = divmod(micros, 1_000_000)
    return time(seconds // 3600, seconds // 60 % 60, seconds % 60, micro)


def _timestamp_decoder(unit_us: int) -> Callable[[Any], datetime]:
    def decode(value: Any) -> datetime:
        if not isinstance(value, int):
            raise EvalError(f"timestamp {value!r} is not supported (infinite or out of range)")
        try:
            return _EPOCH + timedelta(microseconds=value * unit_us)
        except OverflowError:
            raise EvalError(f"timestamp {value!r} is out of range") from None

    return decode


def _decode_timestamptz(value: Any) -> datetime:
    try:
        return datetime.fromisoformat(value).astimezone(UTC)
    except (TypeError, ValueError):
        raise EvalError(f"timestamptz {value!r} is not supported") from None


def _decode_interval(value: Any) -> timedelta:
    return timedelta(microseconds=int(value))


def _decode_json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str) else value


def _decode_bytea(value: Any) -> bytes:
    return base64.b64decode(value)


def _identity(value: Any) -> Any:
    return value


def _decode_str(value: Any) -> str:
    return str(value)


def _elementwise(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def each(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, list):
            return [each(item) for item in value]
        return convert(value)

    return each


def _scalar_decoder(type: str, typmod: int) -> Callable[[Any], Any]:
    if type == TIMESTAMP:
        return _timestamp_decoder(1000 if 0 <= typmod <= 3 else 1)
    return {
        NUMERIC: _decode_numeric,
        FLOAT4: _decode_float4,
        FLOAT8: _decode_float8,
        DATE: _decode_date,
        TIME: _decode_time,
        TIMESTAMPTZ: _decode_timestamptz,
        INTERVAL: _decode_interval,
        JSON: _decode_json,
        JSONB: _decode_json,
        BYTEA: _decode_bytea,
        TEXT: _decode_str,
        UUID: _decode_str,
        TIMETZ: _decode_str,
    }.get(type, _identity)


def decoder(type: str, typmod: int = -1) -> Callable[[Any], Any]:
    """The function turning a change-event JSON value of a ``type`` column into its Python value.

    ``typmod`` is the column's type modifier (a ``timestamp(0..3)`` arrives in milliseconds).
    ``None`` stays ``None``; a value with no Python form raises :class:`EvalError`.
    """
    convert = _scalar_decoder(type[:-2] if is_array(type) else type, typmod)
    if is_array(type):
        return _elementwise(convert)

    def decode(value: Any) -> Any:
        return None if value is None else convert(value)

    return decode


# --- encoding view-row values ----------------------------------------------------------------


def _encode_numeric(value: Decimal) -> str:
    if not value.is_finite():
        if value.is_nan():
            return "NaN"
        return "-Infinity" if value < 0 else "Infinity"
    # Plain notation never shows a positive exponent; only a negative zero needs mending.
    return format(value if value else value.copy_abs(), "f")


def _encode_float8(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    return value


def _encode_float4(value: float) -> float | str:
    if not math.isfinite(value):
        return _encode_float8(value)
    return float(float4_text(value))


def _encode_iso(value: date | time) -> str:
    return value.isoformat()


def _encode_timestamptz(value: datetime) -> str:
    return value.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def encode_interval(value: timedelta) -> str:
    """An interval as ISO-8601: ``P1DT2H3M4.5S``, ``PT0S``, negative ``P-1DT-2H``.

    This is the form PostgreSQL's ``IntervalStyle=iso_8601`` writes for the same microseconds
    counted in 24-hour days (a ``timedelta`` has no separate months or days).
    """
    micros = value // timedelta(microseconds=1)
    sign = "-" if micros < 0 else ""
    days, rest = divmod(abs(micros), 86_400_000_000)
    seconds, micro = divmod(rest, 1_000_000)
    hours, minutes, secs = seconds // 3600, seconds // 60 % 60, seconds % 60
    out = "P" + (f"{sign}{days}D" if days else "")
    clock = ""
    if hours:
        clock += f"{sign}{hours}H"
    if minutes:
        clock += f"{sign}{minutes}M"
    if secs or micro:
        frac = f".{micro:06d}".rstrip("0") if micro else ""
        clock += f"{sign}{secs}{frac}S"
    if clock:
        out += "T" + clock
    return out if out != "P" else "PT0S"


def _encode_bytea(value: bytes) -> str:
    return base64.b64encode(value).decode()


def _scalar_encoder(type: str) -> Callable[[Any], Any]:
    encoders: dict[str, Callable[[Any], Any]] = {
        NUMERIC: _encode_numeric,
        FLOAT4: _encode_float4,
        FLOAT8: _encode_float8,
        DATE: _encode_iso,
        TIME: _encode_iso,
        TIMESTAMP: _encode_iso,
        TIMESTAMPTZ: _encode_timestamptz,
        INTERVAL: encode_interval,
        BYTEA: _encode_bytea,
    }
    return encoders.get(type, _identity)


def encoder(type: str) -> Callable[[Any], Any]:
    """The function turning a Python value of ``type`` into the JSON value of a view row.

    int and bool as they are; numeric as a plain-notation string (``"12.50"``, never an
    exponent); floats as numbers (``"NaN"``, ``"Infinity"``, ``"-Infinity"`` as strings, a
    float4 by its shortest decimal form); date ``YYYY-MM-DD``; time ``HH:MM:SS[.ffffff]``;
    timestamp ``YYYY-MM-DDTHH:MM:SS[.ffffff]``; timestamptz the same in UTC with ``Z``;
    interval ISO-8601 (:func:`encode_interval`); uuid, text, timetz as strings; json/jsonb as
    the JSON value; bytea base64; arrays element-wise. ``None`` stays ``None``.
    """
    convert = _scalar_encoder(type[:-2] if is_array(type) else type)
    if is_array(type):
        return _elementwise(convert)

    def encode(value: Any) -> Any:
        return None if value is None else convert(value)

    return encode


# --- ordering --------------------------------------------------------------------------------


def _float_key(value: float) -> tuple[int, float]:
    # PostgreSQL: NaN sorts above every number and equals itself; -0 equals 0.
    return (1, 0.0) if math.isnan(value) else (0, value + 0.0)


def _numeric_key(value: Decimal) -> tuple[int, Decimal]:
    return (1, Decimal(0)) if value.is_nan() else (0, value)


def _jsonb_key(value: Any) -> tuple[Any, ...]:
    # compareJsonbContainers: the values' token streams compared in order. Containers compare
    # first by size (arrays: element count, then a raw top-level scalar before a real array;
    # objects: pair count), tokens of different kinds by JbvType (null < string < numeric <
    # bool < array < object), and object pairs come in jsonb's key order (shorter keys first).
    tokens: list[tuple[Any, ...]] = []
    if not isinstance(value, dict | list):
        tokens.append((16, 1, 0))  # a top-level scalar is a one-element "raw scalar" array
    _jsonb_tokens(value, tokens)
    return tuple(tokens)


def _jsonb_tokens(value: Any, out: list[tuple[Any, ...]]) -> None:
    if value is None:
        out.append((0,))
    elif isinstance(value, str):
        out.append((1, value))
    elif isinstance(value, bool):
        out.append((3, value))
    elif isinstance(value, int | float):
        out.append((2, Decimal(repr(value)) if isinstance(value, float) else value))
    elif isinstance(value, list):
        out.append((16, len(value), 1))
        for item in value:
            _jsonb_tokens(item, out)
    else:
        out.append((17, len(value)))
        for key in sorted(value, key=lambda k: (len(k.encode()), k.encode())):
            out.append((1, key))
            _jsonb_tokens(value[key], out)


@functools.total_ordering
class _ArrayKey:
    """PostgreSQL's array order: element by element (NULL above any value), then length."""

    __slots__ = ("items",)

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def _cmp(self, other: _ArrayKey) -> int:
        for a, b in zip(self.items, other.items, strict=False):
            if a is None or b is None:
                if a is None and b is None:
                    continue
                return 1 if a is None else -1
            if a != b:
                return -1 if a < b else 1
        return (len(self.items) > len(other.items)) - (len(self.items) < len(other.items))

    def __lt__(self, other: _ArrayKey) -> bool:
        return self._cmp(other) < 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ArrayKey) and self._cmp(other) == 0

    def __hash__(self) -> int:
        return hash(len(self.items))


def _array_key(element_key: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def key(value: list[Any]) -> _ArrayKey:
        flat: list[Any] = []

        def walk(items: list[Any]) -> None:
            for item in items:
                if isinstance(item, list):
                    walk(item)
                else:
                    flat.append(None if item is None else element_key(item))

        walk(value)
        return _ArrayKey(flat)

    return key


def sort_key(type: str) -> Callable[[Any], Any]:
    """A key function ordering non-NULL values of ``type`` as PostgreSQL's default btree does.

    Text compares by code point (the database collation is ``C.UTF-8``), NaN sorts above all
    numbers. NULLs are the caller's: PostgreSQL puts them last in ascending order. ``json`` has
    no order (:class:`SqlError`, as in PostgreSQL).
    """
    if is_array(type):
        return _array_key(sort_key(type[:-2]))
    if type in (FLOAT4, FLOAT8):
        return _float_key
    if type == NUMERIC:
        return _numeric_key
    if type == JSONB:
        return _jsonb_key
    if type == JSON:
        raise SqlError("could not identify an ordering operator for type json")
    return _identity
