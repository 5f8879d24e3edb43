"""The one table of Freshet's services as the developer stack runs them.

Adding a service means adding a row here: its name (the process runs ``python -m
freshet.<name>``), the :class:`~freshet.devstack.config.DevstackSettings` field holding its port
(also the name of the variable it reads: ``control_port`` → ``FRESHET_CONTROL_PORT``), and the
environment it needs beyond what every service gets (:func:`common_env`). Services start in the
order of the table and stop in the reverse order.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from freshet.devstack.config import DevstackSettings


@dataclass(frozen=True)
class StackContext:
    """What the stack hands to its services. Holds secrets: never print or log it."""

    kafka_bootstrap: str
    secret_key: str
    admin_token: str
    redis_url: str
    target_database_url: str
    state_dir: Path
    topic_partitions: int


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    port_field: str
    extra_env: Callable[[StackContext], dict[str, str]]

    @property
    def module(self) -> str:
        return f"freshet.{self.name}"

    def argv(self) -> list[str]:
        return [sys.executable, "-m", self.module]

    @property
    def port_env(self) -> str:
        return f"FRESHET_{self.port_field.upper()}"

    def port(self, settings: DevstackSettings) -> int:
        return int(getattr(settings, self.port_field))

    def health_url(self, settings: DevstackSettings) -> str:
        return f"http://127.0.0.1:{self.port(settings)}/health"

    def env(self, settings: DevstackSettings, ctx: StackContext) -> dict[str, str]:
        """The ``FRESHET_*`` variables of this service (added to the inherited environment)."""
        return {
            **common_env(ctx),
            self.port_env: str(self.port(settings)),
            **self.extra_env(ctx),
        }


def common_env(ctx: StackContext) -> dict[str, str]:
    """What every service gets: the broker, its partitions per topic, the secrets' key."""
    return {
        "FRESHET_KAFKA_BOOTSTRAP": ctx.kafka_bootstrap,
        "FRESHET_TOPIC_PARTITIONS": str(ctx.topic_partitions),
        "FRESHET_SECRET_KEY": ctx.secret_key,
        "PYTHONUNBUFFERED": "1",
    }


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec(
        "control",
        "control_port",
        lambda ctx: {"FRESHET_ADMIN_TOKEN": ctx.admin_token},
    ),
    ServiceSpec(
        "ingest",
        "ingest_port",
        lambda ctx: {"FRESHET_INGEST_SPOOL_DIR": str(ctx.state_dir / "ingest-spool")},
    ),
    ServiceSpec(
        "transform",
        "transform_port",
        lambda ctx: {
            "FRESHET_REDIS_URL": ctx.redis_url,
            "FRESHET_TRANSFORM_DATA_DIR": str(ctx.state_dir / "transform"),
        },
    ),
    ServiceSpec(
        "serve",
        "serve_port",
        lambda ctx: {
            "FRESHET_REDIS_URL": ctx.redis_url,
            "FRESHET_TARGET_DATABASE_URL": ctx.target_database_url,
        },
    ),
)
"""Every Freshet service, in start-up order."""
