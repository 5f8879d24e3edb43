"""The expression compiler against the real PostgreSQL: same expression, same rows, same values.

Every expression of :data:`EXPRESSIONS` runs as ``SELECT <expr> FROM t`` in PostgreSQL and,
compiled by Freshet, over the same rows decoded the way a change event carries them (the
column's text output through ingest's converter, then :func:`types.decoder`). Both results are
brought to one JSON form (PostgreSQL's through the same ingest path, then both through
:func:`types.encoder`) and must be equal, type included. Where PostgreSQL raises an error for a
row, Freshet must raise :class:`EvalError` for that row; where PostgreSQL refuses the
expression outright, Freshet must refuse it with :class:`SqlError`.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg.types.string import TextLoader

from freshet.common.sql import casts, types
from freshet.common.sql.errors import SqlError
from freshet.common.sql.expr import Compiled, EvalError, compile_expr, parse_expression
from freshet.ingest.sources.postgres.values import SESSION_OPTIONS, converter

COLUMNS = {
    "i2": "smallint",
    "i4": "integer",
    "i8": "bigint",
    "n": "numeric",
    "n2": "numeric(10,2)",
    "f4": "real",
    "f8": "double precision",
    "s": "text",
    "p": "text",
    "v": "varchar(20)",
    "w": "text",
    "b": "boolean",
    "d": "date",
    "ts": "timestamp",
    "ts0": "timestamp(0)",
    "tz": "timestamptz",
    "tm": "time",
    "iv": "interval",
    "u": "uuid",
    "j": "jsonb",
    "js": "json",
    "by": "bytea",
    "ia": "integer[]",
    "ta": "text[]",
}

_TEXT_OIDS = (
    16, 17, 18, 19, 20, 21, 23, 25, 26, 114, 700, 701, 705, 1042, 1043, 1082, 1083, 1114, 1184,
    1186, 1266, 1700, 2950, 3802, 1000, 1005, 1007, 1009, 1016, 1021, 1022, 1231, 1182, 1115,
    1185, 2951, 3807,
)  # fmt: skip


def _maybe(rng: random.Random, value: Any, null_rate: float = 0.12) -> Any:
    return None if rng.random() < null_rate else value


def _text(rng: random.Random, alphabet: str, max_len: int = 8) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, max_len)))


def _numeric(rng: random.Random) -> Decimal:
    scale = rng.randint(0, 6)
    digits = rng.randint(1, 14)
    unscaled = rng.randint(-(10**digits), 10**digits)
    return Decimal(unscaled).scaleb(-scale)


def _row(rng: random.Random) -> dict[str, Any]:
    ints = [0, 1, -1, 2, -2, 7, -7, 10, 100, -100]
    day = date(1995, 1, 1) + timedelta(days=rng.randint(0, 14000))
    moment = datetime(1995, 1, 1) + timedelta(microseconds=rng.randint(0, 10**15))
    if rng.random() < 0.3:
        moment = moment.replace(microsecond=0)
    return {
        "i2": _maybe(rng, rng.choice([*ints, 32767, -32768, rng.randint(-300, 300)])),
        "i4": _maybe(
            rng, rng.choice([*ints, 2147483647, -2147483648, rng.randint(-(10**6), 10**6)])
        ),
        "i8": _maybe(rng, rng.choice([*ints, 2**63 - 1, -(2**63), rng.randint(-(10**12), 10**12)])),
        "n": _maybe(
            rng,
            rng.choice(
                [
                    _numeric(rng),
                    _numeric(rng),
                    Decimal("0"),
                    Decimal("2.5"),
                    Decimal("-2.5"),
                    Decimal("0.001"),
                    Decimal("1E+3"),
                    Decimal("NaN"),
                    Decimal("Infinity"),
                ]
            ),
        ),
        "n2": _maybe(rng, round(_numeric(rng) % 10**8, 2)),
        "f4": _maybe(rng, rng.choice([0.0, 1.5, 0.1, -2.5, 1e10, rng.uniform(-1000, 1000)])),
        "f8": _maybe(
            rng,
            rng.choice(
                [
                    0.0,
                    0.5,
                    2.5,
                    -3.5,
                    0.1,
                    1e300,
                    1e-300,
                    float("nan"),
                    float("inf"),
                    rng.uniform(-1e6, 1e6),
                ]
            ),
        ),
        "s": _maybe(rng, _text(rng, "abcXYZ %_\\'é0 -,")),
        "p": _maybe(rng, _text(rng, "ab%_\\", 5)),
        "v": _maybe(rng, _text(rng, "abc 12ÅÉ", 12)),
        "w": _maybe(rng, _text(rng, "aZ9_-' .ßİıÿŸǅﬁΣσςДжÆæ€😀\u0301\t", 10)),
        "b": _maybe(rng, rng.choice([True, False])),
        "d": _maybe(rng, rng.choice([day, date(2000, 2, 29), date(2024, 12, 31)])),
        "ts": _maybe(rng, moment),
        "ts0": _maybe(rng, moment),
        "tz": _maybe(rng, (moment + timedelta(seconds=rng.randint(0, 86400))).replace(tzinfo=UTC)),
        "tm": _maybe(rng, rng.choice([time(0), time(23, 59, 59, 999999), moment.time()])),
        "iv": _maybe(
            rng,
            rng.choice(
                [
                    timedelta(0),
                    timedelta(days=1, hours=2),
                    timedelta(microseconds=rng.randint(-(10**12), 10**12)),
                ]
            ),
        ),
        "u": _maybe(rng, uuid.UUID(int=rng.getrandbits(128))),
        "j": _maybe(
            rng,
            Jsonb(
                rng.choice(
                    [
                        {
                            "a": rng.randint(-5, 5),
                            "b": _text(rng, "xy"),
                            "c": [1, "two", None, True],
                        },
                        [1, 2, 3],
                        "str",
                        42,
                        {"a": None},
                    ]
                )
            ),
        ),
        "js": _maybe(rng, Jsonb(rng.choice([{"a": 1, "b": "x"}, [10, 20], "s"]))),
        "by": _maybe(rng, rng.randbytes(rng.randint(0, 6))),
        "ia": _maybe(rng, rng.choice([[1, 2, 3], [], [None, 5]])),
        "ta": _maybe(rng, rng.choice([["a", "b c"], ['q"uote', None]])),
    }


ROWS = [_row(random.Random(seed)) for seed in range(60)]

# Every expression runs over every row. Columns: i2 i4 i8 n n2 f4 f8 s p v b d ts ts0 tz tm iv
# u j js by ia ta (see COLUMNS).
EXPRESSIONS = [
    # every column as it is
    *COLUMNS,
    # literals
    "1", "-2147483648", "2147483648", "9223372036854775808", "1.50", "1e3", "-0.0", "'abc'",
    "NULL", "TRUE", "1.5e-3",
    # arithmetic and promotion
    "i4 + 1", "i4 - i2", "i2 * i2", "i2 + i2", "i4 * i4", "i8 * i8", "i8 + i4", "i4 / 3",
    "i4 / i2", "-i4 / 2", "i4 % 3", "-i4 % 3", "i4 % i2", "i8 / i4", "-i4", "-i2", "-i8",
    "+i4", "i4 + n", "n + n2", "n - n2", "n * n2", "n * 3", "n / 3", "n / n2", "n2 / 7",
    "n % n2", "n / 7.000000000", "1 / 3.0", "10 / 4", "10.0 / 4", "i4 / 2.5", "2 * 3.5",
    "i4 + f8", "f8 * 2", "f8 / 3", "f8 - f4", "f4 + f4", "f4 * i4", "f4 / 3", "i4 + f4",
    "n + f8", "n + f4", "i8 + '5'", "'2' * i2", "-n", "i4 + 1.5", "i2 + 1", "f8 + n2",
    "0.1 + 0.2", "1e300 * f8", "f8 / i4", "n * 1e30 * n", "-(n * 1e30 * n)",
    "abs(n * -1e30 * n)", "n * n * n * n * n", "(n * 1e40) / 7", "(n * 1e40) / (n2 + 0.001)",
    "round(n * 1e40, 3)", "trunc(n * 1e30 / 7, 35)", "(n * 1e30)::float8", "round(n, 3000)", "round(n, 20000)", "trunc(n, 17000)", "round(n, -200000)",
    "(n * 1e30) % 7", "floor(n * 1e30 / 7)", "ceil(n * 1e30 / 7)", "sign(n * -1e30)",
    # comparison
    "i4 = 7", "i4 <> i2", "i4 != 0", "i2 < i8", "i4 <= n", "n > n2", "f8 >= 0.5", "f8 = f8",
    "f8 < 'Infinity'", "s = 'abc'", "s < 'b'", "s > v", "s >= p", "'abc' < 'abd'",
    "d < '2010-01-01'", "d = ts", "ts > tz", "d <= tz", "tm < '12:00'", "iv > '1 day'",
    "u = u", "u < 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "b = true", "b < true",
    "j = j", "j < '{\"a\": 1}'", "by < '\\x10'", "n = 2.5", "f4 = 0.1", "f4 = 1.5", "n = f8",
    "i8 = 9223372036854775807", "f8 = 'NaN'", "n = 'NaN'",
    # boolean logic
    "b AND i4 > 0", "b OR i4 > 0", "NOT b", "b AND NULL", "b OR NULL", "NOT (i4 > 0 AND s IS NULL)",
    "b AND 't'", "i4 > 0 AND i2 > 0 OR s LIKE 'a%'",
    # null and boolean tests
    "i4 IS NULL", "s IS NOT NULL", "b IS TRUE", "b IS NOT TRUE", "b IS FALSE",
    "b IS NOT FALSE", "b IS UNKNOWN", "b IS NOT UNKNOWN", "(i4 > 0) IS TRUE",
    "i4 IS DISTINCT FROM i2", "i4 IS NOT DISTINCT FROM i2", "s IS DISTINCT FROM NULL",
    "n IS DISTINCT FROM 2.5", "NULL IS NULL",
    # IN and BETWEEN
    "i4 IN (1, 2, 7)", "i4 NOT IN (1, 2, 7)", "i4 IN (1, NULL)", "i4 NOT IN (0, NULL)",
    "s IN ('abc', 'a', '')", "n IN (2.5, 0, i4)", "i2 IN (i4, i8)", "i4 BETWEEN -10 AND 10",
    "i4 NOT BETWEEN -10 AND 10", "i4 BETWEEN 10 AND -10", "i4 BETWEEN SYMMETRIC 10 AND -10",
    "i4 NOT BETWEEN SYMMETRIC 10 AND -10", "d BETWEEN '2000-01-01' AND '2010-12-31'",
    "s BETWEEN 'a' AND 'b'", "f8 BETWEEN i2 AND n", "i4 BETWEEN NULL AND 5",
    # LIKE
    "s LIKE 'a%'", "s LIKE '%\\%%'", "s LIKE '%\\_%'", "s LIKE '_'", "s NOT LIKE '%a%'",
    "s ILIKE '%A%'", "s NOT ILIKE 'x%'", "s LIKE p", "v ILIKE 'É%'", "s LIKE '%!%%' ESCAPE '!'",
    "s LIKE '%\\\\%'", "s LIKE '%''%'", "s LIKE ''", "s LIKE '%'", "s LIKE 'a_c%' ESCAPE ''",
    "p LIKE p", "v LIKE '%' || s || '%'",
    # CASE, COALESCE, NULLIF, GREATEST, LEAST
    "CASE WHEN i4 > 0 THEN 'pos' WHEN i4 < 0 THEN 'neg' END",
    "CASE WHEN i4 > 0 THEN 'pos' ELSE 'other' END", "CASE i4 WHEN 7 THEN 'seven' WHEN 0 THEN 'zero' ELSE s END",
    "CASE WHEN b THEN i4 ELSE n END", "CASE WHEN b THEN i2 ELSE f4 END", "CASE s WHEN 'a' THEN 1 END",
    "CASE WHEN b THEN NULL ELSE 1.5 END", "CASE WHEN b THEN d ELSE ts END",
    "COALESCE(i4, 0)", "COALESCE(s, v, 'none')", "COALESCE(i2, i8, n)", "COALESCE(NULL, NULL)",
    "COALESCE(f8, n)", "COALESCE(d, ts)", "NULLIF(i4, 7)", "NULLIF(s, '')", "NULLIF(i4, 2.5)",
    "NULLIF(n, n2)", "GREATEST(i4, i2, 3)", "LEAST(i4, n, f8)", "GREATEST(s, v, 'm')",
    "LEAST(d, ts)", "GREATEST(NULL, i4)", "LEAST(f8, 0)", "GREATEST(n, n2)", "GREATEST(u, u)",
    "LEAST(j, '[1]')",
    # casts
    "i4::text", "n::int", "n::int8", "n2::int2", "f8::int", "f4::int", "f8::numeric",
    "f4::numeric", "n::float8", "n::real", "i8::float4", "i4::numeric(5,1)", "n::numeric(20,3)",
    "n::numeric(6,2)", "f8::numeric(10,4)", "s::varchar(3)", "CAST(i4 AS bigint)", "i8::int4",
    "i4::int2", "i4::bool", "b::int", "b::text", "d::timestamp", "d::timestamptz",
    "ts::date", "tz::date", "ts::timestamptz", "tz::timestamp", "ts::time", "tz::time",
    "tm::interval", "ts::timestamp(0)", "ts::timestamp(2)", "tz::timestamptz(3)", "tm::time(1)",
    "'12'::int", "' -7 '::int", "'1.50'::numeric", "' 1.5e1 '::numeric", "'NaN'::float8",
    "'-Infinity'::numeric", "'1e-3'::float8", "'t'::bool", "'off'::boolean", "'2024-02-29'::date",
    "'2024-02-29 10:11:12.1234567'::timestamp", "'2024-02-29 10:11:12+02'::timestamptz",
    "'2024-02-29T10:11:12Z'::timestamptz", "'10:11'::time", "'1 day 02:00:00'::interval",
    "'-3 hours 2 minutes'::interval", "'@ 1 day 3 hours ago'::interval",
    "'1.5 days 2:03:04.5'::interval", "'-1 day +02:00:00'::interval", "'90 s'::interval", "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'::uuid",
    "'{a0eebc999c0b4ef8bb6d6bb9bd380a11}'::uuid", "'{\"x\": [1, 2]}'::jsonb", "'\\x0aff'::bytea",
    "date '2020-01-01'", "timestamp '2020-01-01 10:00'", "interval '90 minutes'",
    "n::text", "f8::text", "f4::text", "d::text", "ts::text", "tz::text", "tm::text",
    "(ts - ts0)::text", "(d - tz)::text", "u::text", "j::text", "by::text", "ia::text", "ta::text", "s::int",
    "p::numeric", "v::float8", "s::date", "j::int", "j::numeric", "j::bool", "j::json",
    "js::jsonb", "i4::float8::int", "(f8 * 1e10)::int8", "n2::text", "i2::int4::numeric",
    # text functions and ||
    "lower(s)", "upper(v)", "length(s)", "char_length(v)", "octet_length(s)", "substr(s, 2)",
    "substr(s, 0, 3)", "substr(s, -1, 3)", "substring(s from 2 for 2)", "substring(s from 3)",
    "substring(s for 2)", "substr(s, i2, 2)", "substr(s, 1, i2)", "position('a' in s)",
    "strpos(s, 'b')", "trim(s)", "trim(both 'a' from s)", "trim(leading from s)",
    "trim(trailing 'ab' from s)", "btrim(s, 'a ')", "ltrim(s)", "rtrim(s, ' ')",
    "s || 'x'", "s || v", "s || i4", "i4 || s", "s || n", "s || NULL", "s || b", "s || d",
    "'a' || 1", "s || f8", "s || ts", "s || tz", "s || (ts - d)", "s || j", "concat(s, i4, NULL, b)",
    "concat(n, f8, d, ts, tz - ts, u)", "concat_ws(',', s, v, i4)", "concat_ws(NULL, s)",
    "concat_ws(s, 'a', 'b')", "replace(s, 'a', 'XY')", "replace(s, '', 'x')", "left(s, 2)",
    "left(s, -2)", "right(s, 2)", "right(s, -2)", "left(s, i2)", "split_part(s, ' ', 1)",
    "split_part(s, ',', -1)", "split_part(s, '', 1)", "split_part(s, ' ', 2)", "lpad(s, 6)",
    "lpad(s, 6, 'xy')", "rpad(s, 3, 'xy')", "rpad(s, 10, '')", "lpad(s, -1)", "repeat(s, 2)",
    "repeat(s, -1)", "reverse(s)", "initcap(s)", "initcap(v)", "md5(s)", "md5(by)",
    "starts_with(s, 'a')", "ascii(s)", "chr(65)", "translate(s, 'ab', 'x')", "length(by)",
    "split_part(s, ' ', i2)",
    "lower(w)", "upper(w)", "initcap(w)", "w < s", "w ILIKE '%ß%'", "w ILIKE '%Σ%'",
    "length(w)", "reverse(w)", "octet_length(w)", "md5(w)", "w || s", "GREATEST(w, s)",
    "w LIKE '%_%'", "upper(w) = upper(s)", "lower(w) LIKE lower(s)",
    # number functions
    "abs(i4)", "abs(i2)", "abs(n)", "abs(f8)", "abs(f4)", "round(n)", "round(n, 2)",
    "round(n, -2)", "round(n2, 1)", "round(f8)", "round(i4)", "round(2.5)", "round(-2.5)",
    "round(i4, 1)", "trunc(n)", "trunc(n, 1)", "trunc(n, -1)", "trunc(f8)", "floor(n)",
    "floor(f8)", "ceil(n)", "ceiling(f8)", "floor(i4)", "mod(i4, 3)", "mod(n, 3)",
    "mod(i4, i2)", "mod(i8, 7)", "sign(n)", "sign(f8)", "sign(i4)", "sqrt(f8)", "sqrt(i4)",
    "power(f8, 2)", "power(i4, 2)", "power(2, i2)", "pow(f8, 0.5)",
    # dates and times
    "date_trunc('month', ts)", "date_trunc('day', tz)", "date_trunc('hour', ts)",
    "date_trunc('week', ts)", "date_trunc('quarter', ts)", "date_trunc('year', d)",
    "date_trunc('decade', ts)", "date_trunc('century', ts)", "date_trunc('millennium', ts)",
    "date_trunc('milliseconds', ts)", "date_trunc('second', tz)", "date_trunc('minute', ts)",
    "extract(year from d)", "extract(month from ts)", "extract(day from tz)",
    "extract(dow from d)", "extract(isodow from ts)", "extract(doy from d)",
    "extract(week from d)", "extract(isoyear from d)", "extract(quarter from ts)",
    "extract(epoch from ts)", "extract(epoch from tz)", "extract(epoch from d)",
    "extract(epoch from iv)", "extract(second from ts)", "extract(milliseconds from ts)",
    "extract(microseconds from tz)", "extract(hour from tm)", "extract(minute from ts)",
    "extract(second from tm)", "extract(epoch from tm)", "extract(julian from d)",
    "extract(julian from ts)", "extract(century from d)", "extract(decade from ts)",
    "extract(millennium from d)", "extract(timezone from tz)", "date_part('year', d)",
    "date_part('epoch', ts)", "date_part('second', ts)", "date_part('milliseconds', tz)",
    "date_part('dow', ts)", "date_part('epoch', tm)", "date_part('julian', ts)", "date_part('hour', tm)", "d + 1", "1 + d", "d - 1", "d + i2",
    "d - d", "d - '2000-01-01'", "d + iv", "d - iv", "d + tm", "ts + iv", "ts - iv",
    "tz + iv", "tz - iv", "ts - ts0", "tz - ts", "ts - d", "iv + iv", "-iv", "tm + iv", "tm - iv", "tm - tm", "make_date(2024, 2, 29)",
    "d + interval '1 day'", "ts + interval '1 hour 30 minutes'",
    # json
    "j -> 'a'", "j ->> 'a'", "j -> 'c' -> 1", "j -> 'c' ->> 2", "j -> 0", "j ->> -1",
    "j ->> 'b'", "js -> 'a'", "js ->> 'b'", "js -> 1", "jsonb_typeof(j)", "json_typeof(js)",
    "(j ->> 'a')::int", "j -> 'c'", "j ->> 'c'",
    # misc
    "u::text || s", "ia = ia", "ia IS NULL", "ta = ta",
]  # fmt: skip


class RowScope:
    """Columns of ``t``, read from the row dict the test passes as ``ctx``."""

    def __init__(self, column_types: dict[str, str]) -> None:
        self.types = column_types

    def column(self, fields: tuple[str, ...], location: int) -> Compiled:
        name = fields[-1]
        if name not in self.types:
            raise SqlError(f'column "{name}" does not exist', location)
        return Compiled(lambda row: row[name], self.types[name])

    def special(self, node: Any) -> Compiled | None:
        return None


def _text_connection(conninfo: str, options: str = SESSION_OPTIONS) -> psycopg.Connection:
    conn = psycopg.connect(conninfo, autocommit=True, options=options)
    for oid in _TEXT_OIDS:
        conn.adapters.register_loader(oid, TextLoader)
    return conn


def _through_ingest(text: str | None, oid: int, typmod: int) -> Any:
    """A column's text output as a change event carries it, decoded into a Python value."""
    if text is None:
        return None
    return types.decoder(types.canonical_type(oid), typmod)(converter(oid, typmod)(text))


EVAL_OPTIONS = SESSION_OPTIONS.replace("IntervalStyle=iso_8601", "IntervalStyle=postgres")
"""Expressions run with PostgreSQL's default IntervalStyle, which Freshet's text output of
intervals follows (ingest's converter needs iso_8601, so interval results are read back with
Freshet's own interval input, which accepts PostgreSQL's output without months)."""


def _pg_value(text: str | None, oid: int, typmod: int) -> tuple[str, Any]:
    type_name = types.canonical_type(oid)
    try:
        if text is not None and type_name == types.INTERVAL:
            return ("ok", types.encoder(type_name)(casts.interval_in(text)))
        return ("ok", types.encoder(type_name)(_through_ingest(text, oid, typmod)))
    except EvalError as exc:  # a value Freshet has no Python form for (time 24:00:00)
        return ("error", str(exc))


@pytest.fixture(scope="module")
def oracle(postgres_server) -> Iterator[tuple[psycopg.Connection, list[dict[str, Any]], dict]]:
    """A database with table ``t`` holding :data:`ROWS`; the rows as Freshet decodes them."""
    name = "sqlexpr_" + uuid.uuid4().hex[:8]
    admin = psycopg.connect(postgres_server.conninfo(), autocommit=True)
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with psycopg.connect(postgres_server.conninfo(name), autocommit=True) as setup:
            columns = ", ".join(f"{c} {ty}" for c, ty in COLUMNS.items())
            setup.execute(f"CREATE TABLE t (id int PRIMARY KEY, {columns})")
            names = ", ".join(COLUMNS)
            marks = ", ".join(["%s"] * (len(COLUMNS) + 1))
            with setup.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO t (id, {names}) VALUES ({marks})",
                    [(i, *row.values()) for i, row in enumerate(ROWS)],
                )
        conn = _text_connection(postgres_server.conninfo(name))
        cur = conn.execute("SELECT * FROM t ORDER BY id")
        result = cur.pgresult
        assert result is not None
        fields = [
            (d.name, d.type_code, result.fmod(i)) for i, d in enumerate(cur.description or ())
        ]
        decoded = [
            {
                name: _through_ingest(v, oid, mod)
                for (name, oid, mod), v in zip(fields, row, strict=True)
            }
            for row in cur.fetchall()
        ]
        column_types = {name: types.canonical_type(oid) for name, oid, _ in fields}
        conn.close()
        evaluate = _text_connection(postgres_server.conninfo(name), EVAL_OPTIONS)
        yield evaluate, decoded, column_types
        evaluate.close()
    finally:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()


def _concrete(type_name: str) -> str:
    return types.TEXT if type_name == types.UNKNOWN else type_name


def _freshet(compiled: Compiled, row: dict[str, Any]) -> Any:
    try:
        return ("ok", types.encoder(_concrete(compiled.type))(compiled.fn(row)))
    except EvalError as exc:
        return ("error", str(exc))


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_expression_matches_postgresql(oracle, expression):
    conn, rows, column_types = oracle
    scope = RowScope(column_types)
    try:
        node, offset = parse_expression(expression)
        compiled: Compiled | None = compile_expr(node, scope, offset)
    except SqlError as exc:
        compiled, refusal = None, exc
    try:
        probe = conn.execute(f"SELECT ({expression}) FROM t WHERE false")
    except psycopg.Error as exc:
        assert compiled is None, f"PostgreSQL refuses it ({exc}), Freshet compiled it"
        return
    assert compiled is not None, f"PostgreSQL accepts it, Freshet refused: {refusal}"
    assert probe.pgresult is not None
    oid, typmod = probe.description[0].type_code, probe.pgresult.fmod(0)
    pg_type = types.canonical_type(oid)
    assert pg_type == _concrete(compiled.type), "result type"
    try:
        cur = conn.execute(f"SELECT id, ({expression}) FROM t ORDER BY id")
        pg_rows: list[tuple[Any, ...]] = [("ok", r[1]) for r in cur.fetchall()]
    except psycopg.Error:
        pg_rows = []
        for i in range(len(rows)):
            try:
                cur = conn.execute(f"SELECT ({expression}) FROM t WHERE id = {i}")
                pg_rows.append(("ok", cur.fetchone()[0]))
            except psycopg.Error as exc:
                pg_rows.append(("error", exc.diag.message_primary))
    mismatches = []
    for i, (row, (status, text)) in enumerate(zip(rows, pg_rows, strict=True)):
        ours = _freshet(compiled, row)
        theirs = _pg_value(text, oid, typmod) if status == "ok" else ("error", text)
        if ours[0] != theirs[0] or (ours[0] == "ok" and ours != theirs):
            mismatches.append((i, {k: row[k] for k in row if k in expression}, ours, theirs))
    assert not mismatches, mismatches[:5]


def test_like_matches_postgresql_on_random_patterns(oracle):
    conn = oracle[0]
    rng = random.Random(5)
    cases = [
        (
            _text(rng, "ab%_\\!é", 7),
            _text(rng, "ab%_\\!é", 6),
            rng.choice(["\\", "", "!", "a", "%"]),
        )
        for _ in range(800)
    ]
    scope = RowScope({"t": "text", "p": "text", "e": "text"})
    for operator in ("LIKE", "ILIKE"):
        node, offset = parse_expression(f"t {operator} p ESCAPE e")
        compiled = compile_expr(node, scope, offset)
        for text, pattern, escape in cases:
            try:
                row = conn.execute(
                    f"SELECT %s::text {operator} %s::text ESCAPE %s::text", (text, pattern, escape)
                ).fetchone()
                assert row is not None
                theirs: tuple[str, Any] = ("ok", row[0] == "t")
            except psycopg.Error as exc:
                theirs = ("error", exc.diag.message_primary)
            try:
                ours: tuple[str, Any] = ("ok", compiled.fn({"t": text, "p": pattern, "e": escape}))
            except EvalError as exc:
                ours = ("error", str(exc))
            assert ours[0] == theirs[0] and (ours[0] == "error" or ours == theirs), (
                text,
                pattern,
                escape,
                operator,
                ours,
                theirs,
            )


def test_like_is_linear_on_pathological_patterns():
    node, offset = parse_expression("t LIKE '%a%a%a%a%a%a%a%b'")
    compiled = compile_expr(node, RowScope({"t": "text"}), offset)
    assert compiled.fn({"t": "a" * 20000}) is False
