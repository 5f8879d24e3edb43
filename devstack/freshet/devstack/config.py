"""The developer stack's settings (environment variables ``FRESHET_*``).

Built once by the CLI (``python -m freshet.devstack``) and passed down. Ports are fixed by default
so that the commands printed at start-up work as written; each one can be moved with its
variable when it is taken on the machine.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

EMBEDDED_TOPIC_PARTITIONS = 1
"""Partitions of every topic on the embedded broker.

Tansu 0.6's memory storage answers each fetch that finds data by listing every batch stored in
each partition fetched, so a stream costs the broker in proportion to the partitions it is spread
over: at 2,000 changes/s the serve benchmark's stack kept up with one partition per topic and
fell seconds behind with three (BENCHMARKS.md). One process per service consumes every partition
anyway, so more partitions buy no parallelism here; on Apache Kafka, set
``FRESHET_TOPIC_PARTITIONS`` on the services instead (their default is 3).
"""


class DevstackSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FRESHET_", frozen=True, extra="ignore")

    state_dir: Path = Field(
        default=Path(".freshet"),
        description="Where the stack keeps its data, keys and logs; relative to the working "
        "directory (the repository root under make).",
    )
    kafka_port: int = 9092
    pg_port: int = 5433
    redis_port: int = Field(default=6380, description="Not 6379: Debian's system redis uses it.")
    control_port: int = 8700
    serve_port: int = 8701
    ingest_port: int = 8702
    transform_port: int = 8703
    admin_token: SecretStr = Field(
        default=SecretStr(""),
        description="Bearer token of the control API; generated into <state>/admin-token if empty.",
    )
    secret_key: SecretStr = Field(
        default=SecretStr(""),
        description="Fernet key shared by the services; generated into <state>/secret-key "
        "if empty.",
    )
    topic_partitions: int = Field(
        default=EMBEDDED_TOPIC_PARTITIONS,
        ge=1,
        description="Partitions of the topics the services create on the embedded broker.",
    )
    workload_rate: float = Field(
        default=5.0,
        ge=0.0,
        description="Demo transactions per second; 0 turns the workload off. The embedded "
        "broker's CPU grows with every batch it keeps, the faster the higher the rate (README "
        "has the figures).",
    )
    health_timeout_s: float = Field(default=60.0, gt=0, description="Wait for each /health.")
    restart_backoff_s: float = Field(default=1.0, gt=0, description="First restart delay.")
    restart_backoff_max_s: float = Field(default=30.0, gt=0, description="Longest restart delay.")

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"
