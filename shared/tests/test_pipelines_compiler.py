"""Pipeline specs: what the compiler accepts, the schemas it derives, every problem it names."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from freshet.common.pipelines import PipelineError, PipelineSpec, compile_pipeline
from freshet.common.pipelines.values import FieldType, event_encoder, lookup_key
from freshet.common.schemas import ColumnSchema, TableSchema
from freshet.common.sql import types as t

INT4, INT8, TEXT, NUMERIC, TIMESTAMP, DATE, JSONB, BOOL = 23, 20, 25, 1700, 1114, 1082, 3802, 16


def table(
    name: str,
    columns: dict[str, tuple[int, int]],
    key: tuple[str, ...] = ("id",),
    source: str = "shop",
) -> TableSchema:
    return TableSchema(
        source=source,
        schema="public",
        table=name,
        topic=f"{source}.public.{name}",
        columns=tuple(
            ColumnSchema(name=n, type_oid=oid, typmod=mod, type="x")
            for n, (oid, mod) in columns.items()
        ),
        primary_key=key,
    )


TABLES = [
    table(
        "orders",
        {
            "id": (INT4, -1),
            "customer_id": (INT4, -1),
            "status": (TEXT, -1),
            "amount": (NUMERIC, (10 << 16 | 2) + 4),
            "card": (TEXT, -1),
            "code": (TEXT, -1),
            "placed": (TIMESTAMP, 3),
        },
    ),
    table(
        "archive",
        {
            "id": (INT4, -1),
            "customer_id": (INT4, -1),
            "status": (TEXT, -1),
            "amount": (NUMERIC, -1),
        },
    ),
    table("customers", {"id": (INT4, -1), "name": (TEXT, -1), "email": (TEXT, -1)}),
    table("nokey", {"a": (INT4, -1)}, key=()),
]


def spec(*nodes: dict[str, Any], name: str = "p") -> PipelineSpec:
    return PipelineSpec.model_validate({"name": name, "nodes": list(nodes)})


SRC = {"id": "src", "kind": "source", "source": "shop", "tables": ["public.orders"]}


def sink(*inputs: str, topic: str = "out.orders", id: str = "out") -> dict[str, Any]:
    return {"id": id, "kind": "sink", "inputs": list(inputs), "topic": topic}


def problems(*nodes: dict[str, Any], sources: list[str] | None = None) -> list[tuple[Any, ...]]:
    with pytest.raises(PipelineError) as info:
        compile_pipeline(spec(*nodes), TABLES, sources)
    return [(p.node, p.attribute, p.message, p.position) for p in info.value.problems]


def only(found: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    assert len(found) == 1, found
    return found[0]


# --- what it accepts -------------------------------------------------------------------------


def test_a_full_pipeline_compiles_with_the_schemas_each_node_derives():
    plan = compile_pipeline(
        spec(
            SRC,
            {"id": "old", "kind": "source", "source": "shop", "tables": ["archive"]},
            {"id": "live", "kind": "filter", "inputs": ["src"], "where": "status <> 'cancelled'"},
            {"id": "both", "kind": "union", "inputs": ["live", "old"]},
            {
                "id": "who",
                "kind": "lookup",
                "inputs": ["both"],
                "table": "customers",
                "on": {"id": "customer_id"},
                "fields": ["name", "email"],
                "prefix": "customer_",
            },
            {
                "id": "calc",
                "kind": "compute",
                "inputs": ["who"],
                "fields": {
                    "doubled": "amount * 2",
                    "label": "'x'",
                    "upper_name": "upper(customer_name)",
                },
            },
            {
                "id": "hide",
                "kind": "mask",
                "inputs": ["calc"],
                "salt": "pepper",
                "fields": {
                    "customer_email": {"method": "hash"},
                    "amount": {"method": "keep_last", "keep": 2},
                },
            },
            {
                "id": "ren",
                "kind": "rename",
                "inputs": ["hide"],
                "fields": {"customer_name": "buyer"},
            },
            {"id": "fewer", "kind": "drop", "inputs": ["ren"], "fields": ["label"]},
            {
                "id": "cast",
                "kind": "cast",
                "inputs": ["fewer"],
                "fields": {"customer_id": "bigint"},
            },
            {
                "id": "split",
                "kind": "route",
                "inputs": ["cast"],
                "routes": [{"name": "big", "where": "doubled > 200"}],
                "default": "small",
            },
            {"id": "pick", "kind": "project", "inputs": ["split.small"], "fields": ["id", "buyer"]},
            sink("split.big", id="big", topic="orders.big"),
            sink("pick", id="small", topic="orders.small"),
        ),
        TABLES,
        ["shop"],
    )
    nodes = plan.nodes
    assert list(nodes)[:2] == ["src", "old"]  # topological: sources first, sinks last
    assert set(list(nodes)[-2:]) == {"big", "small"}
    assert set(nodes["src"].schema or {}) == {
        "id",
        "customer_id",
        "status",
        "amount",
        "card",
        "code",
        "placed",
    }
    # the union keeps what both inputs share with the same type: archive.amount is unconstrained
    # numeric, orders.amount numeric(10,2) - both canonical numeric
    assert list(nodes["both"].schema or {}) == ["id", "customer_id", "status", "amount"]
    assert (nodes["who"].schema or {})["customer_email"] == FieldType(t.TEXT)
    calc = nodes["calc"].schema or {}
    assert calc["doubled"] == FieldType(t.NUMERIC) and calc["label"] == FieldType(t.TEXT)
    assert (nodes["hide"].schema or {})["amount"] == FieldType(t.TEXT)
    assert "buyer" in (nodes["ren"].schema or {}) and "customer_name" not in (
        nodes["ren"].schema or {}
    )
    assert (nodes["cast"].schema or {})["customer_id"] == FieldType(t.INT8)
    assert list(nodes["pick"].schema or {}) == ["id", "buyer"]
    assert plan.entry == {"shop.public.orders": ["src"], "shop.public.archive": ["old"]}
    assert plan.lookups == {"shop.public.customers": ["who"]}
    assert plan.input_topics == {
        "shop.public.orders": "shop",
        "shop.public.archive": "shop",
        "shop.public.customers": "shop",
    }
    assert plan.sink_topics == ("orders.big", "orders.small")
    assert plan.consumers[("split", "big")] == ["big"]
    assert plan.consumers[("split", "small")] == ["pick"]


def test_a_source_of_several_tables_exposes_the_columns_they_share():
    plan = compile_pipeline(
        spec({**SRC, "tables": ["orders", "public.archive"]}, sink("src")), TABLES
    )
    assert list(plan.nodes["src"].schema or {}) == ["id", "customer_id", "status", "amount"]


def test_timestamp_precision_decides_the_encoding_and_is_kept():
    plan = compile_pipeline(spec(SRC, sink("src")), TABLES)
    assert (plan.nodes["src"].schema or {})["placed"] == FieldType(t.TIMESTAMP, 3)


# --- the graph -------------------------------------------------------------------------------


def test_unknown_inputs_are_named():
    assert only(problems(SRC, sink("nope"))) == (
        "out",
        "inputs.0",
        "input 'nope' is not a node of this pipeline",
        None,
    )


def test_duplicate_ids():
    found = problems(SRC, {**SRC}, sink("src"))
    assert ("src", "id", "this id is used by more than one node", None) in found


def test_a_cycle_is_named_with_its_path():
    found = problems(
        SRC,
        {"id": "a", "kind": "union", "inputs": ["src", "b"]},
        {"id": "b", "kind": "filter", "inputs": ["a"], "where": "true"},
        sink("b"),
    )
    assert {f[0] for f in found} == {"a", "b"}
    assert all(f[1] == "inputs" and "cycle: a -> b -> a" in f[2] for f in found)


def test_a_node_feeding_itself_is_a_cycle():
    found = problems(SRC, {"id": "a", "kind": "union", "inputs": ["src", "a"]}, sink("a"))
    assert found == [("a", "inputs", "the node is part of a cycle: a -> a", None)]


def test_a_sink_without_inputs():
    assert only(problems(SRC, sink())) == (
        "out",
        "inputs",
        "a sink node needs an input; it has none",
        None,
    )


def test_a_pipeline_without_a_sink():
    assert only(problems(SRC)) == (None, "nodes", "a pipeline needs at least one sink node", None)


def test_arity():
    found = problems(
        SRC,
        {"id": "s2", "kind": "source", "source": "shop", "tables": ["archive"]},
        {"id": "f", "kind": "filter", "inputs": ["src", "s2"], "where": "true"},
        {"id": "u", "kind": "union", "inputs": ["src"]},
        sink("f", "u"),
    )
    assert ("u", "inputs", "a union node takes two or more inputs", None) in found
    assert any(f[0] == "f" and "exactly one input, not 2" in f[2] for f in found)


def test_route_outputs_must_be_named_and_exist():
    route = {
        "id": "r",
        "kind": "route",
        "inputs": ["src"],
        "routes": [{"name": "a", "where": "true"}],
    }
    assert (
        "take one of its outputs as input, e.g. 'r.a'" in only(problems(SRC, route, sink("r")))[2]
    )
    assert (
        only(problems(SRC, route, sink("r.b")))[2] == "route 'r' has no output 'b' (its outputs: a)"
    )
    assert (
        only(problems(SRC, sink("src.x")))[2]
        == "node 'src' has a single output: refer to it as 'src'"
    )


def test_a_sink_has_no_output():
    found = problems(
        SRC, sink("src"), {"id": "f", "kind": "filter", "inputs": ["out"], "where": "true"}
    )
    assert ("f", "inputs.0", "node 'out' is a sink: it has no output to read", None) in found


def test_node_ids_and_kinds_are_checked_by_the_model():
    with pytest.raises(ValidationError):
        spec({**SRC, "id": "Bad-Id"}, sink("src"))
    with pytest.raises(ValidationError):
        spec(SRC, {"id": "x", "kind": "explode", "inputs": ["src"]})
    with pytest.raises(ValidationError):
        spec({**SRC, "inputs": ["x"]}, sink("src"))  # a source has no inputs


# --- tables and fields -----------------------------------------------------------------------


def test_unknown_source_and_tables():
    assert only(problems({**SRC, "source": "gone"}, sink("src"), sources=["shop", "gone"]))[
        2
    ].startswith("source 'gone' has published no captured tables yet")
    assert only(problems(SRC, sink("src"), sources=["other"])) == (
        "src",
        "source",
        "source 'shop' does not exist",
        None,
    )
    assert only(problems({**SRC, "tables": ["public.nope"]}, sink("src"))) == (
        "src",
        "tables.0",
        "table 'public.nope' is not captured by source 'shop'",
        None,
    )


def test_unknown_fields_are_named_with_what_exists():
    node, attr, message, _ = only(
        problems(
            SRC,
            {"id": "p", "kind": "project", "inputs": ["src"], "fields": ["id", "nope"]},
            sink("p"),
        )
    )
    assert (node, attr) == ("p", "fields.1")
    assert message.startswith("field 'nope' does not exist (the input has: id, customer_id, status")


def test_rename_collisions():
    found = problems(
        SRC,
        {"id": "r", "kind": "rename", "inputs": ["src"], "fields": {"status": "card"}},
        sink("r"),
    )
    assert only(found)[2] == "field 'card' exists already: drop or rename it first"
    # swapping two names is fine
    compile_pipeline(
        spec(
            SRC,
            {
                "id": "r",
                "kind": "rename",
                "inputs": ["src"],
                "fields": {"status": "card", "card": "status"},
            },
            sink("r"),
        ),
        TABLES,
    )


def test_expression_type_errors_name_node_attribute_and_position():
    found = problems(
        SRC,
        {"id": "c", "kind": "compute", "inputs": ["src"], "fields": {"x": "amount + status"}},
        sink("c"),
    )
    node, attr, message, position = only(found)
    assert (node, attr, position) == ("c", "fields.x", 7)
    assert message.startswith("operator does not exist: numeric + text")


def test_unknown_field_in_expression_has_its_position():
    node, attr, message, position = only(
        problems(
            SRC,
            {
                "id": "f",
                "kind": "filter",
                "inputs": ["src"],
                "where": "status = 'x' AND colour = 1",
            },
            sink("f"),
        )
    )
    assert (node, attr, position) == ("f", "where", 17)
    assert message.startswith('field "colour" does not exist')


def test_a_condition_must_be_boolean():
    assert only(
        problems(
            SRC, {"id": "f", "kind": "filter", "inputs": ["src"], "where": "amount"}, sink("f")
        )
    )[2] == ("a condition must be of type boolean, not numeric")
    assert only(
        problems(
            SRC, {"id": "f", "kind": "filter", "inputs": ["src"], "where": "'maybe'"}, sink("f")
        )
    )[2].startswith("invalid input syntax for type boolean")


def test_syntax_errors_and_python_are_refused_as_sql():
    node, attr, message, _ = only(
        problems(
            SRC,
            {
                "id": "f",
                "kind": "filter",
                "inputs": ["src"],
                "where": "__import__('os').system('x')",
            },
            sink("f"),
        )
    )
    assert (node, attr) == ("f", "where")
    assert message.startswith("syntax error")
    assert (
        only(
            problems(
                SRC,
                {"id": "f", "kind": "filter", "inputs": ["src"], "where": "id = 1; DROP TABLE x"},
                sink("f"),
            )
        )[1]
        == "where"
    )


def test_qualified_field_references_are_refused():
    assert (
        "without a qualifier"
        in only(
            problems(
                SRC,
                {"id": "f", "kind": "filter", "inputs": ["src"], "where": "o.id = 1"},
                sink("f"),
            )
        )[2]
    )


def test_cast_types_are_parsed_not_concatenated():
    cast = {"id": "c", "kind": "cast", "inputs": ["src"]}
    assert only(problems(SRC, {**cast, "fields": {"code": "int) + (1"}}, sink("c")))[2].startswith(
        "not a type name"
    )
    assert only(problems(SRC, {**cast, "fields": {"code": "int + 1"}}, sink("c")))[2].startswith(
        "not a type name"
    )
    assert (
        only(problems(SRC, {**cast, "fields": {"code": "widget"}}, sink("c")))[2]
        == 'type "widget" is not supported'
    )
    assert only(problems(SRC, {**cast, "fields": {"placed": "uuid"}}, sink("c")))[2] == (
        "cannot cast type timestamp without time zone to uuid"
    )
    plan = compile_pipeline(
        spec(SRC, {**cast, "fields": {"code": "integer", "amount": "numeric(12,3)"}}, sink("c")),
        TABLES,
    )
    assert (plan.nodes["c"].schema or {})["code"] == FieldType(t.INT4)


def test_mask_hash_needs_a_salt_and_fields_must_exist():
    mask = {
        "id": "m",
        "kind": "mask",
        "inputs": ["src"],
        "fields": {"card": {"method": "hash"}, "pin": {"method": "null"}},
    }
    found = problems(SRC, mask, sink("m"))
    assert ("m", "salt", "the 'hash' method needs a salt; give one in 'salt'", None) in found
    assert any(f[:2] == ("m", "fields.pin") for f in found)


def test_the_salt_is_never_dumped():
    s = spec(
        SRC,
        {
            "id": "m",
            "kind": "mask",
            "inputs": ["src"],
            "salt": "pepper",
            "fields": {"card": {"method": "hash"}},
        },
        sink("m"),
    )
    node = s.node("m")
    assert node.salt == SecretStr("pepper")
    assert "pepper" not in s.model_dump_json() and 'salt"' not in s.model_dump_json().replace(
        "salt_encrypted", ""
    )


def test_lookup_problems():
    lookup = {
        "id": "l",
        "kind": "lookup",
        "inputs": ["src"],
        "table": "customers",
        "on": {"id": "customer_id"},
        "fields": ["name"],
    }
    assert only(problems(SRC, {**lookup, "table": "nope"}, sink("l")))[:2] == ("l", "table")
    assert only(problems(SRC, {**lookup, "table": "nokey"}, sink("l")))[2] == (
        "table shop.public.nokey has no primary key to look rows up by"
    )
    found = problems(SRC, {**lookup, "on": {"name": "status"}}, sink("l"))
    assert (
        "l",
        "on.name",
        "'name' is not a primary-key column of shop.public.customers (its key: id)",
        None,
    ) in found
    assert any(f[1] == "on" and "missing: id" in f[2] for f in found)
    node, attr, message, _ = only(problems(SRC, {**lookup, "on": {"id": "status"}}, sink("l")))
    assert (node, attr) == ("l", "on.id")
    assert message.startswith("shop.public.customers.id is integer but the expression is text")
    assert only(problems(SRC, {**lookup, "fields": ["status"]}, sink("l")))[1] == "fields.status"
    assert only(problems(SRC, {**lookup, "fields": {"name": "status"}}, sink("l")))[2].startswith(
        "field 'status' exists already in the row"
    )
    # a bigint probe meets an integer key; a literal is read as the key's type
    compile_pipeline(spec(SRC, {**lookup, "on": {"id": "customer_id::bigint"}}, sink("l")), TABLES)
    compile_pipeline(spec(SRC, {**lookup, "on": {"id": "'7'"}}, sink("l")), TABLES)


def test_route_problems():
    route = {
        "id": "r",
        "kind": "route",
        "inputs": ["src"],
        "routes": [{"name": "a", "where": "id > 1"}, {"name": "a", "where": "id"}],
        "default": "a",
    }
    found = problems(SRC, route, sink("r.a"))
    assert ("r", "routes.1.name", "route name 'a' is used twice", None) in found
    assert ("r", "default", "the default output 'a' is also a route's name", None) in found
    assert ("r", "routes.1.where", "a condition must be of type boolean, not integer", 0) in found


def test_sink_topics():
    assert only(problems(SRC, sink("src", topic="bad topic")))[1] == "topic"
    assert "Freshet's or Kafka's own" in only(problems(SRC, sink("src", topic="freshet.status")))[2]
    assert (
        "would feed the pipeline its own output"
        in only(problems(SRC, sink("src", topic="shop.public.orders")))[2]
    )


def test_every_problem_is_reported_at_once():
    found = problems(
        SRC,
        {"id": "f", "kind": "filter", "inputs": ["src"], "where": "nope"},
        {"id": "c", "kind": "compute", "inputs": ["src"], "fields": {"x": "1 +"}},
        sink("f", "c"),
    )
    assert {(f[0], f[1]) for f in found} == {("f", "where"), ("c", "fields.x")}


def test_a_problem_upstream_does_not_cascade():
    found = problems(
        SRC,
        {"id": "p", "kind": "project", "inputs": ["src"], "fields": ["nope"]},
        {"id": "f", "kind": "filter", "inputs": ["p"], "where": "anything > 1"},
        sink("f"),
    )
    assert [f[0] for f in found] == ["p"]


# --- values ----------------------------------------------------------------------------------

ROUND_TRIPS = [
    (t.BOOL, True),
    (t.INT8, 2**40),
    (t.NUMERIC, Decimal("12.50")),
    (t.FLOAT8, 1.5),
    (t.FLOAT8, float("inf")),
    (t.TEXT, "héllo"),
    (t.DATE, date(2024, 2, 29)),
    (t.TIME, time(23, 59, 58, 123456)),
    (t.TIMESTAMP, datetime(2024, 1, 2, 3, 4, 5, 678901)),
    (t.TIMESTAMPTZ, datetime(2024, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)),
    (t.INTERVAL, timedelta(days=3, microseconds=7)),
    (t.JSONB, {"a": [1, "x", None]}),
    (t.BYTEA, b"\x00\xff"),
    ("int4[]", [1, None, 3]),
    ("date[]", [date(2020, 1, 1)]),
]


@pytest.mark.parametrize(("type_", "value"), ROUND_TRIPS)
def test_event_encoder_is_the_decoders_inverse(type_: str, value: Any):
    field = FieldType.of(type_)
    encoded = event_encoder(field)(value)
    assert t.decoder(field.type, field.typmod)(encoded) == value


def test_millisecond_timestamps_keep_their_unit():
    field = FieldType.of(t.TIMESTAMP, 3)
    value = datetime(2024, 1, 2, 3, 4, 5, 678000)
    assert event_encoder(field)(value) == 1704164645678
    assert t.decoder(t.TIMESTAMP, 3)(1704164645678) == value


def test_lookup_keys_equate_equal_numbers():
    assert (
        lookup_key([5], [t.INT4])
        == lookup_key([Decimal("5.00")], [t.NUMERIC])
        == lookup_key([5], [t.INT8])
    )
    assert lookup_key([None], [t.INT4]) is None
    assert lookup_key([1, "a"], [t.INT4, t.TEXT]) != lookup_key([1, "b"], [t.INT4, t.TEXT])
