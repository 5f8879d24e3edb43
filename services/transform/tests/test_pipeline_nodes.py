"""Every node kind of a pipeline, in-process: events in, sink records out (no broker needed)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson
import pytest

from freshet.common.events import UNAVAILABLE_VALUE
from freshet.common.pipelines import PipelineSpec, compile_pipeline
from freshet.common.schemas import ColumnSchema, TableSchema
from freshet.transform.pipelines.lookup import LookupTables
from freshet.transform.pipelines.nodes import Executor, NodeFailure, check_event

INT4, INT8, TEXT, NUMERIC, DATE, TIMESTAMP = 23, 20, 25, 1700, 1082, 1114
ORDERS = "shop.public.orders"
CUSTOMERS = "shop.public.customers"


def table(name: str, columns: dict[str, int], key: tuple[str, ...] = ("id",)) -> TableSchema:
    return TableSchema(
        source="shop",
        schema="public",
        table=name,
        topic=f"shop.public.{name}",
        columns=tuple(ColumnSchema(name=n, type_oid=oid, type="x") for n, oid in columns.items()),
        primary_key=key,
    )


TABLES = [
    table(
        "orders",
        {
            "id": INT4,
            "customer_id": INT4,
            "status": TEXT,
            "amount": NUMERIC,
            "qty": INT4,
            "card": TEXT,
            "code": TEXT,
            "placed": DATE,
        },
    ),
    table("archive", {"id": INT4, "customer_id": INT4, "status": TEXT, "amount": NUMERIC}),
    table("customers", {"id": INT4, "name": TEXT, "email": TEXT, "tier": TEXT}),
    table("lines", {"order_id": INT4, "line": INT4, "sku": TEXT}, key=("order_id", "line")),
]

SRC = {"id": "src", "kind": "source", "source": "shop", "tables": ["orders"]}
LSN = [100]


def run_of(*nodes: dict[str, Any], salts: dict[str, bytes] | None = None) -> Executor:
    spec = PipelineSpec.model_validate({"name": "p", "nodes": list(nodes)})
    plan = compile_pipeline(spec, TABLES)
    return Executor(plan, LookupTables(plan), salts or {})


def sink(*inputs: str, topic: str = "out", id: str = "out") -> dict[str, Any]:
    return {"id": id, "kind": "sink", "inputs": list(inputs), "topic": topic}


def event(
    op: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    table: str = "orders",
    lsn: int | None = None,
) -> dict[str, Any]:
    if lsn is None:
        LSN[0] += 10
        lsn = LSN[0]
    return {
        "before": before,
        "after": after,
        "source": {"table": table, "schema": "public", "lsn": lsn, "commit_lsn": lsn, "ts_ms": 1},
        "transaction": None,
        "op": op,
        "ts_ms": 2,
    }


def order(**fields: Any) -> dict[str, Any]:
    row = {
        "id": 1,
        "customer_id": 7,
        "status": "new",
        "amount": "10.00",
        "qty": 2,
        "card": "4111111111111111",
        "code": "12",
        "placed": 19000,
    }
    row.update(fields)
    return row


def key(**pk: Any) -> bytes:
    return orjson.dumps(pk)


def send(
    ex: Executor, value: dict[str, Any], topic: str = ORDERS, k: bytes | None = None
) -> list[tuple[str, Any]]:
    """(sink topic, (op, before, after) or None for a tombstone) of one event."""
    if k is None:
        row = value["after"] or value["before"]
        k = key(id=row["id"]) if row else None
    outputs = ex.run(topic, k, value)
    return [
        (o.topic, None if o.value is None else (o.value["op"], o.value["before"], o.value["after"]))
        for o in outputs
    ]


# --- source and sink -----------------------------------------------------------------------------


def test_a_sink_writes_the_envelope_with_its_key_and_a_tombstone_after_a_delete():
    ex = run_of(SRC, sink("src"))
    value = event("c", None, order())
    outputs = ex.run(ORDERS, key(id=1), value)
    assert len(outputs) == 1 and outputs[0].value == value  # unchanged, source block included
    assert send(ex, event("d", order(), None)) == [("out", ("d", order(), None)), ("out", None)]
    assert send(ex, event("t")) == [("out", ("t", None, None))]
    assert ex.run("shop.public.archive", key(id=1), event("c", None, order())) == []  # not read


def test_counts_per_node():
    ex = run_of(
        SRC, {"id": "f", "kind": "filter", "inputs": ["src"], "where": "qty > 1"}, sink("f")
    )
    send(ex, event("c", None, order(qty=5)))
    send(ex, event("c", None, order(qty=0)))
    counts = {n: (c.events_in, c.events_out) for n, c in ex.counts.items()}
    assert counts == {"src": (2, 2), "f": (2, 1), "out": (1, 1)}


# --- filter and route ----------------------------------------------------------------------------

FILTER = {
    "id": "f",
    "kind": "filter",
    "inputs": ["src"],
    "where": "status <> 'cancelled' AND amount >= 10",
}


def test_filter_on_inserts_and_null_is_not_true():
    ex = run_of(SRC, FILTER, sink("f"))
    assert send(ex, event("r", None, order())) == [("out", ("r", None, order()))]
    assert send(ex, event("c", None, order(amount="9.99"))) == []
    assert send(ex, event("c", None, order(amount=None))) == []  # NULL >= 10 is not true


def test_filter_turns_updates_that_enter_or_leave_into_creates_and_deletes():
    ex = run_of(SRC, FILTER, sink("f"))
    small, big = order(amount="1.00"), order(amount="50.00")
    assert send(ex, event("u", small, big)) == [("out", ("c", None, big))]
    assert send(ex, event("u", big, small)) == [("out", ("d", big, None)), ("out", None)]
    assert send(ex, event("u", big, order(amount="60.00"))) == [
        ("out", ("u", big, order(amount="60.00")))
    ]
    assert send(ex, event("u", small, small)) == []
    # without a before image (REPLICA IDENTITY DEFAULT) the after image decides alone
    assert send(ex, event("u", None, big)) == [("out", ("u", None, big))]
    assert send(ex, event("u", None, small)) == []


def test_filter_on_deletes_uses_the_before_image_unless_it_holds_only_the_key():
    ex = run_of(SRC, FILTER, sink("f"))
    assert send(ex, event("d", order(amount="1.00"), None)) == []
    assert send(ex, event("d", order(amount="50.00"), None))[0] == (
        "out",
        ("d", order(amount="50.00"), None),
    )
    key_only = {k: (1 if k == "id" else None) for k in order()}
    assert send(ex, event("d", key_only, None)) == [("out", ("d", key_only, None)), ("out", None)]


ROUTE = {
    "id": "r",
    "kind": "route",
    "inputs": ["src"],
    "routes": [{"name": "big", "where": "amount >= 100"}, {"name": "mid", "where": "amount >= 10"}],
    "default": "small",
}


def routed(*extra: dict[str, Any]) -> Executor:
    return run_of(
        SRC,
        ROUTE,
        sink("r.big", id="b", topic="big"),
        sink("r.mid", id="m", topic="mid"),
        sink("r.small", id="s", topic="small"),
        *extra,
    )


def test_route_sends_each_row_to_the_first_true_route_else_the_default():
    ex = routed()
    assert send(ex, event("c", None, order(amount="500.00")))[0][0] == "big"
    assert send(ex, event("c", None, order(amount="50.00")))[0][0] == "mid"
    assert send(ex, event("c", None, order(amount="5.00")))[0][0] == "small"
    assert send(ex, event("c", None, order(amount=None)))[0][0] == "small"


def test_route_moves_a_row_with_a_delete_and_a_create():
    ex = routed()
    a, b = order(amount="500.00"), order(amount="5.00")
    assert send(ex, event("u", a, b)) == [
        ("big", ("d", a, None)),
        ("big", None),
        ("small", ("c", None, b)),
    ]
    assert send(ex, event("u", b, b)) == [("small", ("u", b, b))]


def test_route_sends_truncates_and_key_only_deletes_everywhere():
    ex = routed()
    assert [t for t, _ in send(ex, event("t"))] == ["big", "mid", "small"]
    key_only = {k: (1 if k == "id" else None) for k in order()}
    assert [t for t, v in send(ex, event("d", key_only, None)) if v] == ["big", "mid", "small"]


def test_route_without_default_drops_unmatched_rows():
    ex = run_of(
        SRC,
        {**ROUTE, "default": None},
        sink("r.big", id="b", topic="big"),
        sink("r.mid", id="m", topic="mid"),
    )
    assert send(ex, event("c", None, order(amount="5.00"))) == []
    assert send(ex, event("u", order(amount="50.00"), order(amount="5.00"))) == [
        ("mid", ("d", order(amount="50.00"), None)),
        ("mid", None),
    ]


# --- row maps ------------------------------------------------------------------------------------


def one(ex: Executor, value: dict[str, Any]) -> tuple[Any, ...]:
    (found,) = [v for _t, v in send(ex, value) if v is not None]
    return found


def test_project_drop_rename_map_both_images():
    ex = run_of(
        SRC,
        {"id": "p", "kind": "project", "inputs": ["src"], "fields": ["status", "id"]},
        sink("p"),
    )
    assert one(ex, event("u", order(status="a"), order(status="b"))) == (
        "u",
        {"status": "a", "id": 1},
        {"status": "b", "id": 1},
    )
    ex = run_of(
        SRC,
        {"id": "d", "kind": "drop", "inputs": ["src"], "fields": ["card", "code", "placed"]},
        sink("d"),
    )
    assert list(one(ex, event("c", None, order()))[2]) == [
        "id",
        "customer_id",
        "status",
        "amount",
        "qty",
    ]
    ex = run_of(
        SRC,
        {"id": "r", "kind": "rename", "inputs": ["src"], "fields": {"qty": "quantity"}},
        sink("r"),
    )
    _op, before, after = one(ex, event("d", order(), None))
    assert after is None and before["quantity"] == 2 and "qty" not in before


def test_compute_adds_and_replaces_fields_in_the_change_event_encoding():
    ex = run_of(
        SRC,
        {
            "id": "c",
            "kind": "compute",
            "inputs": ["src"],
            "fields": {
                "total": "amount * qty",
                "status": "upper(status)",
                "due": "placed + 30",
                "big": "CASE WHEN amount * qty > 15 THEN 'yes' ELSE 'no' END",
                "tag": "coalesce(code, 'none') || '-' || id",
            },
        },
        sink("c"),
    )
    after = one(ex, event("c", None, order(code=None)))[2]
    assert after["total"] == "20.00" and after["status"] == "NEW"
    assert after["due"] == 19030  # a date is days since the epoch, as Debezium writes it
    assert after["big"] == "yes" and after["tag"] == "none-1"
    assert list(after)[:3] == ["id", "customer_id", "status"]  # a replaced field keeps its place


def test_cast():
    ex = run_of(
        SRC,
        {
            "id": "k",
            "kind": "cast",
            "inputs": ["src"],
            "fields": {"code": "integer", "amount": "float8", "placed": "timestamp"},
        },
        sink("k"),
    )
    after = one(ex, event("c", None, order(code=" 42 ")))[2]
    assert after["code"] == 42 and after["amount"] == 10.0
    assert after["placed"] == 19000 * 86_400_000_000  # microseconds since the epoch


def test_a_bad_value_fails_naming_the_node():
    ex = run_of(
        SRC,
        {"id": "k", "kind": "cast", "inputs": ["src"], "fields": {"code": "integer"}},
        sink("k"),
    )
    with pytest.raises(NodeFailure) as info:
        send(ex, event("c", None, order(code="x12")))
    assert info.value.node == "k"
    assert info.value.message == 'invalid input syntax for type integer: "x12"'
    ex = run_of(
        SRC,
        {"id": "c", "kind": "compute", "inputs": ["src"], "fields": {"each": "amount / qty"}},
        sink("c"),
    )
    with pytest.raises(NodeFailure) as info:
        send(ex, event("c", None, order(qty=0)))
    assert (info.value.node, info.value.message) == ("c", "division by zero")
    # the failing node counted the event in, not out; the sink counted nothing
    assert (ex.counts["c"].events_in, ex.counts["c"].events_out) == (1, 0)
    assert ex.counts["out"].events_in == 0


def test_an_unsent_toast_value_in_an_expression_is_a_failure_that_says_what_to_do():
    ex = run_of(
        SRC,
        {"id": "c", "kind": "compute", "inputs": ["src"], "fields": {"n": "length(card)"}},
        sink("c"),
    )
    with pytest.raises(NodeFailure) as info:
        send(ex, event("u", None, order(card=UNAVAILABLE_VALUE)))
    assert "REPLICA IDENTITY FULL" in info.value.message


def test_mask_methods():
    salt = b"pepper"
    ex = run_of(
        SRC,
        {
            "id": "m",
            "kind": "mask",
            "inputs": ["src"],
            "salt_encrypted": "opaque",
            "fields": {
                "card": {"method": "keep_last", "keep": 4},
                "status": {"method": "hash"},
                "qty": {"method": "hash"},
                "code": {"method": "redact", "replacement": "[hidden]"},
                "customer_id": {"method": "null"},
            },
        },
        sink("m"),
        salts={"m": salt},
    )
    _op, before, after = one(ex, event("u", order(), order(status=None, card=UNAVAILABLE_VALUE)))
    assert before["card"] == "************1111"
    assert before["status"] == hmac.new(salt, b"new", hashlib.sha256).hexdigest()
    assert before["qty"] == hmac.new(salt, b"2", hashlib.sha256).hexdigest()  # its text, hashed
    assert before["code"] == "[hidden]" and before["customer_id"] is None
    assert after["status"] is None  # NULL stays NULL
    assert after["card"] == UNAVAILABLE_VALUE  # carries no data: left as the marker
    short = one(ex, event("c", None, order(card="12")))[2]
    assert short["card"] == "12"


def test_union_merges_its_inputs():
    ex = run_of(
        SRC,
        {"id": "old", "kind": "source", "source": "shop", "tables": ["archive"]},
        {"id": "u", "kind": "union", "inputs": ["src", "old"]},
        {"id": "f", "kind": "filter", "inputs": ["u"], "where": "status = 'x'"},
        sink("f"),
    )
    assert send(ex, event("c", None, order(status="x")))[0][1][0] == "c"
    archived = {"id": 9, "customer_id": 1, "status": "x", "amount": "1"}
    assert send(ex, event("c", None, archived, table="archive"), topic="shop.public.archive") == [
        ("out", ("c", None, archived))
    ]
    assert ex.counts["u"].events_in == 2


# --- lookup --------------------------------------------------------------------------------------

LOOKUP = {
    "id": "who",
    "kind": "lookup",
    "inputs": ["src"],
    "table": "customers",
    "on": {"id": "customer_id"},
    "fields": ["name", "tier"],
    "prefix": "customer_",
}


def customer(**fields: Any) -> dict[str, Any]:
    row = {"id": 7, "name": "Ada", "email": "ada@example.com", "tier": "gold"}
    row.update(fields)
    return row


def test_lookup_enriches_with_the_current_row_and_follows_its_changes():
    ex = run_of(SRC, LOOKUP, sink("who"))
    assert one(ex, event("c", None, order()))[2]["customer_name"] is None  # not known yet: NULL
    ex.run(CUSTOMERS, key(id=7), event("c", None, customer(), table="customers"))
    after = one(ex, event("c", None, order()))[2]
    assert (after["customer_name"], after["customer_tier"]) == ("Ada", "gold")
    ex.run(CUSTOMERS, key(id=7), event("u", None, customer(name="Bea"), table="customers"))
    _op, before, after = one(ex, event("u", order(), order(status="paid")))
    assert before["customer_name"] == after["customer_name"] == "Bea"  # both images, current row
    ex.run(CUSTOMERS, key(id=7), event("d", customer(), None, table="customers"))
    assert one(ex, event("c", None, order()))[2]["customer_name"] is None
    assert one(ex, event("c", None, order(customer_id=None)))[2]["customer_tier"] is None


def test_lookup_skips_replays_keeps_toast_values_and_clears_on_truncate():
    ex = run_of(SRC, {**LOOKUP, "fields": {"name": "buyer", "email": "mail"}}, sink("who"))
    first = event("c", None, customer(), table="customers", lsn=1000)
    ex.run(CUSTOMERS, key(id=7), first)
    ex.run(
        CUSTOMERS,
        key(id=7),
        event(
            "u", None, customer(name="Bea", email=UNAVAILABLE_VALUE), table="customers", lsn=1010
        ),
    )
    ex.run(CUSTOMERS, key(id=7), first)  # a replay of an older event changes nothing
    after = one(ex, event("c", None, order()))[2]
    assert (after["buyer"], after["mail"]) == ("Bea", "ada@example.com")
    ex.run(CUSTOMERS, None, event("t", table="customers", lsn=1020))
    assert one(ex, event("c", None, order()))[2]["buyer"] is None
    dirty = ex.lookups.take_dirty()
    assert list(dirty) == [f"lookup:{CUSTOMERS}"]
    assert orjson.loads(dirty[f"lookup:{CUSTOMERS}"]['["7"]']) == [1020, 1020, None]
    assert ex.lookups.take_dirty() == {}


def test_lookup_restores_committed_rows():
    ex = run_of(SRC, LOOKUP, sink("who"))
    ex.lookups.load(CUSTOMERS, [('["7"]', orjson.dumps([5, 5, {"name": "Cy", "tier": None}]))])
    assert one(ex, event("c", None, order()))[2]["customer_name"] == "Cy"


def test_lookup_on_a_composite_key_with_numbers_of_other_widths():
    ex = run_of(
        SRC,
        {
            "id": "l",
            "kind": "lookup",
            "inputs": ["src"],
            "table": "lines",
            "on": {"order_id": "id::bigint", "line": "qty::numeric"},
            "fields": {"sku": "sku"},
        },
        sink("l"),
    )
    ex.run(
        "shop.public.lines",
        key(order_id=1, line=2),
        event("c", None, {"order_id": 1, "line": 2, "sku": "A-1"}, table="lines"),
    )
    assert one(ex, event("c", None, order()))[2]["sku"] == "A-1"


def test_a_lookup_event_without_its_key_fails_naming_the_lookup_node():
    ex = run_of(SRC, LOOKUP, sink("who"))
    with pytest.raises(NodeFailure) as info:
        ex.run(CUSTOMERS, b'{"nope": 1}', event("c", None, customer(), table="customers"))
    assert info.value.node == "who"


# --- event shape ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "the value is not a JSON object"),
        ({"op": "x", "source": {}}, "'op' is 'x', not one of c, u, d, r, t"),
        ({"op": "c", "after": {}}, "the event has no 'source' block"),
        ({"op": "c", "source": {}, "after": None}, "a 'c' event has no 'after'"),
        ({"op": "d", "source": {}, "before": None}, "a 'd' event has no 'before'"),
        ({"op": "u", "source": {}, "after": 3}, "'after' is neither an object nor null"),
    ],
)
def test_check_event(value: Any, message: str):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_event(value)
