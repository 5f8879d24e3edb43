"""Live changes (SSE) against the real broker (products, keys) and Redis (the change stream).

Batches are written into Redis as the materializer writes them (:class:`Writer`); the stream is
read through the app with the TestClient, which streams the body and cancels the app when the
test closes the response. Heartbeats are made frequent, so a reader never waits long for a line
and a stream notices a new generation or a revoked key quickly.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from freshet.common import topics
from freshet.common.kafka import produce_sync
from freshet.common.pipelines.spec import MaskRule
from freshet.common.products import ProductRole
from freshet.common.schemas import ViewSpec
from freshet.serve.materialize.batch import Batch
from freshet.serve.materialize.layout import ViewLayout
from freshet.serve.materialize.stores.redis import RedisStore
from freshet.serve.read import changes as changes_module

from .api_util import ServeApi, wait_for
from .stores_util import Records, spec

VIEW = spec(
    "orders_changes",
    {"id": "int8", "region": "text", "n": "int8", "email": "text", "doc": "jsonb"},
    {"id": ("int8", False)},
)
FIELDS = ["id", "region", "n", "email"]
ROLES = {
    "reader": ProductRole(),
    "eu": ProductRole(
        row_filter="region = 'EU'", masks={"email": MaskRule(method="redact", replacement="***")}
    ),
}
TIMEOUT_S = 30.0


def _row(i: int, region: str | None, n: int = 0, doc: Any = None) -> dict[str, Any]:
    return {"id": i, "region": region, "n": n, "email": f"user{i}@example.com", "doc": doc}


def _shown(row: dict[str, Any], masked: bool = False) -> dict[str, Any]:
    """``row`` as the product shows it (no ``doc``), with the eu role's mask when asked."""
    out = {f: row[f] for f in FIELDS}
    if masked:
        out["email"] = "***"
    return out


class Writer:
    """Writes batches of one view generation into Redis as serve's materializer does."""

    def __init__(self, api: ServeApi, view: ViewSpec, retained: int = 100_000) -> None:
        self.api = api
        layout = ViewLayout.of(view)
        self.store = RedisStore(api.redis, api.root, layout, 1000, changes_retained=retained)
        self.held = self.store.open([0])
        self.records = Records(layout)
        self.records.next[0] = self.held[0]

    def write(self, rows: list[tuple[int, dict[str, Any] | None]]) -> None:
        changes = [self.records.change({"id": i}, row) for i, row in rows]
        self.store.write(Batch.of(changes, self.held))
        self.held = {0: self.records.next[0]}

    def ready(self) -> None:
        self.store.caught_up()

    def last_entry(self) -> str:
        """The id of the newest entry of the change stream."""
        return self.api.redis.xrevrange(self.store.keys.changes, count=1)[0][0].decode()


@dataclass
class Message:
    event: str | None = None
    id: str | None = None
    data: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)

    @property
    def json(self) -> Any:
        return orjson.loads("\n".join(self.data))


class Events:
    """Reads SSE messages from a streaming response."""

    def __init__(self, response: Any) -> None:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        self.text: list[str] = []
        self._lines = response.iter_lines()

    def message(self) -> Message | None:
        """The next message (heartbeats included); None when the stream ended."""
        msg = Message()
        seen = False
        for line in self._lines:
            self.text.append(line)
            if line == "":
                if seen:
                    return msg
                continue
            seen = True
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "":
                msg.comments.append(value)
            elif name == "event":
                msg.event = value
            elif name == "id":
                msg.id = value
            elif name == "data":
                msg.data.append(value)
        return None

    def event(self) -> Message:
        """The next message that is an event (heartbeats skipped)."""
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            msg = self.message()
            assert msg is not None, "the stream ended"
            if msg.event is not None:
                return msg
        raise AssertionError(f"no event within {TIMEOUT_S}s: {self.text[-30:]}")

    def events(self, n: int) -> list[tuple[str, Any]]:
        out = []
        for _ in range(n):
            msg = self.event()
            out.append((msg.event, msg.json))
        return out

    def ended(self) -> bool:
        return self.message() is None


@pytest.fixture(autouse=True)
def fast_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(changes_module, "HEARTBEAT_S", 0.2)
    monkeypatch.setattr(changes_module, "BLOCK_S", 0.1)


@pytest.fixture
def api(kafka: Any, redis_server: str) -> Iterator[ServeApi]:
    api = ServeApi(kafka.bootstrap, redis_server)
    yield api
    api.close()


@pytest.fixture
def writer(api: ServeApi) -> Writer:
    writer = Writer(api, VIEW)
    writer.write([(i, _row(i, "EU" if i % 2 else "US")) for i in range(1, 6)])
    writer.ready()
    return writer


def _headers(key: str, last_event_id: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    return headers


def _stream_connections(api: ServeApi, expected: int) -> int:
    """Redis connections of change streams, once there are ``expected`` (or after a timeout).

    This test's Redis serves one test at a time.
    """
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        clients = api.redis.client_list()
        found = sum(1 for c in clients if c.get("name") == changes_module.CLIENT_NAME)
        if found == expected or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _ready(client: TestClient, product: str, *keys: str) -> str:
    """Wait until the catalog knows the product and the keys; the changes path."""
    for key in keys:
        assert wait_for(client, f"/v1/products/{product}", key).status_code == 200
    return f"/v1/products/{product}/changes"


def test_upserts_and_deletes_arrive_in_order_and_resume_after_an_id(
    api: ServeApi, writer: Writer
) -> None:
    product = api.product(VIEW, fields=FIELDS, roles=ROLES)
    key = api.key(["reader"], [product.name])
    with api.client() as client:
        path = _ready(client, product.name, key)
        with client.stream("GET", path, headers=_headers(key)) as response:
            events = Events(response)
            live = events.event()
            assert live.event == "live" and live.json == {"generation": 1, "snapshot_rows": 0}
            assert live.id == f"g1-{writer.last_entry()}"
            writer.write([(6, _row(6, "EU")), (2, _row(2, "US", n=1)), (3, None)])
            writer.write([(6, _row(6, "EU", n=2))])
            received = [events.event() for _ in range(4)]
        assert [(m.event, m.json) for m in received] == [
            ("upsert", _shown(_row(6, "EU"))),
            ("upsert", _shown(_row(2, "US", n=1))),
            ("delete", {"id": 3}),
            ("upsert", _shown(_row(6, "EU", n=2))),
        ]
        ids = [m.id for m in received]
        assert all(i is not None and i.startswith("g1-") for i in ids)
        entries = [tuple(map(int, i[3:].split("-"))) for i in ids if i is not None]
        assert entries == sorted(entries) and len(set(entries)) == 4

        # Resume after the second event: exactly the events after it, then what comes next.
        writer.write([(7, _row(7, "US"))])
        want = [
            ("delete", {"id": 3}),
            ("upsert", _shown(_row(6, "EU", n=2))),
            ("upsert", _shown(_row(7, "US"))),
        ]
        with client.stream("GET", path, headers=_headers(key, ids[1])) as response:
            events = Events(response)
            assert events.events(3) == want
            writer.write([(8, _row(8, "EU"))])
            assert events.events(1) == [("upsert", _shown(_row(8, "EU")))]
        # The same from the query parameter; the header, when both are there, wins.
        query = {"last_event_id": ids[1]}
        with client.stream("GET", path, headers=_headers(key), params=query) as response:
            assert Events(response).events(3) == want
        query = {"last_event_id": "not an id"}
        with client.stream("GET", path, headers=_headers(key, ids[2]), params=query) as response:
            assert Events(response).events(3) == [*want[1:], ("upsert", _shown(_row(8, "EU")))]
            # A stream waits for changes on a Redis connection of its own...
            assert _stream_connections(api, 1) == 1
        # ... closed when its client goes.
        assert _stream_connections(api, 0) == 0


def test_each_role_sees_its_filter_and_masks(api: ServeApi, writer: Writer) -> None:
    product = api.product(VIEW, fields=FIELDS, roles=ROLES)
    reader = api.key(["reader"], [product.name])
    eu = api.key(["eu"], [product.name])
    with api.client() as client:
        path = _ready(client, product.name, reader, eu)
        with (
            client.stream("GET", path, headers=_headers(reader)) as all_response,
            client.stream("GET", path, headers=_headers(eu)) as eu_response,
        ):
            everything, filtered = Events(all_response), Events(eu_response)
            assert everything.event().event == "live" and filtered.event().event == "live"
            writer.write(
                [
                    (1, _row(1, "US")),  # leaves the eu filter: a delete for eu
                    (2, _row(2, "EU")),  # enters it: an upsert
                    (3, _row(3, "EU", n=3)),  # stays in: an upsert
                    (5, {**_row(5, "EU"), "email": "x@example.com"}),  # masked for eu: nothing
                    (4, _row(4, "US", n=9)),  # never visible to eu: nothing
                ]
            )
            # Only a field no role sees: nothing.
            writer.write([(5, {**_row(5, "EU", doc={"x": 1}), "email": "x@example.com"})])
            writer.write([(4, None)])  # never visible to eu: nothing
            writer.write([(6, _row(6, "EU"))])
            assert filtered.events(4) == [
                ("delete", {"id": 1}),
                ("upsert", _shown(_row(2, "EU"), masked=True)),
                ("upsert", _shown(_row(3, "EU", n=3), masked=True)),
                ("upsert", _shown(_row(6, "EU"), masked=True)),
            ]
            assert everything.events(7) == [
                ("upsert", _shown(_row(1, "US"))),
                ("upsert", _shown(_row(2, "EU"))),
                ("upsert", _shown(_row(3, "EU", n=3))),
                ("upsert", {**_shown(_row(5, "EU")), "email": "x@example.com"}),
                ("upsert", _shown(_row(4, "US", n=9))),
                ("delete", {"id": 4}),
                ("upsert", _shown(_row(6, "EU"))),
            ]
            # A change eu does not see moves its resume point with the next heartbeat (an id
            # without data), so that it resumes past it.
            writer.write([(4, _row(4, "US"))])
            hidden = f"g1-{writer.last_entry()}"
            deadline = time.monotonic() + TIMEOUT_S
            while True:
                msg = filtered.message()
                assert msg is not None and msg.event is None and time.monotonic() < deadline
                if msg.id is not None:
                    break
            assert msg.comments == ["heartbeat"] and msg.id == hidden and msg.data == []
            eu_text = "\n".join(filtered.text)
        assert "@example.com" not in eu_text and "US" not in eu_text
        writer.write([(7, _row(7, "EU"))])
        with client.stream("GET", path, headers=_headers(eu, hidden)) as response:
            assert Events(response).events(1) == [("upsert", _shown(_row(7, "EU"), masked=True))]


def test_a_snapshot_comes_first_and_the_changes_follow(api: ServeApi, writer: Writer) -> None:
    product = api.product(VIEW, fields=FIELDS, roles=ROLES)
    eu = api.key(["eu"], [product.name])
    with api.client() as client:
        path = _ready(client, product.name, eu)
        with client.stream(
            "GET", path, headers=_headers(eu), params={"snapshot": "true"}
        ) as response:
            events = Events(response)
            rows = [events.event() for _ in range(3)]
            assert [(m.event, m.json, m.id) for m in rows] == [
                ("upsert", _shown(_row(i, "EU"), masked=True), None) for i in (1, 3, 5)
            ]
            live = events.event()
            assert live.event == "live" and live.json == {"generation": 1, "snapshot_rows": 3}
            assert live.id == f"g1-{writer.last_entry()}"
            writer.write([(2, _row(2, "EU"))])
            assert events.events(1) == [("upsert", _shown(_row(2, "EU"), masked=True))]


def test_an_id_of_another_generation_or_trimmed_away_gets_a_reset(api: ServeApi) -> None:
    product = api.product(VIEW, fields=FIELDS, roles=ROLES)
    key = api.key(["reader"], [product.name])
    writer = Writer(api, VIEW, retained=10)
    writer.ready()  # an empty view: its stream does not exist yet
    with api.client() as client:
        path = _ready(client, product.name, key)
        with client.stream("GET", path, headers=_headers(key)) as response:
            live = Events(response).event()
        assert live.id == "g1-0-0"
        writer.write([(1, _row(1, "EU"))])
        first = f"g1-{writer.last_entry()}"
        with client.stream("GET", path, headers=_headers(key, "g1-0-0")) as response:
            assert Events(response).events(1) == [("upsert", _shown(_row(1, "EU")))]

        for round_ in range(3):
            writer.write([(i, _row(i, "EU", n=round_)) for i in range(100)])
        assert api.redis.xrange(writer.store.keys.changes, first[3:], first[3:]) == []
        for gone in ("g1-0-0", first, "g1-1-0"):
            with client.stream("GET", path, headers=_headers(key, gone)) as response:
                events = Events(response)
                reset = events.event()
                assert reset.event == "reset" and reset.id == ""
                assert "no longer kept" in reset.json["reason"]
                assert events.ended()

        # The view is redefined: a stream on generation 1 ends, and its ids are refused.
        with client.stream("GET", path, headers=_headers(key)) as response:
            events = Events(response)
            live = events.event()
            assert live.id == f"g1-{writer.last_entry()}"
            two = Writer(api, VIEW.model_copy(update={"generation": 2}))
            two.write([(1, _row(1, "US"))])
            two.ready()
            reset = events.event()
            assert reset.event == "reset" and "redefined" in reset.json["reason"]
            assert events.ended()
        assert live.id is not None
        with client.stream("GET", path, headers=_headers(key, live.id)) as response:
            reset = Events(response).event()
            assert reset.event == "reset" and "generation 2 is served" in reset.json["reason"]
        with client.stream("GET", path, headers=_headers(key)) as response:
            live = Events(response).event()
            assert live.id == f"g2-{two.last_entry()}"


def test_requests_are_checked_before_the_stream_and_while_it_runs(
    api: ServeApi, writer: Writer
) -> None:
    product = api.product(VIEW, fields=FIELDS, roles=ROLES)
    reader = api.key(["reader"], ["*"])
    other = api.key(["reader"], ["another_product"])
    unserved = api.product(
        spec("never_materialized", {"id": "int8"}, {"id": ("int8", False)}),
        name=f"unserved_{api.unique}",
    )
    with api.client() as client:
        path = _ready(client, product.name, reader)
        assert client.get(path).status_code == 401
        assert client.get(path, headers=_headers(other)).status_code == 403
        assert (
            client.get(path.replace(product.name, "nope"), headers=_headers(reader)).status_code
            == 403
        )
        cases = {
            "snapshot=maybe": "snapshot",
            "region=EU": "region",
            "lsn=zz": "lsn",
            "last_event_id=g1-x": "Last-Event-ID",
        }
        for query, named in cases.items():
            response = client.get(f"{path}?{query}", headers=_headers(reader))
            assert response.status_code == 400, (query, response.text)
            assert named in response.json()["detail"], (query, response.text)
        response = client.get(path, headers=_headers(reader, "1-0"))
        assert response.status_code == 400
        # Read-your-writes: a position never reported within the timeout is a 504.
        response = client.get(f"{path}?lsn=0/FFFFFF&timeout_ms=0", headers=_headers(reader))
        assert response.status_code == 504
        unserved_path = _ready(client, unserved.name, reader)
        assert client.get(unserved_path, headers=_headers(reader)).status_code == 503

        # A key revoked while its stream runs ends the stream with an error event.
        with client.stream("GET", path, headers=_headers(reader)) as response:
            events = Events(response)
            assert events.event().event == "live"
            key_id = reader.split("_")[1]
            produce_sync(api.producer, topics.CONTROL_KEYS, key_id.encode(), None)
            failed = events.event()
            assert failed.event == "error" and failed.json["status"] == 401
            assert events.ended()
        assert reader not in "\n".join(events.text)
