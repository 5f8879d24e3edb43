"""``/v1/sources`` against the real broker: round trips, errors, and the password kept secret."""

from __future__ import annotations

import logging

import pytest


def _locs(response) -> list[list]:
    assert response.status_code == 422, response.text
    return [error["loc"] for error in response.json()["detail"]]


def _only_error(response) -> dict:
    detail = response.json()["detail"]
    assert len(detail) == 1, detail
    assert set(detail[0]) == {"loc", "msg", "type"}
    return detail[0]


def test_create_list_get_replace_delete(client, auth, source_body, unique):
    body = source_body()
    created = client.post("/v1/sources", json=body, headers=auth)
    assert created.status_code == 201, created.text
    assert created.headers["location"] == f"/v1/sources/{unique}"
    expected = {
        "name": unique,
        "kind": "postgres",
        "host": "db.example.internal",
        "port": 5432,
        "database": "shop",
        "user": "freshet",
        "password": "********",
        "sslmode": "prefer",
        "tables": ["public.orders", "public.customers"],
        "snapshot": "initial",
        "slot_name": f"freshet_{unique}",
        "publication_name": f"freshet_{unique}",
        "generation": 1,
        "status": {"state": "pending"},
    }
    assert created.json() == expected

    listed = client.get("/v1/sources", headers=auth)
    assert listed.status_code == 200
    mine = [s for s in listed.json()["sources"] if s["name"] == unique]
    assert mine == [expected]

    assert client.get(f"/v1/sources/{unique}", headers=auth).json() == expected

    replaced = client.put(
        f"/v1/sources/{unique}",
        json=source_body(name=..., tables=["sales.orders"], snapshot="never", sslmode="require"),
        headers=auth,
    )
    assert replaced.status_code == 200, replaced.text
    after = {
        **expected,
        "tables": ["sales.orders"],
        "snapshot": "never",
        "sslmode": "require",
        "generation": 2,
    }
    assert replaced.json() == after
    assert client.get(f"/v1/sources/{unique}", headers=auth).json() == after

    deleted = client.delete(f"/v1/sources/{unique}", headers=auth)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert client.get(f"/v1/sources/{unique}", headers=auth).status_code == 404
    names = [s["name"] for s in client.get("/v1/sources", headers=auth).json()["sources"]]
    assert unique not in names


def test_defaults_and_explicit_names(client, auth, source_body, unique):
    body = source_body(
        port=...,
        tables=...,
        slot_name="my_slot",
        publication_name="_pub1",
    )
    created = client.post("/v1/sources", json=body, headers=auth)
    assert created.status_code == 201, created.text
    got = created.json()
    assert (got["port"], got["tables"], got["snapshot"]) == (5432, None, "initial")
    assert (got["slot_name"], got["publication_name"]) == ("my_slot", "_pub1")


def test_duplicate_name_is_409(client, auth, source_body, unique):
    assert client.post("/v1/sources", json=source_body(), headers=auth).status_code == 201
    again = client.post("/v1/sources", json=source_body(host="other"), headers=auth)
    assert again.status_code == 409
    assert unique in again.json()["detail"]
    assert client.get(f"/v1/sources/{unique}", headers=auth).json()["host"] == "db.example.internal"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_unknown_name_is_404(client, auth, source_body, unique, method):
    body = source_body(name=...) if method == "PUT" else None
    response = client.request(method, f"/v1/sources/{unique}", json=body, headers=auth)
    assert response.status_code == 404
    assert unique in response.json()["detail"]


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"name": "Bad-Name"}, "name", "pattern"),
        ({"name": "1abc"}, "name", "pattern"),
        ({"name": "x" * 64}, "name", "pattern"),
        ({"port": 70000}, "port", "less than or equal to 65535"),
        ({"port": 0}, "port", "greater than or equal to 1"),
        ({"port": "abc"}, "port", "valid integer"),
        ({"kind": "mysql"}, "kind", "'mysql'"),
        ({"kind": ...}, "kind", "Field required"),
        ({"tables": ["public.orders", "orders"]}, "tables", "schema.table"),
        ({"tables": ["a.b.c"]}, "tables", "schema.table"),
        ({"tables": []}, "tables", "at least 1"),
        ({"colour": "blue"}, "colour", "Extra inputs are not permitted"),
        ({"password": ...}, "password", "Field required"),
        ({"password": ""}, "password", "at least 1"),
        ({"host": ...}, "host", "Field required"),
        ({"sslmode": "maybe"}, "sslmode", "'require'"),
        ({"snapshot": "sometimes"}, "snapshot", "'initial'"),
        ({"slot_name": "Slot-1"}, "slot_name", "pattern"),
        ({"publication_name": "p" * 64}, "publication_name", "pattern"),
    ],
)
def test_invalid_bodies_are_422_naming_the_field(
    client, auth, source_body, overrides, field, words
):
    body = source_body(**overrides)
    response = client.post("/v1/sources", json=body, headers=auth)
    error = _only_error(response)
    assert error["loc"][:2] == ["body", field]
    assert words in error["msg"]
    if body.get("password"):
        assert body["password"] not in response.text
    assert client.get(f"/v1/sources/{body.get('name')}", headers=auth).status_code == 404


def test_a_tables_entry_without_a_dot_is_named(client, auth, source_body):
    response = client.post("/v1/sources", json=source_body(tables=["orders"]), headers=auth)
    error = _only_error(response)
    assert error["loc"] == ["body", "tables", 0]
    assert "'schema.table'" in error["msg"]


def test_a_name_too_long_for_the_default_slot_asks_for_slot_name(client, auth, source_body):
    name = "n" * 60
    response = client.post("/v1/sources", json=source_body(name=name), headers=auth)
    error = _only_error(response)
    assert error["loc"] == ["body", "slot_name"]
    assert "give slot_name explicitly" in error["msg"]
    ok = source_body(name=name + "ab", slot_name="s_long", publication_name="p_long")
    assert client.post("/v1/sources", json=ok, headers=auth).status_code == 201
    assert client.delete(f"/v1/sources/{name}ab", headers=auth).status_code == 204


def test_malformed_json_is_422_without_echo(client, auth, source_body):
    secret = source_body()["password"]
    raw = b'{"name": "x", "password": "' + secret.encode() + b'", '
    response = client.post(
        "/v1/sources", content=raw, headers={**auth, "Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert secret not in response.text


def test_put_rules(client, auth, source_body, unique):
    assert client.post("/v1/sources", json=source_body(), headers=auth).status_code == 201
    url = f"/v1/sources/{unique}"

    renamed = client.put(url, json=source_body(name="other_name"), headers=auth)
    assert _only_error(renamed)["loc"] == ["body", "name"]

    # The stored password is kept for the same server and user ...
    kept = client.put(url, json=source_body(password=..., database="shop2"), headers=auth)
    assert kept.status_code == 200, kept.text
    assert kept.json()["generation"] == 2
    # ... but not sent to another one.
    moved = client.put(url, json=source_body(password=..., host="evil.example"), headers=auth)
    error = _only_error(moved)
    assert error["loc"] == ["body", "password"]
    assert client.get(url, headers=auth).json()["host"] == "db.example.internal"

    empty = client.put(url, json=source_body(password=""), headers=auth)
    assert _locs(empty) == [["body", "password"]]

    bad = client.put(url, json=source_body(port=99999), headers=auth)
    assert _locs(bad) == [["body", "port"]]
    assert client.get(url, headers=auth).json()["generation"] == 2


def test_the_password_never_appears_in_answers_or_logs(client, auth, source_body, unique, caplog):
    caplog.set_level(logging.DEBUG)
    secret = source_body()["password"]
    url = f"/v1/sources/{unique}"
    answers = [
        client.post("/v1/sources", json=source_body(), headers=auth),
        client.get("/v1/sources", headers=auth),
        client.get(url, headers=auth),
        client.put(url, json=source_body(name=..., port="x"), headers=auth),
        client.put(url, json=source_body(name=..., passwd=secret), headers=auth),
        client.post("/v1/sources", json=source_body(password=[secret]), headers=auth),
        client.post("/v1/sources", json=source_body(name="BAD", extra=secret), headers=auth),
        client.post("/v1/sources", json=source_body(), headers=auth),
        client.put(url, json=source_body(name=...), headers=auth),
        client.get("/v1/sources", headers=auth),
        client.delete(url, headers=auth),
    ]
    codes = [a.status_code for a in answers]
    assert codes == [201, 200, 200, 422, 422, 422, 422, 409, 200, 200, 204]
    for answer in answers:
        assert secret not in answer.text
    assert any(unique in r.getMessage() for r in caplog.records)
    assert secret not in caplog.text
    for record in caplog.records:
        assert secret not in record.getMessage()


def test_read_your_writes_in_one_replica(client, auth, source_body, unique):
    url = f"/v1/sources/{unique}"
    for round_ in range(5):
        assert client.post("/v1/sources", json=source_body(), headers=auth).status_code == 201
        assert client.get(url, headers=auth).json()["generation"] == 1
        put = client.put(url, json=source_body(port=5433 + round_), headers=auth)
        assert put.json()["generation"] == 2
        assert client.get(url, headers=auth).json()["port"] == 5433 + round_
        assert client.delete(url, headers=auth).status_code == 204
        assert client.get(url, headers=auth).status_code == 404
        assert client.delete(url, headers=auth).status_code == 404
