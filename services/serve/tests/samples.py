"""Random values of every view type, as the view engine holds them (see freshet.common.sql.types)."""

from __future__ import annotations

import random
import struct
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any


def _int(bits: int) -> Callable[[random.Random], int]:
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1

    def gen(r: random.Random) -> int:
        return r.choice([low, high, 0, -1, 1, r.randint(-100, 100), r.randint(low, high)])

    return gen


def _numeric(r: random.Random) -> Decimal:
    special = [
        "NaN",
        "Infinity",
        "-Infinity",
        "0",
        "0.00",
        "-0.0",
        "1",
        "1.0",
        "1.00",
        "10",
        "100.0",
    ]
    if r.random() < 0.25:
        return Decimal(r.choice(special))
    digits = tuple(r.randint(0, 9) for _ in range(r.randint(1, 40)))
    return Decimal((r.randint(0, 1), digits, -r.randint(0, 25)))


def _float8(r: random.Random) -> float:
    special = [float("nan"), float("inf"), float("-inf"), 0.0, -0.0, 5e-324, -1.5, 1e308]
    if r.random() < 0.25:
        return r.choice(special)
    return r.choice(
        [r.uniform(-1e6, 1e6), r.gauss(0, 1), r.uniform(-1, 1) * 10 ** r.randint(-30, 30)]
    )


def _float4(r: random.Random) -> float:
    value = _float8(r)
    if value != value or value in (float("inf"), float("-inf")):
        return value
    try:
        return float(struct.unpack(">f", struct.pack(">f", value))[0])
    except OverflowError:
        return 0.0


def _text(r: random.Random) -> str:
    alphabet = ["a", "b", "ab", "é", "ß", "Z", "0", " ", "日本", "😀", "\t", "~", "\x7f"]
    return "".join(r.choice(alphabet) for _ in range(r.randint(0, 5)))


def _bytea(r: random.Random) -> bytes:
    return bytes(r.choice([0, 1, 0xFE, 0xFF, r.randint(0, 255)]) for _ in range(r.randint(0, 5)))


def _date(r: random.Random) -> date:
    return date(1, 1, 1) + timedelta(days=r.randint(0, 3_652_058))


def _time(r: random.Random) -> time:
    micros = r.choice([0, 86_399_999_999, r.randint(0, 86_399_999_999)])
    seconds, micro = divmod(micros, 1_000_000)
    return time(seconds // 3600, seconds // 60 % 60, seconds % 60, micro)


def _timetz(r: random.Random) -> str:
    return _time(r).isoformat() + "Z"  # ingest's form: ISO-8601 in UTC


def _timestamp(r: random.Random) -> datetime:
    return datetime(1, 1, 1) + timedelta(microseconds=r.randint(0, 315_537_897_599_999_999))


def _timestamptz(r: random.Random) -> datetime:
    return _timestamp(r).replace(tzinfo=UTC)


def _interval(r: random.Random) -> timedelta:
    return timedelta(
        microseconds=r.choice(
            [0, -1, 1, r.randint(-(10**15), 10**15), r.randint(-86_400_000_000, 86_400_000_000)]
        )
    )


def _uuid(r: random.Random) -> str:
    return str(uuid.UUID(int=r.getrandbits(128)))


def _jsonb(r: random.Random) -> Any:
    return r.choice([{"a": 1, "b": [1, 2.5, None]}, [1, "x"], "text", 12, True, {"z": {"y": "ü"}}])


SCALARS: dict[str, Callable[[random.Random], Any]] = {
    "bool": lambda r: r.random() < 0.5,
    "int2": _int(16),
    "int4": _int(32),
    "int8": _int(64),
    "numeric": _numeric,
    "float4": _float4,
    "float8": _float8,
    "text": _text,
    "uuid": _uuid,
    "bytea": _bytea,
    "date": _date,
    "time": _time,
    "timetz": _timetz,
    "timestamp": _timestamp,
    "timestamptz": _timestamptz,
    "interval": _interval,
    "jsonb": _jsonb,
}

ORDERED = [t for t in SCALARS if t != "jsonb"]


def value(type_: str, r: random.Random, nulls: float = 0.1) -> Any:
    """A random value of ``type_`` (``None`` with probability ``nulls``); arrays one-dimensional."""
    if r.random() < nulls:
        return None
    if type_.endswith("[]"):
        element = type_[:-2]
        return [value(element, r, nulls=0.2) for _ in range(r.randint(0, 4))]
    return SCALARS[type_](r)
