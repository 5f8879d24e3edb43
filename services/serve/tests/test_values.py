"""View-row values: decoding the topic's JSON back, and PostgreSQL columns of every type."""

from __future__ import annotations

import random
import uuid
from datetime import time, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, insert
from sqlalchemy.dialects import postgresql

from freshet.common.sql.types import encoder
from freshet.serve.exceptions import BadValueError
from freshet.serve.materialize.stores.postgres import column_type
from freshet.serve.materialize.values import decoder, parse_interval

from .conftest import sqlalchemy_url
from .samples import SCALARS, value

TYPES = [*SCALARS, "int4[]", "text[]", "numeric[]", "timestamptz[]", "interval[]", "bytea[]"]


def _json(type_: str, v: Any) -> Any:
    return orjson.loads(orjson.dumps(encoder(type_)(v)))


@pytest.mark.parametrize("type_", TYPES)
def test_decoding_inverts_the_encoding(type_: str) -> None:
    r = random.Random(type_)
    for _ in range(300):
        doc = _json(type_, value(type_, r))
        assert _json(type_, _as_engine(decoder(type_)(doc))) == doc


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("PT0S", 0),
        ("P1DT2H3M4.5S", ((24 + 2) * 60 + 3) * 60_000_000 + 4_500_000),
        ("P-1DT-2H", -(26 * 3_600_000_000)),
        ("PT-0.000001S", -1),
        ("PT59M", 59 * 60_000_000),
    ],
)
def test_intervals(text: str, micros: int) -> None:
    assert parse_interval(text) == timedelta(microseconds=micros)


@pytest.mark.parametrize(
    ("type_", "bad"),
    [("numeric", "12x"), ("numeric", 1.5), ("float8", "1.5"), ("interval", "P1Y"), ("bytea", "!")],
)
def test_a_value_not_of_its_type_is_refused(type_: str, bad: Any) -> None:
    with pytest.raises(BadValueError):
        decoder(type_)(bad)


def _as_engine(v: Any) -> Any:
    """psycopg's Python values as the view engine holds them (uuid text, timetz text in UTC)."""
    if isinstance(v, list):
        return [_as_engine(x) for x in v]
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, time) and v.tzinfo is not None:
        offset = v.utcoffset()
        assert offset == timedelta(0)
        return v.replace(tzinfo=None).isoformat() + "Z"
    return v


def test_every_type_goes_into_postgresql_and_comes_back_the_same(pg_database: Any) -> None:
    """What serve writes with SQLAlchemy reads back, encoded, as the topic's JSON."""
    r = random.Random(7)
    engine = create_engine(sqlalchemy_url(pg_database.server, pg_database.dbname))
    metadata = MetaData()
    table = Table(
        f"t_types_{uuid.uuid4().hex[:8]}",
        metadata,
        Column("id", Integer, primary_key=True),
        *(Column(f"v{i}", column_type(t)) for i, t in enumerate(TYPES)),
    )
    docs = [[_json(t, value(t, r, nulls=0.05)) for t in TYPES] for _ in range(200)]
    try:
        with engine.begin() as conn:
            metadata.create_all(conn)
            conn.execute(
                insert(table),
                [
                    {
                        "id": n,
                        **{
                            f"v{i}": decoder(t)(d)
                            for i, (t, d) in enumerate(zip(TYPES, row, strict=True))
                        },
                    }
                    for n, row in enumerate(docs)
                ],
            )
        with pg_database.connect() as pg:
            rows = pg.execute(f"SELECT * FROM {table.name} ORDER BY id").fetchall()
        for n, row in enumerate(rows):
            got = [_json(t, _as_engine(v)) for t, v in zip(TYPES, row[1:], strict=True)]
            assert got == docs[n]
    finally:
        metadata.drop_all(engine)
        engine.dispose()


def test_column_types() -> None:
    dialect = postgresql.psycopg.dialect()  # type: ignore[attr-defined]
    compiled = {
        t: str(column_type(t).compile(dialect=dialect))
        for t in [*SCALARS, "json", "int8[]", "unknown"]
    }
    assert compiled == {
        "bool": "BOOLEAN",
        "int2": "SMALLINT",
        "int4": "INTEGER",
        "int8": "BIGINT",
        "numeric": "NUMERIC",
        "float4": "REAL",
        "float8": "DOUBLE PRECISION",
        "text": "TEXT",
        "uuid": "UUID",
        "bytea": "BYTEA",
        "date": "DATE",
        "time": "TIME WITHOUT TIME ZONE",
        "timetz": "TIME WITH TIME ZONE",
        "timestamp": "TIMESTAMP WITHOUT TIME ZONE",
        "timestamptz": "TIMESTAMP WITH TIME ZONE",
        "interval": "INTERVAL",
        "jsonb": "JSONB",
        "json": "JSON",
        "int8[]": "BIGINT[]",
        "unknown": "TEXT",
    }
    assert Decimal("1") == decoder("numeric")("1.00")
