"""Control's settings (environment variables ``FRESHET_*``)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from freshet.common.settings import CommonSettings


class ControlSettings(CommonSettings):
    control_host: str = "127.0.0.1"
    control_port: int = 8700
    admin_token: SecretStr = Field(
        default=SecretStr(""), description="Bearer token of the control API (required)."
    )
