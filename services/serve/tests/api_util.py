"""Helpers of the API tests: a served view in Redis, products and keys on the real topics."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from confluent_kafka import Producer
from fastapi.testclient import TestClient
from pydantic import SecretStr

from freshet.common import codec, topics
from freshet.common.kafka import ensure_topics, produce_sync, producer_config
from freshet.common.products import ApiKeySpec, ProductRole, ProductSpec
from freshet.common.schemas import ViewSpec
from freshet.common.secrets import SecretBox
from freshet.serve.app import create_app
from freshet.serve.config import ServeSettings
from freshet.serve.materialize.layout import ViewLayout
from freshet.serve.materialize.stores.redis import RedisStore

from .stores_util import Records


class ServeApi:
    """Serve's app (no materializer) over a Redis prefix of its own, and the control topics."""

    def __init__(self, bootstrap: str, redis_url: str) -> None:
        self.bootstrap = bootstrap
        self.redis_url = redis_url
        self.root = f"test:{uuid.uuid4().hex[:8]}"
        self.secret_key = SecretStr(SecretBox.generate_key())
        self.box = SecretBox(self.secret_key)
        self.redis = redis.Redis.from_url(redis_url)
        self.producer = Producer(producer_config(bootstrap))
        self.unique = uuid.uuid4().hex[:8]
        ensure_topics(bootstrap, topics.control_topics(3))

    def settings(self) -> ServeSettings:
        return ServeSettings(
            kafka_bootstrap=self.bootstrap,
            redis_url=self.redis_url,
            serve_redis_prefix=self.root,
            secret_key=self.secret_key,
        )

    @contextmanager
    def client(self) -> Iterator[TestClient]:
        with TestClient(create_app(self.settings())) as client:
            deadline = time.monotonic() + 60
            while not client.app.state.catalog.ready:  # type: ignore[attr-defined]
                assert time.monotonic() < deadline, "the catalog was never read"
                time.sleep(0.05)
            yield client

    # --- views ---------------------------------------------------------------------------

    def materialize(self, view: ViewSpec, rows: list[tuple[dict[str, Any], dict[str, Any] | None]]):
        """Write ``rows`` (key, row or None) into Redis as serve's materializer would."""
        layout = ViewLayout.of(view)
        store = RedisStore(self.redis, self.root, layout, max_records=1000)
        held = store.open([0])
        records = Records(layout)
        records.next[0] = held[0]
        changes = [records.change(k, r) for k, r in rows]
        store.write(records.batch(changes, held))
        store.caught_up()
        return store

    # --- control-plane records -----------------------------------------------------------

    def product(
        self,
        view: ViewSpec,
        name: str | None = None,
        fields: list[str] | None = None,
        roles: dict[str, ProductRole] | None = None,
    ) -> ProductSpec:
        by_name = {c.name: c for c in view.columns}
        exposed = fields or [c.name for c in view.columns]
        hashes = any(
            rule.method == "hash" for role in (roles or {}).values() for rule in role.masks.values()
        )
        spec = ProductSpec(
            name=name or f"p_{self.unique}",
            view=view.name,
            fields=tuple(exposed),
            key=view.key,
            columns=tuple(by_name[f] for f in exposed),
            indexes=tuple(f for f in view.indexes if f in exposed),
            roles=roles or {"reader": ProductRole()},
            hash_salt_encrypted=self.box.encrypt(SecretStr("salt-" + self.unique))
            if hashes
            else "",
        )
        self.publish(spec)
        return spec

    def publish(self, spec: ProductSpec) -> None:
        """Write ``spec`` to the products' desired-state topic, as control does."""
        produce_sync(
            self.producer,
            topics.CONTROL_PRODUCTS,
            spec.name.encode(),
            codec.dumps(spec.model_dump(mode="json")),
        )

    def delete_product(self, name: str) -> None:
        produce_sync(self.producer, topics.CONTROL_PRODUCTS, name.encode(), None)

    def key(self, roles: list[str], products: list[str], expires_at_ms: int | None = None) -> str:
        """A new API key; returns its secret form ``fsk_<id>_<secret>``."""
        key_id = uuid.uuid4().hex[:12]
        secret = secrets.token_urlsafe(24).replace("_", "-")
        spec = ApiKeySpec(
            id=key_id,
            name=f"key {key_id}",
            secret_sha256=hashlib.sha256(secret.encode()).hexdigest(),
            roles=tuple(roles),
            products=tuple(products),
            expires_at_ms=expires_at_ms,
        )
        produce_sync(
            self.producer,
            topics.CONTROL_KEYS,
            key_id.encode(),
            codec.dumps(spec.model_dump(mode="json")),
        )
        return f"fsk_{key_id}_{secret}"

    def close(self) -> None:
        self.producer.flush(5)
        self.redis.close()


def wait_for(client: TestClient, path: str, key: str, status: int = 200, timeout: float = 30.0):
    """GET ``path`` until it answers ``status`` (a record takes a moment to reach the catalog)."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(path, headers={"Authorization": f"Bearer {key}"})
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.05)
