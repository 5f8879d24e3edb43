"""FastAPI dependencies of the control API, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from freshet.common.secrets import SecretBox
from freshet.control.config import ControlSettings
from freshet.control.security import CHALLENGE, UNAUTHORIZED_DETAIL, token_matches
from freshet.control.state import ControlState

_bearer = HTTPBearer(auto_error=False, description="The admin token (FRESHET_ADMIN_TOKEN).")


def get_settings(request: Request) -> ControlSettings:
    return cast(ControlSettings, request.app.state.settings)


def get_state(request: Request) -> ControlState:
    return cast(ControlState, request.app.state.control)


def get_secret_box(request: Request) -> SecretBox:
    return cast(SecretBox, request.app.state.secret_box)


SettingsDep = Annotated[ControlSettings, Depends(get_settings)]
StateDep = Annotated[ControlState, Depends(get_state)]
SecretBoxDep = Annotated[SecretBox, Depends(get_secret_box)]


def require_admin(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Let the request through only with ``Authorization: Bearer <admin token>``.

    Raises:
        HTTPException: 401 with ``WWW-Authenticate: Bearer`` when the token is missing or wrong.
    """
    token = None if credentials is None else credentials.credentials
    if not token_matches(settings.admin_token, token):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, UNAUTHORIZED_DETAIL, headers=CHALLENGE)


Admin = Annotated[None, Depends(require_admin)]
"""Declare on a route (or a router's ``dependencies``) that only the admin may call it."""
