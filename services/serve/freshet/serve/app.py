"""Serve's ASGI application.

For now it has only the two endpoints that answer without credentials: ``/health`` and the
Prometheus ``/metrics``. Data products (REST, GraphQL, live streams) come later and all require
credentials.

Given a :class:`~freshet.serve.service.ServeService`, the app runs it in a thread for as long as
it runs itself (the lifespan): the materialization of views into Redis and PostgreSQL.
"""

from __future__ import annotations

import logging
import threading
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
from freshet.serve.service import ServeService

log = logging.getLogger(__name__)

REDIS_TIMEOUT_S = 1.0
STOP_TIMEOUT_S = 60.0


class _AsgiEndpoint:
    """Wraps an ASGI callable so that a Starlette ``Route`` passes requests to it unchanged."""

    def __init__(self, app: Any) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


def create_app(settings: ServeSettings, service: ServeService | None = None) -> FastAPI:
    """Build serve's app from ``settings``, running ``service`` (if any) while it runs.

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
        app.state.service = service
        stop = threading.Event()
        thread = None
        if service is not None:
            thread = threading.Thread(target=service.run, args=(stop,), name="serve", daemon=True)
            thread.start()
        try:
            yield
        finally:
            stop.set()
            if thread is not None:
                thread.join(STOP_TIMEOUT_S)
                if thread.is_alive():
                    log.warning("the materializer did not stop within %.0fs", STOP_TIMEOUT_S)
            await app.state.redis.aclose()

    app = FastAPI(
        title="Freshet serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.include_router(router)
    metrics = metrics_app()
    app.router.routes.append(Route("/metrics", _AsgiEndpoint(metrics), methods=["GET"]))
    app.mount("/metrics", metrics)
    return app
