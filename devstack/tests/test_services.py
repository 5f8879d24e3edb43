"""What the stack hands each service reaches that service's own settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from freshet.common.settings import CommonSettings
from freshet.control.config import ControlSettings
from freshet.devstack.config import EMBEDDED_TOPIC_PARTITIONS, DevstackSettings
from freshet.devstack.services import SERVICES, StackContext
from freshet.ingest.config import IngestSettings
from freshet.serve.config import ServeSettings
from freshet.transform.config import TransformSettings

SETTINGS: dict[str, type[CommonSettings]] = {
    "control": ControlSettings,
    "ingest": IngestSettings,
    "transform": TransformSettings,
    "serve": ServeSettings,
}


def _context(partitions: int) -> StackContext:
    return StackContext(
        kafka_bootstrap="127.0.0.1:19092",
        secret_key="k",
        admin_token="t",
        redis_url="redis://127.0.0.1:16380/0",
        target_database_url="postgresql+psycopg://u:p@127.0.0.1:15433/serve",
        state_dir=Path(".freshet"),
        topic_partitions=partitions,
    )


def test_the_embedded_broker_gets_one_partition_per_topic_unless_told_otherwise(monkeypatch):
    monkeypatch.delenv("FRESHET_TOPIC_PARTITIONS", raising=False)
    assert DevstackSettings().topic_partitions == EMBEDDED_TOPIC_PARTITIONS == 1
    monkeypatch.setenv("FRESHET_TOPIC_PARTITIONS", "4")
    assert DevstackSettings().topic_partitions == 4


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
@pytest.mark.parametrize("partitions", [1, 5])
def test_every_service_creates_its_topics_with_the_stacks_partitions(
    service, partitions, monkeypatch
):
    env = service.env(DevstackSettings(), _context(partitions))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = SETTINGS[service.name]()
    assert settings.topic_partitions == partitions
    assert settings.kafka_bootstrap == "127.0.0.1:19092"
