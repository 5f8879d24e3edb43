"""A pipeline over a real workload: PostgreSQL -> ingest -> Kafka -> transform -> sink topics.

The pipeline reads ``orders`` (REPLICA IDENTITY FULL) and ``legacy_orders`` (DEFAULT), filters
out cancelled orders, merges the legacy ones in (union), enriches every row with its customer
(lookup join), casts ``code`` to an integer, masks the card (last 4 kept), the note (redacted)
and the customer's e-mail (HMAC-SHA256), and routes big orders and the others to two sink
topics. Random changes run on PostgreSQL, including a ``code`` that is not an integer (poison).

The expected sink records are computed from the change events ingest wrote, by a model of the
pipeline written here independently of transform's operators, applied in source commit order
(the looked-up table changes only between waits, so the order is the one transform saw). The
sinks must hold exactly those records, per key and in order; the poison events must be dead
letters with their node and reason while the events after them flowed; the status must count
what each node did.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from confluent_kafka import Consumer
from pydantic import SecretStr

from freshet.common import codec, topics
from freshet.common.kafka import consumer_config, produce_sync, read_to_end
from freshet.common.pipelines import PipelineSpec, compile_pipeline
from freshet.common.schemas import DataflowStatus, TableSchema
from freshet.common.secrets import SecretBox
from freshet.devstack.harness import ServiceThread, fold
from freshet.transform.config import TransformSettings
from freshet.transform.service import TransformService

SALT = "e2e-salt"
SCHEMA = """
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text);
CREATE TABLE orders (
    id int PRIMARY KEY, customer_id int, status text NOT NULL, amount numeric(10, 2),
    card text, code text, note text
);
ALTER TABLE orders REPLICA IDENTITY FULL;
CREATE TABLE legacy_orders (
    id int PRIMARY KEY, customer_id int, status text NOT NULL, amount numeric(10, 2),
    card text, code text, note text
);
"""
TABLES = ["public.customers", "public.orders", "public.legacy_orders"]
STATUSES = ["new", "paid", "sent", "cancelled"]


def nodes(unique: str, salt_encrypted: str) -> list[dict[str, Any]]:
    return [
        {"id": "src", "kind": "source", "source": unique, "tables": ["public.orders"]},
        {"id": "legacy", "kind": "source", "source": unique, "tables": ["legacy_orders"]},
        {"id": "live", "kind": "filter", "inputs": ["src"], "where": "status <> 'cancelled'"},
        {"id": "both", "kind": "union", "inputs": ["live", "legacy"]},
        {
            "id": "who",
            "kind": "lookup",
            "inputs": ["both"],
            "table": f"{unique}.public.customers",
            "on": {"id": "customer_id"},
            "fields": ["name", "email"],
            "prefix": "customer_",
        },
        {"id": "typed", "kind": "cast", "inputs": ["who"], "fields": {"code": "integer"}},
        {
            "id": "hide",
            "kind": "mask",
            "inputs": ["typed"],
            "salt_encrypted": salt_encrypted,
            "fields": {
                "card": {"method": "keep_last", "keep": 4},
                "note": {"method": "redact"},
                "customer_email": {"method": "hash"},
            },
        },
        {
            "id": "split",
            "kind": "route",
            "inputs": ["hide"],
            "routes": [{"name": "big", "where": "amount >= 100"}],
            "default": "small",
        },
        {"id": "to_big", "kind": "sink", "inputs": ["split.big"], "topic": f"{unique}.orders.big"},
        {
            "id": "to_small",
            "kind": "sink",
            "inputs": ["split.small"],
            "topic": f"{unique}.orders.small",
        },
    ]


# --- the model ---------------------------------------------------------------------------------


class Poison(Exception):
    pass


class Model:
    """What the pipeline must write, from the input events in commit order."""

    def __init__(self) -> None:
        self.customers: dict[int, dict[str, Any]] = {}
        self.sinks: dict[str, dict[tuple[bytes, str], list[Any]]] = {"big": {}, "small": {}}
        self.dead: list[tuple[bytes, str]] = []
        self.counts = {"src": 0, "legacy": 0, "big": 0, "small": 0}
        self.cases = {"entered": 0, "left": 0, "moved": 0, "broadcast": 0}

    def apply(self, table: str, key: bytes, value: dict[str, Any]) -> None:
        op, before, after = value["op"], value["before"], value["after"]
        if table == "customers":
            cid = codec.loads(key)["id"]
            if op == "d":
                self.customers.pop(cid, None)
            else:
                self.customers[cid] = after
            return
        self.counts["src" if table == "orders" else "legacy"] += 1
        changes = [(op, before, after)]
        if table == "orders":
            changes = self._filter(op, before, after)
        try:
            mapped = [(o, self._row(b), self._row(a)) for o, b, a in changes]
        except Poison:
            self.dead.append((key, "typed"))
            return
        partial = table == "legacy_orders" and op == "d"  # DEFAULT identity: key-only before
        for o, b, a in mapped:
            for port, change in self._route(o, b, a, partial):
                self._write(port, key, value, change)

    def _filter(self, op: str, before: Any, after: Any) -> list[tuple[str, Any, Any]]:
        def keep(row: Any) -> bool:
            return row["status"] != "cancelled"

        if op in ("c", "r"):
            return [(op, before, after)] if keep(after) else []
        if op == "d":
            return [(op, before, after)] if keep(before) else []
        was, now = keep(before), keep(after)
        if was and now:
            return [(op, before, after)]
        if now:
            self.cases["entered"] += 1
            return [("c", None, after)]
        if was:
            self.cases["left"] += 1
            return [("d", before, None)]
        return []

    def _row(self, row: dict[str, Any] | None) -> dict[str, Any] | None:
        if row is None:
            return None
        out = dict(row)
        customer = (
            self.customers.get(row["customer_id"]) if row["customer_id"] is not None else None
        )
        out["customer_name"] = customer["name"] if customer else None
        out["customer_email"] = customer["email"] if customer else None
        if out["code"] is not None:
            text = out["code"].strip()
            if not text.lstrip("+-").isdigit():
                raise Poison
            out["code"] = int(text)
        if out["card"] is not None:
            out["card"] = "*" * max(len(out["card"]) - 4, 0) + out["card"][-4:]
        if out["note"] is not None:
            out["note"] = "***"
        if out["customer_email"] is not None:
            out["customer_email"] = hmac.new(
                SALT.encode(), out["customer_email"].encode(), hashlib.sha256
            ).hexdigest()
        return out

    @staticmethod
    def _port(row: dict[str, Any]) -> str:
        return "big" if row["amount"] is not None and Decimal(row["amount"]) >= 100 else "small"

    def _route(
        self, op: str, before: Any, after: Any, partial: bool
    ) -> list[tuple[str, tuple[str, Any, Any]]]:
        if op == "d":
            if partial:
                self.cases["broadcast"] += 1
                return [("big", (op, before, after)), ("small", (op, before, after))]
            return [(self._port(before), (op, before, after))]
        new = self._port(after)
        if op != "u" or before is None or self._port(before) == new:
            return [(new, (op, before, after))]
        self.cases["moved"] += 1
        return [(self._port(before), ("d", before, None)), (new, ("c", None, after))]

    def _write(
        self, port: str, key: bytes, value: dict[str, Any], change: tuple[str, Any, Any]
    ) -> None:
        op, before, after = change
        records = self.sinks[port].setdefault((key, value["source"]["table"]), [])
        records.append({**value, "op": op, "before": before, "after": after})
        self.counts[port] += 1
        if op == "d":
            records.append(None)


# --- the test ----------------------------------------------------------------------------------


def _describe(diff: dict[Any, tuple[Any, Any]]) -> str:
    """Per key that differs: the records written and the records expected (op, id, amount)."""

    def short(records: Any) -> Any:
        if records is None:
            return None
        return [
            None
            if r is None
            else (
                r["op"],
                r["source"]["table"],
                r["source"]["lsn"],
                (r["after"] or r["before"] or {}).get("amount"),
            )
            for r in records
        ]

    return "\n".join(
        f"{k!r}: got {short(g)}\n   want {short(w)}" for k, (g, w) in list(diff.items())[:5]
    )


def current_lsn(conn: Any) -> int:
    text = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def read(bootstrap: str, topic: str) -> list[tuple[bytes, Any]]:
    consumer = Consumer(consumer_config(bootstrap, f"read-{uuid.uuid4().hex}"))
    try:
        return [
            (m.key() or b"", None if m.value() is None else codec.loads(m.value()))
            for m in read_to_end(consumer, topic)
        ]
    finally:
        consumer.close()


def by_key(records: list[tuple[bytes, Any]]) -> dict[tuple[bytes, str], list[Any]]:
    """A sink's records per (key, source table), in order.

    Order is kept per key of one input table; ``orders`` and ``legacy_orders`` share ids, and
    how the union interleaves two tables' records of one key depends on what each fetch
    brought. A tombstone belongs with the delete just before it.
    """
    out: dict[tuple[bytes, str], list[Any]] = {}
    last: dict[bytes, str] = {}
    for key, value in records:
        k = canonical_key(key)
        if value is not None:
            last[k] = value["source"]["table"]
        out.setdefault((k, last[k]), []).append(value)
    return out


def canonical_key(key: bytes) -> bytes:
    return codec.dumps(codec.loads(key))


def wait_pipeline(
    bootstrap: str, name: str, source: str, lsn: int, timeout: float = 120.0
) -> DataflowStatus:
    """The pipeline's status once it reports ``applied[source] >= lsn``."""
    deadline = time.monotonic() + timeout
    last: DataflowStatus | None = None
    while time.monotonic() < deadline:
        for key, value in read(bootstrap, topics.STATUS):
            if key == topics.status_key("pipeline", name).encode() and value is not None:
                last = DataflowStatus.model_validate(value)
        if last is not None and last.applied.get(source, -1) >= lsn:
            return last
        time.sleep(0.3)
    raise AssertionError(f"pipeline {name} did not apply {lsn}: {last}")


@pytest.fixture
def transform(
    transform_settings: TransformSettings, secret_key: SecretStr
) -> Iterator[ServiceThread]:
    """Transform with the deployment's key (it decrypts the mask salt)."""
    settings = transform_settings.model_copy(update={"secret_key": secret_key})
    service = ServiceThread(TransformService(settings, "test").run).start()
    yield service
    service.shutdown()


class Workload:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def amount(self) -> Decimal | None:
        r = self.rng
        return None if r.random() < 0.1 else Decimal(r.randint(5000, 15000)) / 100

    def code(self) -> str | None:
        r = self.rng
        return r.choice([None, str(r.randint(0, 999)), f" {r.randint(0, 99)} "])

    def row(self, oid: int) -> tuple[Any, ...]:
        r = self.rng
        card = "".join(r.choice("0123456789") for _ in range(r.choice([3, 16])))
        return (
            oid,
            r.choice([None, 1, 2, 3, 4]),
            r.choice(STATUSES),
            self.amount(),
            card,
            self.code(),
            r.choice([None, "call me"]),
        )

    def step(self, conn: Any) -> None:
        r = self.rng
        table = "orders" if r.random() < 0.75 else "legacy_orders"
        oid = r.randint(1, 12)
        roll = r.random()
        with conn.transaction():
            if roll < 0.35:
                conn.execute(
                    f"INSERT INTO {table} VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    self.row(oid),
                )
            elif roll < 0.6:
                conn.execute(f"UPDATE {table} SET amount = %s WHERE id = %s", (self.amount(), oid))
            elif roll < 0.8:
                conn.execute(
                    f"UPDATE {table} SET status = %s, code = %s WHERE id = %s",
                    (r.choice(STATUSES), self.code(), oid),
                )
            else:
                conn.execute(f"DELETE FROM {table} WHERE id = %s", (oid,))


def test_a_pipeline_writes_exactly_the_transformed_events(
    kafka, pg_database, control, ingest, transform, unique, secret_key
):
    conn = pg_database.connect()
    conn.execute(SCHEMA)
    conn.execute(
        "INSERT INTO customers VALUES (1, 'Ada', 'ada@example.com'), (2, 'Bo', NULL), (3, 'Cy', 'cy@example.com')"
    )
    control.add_source(pg_database, unique, TABLES)
    catalog_tables = {f"{unique}.{t}" for t in TABLES}
    control.catalog(catalog_tables)
    schemas = [
        TableSchema.model_validate(v) for v in fold(kafka.bootstrap, topics.SCHEMAS).values()
    ]
    salt = SecretBox(secret_key).encrypt(SecretStr(SALT))
    spec = PipelineSpec.model_validate({"name": unique, "nodes": nodes(unique, salt)})
    compile_pipeline(spec, schemas, [unique])  # what control checks before writing
    produce_sync(
        control.producer,
        topics.CONTROL_PIPELINES,
        unique.encode(),
        codec.dumps(spec.model_dump(mode="json")),
    )
    wait_pipeline(kafka.bootstrap, unique, unique, current_lsn(conn))  # the customers are loaded

    work = Workload(random.randrange(1 << 30))
    for _ in range(300):
        work.step(conn)
    # each case of the row semantics at least once, whatever the random steps did
    conn.execute("INSERT INTO orders VALUES (80, 2, 'new', 150.00, '1234', '1', NULL)")
    conn.execute("UPDATE orders SET status = 'cancelled' WHERE id = 80")  # leaves the filter
    conn.execute("UPDATE orders SET status = 'paid', amount = 50 WHERE id = 80")  # enters, small
    conn.execute("UPDATE orders SET amount = 500 WHERE id = 80")  # moves to big
    conn.execute("INSERT INTO legacy_orders VALUES (80, 1, 'new', 10.00, NULL, NULL, NULL)")
    conn.execute("DELETE FROM legacy_orders WHERE id = 80")  # key-only before: every route
    # a poison value, then more events of the same row and others
    conn.execute("INSERT INTO orders VALUES (90, 1, 'new', 120.00, '4111111111111111', 'x1', NULL)")
    conn.execute("UPDATE orders SET code = '7' WHERE id = 90")  # its before image is still poison
    conn.execute("UPDATE orders SET amount = 20.00 WHERE id = 90")  # now fine: moves to small
    conn.execute("INSERT INTO orders VALUES (91, 3, 'paid', 250.00, '5500000000000004', '12', 'x')")
    wait_pipeline(kafka.bootstrap, unique, unique, current_lsn(conn))

    # the looked-up table changes; later events see the new row
    conn.execute("UPDATE customers SET name = 'Ada L.', email = 'ada@lovelace.org' WHERE id = 1")
    wait_pipeline(kafka.bootstrap, unique, unique, current_lsn(conn))
    conn.execute("UPDATE orders SET note = 'later' WHERE id = 90")
    conn.execute("INSERT INTO orders VALUES (92, 1, 'new', 500.00, NULL, NULL, NULL)")
    status = wait_pipeline(kafka.bootstrap, unique, unique, current_lsn(conn))

    # The model, over the change events ingest wrote, in commit order.
    inputs = []
    for table in ("customers", "orders", "legacy_orders"):
        for key, value in read(kafka.bootstrap, topics.cdc_topic(unique, "public", table)):
            if value is not None:
                src = value["source"]
                inputs.append(
                    (
                        (src["commit_lsn"], -1 if value["op"] == "r" else src["lsn"]),
                        table,
                        key,
                        value,
                    )
                )
    inputs.sort(key=lambda item: item[0])
    model = Model()
    for _pos, table, key, value in inputs:
        model.apply(table, canonical_key(key), value)

    # a real workload, that made rows enter and leave the filter and move between the routes
    assert model.counts["big"] > 10 and model.counts["small"] > 10, model.counts
    assert all(n > 0 for n in model.cases.values()), (model.cases, model.counts, len(inputs))
    big = by_key(read(kafka.bootstrap, f"{unique}.orders.big"))
    small = by_key(read(kafka.bootstrap, f"{unique}.orders.small"))
    for got, want in ((big, model.sinks["big"]), (small, model.sinks["small"])):
        diff = {
            k: (got.get(k), want.get(k)) for k in set(got) | set(want) if got.get(k) != want.get(k)
        }
        assert not diff, _describe(diff)

    after_92 = big[(canonical_key(b'{"id":92}'), "orders")][0]["after"]
    assert after_92["customer_name"] == "Ada L."
    assert (
        after_92["customer_email"]
        == hmac.new(SALT.encode(), b"ada@lovelace.org", hashlib.sha256).hexdigest()
    )
    later = small[(canonical_key(b'{"id":90}'), "orders")][-1]["after"]
    assert later["note"] == "***"  # the row flowed again after its poison events

    letters = read(kafka.bootstrap, topics.dlq_topic(unique))
    assert sorted((canonical_key(k), v["node"]) for k, v in letters) == sorted(model.dead)
    poison = [v for k, v in letters if canonical_key(k) == canonical_key(b'{"id":90}')]
    assert [v["error"] for v in poison[:2]] == ['invalid input syntax for type integer: "x1"'] * 2
    assert codec.loads(poison[0]["value"])["after"]["code"] == "x1"  # the original event

    nodes_ = status.nodes
    assert status.state == "running" and status.kind == "pipeline"
    assert nodes_["src"].events_in == model.counts["src"]
    assert nodes_["legacy"].events_in == model.counts["legacy"]
    assert nodes_["to_big"].events_out == model.counts["big"]
    assert nodes_["to_small"].events_out == model.counts["small"]
    assert nodes_["_dlq"].events_in == len(model.dead) >= 2
    assert nodes_["live"].events_in == model.counts["src"] >= nodes_["live"].events_out
    assert status.freshness_ms is not None and status.lag == 0


def test_a_pipeline_that_cannot_run_reports_error_and_a_deleted_one_goes(
    kafka, control, transform, unique
):
    spec = PipelineSpec.model_validate(
        {
            "name": unique,
            "nodes": [
                {"id": "src", "kind": "source", "source": unique, "tables": ["orders"]},
                {"id": "out", "kind": "sink", "inputs": ["src"], "topic": f"{unique}.out"},
            ],
        }
    )
    produce_sync(
        control.producer,
        topics.CONTROL_PIPELINES,
        unique.encode(),
        codec.dumps(spec.model_dump(mode="json")),
    )
    key = topics.status_key("pipeline", unique).encode()
    deadline = time.monotonic() + 60
    status = None
    while time.monotonic() < deadline:
        found = [v for k, v in read(kafka.bootstrap, topics.STATUS) if k == key]
        status = DataflowStatus.model_validate(found[-1]) if found and found[-1] else None
        if status is not None and status.state == "error":
            break
        time.sleep(0.3)
    assert status is not None and status.state == "error", status
    assert status.kind == "pipeline" and status.reason is not None
    assert "does not compile against the captured tables" in status.reason
    assert f"source {unique!r} has published no captured tables yet" in status.reason

    produce_sync(control.producer, topics.CONTROL_PIPELINES, unique.encode(), None)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = [v for k, v in read(kafka.bootstrap, topics.STATUS) if k == key]
        if found and found[-1] is None:
            break
        time.sleep(0.3)
    else:
        raise AssertionError("the deleted pipeline's status was not removed")
