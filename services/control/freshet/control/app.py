"""The control service's FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI

from freshet.common.exceptions import ConfigError
from freshet.common.observability import metrics_app
from freshet.common.secrets import SecretBox
from freshet.control.api.errors import install_error_handlers
from freshet.control.api.router import api_router
from freshet.control.config import ControlSettings
from freshet.control.deps import Admin
from freshet.control.security import BearerAuthMiddleware
from freshet.control.state import ControlState

OPEN_PATHS = frozenset({"/health"})
"""The only paths that answer without the admin token."""


def check_settings(settings: ControlSettings) -> None:
    """Refuse settings control must not run with.

    Raises:
        ConfigError: the admin token or the secret key is empty, or the key is not a Fernet key.
    """
    if not settings.admin_token.get_secret_value().strip():
        raise ConfigError(
            "FRESHET_ADMIN_TOKEN is not set: control answers no request without it. Set it to a "
            "long random value, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    SecretBox(settings.secret_key)


def create_app(settings: ControlSettings) -> FastAPI:
    """Build the control API.

    The desired state is read from Kafka in the application's lifespan (topics are created if
    missing), so nothing touches Kafka until the app starts; the lifespan fails if Kafka cannot
    be reached. Every path but ``/health`` needs ``Authorization: Bearer <admin token>``,
    ``/metrics`` (Prometheus) and the OpenAPI document included; ``/docs`` is not served.

    Raises:
        ConfigError: see :func:`check_settings`.
    """
    check_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = ControlState(settings)
        app.state.control = state
        try:
            await anyio.to_thread.run_sync(state.start)
            yield
        finally:
            await anyio.to_thread.run_sync(state.close)

    app = FastAPI(
        title="Freshet control",
        summary="Desired state of Freshet's sources and views, written to compacted Kafka topics.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.secret_box = SecretBox(settings.secret_key)
    install_error_handlers(app)
    app.include_router(api_router)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(_: Admin) -> dict[str, Any]:
        return app.openapi()

    app.mount("/metrics", metrics_app())
    app.add_middleware(BearerAuthMiddleware, token=settings.admin_token, open_paths=OPEN_PATHS)
    return app
