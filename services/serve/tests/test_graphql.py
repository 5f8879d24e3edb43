"""Serve's GraphQL endpoint against the real broker (products, keys) and Redis (rows).

GraphQL reads through the same code as REST, so most tests ask both and compare: the same rows
for the same filters, sort and pagination (every page walked with cursors), for keys whose roles
filter rows and mask fields.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from freshet.common.pipelines.spec import MaskRule
from freshet.common.products import ProductRole, ProductSpec
from freshet.common.schemas import OutputColumn
from freshet.serve.access import Grant
from freshet.serve.graphql import SchemaCache, type_prefix

from .api_util import ServeApi, wait_for
from .stores_util import spec

VIEW = spec(
    "orders_gql",
    {
        "id": "int8",
        "region": "text",
        "total": "numeric",
        "email": "text",
        "qty": "int4",
        "price": "float8",
        "paid": "bool",
        "day": "date",
        "tags": "text[]",
        "doc": "jsonb",
    },
    {"id": ("int8", False)},
    indexes=("region", "total", "qty", "price"),  # day and paid: filtered by examining rows
)
REGIONS = ["EU", "US", "APAC", None]
FIELDS = "id region total email qty price paid day tags doc"


def _row(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "region": REGIONS[i % 4],
        "total": str(Decimal(i * 7 % 50) + Decimal("0.25")),
        "email": f"user{i}@example.com",
        "qty": i % 9,
        "price": i * 1.5,
        "paid": i % 3 == 0,
        "day": f"2024-01-{i % 28 + 1:02d}",
        "tags": ["a", f"t{i % 5}"],
        "doc": {"i": i, "nested": [i, None]},
    }


ROWS = {i: _row(i) for i in range(1, 181)}


@pytest.fixture
def api(kafka: Any, redis_server: str):
    api = ServeApi(kafka.bootstrap, redis_server)
    api.materialize(VIEW, [({"id": i}, row) for i, row in ROWS.items()])
    yield api
    api.close()


def _auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _gql(client, key: str | None, query: str, **variables: Any):
    return client.post(
        "/graphql", headers=_auth(key), json={"query": query, "variables": variables}
    )


def _data(client, key: str, query: str, **variables: Any) -> dict[str, Any]:
    response = _gql(client, key, query, **variables)
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


def _error(client, key: str, query: str, **variables: Any) -> dict[str, Any]:
    """The one error of a query that fails."""
    response = _gql(client, key, query, **variables)
    assert response.status_code == 200, response.text
    errors = response.json()["errors"]
    assert len(errors) == 1, errors
    error: dict[str, Any] = errors[0]
    return error


def _graphql_pages(
    client, key: str, product: str, fields: str = FIELDS, **args: Any
) -> list[dict[str, Any]]:
    query = (
        f"query($filter: {type_prefix(product)}Filter, $sort: {type_prefix(product)}Sort, "
        "$limit: Int, $cursor: String) {"
        f" {product}(filter: $filter, sort: $sort, limit: $limit, cursor: $cursor)"
        f" {{ rows {{ {fields} }} nextCursor }} }}"
    )
    rows: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        page = _data(client, key, query, cursor=cursor, **args)[product]
        rows += page["rows"]
        cursor = page["nextCursor"]
        if cursor is None:
            return rows
    raise AssertionError("pagination never ended")


def _rest_pages(client, key: str, product: str, **params: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        query = dict(params, **({"cursor": cursor} if cursor else {}))
        response = client.get(f"/v1/products/{product}/rows", headers=_auth(key), params=query)
        assert response.status_code == 200, response.text
        rows += response.json()["rows"]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return rows
    raise AssertionError("pagination never ended")


def test_a_key_is_required_before_graphql_runs(api: ServeApi) -> None:
    product = api.product(VIEW)
    key = api.key(["reader"], [product.name])
    expired = api.key(["reader"], [product.name], expires_at_ms=1)
    query = f"{{ {product.name}(limit: 1) {{ rows {{ id }} }} }}"
    with api.client() as client:
        wait_for(client, f"/v1/products/{product.name}/rows", key)
        assert _data(client, key, query)[product.name]["rows"] == [{"id": 1}]
        for bad in (None, expired, "garbage", key + "x"):
            response = _gql(client, bad, query)
            assert response.status_code == 401, bad
            assert response.headers["www-authenticate"] == "Bearer"
            assert "data" not in response.json()
            response = client.get("/graphql", headers=_auth(bad), params={"query": query})
            assert response.status_code == 401, bad
        # Introspection needs a key too.
        assert _gql(client, None, "{ __schema { types { name } } }").status_code == 401


def test_pages_equal_rest_for_the_same_filters_and_sort(api: ServeApi) -> None:
    product = api.product(VIEW)
    key = api.key(["reader"], ["*"])
    name = product.name
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({}, {}),
        ({"filter": {"region": {"eq": "EU"}}}, {"region.eq": "EU"}),
        ({"filter": {"region": {"ne": "EU"}}}, {"region.ne": "EU"}),
        ({"filter": {"region": {"isNull": True}}}, {"region.null": "true"}),
        ({"filter": {"region": {"isNull": False}}}, {"region.null": "false"}),
        (
            {"filter": {"total": {"gte": "40", "lt": "45.25"}}},
            {"total.gte": "40", "total.lt": "45.25"},
        ),
        (
            {"filter": {"total": {"gt": "10"}, "region": {"eq": "US"}}, "sort": "total_DESC"},
            {"total.gt": "10", "region.eq": "US", "sort": "-total"},
        ),
        ({"filter": {"id": {"lte": "100", "gt": "3"}}}, {"id.lte": "100", "id.gt": "3"}),
        ({"filter": {"day": {"eq": "2024-01-05"}}}, {"day.eq": "2024-01-05"}),
        ({"filter": {"paid": {"eq": "true"}}, "sort": "qty_ASC"}, {"paid": "true", "sort": "qty"}),
        (
            {"filter": {"price": {"gt": "99.5"}}, "sort": "price_DESC"},
            {"price.gt": "99.5", "sort": "-price"},
        ),
        ({"sort": "region_ASC"}, {"sort": "region"}),
        ({"sort": "id_DESC"}, {"sort": "-id"}),
    ]
    with api.client() as client:
        wait_for(client, f"/v1/products/{name}/rows", key)
        for args, params in cases:
            want = _rest_pages(client, key, name, limit=13, **params)
            got = _graphql_pages(client, key, name, limit=13, **args)
            assert got == want, args
            assert len(want) == len({r["id"] for r in want}), args
        # The rows are the view's rows, in the JSON of view topics, as REST gives them.
        everything = _graphql_pages(client, key, name, limit=1000)
        assert everything == [ROWS[i] for i in sorted(ROWS)]
        assert any(r["region"] == "EU" for r in everything)
        # One page, then the rest from its cursor, as REST does.
        first = _data(client, key, f"{{ {name}(limit: 5) {{ rows {{ id }} nextCursor }} }}")
        assert [r["id"] for r in first[name]["rows"]] == [1, 2, 3, 4, 5]
        rest = _rest_pages(client, key, name, limit=5)
        assert [r["id"] for r in rest[:5]] == [1, 2, 3, 4, 5]


def test_roles_filter_rows_and_mask_fields(api: ServeApi) -> None:
    roles = {
        "eu": ProductRole(
            row_filter="region = 'EU' AND total > 10",
            masks={
                "email": MaskRule(method="keep_last", keep=11),
                "qty": MaskRule(method="redact"),
            },
        ),
        "admin": ProductRole(),
    }
    product = api.product(VIEW, roles=roles)
    narrow = api.product(VIEW, name=f"narrow_{api.unique}", fields=["id", "total"])
    eu = api.key(["eu"], [product.name])
    admin = api.key(["admin", "reader"], ["*"])
    name = product.name
    prefix = type_prefix(name)
    with api.client() as client:
        wait_for(client, f"/v1/products/{name}/rows", eu)
        wait_for(client, f"/v1/products/{narrow.name}/rows", admin)
        got = _graphql_pages(client, eu, name, limit=7)
        assert got == _rest_pages(client, eu, name, limit=7)
        want = [r for r in ROWS.values() if r["region"] == "EU" and Decimal(r["total"]) > 10]
        assert [r["id"] for r in got] == [r["id"] for r in want]
        for row in got:
            email = ROWS[row["id"]]["email"]
            assert row["email"] == "*" * (len(email) - 11) + email[-11:]
            assert isinstance(row["qty"], str) and row["qty"] != str(ROWS[row["id"]]["qty"])
        # A row the role may not see is null by key, as REST's 404.
        hidden = next(i for i, r in ROWS.items() if r["region"] != "EU")
        by_key = f'{{ {name}ByKey(key: "{hidden}") {{ id email }} }}'
        assert _data(client, eu, by_key) == {f"{name}ByKey": None}
        shown = _data(client, eu, f'{{ {name}ByKey(key: "{want[0]["id"]}") {{ id email }} }}')
        assert shown[f"{name}ByKey"]["email"].endswith("example.com")
        assert shown[f"{name}ByKey"]["email"] != want[0]["email"]
        # Masked fields are Strings, and cannot be filtered or sorted on: they are not in the
        # filter input or the sort enum of this key's schema.
        types = _data(
            client,
            eu,
            "query($row: String!, $filter: String!, $sort: String!) {"
            " row: __type(name: $row) { fields { name type { name } } }"
            " filter: __type(name: $filter) { inputFields { name } }"
            " sort: __type(name: $sort) { enumValues { name } } }",
            row=f"{prefix}Row",
            filter=f"{prefix}Filter",
            sort=f"{prefix}Sort",
        )
        row_types = {f["name"]: f["type"]["name"] for f in types["row"]["fields"]}
        assert row_types["qty"] == "String" and row_types["email"] == "String"
        assert row_types["id"] == "BigInt" and row_types["price"] == "Float"
        assert {f["name"] for f in types["filter"]["inputFields"]} == {
            "id",
            "region",
            "total",
            "price",
            "paid",
            "day",
        }
        assert "email_ASC" not in {v["name"] for v in types["sort"]["enumValues"]}
        error = _error(
            client, eu, f'{{ {name}(filter: {{email: {{eq: "x"}}}}) {{ rows {{ id }} }} }}'
        )
        assert "email" in error["message"]
        # The admin's schema types qty as Int: the schema follows the key's role.
        admin_types = _data(
            client,
            admin,
            f'{{ __type(name: "{prefix}Row") {{ fields {{ name type {{ name }} }} }} }}',
        )
        assert {f["name"]: f["type"]["name"] for f in admin_types["__type"]["fields"]}[
            "qty"
        ] == "Int"
        assert _graphql_pages(client, admin, name, limit=100) == [ROWS[i] for i in sorted(ROWS)]
        # A narrower product has only its fields.
        narrow_rows = _graphql_pages(client, admin, narrow.name, fields="id total", limit=50)
        assert narrow_rows == [{"id": i, "total": ROWS[i]["total"]} for i in sorted(ROWS)]
        error = _error(client, admin, f"{{ {narrow.name} {{ rows {{ email }} }} }}")
        assert "email" in error["message"]


def test_a_product_the_key_may_not_read_is_not_in_its_schema(api: ServeApi) -> None:
    product = api.product(VIEW)
    hidden = api.product(VIEW, name=f"hidden_{api.unique}")
    key = api.key(["reader"], [product.name])
    other = api.key(["reader"], [hidden.name])
    nothing = api.key(["reader"], ["no_such_product"])
    with api.client() as client:
        wait_for(client, f"/v1/products/{product.name}/rows", key)
        wait_for(client, f"/v1/products/{hidden.name}/rows", other)
        assert _data(client, other, "{ _products }")["_products"] == [hidden.name]
        assert _data(client, key, "{ _products }")["_products"] == [product.name]
        for query in (
            f"{{ {hidden.name} {{ rows {{ id }} }} }}",
            f'{{ {hidden.name}ByKey(key: "1") {{ id }} }}',
        ):
            response = _gql(client, key, query)
            assert response.status_code == 200
            body = response.json()
            assert "data" not in body  # a validation error: nothing ran
            assert hidden.name in body["errors"][0]["message"]
            assert "Cannot query field" in body["errors"][0]["message"]
        names = {
            t["name"]
            for t in _data(client, key, "{ __schema { types { name } } }")["__schema"]["types"]
        }
        assert f"{type_prefix(product.name)}Row" in names
        assert not any(n.startswith(type_prefix(hidden.name)) for n in names)
        fields = _data(client, key, "{ __schema { queryType { fields { name } } } }")
        query_fields = {f["name"] for f in fields["__schema"]["queryType"]["fields"]}
        assert query_fields == {product.name, f"{product.name}ByKey", "_products"}
        # A key that may read nothing still gets a schema, with nothing in it.
        wait_for(client, "/v1/products", nothing)
        assert _data(client, nothing, "{ _products }") == {"_products": []}


def test_injection_attempts_in_filters_are_plain_values(api: ServeApi) -> None:
    product = api.product(VIEW)
    key = api.key(["reader"], ["*"])
    name = product.name
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
        '"} ) { __schema { types { name } } }',
    ]
    with api.client() as client:
        wait_for(client, f"/v1/products/{name}/rows", key)
        query = (
            f"query($f: {type_prefix(name)}Filter) {{ {name}(filter: $f, limit: 1000)"
            " { rows { id } } }"
        )
        for attempt in attempts:
            got = _data(client, key, query, f={"region": {"eq": attempt}})
            assert got[name]["rows"] == [], attempt
            got = _data(client, key, query, f={"region": {"gte": attempt}})
            want = [r for r in ROWS.values() if r["region"] is not None and r["region"] >= attempt]
            assert len(got[name]["rows"]) == len(want), attempt
            # Not a bigint: refused as REST refuses it, whatever the text holds.
            error = _error(
                client, key, f"query($k: String!) {{ {name}ByKey(key: $k) {{ id }} }}", k=attempt
            )
            assert error["extensions"]["status"] == 400, attempt
        # Nothing was flushed or dropped.
        assert len(_graphql_pages(client, key, name, fields="id", limit=1000)) == len(ROWS)


def test_rows_by_key_for_one_and_composite_keys(api: ServeApi) -> None:
    view = spec(
        "by_day_gql",
        {"region": "text", "day": "date", "n": "int8", "ratio": "float8"},
        {"region": ("text", True), "day": ("date", False)},
    )
    rows = [
        ({"region": r, "day": d}, {"region": r, "day": d, "n": i, "ratio": ratio})
        for i, (r, d, ratio) in enumerate(
            [("EU", "2024-01-02", 0.5), ("EU", "2024-01-03", "NaN"), (None, "2024-01-02", 2.0)]
        )
    ]
    api.materialize(view, rows)
    days = api.product(view, name=f"days_{api.unique}")
    single = api.product(VIEW, name=f"single_{api.unique}")
    key = api.key(["reader"], ["*"])
    d, s = days.name, single.name
    by_key = f"query($k: String!) {{ {d}ByKey(key: $k) {{ region day n }} }}"
    with api.client() as client:
        wait_for(client, f"/v1/products/{d}/rows", key)
        wait_for(client, f"/v1/products/{s}/rows", key)
        assert _data(client, key, by_key, k='["EU","2024-01-03"]')[f"{d}ByKey"] == {
            "region": "EU",
            "day": "2024-01-03",
            "n": 1,
        }
        assert _data(client, key, by_key, k='[null,"2024-01-02"]')[f"{d}ByKey"]["n"] == 2
        assert _data(client, key, by_key, k='["EU","2024-01-09"]') == {f"{d}ByKey": None}
        for bad in ("EU", '["EU","not a date"]'):
            error = _error(client, key, by_key, k=bad)
            assert error["extensions"] == {"code": "BAD_REQUEST", "status": 400}, bad
            assert error["path"] == [f"{d}ByKey"]
        # Filters on the first key column, as REST.
        got = _graphql_pages(client, key, d, fields="region day n", filter={"region": {"eq": "EU"}})
        assert [r["n"] for r in got] == [0, 1]
        # NaN is not a GraphQL Float: that one value is a field error, the rest of the row is there.
        response = _gql(client, key, f"{{ {d}(limit: 10) {{ rows {{ n ratio }} }} }}")
        body = response.json()
        assert body["data"][d]["rows"] == [
            {"n": 0, "ratio": 0.5},
            {"n": 1, "ratio": None},
            {"n": 2, "ratio": 2.0},
        ]
        assert [e["path"] for e in body["errors"]] == [[d, "rows", 1, "ratio"]]
        # One-column key: its value as text.
        one = f"query($k: String!) {{ {s}ByKey(key: $k) {{ {FIELDS} }} }}"
        assert _data(client, key, one, k="7")[f"{s}ByKey"] == ROWS[7]
        assert _data(client, key, one, k="7000") == {f"{s}ByKey": None}
        assert "id" in _error(client, key, one, k="x")["message"]
        # Both in one request, with aliases.
        both = _data(
            client,
            key,
            f'{{ a: {s}ByKey(key: "3") {{ id }} b: {s}ByKey(key: "4") {{ id }}'
            f' c: {d}ByKey(key: "[\\"EU\\",\\"2024-01-02\\"]") {{ n }} }}',
        )
        assert both == {"a": {"id": 3}, "b": {"id": 4}, "c": {"n": 0}}


def test_bad_arguments_are_errors_naming_them(api: ServeApi) -> None:
    product = api.product(VIEW)
    key = api.key(["reader"], ["*"])
    name = product.name
    prefix = type_prefix(name)
    page = f"query($f: {prefix}Filter, $limit: Int, $cursor: String, $lsn: String) {{ {name}(filter: $f, limit: $limit, cursor: $cursor, lsn: $lsn) {{ rows {{ id }} }} }}"
    with api.client() as client:
        wait_for(client, f"/v1/products/{name}/rows", key)
        cases: list[tuple[dict[str, Any], str]] = [
            ({"f": {"total": {"gt": "abc"}}}, "total"),
            ({"f": {"id": {"eq": "1.5"}}}, "id"),
            ({"f": {"day": {"lt": "yesterday"}}}, "day"),
            ({"f": {"paid": {"eq": "perhaps"}}}, "paid"),
            ({"limit": 0}, "limit"),
            ({"limit": 5000}, "limit"),
            ({"cursor": "notacursor"}, "cursor"),
            ({"lsn": "zz"}, "lsn"),
        ]
        for variables, named in cases:
            error = _error(client, key, page, **variables)
            assert named in error["message"], (variables, error)
            assert error["extensions"]["status"] == 400, (variables, error)
            assert error["path"] == [name]
            rest = client.get(
                f"/v1/products/{name}/rows",
                headers=_auth(key),
                params={
                    **{
                        f"{f}.{op}": v
                        for f, ops in variables.get("f", {}).items()
                        for op, v in ops.items()
                    },
                    **{k: v for k, v in variables.items() if k != "f"},
                },
            )
            assert rest.status_code == 400
            assert rest.json()["detail"] == error["message"]
        # A cursor of another query is refused, with REST's message.
        first = _data(client, key, f"{{ {name}(limit: 5) {{ nextCursor }} }}")[name]["nextCursor"]
        error = _error(
            client,
            key,
            f"query($c: String) {{ {name}(limit: 5, sort: total_ASC, cursor: $c) {{ rows {{ id }} }} }}",
            c=first,
        )
        assert "another query" in error["message"]
        # Fields, ops and sort values that do not exist fail validation, naming them.
        for query, named in (
            (f'{{ {name}(filter: {{nosuch: {{eq: "1"}}}}) {{ rows {{ id }} }} }}', "nosuch"),
            (f'{{ {name}(filter: {{region: {{between: "1"}}}}) {{ rows {{ id }} }} }}', "between"),
            (f"{{ {name}(sort: doc_ASC) {{ rows {{ id }} }} }}", "doc_ASC"),
            (f"{{ {name}(sort: day_ASC) {{ rows {{ id }} }} }}", "day_ASC"),  # no index
        ):
            body = _gql(client, key, query).json()
            assert "data" not in body, query
            assert named in body["errors"][0]["message"], (query, body)


def test_graphql_over_http(api: ServeApi) -> None:
    product = api.product(VIEW)
    key = api.key(["reader"], ["*"])
    name = product.name
    query = f"query One($k: String!) {{ {name}ByKey(key: $k) {{ id }} }}"
    with api.client() as client:
        wait_for(client, f"/v1/products/{name}/rows", key)
        # GET with the query and JSON-encoded variables in the query string.
        response = client.get(
            "/graphql",
            headers=_auth(key),
            params={"query": query, "variables": '{"k": "9"}', "operationName": "One"},
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert response.json() == {"data": {f"{name}ByKey": {"id": 9}}}
        # Requests that are not GraphQL requests: 400, with an error saying why.
        for body, content_type in (
            (b"not json", "application/json"),
            (b'{"variables": {}}', "application/json"),
            (b'{"query": 5}', "application/json"),
            (b'{"query": "{ _products }", "variables": [1]}', "application/json"),
            (b"[]", "application/json"),
            (b"{ _products }", "text/plain"),
            (b'{"query": "{ _products }", "operationName": "Nope"}', "application/json"),
            (b'{"query": "fragment F on Query { _products }"}', "application/json"),
        ):
            response = client.post(
                "/graphql", headers={**_auth(key), "Content-Type": content_type}, content=body
            )
            assert response.status_code == 400, body
            assert response.json()["errors"][0]["message"], body
        assert client.put("/graphql", headers=_auth(key)).status_code == 405
        # A query that does not parse: 200 and errors with application/json, 400 with
        # application/graphql-response+json.
        broken = {"query": "{ " + name}
        response = client.post("/graphql", headers=_auth(key), json=broken)
        assert (
            response.status_code == 200
            and "Syntax Error" in response.json()["errors"][0]["message"]
        )
        response = client.post(
            "/graphql",
            headers={**_auth(key), "Accept": "application/graphql-response+json"},
            json=broken,
        )
        assert response.status_code == 400
        assert response.headers["content-type"].startswith("application/graphql-response+json")
        # Mutations do not exist; deep and alias-heavy queries are refused before they run.
        for operation in ("mutation { x }", "subscription { x }"):
            body = _gql(client, key, operation).json()
            assert "data" not in body and "not supported" in body["errors"][0]["message"]
        deep = (
            "{ __typename " + "".join(f"a{i}: {name} {{ rows {{ id }} }} " for i in range(30)) + "}"
        )
        body = _gql(client, key, deep).json()
        assert "data" not in body and "aliases" in body["errors"][0]["message"]
        nested = f"{{ {name} {{ rows {{ ...R }} }} }} fragment R on {type_prefix(name)}Row {{ id }}"
        assert "errors" not in _gql(client, key, nested).json()
        huge = "{ " + " ".join(["_products"] * 6000) + " }"
        body = _gql(client, key, huge).json()
        assert "data" not in body and "token" in body["errors"][0]["message"].lower()
        # The OpenAPI document describes the endpoint.
        described = client.get("/openapi.json", headers=_auth(key)).json()["paths"]["/graphql"]
        body_schema = described["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body_schema["required"] == ["query"]
        assert {"200", "400", "401"} <= set(described["post"]["responses"])
        # Read-your-writes: an lsn nothing reported within timeoutMs is REST's 504, as an error.
        error = _error(client, key, f'{{ {name}(lsn: "0/10", timeoutMs: 0) {{ rows {{ id }} }} }}')
        assert error["extensions"] == {"code": "GATEWAY_TIMEOUT", "status": 504}
        assert "orders_gql" in error["message"]


def _grant(
    name: str, role: str, masked: frozenset[str] = frozenset(), generation: int = 1
) -> Grant:
    columns = (OutputColumn(name="id", type="int8"), OutputColumn(name="v", type="text"))
    product = ProductSpec(
        name=name,
        view="v",
        fields=("id", "v"),
        key=("id",),
        columns=columns,
        roles={role: ProductRole()},
        generation=generation,
    )
    types = {c.name: c.type for c in columns}
    return Grant(product, role, product.fields, types, masked, None, (), ())


def test_schemas_are_built_once_per_distinct_access() -> None:
    cache = SchemaCache(size=3)
    a = cache.get(1, [_grant("a", "r"), _grant("b", "r")])
    assert cache.get(1, [_grant("b", "r"), _grant("a", "r")]) is a
    assert a.products == ("a", "b")
    other_role = cache.get(1, [_grant("a", "s", frozenset({"v"})), _grant("b", "r")])
    assert other_role is not a
    assert cache.get(1, [_grant("a", "r", generation=2), _grant("b", "r")]) is not a
    assert cache.get(2, [_grant("a", "r"), _grant("b", "r")]) is not a  # products changed
    # Field names that are not GraphQL names are left out; the rest of the product is there.
    odd = _grant("c", "r")
    odd = Grant(
        odd.product.model_copy(
            update={
                "fields": ("id", "v", "two words", "__x"),
                "columns": (
                    *odd.product.columns,
                    OutputColumn(name="two words", type="text"),
                    OutputColumn(name="__x", type="text"),
                ),
            }
        ),
        "r",
        ("id", "v", "two words", "__x"),
        {"id": "int8", "v": "text", "two words": "text", "__x": "text"},
        frozenset(),
        None,
        (),
        (),
    )
    sdl = cache.get(1, [odd]).schema.as_str()
    assert "type CRow {" in sdl and "two" not in sdl and "__x" not in sdl
