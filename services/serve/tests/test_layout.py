"""A view's layout from its spec: typed key fields, key-only fields, indexes, decoding."""

from __future__ import annotations

import orjson
import pytest

from freshet.common.schemas import ColumnSchema, KeyColumn, OutputColumn, TableSchema, ViewSpec
from freshet.common.sql.views import Catalog, compile_view
from freshet.serve.exceptions import BadValueError
from freshet.serve.materialize.keys import tuple_encoder
from freshet.serve.materialize.layout import ViewLayout

INT4, TEXT, NUMERIC, JSONB = 23, 25, 1700, 3802


def _table(name: str, columns: dict[str, tuple[int, str]], pk: tuple[str, ...]) -> TableSchema:
    return TableSchema(
        source="s",
        schema="public",
        table=name,
        topic=f"s.public.{name}",
        columns=tuple(ColumnSchema(name=n, type_oid=o, type=t) for n, (o, t) in columns.items()),
        primary_key=pk,
    )


CATALOG = Catalog(
    [
        _table("customers", {"id": (INT4, "integer"), "region": (TEXT, "text")}, ("id",)),
        _table(
            "orders",
            {
                "id": (INT4, "integer"),
                "customer_id": (INT4, "integer"),
                "amount": (NUMERIC, "numeric"),
                "doc": (JSONB, "jsonb"),
            },
            ("id",),
        ),
    ]
)


def _spec(sql: str, indexes: tuple[str, ...] = ()) -> ViewSpec:
    plan = compile_view("v", sql, CATALOG)
    return ViewSpec(
        name="v",
        sql=sql,
        key=plan.key,
        columns=plan.columns,
        tables=plan.tables,
        key_columns=plan.key_columns,
        indexes=indexes,
    )


def test_key_only_fields_of_a_left_join_are_typed_and_nullable() -> None:
    layout = ViewLayout.of(
        _spec(
            "SELECT o.amount, o.doc FROM orders o LEFT JOIN customers c ON c.id = o.customer_id",
            indexes=("doc", "amount", "nosuch", "amount"),
        )
    )
    assert layout.key == (
        KeyColumn(name="_key1", type="int4", nullable=False),
        KeyColumn(name="_key2", type="int4", nullable=True),
    )
    assert [c.name for c in layout.table_columns] == ["amount", "doc", "_key1", "_key2"]
    # A spec control would refuse: jsonb has no order, nosuch is no column, amount is twice.
    assert [c.name for c in layout.indexed] == ["amount"]

    values, key = layout.key_decoder()(b'{"_key1": 7, "_key2": null}')
    assert values == (7, None)
    assert key == tuple_encoder(["int4", "int4"])((7, None))
    row = layout.row_decoder()(orjson.dumps({"amount": "1.50", "doc": {"a": 1}}), values)
    assert [str(row[0]), row[1], row[2], row[3]] == ["1.50", {"a": 1}, 7, None]


def test_group_by_keys_may_be_null() -> None:
    layout = ViewLayout.of(
        _spec("SELECT region, count(*) AS n FROM customers GROUP BY region", ("region", "n"))
    )
    assert layout.key == (KeyColumn(name="region", type="text", nullable=True),)
    assert [c.name for c in layout.indexed] == ["n"]  # the key's order is the keys' order
    assert layout.key_only == ()


def test_a_key_that_does_not_fit_is_refused() -> None:
    layout = ViewLayout.of(_spec("SELECT id, amount FROM orders"))
    decode = layout.key_decoder()
    for bad in (b'{"id": 1, "x": 2}', b"[1]", b"nope", b'{"id": "1"}', b'{"id": true}'):
        with pytest.raises(BadValueError):
            decode(bad)


def test_a_spec_without_key_columns_falls_back_to_output_types_or_jsonb() -> None:
    spec = ViewSpec(
        name="v",
        sql="-",
        key=("id", "_key2"),
        columns=(OutputColumn(name="id", type="int8"),),
        tables=("s.public.orders",),
    )
    layout = ViewLayout.of(spec)
    assert [(k.name, k.type) for k in layout.key] == [("id", "int8"), ("_key2", "jsonb")]
