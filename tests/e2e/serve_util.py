"""Helpers of the serve end-to-end tests: products and keys as control writes them, serve's app
on a real port, and walking a product's pages over REST."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import uvicorn

from freshet.common import codec, topics
from freshet.common.kafka import produce_sync
from freshet.common.products import ApiKeySpec, ProductRole, ProductSpec
from freshet.common.schemas import ViewSpec
from freshet.control.keys import new_key
from freshet.devstack import servers
from freshet.devstack.harness import Control
from freshet.serve.app import create_app
from freshet.serve.config import ServeSettings
from freshet.serve.service import ServeService


class ServeServer:
    """Serve's app with its materializer, run by uvicorn in a thread on a free port."""

    def __init__(self, settings: ServeSettings) -> None:
        self.port = servers.free_port()
        app = create_app(settings, ServeService(settings, "test"))
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=5,
            )
        )
        self.thread = threading.Thread(target=self.server.run, name="serve-http", daemon=True)
        self.base = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServeServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive(), "uvicorn stopped before it started"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(90)
        assert not self.thread.is_alive(), "serve did not stop"


def publish_product(
    control: Control, view: ViewSpec, name: str, roles: dict[str, ProductRole]
) -> ProductSpec:
    """A product over every column of ``view``, published as control publishes it."""
    spec = ProductSpec(
        name=name,
        view=view.name,
        fields=tuple(c.name for c in view.columns),
        key=view.key,
        columns=view.columns,
        roles=roles,
    )
    _publish(control, topics.CONTROL_PRODUCTS, name, spec.model_dump(mode="json"))
    return spec


def publish_key(control: Control, roles: list[str], products: list[str]) -> str:
    """An API key made as control makes it (only its hash published); returns the secret."""
    key = new_key()
    spec = ApiKeySpec(
        id=key.id,
        name=f"e2e {'+'.join(roles)}",
        secret_sha256=key.sha256,
        roles=tuple(roles),
        products=tuple(products),
    )
    _publish(control, topics.CONTROL_KEYS, key.id, spec.model_dump(mode="json"))
    return key.full


def _publish(control: Control, topic: str, key: str, value: dict[str, Any]) -> None:
    produce_sync(control.producer, topic, key.encode(), codec.dumps(value))
    control.created.append((topic, key))


def all_rows(
    http: httpx.Client,
    product: str,
    key: str,
    wait: dict[str, Any] | None = None,
    limit: int = 100,
    **params: Any,
) -> list[dict[str, Any]]:
    """Every row of ``product`` over REST, walking all pages.

    ``params`` (filters, sort) go with every page, ``wait`` (``lsn``, ``timeout_ms``) with the
    first only.
    """
    headers = {"Authorization": f"Bearer {key}"}
    out: list[dict[str, Any]] = []
    query: dict[str, Any] = {**params, **(wait or {}), "limit": limit}
    for _ in range(10_000):
        response = http.get(f"/v1/products/{product}/rows", headers=headers, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        out += body["rows"]
        if body["next_cursor"] is None:
            return out
        query = {**params, "limit": limit, "cursor": body["next_cursor"]}
    raise AssertionError("pagination never ended")


def wait_readable(http: httpx.Client, product: str, key: str, timeout: float = 120.0) -> None:
    """Wait until serve has read the product and key and materialized the view (401, 403 and
    503 until then)."""
    headers = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + timeout
    while True:
        response = http.get(f"/v1/products/{product}/rows", headers=headers, params={"limit": 1})
        if response.status_code not in (401, 403, 503):
            break
        assert time.monotonic() < deadline, response.text
        time.sleep(0.1)
    assert response.status_code == 200, response.text
