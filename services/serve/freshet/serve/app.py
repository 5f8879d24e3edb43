"""Serve's ASGI application.

For now it has only the two endpoints that answer without credentials: ``/health`` and the
Prometheus ``/metrics``. Data products (REST, GraphQL, live streams) come later and all require
credentials.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from redis.asyncio import Redis
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from freshet.common.observability import metrics_app
from freshet.serve.config import ServeSettings
from freshet.serve.routes import router

REDIS_TIMEOUT_S = 1.0


class _AsgiEndpoint:
    """Wraps an ASGI callable so that a Starlette ``Route`` passes requests to it unchanged."""

    def __init__(self, app: Any) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


def create_app(settings: ServeSettings) -> FastAPI:
    """Build serve's app from ``settings``.

    The Redis client is created when the app starts (lifespan) and closed when it stops; it
    connects lazily, so the app starts even when Redis is down and ``/health`` then says 503.
    ``/metrics`` answers both with and without a trailing slash, with no redirect.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.redis = Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=REDIS_TIMEOUT_S,
            socket_timeout=REDIS_TIMEOUT_S,
        )
        try:
            yield
        finally:
            await app.state.redis.aclose()

    app = FastAPI(
        title="Freshet serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.include_router(router)
    metrics = metrics_app()
    app.router.routes.append(Route("/metrics", _AsgiEndpoint(metrics), methods=["GET"]))
    app.mount("/metrics", metrics)
    return app
