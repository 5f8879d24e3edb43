"""Control's API against the session's real broker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from fastapi.testclient import TestClient
from pydantic import SecretStr

from freshet.common import codec
from freshet.common.kafka import consumer_config, produce_sync, producer_config, read_to_end
from freshet.common.secrets import SecretBox
from freshet.control.app import create_app
from freshet.control.config import ControlSettings

ADMIN_TOKEN = "test-admin-token-6f1c0b"


@pytest.fixture(scope="session")
def secret_key() -> str:
    return SecretBox.generate_key()


@pytest.fixture(scope="session")
def settings(kafka, secret_key) -> ControlSettings:
    return ControlSettings(
        kafka_bootstrap=kafka.bootstrap,
        admin_token=SecretStr(ADMIN_TOKEN),
        secret_key=SecretStr(secret_key),
        topic_partitions=3,
    )


@pytest.fixture(scope="session")
def make_client(settings) -> Iterator[Callable[[], TestClient]]:
    """Starts more control replicas on the same broker; they stop at the end of the session."""
    clients: list[TestClient] = []

    def make() -> TestClient:
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture(scope="session")
def client(make_client) -> TestClient:
    """The session's control replica (its lifespan has run: the state has been read)."""
    return make_client()


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def source_body(unique) -> Callable[..., dict[str, Any]]:
    """A valid POST body for a source named after the test, with overrides."""

    def body(**overrides: Any) -> dict[str, Any]:
        base: dict[str, Any] = {
            "name": unique,
            "kind": "postgres",
            "host": "db.example.internal",
            "port": 5432,
            "database": "shop",
            "user": "freshet",
            "password": f"pw-{unique}-Secret!",
            "tables": ["public.orders", "public.customers"],
        }
        base.update(overrides)
        return {k: v for k, v in base.items() if v is not ...}

    return body


def _wait_for(predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.05)


@pytest.fixture
def wait_for() -> Callable[..., Any]:
    """``wait_for(predicate, timeout=20)``: poll until truthy, return the value, else fail."""
    return _wait_for


@pytest.fixture
def records_of(kafka) -> Callable[[str, str], list[bytes | None]]:
    """``records_of(topic, key)``: the values of every record of ``key`` on ``topic``, in order."""

    def read(topic: str, key: str) -> list[bytes | None]:
        consumer = Consumer(consumer_config(kafka.bootstrap, f"test-{uuid.uuid4().hex}"))
        try:
            return [m.value() for m in read_to_end(consumer, topic) if m.key() == key.encode()]
        finally:
            consumer.close()

    return read


@pytest.fixture(scope="session")
def publish(kafka) -> Iterator[Callable[[str, str, Any], None]]:
    """``publish(topic, key, model_or_None)``: write one record as another service would."""
    producer = Producer(producer_config(kafka.bootstrap))

    def write(topic: str, key: str, value: Any) -> None:
        raw = None if value is None else codec.dumps(value.model_dump(mode="json", by_alias=True))
        produce_sync(producer, topic, key.encode(), raw)

    yield write
    producer.flush(5)
