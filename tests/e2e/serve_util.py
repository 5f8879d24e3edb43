"""Helpers of the serve end-to-end tests: products and keys as control writes them, serve's app
on a real port, and walking a product's pages over REST."""

from __future__ import annotations

import contextlib
import socket
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
        indexes=view.indexes,
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


def graphql(http: httpx.Client, key: str, query: str, **variables: Any) -> dict[str, Any]:
    """The ``data`` of a GraphQL request (which must answer 200 with no errors)."""
    response = http.post(
        "/graphql",
        headers={"Authorization": f"Bearer {key}"},
        json={"query": query, "variables": variables},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert not body.get("errors"), body["errors"]
    data: dict[str, Any] = body["data"]
    return data


class EventStream:
    """A product's live changes (Server-Sent Events), read in a thread into :attr:`events`.

    Each event is ``{"event": ..., "id": ..., "data": ...}`` with ``data`` decoded from JSON.
    """

    def __init__(self, base: str, product: str, key: str) -> None:
        self.url = f"{base}/v1/products/{product}/changes"
        self.headers = {"Authorization": f"Bearer {key}"}
        self.events: list[dict[str, Any]] = []
        self.status: int | None = None
        self.error: BaseException | None = None
        self._closed = False
        self._socket: socket.socket | None = None
        self._changed = threading.Condition()
        self._client = httpx.Client(timeout=httpx.Timeout(30, read=None))
        self._thread = threading.Thread(target=self._run, name="sse-reader", daemon=True)

    def __enter__(self) -> EventStream:
        self._thread.start()
        self.wait_for(lambda e: e["event"] == "live")
        return self

    def __exit__(self, *exc: object) -> None:
        # Shutting the socket down wakes the reader blocked in recv (closing the client from
        # this thread would not), so the thread ends now, not at the next heartbeat.
        self._closed = True
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
        self._thread.join(30)
        self._client.close()
        assert not self._thread.is_alive(), "the event stream reader did not stop"

    def _run(self) -> None:
        try:
            with self._client.stream("GET", self.url, headers=self.headers) as response:
                self.status = response.status_code
                self._socket = response.extensions["network_stream"].get_extra_info("socket")
                if response.status_code != 200:
                    response.read()
                    raise AssertionError(f"{response.status_code}: {response.text}")
                event: dict[str, Any] = {}
                for line in response.iter_lines():
                    if line.startswith(":"):
                        continue
                    if line:
                        name, _, value = line.partition(":")
                        value = value.removeprefix(" ")
                        event[name] = event[name] + "\n" + value if name in event else value
                        continue
                    if "event" in event:
                        event["data"] = codec.loads(event["data"]) if "data" in event else None
                        with self._changed:
                            self.events.append(event)
                            self._changed.notify_all()
                    event = {}
        except BaseException as exc:
            if not self._closed:
                self.error = exc
        finally:
            with self._changed:
                self._changed.notify_all()

    def wait_for(self, match: Any, timeout: float = 90.0) -> dict[str, Any]:
        """The first event for which ``match(event)`` holds, waiting for it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((e for e in self.events if match(e)), None)
                if found is not None:
                    return found
                assert self.error is None, f"the event stream failed: {self.error!r}"
                left = deadline - time.monotonic()
                assert left > 0, f"no such event in {self.events}"
                self._changed.wait(left)

    def changes_of(self, key: dict[str, Any], count: int) -> list[tuple[str, Any]]:
        """Every upsert and delete of the row ``key`` so far, once there are ``count``."""

        def of_key(e: dict[str, Any]) -> bool:
            data = e["data"]
            return e["event"] in ("upsert", "delete") and all(
                data.get(k) == v for k, v in key.items()
            )

        def enough(_e: dict[str, Any]) -> bool:
            return sum(1 for e in self.events if of_key(e)) >= count

        self.wait_for(enough)
        with self._changed:
            return [(e["event"], e["data"]) for e in self.events if of_key(e)]
