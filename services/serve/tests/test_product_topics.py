"""Products published as Kafka topics, against the real broker and Redis.

The view topic is written here as transform writes it (key = the key JSON, value = the row JSON
or a tombstone, the ``freshet.applied`` header); the product topic is folded as any consumer
would and compared with what the product's topic role sees, computed here from the rows.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
import redis
from confluent_kafka import Consumer, Producer
from fastapi.testclient import TestClient
from pydantic import SecretStr

from freshet.common import codec, topics
from freshet.common.exceptions import KafkaError
from freshet.common.kafka import (
    consumer_config,
    ensure_topics,
    produce_sync,
    producer_config,
    read_to_end,
)
from freshet.common.pipelines.spec import MaskRule
from freshet.common.products import ProductRole, ProductSpec
from freshet.common.schemas import OutputColumn
from freshet.common.secrets import SecretBox
from freshet.common.topics import COMPACTED, TopicSpec
from freshet.devstack.harness import ServiceThread, fold
from freshet.serve.app import create_app
from freshet.serve.config import ServeSettings
from freshet.serve.publish import ProductPublishing, ProgressStore, progress_key
from freshet.serve.service import ServeService

SALT = "salt-of-the-test"
REGIONS = ("eu", "us", "apac")
COLUMNS = {"id": "int4", "region": "text", "amount": "int4", "email": "text", "note": "text"}
FIELDS = ("id", "region", "amount", "email")  # "note" is a column of the view, not exposed

ANALYST = ProductRole(
    row_filter="region = 'eu'", masks={"email": MaskRule(method="hash")}
)  # sees the EU rows, emails hashed
SUPPORT = ProductRole(masks={"email": MaskRule(method="keep_last", keep=4)})  # every row
BIG = ProductRole(row_filter="amount > 50")  # the rows with a large amount, unmasked


class Harness:
    """One test's view topic(s), product and serve settings of its own."""

    def __init__(self, bootstrap: str, redis_url: str) -> None:
        self.bootstrap = bootstrap
        self.unique = uuid.uuid4().hex[:8]
        self.secret_key = SecretStr(SecretBox.generate_key())
        self.box = SecretBox(self.secret_key)
        self.salt_encrypted = self.box.encrypt(SecretStr(SALT))
        self.product = f"p_{self.unique}"
        self.view = f"v_{self.unique}"
        self.topic = topics.product_topic(self.product)
        self.producer = Producer(producer_config(bootstrap))
        self.redis = redis.Redis.from_url(redis_url)
        self.redis_url = redis_url
        self.rows: dict[str, dict[str, dict[str, Any]]] = {}
        """Per view, the fold of its topic: key JSON text -> row."""
        self.lsn = 0
        ensure_topics(bootstrap, topics.control_topics(3))

    def settings(self) -> ServeSettings:
        return ServeSettings(
            kafka_bootstrap=self.bootstrap,
            redis_url=self.redis_url,
            serve_redis_prefix=f"test:{self.unique}",
            serve_group=f"serve-{self.unique}",
            secret_key=self.secret_key,
            serve_retry_initial_s=0.2,
            serve_retry_max_s=0.5,
            serve_batch_max=40,
            topic_partitions=3,
        )

    # --- the view topic, as transform writes it ----------------------------------------------

    def write(self, view: str, changes: list[tuple[int, dict[str, Any] | None]]) -> None:
        """Write rows (None: a tombstone) of keys ``{"id": n}`` to the view's topic."""
        topic = topics.view_topic(view)
        ensure_topics(self.bootstrap, [TopicSpec(topic, 3, COMPACTED)])
        held = self.rows.setdefault(view, {})
        for key_id, row in changes:
            self.lsn += 1
            key = orjson.dumps({"id": key_id})
            value = None if row is None else orjson.dumps(row)
            self.producer.produce(
                topic,
                key=key,
                value=value,
                headers=[(topics.APPLIED_HEADER, orjson.dumps({"src": self.lsn}))],
            )
            if row is None:
                held.pop(key.decode(), None)
            else:
                held[key.decode()] = row
            self.producer.poll(0)
        assert self.producer.flush(30) == 0

    def random_changes(
        self, r: random.Random, count: int, keys: int
    ) -> list[tuple[int, dict[str, Any] | None]]:
        """Upserts that move rows in and out of the EU and across amounts; some deletes."""
        out: list[tuple[int, dict[str, Any] | None]] = []
        for _ in range(count):
            key_id = r.randint(1, keys)
            if r.random() < 0.15:
                out.append((key_id, None))
                continue
            row = {
                "id": key_id,
                "region": r.choice(REGIONS),
                "amount": r.randint(0, 100),
                "email": None if r.random() < 0.1 else f"user{r.randint(1, 999)}@example.com",
                "note": f"n{r.randint(0, 9)}",
            }
            out.append((key_id, row))
        return out

    # --- the product -------------------------------------------------------------------------

    def publish(
        self,
        role: str,
        roles: dict[str, ProductRole],
        generation: int = 1,
        view: str | None = None,
        publish_topic: bool = True,
    ) -> ProductSpec:
        spec = ProductSpec(
            name=self.product,
            view=view or self.view,
            fields=FIELDS,
            key=("id",),
            columns=tuple(OutputColumn(name=f, type=COLUMNS[f]) for f in FIELDS),
            roles=roles,
            publish_topic=publish_topic,
            topic_role=role,
            hash_salt_encrypted=self.salt_encrypted,
            generation=generation,
        )
        produce_sync(
            self.producer,
            topics.CONTROL_PRODUCTS,
            spec.name.encode(),
            codec.dumps(spec.model_dump(mode="json")),
        )
        return spec

    def delete(self) -> None:
        produce_sync(self.producer, topics.CONTROL_PRODUCTS, self.product.encode(), None)

    def expected(self, view: str, role: ProductRole) -> dict[str, dict[str, Any]]:
        """What the product topic must fold to: the role's rows, fields and masks."""
        out: dict[str, dict[str, Any]] = {}
        for key, row in self.rows.get(view, {}).items():
            if role.row_filter == "region = 'eu'" and row["region"] != "eu":
                continue
            if role.row_filter == "amount > 50" and not row["amount"] > 50:
                continue
            seen = {f: row[f] for f in FIELDS}
            email, rule = seen["email"], role.masks.get("email")
            if email is not None and rule is not None:
                if rule.method == "hash":
                    seen["email"] = hmac.new(
                        SALT.encode(), email.encode(), hashlib.sha256
                    ).hexdigest()
                else:
                    seen["email"] = "*" * (len(email) - 4) + email[-4:]
            out[key] = seen
        return out

    def folded(self) -> dict[str, Any] | None:
        """The product topic folded; None while it does not exist."""
        try:
            return fold(self.bootstrap, self.topic)
        except KafkaError as exc:
            if "does not exist" not in str(exc):
                raise
            return None

    def wait_for_fold(self, expected: dict[str, dict[str, Any]], timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        got = None
        while time.monotonic() < deadline:
            got = self.folded()
            if got == expected:
                return
            time.sleep(0.3)
        assert got == expected

    def close(self) -> None:
        self.delete()
        self.producer.flush(5)
        self.redis.close()


@pytest.fixture
def harness(kafka: Any, redis_server: str) -> Iterator[Harness]:
    h = Harness(kafka.bootstrap, redis_server)
    yield h
    h.close()


def _publishing(h: Harness) -> tuple[ProductPublishing, ServiceThread]:
    client = redis.Redis.from_url(h.redis_url)
    publishing = ProductPublishing(h.settings(), client)
    return publishing, ServiceThread(publishing.run).start()


def _wait(condition: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _records(bootstrap: str, topic: str) -> list[tuple[int, bytes, bytes | None, dict[str, Any]]]:
    """Every record of ``topic``: (partition, key, value, headers)."""
    consumer = Consumer(consumer_config(bootstrap, f"records-{uuid.uuid4().hex}"))
    try:
        return [
            (msg.partition() or 0, msg.key() or b"", msg.value(), dict(msg.headers() or []))
            for msg in read_to_end(consumer, topic)
        ]
    finally:
        consumer.close()


def _last_per_key(
    records: list[tuple[int, bytes, bytes | None, dict[str, Any]]],
) -> dict[bytes, tuple[int, dict[str, Any]]]:
    return {key: (partition, headers) for partition, key, _value, headers in records}


def test_a_product_topic_folds_to_what_its_role_sees(harness: Harness) -> None:
    h = harness
    r = random.Random(7)
    h.write(h.view, h.random_changes(r, 400, 60))
    h.publish("analyst", {"analyst": ANALYST, "support": SUPPORT})
    publishing, thread = _publishing(h)
    try:
        expected = h.expected(h.view, ANALYST)
        assert expected and len(expected) < len(h.rows[h.view])  # the filter hides some rows
        h.wait_for_fold(expected)

        # Rows that leave the EU, rows deleted, rows entering: tombstones and values.
        eu = [int(orjson.loads(k)["id"]) for k in expected]
        moves: list[tuple[int, dict[str, Any] | None]] = [
            (eu[0], {**h.rows[h.view][orjson.dumps({"id": eu[0]}).decode()], "region": "us"}),
            (eu[1], None),
            (999, {"id": 999, "region": "eu", "amount": 1, "email": "new@x.org", "note": "x"}),
        ]
        h.write(h.view, moves)
        expected = h.expected(h.view, ANALYST)
        assert orjson.dumps({"id": eu[0]}).decode() not in expected
        assert '{"id":999}' in expected
        h.wait_for_fold(expected)
        assert all(set(row) == set(FIELDS) for row in (h.folded() or {}).values())

        # Same keys and partitions as the view topic; the last header of each key copied.
        view_last = _last_per_key(_records(h.bootstrap, topics.view_topic(h.view)))
        product_records = _records(h.bootstrap, h.topic)
        assert {key for _p, key, _v, _h in product_records} == set(view_last)
        assert _last_per_key(product_records) == view_last
        # Both a value and a tombstone for the row that left the EU.
        left = orjson.dumps({"id": eu[0]})
        kinds = [v is None for _p, k, v, _h in product_records if k == left]
        assert kinds[-1] is True and False in kinds

        _wait(lambda: publishing.describe()[h.product]["state"] == "publishing")
        described = publishing.describe()[h.product]
        assert described["topic"] == h.topic
        assert described["role"] == "analyst"
        assert described["published"] == len(product_records)
        assert described["lag"] == 0
    finally:
        thread.shutdown()


def test_a_restarted_publisher_resumes_without_losing_or_rereading(harness: Harness) -> None:
    h = harness
    r = random.Random(11)
    h.write(h.view, h.random_changes(r, 300, 50))
    h.publish("support", {"analyst": ANALYST, "support": SUPPORT})
    publishing, thread = _publishing(h)
    try:
        h.wait_for_fold(h.expected(h.view, SUPPORT))
        _wait(lambda: publishing.describe()[h.product]["state"] == "publishing")
    finally:
        thread.shutdown()
    progress = h.redis.hgetall(progress_key(h.settings().serve_redis_prefix, h.product))
    assert progress[b"complete"] == b"1"
    assert sum(int(v) for k, v in progress.items() if k.startswith(b"p")) == 300

    # Written while no publisher runs: the next one resumes from the saved offsets.
    more = h.random_changes(r, 120, 50)
    h.write(h.view, more)
    publishing, thread = _publishing(h)
    try:
        h.wait_for_fold(h.expected(h.view, SUPPORT))
        _wait(lambda: publishing.describe().get(h.product, {}).get("published") == len(more))
        assert publishing.describe()[h.product]["published"] == len(more)
    finally:
        thread.shutdown()


def test_a_new_rule_republishes_and_a_deleted_product_empties_its_topic(
    harness: Harness,
) -> None:
    h = harness
    r = random.Random(13)
    h.write(h.view, h.random_changes(r, 300, 50))
    roles = {"analyst": ANALYST, "support": SUPPORT, "big": BIG}
    h.publish("analyst", roles)
    publishing, thread = _publishing(h)
    prefix = h.settings().serve_redis_prefix
    try:
        h.wait_for_fold(h.expected(h.view, ANALYST))

        # Another role for the topic: every row, emails kept to their last 4 characters.
        h.publish("support", roles, generation=2)
        h.wait_for_fold(h.expected(h.view, SUPPORT))

        # A narrower role: the rows it hides are tombstoned.
        h.publish("big", roles, generation=3)
        expected = h.expected(h.view, BIG)
        assert len(expected) < len(h.expected(h.view, SUPPORT))
        h.wait_for_fold(expected)

        # Another view with other keys: the keys of the first view are tombstoned.
        other = f"w_{h.unique}"
        rows = list(h.rows[h.view].values())[:20]
        h.write(other, [(1000 + i, {**row, "id": 1000 + i}) for i, row in enumerate(rows)])
        h.publish("big", roles, generation=4, view=other)
        expected = h.expected(other, BIG)
        assert expected and not set(expected) & set(h.rows[h.view])
        h.wait_for_fold(expected)
        _wait(lambda: publishing.describe()[h.product].get("state") == "publishing")
        assert h.redis.exists(progress_key(prefix, h.product))

        # No longer published: the topic folds to nothing and the progress is gone.
        h.publish("big", roles, generation=5, view=other, publish_topic=False)
        h.wait_for_fold({})
        _wait(lambda: not h.redis.exists(progress_key(prefix, h.product)))
        assert h.product not in publishing.describe()

        # Published again, then deleted.
        h.publish("support", roles, generation=6)
        h.wait_for_fold(h.expected(h.view, SUPPORT))
        h.delete()
        h.wait_for_fold({})
        _wait(lambda: not h.redis.exists(progress_key(prefix, h.product)))
    finally:
        thread.shutdown()


def test_a_product_gone_while_no_replica_ran_has_its_topic_emptied(harness: Harness) -> None:
    h = harness
    prefix = h.settings().serve_redis_prefix
    h.write(h.view, h.random_changes(random.Random(17), 100, 30))
    h.publish("support", {"support": SUPPORT})
    _, thread = _publishing(h)
    try:
        h.wait_for_fold(h.expected(h.view, SUPPORT))
    finally:
        thread.shutdown()
    h.delete()
    assert h.redis.exists(progress_key(prefix, h.product))

    # A product whose tombstone compaction removed: only the progress this deployment holds
    # says that it published the topic.
    orphan = f"o_{h.unique}"
    orphan_topic = topics.product_topic(orphan)
    ensure_topics(h.bootstrap, [TopicSpec(orphan_topic, 3, COMPACTED)])
    for i in range(5):
        produce_sync(h.producer, orphan_topic, orjson.dumps({"id": i}), b'{"id": 1}')
    ProgressStore(h.redis, prefix, orphan).begin("some rule")
    assert len(fold(h.bootstrap, orphan_topic)) == 5

    _, thread = _publishing(h)
    try:
        h.wait_for_fold({})
        _wait(lambda: not h.redis.exists(progress_key(prefix, h.product)))
        _wait(lambda: not h.redis.exists(progress_key(prefix, orphan)))
        assert fold(h.bootstrap, orphan_topic) == {}
    finally:
        thread.shutdown()


def test_a_topic_role_that_is_not_a_role_is_reported(harness: Harness) -> None:
    h = harness
    h.write(h.view, h.random_changes(random.Random(19), 20, 10))
    h.publish("auditor", {"support": SUPPORT})
    publishing, thread = _publishing(h)
    try:
        _wait(lambda: publishing.describe().get(h.product, {}).get("state") == "error")
        assert "auditor" in publishing.describe()[h.product]["error"]
    finally:
        thread.shutdown()
    assert h.folded() is None  # nothing published, not even the topic


def test_health_and_metrics_show_the_published_products(harness: Harness) -> None:
    h = harness
    changes = h.random_changes(random.Random(23), 50, 20)
    deletes = sum(1 for _key, row in changes if row is None)
    assert 0 < deletes < 50
    h.write(h.view, changes)
    h.publish("support", {"support": SUPPORT})
    settings = h.settings()
    with TestClient(create_app(settings, ServeService(settings, "test"))) as client:
        h.wait_for_fold(h.expected(h.view, SUPPORT))

        def published() -> dict[str, Any]:
            product: dict[str, Any] = client.get("/health").json()["products"].get(h.product, {})
            return product

        _wait(lambda: published().get("lag") == 0 and published().get("published") == 50)
        assert published() == {
            "generation": 1,
            "topic": h.topic,
            "role": "support",
            "state": "publishing",
            "published": 50,
            "lag": 0,
        }
        metrics = client.get("/metrics").text
        values = f'freshet_serve_product_records_total{{kind="value",product="{h.product}"}}'
        tombstones = values.replace('"value"', '"tombstone"')
        counted = {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("freshet_serve_product_records_total{")
        }
        # The support role sees every row: a value per row written, a tombstone per delete.
        assert (counted[values], counted[tombstones]) == (50 - deletes, deletes)
