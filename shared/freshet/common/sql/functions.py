"""The operators and functions of the expression language, as PostgreSQL's catalog declares them.

Each name maps to its overloads (:class:`Overload`: argument types, result type, implementation
on non-NULL Python values). The expression compiler picks an overload with PostgreSQL's own
resolution rules, so that, for instance, ``int4 + float4`` is ``float8`` and ``round(int4)`` is
``double precision`` exactly as in PostgreSQL. An overload whose ``impl`` is None exists in
PostgreSQL but is refused by Freshet (resolving to it raises a "not supported" error rather than
silently choosing another one).
"""

from __future__ import annotations

import functools
import hashlib
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from freshet.common.sql import casts
from freshet.common.sql import types as t
from freshet.common.sql.types import EvalError

ANYNONARRAY = "anynonarray"
"""A polymorphic argument: any non-array value, converted to text by its output function."""


@dataclass(frozen=True)
class Overload:
    args: tuple[str, ...]
    result: str
    impl: Callable[..., Any] | None
    strict: bool = True


OPERATORS: dict[tuple[str, int], list[Overload]] = {}
FUNCTIONS: dict[str, list[Overload]] = {}


def _op(name: str, args: tuple[str, ...], result: str, impl: Callable[..., Any] | None) -> None:
    OPERATORS.setdefault((name, len(args)), []).append(Overload(args, result, impl))


def _fn(names: str, args: tuple[str, ...], result: str, impl: Callable[..., Any] | None) -> None:
    for name in names.split():
        FUNCTIONS.setdefault(name, []).append(Overload(args, result, impl))


INTS = (t.INT2, t.INT4, t.INT8)
FLOATS = (t.FLOAT4, t.FLOAT8)
_RANK = {t.INT2: 0, t.INT4: 1, t.INT8: 2}

# --- integer arithmetic ----------------------------------------------------------------------


def _int_div(a: int, b: int) -> int:
    if b == 0:
        raise EvalError("division by zero")
    quotient = abs(a) // abs(b)
    return quotient if (a < 0) == (b < 0) else -quotient


def _int_mod(a: int, b: int) -> int:
    if b == 0:
        raise EvalError("division by zero")
    remainder = abs(a) % abs(b)
    return -remainder if a < 0 else remainder


def _checked(fn: Callable[[int, int], int], type: str) -> Callable[[int, int], int]:
    low, high = t.INT_RANGES[type]
    message = f"{t.INT_NAMES[type]} out of range"

    def op(a: int, b: int) -> int:
        result = fn(a, b)
        if not low <= result <= high:
            raise EvalError(message)
        return result

    return op


_INT_OPS: dict[str, Callable[[int, int], int]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": _int_div,
}
for _a in INTS:
    for _b in INTS:
        _result = _a if _RANK[_a] >= _RANK[_b] else _b
        for _name, _impl in _INT_OPS.items():
            _op(_name, (_a, _b), _result, _checked(_impl, _result))
    _op("%", (_a, _a), _a, _int_mod)
    _op("-", (_a,), _a, functools.partial(lambda type, v: t.check_int(-v, type), _a))
    _op("+", (_a,), _a, lambda v: v)

# --- float arithmetic ------------------------------------------------------------------------


def _float_op(name: str, type: str) -> Callable[[float, float], float]:
    fn = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}[name]

    def op(a: float, b: float) -> float:
        if name == "/" and b == 0:
            if math.isnan(a):
                return a
            raise EvalError("division by zero")
        try:
            result = fn(a, b)
        except OverflowError:
            raise EvalError("value out of range: overflow") from None
        if type == t.FLOAT4:
            result = t.float4(result)
        if math.isinf(result) and not (math.isinf(a) or math.isinf(b)):
            raise EvalError("value out of range: overflow")
        if (
            result == 0
            and a != 0
            and ((name == "*" and b != 0) or (name == "/" and not math.isinf(b)))
        ):
            raise EvalError("value out of range: underflow")
        return result

    return op


for _a in FLOATS:
    for _b in FLOATS:
        _result = t.FLOAT4 if _a == _b == t.FLOAT4 else t.FLOAT8
        for _name in "+-*/":
            _op(_name, (_a, _b), _result, _float_op(_name, _result))
    _op("-", (_a,), _a, operator.neg)
    _op("+", (_a,), _a, lambda v: v)

# --- numeric arithmetic ----------------------------------------------------------------------

_op("+", (t.NUMERIC, t.NUMERIC), t.NUMERIC, t.pg_numeric_add)
_op("-", (t.NUMERIC, t.NUMERIC), t.NUMERIC, t.pg_numeric_sub)
_op("*", (t.NUMERIC, t.NUMERIC), t.NUMERIC, t.pg_numeric_mul)
_op("/", (t.NUMERIC, t.NUMERIC), t.NUMERIC, t.numeric_div)
_op("%", (t.NUMERIC, t.NUMERIC), t.NUMERIC, t.numeric_mod)
_op("-", (t.NUMERIC,), t.NUMERIC, lambda v: t.numeric(v.copy_negate()))
_op("+", (t.NUMERIC,), t.NUMERIC, lambda v: v)

# --- dates, times, intervals -----------------------------------------------------------------


def _guard(fn: Callable[..., Any], what: str) -> Callable[..., Any]:
    def op(*args: Any) -> Any:
        try:
            return fn(*args)
        except (OverflowError, ValueError):
            raise EvalError(f"{what} out of range") from None

    return op


_MIDNIGHT = time()


def _time_plus(value: time, delta: timedelta) -> time:
    micros = (casts.time_to_interval(value) + delta) // timedelta(microseconds=1)
    micros %= 86_400_000_000
    return (datetime.min + timedelta(microseconds=micros)).time()


def _at_midnight(value: date) -> datetime:
    return datetime.combine(value, _MIDNIGHT)


_op("+", (t.DATE, t.INT4), t.DATE, _guard(lambda d, n: d + timedelta(days=n), "date"))
_op("+", (t.INT4, t.DATE), t.DATE, _guard(lambda n, d: d + timedelta(days=n), "date"))
_op("-", (t.DATE, t.INT4), t.DATE, _guard(lambda d, n: d - timedelta(days=n), "date"))
_op("-", (t.DATE, t.DATE), t.INT4, lambda a, b: (a - b).days)
_op("+", (t.DATE, t.INTERVAL), t.TIMESTAMP, _guard(lambda d, i: _at_midnight(d) + i, "timestamp"))
_op("+", (t.INTERVAL, t.DATE), t.TIMESTAMP, _guard(lambda i, d: _at_midnight(d) + i, "timestamp"))
_op("-", (t.DATE, t.INTERVAL), t.TIMESTAMP, _guard(lambda d, i: _at_midnight(d) - i, "timestamp"))
_op("+", (t.DATE, t.TIME), t.TIMESTAMP, lambda d, tm: datetime.combine(d, tm))
_op("+", (t.TIME, t.DATE), t.TIMESTAMP, lambda tm, d: datetime.combine(d, tm))
_op("+", (t.TIME, t.INTERVAL), t.TIME, _time_plus)
_op("+", (t.INTERVAL, t.TIME), t.TIME, lambda i, tm: _time_plus(tm, i))
_op("-", (t.TIME, t.INTERVAL), t.TIME, lambda tm, i: _time_plus(tm, -i))
_op(
    "-",
    (t.TIME, t.TIME),
    t.INTERVAL,
    lambda a, b: casts.time_to_interval(a) - casts.time_to_interval(b),
)
for _ts in (t.TIMESTAMP, t.TIMESTAMPTZ):
    _op("+", (_ts, t.INTERVAL), _ts, _guard(operator.add, "timestamp"))
    _op("+", (t.INTERVAL, _ts), _ts, _guard(operator.add, "timestamp"))
    _op("-", (_ts, t.INTERVAL), _ts, _guard(operator.sub, "timestamp"))
    _op("-", (_ts, _ts), t.INTERVAL, operator.sub)
_op("+", (t.INTERVAL, t.INTERVAL), t.INTERVAL, _guard(operator.add, "interval"))
_op("-", (t.INTERVAL, t.INTERVAL), t.INTERVAL, _guard(operator.sub, "interval"))
_op("-", (t.INTERVAL,), t.INTERVAL, _guard(operator.neg, "interval"))


# interval * float8 cascades fractions through PostgreSQL's separate month/day/time fields,
# which a timedelta does not keep: refused rather than approximated.
_op("*", (t.INTERVAL, t.FLOAT8), t.INTERVAL, None)
_op("*", (t.FLOAT8, t.INTERVAL), t.INTERVAL, None)
_op("/", (t.INTERVAL, t.FLOAT8), t.INTERVAL, None)

# --- comparison ------------------------------------------------------------------------------

COMPARISONS = {
    "=": operator.eq,
    "<>": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def comparison(name: str, type: str) -> Callable[[Any, Any], bool]:
    """The comparison ``name`` of two non-NULL values of ``type`` (PostgreSQL's btree order)."""
    compare = COMPARISONS[name]
    key = t.sort_key(type)
    if key is t.sort_key(t.TEXT):
        return compare

    def op(a: Any, b: Any) -> bool:
        return compare(key(a), key(b))

    return op


_ORDERED = (
    t.BOOL,
    t.NUMERIC,
    t.TEXT,
    t.DATE,
    t.TIME,
    t.TIMESTAMP,
    t.TIMESTAMPTZ,
    t.INTERVAL,
    t.UUID,
    t.JSONB,
    t.BYTEA,
)
for _name in COMPARISONS:
    for _type in _ORDERED:
        _op(_name, (_type, _type), t.BOOL, comparison(_name, _type))
    for _a in INTS:
        for _b in INTS:
            _op(_name, (_a, _b), t.BOOL, COMPARISONS[_name])
    for _a in FLOATS:
        for _b in FLOATS:
            _op(_name, (_a, _b), t.BOOL, comparison(_name, t.FLOAT8))

# --- text ------------------------------------------------------------------------------------


def pg_lower(text: str) -> str:
    """``lower()``: a character at a time, as towlower() does (no 'ß' -> 'ss' expansions)."""
    if text.isascii():
        return text.lower()
    return "".join(_lower_char(c) for c in text)


def pg_upper(text: str) -> str:
    if text.isascii():
        return text.upper()
    return "".join(_upper_char(c) for c in text)


@functools.lru_cache(maxsize=4096)
def _lower_char(c: str) -> str:
    low = c.lower()
    return low if len(low) == 1 else low[0]


@functools.lru_cache(maxsize=4096)
def _upper_char(c: str) -> str:
    up = c.upper()
    return up if len(up) == 1 else c


def _initcap(text: str) -> str:
    out, in_word = [], False
    for c in text:
        out.append(_lower_char(c) if in_word else _upper_char(c))
        in_word = c.isalnum()
    return "".join(out)


def _substr(text: str, start: int, length: int | None = None) -> str:
    if length is None:
        return text[max(start, 1) - 1 :]
    if length < 0:
        raise EvalError("negative substring length not allowed")
    begin = max(start, 1)
    end = max(start + length, begin)
    return text[begin - 1 : end - 1]


def _position(text: str, sub: str) -> int:
    return text.find(sub) + 1


def _trim(side: str) -> Callable[..., str]:
    def trim(text: str, chars: str = " ") -> str:
        if side == "both":
            return text.strip(chars)
        return text.lstrip(chars) if side == "left" else text.rstrip(chars)

    return trim


def _replace(text: str, old: str, new: str) -> str:
    return text.replace(old, new) if old else text


def _left(text: str, n: int) -> str:
    return text[:n]


def _right(text: str, n: int) -> str:
    if n >= 0:
        return text[len(text) - n :] if n else ""
    return text[-n:]


def _split_part(text: str, delimiter: str, n: int) -> str:
    if n == 0:
        raise EvalError("field position must not be zero")
    parts = text.split(delimiter) if delimiter else [text]
    if text == "":
        return ""
    index = n - 1 if n > 0 else len(parts) + n
    return parts[index] if 0 <= index < len(parts) else ""


_MAX_TEXT = 1 << 28


def _pad(side: str) -> Callable[..., str]:
    def pad(text: str, length: int, fill: str = " ") -> str:
        if length <= 0:
            return ""
        if length > _MAX_TEXT:
            raise EvalError("requested length too large")
        if len(text) >= length or not fill:
            return text[:length]
        filling = (fill * (length // len(fill) + 1))[: length - len(text)]
        return filling + text if side == "left" else text + filling

    return pad


def _repeat(text: str, n: int) -> str:
    if n <= 0:
        return ""
    if len(text) * n > _MAX_TEXT:
        raise EvalError("requested length too large")
    return text * n


def _md5(value: str | bytes) -> str:
    data = value.encode() if isinstance(value, str) else value
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _chr(code: int) -> str:
    if code == 0:
        raise EvalError("null character not permitted")
    if not 0 < code <= 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        raise EvalError(
            "requested character too large for encoding"
            if code > 0
            else "character number must be positive"
        )
    return chr(code)


def _ascii(text: str) -> int:
    return ord(text[0]) if text else 0


def _translate(text: str, source: str, target: str) -> str:
    table: dict[int, int | None] = {}
    for i, c in enumerate(source):
        table.setdefault(ord(c), ord(target[i]) if i < len(target) else None)
    return text.translate(table)


def like_escape(pattern: str, escape: str) -> str:
    """The pattern with ``escape`` turned into backslash escapes (PostgreSQL's like_escape)."""
    if escape == "\\":
        return pattern
    if escape == "":
        return pattern.replace("\\", "\\\\")
    if len(escape) != 1:
        raise EvalError("invalid escape string: it must be empty or one character")
    out, after_escape = [], False
    for c in pattern:
        if c == escape and not after_escape:
            out.append("\\")
            after_escape = True
        elif c == "\\":
            out.append("\\" if after_escape else "\\\\")
            after_escape = False
        else:
            out.append(c)
            after_escape = False
    return "".join(out)


def like(text: str, pattern: str) -> bool:
    """``text LIKE pattern`` with backslash escapes, exactly as PostgreSQL answers.

    The pattern is split at its ``%`` into fixed-length segments, matched first, last, then
    leftmost in between: linear, whatever the pattern (no regex backtracking). A pattern ending
    in a lone escape is an error only when matching reaches it, so such patterns run
    PostgreSQL's own matching algorithm.
    """
    if _dangling_escape(pattern):
        return _match_text(text, 0, pattern, 0) is True
    segments = _like_segments(pattern)
    first, first_len = segments[0]
    if len(segments) == 1:
        return first.fullmatch(text) is not None
    last, last_len = segments[-1]
    end = len(text) - last_len
    if end < first_len or first.match(text) is None or last.fullmatch(text, end) is None:
        return False
    pos = first_len
    for segment, length in segments[1:-1]:
        if length:
            found = segment.search(text, pos, end)
            if found is None:
                return False
            pos = found.end()
    return True


def _dangling_escape(pattern: str) -> bool:
    trailing = len(pattern) - len(pattern.rstrip("\\"))
    return trailing % 2 == 1


@functools.lru_cache(maxsize=1024)
def _like_segments(pattern: str) -> list[tuple[re.Pattern[str], int]]:
    segments: list[list[str]] = [[]]
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            segments[-1].append(re.escape(pattern[i + 1]))
            i += 1
        elif c == "%":
            segments.append([])
        else:
            segments[-1].append("." if c == "_" else re.escape(c))
        i += 1
    return [(re.compile("".join(seg), re.DOTALL), len(seg)) for seg in segments]


_ESCAPE_AT_END = "LIKE pattern must not end with escape character"


def _match_text(text: str, ti: int, pattern: str, pi: int) -> bool | None:
    """MatchText of PostgreSQL's like_match.c: True, False, or None for "abort"."""
    tlen, plen = len(text), len(pattern)
    if pi == plen - 1 and pattern[pi] == "%" and ti <= tlen:
        return True
    while ti < tlen and pi < plen:
        c = pattern[pi]
        if c == "\\":
            pi += 1
            if pi >= plen:
                raise EvalError(_ESCAPE_AT_END)
            if pattern[pi] != text[ti]:
                return False
        elif c == "%":
            pi += 1
            while pi < plen:
                if pattern[pi] == "%":
                    pi += 1
                elif pattern[pi] == "_":
                    if ti >= tlen:
                        return None
                    ti += 1
                    pi += 1
                else:
                    break
            if pi >= plen:
                return True
            if pattern[pi] == "\\":
                if pi + 1 >= plen:
                    raise EvalError(_ESCAPE_AT_END)
                first = pattern[pi + 1]
            else:
                first = pattern[pi]
            while ti < tlen:
                if text[ti] == first:
                    matched = _match_text(text, ti, pattern, pi)
                    if matched is not False:
                        return matched
                ti += 1
            return None
        elif c != "_" and c != text[ti]:
            return False
        ti += 1
        pi += 1
    if ti < tlen:
        return False
    while pi < plen and pattern[pi] == "%":
        pi += 1
    return True if pi >= plen else None


def _ilike(text: str, pattern: str) -> bool:
    return like(pg_lower(text), pg_lower(pattern))


_op("~~", (t.TEXT, t.TEXT), t.BOOL, like)
_op("!~~", (t.TEXT, t.TEXT), t.BOOL, lambda s, p: not like(s, p))
_op("~~*", (t.TEXT, t.TEXT), t.BOOL, _ilike)
_op("!~~*", (t.TEXT, t.TEXT), t.BOOL, lambda s, p: not _ilike(s, p))
_op("||", (t.TEXT, t.TEXT), t.TEXT, operator.add)
_op("||", (t.TEXT, ANYNONARRAY), t.TEXT, operator.add)
_op("||", (ANYNONARRAY, t.TEXT), t.TEXT, operator.add)
_op("||", (t.BYTEA, t.BYTEA), t.BYTEA, operator.add)
_op("||", (t.JSONB, t.JSONB), t.JSONB, None)

_fn("lower", (t.TEXT,), t.TEXT, pg_lower)
_fn("upper", (t.TEXT,), t.TEXT, pg_upper)
_fn("initcap", (t.TEXT,), t.TEXT, _initcap)
_fn("length char_length character_length", (t.TEXT,), t.INT4, len)
_fn("length octet_length", (t.BYTEA,), t.INT4, len)
_fn("octet_length", (t.TEXT,), t.INT4, lambda s: len(s.encode()))
_fn("substr substring", (t.TEXT, t.INT4), t.TEXT, _substr)
_fn("substr substring", (t.TEXT, t.INT4, t.INT4), t.TEXT, _substr)
_fn("substring", (t.TEXT, t.TEXT), t.TEXT, None)
_fn("substring", (t.TEXT, t.TEXT, t.TEXT), t.TEXT, None)
_fn("position strpos", (t.TEXT, t.TEXT), t.INT4, _position)
_fn("btrim", (t.TEXT,), t.TEXT, _trim("both"))
_fn("btrim", (t.TEXT, t.TEXT), t.TEXT, _trim("both"))
_fn("ltrim", (t.TEXT,), t.TEXT, _trim("left"))
_fn("ltrim", (t.TEXT, t.TEXT), t.TEXT, _trim("left"))
_fn("rtrim", (t.TEXT,), t.TEXT, _trim("right"))
_fn("rtrim", (t.TEXT, t.TEXT), t.TEXT, _trim("right"))
_fn("replace", (t.TEXT, t.TEXT, t.TEXT), t.TEXT, _replace)
_fn("translate", (t.TEXT, t.TEXT, t.TEXT), t.TEXT, _translate)
_fn("left", (t.TEXT, t.INT4), t.TEXT, _left)
_fn("right", (t.TEXT, t.INT4), t.TEXT, _right)
_fn("split_part", (t.TEXT, t.TEXT, t.INT4), t.TEXT, _split_part)
_fn("lpad", (t.TEXT, t.INT4), t.TEXT, _pad("left"))
_fn("lpad", (t.TEXT, t.INT4, t.TEXT), t.TEXT, _pad("left"))
_fn("rpad", (t.TEXT, t.INT4), t.TEXT, _pad("right"))
_fn("rpad", (t.TEXT, t.INT4, t.TEXT), t.TEXT, _pad("right"))
_fn("repeat", (t.TEXT, t.INT4), t.TEXT, _repeat)
_fn("reverse", (t.TEXT,), t.TEXT, lambda s: s[::-1])
_fn("md5", (t.TEXT,), t.TEXT, _md5)
_fn("md5", (t.BYTEA,), t.TEXT, _md5)
_fn("starts_with", (t.TEXT, t.TEXT), t.BOOL, str.startswith)
_fn("ascii", (t.TEXT,), t.INT4, _ascii)
_fn("chr", (t.INT4,), t.TEXT, _chr)

# --- numbers ---------------------------------------------------------------------------------


def _float_round(value: float) -> float:
    # rint(): half to even, like Python's round() on floats.
    return float(round(value)) if math.isfinite(value) else value


def _float_unary(fn: Callable[[float], float]) -> Callable[[float], float]:
    def op(value: float) -> float:
        return fn(value) if math.isfinite(value) else value

    return op


def _numeric_floor(value: Decimal) -> Decimal:
    return value if not value.is_finite() else t.numeric(Decimal(math.floor(value)))


def _numeric_ceil(value: Decimal) -> Decimal:
    return value if not value.is_finite() else t.numeric(Decimal(math.ceil(value)))


def _numeric_sign(value: Decimal) -> Decimal:
    if value.is_nan():
        return value
    return Decimal((value > 0) - (value < 0))


def _float_sign(value: float) -> float:
    return float((value > 0) - (value < 0))  # NaN: 0, as PostgreSQL's float8 sign()


def _sqrt(value: float) -> float:
    if value < 0:
        raise EvalError("cannot take square root of a negative number")
    return math.sqrt(value)


def _power(base: float, exponent: float) -> float:
    if base == 0 and exponent < 0:
        raise EvalError("zero raised to a negative power is undefined")
    if base < 0 and not float(exponent).is_integer() and math.isfinite(exponent):
        raise EvalError("a negative number raised to a non-integer power yields a complex result")
    try:
        result = math.pow(base, exponent)
    except OverflowError:
        raise EvalError("value out of range: overflow") from None
    if result == 0 and base != 0 and math.isfinite(base) and math.isfinite(exponent):
        raise EvalError("value out of range: underflow")
    return result


def _abs_int(type: str) -> Callable[[int], int]:
    return lambda v: t.check_int(abs(v), type)


for _a in INTS:
    _fn("abs", (_a,), _a, _abs_int(_a))
    _fn("mod", (_a, _a), _a, _int_mod)
for _a in FLOATS:
    _fn("abs", (_a,), _a, abs)
_fn("abs", (t.NUMERIC,), t.NUMERIC, Decimal.copy_abs)
_fn("mod", (t.NUMERIC, t.NUMERIC), t.NUMERIC, t.numeric_mod)
_fn("round", (t.FLOAT8,), t.FLOAT8, _float_round)
_fn("round", (t.NUMERIC,), t.NUMERIC, lambda v: t.round_numeric(v, 0))
_fn("round", (t.NUMERIC, t.INT4), t.NUMERIC, t.round_numeric)
_fn("trunc", (t.FLOAT8,), t.FLOAT8, _float_unary(lambda v: float(math.trunc(v))))
_fn("trunc", (t.NUMERIC,), t.NUMERIC, t.numeric_trunc)
_fn("trunc", (t.NUMERIC, t.INT4), t.NUMERIC, t.numeric_trunc)
_fn("floor", (t.FLOAT8,), t.FLOAT8, _float_unary(lambda v: float(math.floor(v))))
_fn("floor", (t.NUMERIC,), t.NUMERIC, _numeric_floor)
_fn("ceil ceiling", (t.FLOAT8,), t.FLOAT8, _float_unary(lambda v: float(math.ceil(v))))
_fn("ceil ceiling", (t.NUMERIC,), t.NUMERIC, _numeric_ceil)
_fn("sign", (t.FLOAT8,), t.FLOAT8, _float_sign)
_fn("sign", (t.NUMERIC,), t.NUMERIC, _numeric_sign)
_fn("sqrt", (t.FLOAT8,), t.FLOAT8, _sqrt)
_fn("sqrt", (t.NUMERIC,), t.NUMERIC, None)
_fn("power pow", (t.FLOAT8, t.FLOAT8), t.FLOAT8, _power)
_fn("power pow", (t.NUMERIC, t.NUMERIC), t.NUMERIC, None)

# --- dates -----------------------------------------------------------------------------------

_UNITS = {
    "microseconds": "microseconds microsecond microsecon us usec usecs useconds",
    "milliseconds": "milliseconds millisecond millisecon ms msec msecs mseconds",
    "second": "second seconds s sec secs",
    "minute": "minute minutes m min mins",
    "hour": "hour hours h hr hrs",
    "day": "day days d",
    "week": "week weeks w",
    "month": "month months mon mons",
    "quarter": "quarter qtr",
    "year": "year years y yr yrs",
    "decade": "decade decades dec decs",
    "century": "century centuries c cent",
    "millennium": "millennium millennia mil mils millenniums",
    "epoch": "epoch",
    "dow": "dow",
    "doy": "doy",
    "isodow": "isodow",
    "isoyear": "isoyear",
    "julian": "julian j jd",
    "timezone": "timezone",
    "timezone_hour": "timezone_hour timezone_h",
    "timezone_minute": "timezone_minute timezone_m",
}
UNIT_NAMES = {alias: unit for unit, aliases in _UNITS.items() for alias in aliases.split()}
"""Every spelling PostgreSQL accepts for a date/time unit -> its canonical name."""

TRUNC_UNITS = [
    "microseconds",
    "milliseconds",
    "second",
    "minute",
    "hour",
    "day",
    "week",
    "month",
    "quarter",
    "year",
    "decade",
    "century",
    "millennium",
]
_DATE_FIELDS = [
    "day",
    "month",
    "year",
    "quarter",
    "week",
    "dow",
    "isodow",
    "doy",
    "isoyear",
    "decade",
    "century",
    "millennium",
    "julian",
    "epoch",
]
_TIME_FIELDS = ["microseconds", "milliseconds", "second", "minute", "hour", "epoch"]


def unit(text: str, type: str, allowed: list[str] | tuple[str, ...]) -> str:
    """The canonical unit named ``text`` for a value of ``type``; :class:`EvalError` if invalid."""
    name = UNIT_NAMES.get(text.strip().lower())
    if name is None:
        raise EvalError(f'unit "{text}" not recognized for type {t.sql_name(type)}')
    if name not in allowed:
        raise EvalError(f'unit "{text}" not supported for type {t.sql_name(type)}')
    return name


def _trunc_datetime(name: str, value: datetime) -> datetime:
    if name == "microseconds":
        return value
    if name == "milliseconds":
        return value.replace(microsecond=value.microsecond // 1000 * 1000)
    if name == "second":
        return value.replace(microsecond=0)
    if name == "minute":
        return value.replace(second=0, microsecond=0)
    if name == "hour":
        return value.replace(minute=0, second=0, microsecond=0)
    day = value.replace(hour=0, minute=0, second=0, microsecond=0)
    if name == "day":
        return day
    if name == "week":
        return day - timedelta(days=day.weekday())
    if name == "month":
        return day.replace(day=1)
    if name == "quarter":
        return day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)
    year = day.year
    if name == "decade":
        year -= year % 10
    elif name == "century":
        year = (year + 99) // 100 * 100 - 99
    elif name == "millennium":
        year = (year + 999) // 1000 * 1000 - 999
    try:
        return day.replace(year=year, month=1, day=1)
    except ValueError:
        raise EvalError("timestamp out of range") from None


def _date_trunc(type: str) -> Callable[[str, datetime], datetime]:
    def trunc(field: str, value: datetime) -> datetime:
        return _trunc_datetime(unit(field, type, TRUNC_UNITS), value)

    return trunc


_fn("date_trunc", (t.TEXT, t.TIMESTAMP), t.TIMESTAMP, _date_trunc(t.TIMESTAMP))
_fn("date_trunc", (t.TEXT, t.TIMESTAMPTZ), t.TIMESTAMPTZ, _date_trunc(t.TIMESTAMPTZ))
_fn("date_trunc", (t.TEXT, t.INTERVAL), t.INTERVAL, None)

_US = 1_000_000
_EPOCH = datetime(1970, 1, 1)
_JULIAN_EPOCH_OFFSET = 2440588  # date2j(1970-01-01)


def _date_field(name: str, value: date) -> int:
    year = value.year
    if name == "day":
        return value.day
    if name == "month":
        return value.month
    if name == "year":
        return year
    if name == "quarter":
        return (value.month - 1) // 3 + 1
    if name == "week":
        return value.isocalendar()[1]
    if name == "isoyear":
        return value.isocalendar()[0]
    if name == "dow":
        return value.isoweekday() % 7
    if name == "isodow":
        return value.isoweekday()
    if name == "doy":
        return value.timetuple().tm_yday
    if name == "decade":
        return year // 10
    if name == "century":
        return (year + 99) // 100
    if name == "millennium":
        return (year + 999) // 1000
    if name == "julian":
        return value.toordinal() - date(1970, 1, 1).toordinal() + _JULIAN_EPOCH_OFFSET
    raise AssertionError(name)


def _time_micros(value: time) -> int:
    return ((value.hour * 60 + value.minute) * 60 + value.second) * _US + value.microsecond


def _clock_field(name: str, value: time) -> Decimal:
    seconds_us = value.second * _US + value.microsecond
    if name == "microseconds":
        return Decimal(seconds_us)
    if name == "milliseconds":
        return Decimal(seconds_us).scaleb(-3, t.EXACT)
    if name == "second":
        return Decimal(seconds_us).scaleb(-6, t.EXACT)
    if name == "minute":
        return Decimal(value.minute)
    if name == "hour":
        return Decimal(value.hour)
    return Decimal(_time_micros(value)).scaleb(-6, t.EXACT)  # epoch


_ZONE_FIELDS = ["timezone", "timezone_hour", "timezone_minute"]
_FIELDS = {
    t.DATE: _DATE_FIELDS,
    t.TIME: _TIME_FIELDS,
    # An interval from a change event is a count of microseconds: its day and hour fields
    # (which PostgreSQL keeps apart) are unknown, so only the epoch is extracted.
    t.INTERVAL: ["epoch"],
    t.TIMESTAMP: _DATE_FIELDS + _TIME_FIELDS,
    t.TIMESTAMPTZ: _DATE_FIELDS + _TIME_FIELDS + _ZONE_FIELDS,
}


def check_unit(function: str, field: str, type: str) -> None:
    """:class:`EvalError` unless ``field`` is a unit of ``function`` for a ``type`` value."""
    if function == "date_trunc":
        unit(field, type, TRUNC_UNITS)
    else:
        unit(
            field,
            type,
            _FIELDS[t.TIMESTAMP if function == "date_part" and type == t.DATE else type],
        )


def extract(field: str, value: Any, type: str) -> Decimal:
    """``EXTRACT(field FROM value)`` as the numeric PostgreSQL 14+ returns."""
    name = unit(field, type, _FIELDS[type])
    if type == t.DATE:
        if name == "epoch":
            return Decimal((value - date(1970, 1, 1)).days * 86_400)
        return Decimal(_date_field(name, value))
    if type == t.TIME:
        return _clock_field(name, value)
    if type == t.INTERVAL:
        return Decimal(value // timedelta(microseconds=1)).scaleb(-6, t.EXACT)
    naive = value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    if name in _ZONE_FIELDS:
        return Decimal(0)  # the session's time zone is UTC
    if name == "epoch":
        return Decimal((naive - _EPOCH) // timedelta(microseconds=1)).scaleb(-6, t.EXACT)
    if name == "julian":
        day = Decimal(_date_field("julian", naive.date()))
        fraction = t.numeric_div(Decimal(_time_micros(naive.time())), Decimal(86_400 * _US))
        return t.pg_numeric_add(day, fraction)
    if name in _TIME_FIELDS:
        return _clock_field(name, naive.time())
    return Decimal(_date_field(name, naive.date()))


def date_part(field: str, value: Any, type: str) -> float:
    """``date_part(field, value)``: double precision, computed as PostgreSQL does in floats."""
    if type == t.DATE:
        return date_part(field, _at_midnight(value), t.TIMESTAMP)
    if type == t.INTERVAL:
        unit(field, type, ("epoch",))
        return (value // timedelta(microseconds=1)) / 1_000_000.0
    name = UNIT_NAMES.get(field.strip().lower())
    if type == t.TIME:
        moment = value
    else:
        naive = value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
        moment = naive.time()
        if name == "epoch":
            return ((naive - _EPOCH) // timedelta(microseconds=1)) / 1_000_000.0
        if name == "julian":
            day = _date_field("julian", naive.date())
            seconds = (moment.hour * 60 + moment.minute) * 60 + moment.second
            return day + (seconds + moment.microsecond / 1_000_000.0) / 86_400.0
    if name == "second":
        return moment.second + moment.microsecond / 1_000_000.0
    if name == "milliseconds":
        return moment.second * 1000.0 + moment.microsecond / 1000.0
    if name == "epoch" and type == t.TIME:
        return _time_micros(moment) / 1_000_000.0
    return float(extract(field, value, type))


_DATETIMES = (t.DATE, t.TIME, t.TIMESTAMP, t.TIMESTAMPTZ, t.INTERVAL)
for _type in _DATETIMES:
    _fn(
        "extract",
        (t.TEXT, _type),
        t.NUMERIC,
        functools.partial(lambda type, f, v: extract(f, v, type), _type),
    )
    _fn(
        "date_part",
        (t.TEXT, _type),
        t.FLOAT8,
        functools.partial(lambda type, f, v: date_part(f, v, type), _type),
    )


def _make_date(year: int, month: int, day: int) -> date:
    try:
        return date(year, month, day)
    except ValueError:
        raise EvalError(f"date field value out of range: {year}-{month:02d}-{day:02d}") from None


_fn("make_date", (t.INT4, t.INT4, t.INT4), t.DATE, _make_date)

# --- json ------------------------------------------------------------------------------------


def _json_get(value: Any, key: Any) -> Any:
    if isinstance(key, str):
        return value.get(key) if isinstance(value, dict) else None
    if isinstance(value, list):
        index = key if key >= 0 else len(value) + key
        return value[index] if 0 <= index < len(value) else None
    return None


def _jsonb_get(value: Any, key: Any) -> Any:
    # jsonb stores a scalar as a one-element array: element 0 (or -1) of a scalar is itself.
    if isinstance(key, int) and not isinstance(value, dict | list):
        return value if key in (0, -1) else None
    return _json_get(value, key)


def _get_text(get: Callable[[Any, Any], Any]) -> Callable[[Any, Any], str | None]:
    def get_text(value: Any, key: Any) -> str | None:
        item = get(value, key)
        if item is None or isinstance(item, str):
            return item
        return casts.json_out(item)

    return get_text


def _json_typeof(value: Any) -> str:
    kind = casts.json_kind(value)
    return "number" if kind == "numeric" else kind


for _json, _get in ((t.JSON, _json_get), (t.JSONB, _jsonb_get)):
    for _key in (t.TEXT, t.INT4):
        _op("->", (_json, _key), _json, _get)
        _op("->>", (_json, _key), t.TEXT, _get_text(_get))
    _fn(f"{_json}_typeof", (_json,), t.TEXT, _json_typeof)

AGGREGATES = frozenset(
    [
        "count",
        "sum",
        "avg",
        "min",
        "max",
        "bool_and",
        "bool_or",
        "every",
        "array_agg",
        "string_agg",
        "json_agg",
        "jsonb_agg",
        "json_object_agg",
        "jsonb_object_agg",
        "stddev",
        "stddev_pop",
        "stddev_samp",
        "variance",
        "var_pop",
        "var_samp",
        "bit_and",
        "bit_or",
        "bit_xor",
        "xmlagg",
        "percentile_cont",
        "percentile_disc",
        "mode",
        "corr",
        "covar_pop",
        "covar_samp",
        "regr_avgx",
        "regr_avgy",
        "regr_count",
        "regr_intercept",
        "regr_r2",
        "regr_slope",
        "regr_sxx",
        "regr_sxy",
        "regr_syy",
        "any_value",
        "range_agg",
        "range_intersect_agg",
    ]
)
"""PostgreSQL's aggregate functions: only the view compiler may handle these."""

NONDETERMINISTIC = frozenset(
    [
        "now",
        "current_timestamp",
        "current_date",
        "current_time",
        "localtime",
        "localtimestamp",
        "clock_timestamp",
        "statement_timestamp",
        "transaction_timestamp",
        "timeofday",
        "random",
        "setseed",
        "gen_random_uuid",
        "uuid_generate_v1",
        "uuid_generate_v4",
        "nextval",
        "currval",
        "lastval",
        "txid_current",
        "pg_current_xact_id",
        "pg_backend_pid",
        "current_user",
        "session_user",
        "user",
        "current_role",
        "current_schema",
        "current_catalog",
        "current_database",
        "inet_client_addr",
        "age",
    ]
)
"""Functions whose value depends on when or where they run."""


def _now() -> datetime:
    return datetime.now(UTC)


VOLATILE: dict[str, tuple[str, Callable[[], Any]]] = {
    "now": (t.TIMESTAMPTZ, _now),
    "current_timestamp": (t.TIMESTAMPTZ, _now),
    "transaction_timestamp": (t.TIMESTAMPTZ, _now),
    "statement_timestamp": (t.TIMESTAMPTZ, _now),
    "clock_timestamp": (t.TIMESTAMPTZ, _now),
    "current_date": (t.DATE, lambda: _now().date()),
    "localtimestamp": (t.TIMESTAMP, lambda: _now().replace(tzinfo=None)),
}
"""The non-deterministic functions available when determinism is not required (pipelines):
each call reads the clock (UTC) of the machine evaluating it."""
