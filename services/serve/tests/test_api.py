"""Serve's REST API against the real broker (products, keys) and Redis (rows).

The view is written into Redis as the materializer writes it; products and API keys travel on
the real control topics. Covers authentication, the access matrix (keys x products x fields x
row filters), filters, sort, cursor pagination while rows change, masks, and injection attempts.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from decimal import Decimal
from typing import Any

import pytest
from pydantic import SecretStr

from freshet.common.pipelines.spec import MaskRule
from freshet.common.products import ProductRole
from freshet.common.secrets import SecretBox
from freshet.devstack import servers
from freshet.serve import exceptions

from .api_util import ServeApi, wait_for
from .stores_util import spec

VIEW = spec(
    "orders_api",
    {"id": "int8", "region": "text", "total": "numeric", "email": "text", "doc": "jsonb"},
    {"id": ("int8", False)},
    indexes=("region", "total"),  # email is filtered on by examining rows
)
REGIONS = ["EU", "US", "APAC", None]


def _row(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "region": REGIONS[i % 4],
        "total": str(Decimal(i * 7 % 50) + Decimal("0.25")),
        "email": f"user{i}@example.com",
        "doc": {"i": i},
    }


ROWS = {i: _row(i) for i in range(1, 251)}


@pytest.fixture
def api(kafka: Any, redis_server: str):
    api = ServeApi(kafka.bootstrap, redis_server)
    api.materialize(VIEW, [({"id": i}, row) for i, row in ROWS.items()])
    yield api
    api.close()


def _auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _get(client, path: str, key: str | None, **params: Any):
    return client.get(path, headers=_auth(key), params=params)


def _all_pages(client, path: str, key: str, **params: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        query = dict(params, **({"cursor": cursor} if cursor else {}))
        response = _get(client, path, key, **query)
        assert response.status_code == 200, response.text
        body = response.json()
        rows += body["rows"]
        cursor = body["next_cursor"]
        if cursor is None:
            return rows
    raise AssertionError("pagination never ended")


def test_credentials_are_required_and_checked(api: ServeApi) -> None:
    product = api.product(VIEW)
    good = api.key(["reader"], [product.name])
    expired = api.key(["reader"], [product.name], expires_at_ms=1)
    other = api.key(["reader"], ["some_other_product"])
    no_role = api.key(["auditor"], [product.name])
    path = f"/v1/products/{product.name}/rows"
    with api.client() as client:
        assert wait_for(client, path, good).status_code == 200
        assert _get(client, path, None).status_code == 401
        assert _get(client, path, None).headers["www-authenticate"] == "Bearer"
        key_id = good.split("_")[1]
        for bad in (expired, f"fsk_{key_id}_wrongsecret", "fsk_nope_nope", "garbage", good + "x"):
            response = _get(client, path, bad)
            assert response.status_code == 401, bad
            assert bad not in response.text
        # X-API-Key works as well as Bearer.
        assert client.get(path, headers={"X-API-Key": good}).status_code == 200
        # A key that does not list the product, or holds none of its roles: 403; a product that
        # does not exist answers the same, so keys learn nothing of other products.
        for key in (other, no_role):
            assert _get(client, path, key).status_code == 403
        assert _get(client, "/v1/products/no_such_product/rows", good).status_code == 403
        # Every API route needs a key; /health does not.
        for route in (
            "/v1/products",
            f"/v1/products/{product.name}",
            "/openapi.json",
            f"/v1/products/{product.name}/rows/1",
        ):
            assert _get(client, route, None).status_code == 401, route
        assert client.get("/health").status_code in (200, 503)


def test_pages_cover_every_row_once_in_key_order(api: ServeApi) -> None:
    product = api.product(VIEW)
    key = api.key(["reader"], ["*"])
    path = f"/v1/products/{product.name}/rows"
    with api.client() as client:
        wait_for(client, path, key)
        rows = _all_pages(client, path, key, limit=17)
        assert [r["id"] for r in rows] == sorted(ROWS)
        assert rows[0] == ROWS[1]
        # Sorted by a field, descending, ties in key order reversed; NULLs last ascending.
        by_total = _all_pages(client, path, key, sort="-total", limit=33)
        want = sorted(ROWS.values(), key=lambda r: (Decimal(r["total"]), r["id"]), reverse=True)
        assert [r["id"] for r in by_total] == [r["id"] for r in want]
        by_region = _all_pages(client, path, key, sort="region", limit=40)
        want = sorted(
            ROWS.values(), key=lambda r: (r["region"] is None, r["region"] or "", r["id"])
        )
        assert [r["id"] for r in by_region] == [r["id"] for r in want]
        # A field without an index cannot be sorted on; the answer says why and what can.
        response = _get(client, path, key, sort="email")
        assert response.status_code == 400
        detail = response.json()["detail"]
        assert "no index on it" in detail and "sortable: id, region, total" in detail, detail


def test_filters_match_what_sql_would_return(api: ServeApi) -> None:
    product = api.product(VIEW)
    key = api.key(["reader"], ["*"])
    path = f"/v1/products/{product.name}/rows"
    cases = [
        ({"region": "EU"}, lambda r: r["region"] == "EU"),
        ({"region.ne": "EU"}, lambda r: r["region"] is not None and r["region"] != "EU"),
        ({"region.null": "true"}, lambda r: r["region"] is None),
        (
            {"total.gte": "40", "total.lt": "45.25"},
            lambda r: Decimal("40") <= Decimal(r["total"]) < Decimal("45.25"),
        ),
        (
            {"total.gt": "40.25", "region": "US"},
            lambda r: Decimal(r["total"]) > Decimal("40.25") and r["region"] == "US",
        ),
        ({"id.lte": "10", "id.gt": "3"}, lambda r: 3 < r["id"] <= 10),
        ({"id": "42"}, lambda r: r["id"] == 42),
        ({"email": "user7@example.com"}, lambda r: r["email"] == "user7@example.com"),
        ({"total.gt": "10", "sort": "-total"}, lambda r: Decimal(r["total"]) > 10),
    ]
    with api.client() as client:
        wait_for(client, path, key)
        for params, predicate in cases:
            got = _all_pages(client, path, key, limit=7, **params)
            want = [r for r in ROWS.values() if predicate(r)]
            assert sorted(r["id"] for r in got) == sorted(r["id"] for r in want), params
            assert len(got) == len({r["id"] for r in got}), params


def test_bad_parameters_are_named(api: ServeApi) -> None:
    product = api.product(
        VIEW, roles={"reader": ProductRole(masks={"email": MaskRule(method="redact")})}
    )
    key = api.key(["reader"], ["*"])
    path = f"/v1/products/{product.name}/rows"
    with api.client() as client:
        wait_for(client, path, key)
        cases = {
            "total.gt=abc": "total",
            "nosuch=1": "nosuch",
            "region.between=1": "region.between",
            "email=x": "masked",
            "sort=email": "masked",
            "sort=doc": "doc",
            "doc=1": "doc",
            "limit=0": "limit",
            "limit=x": "limit",
            "cursor=notacursor": "cursor",
            "lsn=zz": "lsn",
            "id=1.5": "id",
        }
        for query, named in cases.items():
            response = client.get(f"{path}?{query}", headers={"Authorization": f"Bearer {key}"})
            assert response.status_code == 400, (query, response.text)
            assert named in response.json()["detail"], (query, response.text)
        # A cursor of another query is refused.
        first = _get(client, path, key, limit=5).json()
        response = _get(client, path, key, limit=5, sort="total", cursor=first["next_cursor"])
        assert response.status_code == 400
        assert "another query" in response.json()["detail"]


def test_injection_attempts_are_plain_values(api: ServeApi) -> None:
    product = api.product(VIEW)
    key = api.key(["reader"], ["*"])
    path = f"/v1/products/{product.name}/rows"
    attempts = [
        "' OR 1=1 --",
        "EU' OR region IS NOT NULL --",
        "*",
        "EU\r\nFLUSHALL\r\n",
        "[",
        "(",
        "-",
        "+",
        "\x00",
        "EU; DROP TABLE x",
    ]
    with api.client() as client:
        wait_for(client, path, key)
        for attempt in attempts:
            response = _get(client, path, key, region=attempt)
            assert response.status_code == 200, attempt
            assert response.json()["rows"] == [], attempt
            response = _get(client, path, key, **{"region.gte": attempt, "limit": 1000})
            assert response.status_code == 200
            want = [r for r in ROWS.values() if r["region"] is not None and r["region"] >= attempt]
            assert len(response.json()["rows"]) == len(want), attempt
        for sort in ("region; DROP", "-", "--region", "id desc", "1"):
            assert _get(client, path, key, sort=sort).status_code == 400, sort
        # Nothing was flushed or dropped.
        assert len(_all_pages(client, path, key, limit=1000)) == len(ROWS)


def test_roles_filter_rows_and_mask_fields(api: ServeApi) -> None:
    roles = {
        "eu": ProductRole(
            row_filter="region = 'EU' AND total > 10",
            masks={"email": MaskRule(method="keep_last", keep=11)},
        ),
        "analyst": ProductRole(
            masks={"email": MaskRule(method="hash"), "doc": MaskRule(method="null")}
        ),
        "admin": ProductRole(),
    }
    product = api.product(VIEW, fields=["id", "region", "total", "email", "doc"], roles=roles)
    narrow = api.product(VIEW, name=f"narrow_{api.unique}", fields=["id", "total"])
    eu = api.key(["eu", "admin"], [product.name])  # the first role the product defines applies
    analyst = api.key(["analyst"], ["*"])
    admin = api.key(["admin"], [product.name])
    reader = api.key(["reader"], [narrow.name])
    path = f"/v1/products/{product.name}/rows"
    salt = ("salt-" + api.unique).encode()
    with api.client() as client:
        wait_for(client, path, admin)
        wait_for(client, f"/v1/products/{narrow.name}/rows", reader)
        # Role eu: only its rows, email masked but for its last 11 characters.
        rows = _all_pages(client, path, eu, limit=9)
        want = [r for r in ROWS.values() if r["region"] == "EU" and Decimal(r["total"]) > 10]
        assert [r["id"] for r in rows] == [r["id"] for r in want]
        for got in rows:
            email = ROWS[got["id"]]["email"]
            assert got["email"] == "*" * (len(email) - 11) + email[-11:]
        hidden = next(i for i, r in ROWS.items() if r["region"] != "EU")
        assert _get(client, f"{path}/{hidden}", eu).status_code == 404
        assert _get(client, f"{path}/{want[0]['id']}", eu).json()["id"] == want[0]["id"]
        # A filter on a field the role sees is combined with its row filter.
        only_us = _get(client, path, eu, region="US").json()["rows"]
        assert only_us == []
        # Role analyst: every row, email hashed with the product's salt, doc nulled.
        row = _get(client, f"{path}/5", analyst).json()
        expected = hmac.new(salt, ROWS[5]["email"].encode(), hashlib.sha256).hexdigest()
        assert row["email"] == expected and row["doc"] is None
        assert ROWS[5]["email"] not in _get(client, path, analyst, limit=1000).text
        # Role admin sees the row as it is.
        assert _get(client, f"{path}/5", admin).json() == ROWS[5]
        # A narrower product exposes only its fields.
        assert _get(client, f"/v1/products/{narrow.name}/rows/5", reader).json() == {
            "id": 5,
            "total": ROWS[5]["total"],
        }
        assert (
            _get(client, f"/v1/products/{narrow.name}/rows", reader, email="x").status_code == 400
        )
        assert _get(client, path, reader).status_code == 403
        # The products a key may read, and what its role masks.
        listed = _get(client, "/v1/products", analyst).json()["products"]
        assert {p["name"] for p in listed} >= {product.name}
        described = _get(client, f"/v1/products/{product.name}", eu).json()
        assert {f["name"]: f["masked"] for f in described["fields"]}["email"] is True
        assert described["sortable"] == ["id", "region", "total"]


def test_point_reads_and_composite_keys(api: ServeApi) -> None:
    view = spec(
        "by_day_api",
        {"region": "text", "day": "date", "n": "int8"},
        {"region": ("text", True), "day": ("date", False)},
    )
    rows = [
        ({"region": r, "day": d}, {"region": r, "day": d, "n": i})
        for i, (r, d) in enumerate(
            [("EU", "2024-01-02"), ("EU", "2024-01-03"), (None, "2024-01-02")]
        )
    ]
    api.materialize(view, rows)
    product = api.product(view, name=f"days_{api.unique}")
    key = api.key(["reader"], ["*"])
    base = f"/v1/products/{product.name}/rows"
    with api.client() as client:
        wait_for(client, base, key)
        assert _get(client, f'{base}/["EU","2024-01-03"]', key).json()["n"] == 1
        assert _get(client, f'{base}/[null,"2024-01-02"]', key).json()["n"] == 2
        assert _get(client, f'{base}/["EU","2024-01-09"]', key).status_code == 404
        assert _get(client, f"{base}/EU", key).status_code == 400
        assert _get(client, f'{base}/["EU","not a date"]', key).status_code == 400
        # Filters on the first key column use the key order.
        got = _get(client, base, key, region="EU").json()["rows"]
        assert [r["n"] for r in got] == [0, 1]
        # A filter on a field without an index examines the rows in key order.
        got = _get(client, base, key, day="2024-01-02").json()["rows"]
        assert [r["n"] for r in got] == [0, 2]
    single = api.product(VIEW, name=f"single_{api.unique}")
    with api.client() as client:
        wait_for(client, f"/v1/products/{single.name}/rows", key)
        assert _get(client, f"/v1/products/{single.name}/rows/7", key).json() == ROWS[7]
        assert _get(client, f"/v1/products/{single.name}/rows/7000", key).status_code == 404
        assert _get(client, f"/v1/products/{single.name}/rows/x", key).status_code == 400
        assert _get(client, f"/v1/products/{single.name}/rows/7", key, sort="id").status_code == 400


def test_openapi_describes_each_readable_product(api: ServeApi) -> None:
    roles = {"reader": ProductRole(masks={"email": MaskRule(method="redact")})}
    product = api.product(VIEW, roles=roles)
    hidden = api.product(VIEW, name=f"hidden_{api.unique}")
    key = api.key(["reader"], [product.name])
    with api.client() as client:
        doc = wait_for(client, "/openapi.json", key).json()
        assert doc["openapi"].startswith("3.1")
        assert f"/v1/products/{product.name}/rows" in doc["paths"]
        assert f"/v1/products/{hidden.name}/rows" not in doc["paths"]
        schema = doc["components"]["schemas"][f"{product.name}_row"]
        assert schema["properties"]["email"]["anyOf"][0]["type"] == "string"
        assert schema["properties"]["id"]["anyOf"][0]["type"] == "integer"
        params = {
            p["name"]
            for p in doc["paths"][f"/v1/products/{product.name}/rows"]["get"]["parameters"]
        }
        assert {"region", "total.gte", "sort", "cursor", "lsn"} <= params
        assert "email" not in params  # masked: not filterable
        (sort,) = [
            p
            for p in doc["paths"][f"/v1/products/{product.name}/rows"]["get"]["parameters"]
            if p["name"] == "sort"
        ]
        # The first key column and the indexed fields (email is masked, doc has no order).
        assert sort["schema"]["enum"] == ["id", "-id", "region", "-region", "total", "-total"]


def test_a_product_whose_salt_serve_cannot_decrypt_fails_alone(api: ServeApi) -> None:
    good = api.product(VIEW)
    foreign = SecretBox(SecretStr(SecretBox.generate_key())).encrypt(SecretStr("other salt"))
    bad = api.product(
        VIEW,
        name=f"foreign_{api.unique}",
        roles={"reader": ProductRole(masks={"email": MaskRule(method="hash")})},
    )
    api.publish(bad.model_copy(update={"hash_salt_encrypted": foreign}))
    key = api.key(["reader"], [good.name, bad.name])
    with api.client() as client:
        response = wait_for(client, f"/v1/products/{bad.name}/rows", key, status=503)
        assert response.status_code == 503
        assert "FRESHET_SECRET_KEY" in response.json()["detail"]
        assert "other salt" not in response.text
        assert _get(client, f"/v1/products/{good.name}/rows/1", key).json() == ROWS[1]
        listed = {p["name"] for p in _get(client, "/v1/products", key).json()["products"]}
        assert good.name in listed and bad.name not in listed
        paths = _get(client, "/openapi.json", key).json()["paths"]
        assert f"/v1/products/{good.name}/rows" in paths
        assert f"/v1/products/{bad.name}/rows" not in paths


def test_reads_answer_503_while_redis_is_down_and_recover(
    kafka: Any, tmp_path: Any, caplog: Any, monkeypatch: Any
) -> None:
    """A Redis that stops answering is a 503 to retry (naming neither its host nor its port),
    not a 500; reads answer again once it is back."""
    monkeypatch.setattr(exceptions, "_store_logged", float("-inf"))
    port = servers.free_port()
    redis_server = servers.start_redis(port, tmp_path / "redis", tmp_path / "redis.log")
    api = ServeApi(kafka.bootstrap, f"redis://127.0.0.1:{port}/0")
    try:
        api.materialize(VIEW, [({"id": i}, row) for i, row in ROWS.items()])
        product = api.product(VIEW)
        key = api.key(["reader"], [product.name])
        paths = [f"/v1/products/{product.name}/rows/1", f"/v1/products/{product.name}/rows"]
        with api.client() as client:
            assert wait_for(client, paths[0], key).json() == ROWS[1]
            api.redis.close()
            redis_server.stop()
            for path in [*paths, paths[1] + "?region=EU"]:
                response = _get(client, path, key)
                assert response.status_code == 503, (path, response.text)
                assert "Redis" in response.json()["detail"]
                assert str(port) not in response.text
                assert response.headers["retry-after"] == "1"
            query = f"{{ {product.name}(limit: 1) {{ rows {{ id }} }} }}"
            response = client.post("/graphql", headers=_auth(key), json={"query": query})
            (error,) = response.json()["errors"]
            assert (error["extensions"]["status"], error["extensions"]["retryAfter"]) == (503, 1)
            assert "Redis" in error["message"] and str(port) not in response.text
            logged = [r.getMessage() for r in caplog.records if r.name == exceptions.__name__]
            assert len(logged) == 1 and "did not answer" in logged[0], logged  # once, not per read
            assert str(port) not in logged[0]
            redis_server = servers.start_redis(port, tmp_path / "redis", tmp_path / "redis.log")
            assert wait_for(client, paths[0], key).json() == ROWS[1]
            assert _get(client, paths[1], key, limit=5).json()["rows"] == [
                ROWS[i] for i in range(1, 6)
            ]
    finally:
        api.close()
        redis_server.stop()


def test_reads_answer_500_when_redis_refuses_serve(
    kafka: Any, tmp_path: Any, caplog: Any, monkeypatch: Any
) -> None:
    """Redis refusing serve's password is no reason to retry: 500, and an error in the log."""
    monkeypatch.setattr(exceptions, "_store_logged", float("-inf"))
    port = servers.free_port()
    redis_server = servers.start_redis(port, tmp_path / "redis", tmp_path / "redis.log")
    admin = ServeApi(kafka.bootstrap, f"redis://127.0.0.1:{port}/0")
    secret = "s" + uuid.uuid4().hex
    api = ServeApi(kafka.bootstrap, f"redis://serve:{secret}-not@127.0.0.1:{port}/0")
    try:
        admin.redis.acl_setuser(
            "serve", enabled=True, passwords=[f"+{secret}"], commands=["+@all"], keys=["*"]
        )
        api.root = admin.root
        admin.materialize(VIEW, [({"id": i}, row) for i, row in ROWS.items()])
        product = admin.product(VIEW)
        key = admin.key(["reader"], [product.name])
        with api.client() as client:
            path = f"/v1/products/{product.name}/rows/1"
            response = wait_for(client, path, key, status=500)
            assert response.status_code == 500, response.text
            assert "refused" in response.json()["detail"]
            assert secret not in response.text and str(port) not in response.text
            assert "retry-after" not in response.headers
            errors = [r for r in caplog.records if r.name == exceptions.__name__]
            assert errors and errors[0].levelname == "ERROR", errors
            assert secret not in errors[0].getMessage()
    finally:
        api.close()
        admin.close()
        redis_server.stop()
