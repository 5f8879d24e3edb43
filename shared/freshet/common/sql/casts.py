"""Conversions between SQL types: PostgreSQL's input and output functions and its casts.

Text output follows a session with ``DateStyle=ISO``, ``IntervalStyle=postgres``,
``TimeZone=UTC`` and the default ``extra_float_digits`` (shortest exact floats). Text input
accepts the forms PostgreSQL accepts for numbers, booleans, uuids, json and bytea; for dates and
times only the ISO forms (``2024-01-31``, ``2024-01-31 10:00:00.5+02``, ``10:00``), and for
intervals ``[-]N unit ...`` with units from microseconds up to weeks plus ``[-]HH:MM[:SS]``
(no months or years: a ``timedelta`` cannot hold them).
"""

from __future__ import annotations

import binascii
import decimal
import math
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import orjson

from freshet.common.sql import types as t
from freshet.common.sql.types import EvalError

Convert = Callable[[Any], Any]


def _invalid(type: str, text: str) -> EvalError:
    return EvalError(f'invalid input syntax for type {t.sql_name(type)}: "{text}"')


# --- text input ------------------------------------------------------------------------------

_INT_TEXT = re.compile(r"\s*[+-]?\d+\s*", re.ASCII)
_NUMERIC_TEXT = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*", re.ASCII)
_SPECIAL_FLOATS = {
    "nan": math.nan,
    "infinity": math.inf,
    "+infinity": math.inf,
    "-infinity": -math.inf,
    "inf": math.inf,
    "+inf": math.inf,
    "-inf": -math.inf,
}


def _int_in(type: str) -> Convert:
    def parse(text: str) -> int:
        if not _INT_TEXT.fullmatch(text):
            raise _invalid(type, text)
        value = int(text)
        low, high = t.INT_RANGES[type]
        if not low <= value <= high:
            raise EvalError(f'value "{text}" is out of range for type {t.sql_name(type)}')
        return value

    return parse


_NUMERIC_MAX_WEIGHT_DIGITS = 131072  # digits before the decimal point
_NUMERIC_MAX_SCALE = 16383  # digits after it


def numeric_in(text: str) -> Decimal:
    special = _SPECIAL_FLOATS.get(text.strip().lower())
    if special is not None:
        return Decimal(special)
    if not _NUMERIC_TEXT.fullmatch(text):
        raise _invalid(t.NUMERIC, text)
    value = Decimal(text.strip())
    exponent = int(value.as_tuple().exponent)
    if value.adjusted() >= _NUMERIC_MAX_WEIGHT_DIGITS or -exponent > _NUMERIC_MAX_SCALE:
        raise EvalError("value overflows numeric format")
    return t.numeric(value)


def _float_in(type: str) -> Convert:
    def parse(text: str) -> float:
        special = _SPECIAL_FLOATS.get(text.strip().lower())
        if special is not None:
            return special
        if not _NUMERIC_TEXT.fullmatch(text):
            raise _invalid(type, text)
        value = float(text)
        if math.isinf(value) or (type == t.FLOAT4 and abs(value) > 3.4028234663852886e38):
            raise EvalError(f'"{text.strip()}" is out of range for type {t.sql_name(type)}')
        return t.float4(value) if type == t.FLOAT4 else value

    return parse


def bool_in(text: str) -> bool:
    word = text.strip().lower()
    # boolin: any prefix of true/false/yes/no; "on" and "of[f]" need two letters; 1 and 0.
    if word:
        if word in ("1", "on") or any(w.startswith(word) for w in ("true", "yes")):
            return True
        if word in ("0", "of", "off") or any(w.startswith(word) for w in ("false", "no")):
            return False
    raise _invalid(t.BOOL, text)


_DATE = r"(\d{4,})-(\d{1,2})-(\d{1,2})"
_TIME = r"(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?"
_ZONE = r"\s*(?:(Z|UTC|GMT)|([+-])(\d{1,2})(?::?(\d{2}))?)"
_DATE_TEXT = re.compile(rf"\s*{_DATE}\s*", re.ASCII | re.IGNORECASE)
_TIME_TEXT = re.compile(rf"\s*{_TIME}(?:{_ZONE})?\s*", re.ASCII | re.IGNORECASE)
_TIMESTAMP_TEXT = re.compile(
    rf"\s*{_DATE}(?:(?:\s+|T){_TIME})?(?:{_ZONE})?\s*", re.ASCII | re.IGNORECASE
)


def _micros(frac: str | None) -> int:
    # PostgreSQL rounds fractional seconds to microseconds (half away from zero).
    if not frac:
        return 0
    return int(Decimal("0." + frac).scaleb(6, t.EXACT).quantize(Decimal(1), decimal.ROUND_HALF_UP))


def _clock(groups: tuple[str | None, ...], text: str) -> timedelta:
    hour, minute, second, frac = groups
    if hour is None:
        return timedelta()
    h, m, s = int(hour), int(minute or 0), int(second or 0)
    if h > 24 or m > 59 or s > 60 or (h == 24 and (m or s or frac)):
        raise EvalError(f'date/time field value out of range: "{text}"')
    return timedelta(hours=h, minutes=m, seconds=s, microseconds=_micros(frac))


def _zone(groups: tuple[str | None, ...]) -> timedelta | None:
    named, sign, hours, minutes = groups
    if named:
        return timedelta()
    if sign is None:
        return None
    offset = timedelta(hours=int(hours or 0), minutes=int(minutes or 0))
    return -offset if sign == "-" else offset


def _date_of(groups: tuple[str | None, ...], text: str) -> date:
    try:
        return date(int(groups[0] or 0), int(groups[1] or 0), int(groups[2] or 0))
    except ValueError:
        raise EvalError(f'date/time field value out of range: "{text}"') from None


def date_in(text: str) -> date:
    match = _DATE_TEXT.fullmatch(text)
    if match is None:
        raise _invalid(t.DATE, text)
    return _date_of(match.groups(), text)


def _timestamp_parts(text: str, type: str) -> tuple[datetime, timedelta | None]:
    match = _TIMESTAMP_TEXT.fullmatch(text)
    if match is None:
        raise _invalid(type, text)
    groups = match.groups()
    day = _date_of(groups[:3], text)
    try:
        value = datetime.combine(day, time()) + _clock(groups[3:7], text)
    except OverflowError:
        raise EvalError(f'timestamp out of range: "{text}"') from None
    return value, _zone(groups[7:])


def timestamp_in(text: str) -> datetime:
    # As PostgreSQL: a time zone in the text of a timestamp without time zone is ignored.
    return _timestamp_parts(text, t.TIMESTAMP)[0]


def timestamptz_in(text: str) -> datetime:
    value, zone = _timestamp_parts(text, t.TIMESTAMPTZ)
    return (value - (zone or timedelta())).replace(tzinfo=UTC)


def time_in(text: str) -> time:
    match = _TIME_TEXT.fullmatch(text)
    if match is None:
        raise _invalid(t.TIME, text)
    clock = _clock(match.groups()[:4], text)
    if clock >= timedelta(days=1):
        raise EvalError("time 24:00:00 is not supported")
    return (datetime.min + clock).time()


_INTERVAL_UNITS = {
    "microsecond": 1,
    "microseconds": 1,
    "us": 1,
    "usec": 1,
    "usecs": 1,
    "millisecond": 1000,
    "milliseconds": 1000,
    "ms": 1000,
    "msec": 1000,
    "msecs": 1000,
    "second": 10**6,
    "seconds": 10**6,
    "sec": 10**6,
    "secs": 10**6,
    "s": 10**6,
    "minute": 60 * 10**6,
    "minutes": 60 * 10**6,
    "min": 60 * 10**6,
    "mins": 60 * 10**6,
    "m": 60 * 10**6,
    "hour": 3600 * 10**6,
    "hours": 3600 * 10**6,
    "h": 3600 * 10**6,
    "hr": 3600 * 10**6,
    "hrs": 3600 * 10**6,
    "day": 86_400 * 10**6,
    "days": 86_400 * 10**6,
    "d": 86_400 * 10**6,
    "week": 7 * 86_400 * 10**6,
    "weeks": 7 * 86_400 * 10**6,
    "w": 7 * 86_400 * 10**6,
}
_INTERVAL_TOKEN = re.compile(
    r"\s*(?:([+-]?)(\d+):(\d+)(?::(\d+(?:\.\d*)?))?|([+-]?\d+(?:\.\d*)?|[+-]?\.\d+)\s*([a-z]+)?)",
    re.ASCII | re.IGNORECASE,
)


def interval_in(text: str) -> timedelta:
    body = text.strip()
    ago = body.lower().endswith(" ago")
    body = body[:-4] if ago else body
    pos, micros, seen = 1 if body.startswith("@") else 0, Decimal(0), False
    while pos < len(body):
        match = _INTERVAL_TOKEN.match(body, pos)
        if match is None:
            if body[pos:].strip():
                raise _invalid(t.INTERVAL, text)
            break
        sign, hours, minutes, seconds, number, unit = match.groups()
        if hours is not None:
            part = (int(hours) * 3600 + int(minutes) * 60) * Decimal(10**6) + Decimal(
                seconds or 0
            ) * 10**6
            micros += -part if sign == "-" else part
        else:
            scale = _INTERVAL_UNITS.get((unit or "second").lower())
            if scale is None:
                if (unit or "").lower().startswith(("mon", "y", "dec", "cent", "mil")):
                    raise EvalError(
                        f'interval "{text}" counts months or years, which Freshet does not support'
                    )
                raise _invalid(t.INTERVAL, text)
            micros += Decimal(number) * scale
        seen = True
        pos = match.end()
    if not seen:
        raise _invalid(t.INTERVAL, text)
    if ago:
        micros = -micros
    try:
        return timedelta(microseconds=int(micros.to_integral_value(decimal.ROUND_HALF_EVEN)))
    except OverflowError:
        raise EvalError(f'interval out of range: "{text}"') from None


_UUID_TEXT = re.compile(r"\{?([0-9a-f]{4}-?){7}[0-9a-f]{4}\}?", re.ASCII | re.IGNORECASE)


def uuid_in(text: str) -> str:
    if not _UUID_TEXT.fullmatch(text) or text.startswith("{") != text.endswith("}"):
        raise _invalid(t.UUID, text)
    digits = text.strip("{}").replace("-", "").lower()
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def json_in(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise _invalid(t.JSON, text) from None


_OCTAL = re.compile(r"\\([0-3][0-7]{2})|\\\\|\\")


def bytea_in(text: str) -> bytes:
    if text.startswith("\\x"):
        try:
            return bytes.fromhex(text[2:])
        except ValueError:
            raise _invalid(t.BYTEA, text) from None
    out = bytearray()
    pos = 0
    for match in _OCTAL.finditer(text):
        out += text[pos : match.start()].encode()
        if match.group(1):
            out.append(int(match.group(1), 8))
        elif match.group(0) == "\\\\":
            out.append(0x5C)
        else:
            raise _invalid(t.BYTEA, text)
        pos = match.end()
    return bytes(out + text[pos:].encode())


_INPUT: dict[str, Convert] = {
    t.BOOL: bool_in,
    t.INT2: _int_in(t.INT2),
    t.INT4: _int_in(t.INT4),
    t.INT8: _int_in(t.INT8),
    t.NUMERIC: numeric_in,
    t.FLOAT4: _float_in(t.FLOAT4),
    t.FLOAT8: _float_in(t.FLOAT8),
    t.TEXT: str,
    t.DATE: date_in,
    t.TIME: time_in,
    t.TIMESTAMP: timestamp_in,
    t.TIMESTAMPTZ: timestamptz_in,
    t.INTERVAL: interval_in,
    t.UUID: uuid_in,
    t.JSON: json_in,
    t.JSONB: json_in,
    t.BYTEA: bytea_in,
}


def input_function(type: str) -> Convert | None:
    """PostgreSQL's input function of ``type`` (text -> value), or None when unsupported."""
    return _INPUT.get(type)


# --- text output -----------------------------------------------------------------------------


def _shortest_float_text(digits_text: str, exp_limit: int) -> str:
    # PostgreSQL prints the shortest exact digits, in exponent form when the decimal exponent
    # is < -4 or >= DBL_DIG (15; FLT_DIG = 6 for float4), like "1e+15", "1.5e-05".
    value = Decimal(digits_text)
    sign, digits, exponent = value.as_tuple()
    mantissa = "".join(map(str, digits)).rstrip("0") or "0"
    exp10 = len(digits) + int(exponent) - 1
    prefix = "-" if sign else ""
    if value.is_zero():
        return prefix + "0"
    if exp10 < -4 or exp10 >= exp_limit:
        body = mantissa[0] + ("." + mantissa[1:] if len(mantissa) > 1 else "")
        return f"{prefix}{body}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    return prefix + format(abs(value).normalize(), "f")


def float8_out(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    return _shortest_float_text(repr(value), 15)


def float4_out(value: float) -> str:
    if not math.isfinite(value):
        return float8_out(value)
    return _shortest_float_text(t.float4_text(value), 6)


def _fraction(micro: int) -> str:
    return f".{micro:06d}".rstrip("0") if micro else ""


def time_out(value: time) -> str:
    return value.strftime("%H:%M:%S") + _fraction(value.microsecond)


def timestamp_out(value: datetime) -> str:
    return f"{value.date().isoformat()} {time_out(value.time())}"


def timestamptz_out(value: datetime) -> str:
    return timestamp_out(value.astimezone(UTC).replace(tzinfo=None)) + "+00"


def interval_out(value: timedelta) -> str:
    micros = value // timedelta(microseconds=1)
    negative = micros < 0
    days, rest = divmod(abs(micros), 86_400_000_000)
    seconds, micro = divmod(rest, 1_000_000)
    parts = []
    if days:
        days_signed = -days if negative else days
        parts.append(f"{days_signed} day" + ("" if days_signed == 1 else "s"))
    if rest or not days:
        clock = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        parts.append(("-" if negative and rest else "") + clock + _fraction(micro))
    return " ".join(parts)


def _json_text(value: Any) -> str:
    # jsonb's output: ", " between items, ": " after keys.
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_json_text(k)}: {_json_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_json_text(v) for v in value) + "]"
    if isinstance(value, float):
        return format(t.numeric(Decimal(repr(value))), "f")
    return orjson.dumps(value).decode()


def json_out(value: Any) -> str:
    return _json_text(value)


def bytea_out(value: bytes) -> str:
    return "\\x" + binascii.hexlify(value).decode()


def _bool_out(value: bool) -> str:
    return "t" if value else "f"


def _array_out(element_out: Convert) -> Convert:
    def item(value: Any) -> str:
        if value is None:
            return "NULL"
        if isinstance(value, list):
            return "{" + ",".join(item(v) for v in value) + "}"
        text = element_out(value)
        if text == "" or text.upper() == "NULL" or re.search(r'[{}," \\\t\n]', text):
            return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return text

    return item


_OUTPUT: dict[str, Convert] = {
    t.BOOL: _bool_out,
    t.INT2: str,
    t.INT4: str,
    t.INT8: str,
    t.NUMERIC: t.encoder(t.NUMERIC),
    t.FLOAT4: float4_out,
    t.FLOAT8: float8_out,
    t.TEXT: str,
    t.UNKNOWN: str,
    t.DATE: date.isoformat,
    t.TIME: time_out,
    t.TIMETZ: str,
    t.TIMESTAMP: timestamp_out,
    t.TIMESTAMPTZ: timestamptz_out,
    t.INTERVAL: interval_out,
    t.UUID: str,
    t.JSON: json_out,
    t.JSONB: json_out,
    t.BYTEA: bytea_out,
}


def output_function(type: str) -> Convert:
    """PostgreSQL's output function of ``type`` (value -> text), as ``concat()`` uses it."""
    if t.is_array(type):
        return _array_out(output_function(type[:-2]))
    return _OUTPUT[type]


# --- casts -----------------------------------------------------------------------------------


def _int_to_int(type: str) -> Convert:
    def cast(value: int) -> int:
        return t.check_int(value, type)

    return cast


def _numeric_to_int(type: str) -> Convert:
    def cast(value: Decimal) -> int:
        if value.is_nan():
            raise EvalError(f"cannot convert NaN to {t.sql_name(type)}")
        if value.is_infinite():
            raise EvalError(f"cannot convert infinity to {t.sql_name(type)}")
        return t.check_int(int(value.to_integral_value(decimal.ROUND_HALF_UP)), type)

    return cast


def _float_to_int(type: str) -> Convert:
    def cast(value: float) -> int:
        if not math.isfinite(value):
            raise EvalError(f"{t.sql_name(type)} out of range")
        return t.check_int(round(value), type)  # rint(): half to even

    return cast


def _float_to_numeric(digits: int) -> Convert:
    # PostgreSQL converts with DBL_DIG (FLT_DIG for float4) significant digits.
    def cast(value: float) -> Decimal:
        if not math.isfinite(value):
            return Decimal(value)
        return t.numeric(Decimal(f"{value:.{digits}g}"))

    return cast


def _to_float8(value: Any) -> float:
    return float(value)


def _to_float4(value: Any) -> float:
    return t.float4(float(value))


def _int_to_numeric(value: int) -> Decimal:
    return Decimal(value)


def _date_to_timestamp(value: date) -> datetime:
    return datetime(value.year, value.month, value.day)


def _date_to_timestamptz(value: date) -> datetime:
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def _timestamp_to_timestamptz(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC)


def _timestamptz_to_timestamp(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


def _to_date(value: datetime) -> date:
    return value.astimezone(UTC).date() if value.tzinfo else value.date()


def _to_time(value: datetime) -> time:
    return value.astimezone(UTC).time().replace(tzinfo=None) if value.tzinfo else value.time()


def time_to_interval(value: time) -> timedelta:
    return datetime.combine(date.min, value) - datetime.min


def _time_to_timetz(value: time) -> str:
    return time_out(value) + "Z"


def _bool_to_int(value: bool) -> int:
    return int(value)


def _int_to_bool(value: int) -> bool:
    return value != 0


def _bool_to_text(value: bool) -> str:
    return "true" if value else "false"


def _jsonb_to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise EvalError(f"cannot cast jsonb {json_kind(value)} to type boolean")


def _jsonb_to_number(type: str) -> Convert:
    def cast(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise EvalError(f"cannot cast jsonb {json_kind(value)} to type {t.sql_name(type)}")
        number = t.numeric(Decimal(repr(value) if isinstance(value, float) else value))
        return _CASTS_FROM_NUMERIC[type](number)

    return cast


def json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "numeric"


def _identity(value: Any) -> Any:
    return value


_CASTS_FROM_NUMERIC: dict[str, Convert] = {
    t.INT2: _numeric_to_int(t.INT2),
    t.INT4: _numeric_to_int(t.INT4),
    t.INT8: _numeric_to_int(t.INT8),
    t.NUMERIC: _identity,
    t.FLOAT4: _to_float4,
    t.FLOAT8: _to_float8,
}

_CASTS: dict[tuple[str, str], Convert] = {
    **{(t.NUMERIC, target): fn for target, fn in _CASTS_FROM_NUMERIC.items()},
    (t.FLOAT4, t.FLOAT8): _to_float8,
    (t.FLOAT8, t.FLOAT4): _to_float4,
    (t.FLOAT4, t.NUMERIC): _float_to_numeric(6),
    (t.FLOAT8, t.NUMERIC): _float_to_numeric(15),
    (t.BOOL, t.INT4): _bool_to_int,
    (t.INT4, t.BOOL): _int_to_bool,
    (t.DATE, t.TIMESTAMP): _date_to_timestamp,
    (t.DATE, t.TIMESTAMPTZ): _date_to_timestamptz,
    (t.TIMESTAMP, t.TIMESTAMPTZ): _timestamp_to_timestamptz,
    (t.TIMESTAMPTZ, t.TIMESTAMP): _timestamptz_to_timestamp,
    (t.TIMESTAMP, t.DATE): _to_date,
    (t.TIMESTAMPTZ, t.DATE): _to_date,
    (t.TIMESTAMP, t.TIME): _to_time,
    (t.TIMESTAMPTZ, t.TIME): _to_time,
    (t.TIME, t.INTERVAL): time_to_interval,
    (t.TIME, t.TIMETZ): _time_to_timetz,
    (t.JSON, t.JSONB): _identity,
    (t.JSONB, t.JSON): _identity,
    (t.BOOL, t.TEXT): _bool_to_text,
    (t.JSONB, t.BOOL): _jsonb_to_bool,
    **{(t.JSONB, target): _jsonb_to_number(target) for target in _CASTS_FROM_NUMERIC},
}
for _src in (t.INT2, t.INT4, t.INT8):
    for _dst in (t.INT2, t.INT4, t.INT8):
        _CASTS[(_src, _dst)] = _int_to_int(_dst)
    _CASTS[(_src, t.NUMERIC)] = _int_to_numeric
    _CASTS[(_src, t.FLOAT4)] = _to_float4
    _CASTS[(_src, t.FLOAT8)] = _to_float8
for _src in (t.FLOAT4, t.FLOAT8):
    for _dst in (t.INT2, t.INT4, t.INT8):
        _CASTS[(_src, _dst)] = _float_to_int(_dst)


def cast_function(source: str, target: str) -> Convert | None:
    """The conversion of an explicit ``CAST(value AS target)`` of a non-NULL value.

    None when PostgreSQL has no such cast or Freshet does not support it.
    """
    if source == target:
        return _identity
    fn = _CASTS.get((source, target))
    if fn is not None:
        return fn
    if target == t.TEXT and source != t.UNKNOWN:
        return output_function(source)
    if source in (t.TEXT, t.UNKNOWN):
        if t.is_array(target):
            return None
        return input_function(target)
    return None


IMPLICIT_CASTS: dict[str, frozenset[str]] = {
    t.INT2: frozenset({t.INT4, t.INT8, t.FLOAT4, t.FLOAT8, t.NUMERIC}),
    t.INT4: frozenset({t.INT8, t.FLOAT4, t.FLOAT8, t.NUMERIC}),
    t.INT8: frozenset({t.FLOAT4, t.FLOAT8, t.NUMERIC}),
    t.NUMERIC: frozenset({t.FLOAT4, t.FLOAT8}),
    t.FLOAT4: frozenset({t.FLOAT8}),
    t.DATE: frozenset({t.TIMESTAMP, t.TIMESTAMPTZ}),
    t.TIMESTAMP: frozenset({t.TIMESTAMPTZ}),
    t.TIME: frozenset({t.INTERVAL, t.TIMETZ}),
}
"""PostgreSQL's implicit casts (pg_cast context ``i``) between the supported types."""
