"""What control writes to Kafka, and what it reads back from it (status, other replicas)."""

from __future__ import annotations

from confluent_kafka import Producer
from pydantic import SecretStr

from freshet.common import codec, topics
from freshet.common.kafka import produce_sync, producer_config
from freshet.common.schemas import PostgresSourceSpec, SourceStatus
from freshet.common.secrets import SecretBox


def test_specs_are_on_the_compacted_topic_with_the_password_encrypted(
    client, auth, source_body, unique, secret_key, records_of
):
    body = source_body()
    assert client.post("/v1/sources", json=body, headers=auth).status_code == 201
    put = client.put(f"/v1/sources/{unique}", json=source_body(port=6543), headers=auth)
    assert put.status_code == 200

    records = records_of(topics.CONTROL_SOURCES, unique)
    assert len(records) == 2
    for raw in records:
        assert raw is not None
        assert body["password"].encode() not in raw
        assert b'"password"' not in raw
    first, second = (PostgresSourceSpec.model_validate(codec.loads(r)) for r in records)
    assert (first.generation, second.generation) == (1, 2)
    assert (first.port, second.port) == (5432, 6543)
    assert second.tables == ("public.orders", "public.customers")
    assert second.slot_name == second.publication_name == f"freshet_{unique}"
    box = SecretBox(SecretStr(secret_key))
    for spec in (first, second):
        assert spec.password_encrypted
        assert box.decrypt(spec.password_encrypted).get_secret_value() == body["password"]

    assert client.delete(f"/v1/sources/{unique}", headers=auth).status_code == 204
    records = records_of(topics.CONTROL_SOURCES, unique)
    assert len(records) == 3
    assert records[-1] is None


def test_a_put_without_password_keeps_the_encrypted_one(
    client, auth, source_body, unique, secret_key, records_of
):
    body = source_body()
    assert client.post("/v1/sources", json=body, headers=auth).status_code == 201
    put = client.put(f"/v1/sources/{unique}", json=source_body(password=...), headers=auth)
    assert put.status_code == 200
    raw = records_of(topics.CONTROL_SOURCES, unique)[-1]
    spec = PostgresSourceSpec.model_validate(codec.loads(raw))
    box = SecretBox(SecretStr(secret_key))
    assert spec.generation == 2
    assert box.decrypt(spec.password_encrypted).get_secret_value() == body["password"]


def test_the_status_ingest_reports_is_shown(kafka, client, auth, source_body, unique, wait_for):
    assert client.post("/v1/sources", json=source_body(), headers=auth).status_code == 201
    status = SourceStatus(
        name=unique, state="streaming", generation=1, lsn="0/16B3748", events=42, instance="i1"
    )
    producer = Producer(producer_config(kafka.bootstrap))
    key = topics.status_key("source", unique).encode()
    produce_sync(producer, topics.STATUS, key, codec.dumps(status.model_dump(mode="json")))

    def shown():
        got = client.get(f"/v1/sources/{unique}", headers=auth).json()["status"]
        return got if got["state"] != "pending" else None

    assert wait_for(shown) == status.model_dump(mode="json")
    listed = client.get("/v1/sources", headers=auth).json()["sources"]
    assert [s["status"]["state"] for s in listed if s["name"] == unique] == ["streaming"]

    # A record control cannot read is reported as pending, not as an error of the API.
    produce_sync(producer, topics.STATUS, key, codec.dumps({"state": "bogus"}))
    assert wait_for(lambda: shown() is None)
    assert client.get(f"/v1/sources/{unique}", headers=auth).json()["status"] == {
        "state": "pending"
    }


def test_replicas_agree_through_the_topic(make_client, client, auth, source_body, unique, wait_for):
    other = make_client()
    url = f"/v1/sources/{unique}"
    assert client.post("/v1/sources", json=source_body(), headers=auth).status_code == 201
    seen = wait_for(lambda: other.get(url, headers=auth).status_code == 200)
    assert seen
    # The other replica knows the source exists and its generation.
    assert other.post("/v1/sources", json=source_body(), headers=auth).status_code == 409
    assert other.put(url, json=source_body(port=7000), headers=auth).json()["generation"] == 2
    wait_for(lambda: client.get(url, headers=auth).json()["generation"] == 2)
    assert client.get(url, headers=auth).json()["port"] == 7000
    assert client.delete(url, headers=auth).status_code == 204
    wait_for(lambda: other.get(url, headers=auth).status_code == 404)


def test_a_new_replica_reads_the_existing_state(make_client, client, auth, source_body, unique):
    assert client.post("/v1/sources", json=source_body(), headers=auth).status_code == 201
    late = make_client()
    got = late.get(f"/v1/sources/{unique}", headers=auth)
    assert got.status_code == 200
    assert got.json()["host"] == "db.example.internal"


def _spec(name: str, generation: int) -> PostgresSourceSpec:
    return PostgresSourceSpec(
        name=name,
        host="h",
        port=5432,
        database="d",
        user="u",
        slot_name="s",
        publication_name="p",
        generation=generation,
    )


def test_local_writes_hide_older_records_the_follower_has_not_read_yet():
    # The follower may read a key's earlier records after this replica wrote a newer one (as
    # CompactedTopicView.put_local alone would show); the local write answers until read back.
    from freshet.control.store import _LocalWrites

    local = _LocalWrites()
    v1, v2 = _spec("a", 1), _spec("a", 2)
    local.add("a", v1)
    local.add("a", None)
    local.add("a", v2)
    assert local.latest_of("a") == (True, v2)
    local.seen("a", v1)
    assert local.latest_of("a") == (True, v2)
    local.seen("a", None)
    local.seen("a", v2)
    assert local.latest_of("a") == (False, None)
    assert local.latest() == {}


def test_a_failed_local_write_is_forgotten():
    from freshet.control.store import _LocalWrites

    local = _LocalWrites()
    v1, v2 = _spec("a", 1), _spec("a", 2)
    local.add("a", v1)
    local.add("a", v2)
    local.discard("a", v2)
    assert local.latest_of("a") == (True, v1)
    local.seen("a", v1)
    assert local.latest() == {}
