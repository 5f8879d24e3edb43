"""Serve's settings (environment variables ``FRESHET_*``)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from freshet.common.settings import CommonSettings


class ServeSettings(CommonSettings):
    serve_host: str = "127.0.0.1"
    serve_port: int = 8701
    serve_group: str = Field(
        default="freshet-serve",
        description="Consumer group of serve's replicas on the views' desired state: each replica "
        "materializes the views whose names fall in its partitions.",
    )
    redis_url: str = "redis://127.0.0.1:6380/0"
    serve_redis_prefix: str = Field(
        default="freshet:serve", description="Prefix of every Redis key serve writes."
    )
    serve_redis_batch: int = Field(
        default=500,
        ge=1,
        description="Records per Redis script at most, so that no script blocks readers long.",
    )
    serve_changes_retained: int = Field(
        default=100_000,
        ge=1,
        description="Changes kept per view generation in its Redis change stream (at least this "
        "many; Redis trims whole stream nodes): how far back GET /v1/products/{name}/changes can "
        "resume from a Last-Event-ID. Each holds the row before and after the change.",
    )
    target_database_url: SecretStr = Field(
        default=SecretStr(""),
        description="SQLAlchemy URL of the PostgreSQL database views are materialized into "
        "(postgresql+psycopg://...); empty: no PostgreSQL tables.",
    )
    serve_target_schema: str = Field(
        default="freshet",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="Schema of the view tables (and of serve's _views and _offsets).",
    )
    serve_target_pool: int = Field(default=5, ge=1, description="Connections per replica.")
    serve_target_interval_ms: int = Field(
        default=100,
        ge=0,
        le=60_000,
        description="The least time between two batches a view applies to the PostgreSQL "
        "target while it keeps up (caught up, and less than serve_batch_max records behind; "
        "otherwise it reads and applies as fast as it can). "
        "Each batch is a transaction with its commit, and each fetch of the view topic costs "
        "the embedded broker a listing of the batches the topic holds: fewer, larger batches "
        "leave that CPU to the read path. 0: apply changes as they arrive.",
    )
    serve_batch_max: int = Field(
        default=5000, ge=1, description="Records consumed per batch (per view) at most."
    )
    serve_retry_initial_s: float = 1.0
    serve_retry_max_s: float = 30.0
