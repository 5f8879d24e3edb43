"""Bearer-token authentication of the control API.

Two gates use the one check here: :class:`BearerAuthMiddleware` refuses every request except to
the open paths (``/health``) before any routing or body parsing happens, so mounted apps
(``/metrics``), unknown paths and malformed bodies never answer without credentials; and the
``Admin`` dependency (:mod:`freshet.control.deps`) guards each API route, which also declares the
scheme in the OpenAPI document.
"""

from __future__ import annotations

import hmac

from pydantic import SecretStr
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

UNAUTHORIZED_DETAIL = "missing or invalid bearer token: send 'Authorization: Bearer <admin token>'"
CHALLENGE = {"WWW-Authenticate": "Bearer"}


def token_matches(expected: SecretStr, token: str | None) -> bool:
    """Whether ``token`` equals the expected secret (constant time); an empty one never matches."""
    secret = expected.get_secret_value()
    if not secret or not token:
        return False
    return hmac.compare_digest(token.encode(), secret.encode())


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or ``None``."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


class BearerAuthMiddleware:
    """ASGI middleware answering 401 (``WWW-Authenticate: Bearer``) without the right token.

    Requests to ``open_paths`` (exact matches) and non-HTTP scopes (lifespan) pass through.
    """

    def __init__(self, app: ASGIApp, token: SecretStr, open_paths: frozenset[str]) -> None:
        self._app = app
        self._token = token
        self._open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in self._open_paths:
            await self._app(scope, receive, send)
            return
        token = bearer_token(Headers(scope=scope).get("authorization"))
        if token_matches(self._token, token):
            await self._app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await WebSocketClose(code=1008, reason="unauthorized")(scope, receive, send)
            return
        response = JSONResponse({"detail": UNAUTHORIZED_DETAIL}, status_code=401, headers=CHALLENGE)
        await response(scope, receive, send)
