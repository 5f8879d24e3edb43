"""Value types against the real PostgreSQL: numeric division and avg, btree order, type names,
and the decoding/encoding of change-event values."""

from __future__ import annotations

import math
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

from freshet.common.sql import types
from freshet.common.sql.errors import SqlError
from freshet.ingest.sources.postgres.values import SESSION_OPTIONS, converter


@pytest.fixture(scope="module")
def db(postgres_server) -> Iterator[psycopg.Connection]:
    """A database of this module, its connection returning every value as PostgreSQL's text."""
    name = "sqltypes_" + uuid.uuid4().hex[:8]
    admin = psycopg.connect(postgres_server.conninfo(), autocommit=True)
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        conn = psycopg.connect(
            postgres_server.conninfo(name), autocommit=True, options=SESSION_OPTIONS
        )
        for oid in (16, 17, 20, 21, 23, 25, 700, 701, 1082, 1114, 1184, 1186, 1700, 2950, 3802,
                    1007, 1009, 1231):  # fmt: skip
            conn.adapters.register_loader(oid, TextLoader)
        yield conn
        conn.close()
    finally:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()


def _random_numeric(rng: random.Random) -> Decimal:
    digits = rng.choice([1, 2, 3, 4, 5, 8, 12, 17, 25, 40])
    scale = rng.choice([0, 0, 1, 2, 3, 4, 5, 8, 12, 20, 30])
    unscaled = rng.randint(1, 10**digits) * rng.choice([1, -1])
    return Decimal(unscaled).scaleb(-scale)


def test_numeric_div_equals_postgresql(db):
    rng = random.Random(7)
    pairs = [(_random_numeric(rng), _random_numeric(rng)) for _ in range(3000)]
    pairs += [
        (Decimal(1), Decimal(3)), (Decimal(2), Decimal(3)), (Decimal("10"), Decimal("4")),
        (Decimal("9999"), Decimal("10000")), (Decimal("10000"), Decimal("9999")),
        (Decimal("0"), Decimal("7")), (Decimal("0.0000"), Decimal("3.00")),
        (Decimal("1.5"), Decimal("0.001")), (Decimal("123456789"), Decimal("0.0001")),
        (Decimal("-1"), Decimal("3")), (Decimal("5"), Decimal("-0.5")),
        (Decimal("0.00001"), Decimal("99999999")), (Decimal("1E-20"), Decimal("3")),
    ]  # fmt: skip
    left = [str(a) for a, _ in pairs]
    right = [str(b) for _, b in pairs]
    rows = db.execute(
        "SELECT a / b FROM unnest(%s::numeric[], %s::numeric[]) WITH ORDINALITY AS x(a, b, i) "
        "ORDER BY i",
        (left, right),
    ).fetchall()
    wrong = [
        (a, b, str(types.numeric_div(a, b)), text)
        for (a, b), (text,) in zip(pairs, rows, strict=True)
        if types.encoder("numeric")(types.numeric_div(a, b)) != text
    ]
    assert not wrong, wrong[:5]


def test_avg_is_numeric_div_of_sum_and_count(db):
    rng = random.Random(11)
    groups = []
    for g in range(300):
        kind = rng.choice(["int", "numeric"])
        size = rng.randint(1, 12)
        if kind == "int":
            values: list[Any] = [rng.randint(-(10**9), 10**9) for _ in range(size)]
        else:
            values = [_random_numeric(rng) for _ in range(size)]
        groups.append((g, kind, values))
    for kind in ("int", "numeric"):
        chosen = [(g, v) for g, k, v in groups if k == kind]
        flat_g = [g for g, vs in chosen for _ in vs]
        flat_v = [str(x) for _, vs in chosen for x in vs]
        cast = "bigint" if kind == "int" else "numeric"
        rows = db.execute(
            f"SELECT g, avg(v), sum(v) FROM unnest(%s::int[], %s::{cast}[]) AS x(g, v) "
            "GROUP BY g ORDER BY g",
            (flat_g, flat_v),
        ).fetchall()
        by_group = dict(chosen)
        for g, avg_text, sum_text in rows:
            values = [Decimal(v) for v in by_group[int(g)]]
            total = Decimal(0)
            for value in values:
                total = types.pg_numeric_add(total, value)
            assert types.encoder("numeric")(total) == sum_text
            ours = types.numeric_div(total, Decimal(len(values)))
            assert types.encoder("numeric")(ours) == avg_text, (values, avg_text)


def test_numeric_arithmetic_keeps_postgresql_scales():
    assert str(types.pg_numeric_add(Decimal("1.10"), Decimal("2.5"))) == "3.60"
    assert str(types.pg_numeric_mul(Decimal("1.10"), Decimal("2.5"))) == "2.750"
    assert types.encoder("numeric")(types.pg_numeric_sub(Decimal("0.5"), Decimal("0.5"))) == "0.0"
    assert types.encoder("numeric")(Decimal("1E+3")) == "1000"
    assert types.encoder("numeric")(Decimal("-0.00")) == "0.00"
    assert types.encoder("numeric")(Decimal("1E-7")) == "0.0000001"
    assert types.numeric_div(Decimal("NaN"), Decimal(1)).is_nan()
    with pytest.raises(types.EvalError, match="division by zero"):
        types.numeric_div(Decimal(1), Decimal(0))
    big = Decimal("9" * 60)
    assert types.pg_numeric_mul(big, big) == Decimal(int("9" * 60) ** 2)


# Values of each type, in a random order; PostgreSQL's ORDER BY is the oracle for sort_key.
ORDER_CASES: dict[str, tuple[str, list[Any]]] = {
    "int4": ("integer", [5, -3, 0, 2147483647, -2147483648, 7]),
    "numeric": ("numeric", [Decimal("1.50"), Decimal("NaN"), Decimal("-2"), Decimal("1.5"),
                            Decimal("Infinity"), Decimal("-Infinity"), Decimal("0.001")]),
    "float8": ("double precision", [1.5, float("nan"), -0.0, 0.0, float("inf"),
                                    float("-inf"), -2.5, 1e-300]),
    "float4": ("real", [1.5, float("nan"), 0.1, -3.25, float("inf")]),
    "text": ("text", ["b", "a", "B", "", "é", "f", "Z", "ab", "a b", "😀", "ß", "z"]),
    "bytea": ("bytea", [b"\x01", b"", b"\x00\xff", b"\x00", b"\xff"]),
    "date": ("date", [date(2020, 1, 2), date(1999, 12, 31), date(2020, 1, 1)]),
    "timestamptz": ("timestamptz", [datetime(2020, 1, 1, tzinfo=UTC),
                                    datetime(2019, 5, 1, 3, tzinfo=UTC)]),
    "interval": ("interval", [timedelta(days=1), timedelta(hours=25), timedelta(hours=-1),
                              timedelta(0)]),
    "uuid": ("uuid", [uuid.UUID(int=random.Random(3).getrandbits(128)) for _ in range(8)]),
    "jsonb": ("jsonb", [Jsonb(v) for v in [{"a": 1}, [1, 2], [3], "str", 5, True, None,
                                             {"b": 1, "a": 2}, {"aa": 1}, {"b": 1}, [], {},
                                             "a", 2.5, False, [1, "x"], [[]], [None],
                                             ["a", 1], {"a": [1]}, {"a": {}}, {"a": None},
                                             [2], 1.25, -3]]),
    "bool": ("boolean", [True, False, True]),
    "int4[]": ("integer[]", [[1, 2], [1], [1, None], [0, 5], [], [2]]),
    "text[]": ("text[]", [["b"], ["a", "c"], ["a"], []]),
}  # fmt: skip


@pytest.mark.parametrize("type_name", list(ORDER_CASES))
def test_sort_key_orders_like_postgresql(db, type_name):
    sql_type, values = ORDER_CASES[type_name]
    table = "ord_" + type_name.replace("[]", "_arr")
    db.execute(f"CREATE TABLE {table} (v {sql_type})")
    with db.cursor() as cur:
        cur.executemany(f"INSERT INTO {table} VALUES (%s)", [(v,) for v in values])
    cur = db.execute(f"SELECT v FROM {table} ORDER BY v")
    assert cur.description is not None and cur.pgresult is not None
    oid, typmod = cur.description[0].type_code, cur.pgresult.fmod(0)
    assert types.canonical_type(oid) == type_name
    expected = [text for (text,) in cur.fetchall()]
    decode = types.decoder(type_name, typmod)
    ours = sorted(
        (decode(converter(oid, typmod)(text)) for text in expected), key=types.sort_key(type_name)
    )
    encode = types.encoder(type_name)
    theirs = [encode(decode(converter(oid, typmod)(text))) for text in expected]
    assert [encode(v) for v in ours] == theirs


def test_json_has_no_order():
    with pytest.raises(SqlError, match="could not identify an ordering operator for type json"):
        types.sort_key("json")


def test_canonical_type_of_pg_type_oids(db):
    names = {
        "bool": "bool", "int2": "int2", "int4": "int4", "int8": "int8", "numeric": "numeric",
        "float4": "float4", "float8": "float8", "text": "text", "varchar": "text",
        "bpchar": "text", "name": "text", "date": "date", "time": "time", "timetz": "timetz",
        "timestamp": "timestamp", "timestamptz": "timestamptz", "interval": "interval",
        "uuid": "uuid", "json": "json", "jsonb": "jsonb", "bytea": "bytea",
    }  # fmt: skip
    rows = db.execute(
        "SELECT typname, oid::int, typarray::int FROM pg_type WHERE typname = ANY(%s)",
        (list(names),),
    ).fetchall()
    assert len(rows) == len(names)
    for typname, oid, array_oid in rows:
        assert types.canonical_type(int(oid)) == names[typname]
        assert types.canonical_type(int(array_oid)) == names[typname] + "[]"
    # Types ingest writes as strings, arrays of them included.
    inet, inet_array = db.execute(
        "SELECT oid::int, typarray::int FROM pg_type WHERE typname = 'inet'"
    ).fetchone()
    assert types.canonical_type(int(inet)) == types.canonical_type(int(inet_array)) == "text"


def test_decoder_follows_the_change_event_mapping():
    assert types.decoder("numeric")("12.50") == Decimal("12.50")
    assert math.isnan(types.decoder("float8")("NaN"))
    assert types.decoder("float8")("-Infinity") == float("-inf")
    assert types.decoder("float4")(0.1) == 0.10000000149011612
    assert types.decoder("date")(19000) == date(2022, 1, 8)
    assert types.decoder("time")(3_600_000_001) == time(1, 0, 0, 1)
    assert types.decoder("timestamp")(1_000_001) == datetime(1970, 1, 1, 0, 0, 1, 1)
    assert types.decoder("timestamp", 3)(1_001) == datetime(1970, 1, 1, 0, 0, 1, 1000)
    assert types.decoder("timestamp", 0)(2_000) == datetime(1970, 1, 1, 0, 0, 2)
    assert types.decoder("timestamptz")("2024-01-02T03:04:05.5Z") == datetime(
        2024, 1, 2, 3, 4, 5, 500000, tzinfo=UTC
    )
    assert types.decoder("timetz")("10:00:00Z") == "10:00:00Z"
    assert types.decoder("interval")(-1) == timedelta(microseconds=-1)
    assert types.decoder("uuid")("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").startswith("a0ee")
    assert types.decoder("jsonb")('{"a": [1, null]}') == {"a": [1, None]}
    assert types.decoder("bytea")("AAH/") == b"\x00\x01\xff"
    assert types.decoder("int4[]")([1, None, [2]]) == [1, None, [2]]
    assert types.decoder("date[]")([0, None]) == [date(1970, 1, 1), None]
    assert types.decoder("int8")(None) is None
    with pytest.raises(types.EvalError, match="infinite"):
        types.decoder("date")("infinity")


def test_encoder_writes_view_row_values():
    assert types.encoder("numeric")(Decimal("1E+2")) == "100"
    assert types.encoder("numeric")(Decimal("NaN")) == "NaN"
    assert types.encoder("float8")(float("inf")) == "Infinity"
    assert types.encoder("float8")(0.1) == 0.1
    assert types.encoder("float4")(types.float4(0.1)) == 0.1
    assert types.encoder("date")(date(2024, 2, 29)) == "2024-02-29"
    assert types.encoder("time")(time(1, 2, 3, 400000)) == "01:02:03.400000"
    assert types.encoder("timestamp")(datetime(2024, 1, 1, 1, 2, 3)) == "2024-01-01T01:02:03"
    assert (
        types.encoder("timestamptz")(datetime(2024, 1, 1, 1, 2, 3, 5, tzinfo=UTC))
        == "2024-01-01T01:02:03.000005Z"
    )
    assert types.encoder("interval")(timedelta(days=1, hours=2, seconds=4.5)) == "P1DT2H4.5S"
    assert types.encoder("interval")(-timedelta(days=1, hours=2)) == "P-1DT-2H"
    assert types.encoder("interval")(timedelta(0)) == "PT0S"
    assert types.encoder("bytea")(b"\x00\x01\xff") == "AAH/"
    assert types.encoder("jsonb")({"a": 1}) == {"a": 1}
    assert types.encoder("numeric[]")([Decimal("1.0"), None]) == ["1.0", None]
    assert types.encoder("text")(None) is None
