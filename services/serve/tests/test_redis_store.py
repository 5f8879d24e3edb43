"""The Redis store against a real Redis: rows, key order, equality indexes, offsets, fencing,
and the change stream of each generation."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis

from freshet.serve.exceptions import Fenced, StaleGeneration
from freshet.serve.materialize.keys import field_encoder
from freshet.serve.materialize.layout import ViewLayout
from freshet.serve.materialize.stores.redis import RedisKeys, RedisStore, built_views, drop_view

from .stores_util import Records, spec

VIEW = spec(
    "by_region",
    {"region": "text", "n": "int8", "total": "numeric", "doc": "jsonb"},
    {"region": ("text", True)},
    indexes=("n", "total"),
)


@pytest.fixture
def client(redis_server: str) -> Iterator[Any]:
    c = redis.Redis.from_url(redis_server)
    yield c
    c.close()


@pytest.fixture
def root() -> str:
    return f"test:{uuid.uuid4().hex[:8]}"


def _listing(client: Any, keys: RedisKeys) -> list[dict[str, Any]]:
    """Every row in key order, as a reader lists them."""
    members = client.zrangebylex(keys.keys, "-", "+")
    return [orjson.loads(v) for v in client.hmget(keys.rows, members)]


def _filter(
    client: Any, keys: RedisKeys, field: str, type_: str, value: Any
) -> list[dict[str, Any]]:
    """Rows whose ``field`` equals ``value``, in key order, from the field's index."""
    prefix = field_encoder(type_)(value)
    members = client.zrangebylex(keys.index(field), b"[" + prefix, b"(" + prefix + b"\xff")
    row_keys = [m[len(prefix) :] for m in members]
    return [orjson.loads(v) for v in client.hmget(keys.rows, row_keys)] if row_keys else []


def test_rows_listing_and_filters_follow_upserts_and_deletes(client: Any, root: str) -> None:
    layout = ViewLayout.of(VIEW)
    store = RedisStore(client, root, layout, max_records=100)
    assert store.open([0, 1]) == {0: 0, 1: 0}
    keys = store.keys
    rec = Records(layout)
    rows = {
        "north": {"region": "north", "n": 2, "total": "10.50", "doc": {"a": 1}},
        "east": {"region": "east", "n": 1, "total": "10.5", "doc": None},
        None: {"region": None, "n": 5, "total": None, "doc": [1]},
        "south": {"region": "south", "n": 2, "total": "0", "doc": None},
    }
    first = [rec.change({"region": k}, r, partition=i % 2) for i, (k, r) in enumerate(rows.items())]
    store.write(rec.batch(first, {0: 0, 1: 0}))
    assert [r["region"] for r in _listing(client, keys)] == ["east", "north", "south", None]
    assert [r["region"] for r in _filter(client, keys, "n", "int8", 2)] == ["north", "south"]
    assert [r["region"] for r in _filter(client, keys, "total", "numeric", "10.5")] == [
        "east",
        "north",
    ]
    assert [r["region"] for r in _filter(client, keys, "total", "numeric", None)] == [None]
    assert not client.exists(keys.index("doc"))  # not in the view's indexes
    assert not client.exists(keys.index("region"))  # the key: its order is the keys' order

    second = [
        rec.change({"region": "north"}, {**rows["north"], "n": 7}, partition=0, lsn=9),
        rec.change({"region": "south"}, None, partition=0, lsn=9),
        rec.change({"region": None}, None, partition=0, lsn=9),
    ]
    store.write(rec.batch(second, {0: 2, 1: 2}))
    assert [r["region"] for r in _listing(client, keys)] == ["east", "north"]
    assert _filter(client, keys, "n", "int8", 2) == []
    assert [r["n"] for r in _filter(client, keys, "n", "int8", 7)] == [7]
    # Every index holds exactly one entry per row.
    for field in ("n", "total"):
        assert client.zcard(keys.index(field)) == 2
    assert client.hlen(keys.ix) == 2
    meta = client.hgetall(keys.meta)
    assert (meta[b"o:0"], meta[b"o:1"], orjson.loads(meta[b"a:0"])) == (b"5", b"2", {"src": 9})
    assert orjson.loads(meta[b"layout"])["indexed"] == ["n", "total"]

    with pytest.raises(Fenced):  # the same batch again: the store is past it
        store.write(rec.batch(second, {0: 2, 1: 2}))
    assert RedisStore(client, root, layout, 100).open([0, 1]) == {0: 5, 1: 2}


def test_a_new_generation_replaces_the_old_once_ready_and_drop(client: Any, root: str) -> None:
    one = ViewLayout.of(VIEW)
    old = RedisStore(client, root, one, 100)
    old.open([0])
    rec = Records(one)
    old.write(
        rec.batch(
            [rec.change({"region": "x"}, {"region": "x", "n": 1, "total": "1", "doc": None})],
            {0: 0},
        )
    )
    old.caught_up()
    assert client.hget(old.keys.gen, "ready") == b"1"

    two = ViewLayout.of(VIEW.model_copy(update={"generation": 2}))
    new = RedisStore(client, root, two, 100)
    assert new.open([0]) == {0: 0}
    with pytest.raises(Fenced):
        old.write(
            rec.batch(
                [rec.change({"region": "y"}, {"region": "y", "n": 1, "total": "1", "doc": None})],
                {0: 1},
            )
        )
    with pytest.raises(StaleGeneration):
        RedisStore(client, root, one, 100).open([0])
    assert client.xlen(old.keys.changes) == 1  # the fenced batch added no change
    # Readers stay on generation 1 until generation 2 is complete.
    assert client.hget(new.keys.gen, "ready") == b"1" and client.exists(old.keys.rows)
    new.caught_up()
    assert client.hget(new.keys.gen, "ready") == b"2"
    assert client.exists(old.keys.changes) == 0
    assert not client.exists(old.keys.rows, old.keys.meta, old.keys.keys)

    assert built_views(client, root) == {"by_region"}
    assert drop_view(client, root, "by_region") > 0
    assert client.keys(f"{root}:*") == []
    assert built_views(client, root) == set()


def test_a_zombie_is_fenced_by_the_offsets(client: Any, root: str) -> None:
    layout = ViewLayout.of(VIEW)
    survivor, zombie = RedisStore(client, root, layout, 100), RedisStore(client, root, layout, 100)
    survivor.open([0])
    zombie.open([0])
    rec = Records(layout)
    good = [rec.change({"region": "r"}, {"region": "r", "n": 1, "total": "1", "doc": None})]
    survivor.write(rec.batch(good, {0: 0}))
    stale = [rec.change({"region": "r"}, {"region": "r", "n": 0, "total": "0", "doc": None})]
    with pytest.raises(Fenced):
        zombie.write(rec.batch(good + stale, {0: 0}))
    assert [r["n"] for r in _listing(client, survivor.keys)] == [1]


def test_the_same_generation_with_other_fields_is_built_again(client: Any, root: str) -> None:
    layout = ViewLayout.of(VIEW)
    store = RedisStore(client, root, layout, 100)
    store.open([0])
    rec = Records(layout)
    store.write(
        rec.batch(
            [rec.change({"region": "x"}, {"region": "x", "n": 1, "total": "1", "doc": None})],
            {0: 0},
        )
    )
    other = ViewLayout.of(
        spec("by_region", {"region": "text", "n": "int8"}, {"region": ("text", True)})
    )
    again = RedisStore(client, root, other, 100)
    assert again.open([0]) == {0: 0}
    assert not client.exists(again.keys.rows, again.keys.keys, again.keys.index("total"))


def _changes(client: Any, keys: RedisKeys) -> list[dict[str, Any]]:
    """The change stream, each entry's fields decoded (rows and key as JSON, None when empty)."""
    out = []
    for _id, fields in client.xrange(keys.changes):
        out.append(
            {
                "k": fields[b"k"],
                "kj": orjson.loads(fields[b"kj"]),
                "r": orjson.loads(fields[b"r"]) if fields[b"r"] else None,
                "b": orjson.loads(fields[b"b"]) if fields[b"b"] else None,
            }
        )
    return out


def _row(region: str | None, n: int) -> dict[str, Any]:
    return {"region": region, "n": n, "total": "1.50", "doc": None}


def test_the_change_stream_holds_each_applied_change_with_its_before_image(
    client: Any, root: str
) -> None:
    layout = ViewLayout.of(VIEW)
    store = RedisStore(client, root, layout, 100)
    store.open([0, 1])
    keys = store.keys
    rec = Records(layout)
    first = [
        rec.change({"region": "a"}, _row("a", 1), partition=0),
        rec.change({"region": None}, _row(None, 2), partition=1),
        rec.change({"region": "a"}, _row("a", 3), partition=0),  # the batch keeps the last one
    ]
    store.write(rec.batch(first, {0: 0, 1: 0}))
    encode = layout.key_decoder()
    key_a, key_null = encode(b'{"region": "a"}')[1], encode(b'{"region": null}')[1]
    assert _changes(client, keys) == [
        {"k": key_a, "kj": {"region": "a"}, "r": _row("a", 3), "b": None},
        {"k": key_null, "kj": {"region": None}, "r": _row(None, 2), "b": None},
    ]

    second = [
        rec.change({"region": "a"}, _row("a", 4), partition=0),
        rec.change({"region": None}, None, partition=1),
        rec.change({"region": "gone"}, None, partition=0),  # not there: nothing applied
        rec.change({"region": "a2"}, _row("a2", 1), partition=0),
    ]
    store.write(rec.batch(second, {0: 2, 1: 1}))
    third = [
        rec.change({"region": "a2"}, _row("a2", 1), partition=0),  # unchanged: nothing applied
        rec.change({"region": "a"}, None, partition=0),
    ]
    store.write(rec.batch(third, {0: 5, 1: 2}))
    assert _changes(client, keys)[2:] == [
        {"k": key_a, "kj": {"region": "a"}, "r": _row("a", 4), "b": _row("a", 3)},
        {"k": key_null, "kj": {"region": None}, "r": None, "b": _row(None, 2)},
        {
            "k": encode(b'{"region": "a2"}')[1],
            "kj": {"region": "a2"},
            "r": _row("a2", 1),
            "b": None,
        },
        {"k": key_a, "kj": {"region": "a"}, "r": None, "b": _row("a", 4)},
    ]
    # The rows and indexes still hold exactly what was applied.
    assert _listing(client, keys) == [_row("a2", 1)]
    assert client.zcard(keys.index("n")) == 1 and client.hlen(keys.ix) == 1

    # A batch replayed (fenced) adds no change.
    with pytest.raises(Fenced):
        store.write(rec.batch(third, {0: 5, 1: 2}))
    assert client.xlen(keys.changes) == 6


def test_the_change_stream_is_capped(client: Any, root: str) -> None:
    layout = ViewLayout.of(VIEW)
    store = RedisStore(client, root, layout, 100, changes_retained=10)
    store.open([0])
    rec = Records(layout)
    held = {0: 0}
    for round_ in range(6):
        changes = [rec.change({"region": f"r{i}"}, _row(f"r{i}", round_)) for i in range(100)]
        store.write(rec.batch(changes, held))
        held = {0: rec.next[0]}
    kept = client.xlen(store.keys.changes)
    # MAXLEN ~: whole stream nodes are trimmed, so at least 10 and far fewer than the 600 added.
    assert 10 <= kept < 600
    newest = _changes(client, store.keys)[-1]
    assert newest["r"] == _row("r99", 5) and newest["b"] == _row("r99", 4)
    first_kept = _changes(client, store.keys)[0]
    assert first_kept["b"] is not None  # the first round's entries (no before image) are gone
