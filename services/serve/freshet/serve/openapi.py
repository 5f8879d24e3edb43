"""The OpenAPI document of serve as one API key sees it: a path and a row schema per product.

Products are defined at run time, so the document is built per request from the products the
key may read: each gets its concrete paths (``/v1/products/<name>/rows``...), its filter and
sort parameters, and a row schema with each field's JSON type, the fields its role masks typed
as strings. OpenAPI 3.1 (JSON Schema), so a nullable field is ``anyOf [T, null]``.
"""

from __future__ import annotations

from typing import Any

from freshet.common.products import ProductSpec
from freshet.common.sql import types as t
from freshet.serve.access import Grant
from freshet.serve.read.rows import MAX_LIMIT, OPS, RESERVED
from freshet.serve.read.wait import MAX_TIMEOUT_MS

_FLOAT = {
    "anyOf": [{"type": "number"}, {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}]
}
_SCALARS: dict[str, dict[str, Any]] = {
    "bool": {"type": "boolean"},
    "int2": {"type": "integer"},
    "int4": {"type": "integer"},
    "int8": {"type": "integer"},
    "numeric": {"type": "string", "description": "a decimal number, NaN or [-]Infinity"},
    "float4": _FLOAT,
    "float8": _FLOAT,
    "text": {"type": "string"},
    "uuid": {"type": "string", "format": "uuid"},
    "date": {"type": "string", "description": "ISO 8601 date"},
    "time": {"type": "string", "description": "ISO 8601 time"},
    "timetz": {"type": "string", "description": "ISO 8601 time with offset"},
    "timestamp": {"type": "string", "description": "ISO 8601 date and time, no offset"},
    "timestamptz": {"type": "string", "description": "ISO 8601 date and time in UTC"},
    "interval": {"type": "string", "description": "ISO 8601 duration"},
    "bytea": {"type": "string", "contentEncoding": "base64"},
    "json": {},
    "jsonb": {},
}

_ERROR = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
_PRODUCT = {
    "type": "object",
    "description": "A product as this key sees it: its fields and types, what its role masks.",
    "properties": {
        "name": {"type": "string"},
        "view": {"type": "string"},
        "key": {"type": "array", "items": {"type": "string"}},
        "role": {"type": "string"},
        "fields": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "type": {"type": "string", "description": "PostgreSQL's name of the type"},
                    "masked": {"type": "boolean"},
                },
                "required": ["name", "type", "masked"],
            },
        },
    },
    "required": ["name", "view", "key", "role", "fields"],
}
_PRODUCT_REF = {"$ref": "#/components/schemas/Product"}


def field_schema(type_: str, masked: bool) -> dict[str, Any]:
    """The JSON schema of a field's values (any of them may be null)."""
    if masked:
        inner: dict[str, Any] = {"type": "string", "description": "masked"}
    elif t.is_array(type_):
        inner = {"type": "array", "items": {"anyOf": [_array_items(type_[:-2]), {"type": "null"}]}}
    else:
        inner = dict(_SCALARS.get(type_, {}))
    if not inner:
        return {}
    return {"anyOf": [inner, {"type": "null"}]}


def _array_items(element: str) -> dict[str, Any]:
    # Multi-dimensional arrays nest lists: an element is a scalar or a list of them.
    scalar = dict(_SCALARS.get(element, {}))
    return {"anyOf": [scalar, {"type": "array"}]} if scalar else {}


def _errors(*codes: int) -> dict[str, Any]:
    reasons = {
        400: "A parameter is not valid (the detail names it)",
        401: "No API key, or not a valid one",
        403: "This API key may not read the product",
        404: "No such row (or one this key may not see)",
        410: "The cursor is from a view definition that was replaced",
        503: "Not materialized yet, or its store (Redis) did not answer; retry",
        504: "The source position was not reflected within timeout_ms",
    }
    body = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {str(c): {"description": reasons[c], "content": body} for c in codes}


def _wait_params() -> list[dict[str, Any]]:
    return [
        {
            "name": "lsn",
            "in": "query",
            "description": "Read-your-writes: wait until the product reflects this source "
            "position (pg_current_wal_lsn() after your commit), X/Y in hexadecimal.",
            "schema": {"type": "string", "pattern": "^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$"},
        },
        {
            "name": "source",
            "in": "query",
            "description": "The source lsn is of (needed when the view reads several).",
            "schema": {"type": "string"},
        },
        {
            "name": "timeout_ms",
            "in": "query",
            "description": "How long to wait for lsn (default 5000).",
            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_TIMEOUT_MS},
        },
    ]


_INT_BITS = {"int2": 16, "int4": 32, "int8": 64}
_FLOAT4_MAX = 3.4028234663852886e38
_NUMERIC_TEXT = (
    r"^\s*([+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,4})?|NaN|[+-]?Infinity)\s*$"
)


def filter_value_schema(type_: str) -> dict[str, Any]:
    """The schema of a filter's value: one of the field's type, as a query parameter.

    Typed where JSON Schema can say it (integers in their range, numbers, booleans, dates,
    date-times, UUIDs, decimal text); any string otherwise. The server reads the text as
    PostgreSQL reads the type's input, so it also accepts other spellings (``yes`` for true,
    ``Infinity``, dates in other orders): the schema describes what a client should send.
    """
    bits = _INT_BITS.get(type_)
    if bits is not None:
        return {"type": "integer", "minimum": -(2 ** (bits - 1)), "maximum": 2 ** (bits - 1) - 1}
    if type_ == "float8":
        return {"type": "number"}
    if type_ == "float4":
        return {"type": "number", "minimum": -_FLOAT4_MAX, "maximum": _FLOAT4_MAX}
    if type_ == "bool":
        return {"type": "boolean"}
    if type_ == "numeric":
        return {"type": "string", "pattern": _NUMERIC_TEXT}
    formats = {"date": "date", "timestamptz": "date-time", "uuid": "uuid"}
    if type_ in formats:
        return {"type": "string", "format": formats[type_]}
    return {"type": "string"}


_EVENT_ID = {"type": "string", "pattern": r"^g[0-9]{1,18}-[0-9]{1,20}-[0-9]{1,20}$"}


def _changes_params() -> list[dict[str, Any]]:
    return [
        {
            "name": "Last-Event-ID",
            "in": "header",
            "description": "Resume after this event id (what EventSource sends on reconnect).",
            "schema": _EVENT_ID,
        },
        {
            "name": "last_event_id",
            "in": "query",
            "description": "Resume after this event id (the Last-Event-ID header wins).",
            "schema": _EVENT_ID,
        },
        {
            "name": "snapshot",
            "in": "query",
            "description": "Without an event id: send every row first, then follow.",
            "schema": {"type": "boolean", "default": False},
        },
        *_wait_params(),
    ]


def _filter_params(product: ProductSpec, grant: Grant) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for column in product.columns:
        name, type_ = column.name, column.type
        if name in grant.masked or not t.is_ordered(type_):
            continue
        sql = t.sql_name(type_)
        value = filter_value_schema(type_)
        if name not in RESERVED:
            params.append(
                {
                    "name": name,
                    "in": "query",
                    "description": f"Rows whose {name} equals this {sql} (PostgreSQL's text form).",
                    "schema": value,
                }
            )
        for op in OPS:
            params.append(
                {
                    "name": f"{name}.{op}",
                    "in": "query",
                    "description": (
                        f"Rows whose {name} is (true) or is not (false) NULL."
                        if op == "null"
                        else f"Rows whose {name} is {op} this {sql}."
                    ),
                    "schema": {"type": "boolean"} if op == "null" else value,
                }
            )
    return params


def _sortable(grant: Grant) -> list[str]:
    return [s for name in grant.sortable for s in (name, f"-{name}")]


def _schema_name(product: str) -> str:
    return f"{product}_row"


def product_paths(product: ProductSpec, grant: Grant) -> dict[str, Any]:
    name = product.name
    row_ref = {"$ref": f"#/components/schemas/{_schema_name(name)}"}
    sortable = _sortable(grant)
    sort_schema: dict[str, Any] = {"type": "string"}
    if sortable:
        sort_schema["enum"] = sortable
    list_params = [
        *_filter_params(product, grant),
        {
            "name": "sort",
            "in": "query",
            "description": "A field to sort on (ties in key order); -field for descending. "
            "The first key column and the fields the view indexes can be sorted on. Default: "
            "key order.",
            "schema": sort_schema,
        },
        {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100},
        },
        {
            "name": "cursor",
            "in": "query",
            "description": "next_cursor of the previous page (same filters and sort).",
            "schema": {"type": "string"},
        },
        *_wait_params(),
    ]
    types = {c.name: c.type for c in product.columns}
    key_schema: dict[str, Any] = {"type": "string"}
    if len(product.key) == 1 and product.key[0] in types:
        key_schema = filter_value_schema(types[product.key[0]])
    key_desc = (
        f"The value of {product.key[0]} as text."
        if len(product.key) == 1
        else f"A JSON array of the key's values ({', '.join(product.key)})."
    )
    return {
        f"/v1/products/{name}": {
            "get": {
                "operationId": f"describe_{name}",
                "summary": f"The fields of {name} as this key sees them",
                "tags": [name],
                "responses": {
                    "200": {
                        "description": "The product",
                        "content": {"application/json": {"schema": _PRODUCT_REF}},
                    },
                    **_errors(401, 403),
                },
            }
        },
        f"/v1/products/{name}/rows": {
            "get": {
                "operationId": f"list_{name}",
                "summary": f"Rows of {name}",
                "tags": [name],
                "parameters": list_params,
                "responses": {
                    "200": {
                        "description": "A page of rows",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "rows": {"type": "array", "items": row_ref},
                                        "next_cursor": {
                                            "anyOf": [{"type": "string"}, {"type": "null"}]
                                        },
                                    },
                                    "required": ["rows", "next_cursor"],
                                }
                            }
                        },
                    },
                    **_errors(400, 401, 403, 410, 503, 504),
                },
            }
        },
        f"/v1/products/{name}/rows/{{key}}": {
            "get": {
                "operationId": f"get_{name}",
                "summary": f"One row of {name} by key",
                "tags": [name],
                "parameters": [
                    {
                        "name": "key",
                        "in": "path",
                        "required": True,
                        "description": key_desc,
                        "schema": key_schema,
                    },
                    *_wait_params(),
                ],
                "responses": {
                    "200": {
                        "description": "The row",
                        "content": {"application/json": {"schema": row_ref}},
                    },
                    **_errors(400, 401, 403, 404, 503, 504),
                },
            }
        },
        f"/v1/products/{name}/changes": {
            "get": {
                "operationId": f"changes_{name}",
                "summary": f"Live changes of {name} (Server-Sent Events)",
                "description": "Each event is an upsert (data: the row) or a delete (data: the "
                "key); resume after a disconnect with the Last-Event-ID header.",
                "tags": [name],
                "parameters": _changes_params(),
                "responses": {
                    "200": {
                        "description": "An event stream",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **_errors(400, 401, 403, 410, 503, 504),
                },
            }
        },
    }


def row_schema(product: ProductSpec, grant: Grant) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            c.name: field_schema(c.type, c.name in grant.masked) for c in product.columns
        },
        "required": list(product.fields),
    }


def _graphql_path() -> dict[str, Any]:
    """``/graphql``: its schema is per key too (introspect it); GET takes the same fields."""
    graphql_body = {
        "type": "object",
        "properties": {
            "data": {"anyOf": [{"type": "object"}, {"type": "null"}]},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"message": {"type": "string"}},
                    "required": ["message"],
                },
            },
        },
    }
    content = {
        "application/json": {"schema": graphql_body},
        "application/graphql-response+json": {"schema": graphql_body},
    }
    return {
        "post": {
            "operationId": "graphql",
            "summary": "GraphQL over the products this API key may read",
            "description": "A type and a query per product (introspect the schema: it is this "
            "key's). Errors of a query are answered 200 with errors; a request that is not a "
            "GraphQL request is 400.",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "query": {"type": "string", "minLength": 1},
                                "variables": {"anyOf": [{"type": "object"}, {"type": "null"}]},
                                "operationName": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                            },
                            "required": ["query"],
                        }
                    }
                },
            },
            "responses": {
                "200": {"description": "The result (data and/or errors)", "content": content},
                "400": {"description": "Not a GraphQL request", "content": content},
                **_errors(401, 503),
            },
        }
    }


def document(grants: list[Grant], title: str = "Freshet serve") -> dict[str, Any]:
    """The OpenAPI 3.1 document for a key that reads the products of ``grants``."""
    paths: dict[str, Any] = {
        "/v1/products": {
            "get": {
                "operationId": "list_products",
                "summary": "The products this API key may read",
                "responses": {
                    "200": {
                        "description": "Products",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "products": {"type": "array", "items": _PRODUCT_REF}
                                    },
                                    "required": ["products"],
                                }
                            }
                        },
                    },
                    **_errors(401),
                },
            }
        }
    }
    paths["/graphql"] = _graphql_path()
    schemas: dict[str, Any] = {"Error": _ERROR, "Product": _PRODUCT}
    for grant in grants:
        paths.update(product_paths(grant.product, grant))
        schemas[_schema_name(grant.product.name)] = row_schema(grant.product, grant)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
        "security": [{"bearer": []}, {"apiKey": []}],
    }
