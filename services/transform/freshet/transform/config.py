"""Transform's settings (environment variables ``FRESHET_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from freshet.common.settings import CommonSettings


class TransformSettings(CommonSettings):
    transform_host: str = "127.0.0.1"
    transform_port: int = 8703
    transform_group: str = "freshet-transform"
    transform_data_dir: Path = Field(
        default=Path(".freshet/transform"),
        description="Faust's data directory (created if missing); relative to the working "
        "directory.",
    )
    redis_url: str = "redis://127.0.0.1:6380/0"
