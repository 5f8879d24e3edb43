"""Settings shared by every service.

Each service defines one frozen ``pydantic-settings`` class deriving from :class:`CommonSettings`,
builds it once at its entry point and passes it down. Library code never reads ``os.environ``.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    """What every service needs: where Kafka is, who it is, how it reports.

    Environment variables use the ``FRESHET_`` prefix, e.g. ``FRESHET_KAFKA_BOOTSTRAP``.
    """

    model_config = SettingsConfigDict(env_prefix="FRESHET_", frozen=True, extra="ignore")

    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092", description="Kafka bootstrap servers, comma separated."
    )
    instance_id: str = Field(
        default="", description="Identifies this replica in status and spans; host:pid if empty."
    )
    secret_key: SecretStr = Field(
        default=SecretStr(""),
        description="Fernet key that encrypts secrets (source passwords) on the desired-state "
        "topics. Every service of one deployment must share it.",
    )
    topic_partitions: int = Field(default=3, ge=1, description="Partitions of new topics.")
    topic_replication: int = Field(default=1, ge=1, description="Replication of new topics.")
    trace_sample_ratio: float = Field(
        default=0.05, ge=0.0, le=1.0, description="Share of traces recorded and exported."
    )
    log_level: str = "INFO"
