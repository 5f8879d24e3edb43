"""A change in the source reaches every way serve serves it, and a delete leaves them all.

PostgreSQL -> ingest -> Kafka -> transform -> view topic -> serve (its materializer and its API,
served by uvicorn on a real port), all real. A product over the view has two roles: ``ops``
sees every row and field, ``eu`` sees only the rows whose region is EU with the e-mail masked.
Keys are made the way control makes them and travel on the control topics.

REST and GraphQL are read with ``lsn`` = ``pg_current_wal_lsn()`` taken after the commit
(read-your-writes): the first request must already show the change, with no polling. Each role's
live changes (SSE) are followed from before the first change. The PostgreSQL target is compared
once serve has applied the view topic up to its end (positions, not time).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
import redis
from psycopg import sql

from freshet.common import codec
from freshet.common.events import lsn_to_str
from freshet.common.pipelines.spec import MaskRule
from freshet.common.products import ProductRole
from freshet.devstack.harness import Control
from freshet.serve.config import ServeSettings

from .serve_util import (
    EventStream,
    ServeServer,
    all_rows,
    graphql,
    publish_key,
    publish_product,
)
from .test_serve_materialize import (
    TARGET_SCHEMA,
    redis_view_rows,
    target,  # noqa: F401 - a fixture
    wait_served,
)
from .test_views_oracle import current_lsn

SCHEMA = """
CREATE TABLE accounts (
    id int PRIMARY KEY, name text NOT NULL, email text, region text, balance numeric(12, 2)
);
INSERT INTO accounts VALUES
    (1, 'Ann', 'ann@example.com', 'EU', 10.00),
    (2, 'Bob', 'bob@example.com', 'US', 20.00),
    (3, 'Cid', NULL, 'EU', NULL);
"""
VIEW_SQL = (
    "SELECT id, name, email, region, balance, balance * 2 AS doubled FROM accounts "
    "WHERE name <> 'hidden'"
)
WAIT_MS = 60_000
"""How long a read-your-writes request may wait (a bound for a loaded machine, not a timing)."""


# --- reading -----------------------------------------------------------------------------------


class Reader:
    """REST as one API key, read-your-writes when given a position."""

    def __init__(self, http: httpx.Client, product: str, key: str) -> None:
        self.http = http
        self.product = product
        self.key = key
        self.headers = {"Authorization": f"Bearer {key}"}

    def get(
        self, path: str, lsn: int | str | None = None, wait_ms: int = WAIT_MS, **params: Any
    ) -> httpx.Response:
        if lsn is not None:
            params.update(lsn=lsn if isinstance(lsn, str) else lsn_to_str(lsn), timeout_ms=wait_ms)
        return self.http.get(
            f"/v1/products/{self.product}{path}", headers=self.headers, params=params
        )

    def row(self, key: int, lsn: int | None = None) -> httpx.Response:
        return self.get(f"/rows/{key}", lsn)

    def rows(self, lsn: int | None = None, **params: Any) -> list[dict[str, Any]]:
        """Every row (filtered by ``params``), walking all pages; the first carries ``lsn``."""
        wait = {"lsn": lsn_to_str(lsn), "timeout_ms": WAIT_MS} if lsn is not None else None
        return all_rows(self.http, self.product, self.key, wait, limit=2, **params)


def target_rows(conninfo: str, view: str) -> dict[int, tuple[Any, ...]]:
    with psycopg.connect(conninfo) as pg:
        rows = pg.execute(
            sql.SQL("SELECT id, name, email, region, balance::text FROM {}.{}").format(
                sql.Identifier(TARGET_SCHEMA), sql.Identifier(view)
            )
        ).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


# --- the test ----------------------------------------------------------------------------------


@pytest.fixture
def chain(
    kafka: Any,
    pg_database: Any,
    redis_server: str,
    control: Control,
    ingest: Any,
    transform: Any,
    unique: str,
    target: tuple[str, str],  # noqa: F811 - the fixture imported above
) -> Iterator[dict[str, Any]]:
    """The source table, its view, a product and two keys, and serve running over them."""
    target_url, conninfo = target
    conn = pg_database.connect()
    conn.execute(SCHEMA)
    control.add_source(pg_database, unique, ["public.accounts"])
    catalog = control.catalog({f"{unique}.public.accounts"})
    view = control.add_view(f"{unique}_accounts", VIEW_SQL, catalog)
    product = publish_product(
        control,
        view,
        f"{unique}_accounts",
        {
            "ops": ProductRole(),
            "eu": ProductRole(
                row_filter="region = 'EU'",
                masks={"email": MaskRule(method="keep_last", keep=4)},
            ),
        },
    )
    ops_key = publish_key(control, ["ops"], [product.name])
    eu_key = publish_key(control, ["eu"], [product.name])
    settings = ServeSettings(
        kafka_bootstrap=kafka.bootstrap,
        redis_url=redis_server,
        target_database_url=target_url,
        serve_group=f"serve-{unique}",
        serve_redis_prefix=f"test:{unique}",
        serve_target_schema=TARGET_SCHEMA,
        serve_retry_initial_s=0.5,
        serve_retry_max_s=2,
        topic_partitions=3,
    )
    client = redis.Redis.from_url(redis_server)
    with ServeServer(settings) as serve, httpx.Client(base_url=serve.base, timeout=90) as http:
        ops = Reader(http, product.name, ops_key)
        # Until serve has read the product and keys and materialized the view: 401, 403, 503.
        lsn, deadline = current_lsn(conn), time.monotonic() + 120
        while (response := ops.get("/rows", lsn)).status_code in (401, 403, 503):
            assert time.monotonic() < deadline, response.text
            time.sleep(0.1)
        assert response.status_code == 200, response.text
        yield {
            "conn": conn,
            "http": http,
            "base": serve.base,
            "ops": ops,
            "eu": Reader(http, product.name, eu_key),
            "view": view.name,
            "product": product.name,
            "conninfo": conninfo,
            "redis": client,
            "kafka": kafka,
            "unique": unique,
        }
    client.close()
    conn.close()


ROW_FIELDS = "id name email region balance doubled"


def gql_row(reader: Reader, key: int, lsn: int) -> dict[str, Any] | None:
    """The row by key over GraphQL, read-your-writes on ``lsn`` (null: not found)."""
    name = reader.product
    data = graphql(
        reader.http,
        reader.key,
        f"query($k: String!, $lsn: String) {{ row: {name}ByKey(key: $k, lsn: $lsn, "
        f"timeoutMs: {WAIT_MS}) {{ {ROW_FIELDS} }} }}",
        k=str(key),
        lsn=lsn_to_str(lsn),
    )
    row: dict[str, Any] | None = data["row"]
    return row


def gql_ids(reader: Reader, **condition: str) -> list[int]:
    """The ids of every row over GraphQL (filtered on ``region``), walking the pages."""
    name = reader.product
    where = ", ".join(f"{op}: {codec.dumps(v).decode()}" for op, v in condition.items())
    filter_ = f"filter: {{region: {{{where}}}}}, " if condition else ""
    ids: list[int] = []
    cursor: str | None = None
    for _ in range(100):
        data = graphql(
            reader.http,
            reader.key,
            f"query($c: String) {{ page: {name}({filter_}limit: 2, cursor: $c) "
            "{ rows { id } nextCursor } }",
            c=cursor,
        )
        ids += [r["id"] for r in data["page"]["rows"]]
        cursor = data["page"]["nextCursor"]
        if cursor is None:
            return ids
    raise AssertionError("pagination never ended")


def test_a_change_reaches_every_interface_and_a_delete_leaves_them_all(
    chain: dict[str, Any],
) -> None:
    conn, ops, eu = chain["conn"], chain["ops"], chain["eu"]
    view, conninfo, client, unique = (
        chain["view"],
        chain["conninfo"],
        chain["redis"],
        chain["unique"],
    )

    def settle_target() -> None:
        wait_served(chain["kafka"], [view], conninfo, client, unique)

    def in_redis(key: int) -> dict[str, Any] | None:
        return next((r for r in redis_view_rows(client, unique, view) if r["id"] == key), None)

    # The seed rows, as each role sees them.
    ann = {
        "id": 1,
        "name": "Ann",
        "email": "ann@example.com",
        "region": "EU",
        "balance": "10.00",
        "doubled": "20.00",
    }
    bob = {**ann, "id": 2, "name": "Bob", "email": "bob@example.com", "region": "US"}
    bob.update(balance="20.00", doubled="40.00")
    cid = {"id": 3, "name": "Cid", "email": None, "region": "EU", "balance": None, "doubled": None}
    assert ops.rows() == [ann, bob, cid]
    assert eu.rows() == [{**ann, "email": "***********.com"}, cid]
    assert gql_ids(ops) == [1, 2, 3] and gql_ids(eu) == [1, 3]

    with (
        EventStream(chain["base"], ops.product, ops.key) as ops_events,
        EventStream(chain["base"], eu.product, eu.key) as eu_events,
    ):
        # An insert: the first read-your-writes request shows it, by key and in the listing.
        conn.execute(
            "INSERT INTO accounts VALUES (10, 'Dee', 'dee@example.com', 'EU', 12.50), "
            "(11, 'Eve', 'eve@example.com', 'US', 7.25)"
        )
        lsn = current_lsn(conn)
        response = ops.row(10, lsn)
        assert response.status_code == 200, response.text
        dee = {
            "id": 10,
            "name": "Dee",
            "email": "dee@example.com",
            "region": "EU",
            "balance": "12.50",
            "doubled": "25.00",
        }
        eve = {**dee, "id": 11, "name": "Eve", "email": "eve@example.com", "region": "US"}
        eve.update(balance="7.25", doubled="14.50")
        assert response.json() == dee
        assert dee in ops.rows(lsn, region="EU")
        assert [r["id"] for r in ops.rows(lsn)] == [1, 2, 3, 10, 11]
        # The eu role: its rows only, the e-mail masked; a US row is not found.
        response = eu.row(10, lsn)
        assert response.status_code == 200, response.text
        assert response.json() == {**dee, "email": "***********.com"}
        assert eu.row(11, lsn).status_code == 404
        assert [r["id"] for r in eu.rows(lsn)] == [1, 3, 10]
        # GraphQL (read-your-writes as well), SSE, Redis, the target table.
        lsn = current_lsn(conn)
        assert gql_row(ops, 10, lsn) == dee
        assert gql_row(eu, 10, lsn) == {**dee, "email": "***********.com"}
        assert gql_row(eu, 11, lsn) is None
        assert gql_ids(ops, eq="EU") == [1, 3, 10] and gql_ids(eu) == [1, 3, 10]
        assert ops_events.changes_of({"id": 10}, 1) == [("upsert", dee)]
        assert ops_events.changes_of({"id": 11}, 1) == [("upsert", eve)]
        assert eu_events.changes_of({"id": 10}, 1) == [
            ("upsert", {**dee, "email": "***********.com"})
        ]
        assert in_redis(10) == dee
        settle_target()
        assert target_rows(conninfo, view)[10] == ("Dee", "dee@example.com", "EU", "12.50")

        # An update: everywhere the new values.
        conn.execute("UPDATE accounts SET balance = 99.99, email = 'dee@new.example' WHERE id = 10")
        lsn = current_lsn(conn)
        changed = {**dee, "email": "dee@new.example", "balance": "99.99", "doubled": "199.98"}
        eu_changed = {**changed, "email": "***********mple"}
        response = ops.row(10, lsn)
        assert response.status_code == 200, response.text
        assert response.json() == changed
        assert eu.row(10, lsn).json() == eu_changed
        assert changed in ops.rows(lsn)
        assert gql_row(ops, 10, lsn) == changed
        assert gql_row(eu, 10, lsn) == eu_changed
        assert ops_events.changes_of({"id": 10}, 2)[1:] == [("upsert", changed)]
        assert eu_events.changes_of({"id": 10}, 2)[1:] == [("upsert", eu_changed)]
        assert in_redis(10) == changed
        settle_target()
        assert target_rows(conninfo, view)[10] == ("Dee", "dee@new.example", "EU", "99.99")

        # An update that takes the row out of the eu role's filter: gone for eu only.
        conn.execute("UPDATE accounts SET region = 'US' WHERE id = 10")
        lsn = current_lsn(conn)
        assert eu.row(10, lsn).status_code == 404
        assert [r["id"] for r in eu.rows(lsn)] == [1, 3]
        moved = {**changed, "region": "US"}
        assert ops.row(10, lsn).json() == moved
        assert gql_row(eu, 10, lsn) is None
        assert gql_ids(eu) == [1, 3]
        assert ops_events.changes_of({"id": 10}, 3)[2:] == [("upsert", moved)]
        assert eu_events.changes_of({"id": 10}, 3)[2:] == [("delete", {"id": 10})]

        # A delete, and a row leaving the view by its WHERE: gone everywhere.
        conn.execute("DELETE FROM accounts WHERE id = 10")
        conn.execute("UPDATE accounts SET name = 'hidden' WHERE id = 11")
        lsn = current_lsn(conn)
        for reader in (ops, eu):
            response = reader.row(10, lsn)
            assert response.status_code == 404, response.text
            assert "no row with key '10'" in response.json()["detail"]
        assert ops.row(11).status_code == 404
        assert [r["id"] for r in ops.rows(lsn)] == [1, 2, 3]
        assert gql_row(ops, 10, lsn) is None and gql_row(ops, 11, lsn) is None
        assert gql_ids(ops) == [1, 2, 3]
        assert ops_events.changes_of({"id": 10}, 4)[3:] == [("delete", {"id": 10})]
        assert ops_events.changes_of({"id": 11}, 2) == [("upsert", eve), ("delete", {"id": 11})]
        # A change the eu role sees, committed after the others were applied (the REST reads
        # above waited for them): once eu's stream sent it, it has passed every earlier change.
        conn.execute("UPDATE accounts SET balance = 11.00 WHERE id = 1")
        assert eu_events.changes_of({"id": 1}, 1)[0][1]["balance"] == "11.00"
        assert ops_events.changes_of({"id": 1}, 1)[0][1]["balance"] == "11.00"
        assert len(eu_events.changes_of({"id": 10}, 3)) == 3  # nothing after its delete
        assert eu_events.changes_of({"id": 11}, 0) == []  # a row it never saw
        assert len(ops_events.changes_of({"id": 10}, 4)) == 4
        assert {e["event"] for e in ops_events.events + eu_events.events} <= {
            "live",
            "upsert",
            "delete",
        }
        assert in_redis(10) is None and in_redis(11) is None
        settle_target()
        assert sorted(target_rows(conninfo, view)) == [1, 2, 3]


def test_waiting_for_a_position_never_reached_is_a_504(chain: dict[str, Any]) -> None:
    ops, view = chain["ops"], chain["view"]
    future = "FFFFFFFF/FFFFFFF0"
    for path in ("/rows", "/rows/1"):
        response = ops.get(path, future, wait_ms=300)
        assert response.status_code == 504, response.text
        detail = response.json()["detail"]
        assert f"view {view!r} did not apply {future}" in detail, detail
        assert "within 300 ms" in detail, detail
    # The change stream refuses to start, with the same answer; GraphQL says it per field.
    response = ops.get("/changes", future, wait_ms=300)
    assert response.status_code == 504, response.text
    assert f"did not apply {future}" in response.json()["detail"]
    name = ops.product
    body = ops.http.post(
        "/graphql",
        headers=ops.headers,
        json={"query": f'{{ {name}ByKey(key: "1", lsn: "{future}", timeoutMs: 300) {{ id }} }}'},
    ).json()
    assert body["data"] == {f"{name}ByKey": None}
    (error,) = body["errors"]
    assert error["extensions"]["status"] == 504, error
    assert f"did not apply {future}" in error["message"], error
    # The same request with a position already applied answers at once.
    response = ops.get("/rows/1", lsn=current_lsn(chain["conn"]))
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Ann"
