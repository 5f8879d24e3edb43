"""The order-preserving key encoding against PostgreSQL's own ORDER BY and equality."""

from __future__ import annotations

import random
from typing import Any

import orjson
import psycopg
import pytest
from psycopg import sql

from freshet.common.sql.types import encoder, sql_name
from freshet.serve.materialize.keys import field_encoder, tuple_encoder
from freshet.serve.materialize.values import decoder

from .samples import ORDERED, value

ROWS = 400


def _engine_values(type_: str, r: random.Random, n: int) -> list[Any]:
    """Random values as serve holds them: engine value -> view-row JSON -> decoded."""
    encode, decode = encoder(type_), decoder(type_)
    return [decode(orjson.loads(orjson.dumps(encode(value(type_, r))))) for _ in range(n)]


def _collate(type_: str) -> sql.Composable:
    return sql.SQL(' COLLATE "C"') if type_.startswith("text") else sql.SQL("")


@pytest.fixture(scope="module")
def conn(postgres_server: Any) -> Any:
    with psycopg.connect(postgres_server.conninfo(), autocommit=True) as c:
        yield c


@pytest.mark.parametrize("type_", [*ORDERED, "int4[]", "text[]", "numeric[]", "float8[]"])
def test_order_and_equality_are_postgresqls(conn: Any, type_: str) -> None:
    seed = random.randrange(1 << 30)
    r = random.Random(seed)
    values = _engine_values(type_, r, ROWS)
    values += values[: ROWS // 4]  # duplicates
    conn.execute("DROP TABLE IF EXISTS pg_temp.k")
    conn.execute(sql.SQL("CREATE TEMP TABLE k (id int, v {})").format(sql.SQL(sql_name(type_))))
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL("INSERT INTO k VALUES (%s, %s::{})").format(sql.SQL(sql_name(type_))),
            list(enumerate(values)),
        )
    order = [
        row[0]
        for row in conn.execute(
            sql.SQL("SELECT id FROM k ORDER BY v{}, id").format(_collate(type_))
        ).fetchall()
    ]
    encode = field_encoder(type_)
    encoded = [encode(v) for v in values]
    assert sorted(range(len(values)), key=lambda i: (encoded[i], i)) == order, f"seed {seed}"

    groups = conn.execute("SELECT array_agg(id ORDER BY id) FROM k GROUP BY v").fetchall()
    by_encoding: dict[bytes, list[int]] = {}
    for i, e in enumerate(encoded):
        by_encoding.setdefault(e, []).append(i)
    assert sorted(g[0] for g in groups) == sorted(by_encoding.values()), f"seed {seed}"


def test_tuples_order_field_by_field_with_nulls_last(conn: Any) -> None:
    seed = random.randrange(1 << 30)
    r = random.Random(seed)
    types = ["int4", "text", "numeric"]
    rows = [tuple(r.choice([None, *_engine_values(t, r, 3)]) for t in types) for _ in range(ROWS)]
    conn.execute("DROP TABLE IF EXISTS pg_temp.c")
    conn.execute("CREATE TEMP TABLE c (id int, a int4, b text, n numeric)")
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO c VALUES (%s, %s, %s, %s)", [(i, *row) for i, row in enumerate(rows)]
        )
    order = [
        row[0]
        for row in conn.execute('SELECT id FROM c ORDER BY a, b COLLATE "C", n, id').fetchall()
    ]
    encode = tuple_encoder(types)
    assert sorted(range(len(rows)), key=lambda i: (encode(rows[i]), i)) == order, f"seed {seed}"


def test_an_encoded_prefix_is_a_byte_prefix() -> None:
    encode2, encode1 = tuple_encoder(["text", "int8"]), tuple_encoder(["text"])
    for text in ["", "a", "a\x00b", "ab"]:
        assert encode2((text, 5)).startswith(encode1((text,)))
    # ... and a shorter text never sorts after a longer one it prefixes, whatever follows
    assert encode2(("a", 2**63 - 1)) < encode2(("a\x00", -(2**63)))
    assert encode2(("a", 2**63 - 1)) < encode2(("ab", -(2**63)))
