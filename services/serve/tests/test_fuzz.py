"""Serve's OpenAPI document, fuzzed with schemathesis: every operation, generated inputs.

Serve's app runs on a real port (uvicorn in a thread) over views written into Redis as the
materializer writes them, with two products and an API key on the real control topics. The
document is the one the key gets from ``/openapi.json``; every operation in it (products, rows,
a row by key, live changes, GraphQL) is called with inputs schemathesis generates from it, valid
and invalid, authenticated with the key as its security schemes say. No answer may be a 5xx
(but the documented 504 of a read-your-writes wait), and every answer must agree with the
document: status codes, content types, headers, the row schemas, invalid input refused.

Schemathesis' pytest plugin does not run under this pytest (it sets ``Item._nodeid``), so each
operation's strategy runs under Hypothesis directly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance

from freshet.common.pipelines.spec import MaskRule
from freshet.common.products import ProductRole
from freshet.devstack import servers
from freshet.serve.app import create_app

from .api_util import ServeApi
from .stores_util import spec

TYPES = spec(
    "fuzz_types",
    {
        "id": "int8",
        "small": "int2",
        "name": "text",
        "price": "numeric",
        "ratio": "float8",
        "ok": "bool",
        "day": "date",
        "at": "timestamptz",
        "uid": "uuid",
        "blob": "bytea",
        "doc": "jsonb",
        "tags": "text[]",
        "email": "text",
    },
    {"id": ("int8", False)},
    # Every type with an order, but name and email (filtered on by examining rows).
    indexes=("small", "price", "ratio", "ok", "day", "at", "uid"),
)
COMPOSITE = spec(
    "fuzz_days",
    {"region": "text", "day": "date", "n": "int4"},
    {"region": ("text", True), "day": ("date", False)},
    indexes=("n",),
)


def _typed_row(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "small": i % 7 - 3,
        "name": f"name {i}" if i % 5 else None,
        "price": f"{i * 3}.{i % 100:02d}",
        "ratio": [0.5 * i, "NaN", "Infinity", None][i % 4],
        "ok": [True, False, None][i % 3],
        "day": f"2024-01-{i % 28 + 1:02d}",
        "at": f"2024-01-{i % 28 + 1:02d}T10:00:00Z",
        "uid": f"00000000-0000-0000-0000-{i:012d}",
        "blob": "AAEC",
        "doc": {"i": i, "nested": [i, None]},
        "tags": ["a", None, f"t{i}"],
        "email": f"user{i}@example.com",
    }


class Server:
    """Serve's app (no materializer) run by uvicorn in a thread on a free port."""

    def __init__(self, api: ServeApi) -> None:
        self.port = servers.free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                create_app(api.settings()),
                host="127.0.0.1",
                port=self.port,
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=2,
            )
        )
        self.thread = threading.Thread(target=self.server.run, name="serve-http", daemon=True)
        self.base = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture
def served(kafka: Any, redis_server: str) -> Iterator[tuple[str, dict[str, str]]]:
    """(base URL, auth headers) of a running serve with two products the key reads."""
    api = ServeApi(kafka.bootstrap, redis_server)
    api.materialize(TYPES, [({"id": i}, _typed_row(i)) for i in range(1, 41)])
    api.materialize(
        COMPOSITE,
        [
            ({"region": r, "day": d}, {"region": r, "day": d, "n": n})
            for n, (r, d) in enumerate(
                [("EU", "2024-01-02"), (None, "2024-01-02"), ("US", "2024-02-29")]
            )
        ],
    )
    roles = {
        "fuzz": ProductRole(
            row_filter="small >= -2 OR name IS NULL",
            masks={"email": MaskRule(method="keep_last", keep=3)},
        )
    }
    typed = api.product(TYPES, name=f"typed_{api.unique}", roles=roles)
    days = api.product(COMPOSITE, name=f"days_{api.unique}", roles={"fuzz": ProductRole()})
    key = api.key(["fuzz"], [typed.name, days.name])
    headers = {"Authorization": f"Bearer {key}"}
    try:
        with Server(api) as server:
            deadline = time.monotonic() + 60
            for product in (typed, days):
                url = f"{server.base}/v1/products/{product.name}/rows"
                while requests.get(url, headers=headers, timeout=30).status_code != 200:
                    assert time.monotonic() < deadline, "the products were never served"
                    time.sleep(0.05)
            yield server.base, headers
    finally:
        api.close()


MAX_EXAMPLES = 25
"""Generated cases per operation and mode: the run stays bounded (CI has 2 cores)."""

STREAM_QUIET_S = 0.5
"""How long a running event stream is listened to when it sends nothing."""

WAIT_MS = 20
"""``timeout_ms`` of a case that waits for an ``lsn``: no transform runs here, so a valid
position is never reported applied and the request waits it out before its 504."""

EXCLUDED = [positive_data_acceptance, not_a_server_error]
"""``positive_data_acceptance`` expects every schema-valid request to succeed, which a schema
cannot promise here: a cursor is opaque (a string the API did not make is refused), and a
read-your-writes ``lsn`` that is never reached is a 504 by design. ``not_a_server_error`` is
replaced by :func:`_no_server_error`, which allows exactly that 504."""


def _no_server_error(case: Any, response: Any) -> None:
    """No 5xx, except the documented 504 of a read-your-writes wait that timed out."""
    status = response.status_code
    if status < 500:
        return
    waited = bool(case.query) and "lsn" in case.query
    detail = response.json().get("detail", "") if status == 504 else ""
    assert status == 504 and waited and " within " in detail, (
        f"{case.operation.label} answered {status}: {response.text[:500]}\n{case.as_curl_command()}"
    )


def _bounded_wait(case: Any) -> None:
    query = case.query
    if query and "lsn" in query:
        timeout = query.get("timeout_ms")
        if timeout is None or (isinstance(timeout, int) and not isinstance(timeout, bool)):
            query["timeout_ms"] = min(timeout or WAIT_MS, WAIT_MS)


def _first_event(response: requests.Response) -> list[str]:
    """The lines of a stream up to its first event, or what came before a quiet moment."""
    lines: list[str] = []
    try:
        for line in response.iter_lines(decode_unicode=True):
            lines.append(line)
            if line == "" and any(x.startswith("event:") for x in lines):
                break
    except requests.exceptions.ConnectionError:  # the read timed out: running, nothing to say
        pass
    return lines


def _stream_call(case: Any) -> requests.Response | None:
    """An event stream: the response of a refusal, None for a stream that started well.

    A stream never ends by itself, so it is read up to its first event (or a quiet moment); it
    must not start with an ``error`` event (the stream's way to say 5xx once it has begun).
    Refusals (4xx) are plain responses, validated like any other.
    """
    kwargs = case.as_transport_kwargs()
    response = requests.request(**kwargs, stream=True, timeout=(10, STREAM_QUIET_S))
    try:
        if response.status_code != 200:
            _ = response.content
            return response
        assert response.headers["content-type"].startswith("text/event-stream"), response.headers
        lines = _first_event(response)
        assert "event: error" not in lines, (lines, case.as_curl_command())
        return None
    finally:
        response.close()


def _fuzz(operation: Any, mode: GenerationMode) -> None:
    streams = "text/event-stream" in str(operation.definition.raw.get("responses", {}))

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        _bounded_wait(case)
        response = _stream_call(case) if streams else case.call(timeout=30)
        if response is None:
            return
        _no_server_error(case, response)
        case.validate_response(response, excluded_checks=EXCLUDED)

    run()


def test_every_operation_answers_without_5xx_and_as_documented(
    served: tuple[str, dict[str, str]],
) -> None:
    base, headers = served
    token = headers["Authorization"].removeprefix("Bearer ")
    config = schemathesis.Config.from_dict(
        {"base-url": base, "auth": {"openapi": {"bearer": {"bearer": token}}}}
    )
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json", config=config, headers=headers)
    operations = [result.ok() for result in schema.get_all_operations()]
    paths = {op.path.rsplit("/", 1)[-1] for op in operations}
    assert {"products", "rows", "{key}", "changes", "graphql"} <= paths, paths
    assert len(operations) == 1 + 4 * 2 + 1, [op.label for op in operations]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(operation, mode)


def test_wait_parameters_are_checked_without_lsn(served: tuple[str, dict[str, str]]) -> None:
    """Found by the fuzz: ``timeout_ms`` without ``lsn`` was ignored, whatever its value."""
    base, headers = served
    doc = requests.get(f"{base}/openapi.json", headers=headers, timeout=30).json()
    for path in doc["paths"]:
        if path.endswith("/rows"):
            response = requests.get(
                base + path, headers=headers, params={"timeout_ms": "null"}, timeout=30
            )
            assert response.status_code == 400, response.text
            assert "timeout_ms" in response.json()["detail"]


def test_event_ids_past_64_bits_are_refused(served: tuple[str, dict[str, str]]) -> None:
    """Found by the fuzz: such an id started a stream that ended at once with an error 503."""
    base, headers = served
    doc = requests.get(f"{base}/openapi.json", headers=headers, timeout=30).json()
    path = next(p for p in doc["paths"] if p.endswith("/changes"))
    top = 2**64 - 1
    for event_id, status in [
        (f"g1-{top + 1}-0", 400),
        (f"g1-0-{10**20 - 1}", 400),
        (f"g1-{top}-{top}", 200),  # a stream id, after every entry: reset
        ("g1-000-0", 200),  # the start, with leading zeros: the changes from the start
    ]:
        response = requests.get(
            base + path,
            headers={**headers, "Last-Event-ID": event_id},
            stream=True,
            timeout=(10, STREAM_QUIET_S),
        )
        try:
            assert response.status_code == status, (event_id, response.status_code)
            if status == 400:
                assert "Last-Event-ID" in response.json()["detail"]
            else:
                lines = _first_event(response)
                assert any(x.startswith("event: ") for x in lines), (event_id, lines)
                assert "event: error" not in lines, (event_id, lines)
        finally:
            response.close()
