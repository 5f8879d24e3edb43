"""``/v1/views`` against the real broker and the real SQL compiler."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from freshet.common import codec, topics
from freshet.common.schemas import (
    ColumnSchema,
    DataflowStatus,
    KeyColumn,
    OutputColumn,
    TableSchema,
    ViewSpec,
)

INT4, INT8, TEXT, NUMERIC = 23, 20, 25, 1700
NUMERIC_10_2 = ((10 << 16) | 2) + 4


def _table(source: str, table: str, columns: dict[str, tuple[int, int, str]]) -> TableSchema:
    return TableSchema(
        source=source,
        schema="public",
        table=table,
        topic=topics.cdc_topic(source, "public", table),
        columns=tuple(
            ColumnSchema(name=n, type_oid=oid, typmod=mod, type=t)
            for n, (oid, mod, t) in columns.items()
        ),
        primary_key=("id",),
    )


@pytest.fixture
def capture(client, auth, source_body, publish, wait_for) -> Callable[[str], str]:
    """``capture(name)``: a source ``name`` whose tables ``orders`` and ``customers`` ingest
    has published on ``freshet.schemas``; returns the name once control knows the tables."""

    def make(name: str) -> str:
        body = source_body(name=name)
        assert client.post("/v1/sources", json=body, headers=auth).status_code == 201
        orders = _table(
            name,
            "orders",
            {
                "id": (INT4, -1, "integer"),
                "customer_id": (INT4, -1, "integer"),
                "amount": (NUMERIC, NUMERIC_10_2, "numeric(10,2)"),
                "note": (TEXT, -1, "text"),
            },
        )
        customers = _table(
            name, "customers", {"id": (INT4, -1, "integer"), "email": (TEXT, -1, "text")}
        )
        for table in (orders, customers):
            publish(topics.SCHEMAS, table.qualified, table)
        state = client.app.state.control
        wait_for(lambda: {t.qualified for t in state.tables()} >= {orders.qualified})
        wait_for(lambda: {t.qualified for t in state.tables()} >= {customers.qualified})
        return name

    return make


@pytest.fixture
def source(capture, unique) -> str:
    return capture(unique)


def _orders(source: str) -> str:
    return f"SELECT o.id, o.customer_id, o.amount * 2 AS doubled\nFROM {source}.public.orders o"


def _with_email(source: str) -> str:
    return (
        "SELECT c.email, o.id AS order_id, o.amount "
        f"FROM {source}.public.orders o JOIN {source}.public.customers c ON c.id = o.customer_id"
    )


def _only_error(response) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert len(detail) == 1, detail
    return detail[0]


def _status(name: str, applied: dict[str, int], generation: int = 1, **more: Any) -> DataflowStatus:
    return DataflowStatus(
        kind="view",
        name=name,
        state=more.pop("state", "running"),
        generation=generation,
        applied=applied,
        instance="transform-1",
        **more,
    )


def test_create_list_get_replace_delete(client, auth, source, unique, records_of):
    sql = _orders(source)
    body = {"name": unique, "sql": sql, "indexes": ["doubled"]}
    created = client.post("/v1/views", json=body, headers=auth)
    assert created.status_code == 201, created.text
    assert created.headers["location"] == f"/v1/views/{unique}"
    expected = {
        "name": unique,
        "sql": sql,
        "key": ["id"],
        "columns": [
            {"name": "id", "type": "int4"},
            {"name": "customer_id", "type": "int4"},
            {"name": "doubled", "type": "numeric"},
        ],
        "tables": [f"{source}.public.orders"],
        "indexes": ["doubled"],
        "generation": 1,
        "status": {"state": "pending"},
    }
    assert created.json() == expected
    assert client.get(f"/v1/views/{unique}", headers=auth).json() == expected
    listed = client.get("/v1/views", headers=auth).json()["views"]
    assert [v for v in listed if v["name"] == unique] == [expected]

    (raw,) = records_of(topics.CONTROL_VIEWS, unique)
    assert raw is not None
    assert ViewSpec.model_validate(codec.loads(raw)) == ViewSpec(
        name=unique,
        sql=sql,
        key=("id",),
        columns=(
            OutputColumn(name="id", type="int4"),
            OutputColumn(name="customer_id", type="int4"),
            OutputColumn(name="doubled", type="numeric"),
        ),
        tables=(f"{source}.public.orders",),
        generation=1,
        key_columns=(KeyColumn(name="id", type="int4", nullable=False),),
        indexes=("doubled",),
    )

    joined = _with_email(source)
    body = {"sql": joined, "indexes": ["amount", "email"]}
    replaced = client.put(f"/v1/views/{unique}", json=body, headers=auth)
    assert replaced.status_code == 200, replaced.text
    got = replaced.json()
    assert (got["sql"], got["generation"], got["indexes"]) == (joined, 2, ["amount", "email"])
    assert sorted(got["tables"]) == [f"{source}.public.customers", f"{source}.public.orders"]
    assert [c["name"] for c in got["columns"]] == ["email", "order_id", "amount"]
    assert client.get(f"/v1/views/{unique}", headers=auth).json() == got
    spec = ViewSpec.model_validate(codec.loads(records_of(topics.CONTROL_VIEWS, unique)[-1]))
    assert (spec.sql, spec.generation, spec.tables) == (joined, 2, tuple(got["tables"]))
    assert spec.indexes == ("amount", "email")

    deleted = client.delete(f"/v1/views/{unique}", headers=auth)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert records_of(topics.CONTROL_VIEWS, unique)[-1] is None
    assert len(records_of(topics.CONTROL_VIEWS, unique)) == 3
    assert client.get(f"/v1/views/{unique}", headers=auth).status_code == 404
    assert unique not in [v["name"] for v in client.get("/v1/views", headers=auth).json()["views"]]


def test_the_key_of_a_grouped_view_is_its_group_by(client, auth, source, unique):
    sql = (
        "SELECT o.customer_id, count(*) AS orders, sum(o.amount) AS revenue\n"
        f"FROM {source}.public.orders o GROUP BY o.customer_id"
    )
    created = client.post("/v1/views", json={"name": unique, "sql": sql}, headers=auth)
    assert created.status_code == 201, created.text
    assert created.json()["key"] == ["customer_id"]
    assert created.json()["columns"] == [
        {"name": "customer_id", "type": "int4"},
        {"name": "orders", "type": "int8"},
        {"name": "revenue", "type": "numeric"},
    ]


def test_duplicate_name_is_409(client, auth, source, unique):
    body = {"name": unique, "sql": _orders(source)}
    assert client.post("/v1/views", json=body, headers=auth).status_code == 201
    again = client.post("/v1/views", json={**body, "sql": _with_email(source)}, headers=auth)
    assert again.status_code == 409
    assert unique in again.json()["detail"]
    assert client.get(f"/v1/views/{unique}", headers=auth).json()["sql"] == body["sql"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", ""), ("PUT", ""), ("DELETE", ""), ("GET", "/wait?lsn=0/1")],
)
def test_unknown_name_is_404(client, auth, source, unique, method, path):
    body = {"sql": _orders(source)} if method == "PUT" else None
    response = client.request(method, f"/v1/views/{unique}{path}", json=body, headers=auth)
    assert response.status_code == 404, response.text
    assert unique in response.json()["detail"]


def test_unknown_table_is_422_with_its_position(client, auth, source, unique):
    sql = f"SELECT id\nFROM {source}.public.nope"
    response = client.post("/v1/views", json={"name": unique, "sql": sql}, headers=auth)
    error = _only_error(response)
    position = sql.index(f"{source}.public.nope")
    assert error == {
        "loc": ["body", "sql"],
        "msg": error["msg"],
        "type": "sql",
        "position": position,
        "line": 2,
        "column": len("FROM ") + 1,
    }
    assert f"{source}.public.nope" in error["msg"]
    assert client.get(f"/v1/views/{unique}", headers=auth).status_code == 404


def test_unknown_column_is_422_with_its_position_and_no_echo(client, auth, source, unique):
    secret = f"sekret-{unique}"
    sql = (
        f"SELECT o.id, 'café' AS cafe, '{secret}' AS tag,\n"
        f"       o.colour\n"
        f"FROM {source}.public.orders o WHERE o.note <> '{secret}2'"
    )
    response = client.post("/v1/views", json={"name": unique, "sql": sql}, headers=auth)
    error = _only_error(response)
    assert error["type"] == "sql"
    assert "colour" in error["msg"]
    assert error["position"] == sql.index("o.colour")
    assert (error["line"], error["column"]) == (2, len("       ") + 1)
    assert secret not in response.text
    assert "WHERE" not in response.text
    assert client.get(f"/v1/views/{unique}", headers=auth).status_code == 404


@pytest.mark.parametrize(
    ("indexes", "position", "words"),
    [
        (["doubled", "colour"], 1, "no such column (its columns: id, customer_id, doubled, doc)"),
        (["doc"], 0, "a jsonb column has no order"),
        (["doubled", "id", "doubled"], 2, "listed twice"),
    ],
)
def test_indexes_must_be_columns_with_an_order(
    client, auth, source, unique, records_of, indexes, position, words
):
    sql = "SELECT o.id, o.customer_id, o.amount * 2 AS doubled, '{}'::jsonb AS doc\n"
    sql += f"FROM {source}.public.orders o"
    body = {"name": unique, "sql": sql, "indexes": indexes}
    error = _only_error(client.post("/v1/views", json=body, headers=auth))
    assert error["loc"] == ["body", "indexes", position]
    assert words in error["msg"], error
    assert client.get(f"/v1/views/{unique}", headers=auth).status_code == 404
    assert records_of(topics.CONTROL_VIEWS, unique) == []


def test_unsupported_sql_is_named(client, auth, source, unique):
    sql = f"SELECT id FROM {source}.public.orders ORDER BY id"
    error = _only_error(client.post("/v1/views", json={"name": unique, "sql": sql}, headers=auth))
    assert error["type"] == "sql"
    assert "ORDER BY" in error["msg"]
    assert set(error) == {"loc", "msg", "type", "position", "line", "column"}


def test_tables_of_deleted_sources_do_not_count(client, auth, capture, unique):
    gone = capture(unique + "_gone")
    assert client.delete(f"/v1/sources/{gone}", headers=auth).status_code == 204
    sql = f"SELECT id FROM {gone}.public.orders"
    error = _only_error(client.post("/v1/views", json={"name": unique, "sql": sql}, headers=auth))
    assert error["position"] == sql.index(f"{gone}.public.orders")
    assert "not a table of any source" in error["msg"]


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        ({"sql": "SELECT 1"}, ["body", "name"], "Field required"),
        ({"name": "Bad-Name", "sql": "SELECT 1"}, ["body", "name"], "pattern"),
        ({"name": "v"}, ["body", "sql"], "Field required"),
        ({"name": "v", "sql": ""}, ["body", "sql"], "at least 1"),
        ({"name": "v", "sql": ["SELECT 1"]}, ["body", "sql"], "valid string"),
        ({"name": "v", "sql": "SELECT 1", "colour": "x"}, ["body", "colour"], "Extra inputs"),
    ],
)
def test_invalid_bodies_are_422_naming_the_field(client, auth, body, loc, words):
    response = client.post("/v1/views", json=body, headers=auth)
    error = _only_error(response)
    assert (error["loc"], set(error)) == (loc, {"loc", "msg", "type"})
    assert words in error["msg"]
    assert "SELECT 1" not in response.text


def test_put_rules(client, auth, source, unique, records_of):
    url = f"/v1/views/{unique}"
    body = {"name": unique, "sql": _orders(source)}
    assert client.post("/v1/views", json=body, headers=auth).status_code == 201

    renamed = client.put(url, json={"name": "other", "sql": body["sql"]}, headers=auth)
    assert _only_error(renamed)["loc"] == ["body", "name"]
    refused = client.put(
        url, json={"sql": f"SELECT nope FROM {source}.public.orders"}, headers=auth
    )
    assert _only_error(refused)["type"] == "sql"
    same_name = client.put(url, json={"name": unique, "sql": body["sql"]}, headers=auth)
    assert same_name.json()["generation"] == 2
    assert len(records_of(topics.CONTROL_VIEWS, unique)) == 2
    # An unknown view is a 404 whatever its SQL says.
    assert client.put(url + "x", json={"sql": "SELECT"}, headers=auth).status_code == 404


def test_read_your_writes_in_one_replica(client, auth, source, unique):
    url = f"/v1/views/{unique}"
    for _ in range(3):
        body = {"name": unique, "sql": _orders(source)}
        assert client.post("/v1/views", json=body, headers=auth).status_code == 201
        assert client.get(url, headers=auth).json()["generation"] == 1
        put = client.put(url, json={"sql": _with_email(source)}, headers=auth)
        assert put.json()["generation"] == 2
        assert client.get(url, headers=auth).json()["sql"] == _with_email(source)
        assert client.delete(url, headers=auth).status_code == 204
        assert client.get(url, headers=auth).status_code == 404


def test_replicas_agree_through_the_topic(make_client, client, auth, source, unique, wait_for):
    other = make_client()
    url = f"/v1/views/{unique}"
    body = {"name": unique, "sql": _orders(source)}
    assert client.post("/v1/views", json=body, headers=auth).status_code == 201
    wait_for(lambda: other.get(url, headers=auth).status_code == 200)
    assert other.post("/v1/views", json=body, headers=auth).status_code == 409


def test_the_status_transform_reports_is_shown(client, auth, source, unique, publish, wait_for):
    body = {"name": unique, "sql": _orders(source)}
    assert client.post("/v1/views", json=body, headers=auth).status_code == 201
    status = _status(unique, {source: 0x1_0000_00A0}, freshness_ms=12, events_in=5)
    publish(topics.STATUS, f"view/{unique}", status)

    def shown():
        got = client.get(f"/v1/views/{unique}", headers=auth).json()["status"]
        return got if got["state"] != "pending" else None

    got = wait_for(shown)
    assert got == {**status.model_dump(mode="json"), "applied_lsn": {source: "1/A0"}}
    listed = client.get("/v1/views", headers=auth).json()["views"]
    assert [v["status"]["applied_lsn"] for v in listed if v["name"] == unique] == [{source: "1/A0"}]


def test_wait_answers_once_the_lsn_is_applied(client, auth, source, unique, publish):
    body = {"name": unique, "sql": _orders(source)}
    assert client.post("/v1/views", json=body, headers=auth).status_code == 201
    url = f"/v1/views/{unique}/wait"
    publish(topics.STATUS, f"view/{unique}", _status(unique, {source: 0x10}))

    answers: list[Any] = []
    waiter = threading.Thread(
        target=lambda: answers.append(
            client.get(url, params={"lsn": "0/20", "timeout_ms": 30_000}, headers=auth)
        )
    )
    started = time.monotonic()
    waiter.start()
    time.sleep(0.5)
    # The wait does not hold the event loop: other requests are answered meanwhile.
    assert client.get(f"/v1/views/{unique}", headers=auth).status_code == 200
    publish(topics.STATUS, f"view/{unique}", _status(unique, {source: 0x1F}))
    time.sleep(0.3)
    assert not answers
    publish(topics.STATUS, f"view/{unique}", _status(unique, {source: 0x20}, freshness_ms=3))
    waiter.join(35)
    (answer,) = answers
    assert answer.status_code == 200, answer.text
    assert answer.json()["applied"] == {source: 0x20}
    assert answer.json()["applied_lsn"] == {source: "0/20"}
    assert answer.json()["freshness_ms"] == 3
    assert time.monotonic() - started < 30  # woken by the status, not by its timeout

    # Already applied: answered at once; the source may be named.
    again = client.get(url, params={"lsn": "0/1F", "source": source}, headers=auth)
    assert again.status_code == 200
    assert again.json()["applied_lsn"] == {source: "0/20"}


def test_wait_times_out_with_a_clear_504(client, auth, source, unique, publish, wait_for):
    body = {"name": unique, "sql": _orders(source)}
    assert client.post("/v1/views", json=body, headers=auth).status_code == 201
    url = f"/v1/views/{unique}/wait"

    none_yet = client.get(url, params={"lsn": "0/20", "timeout_ms": 200}, headers=auth)
    assert none_yet.status_code == 504
    assert "has reported no status yet" in none_yet.json()["detail"]
    assert "after 200 ms" in none_yet.json()["detail"]

    publish(topics.STATUS, f"view/{unique}", _status(unique, {source: 0x10}))
    wait_for(
        lambda: client.get(f"/v1/views/{unique}", headers=auth).json()["status"].get("applied")
    )
    behind = client.get(url, params={"lsn": "1/20", "timeout_ms": 300}, headers=auth)
    assert behind.status_code == 504
    assert behind.json()["detail"] == (
        f"view {unique!r} has applied source {source!r} up to 0/10, not yet 1/20, "
        "after 300 ms (state running)"
    )


def test_wait_needs_the_status_of_the_current_sql(client, auth, source, unique, publish):
    body = {"name": unique, "sql": _orders(source)}
    assert client.post("/v1/views", json=body, headers=auth).status_code == 201
    publish(topics.STATUS, f"view/{unique}", _status(unique, {source: 0x100}, generation=1))
    url = f"/v1/views/{unique}/wait"
    assert client.get(url, params={"lsn": "0/100"}, headers=auth).status_code == 200

    put = client.put(f"/v1/views/{unique}", json={"sql": _with_email(source)}, headers=auth)
    assert put.json()["generation"] == 2
    stale = client.get(url, params={"lsn": "0/100", "timeout_ms": 200}, headers=auth)
    assert stale.status_code == 504
    assert "still runs generation 1, not 2" in stale.json()["detail"]

    publish(topics.STATUS, f"view/{unique}", _status(unique, {source: 0x100}, generation=2))
    fresh = client.get(url, params={"lsn": "0/100", "timeout_ms": 20_000}, headers=auth)
    assert fresh.status_code == 200
    assert fresh.json()["generation"] == 2


def test_wait_over_two_sources_names_one(client, auth, capture, unique, publish):
    first, second = capture(unique), capture(unique + "_b")
    sql = (
        f"SELECT o.id, c.email FROM {first}.public.orders o "
        f"LEFT JOIN {second}.public.customers c ON c.id = o.customer_id"
    )
    assert (
        client.post("/v1/views", json={"name": unique, "sql": sql}, headers=auth).status_code == 201
    )
    publish(topics.STATUS, f"view/{unique}", _status(unique, {first: 5, second: 9}))
    url = f"/v1/views/{unique}/wait"

    unnamed = _only_error(client.get(url, params={"lsn": "0/5"}, headers=auth))
    assert unnamed["loc"] == ["query", "source"]
    assert f"{first}, {second}" in unnamed["msg"]
    stranger = client.get(url, params={"lsn": "0/5", "source": "elsewhere"}, headers=auth)
    assert _only_error(stranger)["loc"] == ["query", "source"]
    assert "elsewhere" not in stranger.text

    named = client.get(
        url, params={"lsn": "0/9", "source": second, "timeout_ms": 20_000}, headers=auth
    )
    assert named.status_code == 200, named.text
    late = client.get(url, params={"lsn": "0/9", "source": first, "timeout_ms": 200}, headers=auth)
    assert late.status_code == 504
    assert f"source {first!r} up to 0/5, not yet 0/9" in late.json()["detail"]


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"lsn": "ABCDEF"}, ["query", "lsn"]),
        ({"lsn": "0/xyz-secret"}, ["query", "lsn"]),
        ({"lsn": "-1/5"}, ["query", "lsn"]),
        ({"lsn": "123456789/0"}, ["query", "lsn"]),
        ({}, ["query", "lsn"]),
        ({"lsn": "0/1", "timeout_ms": 60_001}, ["query", "timeout_ms"]),
        ({"lsn": "0/1", "timeout_ms": -1}, ["query", "timeout_ms"]),
        ({"lsn": "0/1", "timeout_ms": "soon"}, ["query", "timeout_ms"]),
    ],
)
def test_wait_refuses_bad_parameters(client, auth, source, unique, params, loc):
    body = {"name": unique, "sql": _orders(source)}
    assert client.post("/v1/views", json=body, headers=auth).status_code == 201
    response = client.get(f"/v1/views/{unique}/wait", params=params, headers=auth)
    error = _only_error(response)
    assert error["loc"] == loc
    for value in params.values():
        if value not in ("0/1",):
            assert str(value) not in response.text
