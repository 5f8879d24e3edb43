"""The view compiler: what it accepts, the key it derives, and what it refuses (and where)."""

from __future__ import annotations

import pytest

from freshet.common.schemas import ColumnSchema, TableSchema
from freshet.common.sql.errors import SqlError
from freshet.common.sql.views import Catalog, compile_view

INT4, TEXT, NUMERIC, DATE, JSONB = 23, 25, 1700, 1082, 3802


def table(
    source: str, name: str, columns: list[tuple[str, int]], pk: tuple[str, ...]
) -> TableSchema:
    return TableSchema(
        source=source,
        schema="public",
        table=name,
        topic=f"{source}.public.{name}",
        columns=tuple(ColumnSchema(name=c, type_oid=o, type="-") for c, o in columns),
        primary_key=pk,
    )


CATALOG = Catalog(
    [
        table("shop", "customers", [("id", INT4), ("name", TEXT), ("region", TEXT)], ("id",)),
        table(
            "shop",
            "orders",
            [("id", INT4), ("customer_id", INT4), ("amount", NUMERIC), ("placed", DATE)],
            ("id",),
        ),
        table("shop", "events", [("id", INT4), ("body", JSONB)], ()),
        table("crm", "customers", [("id", INT4), ("name", TEXT)], ("id",)),
    ]
)


def test_key_is_the_group_by_columns() -> None:
    plan = compile_view(
        "v",
        "SELECT c.region, count(*) AS n, sum(o.amount) AS total FROM shop.public.orders o "
        "JOIN shop.public.customers c ON c.id = o.customer_id GROUP BY c.region",
        CATALOG,
    )
    assert plan.key == ("region",)
    assert [(c.name, c.type) for c in plan.columns] == [
        ("region", "text"),
        ("n", "int8"),
        ("total", "numeric"),
    ]
    assert plan.tables == ("shop.public.orders", "shop.public.customers")


def test_key_is_every_joined_primary_key_and_names_the_ones_not_selected() -> None:
    plan = compile_view(
        "v",
        "SELECT o.id, c.name FROM public.orders o LEFT JOIN shop.public.customers c "
        "ON c.id = o.customer_id",
        CATALOG,
    )
    assert plan.key == ("id", "_key2")


def test_distinct_keys_on_every_column_and_a_global_aggregate_has_an_empty_key() -> None:
    assert compile_view("v", "SELECT DISTINCT placed FROM orders", CATALOG).key == ("placed",)
    assert compile_view("v", "SELECT count(*) FROM orders", CATALOG).key == ()


def test_group_by_position_and_alias_name_select_items() -> None:
    plan = compile_view("v", "SELECT customer_id AS c, count(*) FROM orders GROUP BY 1", CATALOG)
    assert plan.key == ("c",)
    plan = compile_view("v", "SELECT customer_id AS c, count(*) FROM orders GROUP BY c", CATALOG)
    assert plan.key == ("c",)


REFUSED = [
    ("SELECT id FROM orders ORDER BY id", "ORDER BY", "id"),
    ("SELECT id FROM orders LIMIT 3", "LIMIT", None),
    ("SELECT id FROM orders UNION SELECT id FROM orders", "UNION", None),
    ("WITH x AS (SELECT 1) SELECT id FROM orders", "WITH", None),
    ("SELECT id FROM orders WHERE id IN (SELECT 1)", "subquery", "IN (SELECT"),
    ("SELECT row_number() OVER () FROM orders", "window function", "row_number"),
    ("SELECT DISTINCT ON (id) id FROM orders", "DISTINCT ON", "id) id"),
    (
        "SELECT o.id FROM orders o FULL JOIN shop.public.customers c ON c.id = o.id",
        "FULL JOIN",
        "shop.public.customers c",
    ),
    ("SELECT o.id FROM orders o, shop.public.customers c", "cross join", "shop.public.customers c"),
    ("SELECT o.id FROM orders o JOIN shop.public.customers c ON c.id > o.id", "equality", "> o.id"),
    ("SELECT nope FROM orders", 'column "nope" does not exist', "nope"),
    ("SELECT o.nope FROM orders o", 'column "o.nope" does not exist', "o.nope"),
    ("SELECT id FROM nope", 'relation "nope"', "nope"),
    ("SELECT id FROM customers", "ambiguous", "customers"),
    ("SELECT id FROM events", "no primary key", "events"),
    ("SELECT amount FROM orders GROUP BY customer_id", "must appear in the GROUP BY", "amount"),
    ("SELECT sum(placed) FROM orders", "sum(date)", "sum(placed)"),
    ("SELECT id FROM orders WHERE amount", "boolean", "amount"),
    ("SELECT id + 'x' FROM orders", "integer", None),
    ("SELECT now() FROM orders", "not deterministic", "now()"),
    ("SELECT id, id FROM orders", "more than once", "id FROM"),
    ("SELECT DISTINCT customer_id, count(*) FROM orders GROUP BY customer_id", "DISTINCT", None),
    ("SELECT id FROM orders WHERE", "syntax error", None),
    ("DELETE FROM orders", "SELECT", None),
]


@pytest.mark.parametrize(("sql", "message", "at"), REFUSED, ids=[r[0][:50] for r in REFUSED])
def test_unsupported_or_wrong_sql_is_refused_with_its_position(
    sql: str, message: str, at: str | None
) -> None:
    with pytest.raises(SqlError) as info:
        compile_view("v", sql, CATALOG)
    assert message.lower() in info.value.message.lower()
    if at is not None:
        assert info.value.position == sql.rindex(at), (info.value.position, sql.rindex(at))
