"""Fixtures for tests through several services: ingest and transform in-process, on the real
broker, PostgreSQL and Redis of the session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from freshet.common import topics
from freshet.common.kafka import ensure_topics
from freshet.common.secrets import SecretBox
from freshet.devstack import servers
from freshet.devstack.harness import Control, ServiceThread
from freshet.ingest.config import IngestSettings
from freshet.ingest.service import IngestService
from freshet.transform.config import TransformSettings
from freshet.transform.service import TransformService


@pytest.fixture
def secret_key() -> SecretStr:
    return SecretStr(SecretBox.generate_key())


@pytest.fixture
def control(kafka: Any, secret_key: SecretStr) -> Iterator[Control]:
    """Writes desired state; deletes what the test created at the end."""
    ensure_topics(kafka.bootstrap, topics.control_topics(3))
    control = Control(kafka.bootstrap, secret_key)
    yield control
    control.remove_all()


@pytest.fixture
def ingest(
    kafka: Any, pg_database: Any, secret_key: SecretStr, unique: str, tmp_path: Path
) -> Iterator[ServiceThread]:
    """Ingest in a thread, stopped before the test's database is dropped."""
    settings = IngestSettings(
        kafka_bootstrap=kafka.bootstrap,
        secret_key=secret_key,
        ingest_port=servers.free_port(),
        ingest_group=f"ingest-{unique}",
        ingest_spool_dir=tmp_path / "spool",
        ingest_status_interval_s=0.3,
        ingest_retry_initial_s=0.5,
        ingest_retry_max_s=2.0,
        topic_partitions=3,
    )
    service = ServiceThread(IngestService(settings, "test").run).start()
    yield service
    service.shutdown()


@pytest.fixture
def transform_settings(
    kafka: Any, redis_server: str, unique: str, tmp_path: Path
) -> TransformSettings:
    return TransformSettings(
        kafka_bootstrap=kafka.bootstrap,
        redis_url=redis_server,
        transform_group=f"transform-{unique}",
        transform_data_dir=tmp_path / "transform",
        transform_port=servers.free_port(),
        transform_retry_initial_s=0.5,
        transform_retry_max_s=2.0,
        topic_partitions=3,
    )


@pytest.fixture
def transform(transform_settings: TransformSettings) -> Iterator[ServiceThread]:
    service = ServiceThread(TransformService(transform_settings, "test").run).start()
    yield service
    service.shutdown()
