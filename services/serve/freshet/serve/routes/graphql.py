"""``/graphql``: GraphQL over the products the calling key may read (:mod:`freshet.serve.graphql`).

GraphQL over HTTP: ``POST`` with a JSON body ``{"query", "variables", "operationName"}``, or
``GET`` with those as query parameters (``variables`` JSON-encoded). The key is checked first,
as on every route: without a valid one the answer is 401 and GraphQL does not run. A request
that is not a GraphQL request (no query, a body that is not JSON...) is 400; otherwise the
answer is 200 with ``data`` and/or ``errors``, as GraphQL clients expect of
``application/json``. A client that accepts ``application/graphql-response+json`` gets that
type, and 400 when the query did not parse or validate (no ``data``), as that media type says.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from strawberry.schema.exceptions import CannotGetOperationTypeError
from strawberry.types.execution import PreExecutionError

from freshet.serve.access import readable_grants
from freshet.serve.deps import CatalogDep, GrantsDep, KeyDep, RedisDep, SettingsDep, ViewsDep
from freshet.serve.graphql import ReadContext, SchemaCache

router = APIRouter()

JSON_TYPE = "application/json"
GRAPHQL_RESPONSE_TYPE = "application/graphql-response+json"
MAX_BODY = 1 << 20


class _NotGraphQL(Exception):
    """The HTTP request is not a GraphQL request (400)."""


def _schemas(request: Request) -> SchemaCache:
    """The app's schema cache, made on first use."""
    cache: SchemaCache | None = getattr(request.app.state, "graphql_schemas", None)
    if cache is None:
        cache = SchemaCache()
        request.app.state.graphql_schemas = cache
    return cache


def _string(value: Any, what: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise _NotGraphQL(f"{what} must be a string")


def _variables(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise _NotGraphQL("variables: not JSON") from None
    if value is None or isinstance(value, dict):
        return value
    raise _NotGraphQL("variables must be a JSON object")


async def _operation(request: Request) -> tuple[str, dict[str, Any] | None, str | None]:
    """(query, variables, operationName) of the request."""
    if request.method == "GET":
        params: dict[str, Any] = dict(request.query_params)
    else:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != JSON_TYPE:
            raise _NotGraphQL(f'send the query as {JSON_TYPE}: {{"query": ..., "variables": ...}}')
        body = await request.body()
        if len(body) > MAX_BODY:
            raise _NotGraphQL(f"the body is larger than {MAX_BODY} bytes")
        try:
            params = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise _NotGraphQL("the body is not JSON") from None
        if not isinstance(params, dict):
            raise _NotGraphQL('the body must be a JSON object: {"query": ..., "variables": ...}')
    query = _string(params.get("query"), "query")
    if not query:
        raise _NotGraphQL("no query: give one as query")
    return (
        query,
        _variables(params.get("variables")),
        _string(params.get("operationName"), "operationName"),
    )


def _response(body: dict[str, Any], status: int, media_type: str) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=media_type)


@router.api_route("/graphql", methods=["GET", "POST"])
async def graphql(
    request: Request,
    catalog: CatalogDep,
    grants: GrantsDep,
    views: ViewsDep,
    redis: RedisDep,
    settings: SettingsDep,
    key: KeyDep,
) -> Response:
    """Run a GraphQL query over the products this key may read."""
    accept = request.headers.get("accept", "")
    media_type = GRAPHQL_RESPONSE_TYPE if GRAPHQL_RESPONSE_TYPE in accept else JSON_TYPE
    try:
        query, variables, operation_name = await _operation(request)
    except _NotGraphQL as exc:
        return _response({"errors": [{"message": str(exc)}]}, 400, media_type)
    version = catalog.version  # before the products: see SchemaCache.get
    readable = readable_grants(catalog, grants, key)
    schema = _schemas(request).get(version, readable)
    context = ReadContext(
        grants={g.product.name: g for g in readable},
        catalog=catalog,
        views=views,
        redis=redis,
        redis_root=settings.serve_redis_prefix,
    )
    try:
        result = await schema.schema.execute(
            query,
            variable_values=variables,
            context_value=context,
            operation_name=operation_name,
        )
    except CannotGetOperationTypeError as exc:  # no such operation, or none at all
        return _response({"errors": [{"message": exc.as_http_error_reason()}]}, 400, media_type)
    executed = not isinstance(result, PreExecutionError)
    body: dict[str, Any] = {}
    if result.errors:
        body["errors"] = [error.formatted for error in result.errors]
    if executed:
        body["data"] = result.data
    status = 400 if media_type == GRAPHQL_RESPONSE_TYPE and not executed else 200
    return _response(body, status, media_type)
