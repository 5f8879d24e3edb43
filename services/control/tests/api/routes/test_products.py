"""``/v1/products`` against the real broker, over views compiled by control."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import SecretStr

from freshet.common import codec, topics
from freshet.common.products import ProductRole, ProductSpec
from freshet.common.schemas import ColumnSchema, OutputColumn, TableSchema
from freshet.common.secrets import SecretBox

INT4, TEXT, NUMERIC = 23, 25, 1700


def _table(source: str, table: str, columns: dict[str, tuple[int, str]]) -> TableSchema:
    return TableSchema(
        source=source,
        schema_name="public",
        table=table,
        topic=topics.cdc_topic(source, "public", table),
        columns=tuple(
            ColumnSchema(name=n, type_oid=oid, typmod=-1, type=typ)
            for n, (oid, typ) in columns.items()
        ),
        primary_key=("id",),
    )


@pytest.fixture
def view(client, auth, source_body, publish, wait_for, unique) -> str:
    """A view ``<unique>_v`` (key ``id``, ``_key2``; id, customer_id, amount, note, email) over
    a captured source, created through the API."""
    assert client.post("/v1/sources", json=source_body(), headers=auth).status_code == 201
    orders = _table(
        unique,
        "orders",
        {
            "id": (INT4, "integer"),
            "customer_id": (INT4, "integer"),
            "amount": (NUMERIC, "numeric"),
            "note": (TEXT, "text"),
        },
    )
    customers = _table(unique, "customers", {"id": (INT4, "integer"), "email": (TEXT, "text")})
    for table in (orders, customers):
        publish(topics.SCHEMAS, table.qualified, table)
    state = client.app.state.control
    wait_for(
        lambda: {t.qualified for t in state.tables()} >= {orders.qualified, customers.qualified}
    )
    sql = (
        "SELECT o.id, o.customer_id, o.amount, o.note, c.email "
        f"FROM {unique}.public.orders o LEFT JOIN {unique}.public.customers c "
        "ON c.id = o.customer_id"
    )
    name = f"{unique}_v"
    body = {"name": name, "sql": sql, "indexes": ["amount", "note"]}
    created = client.post("/v1/views", json=body, headers=auth)
    assert created.status_code == 201, created.text
    # The primary key of customers is a key part the view does not output.
    assert created.json()["key"] == ["id", "_key2"]
    return name


VIEW_COLUMNS = [
    {"name": "id", "type": "int4"},
    {"name": "customer_id", "type": "int4"},
    {"name": "amount", "type": "numeric"},
    {"name": "note", "type": "text"},
    {"name": "email", "type": "text"},
]


@pytest.fixture
def product_body(view, unique) -> Callable[..., dict[str, Any]]:
    """A valid POST body for a product over ``view``, with overrides (``...`` removes a key)."""

    def body(**overrides: Any) -> dict[str, Any]:
        base: dict[str, Any] = {
            "name": unique,
            "view": view,
            "fields": ["customer_id", "amount", "email"],
            "roles": {
                "analyst": {"row_filter": "amount > 100", "masks": {"email": {"method": "hash"}}},
                "support": {"masks": {"email": {"method": "keep_last", "keep": 4}}},
            },
        }
        base.update(overrides)
        return {k: v for k, v in base.items() if v is not ...}

    return body


def _only_error(response) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert len(detail) == 1, detail
    return detail[0]


def _spec(raw: bytes | None) -> ProductSpec:
    assert raw is not None
    return ProductSpec.model_validate(codec.loads(raw))


def test_create_list_get_replace_delete(
    client, auth, product_body, view, unique, records_of, secret_key
):
    created = client.post("/v1/products", json=product_body(), headers=auth)
    assert created.status_code == 201, created.text
    assert created.headers["location"] == f"/v1/products/{unique}"
    expected = {
        "name": unique,
        "view": view,
        "fields": ["id", "customer_id", "amount", "email"],
        "key": ["id", "_key2"],
        "columns": [VIEW_COLUMNS[0], VIEW_COLUMNS[1], VIEW_COLUMNS[2], VIEW_COLUMNS[4]],
        "indexes": ["amount"],  # the view's indexes on the fields exposed
        "roles": {
            "analyst": {
                "row_filter": "amount > 100",
                "masks": {
                    "email": {"method": "hash", "keep": 4, "mask_char": "*", "replacement": "***"}
                },
            },
            "support": {
                "row_filter": None,
                "masks": {
                    "email": {
                        "method": "keep_last",
                        "keep": 4,
                        "mask_char": "*",
                        "replacement": "***",
                    }
                },
            },
        },
        "publish_topic": False,
        "topic_role": None,
        "generation": 1,
    }
    assert created.json() == expected
    assert client.get(f"/v1/products/{unique}", headers=auth).json() == expected
    listed = client.get("/v1/products", headers=auth).json()["products"]
    assert [p for p in listed if p["name"] == unique] == [expected]

    (raw,) = records_of(topics.CONTROL_PRODUCTS, unique)
    spec = _spec(raw)
    salt = SecretBox(SecretStr(secret_key)).decrypt(spec.hash_salt_encrypted).get_secret_value()
    assert len(salt) >= 43
    assert spec == ProductSpec(
        name=unique,
        view=view,
        fields=("id", "customer_id", "amount", "email"),
        key=("id", "_key2"),
        columns=tuple(OutputColumn(**VIEW_COLUMNS[i]) for i in (0, 1, 2, 4)),
        indexes=("amount",),
        roles={
            "analyst": ProductRole(row_filter="amount > 100", masks={"email": {"method": "hash"}}),
            "support": ProductRole(masks={"email": {"method": "keep_last", "keep": 4}}),
        },
        hash_salt_encrypted=spec.hash_salt_encrypted,
        generation=1,
    )
    assert raw is not None and salt.encode() not in raw
    for answer in (created, client.get(f"/v1/products/{unique}", headers=auth)):
        assert salt not in answer.text
        assert spec.hash_salt_encrypted not in answer.text

    body = product_body(
        fields=None,
        roles={"analyst": {"row_filter": "note IS NOT NULL AND customer_id <> 7"}},
        publish_topic=True,
        topic_role="analyst",
    )
    replaced = client.put(f"/v1/products/{unique}", json=body, headers=auth)
    assert replaced.status_code == 200, replaced.text
    got = replaced.json()
    assert (got["generation"], got["publish_topic"], got["topic_role"]) == (2, True, "analyst")
    assert (got["fields"], got["columns"]) == (
        ["id", "customer_id", "amount", "note", "email"],
        VIEW_COLUMNS,
    )
    assert got["roles"] == {
        "analyst": {"row_filter": "note IS NOT NULL AND customer_id <> 7", "masks": {}}
    }
    assert client.get(f"/v1/products/{unique}", headers=auth).json() == got
    second = _spec(records_of(topics.CONTROL_PRODUCTS, unique)[-1])
    assert (second.generation, second.publish_topic, second.topic_role) == (2, True, "analyst")
    # The salt is kept, so hashes stay the same if a hash mask comes back.
    assert second.hash_salt_encrypted == spec.hash_salt_encrypted

    deleted = client.delete(f"/v1/products/{unique}", headers=auth)
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert records_of(topics.CONTROL_PRODUCTS, unique)[-1] is None
    assert len(records_of(topics.CONTROL_PRODUCTS, unique)) == 3
    assert client.get(f"/v1/products/{unique}", headers=auth).status_code == 404
    listed = client.get("/v1/products", headers=auth).json()["products"]
    assert unique not in [p["name"] for p in listed]


def test_all_fields_by_default_and_no_salt_without_a_hash_mask(
    client, auth, product_body, unique, records_of
):
    body = product_body(fields=..., roles={"reader": {}})
    created = client.post("/v1/products", json=body, headers=auth)
    assert created.status_code == 201, created.text
    assert created.json()["columns"] == VIEW_COLUMNS
    assert created.json()["roles"] == {"reader": {"row_filter": None, "masks": {}}}
    assert _spec(records_of(topics.CONTROL_PRODUCTS, unique)[-1]).hash_salt_encrypted == ""

    # A hash mask added later gets a salt then.
    body["roles"] = {"reader": {"masks": {"note": {"method": "hash"}}}}
    assert client.put(f"/v1/products/{unique}", json=body, headers=auth).status_code == 200
    assert _spec(records_of(topics.CONTROL_PRODUCTS, unique)[-1]).hash_salt_encrypted != ""


def test_the_key_is_always_exposed_and_order_is_kept(client, auth, product_body):
    roles = {"reader": {"masks": {"email": {"method": "null"}}}}
    created = client.post(
        "/v1/products", json=product_body(fields=["email", "note"], roles=roles), headers=auth
    )
    assert created.status_code == 201, created.text
    assert created.json()["fields"] == ["id", "email", "note"]
    roles = {"reader": {"masks": {"note": {"method": "null"}}}}
    listed_key = product_body(name=product_body()["name"] + "k", fields=["note", "id"], roles=roles)
    again = client.post("/v1/products", json=listed_key, headers=auth)
    assert again.status_code == 201, again.text
    assert again.json()["fields"] == ["note", "id"]


def test_another_replica_sees_the_product_and_keeps_its_salt(
    client, make_client, auth, product_body, unique, records_of, wait_for
):
    assert client.post("/v1/products", json=product_body(), headers=auth).status_code == 201
    salt = _spec(records_of(topics.CONTROL_PRODUCTS, unique)[-1]).hash_salt_encrypted
    other = make_client()
    url = f"/v1/products/{unique}"
    wait_for(lambda: other.get(url, headers=auth).status_code == 200)
    assert other.get(url, headers=auth).json() == client.get(url, headers=auth).json()
    assert other.put(url, json=product_body(), headers=auth).json()["generation"] == 2
    assert _spec(records_of(topics.CONTROL_PRODUCTS, unique)[-1]).hash_salt_encrypted == salt


@pytest.mark.parametrize(
    ("row_filter", "at", "words"),
    [
        ("amount > 100 AND colour = 'red'", "colour", 'field "colour" does not exist'),
        ("amount > 100 OR note LIKE '%x%'", "note", "does not expose"),
        ("amount + 1", None, "must be of type boolean, not numeric"),
        ("customer_id = 'sekret-abc'", "= 'sekret", "invalid input syntax for type integer"),
        ("amount >", None, "syntax error"),
        ("amount > 1 AND now() > now()", "now()", "a row filter cannot use it"),
        ("'maybe'", None, "boolean"),
        ("amount > 1; DROP TABLE x", "DROP", "one expression"),
        ("(SELECT 1) = 1", None, None),
    ],
)
def test_a_bad_row_filter_is_422_naming_role_and_position(
    client, auth, product_body, unique, row_filter, at, words
):
    body = product_body(
        roles={
            "support": {"row_filter": "customer_id > 0"},
            "analyst": {"row_filter": row_filter},
        }
    )
    response = client.post("/v1/products", json=body, headers=auth)
    error = _only_error(response)
    assert error["loc"] == ["body", "roles", "analyst", "row_filter"]
    assert error["type"] == "sql"
    assert set(error) == {"loc", "msg", "type", "position", "line", "column"}
    assert error["position"] is not None
    if at is not None:
        assert error["position"] == row_filter.index(at)
        assert (error["line"], error["column"]) == (1, row_filter.index(at) + 1)
    if words is not None:
        assert words in error["msg"]
    # The message may quote a name or a literal of the filter (GET shows the filter anyway),
    # never the whole filter.
    assert row_filter not in response.text
    assert client.get(f"/v1/products/{unique}", headers=auth).status_code == 404


def test_a_row_filter_position_on_a_later_line(client, auth, product_body):
    row_filter = "amount > 100\n  AND colour = 1"
    error = _only_error(
        client.post(
            "/v1/products",
            json=product_body(roles={"analyst": {"row_filter": row_filter}}),
            headers=auth,
        )
    )
    assert (error["position"], error["line"], error["column"]) == (
        row_filter.index("colour"),
        2,
        len("  AND ") + 1,
    )


@pytest.mark.parametrize(
    ("overrides", "loc", "words"),
    [
        ({"view": "no_such_view"}, ["body", "view"], "view 'no_such_view' does not exist"),
        ({"fields": ["amount", "colour"]}, ["body", "fields"], "has no column 'colour'"),
        ({"fields": ["amount", "amount"]}, ["body", "fields"], "'amount' is listed twice"),
        ({"fields": []}, ["body", "fields"], "at least 1"),
        (
            {"roles": {"a": {"masks": {"note": {"method": "null"}}}}},
            ["body", "roles", "a", "masks", "note"],
            "'note' is not exposed",
        ),
        (
            {"roles": {"a": {"masks": {"colour": {"method": "null"}}}}},
            ["body", "roles", "a", "masks", "colour"],
            "'colour' is not exposed",
        ),
        (
            {"roles": {"a": {"masks": {"_key2": {"method": "null"}}}}},
            ["body", "roles", "a", "masks", "_key2"],
            "'_key2' is not exposed",
        ),
        ({"fields": ["_key2"]}, ["body", "fields"], "has no column '_key2'"),
        (
            {"roles": {"a": {"masks": {"id": {"method": "hash"}}}}},
            ["body", "roles", "a", "masks", "id"],
            "key columns cannot be masked",
        ),
        (
            {"roles": {"a": {"masks": {"email": {"method": "rot13"}}}}},
            ["body", "roles", "a", "masks", "email", "method"],
            "Input should be",
        ),
        ({"roles": {}}, ["body", "roles"], "at least 1"),
        ({"roles": {"Admin-Role": {}}}, ["body", "roles", "Admin-Role", "[key]"], "pattern"),
        ({"roles": {"a": {"row_filter": ""}}}, ["body", "roles", "a", "row_filter"], "at least"),
        ({"view": ...}, ["body", "view"], "Field required"),
        ({"name": "Bad-Name"}, ["body", "name"], "pattern"),
        ({"colour": "red"}, ["body", "colour"], "Extra inputs"),
    ],
)
def test_invalid_products_are_422_naming_the_field(
    client, auth, product_body, unique, overrides, loc, words
):
    response = client.post("/v1/products", json=product_body(**overrides), headers=auth)
    error = _only_error(response)
    assert (error["loc"], set(error)) == (loc, {"loc", "msg", "type"})
    assert words in error["msg"]
    assert client.get(f"/v1/products/{unique}", headers=auth).status_code == 404


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"publish_topic": True}, "publish_topic needs topic_role"),
        ({"publish_topic": True, "topic_role": None}, "publish_topic needs topic_role"),
        ({"publish_topic": True, "topic_role": "auditor"}, "'auditor' is not a role"),
        ({"publish_topic": False, "topic_role": "auditor"}, "'auditor' is not a role"),
        ({"publish_topic": True, "topic_role": "Bad-Role"}, "pattern"),
    ],
)
def test_a_published_product_names_one_of_its_roles_for_the_topic(
    client, auth, product_body, unique, overrides, words
):
    response = client.post("/v1/products", json=product_body(**overrides), headers=auth)
    error = _only_error(response)
    assert error["loc"] == ["body", "topic_role"]
    assert words in error["msg"]
    if "not a role" in words:
        assert "analyst, support" in error["msg"]
    assert client.get(f"/v1/products/{unique}", headers=auth).status_code == 404

    created = client.post(
        "/v1/products",
        json=product_body(publish_topic=True, topic_role="support"),
        headers=auth,
    )
    assert created.status_code == 201, created.text
    assert (created.json()["publish_topic"], created.json()["topic_role"]) == (True, "support")
    # A replacement is checked the same way and changes nothing when refused.
    url = f"/v1/products/{unique}"
    refused = client.put(url, json=product_body(**overrides), headers=auth)
    assert _only_error(refused)["loc"] == ["body", "topic_role"]
    assert client.get(url, headers=auth).json()["generation"] == 1


def test_duplicate_name_is_409(client, auth, product_body, unique):
    assert client.post("/v1/products", json=product_body(), headers=auth).status_code == 201
    again = client.post(
        "/v1/products", json=product_body(fields=["note", "amount", "email"]), headers=auth
    )
    assert again.status_code == 409
    assert unique in again.json()["detail"]
    assert "note" not in client.get(f"/v1/products/{unique}", headers=auth).json()["fields"]


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_unknown_name_is_404(client, auth, product_body, unique, method):
    # A PUT of an unknown product is a 404 even when its body would be refused.
    body = product_body(view="no_such_view") if method == "PUT" else None
    response = client.request(method, f"/v1/products/{unique}", json=body, headers=auth)
    assert response.status_code == 404, response.text
    assert unique in response.json()["detail"]


def test_put_rules(client, auth, product_body, unique, records_of):
    url = f"/v1/products/{unique}"
    assert client.post("/v1/products", json=product_body(), headers=auth).status_code == 201
    renamed = client.put(url, json=product_body(name="other"), headers=auth)
    assert _only_error(renamed)["loc"] == ["body", "name"]
    bad = client.put(url, json=product_body(fields=["colour"]), headers=auth)
    assert _only_error(bad)["loc"] == ["body", "fields"]
    assert client.get(url, headers=auth).json()["generation"] == 1
    assert len(records_of(topics.CONTROL_PRODUCTS, unique)) == 1
    same_name = client.put(url, json=product_body(), headers=auth)
    assert same_name.status_code == 200
    assert same_name.json()["generation"] == 2


def test_a_view_its_products_expose_cannot_be_deleted(client, auth, product_body, view, unique):
    """DELETE of a view under products is a 409 naming them; without them, it is deleted."""
    assert client.post("/v1/products", json=product_body(), headers=auth).status_code == 201
    refused = client.delete(f"/v1/views/{view}", headers=auth)
    assert refused.status_code == 409, refused.text
    assert repr(unique) in refused.json()["detail"]
    assert client.get(f"/v1/views/{view}", headers=auth).status_code == 200
    assert client.delete(f"/v1/products/{unique}", headers=auth).status_code == 204
    assert client.delete(f"/v1/views/{view}", headers=auth).status_code == 204
    assert client.get(f"/v1/views/{view}", headers=auth).status_code == 404


def test_a_product_of_a_deleted_view_cannot_be_made(client, auth, product_body, view):
    assert client.delete(f"/v1/views/{view}", headers=auth).status_code == 204
    error = _only_error(client.post("/v1/products", json=product_body(), headers=auth))
    assert error["loc"] == ["body", "view"]


def _view_sql(unique: str, columns: str, key_join: str = "LEFT JOIN") -> str:
    return (
        f"SELECT {columns} FROM {unique}.public.orders o {key_join} {unique}.public.customers c "
        "ON c.id = o.customer_id"
    )


def test_a_view_cannot_be_redefined_under_its_products(
    client, auth, product_body, view, unique, records_of, publish, wait_for
):
    """A new SQL that drops or retypes a field a product exposes, or changes the key it
    addresses rows by (names, or the type of a key part that is no field), is a 409 naming
    each product and field and what to do; nothing is written."""
    url = f"/v1/views/{view}"
    made = client.post("/v1/products", json=product_body(), headers=auth)
    assert made.status_code == 201, made.text
    notes = unique + "_notes"
    other = product_body(name=notes, fields=["note"], roles={"r": {}})
    assert client.post("/v1/products", json=other, headers=auth).status_code == 201
    # A table whose primary key is text: joined instead of customers, the key part _key2 is.
    regions = _table(unique, "regions", {"id": (TEXT, "text"), "name": (TEXT, "text")})
    publish(topics.SCHEMAS, regions.qualified, regions)
    state = client.app.state.control
    wait_for(lambda: regions.qualified in {t.qualified for t in state.tables()})
    views_before = len(records_of(topics.CONTROL_VIEWS, view))
    field_remedy = "change those products first (PUT /v1/products/<product>)"
    key_remedy = "delete those products, redefine the view, then create them again"
    refused = [
        # email dropped (the first product exposes it)
        (
            _view_sql(unique, "o.id, o.customer_id, o.amount, o.note"),
            [f"product {unique!r} exposes field 'email', which the new SQL does not output"],
            [field_remedy],
        ),
        # amount retyped to text (first product), note to int (second product)
        (
            _view_sql(
                unique,
                "o.id, o.customer_id, o.amount::text AS amount, length(o.note) AS note, c.email",
            ),
            [
                f"product {unique!r} exposes field 'amount' as numeric; the new SQL makes it text",
                f"product {notes!r} exposes field 'note' as text; the new SQL makes it int4",
            ],
            [field_remedy],
        ),
        # no join: the key loses _key2
        (
            f"SELECT o.id, o.customer_id, o.amount, o.note, NULL::text AS email "
            f"FROM {unique}.public.orders o",
            ["the view's key (id int4, _key2 int4); the new SQL's key is (id int4)"],
            [key_remedy],
        ),
        # same key names, but _key2 is now a text
        (
            f"SELECT o.id, o.customer_id, o.amount, o.note, r.name AS email "
            f"FROM {unique}.public.orders o LEFT JOIN {unique}.public.regions r ON r.id = o.note",
            ["the new SQL's key is (id int4, _key2 text)"],
            [key_remedy],
        ),
    ]
    for sql, problems, remedies in refused:
        response = client.put(url, json={"sql": sql, "indexes": []}, headers=auth)
        assert response.status_code == 409, response.text
        detail = response.json()["detail"]
        assert detail.startswith(f"view {view!r} cannot be redefined this way: "), detail
        for text in [*problems, *remedies]:
            assert text in detail, detail
    assert len(records_of(topics.CONTROL_VIEWS, view)) == views_before
    assert client.get(url, headers=auth).json()["generation"] == 1
    for product in (unique, notes):
        assert client.get(f"/v1/products/{product}", headers=auth).json()["generation"] == 1
        assert len(records_of(topics.CONTROL_PRODUCTS, product)) == 1


def test_products_follow_the_indexes_of_their_view(
    client, auth, product_body, view, unique, records_of
):
    """A view redefined without breaking its products (here: a field added, other indexes)
    is written; each product whose sortable fields change gets them in a new generation, the
    others are not rewritten."""
    url = f"/v1/views/{view}"
    assert client.post("/v1/products", json=product_body(), headers=auth).status_code == 201
    notes = product_body(name=unique + "_notes", fields=["note"], roles={"r": {}})
    assert client.post("/v1/products", json=notes, headers=auth).status_code == 201
    sql = _view_sql(unique, "o.id, o.customer_id, o.amount, o.note, c.email, o.amount * 2 AS x")
    response = client.put(url, json={"sql": sql, "indexes": ["note", "email"]}, headers=auth)
    assert response.status_code == 200, response.text
    assert response.json()["generation"] == 2
    product = client.get(f"/v1/products/{unique}", headers=auth).json()
    # It exposes email but not note: it now sorts on email, no longer on amount.
    assert (product["indexes"], product["generation"]) == (["email"], 2)
    assert product["fields"] == ["id", "customer_id", "amount", "email"]  # x is not added
    assert len(records_of(topics.CONTROL_PRODUCTS, unique)) == 2
    assert _spec(records_of(topics.CONTROL_PRODUCTS, unique)[-1]).indexes == ("email",)
    # note was indexed before and still is: the other product is as it was.
    kept = client.get(f"/v1/products/{unique}_notes", headers=auth).json()
    assert (kept["indexes"], kept["generation"]) == (["note"], 1)
    assert len(records_of(topics.CONTROL_PRODUCTS, unique + "_notes")) == 1


NO_TOKEN = [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "Basic dGVzdDp0ZXN0"}]


@pytest.mark.parametrize("headers", NO_TOKEN, ids=["none", "wrong", "basic"])
def test_every_product_endpoint_needs_the_admin_token(client, auth, product_body, unique, headers):
    made = product_body(name=unique + "_made")
    assert client.post("/v1/products", json=made, headers=auth).status_code == 201
    for method, path, body in [
        ("POST", "/v1/products", product_body()),
        ("GET", "/v1/products", None),
        ("GET", f"/v1/products/{unique}_made", None),
        ("PUT", f"/v1/products/{unique}_made", product_body(fields=["note", "amount", "email"])),
        ("DELETE", f"/v1/products/{unique}_made", None),
    ]:
        response = client.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"] == "Bearer"
        assert "amount" not in response.text
    assert client.get(f"/v1/products/{unique}", headers=auth).status_code == 404
    unchanged = client.get(f"/v1/products/{unique}_made", headers=auth).json()
    assert unchanged["generation"] == 1
    paths = client.get("/openapi.json", headers=auth).json()["paths"]
    assert set(paths["/v1/products"]) == {"get", "post"}
    assert set(paths["/v1/products/{name}"]) == {"get", "put", "delete"}
