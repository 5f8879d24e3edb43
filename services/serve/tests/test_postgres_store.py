"""The PostgreSQL store against a real PostgreSQL: DDL, batches, offsets, fencing, generations."""

from __future__ import annotations

import random
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson
import pytest

from freshet.common.sql.types import encoder
from freshet.serve.exceptions import BadValueError, Fenced, StaleGeneration, TableConflictError
from freshet.serve.materialize.layout import Change, ViewLayout
from freshet.serve.materialize.stores.postgres import (
    FROM_JSON_TEXT,
    PostgresStore,
    PostgresTarget,
)

from .samples import SCALARS, value
from .stores_util import Records, spec

SCHEMA = "freshet"


@pytest.fixture
def target(target_url: str) -> Iterator[PostgresTarget]:
    t = PostgresTarget(target_url, SCHEMA)
    yield t
    t.close()


def _rows(pg: Any, table: str, order: str = "1") -> list[tuple[Any, ...]]:
    return pg.execute(f"SELECT * FROM {SCHEMA}.{table} ORDER BY {order}").fetchall()


def _offsets(pg: Any, view: str) -> list[tuple[Any, ...]]:
    return pg.execute(
        f"SELECT generation, partition, next_offset, applied FROM {SCHEMA}._offsets "
        "WHERE view = %s ORDER BY generation, partition",
        (view,),
    ).fetchall()


def _constraint(pg: Any, table: str) -> tuple[str, str] | None:
    return pg.execute(
        "SELECT contype, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = to_regclass(%s) AND contype IN ('p', 'u')",
        (f"{SCHEMA}.{table}",),
    ).fetchone()


ORDERS = spec(
    "orders_by_id",
    {"id": "int4", "status": "text", "amount": "numeric"},
    {"id": ("int4", False), "_key2": ("int8", True)},
)


def test_rows_and_offsets_commit_together_and_a_replay_is_fenced(
    target: PostgresTarget, pg_database: Any
) -> None:
    layout = ViewLayout.of(ORDERS)
    store = PostgresStore(target, layout)
    assert store.open([0, 1]) == {0: 0, 1: 0}
    rec = Records(layout)
    first = [
        rec.change({"id": 1, "_key2": 10}, {"id": 1, "status": "new", "amount": "1.50"}),
        rec.change({"id": 2, "_key2": None}, {"id": 2, "status": "new", "amount": None}, lsn=5),
        rec.change({"id": 3, "_key2": 30}, {"id": 3, "status": "x", "amount": "3"}, partition=1),
    ]
    store.write(rec.batch(first, {0: 0, 1: 0}))
    second = [
        rec.change({"id": 1, "_key2": 10}, {"id": 1, "status": "paid", "amount": "1.50"}, lsn=7),
        rec.change({"id": 2, "_key2": None}, None, lsn=8),
        rec.change({"id": 2, "_key2": None}, {"id": 2, "status": "again", "amount": "2.0"}, lsn=9),
        rec.change({"id": 3, "_key2": 30}, None, partition=1, lsn=9),
    ]
    batch = rec.batch(second, {0: 2, 1: 1})
    store.write(batch)

    with pg_database.connect() as pg:
        assert _rows(pg, "orders_by_id") == [
            (1, "paid", Decimal("1.50"), 10),
            (2, "again", Decimal("2.0"), None),
        ]
        assert _constraint(pg, "orders_by_id") == ("u", "UNIQUE NULLS NOT DISTINCT (id, _key2)")
        assert _offsets(pg, "orders_by_id") == [(1, 0, 5, {"src": 9}), (1, 1, 2, {"src": 9})]

    # The same batch again: the store is past it, nothing changes.
    with pytest.raises(Fenced):
        store.write(batch)
    # A writer that re-opens gets the stored positions.
    assert PostgresStore(target, layout).open([0, 1]) == {0: 5, 1: 2}


def test_a_zombie_is_fenced_by_the_offsets(target: PostgresTarget, pg_database: Any) -> None:
    layout = ViewLayout.of(ORDERS)
    survivor, zombie = PostgresStore(target, layout), PostgresStore(target, layout)
    survivor.open([0])
    zombie.open([0])
    rec = Records(layout)
    changes = [rec.change({"id": 1, "_key2": 1}, {"id": 1, "status": "a", "amount": "1"})]
    survivor.write(rec.batch(changes, {0: 0}))
    late = [rec.change({"id": 1, "_key2": 1}, {"id": 1, "status": "stale", "amount": "0"})]
    with pytest.raises(Fenced):
        zombie.write(rec.batch(changes + late, {0: 0}))
    with pg_database.connect() as pg:
        assert _rows(pg, "orders_by_id") == [(1, "a", Decimal("1"), 1)]


def test_primary_key_when_no_key_field_can_be_null_and_a_keyless_view(
    target: PostgresTarget, pg_database: Any
) -> None:
    by_id = ViewLayout.of(spec("plain", {"id": "int8", "v": "text"}, {"id": ("int8", False)}))
    totals = ViewLayout.of(spec("totals", {"n": "int8", "total": "numeric"}, {}))
    PostgresStore(target, by_id).open([0])
    store = PostgresStore(target, totals)
    store.open([0])
    rec = Records(totals)
    store.write(rec.batch([rec.change({}, {"n": 0, "total": None})], {0: 0}))
    store.write(rec.batch([rec.change({}, {"n": 2, "total": "5.5"})], {0: 1}))
    with pg_database.connect() as pg:
        assert _constraint(pg, "plain") == ("p", "PRIMARY KEY (id)")
        assert _constraint(pg, "totals") is None
        assert _rows(pg, "totals") == [(2, Decimal("5.5"))]
    store.write(rec.batch([rec.change({}, None)], {0: 2}))
    with pg_database.connect() as pg:
        assert _rows(pg, "totals") == []


def test_a_new_generation_alters_the_table_it_keeps(
    target: PostgresTarget, pg_database: Any
) -> None:
    one = ViewLayout.of(ORDERS)
    old = PostgresStore(target, one)
    old.open([0])
    rec = Records(one)
    old.write(
        rec.batch(
            [rec.change({"id": 1, "_key2": 1}, {"id": 1, "status": "a", "amount": "1"})], {0: 0}
        )
    )
    with pg_database.connect() as pg:
        oid = pg.execute("SELECT to_regclass('freshet.orders_by_id')::oid").fetchone()[0]
        # A SQL user's view over the table: it survives the new generation.
        pg.execute("CREATE VIEW public.users_view AS SELECT id FROM freshet.orders_by_id")

    two = ViewLayout.of(
        spec(
            "orders_by_id",
            {"id": "int4", "status": "int4", "placed": "date"},
            {"id": ("int4", False)},
            generation=2,
        )
    )
    new = PostgresStore(target, two)
    assert new.open([0]) == {0: 0}
    rec2 = Records(two)
    new.write(
        rec2.batch([rec2.change({"id": 7}, {"id": 7, "status": 3, "placed": "2026-01-02"})], {0: 0})
    )
    with pg_database.connect() as pg:
        assert pg.execute("SELECT to_regclass('freshet.orders_by_id')::oid").fetchone()[0] == oid
        columns = pg.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'freshet' AND table_name = 'orders_by_id' ORDER BY ordinal_position"
        ).fetchall()
        assert columns == [("id", "integer"), ("status", "integer"), ("placed", "date")]
        assert _constraint(pg, "orders_by_id") == ("p", "PRIMARY KEY (id)")
        assert pg.execute("SELECT * FROM public.users_view").fetchall() == [(7,)]
        assert _offsets(pg, "orders_by_id") == [(2, 0, 1, {"src": 1})]
    # The old generation can no longer write, nor open.
    with pytest.raises(StaleGeneration):
        old.write(
            rec.batch(
                [rec.change({"id": 2, "_key2": 2}, {"id": 2, "status": "b", "amount": "2"})], {0: 1}
            )
        )
    with pytest.raises(StaleGeneration):
        PostgresStore(target, one).open([0])


def test_drop_and_a_table_serve_did_not_create(target: PostgresTarget, pg_database: Any) -> None:
    layout = ViewLayout.of(ORDERS)
    store = PostgresStore(target, layout)
    store.open([0])
    assert target.built() == {"orders_by_id": 1}
    assert target.drop("orders_by_id")
    assert target.built() == {}
    with pg_database.connect() as pg:
        assert pg.execute("SELECT to_regclass('freshet.orders_by_id')").fetchone()[0] is None
        assert _offsets(pg, "orders_by_id") == []
        pg.execute("CREATE TABLE freshet.orders_by_id (mine int)")
    with pytest.raises(Fenced):
        rec = Records(layout)
        store.write(
            rec.batch(
                [rec.change({"id": 1, "_key2": 1}, {"id": 1, "status": "a", "amount": "1"})], {0: 0}
            )
        )
    with pytest.raises(TableConflictError):
        PostgresStore(target, layout).open([0])
    assert not target.drop("orders_by_id")  # not serve's: left alone
    with pg_database.connect() as pg:
        assert pg.execute("SELECT to_regclass('freshet.orders_by_id')").fetchone()[0] is not None


def test_the_same_generation_with_other_fields_is_built_again(
    target: PostgresTarget, pg_database: Any
) -> None:
    """A view deleted and created again (generation 1 both times) before serve dropped it."""
    first = ViewLayout.of(spec("again", {"id": "int4", "v": "text"}, {"id": ("int4", False)}))
    store = PostgresStore(target, first)
    store.open([0])
    rec = Records(first)
    store.write(rec.batch([rec.change({"id": 1}, {"id": 1, "v": "old"})], {0: 0}))
    second = ViewLayout.of(spec("again", {"id": "int4", "w": "int8"}, {"id": ("int4", False)}))
    assert PostgresStore(target, second).open([0]) == {0: 0}
    assert PostgresStore(target, first).open([0]) == {0: 0}  # and back: built again too
    with pg_database.connect() as pg:
        assert _rows(pg, "again") == []


def test_rows_taken_apart_by_postgresql_give_the_table_binding_each_value_gives(
    target: PostgresTarget, pg_database: Any
) -> None:
    """A view of types PostgreSQL reads from the JSON text takes a batch's rows as one JSON
    array; the table ends up as it does when the same rows are decoded and bound one by one."""
    types = sorted(FROM_JSON_TEXT)
    columns = {"id": "int8", **{f"v_{t}": t for t in types}}
    r = random.Random(11)
    stores, records = [], []
    for name in ("as_json", "by_value"):
        layout = ViewLayout.of(spec(name, columns, {"id": ("int8", False)}))
        store = PostgresStore(target, layout)
        assert store.open([0]) == {0: 0}
        stores.append(store)
        records.append(Records(layout))
    assert stores[0].rows_as_json
    stores[1].rows_as_json = False

    def row(i: int) -> dict[str, Any]:
        return {"id": i, **{f"v_{t}": encoder(t)(value(t, r)) for t in types}}

    first = [(i, row(i)) for i in range(80)]
    second = [(i, row(i) if i % 3 else None) for i in range(0, 80, 2)]  # updates and deletes
    for changes in (first, second):
        for store, rec in zip(stores, records, strict=True):
            start = dict(rec.next) or {0: 0}
            store.write(rec.batch([rec.change({"id": i}, doc) for i, doc in changes], start))
    with pg_database.connect() as pg:
        # As text: NaN equals NaN there, and every other value shows exactly.
        as_json, by_value = (
            pg.execute(f"SELECT id, t::text FROM {SCHEMA}.{name} t ORDER BY id").fetchall()
            for name in ("as_json", "by_value")
        )
    assert [row[0] for row in as_json] == [i for i in range(80) if i % 2 or i % 3]
    assert as_json == by_value


def test_a_view_with_other_types_binds_values_and_a_row_not_an_object_is_refused(
    target: PostgresTarget, pg_database: Any
) -> None:
    for other in [*sorted(set(SCALARS) - FROM_JSON_TEXT), "int4[]"]:
        layout = ViewLayout.of(spec("other", {"id": "int8", "v": other}, {"id": ("int8", False)}))
        assert not PostgresStore(target, layout).rows_as_json, other
    layout = ViewLayout.of(spec("objects", {"id": "int8", "v": "text"}, {"id": ("int8", False)}))
    store = PostgresStore(target, layout)
    store.open([0])
    rec = Records(layout)
    good = rec.change({"id": 1}, {"id": 1, "v": "a"})
    bad = rec.change({"id": 2}, None)
    bad = Change(bad.partition, bad.offset, bad.key, bad.key_values, orjson.dumps([2, "b"]), None)
    with pytest.raises(BadValueError, match="not a JSON object"):
        store.write(rec.batch([good, bad], {0: 0}))
    with pg_database.connect() as pg:
        assert _rows(pg, "objects") == []  # nothing of the batch
