"""PostgreSQL text values to Debezium's JSON representation.

Both the snapshot (which selects every column ``::text``) and the stream (pgoutput sends text)
see the output of PostgreSQL's own type output functions, under the session settings in
:data:`SESSION_OPTIONS`. One converter per column, chosen by type OID and type modifier, turns
that text into the JSON value Debezium would write (see :mod:`freshet.common.events`).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from typing import Any

Converter = Callable[[str], Any]

SESSION_OPTIONS = (
    "-c DateStyle=ISO,YMD -c TimeZone=UTC -c IntervalStyle=iso_8601 "
    "-c extra_float_digits=3 -c bytea_output=hex"
)
"""Settings that fix the text form of values; every Freshet connection to a source uses them."""

_EPOCH_DATE = date(1970, 1, 1)
_EPOCH = datetime(1970, 1, 1)
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
_DAYS_PER_MONTH = 365.25 / 12
_US_PER_DAY = 86_400_000_000

# Type OIDs of PostgreSQL's built-in types (pg_type.dat).
BOOL, BYTEA, CHAR, NAME, INT8, INT2, INT4, TEXT, OID = 16, 17, 18, 19, 20, 21, 23, 25, 26
JSON, XML, FLOAT4, FLOAT8, MONEY, BPCHAR, VARCHAR = 114, 142, 700, 701, 790, 1042, 1043
DATE, TIME, TIMESTAMP, TIMESTAMPTZ, INTERVAL, TIMETZ = 1082, 1083, 1114, 1184, 1186, 1266
NUMERIC, UUID, JSONB = 1700, 2950, 3802

ARRAY_ELEMENT = {
    1000: BOOL,
    1001: BYTEA,
    1002: CHAR,
    1003: NAME,
    1016: INT8,
    1005: INT2,
    1007: INT4,
    1009: TEXT,
    1028: OID,
    199: JSON,
    143: XML,
    1021: FLOAT4,
    1022: FLOAT8,
    791: MONEY,
    1014: BPCHAR,
    1015: VARCHAR,
    1182: DATE,
    1183: TIME,
    1115: TIMESTAMP,
    1185: TIMESTAMPTZ,
    1187: INTERVAL,
    1270: TIMETZ,
    1231: NUMERIC,
    2951: UUID,
    3807: JSONB,
}
"""Array type OID -> element type OID, for the built-in array types."""


def _identity(text: str) -> str:
    return text


def is_text(convert: Converter) -> bool:
    """True if ``convert`` keeps the text as it is (the value is the text)."""
    return convert is _identity


def _bool(text: str) -> bool:
    return text == "t"


def _float(text: str) -> float | str:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        return text
    return value


def _bytea(text: str) -> str:
    # bytea_output=hex: "\x0a0b..."
    return base64.b64encode(bytes.fromhex(text[2:])).decode()


def _date(text: str) -> int | str:
    try:
        return (date.fromisoformat(text) - _EPOCH_DATE).days
    except ValueError:
        return text  # infinity, BC dates: kept as PostgreSQL wrote them


def _time_us(text: str) -> int:
    t = time.fromisoformat(text) if not text.startswith("24:") else None
    if t is None:
        return _US_PER_DAY
    return ((t.hour * 60 + t.minute) * 60 + t.second) * 1_000_000 + t.microsecond


def _parse_timestamp(text: str) -> datetime:
    # ISO DateStyle: "2024-01-02 03:04:05.123456" (+ "+00" for timestamptz under TimeZone=UTC).
    if text.endswith("+00"):
        text = text[:-3] + "+00:00"
    return datetime.fromisoformat(text)


def _timestamp_us(text: str) -> int | str:
    try:
        delta = _parse_timestamp(text) - _EPOCH
    except ValueError:
        return text
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _timestamp_ms(text: str) -> int | str:
    micros = _timestamp_us(text)
    return micros // 1000 if isinstance(micros, int) else micros


def _iso_utc(dt: datetime) -> str:
    text = dt.astimezone(UTC).replace(tzinfo=None).isoformat()
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text + "Z"


def _timestamptz(text: str) -> str:
    # Under TimeZone=UTC the text is already UTC, with the fraction's trailing zeros trimmed:
    # "2024-01-02 03:04:05.5+00" -> "2024-01-02T03:04:05.5Z" needs no datetime round trip.
    # Anything else (BC, years past 9999, infinity, another zone) takes the general path.
    if text[-3:] == "+00" and len(text) >= 22 and text[10] == " " and text[4] == "-":
        clock = text[11:-3]
        if clock[-1] == "0" and "." in clock:
            clock = clock.rstrip("0").rstrip(".")
        return f"{text[:10]}T{clock}Z"
    try:
        return _iso_utc(_parse_timestamp(text))
    except ValueError:
        return text


_TZ_SUFFIX = re.compile(r"([+-])(\d{2})(?::?(\d{2}))?(?::?(\d{2}))?$")


def _timetz(text: str) -> str:
    match = _TZ_SUFFIX.search(text)
    if match is None:
        return text
    sign = -1 if match.group(1) == "-" else 1
    offset = sign * (
        int(match.group(2)) * 3600 + int(match.group(3) or 0) * 60 + int(match.group(4) or 0)
    )
    micros = (_time_us(text[: match.start()]) - offset * 1_000_000) % _US_PER_DAY
    seconds, micro = divmod(micros, 1_000_000)
    out = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    if micro:
        out += f".{micro:06d}".rstrip("0")
    return out + "Z"


_ISO_INTERVAL = re.compile(
    r"^P(?:(?P<y>-?\d+)Y)?(?:(?P<mo>-?\d+)M)?(?:(?P<d>-?\d+)D)?"
    r"(?:T(?:(?P<h>-?\d+)H)?(?:(?P<mi>-?\d+)M)?(?:(?P<s>-?\d+(?:\.\d+)?)S)?)?$"
)


def _interval(text: str) -> int | str:
    # IntervalStyle=iso_8601: "P1Y2M3DT4H5M6.5S"; Debezium's MicroDuration (365.25/12 days/month).
    match = _ISO_INTERVAL.match(text)
    if match is None:
        return text
    g = {k: v or "0" for k, v in match.groupdict().items()}
    months = int(g["y"]) * 12 + int(g["mo"])
    seconds_text = g["s"]
    whole, _, frac = seconds_text.partition(".")
    micros = int(whole) * 1_000_000 + (
        int((frac + "000000")[:6]) * (-1 if whole.startswith("-") else 1) if frac else 0
    )
    total = (
        round(months * _DAYS_PER_MONTH * _US_PER_DAY)
        + int(g["d"]) * _US_PER_DAY
        + (int(g["h"]) * 3600 + int(g["mi"]) * 60) * 1_000_000
        + micros
    )
    return total


_SCALARS: dict[int, Converter] = {
    BOOL: _bool,
    INT2: int,
    INT4: int,
    INT8: int,
    OID: int,
    FLOAT4: _float,
    FLOAT8: _float,
    NUMERIC: _identity,
    BYTEA: _bytea,
    DATE: _date,
    TIME: _time_us,
    TIMETZ: _timetz,
    TIMESTAMPTZ: _timestamptz,
    INTERVAL: _interval,
}


def scalar_converter(type_oid: int, typmod: int) -> Converter:
    """The converter of one non-array type; unknown types (enums, domains...) stay text."""
    if type_oid == TIMESTAMP:
        # Debezium's adaptive mode: precision 0-3 -> Timestamp (ms), else MicroTimestamp.
        return _timestamp_ms if 0 <= typmod <= 3 else _timestamp_us
    return _SCALARS.get(type_oid, _identity)


def converter(type_oid: int, typmod: int) -> Converter:
    """The converter of a column of type ``type_oid`` with modifier ``typmod``."""
    element = ARRAY_ELEMENT.get(type_oid)
    if element is None:
        return scalar_converter(type_oid, typmod)
    convert = scalar_converter(element, typmod)
    return lambda text: _convert_array(parse_array(text), convert)


def _convert_array(items: list[Any], convert: Converter) -> list[Any]:
    return [
        None
        if item is None
        else _convert_array(item, convert)
        if isinstance(item, list)
        else convert(item)
        for item in items
    ]


def parse_array(text: str) -> list[Any]:
    r"""Parse PostgreSQL's array text form (``{1,2,NULL}``, ``{{"a b","c\\"d"}}``) into lists.

    Elements are strings (``None`` for NULL); nested arrays are nested lists. A leading
    dimension decoration (``[0:1]=``) is skipped. Raises ``ValueError`` on malformed input.
    """
    pos = 0
    if text.startswith("["):
        pos = text.index("=") + 1
    try:
        result, end = _parse_array_at(text, pos)
    except IndexError:
        raise ValueError(f"unterminated array literal: {text!r}") from None
    if end != len(text):
        raise ValueError(f"trailing characters in array literal at {end}: {text!r}")
    return result


def _parse_array_at(text: str, pos: int) -> tuple[list[Any], int]:
    if text[pos] != "{":
        raise ValueError(f"expected '{{' at {pos} in {text!r}")
    pos += 1
    items: list[Any] = []
    if text[pos] == "}":
        return items, pos + 1
    while True:
        char = text[pos]
        if char == "{":
            sub, pos = _parse_array_at(text, pos)
            items.append(sub)
        elif char == '"':
            pos += 1
            chunk: list[str] = []
            while text[pos] != '"':
                if text[pos] == "\\":
                    pos += 1
                chunk.append(text[pos])
                pos += 1
            items.append("".join(chunk))
            pos += 1
        else:
            # Every mapped array type delimits with ','; PostgreSQL does not quote other
            # characters (';' included), so only ',' and '}' end an unquoted element.
            start = pos
            while text[pos] not in ",}":
                pos += 1
            raw = text[start:pos].strip()
            items.append(None if raw == "NULL" else raw)
        if text[pos] == "}":
            return items, pos + 1
        if text[pos] != ",":
            raise ValueError(f"expected ',' or '}}' at {pos} in {text!r}")
        pos += 1
