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
    redis_url: str = Field(
        default="redis://127.0.0.1:6380/0",
        description="The durable store of views' state and consumed offsets.",
    )
    transform_retry_initial_s: float = 1.0
    transform_retry_max_s: float = 60.0
    transform_stall_after_s: float = Field(
        default=30.0,
        description="A view whose inputs have changes but that applied none for this long is "
        "reported stalled.",
    )
