"""FastAPI dependencies of serve, as ``Annotated`` aliases.

Every dependency is ``async def``: none of them blocks, and FastAPI runs a plain ``def``
dependency in a worker thread, a thread round trip per dependency and request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis

from freshet.common.products import ApiKeySpec
from freshet.serve.access import Grants, authenticate
from freshet.serve.catalog import Catalog
from freshet.serve.config import ServeSettings
from freshet.serve.exceptions import Unavailable
from freshet.serve.read.rows import ViewCatalog
from freshet.serve.service import ServeService


async def get_redis(request: Request) -> Redis:
    """The process's Redis client, created by the app's lifespan."""
    client: Redis = request.app.state.redis
    return client


async def get_service(request: Request) -> ServeService | None:
    """The materializer the app runs (None in an app built without one)."""
    service: ServeService | None = request.app.state.service
    return service


async def get_settings(request: Request) -> ServeSettings:
    settings: ServeSettings = request.app.state.settings
    return settings


async def get_catalog(request: Request) -> Catalog:
    """Products, keys and statuses; 503 until they have been read once."""
    catalog: Catalog = request.app.state.catalog
    if not catalog.ready:
        raise Unavailable("serve has not read the products and API keys yet: retry in a moment")
    return catalog


CatalogDep = Annotated[Catalog, Depends(get_catalog)]


async def get_grants(request: Request) -> Grants:
    grants: Grants = request.app.state.grants
    return grants


async def get_views(request: Request) -> ViewCatalog:
    views: ViewCatalog = request.app.state.views
    return views


async def current_key(request: Request, catalog: CatalogDep) -> ApiKeySpec:
    """The API key of the request (``Authorization: Bearer`` or ``X-API-Key``); 401 without."""
    header = request.headers.get("authorization")
    presented = None
    if header is not None:
        scheme, _, value = header.partition(" ")
        presented = value.strip() if scheme.lower() == "bearer" else None
    if presented is None:
        presented = request.headers.get("x-api-key")
    return authenticate(catalog, presented)


RedisDep = Annotated[Redis, Depends(get_redis)]
ServiceDep = Annotated[ServeService | None, Depends(get_service)]
SettingsDep = Annotated[ServeSettings, Depends(get_settings)]
GrantsDep = Annotated[Grants, Depends(get_grants)]
ViewsDep = Annotated[ViewCatalog, Depends(get_views)]
KeyDep = Annotated[ApiKeySpec, Depends(current_key)]
