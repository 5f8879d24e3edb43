"""``/v1/pipelines`` against the real broker and the real pipeline compiler."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from freshet.common import codec, topics
from freshet.common.pipelines import PipelineSpec
from freshet.common.schemas import ColumnSchema, DataflowStatus, NodeCounts, TableSchema
from freshet.common.secrets import SecretBox

INT4, TEXT, NUMERIC = 23, 25, 1700
SALT = "pepper-Secret-salt-77"


def _table(source: str, table: str, columns: dict[str, int]) -> TableSchema:
    return TableSchema(
        source=source,
        schema="public",
        table=table,
        topic=topics.cdc_topic(source, "public", table),
        columns=tuple(ColumnSchema(name=n, type_oid=oid, type="x") for n, oid in columns.items()),
        primary_key=("id",),
    )


@pytest.fixture
def source(client, auth, source_body, publish, wait_for, unique) -> str:
    """A source ``unique`` whose tables ``orders`` and ``customers`` are published."""
    assert (
        client.post("/v1/sources", json=source_body(name=unique), headers=auth).status_code == 201
    )
    orders = _table(
        unique, "orders", {"id": INT4, "customer_id": INT4, "amount": NUMERIC, "email": TEXT}
    )
    customers = _table(unique, "customers", {"id": INT4, "name": TEXT})
    for table in (orders, customers):
        publish(topics.SCHEMAS, table.qualified, table)
    state = client.app.state.control
    wait_for(
        lambda: {t.qualified for t in state.tables()} >= {orders.qualified, customers.qualified}
    )
    return unique


def _nodes(source: str, **extra: Any) -> list[dict[str, Any]]:
    return [
        {"id": "src", "kind": "source", "source": source, "tables": ["public.orders"]},
        {"id": "big", "kind": "filter", "inputs": ["src"], "where": "amount > 100"},
        {
            "id": "hide",
            "kind": "mask",
            "inputs": ["big"],
            "salt": SALT,
            "fields": {"email": {"method": "hash"}},
        },
        {"id": "out", "kind": "sink", "inputs": ["hide"], "topic": f"{source}.big_orders"},
        *extra.get("more", []),
    ]


def _errors(response) -> list[dict[str, Any]]:
    assert response.status_code == 422, response.text
    return response.json()["detail"]


def test_create_list_get_replace_delete(client, auth, source, unique, records_of, secret_key):
    created = client.post(
        "/v1/pipelines", json={"name": unique, "nodes": _nodes(source)}, headers=auth
    )
    assert created.status_code == 201, created.text
    assert created.headers["location"] == f"/v1/pipelines/{unique}"
    got = created.json()
    assert SALT not in created.text
    assert got["nodes"][2] == {
        "id": "hide",
        "kind": "mask",
        "inputs": ["big"],
        "fields": {"email": {"method": "hash", "keep": 4, "mask_char": "*", "replacement": "***"}},
        "salt": "********",
    }
    assert (got["generation"], got["sources"], got["sinks"]) == (
        1,
        [source],
        [f"{source}.big_orders"],
    )
    assert got["dlq_topic"] == f"freshet.dlq.{unique}"
    assert got["status"] == {"state": "pending"}
    assert client.get(f"/v1/pipelines/{unique}", headers=auth).json() == got
    listed = client.get("/v1/pipelines", headers=auth).json()["pipelines"]
    assert [p for p in listed if p["name"] == unique] == [got]

    # On the topic: the salt encrypted with the deployment's key, never in clear.
    (raw,) = records_of(topics.CONTROL_PIPELINES, unique)
    assert raw is not None and SALT.encode() not in raw
    spec = PipelineSpec.model_validate(codec.loads(raw))
    mask = spec.node("hide")
    assert SecretBox(SecretStr(secret_key)).decrypt(mask.salt_encrypted).get_secret_value() == SALT

    # Replace without repeating the salt: the stored one is kept.
    nodes = _nodes(source)
    nodes[1]["where"] = "amount > 500"
    del nodes[2]["salt"]
    replaced = client.put(f"/v1/pipelines/{unique}", json={"nodes": nodes}, headers=auth)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["generation"] == 2
    assert replaced.json()["nodes"][2]["salt"] == "********"
    spec2 = PipelineSpec.model_validate(
        codec.loads(records_of(topics.CONTROL_PIPELINES, unique)[-1])
    )
    assert spec2.node("big").where == "amount > 500"
    assert spec2.node("hide").salt_encrypted == mask.salt_encrypted

    deleted = client.delete(f"/v1/pipelines/{unique}", headers=auth)
    assert deleted.status_code == 204
    assert records_of(topics.CONTROL_PIPELINES, unique)[-1] is None
    assert client.get(f"/v1/pipelines/{unique}", headers=auth).status_code == 404


def test_status_is_transforms(client, auth, source, unique, publish, wait_for):
    assert (
        client.post(
            "/v1/pipelines", json={"name": unique, "nodes": _nodes(source)}, headers=auth
        ).status_code
        == 201
    )
    status = DataflowStatus(
        kind="pipeline",
        name=unique,
        state="running",
        generation=1,
        applied={source: (1 << 32) + 16},
        nodes={
            "src": NodeCounts(events_in=3, events_out=3),
            "_dlq": NodeCounts(events_in=1, events_out=1),
        },
        freshness_ms=12,
        lag=4,
    )
    publish(topics.STATUS, topics.status_key("pipeline", unique), status)
    got = wait_for(
        lambda: client.get(f"/v1/pipelines/{unique}", headers=auth).json()["status"].get("nodes")
    )
    assert got == {
        "src": {"events_in": 3, "events_out": 3},
        "_dlq": {"events_in": 1, "events_out": 1},
    }
    shown = client.get(f"/v1/pipelines/{unique}", headers=auth).json()["status"]
    assert (shown["state"], shown["applied_lsn"], shown["lag"], shown["freshness_ms"]) == (
        "running",
        {source: "1/10"},
        4,
        12,
    )


def test_validate_shows_each_nodes_fields_and_writes_nothing(
    client, auth, source, unique, records_of
):
    response = client.post(
        "/v1/pipelines/validate", json={"name": unique, "nodes": _nodes(source)}, headers=auth
    )
    assert response.status_code == 200, response.text
    nodes = response.json()["nodes"]
    assert nodes["src"] == {
        "id": "integer",
        "customer_id": "integer",
        "amount": "numeric",
        "email": "text",
    }
    assert set(nodes) == {"src", "big", "hide"}
    assert records_of(topics.CONTROL_PIPELINES, unique) == []


def test_type_error_is_422_naming_node_attribute_and_position(
    client, auth, source, unique, records_of
):
    nodes = _nodes(source)
    nodes[1]["where"] = "amount > 100 AND\nemail + 1 > 0"
    (error,) = _errors(
        client.post("/v1/pipelines", json={"name": unique, "nodes": nodes}, headers=auth)
    )
    assert error["loc"] == ["body", "nodes", 1, "where"]
    assert (error["type"], error["node"]) == ("pipeline", "big")
    assert error["msg"].startswith("operator does not exist: text + integer")
    assert (error["position"], error["line"], error["column"]) == (23, 2, 7)
    assert records_of(topics.CONTROL_PIPELINES, unique) == []


def test_graph_problems_are_422(client, auth, source, unique):
    nodes = _nodes(source)
    nodes[3]["inputs"] = []
    nodes[1]["inputs"] = ["nope"]
    errors = _errors(
        client.post("/v1/pipelines", json={"name": unique, "nodes": nodes}, headers=auth)
    )
    assert {(tuple(e["loc"]), e["msg"]) for e in errors} == {
        (("body", "nodes", 1, "inputs", 0), "input 'nope' is not a node of this pipeline"),
        (("body", "nodes", 3, "inputs"), "a sink node needs an input; it has none"),
    }


def test_a_cycle_is_422(client, auth, source, unique):
    nodes = _nodes(source)
    nodes[1]["inputs"] = ["hide"]
    errors = _errors(
        client.post("/v1/pipelines", json={"name": unique, "nodes": nodes}, headers=auth)
    )
    assert {e["node"] for e in errors} == {"big", "hide"}
    assert all("cycle" in e["msg"] for e in errors)


def test_unknown_tables_fields_and_sources_are_422(client, auth, source, unique):
    nodes = _nodes(source)
    nodes[0]["tables"] = ["public.nope"]
    (error,) = _errors(
        client.post("/v1/pipelines", json={"name": unique, "nodes": nodes}, headers=auth)
    )
    assert (error["loc"], error["msg"]) == (
        ["body", "nodes", 0, "tables", 0],
        f"table 'public.nope' is not captured by source '{source}'",
    )
    nodes = _nodes(source)
    nodes[0]["source"] = "gone"
    (error,) = _errors(
        client.post("/v1/pipelines", json={"name": unique, "nodes": nodes}, headers=auth)
    )
    assert error["msg"] == "source 'gone' does not exist"
    nodes = _nodes(source)
    nodes[2]["fields"] = {"phone": {"method": "redact"}}
    (error,) = _errors(
        client.post("/v1/pipelines", json={"name": unique, "nodes": nodes}, headers=auth)
    )
    assert error["loc"] == ["body", "nodes", 2, "fields", "phone"]


def test_a_hash_without_salt_and_a_ciphertext_in_a_request_are_422(client, auth, source, unique):
    nodes = _nodes(source)
    del nodes[2]["salt"]
    (error,) = _errors(
        client.post("/v1/pipelines", json={"name": unique, "nodes": nodes}, headers=auth)
    )
    assert (error["loc"], error["node"]) == (["body", "nodes", 2, "salt"], "hide")
    nodes[2]["salt_encrypted"] = "gAAAA-whatever"
    (error,) = _errors(
        client.post("/v1/pipelines", json={"name": unique, "nodes": nodes}, headers=auth)
    )
    assert error["loc"] == ["body", "nodes", "2", "salt_encrypted"]


def test_malformed_bodies_are_422_without_echoing_the_salt(client, auth, source, unique):
    nodes = _nodes(source)
    nodes[2]["kind"] = "explode"
    response = client.post("/v1/pipelines", json={"name": unique, "nodes": nodes}, headers=auth)
    assert response.status_code == 422
    assert SALT not in response.text
    response = client.post(
        "/v1/pipelines", json={"name": "Bad Name", "nodes": _nodes(source)}, headers=auth
    )
    assert response.status_code == 422


def test_duplicate_409_unknown_404_rename_422(client, auth, source, unique):
    body = {"name": unique, "nodes": _nodes(source)}
    assert client.post("/v1/pipelines", json=body, headers=auth).status_code == 201
    assert client.post("/v1/pipelines", json=body, headers=auth).status_code == 409
    for method in ("GET", "PUT", "DELETE"):
        response = client.request(
            method,
            f"/v1/pipelines/{unique}x",
            json={"nodes": _nodes(source)} if method == "PUT" else None,
            headers=auth,
        )
        assert response.status_code == 404, (method, response.text)
    renamed = client.put(
        f"/v1/pipelines/{unique}", json={"name": "other", "nodes": _nodes(source)}, headers=auth
    )
    assert _errors(renamed)[0]["loc"] == ["body", "name"]


def test_no_credentials_no_answer(client, unique):
    assert client.get("/v1/pipelines").status_code == 401
    assert client.post("/v1/pipelines", json={"name": unique, "nodes": []}).status_code == 401


def test_replacing_an_unknown_pipeline_is_404_even_with_bad_nodes(client, auth, unique):
    response = client.put(
        f"/v1/pipelines/{unique}",
        json={"nodes": [{"id": "x", "kind": "sink", "topic": "t"}]},
        headers=auth,
    )
    assert response.status_code == 404
