"""Serve's ASGI application.

``/health`` and the Prometheus ``/metrics`` answer without credentials; every other route needs
an API key (:mod:`freshet.serve.access`): the data products over REST (``/v1/products``), their
OpenAPI document (``/openapi.json``), GraphQL and live changes.

The app follows the products, keys and statuses (:class:`~freshet.serve.catalog.Catalog`) for as
long as it runs (the lifespan); it starts doing so in a thread that retries until the broker
answers, and answers 503 until then. Given a :class:`~freshet.serve.service.ServeService`, it
also runs it in a thread: the materialization of views into Redis and PostgreSQL.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from redis.asyncio import Redis
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from freshet.common.observability import metrics_app
from freshet.serve.access import Grants
from freshet.serve.catalog import Catalog
from freshet.serve.config import ServeSettings
from freshet.serve.exceptions import REDIS_DOWN, ApiError, store_error
from freshet.serve.read.rows import ViewCatalog
from freshet.serve.routes import router
from freshet.serve.routes.products import PointReads, error_response, is_point_read
from freshet.serve.service import ServeService

log = logging.getLogger(__name__)

REDIS_TIMEOUT_S = 1.0
STOP_TIMEOUT_S = 60.0
CATALOG_RETRY_S = 2.0


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
        app.state.settings = settings
        catalog = Catalog(settings)
        app.state.catalog = catalog
        app.state.grants = Grants(catalog)
        app.state.views = ViewCatalog(app.state.redis, settings.serve_redis_prefix)
        stop = threading.Event()
        follower = threading.Thread(
            target=_start_catalog, args=(catalog, stop), name="serve-catalog", daemon=True
        )
        follower.start()
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
            follower.join(STOP_TIMEOUT_S)
            catalog.close()
            await app.state.redis.aclose()

    # FastAPI traces each request (a span per request when a tracer provider is set), but not
    # point reads: a span cost one a third of its CPU; nor dependencies and endpoints one by one.
    app = FastAPI(
        title="Freshet serve",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        telemetry={"operation_spans": False, "exclude": is_point_read},
    )
    app.include_router(router)
    app.add_middleware(PointReads)
    app.add_exception_handler(ApiError, _api_error)
    for redis_down in REDIS_DOWN:
        app.add_exception_handler(redis_down, _redis_down)
    metrics = metrics_app()
    app.router.routes.append(Route("/metrics", _AsgiEndpoint(metrics), methods=["GET"]))
    app.mount("/metrics", metrics)
    return app


def _start_catalog(catalog: Catalog, stop: threading.Event) -> None:
    """Start following the catalog's topics, retrying until the broker answers or ``stop``."""
    while not stop.is_set():
        try:
            catalog.start()
            return
        except Exception as exc:  # the broker is down or slow: retry, never give up
            log.warning("serve cannot read the products and keys yet (%s); retrying", exc)
            catalog.close()
            stop.wait(CATALOG_RETRY_S)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _redis_down(request: Request, exc: Exception) -> Response:
    return error_response(store_error(exc))
