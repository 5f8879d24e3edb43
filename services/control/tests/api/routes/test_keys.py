"""``/v1/keys`` against the real broker: the secret is answered once and stored only hashed."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from freshet.common import codec, topics
from freshet.common.products import ApiKeySpec

KEY = re.compile(r"^fsk_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")


def _only_error(response) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert len(detail) == 1, detail
    return detail[0]


def _create(client, auth, **body: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "reporting job", "roles": ["analyst"], "products": ["*"]}
    response = client.post("/v1/keys", json={**base, **body}, headers=auth)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def test_create_answers_the_secret_once_and_stores_only_its_hash(client, auth, records_of):
    before = datetime.now(UTC)
    response = client.post(
        "/v1/keys",
        json={"name": "dashboards", "roles": ["support", "analyst"], "products": ["orders_p"]},
        headers=auth,
    )
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    created = response.json()
    match = KEY.match(created["key"])
    assert match is not None, "the key is fsk_<12 lower-case alphanumerics>_<43 url-safe chars>"
    key_id, secret = match.groups()
    assert response.headers["location"] == f"/v1/keys/{key_id}"
    assert created == {
        "id": key_id,
        "name": "dashboards",
        "roles": ["support", "analyst"],
        "products": ["orders_p"],
        "created_at": created["created_at"],
        "expires_at": None,
        "key": created["key"],
    }
    created_at = datetime.fromisoformat(created["created_at"])
    assert before - timedelta(seconds=1) <= created_at <= datetime.now(UTC)

    (raw,) = records_of(topics.CONTROL_KEYS, key_id)
    assert raw is not None
    stored = ApiKeySpec.model_validate(codec.loads(raw))
    digest = hashlib.sha256(secret.encode()).hexdigest()
    assert stored == ApiKeySpec(
        id=key_id,
        name="dashboards",
        secret_sha256=digest,
        roles=("support", "analyst"),
        products=("orders_p",),
        created_at_ms=stored.created_at_ms,
        expires_at_ms=None,
    )
    assert abs(stored.created_at_ms - created_at.timestamp() * 1000) < 1
    assert secret.encode() not in raw

    shown = {k: v for k, v in created.items() if k != "key"}
    got = client.get(f"/v1/keys/{key_id}", headers=auth)
    assert got.json() == shown
    listed = client.get("/v1/keys", headers=auth)
    assert [k for k in listed.json()["keys"] if k["id"] == key_id] == [shown]
    for later in (got, listed):
        assert secret not in later.text
        assert digest not in later.text
    assert digest not in response.text


def test_every_key_is_new(client, auth):
    first, second = _create(client, auth), _create(client, auth)
    assert first["id"] != second["id"]
    assert first["key"].rsplit("_", 1)[-1] != second["key"].rsplit("_", 1)[-1]


def test_revoke_writes_a_tombstone(client, auth, records_of):
    key_id = _create(client, auth)["id"]
    revoked = client.delete(f"/v1/keys/{key_id}", headers=auth)
    assert (revoked.status_code, revoked.content) == (204, b"")
    records = records_of(topics.CONTROL_KEYS, key_id)
    assert len(records) == 2 and records[-1] is None
    assert client.get(f"/v1/keys/{key_id}", headers=auth).status_code == 404
    assert key_id not in [k["id"] for k in client.get("/v1/keys", headers=auth).json()["keys"]]
    assert client.delete(f"/v1/keys/{key_id}", headers=auth).status_code == 404


def test_expiry_and_repeated_names(client, auth, records_of):
    expires = datetime(2999, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    created = _create(
        client,
        auth,
        roles=["analyst", "support", "analyst"],
        products=["not_made_yet", "orders", "not_made_yet"],
        expires_at="2999-01-02T05:04:05.678+02:00",
    )
    assert datetime.fromisoformat(created["expires_at"]) == expires
    assert (created["roles"], created["products"]) == (
        ["analyst", "support"],
        ["not_made_yet", "orders"],
    )
    stored = ApiKeySpec.model_validate(
        codec.loads(records_of(topics.CONTROL_KEYS, created["id"])[0])
    )
    assert stored.expires_at_ms == (expires - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
        milliseconds=1
    )
    assert (
        client.get(f"/v1/keys/{created['id']}", headers=auth).json()["expires_at"]
        == (created["expires_at"])
    )


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        ({"roles": []}, ["body", "roles"], "at least 1"),
        ({"roles": ["Admin"]}, ["body", "roles", 0], "pattern"),
        ({"products": []}, ["body", "products"], "at least 1"),
        ({"products": ["orders", "*"]}, ["body", "products"], '"*" means every product'),
        ({"products": ["orders; DROP"]}, ["body", "products", 0], "pattern"),
        ({"name": ""}, ["body", "name"], "at least 1"),
        ({"name": ...}, ["body", "name"], "Field required"),
        ({"expires_at": "2001-01-01T00:00:00Z"}, ["body", "expires_at"], "expired already"),
        ({"expires_at": "2999-01-01T00:00:00"}, ["body", "expires_at"], "timezone"),
        ({"secret_sha256": "0" * 64}, ["body", "secret_sha256"], "Extra inputs"),
        ({"id": "chosenbyme12"}, ["body", "id"], "Extra inputs"),
    ],
)
def test_invalid_keys_are_422_and_make_nothing(client, auth, body, loc, words, records_of):
    base: dict[str, Any] = {"name": "k", "roles": ["analyst"], "products": ["*"]}
    merged = {k: v for k, v in {**base, **body}.items() if v is not ...}
    count = len(client.get("/v1/keys", headers=auth).json()["keys"])
    response = client.post("/v1/keys", json=merged, headers=auth)
    error = _only_error(response)
    assert (error["loc"], set(error)) == (loc, {"loc", "msg", "type"})
    assert words in error["msg"]
    assert "DROP" not in response.text and "chosenbyme12" not in response.text
    assert len(client.get("/v1/keys", headers=auth).json()["keys"]) == count


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_unknown_or_malformed_ids(client, auth, method):
    missing = client.request(method, "/v1/keys/abcdefghijkl", headers=auth)
    assert missing.status_code == 404
    assert "abcdefghijkl" in missing.json()["detail"]
    # A whole key pasted in the path is refused without repeating it.
    pasted = "fsk_abcdefghijkl_" + "S3cr3t-" * 6
    response = client.request(method, f"/v1/keys/{pasted}", headers=auth)
    assert _only_error(response)["loc"] == ["path", "key_id"]
    assert "S3cr3t" not in response.text


def test_another_replica_sees_keys_but_never_a_secret(client, make_client, auth, wait_for):
    created = _create(client, auth)
    other = make_client()
    url = f"/v1/keys/{created['id']}"
    got = wait_for(lambda: (r := other.get(url, headers=auth)).status_code == 200 and r)
    assert got.json() == {k: v for k, v in created.items() if k != "key"}
    assert other.delete(url, headers=auth).status_code == 204
    wait_for(lambda: client.get(url, headers=auth).status_code == 404)


NO_TOKEN = [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "Basic dGVzdDp0ZXN0"}]


@pytest.mark.parametrize("headers", NO_TOKEN, ids=["none", "wrong", "basic"])
def test_every_key_endpoint_needs_the_admin_token(client, auth, headers):
    key_id = _create(client, auth)["id"]
    body = {"name": "k", "roles": ["analyst"], "products": ["*"]}
    count = len(client.get("/v1/keys", headers=auth).json()["keys"])
    for method, path in [
        ("POST", "/v1/keys"),
        ("GET", "/v1/keys"),
        ("GET", f"/v1/keys/{key_id}"),
        ("DELETE", f"/v1/keys/{key_id}"),
    ]:
        response = client.request(
            method, path, json=body if method == "POST" else None, headers=headers
        )
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"] == "Bearer"
        assert key_id not in response.text
    assert len(client.get("/v1/keys", headers=auth).json()["keys"]) == count
    assert client.get(f"/v1/keys/{key_id}", headers=auth).status_code == 200
    paths = client.get("/openapi.json", headers=auth).json()["paths"]
    assert set(paths["/v1/keys"]) == {"get", "post"}
    assert set(paths["/v1/keys/{key_id}"]) == {"get", "delete"}
