"""``/v1/products``: the data products an API key may read, their rows and one row by key.

Every route needs an API key (:mod:`freshet.serve.access`). Rows are served from Redis
(:mod:`freshet.serve.read.rows`); a request carrying ``lsn`` (and ``source``, ``timeout_ms``)
first waits until the product reflects that source position (:mod:`freshet.serve.read.wait`).
Values are in the JSON form of view topics: ``numeric`` as a decimal string, dates and times in
ISO 8601, ``bytea`` in base64; a masked value is a string (or null).
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from freshet.common.products import ProductSpec
from freshet.common.sql import types as t
from freshet.serve.access import Grant, readable_grants
from freshet.serve.deps import (
    CatalogDep,
    GrantsDep,
    KeyDep,
    RedisDep,
    SettingsDep,
    ViewsDep,
    current_key,
    get_catalog,
    get_grants,
    get_redis,
    get_settings,
    get_views,
)
from freshet.serve.exceptions import (
    REDIS_DOWN,
    ApiError,
    BadRequest,
    StoreUnavailable,
    store_error,
)
from freshet.serve.read.rows import parse_query, read_page, shown_row
from freshet.serve.read.wait import parse_lsn, parse_timeout, wait_applied

router = APIRouter(prefix="/v1/products")

WAIT_PARAMS = ("lsn", "source", "timeout_ms")


def json_response(body: Any, status_code: int = 200) -> Response:
    """``body`` as JSON (orjson: the row values are already JSON types)."""
    return Response(orjson.dumps(body), status_code=status_code, media_type="application/json")


async def wait_if_asked(
    request: Request, catalog: CatalogDep, redis: RedisDep, settings: SettingsDep, view: str
) -> None:
    """Read-your-writes: with ``lsn`` in the query, wait until ``view`` reflects it.

    ``timeout_ms`` is checked even without ``lsn``: a bad value is a 400, never ignored.
    """
    params = request.query_params
    timeout = parse_timeout(params.get("timeout_ms"))
    lsn = params.get("lsn")
    if lsn is None:
        return
    await wait_applied(
        catalog,
        redis,
        settings.serve_redis_prefix,
        view,
        parse_lsn(lsn),
        params.get("source"),
        timeout,
    )


def describe(product: ProductSpec, grant: Grant) -> dict[str, Any]:
    """A product as a key sees it: fields and types, key, what its role masks and may sort on."""
    return {
        "name": product.name,
        "view": product.view,
        "key": list(product.key),
        "role": grant.role,
        "sortable": list(grant.sortable),
        "fields": [
            {
                "name": c.name,
                "type": t.sql_name(c.type),
                "masked": c.name in grant.masked,
            }
            for c in product.columns
        ],
    }


@router.get("")
async def list_products(catalog: CatalogDep, grants: GrantsDep, key: KeyDep) -> Response:
    """The products this key may read."""
    readable = readable_grants(catalog, grants, key)
    return json_response({"products": [describe(g.product, g) for g in readable]})


@router.get("/{name}")
async def get_product(name: str, grants: GrantsDep, key: KeyDep) -> Response:
    """One product: its fields and types, its key, what this key's role masks."""
    grant = grants.for_key(key, name)
    return json_response(describe(grant.product, grant))


@router.get("/{name}/rows")
async def list_rows(
    name: str,
    request: Request,
    catalog: CatalogDep,
    grants: GrantsDep,
    views: ViewsDep,
    redis: RedisDep,
    settings: SettingsDep,
    key: KeyDep,
) -> Response:
    """A page of rows: filters ``<field>[.<op>]=<value>``, ``sort``, ``limit``, ``cursor``."""
    grant = grants.for_key(key, name)
    query = parse_query(request.query_params.multi_items(), grant)
    await wait_if_asked(request, catalog, redis, settings, grant.product.view)
    view = await views.ready(grant.product.view)
    page = await read_page(redis, view, grant, query)
    return json_response({"rows": page.rows, "next_cursor": page.next_cursor})


@router.get("/{name}/rows/{key_text:path}")
async def get_row(name: str, key_text: str, request: Request) -> Response:
    """One row by its key: the key's value, or a JSON array of the values of a composite key."""
    return await read_by_key(request, name, key_text)


async def read_by_key(request: Request, name: str, key_text: str) -> Response:
    """The answer to ``GET /v1/products/{name}/rows/{key_text}``.

    The point read is the hot path: it calls the dependencies itself rather than declaring them
    (each declared dependency costs FastAPI a solve per request), and reads the row in one Redis
    round trip (:meth:`ViewCatalog.row`). :class:`PointReads` calls it before any routing.

    Raises:
        ApiError: 503 before the catalog was read, 401, 403, 400, 404, 504 (read-your-writes).
    """
    catalog = await get_catalog(request)
    grant = (await get_grants(request)).for_key(await current_key(request, catalog), name)
    for param, _value in request.query_params.multi_items():
        if param not in WAIT_PARAMS:
            raise BadRequest(
                f"unknown parameter {param!r}: a row by key takes only {', '.join(WAIT_PARAMS)}"
            )
    if request.query_params:
        await wait_if_asked(
            request,
            catalog,
            await get_redis(request),
            await get_settings(request),
            grant.product.view,
        )
    _view, raw = await (await get_views(request)).row(grant.product.view, key_text)
    return json_response(shown_row(grant, raw, key_text))


POINT_READ = re.compile(r"/v1/products/([^/]+)/rows/(.+)")


def point_read(scope: MutableMapping[str, Any]) -> re.Match[str] | None:
    """(product, key) of a point read without query parameters; None for any other request."""
    if scope["type"] != "http" or scope["method"] != "GET" or scope["query_string"]:
        return None
    return POINT_READ.fullmatch(scope["path"])


def is_point_read(scope: MutableMapping[str, Any]) -> bool:
    return point_read(scope) is not None


def error_response(exc: ApiError) -> Response:
    """The answer to a request that failed with ``exc``: its status, message and headers."""
    headers: dict[str, str] = {}
    if exc.status_code == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, StoreUnavailable):
        headers["Retry-After"] = str(exc.retry_after_s)
    return Response(
        orjson.dumps({"detail": str(exc)}),
        status_code=exc.status_code,
        headers=headers,
        media_type="application/json",
    )


class PointReads:
    """ASGI middleware: point reads without query parameters are answered before routing.

    That is ``GET /v1/products/{name}/rows/{key}``: FastAPI's router, its inner middleware and
    its endpoint machinery cost a point read about half of its time. Every other request, and a
    point read that fails (any :class:`~freshet.serve.exceptions.ApiError`), goes on to the app,
    which answers it as :func:`get_row` does: reads have no side effects, so a failed one is
    simply read again.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = point_read(scope)
        if match is not None:
            try:
                response = await read_by_key(Request(scope, receive), match[1], match[2])
            except ApiError:
                pass
            except REDIS_DOWN as exc:
                await error_response(store_error(exc))(scope, receive, send)
                return
            else:
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
