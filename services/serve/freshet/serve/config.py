"""Serve's settings (environment variables ``FRESHET_*``)."""

from __future__ import annotations

from pydantic import SecretStr

from freshet.common.settings import CommonSettings


class ServeSettings(CommonSettings):
    serve_host: str = "127.0.0.1"
    serve_port: int = 8701
    redis_url: str = "redis://127.0.0.1:6380/0"
    target_database_url: SecretStr = SecretStr("")
