"""Transform's settings (environment variables ``FRESHET_*``)."""

from __future__ import annotations

from freshet.common.settings import CommonSettings


class TransformSettings(CommonSettings):
    transform_host: str = "127.0.0.1"
    transform_port: int = 8703
    transform_group: str = "freshet-transform"
    redis_url: str = "redis://127.0.0.1:6380/0"
