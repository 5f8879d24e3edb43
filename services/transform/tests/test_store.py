"""The durable store on the real Redis: atomic commits of rows, offsets and meta; fencing."""

from __future__ import annotations

import threading

import pytest
import redis

from freshet.transform.store import Fenced, Store


@pytest.fixture
def client(redis_server: str) -> redis.Redis:
    return redis.Redis.from_url(redis_server)


def test_a_commit_writes_rows_offsets_and_meta_together(client: redis.Redis, unique: str) -> None:
    store = Store(client, "view", unique, 1)
    store.claim()
    assert not store.exists()
    store.commit({}, {})
    assert store.exists() and store.offsets() == {}

    rows = {f'{{"id":{i}}}': b"[1,%d,[%d]]" % (i, i) for i in range(5000)}
    store.commit(
        {"s.public.t": rows, "s.public.u": {}},
        {("s.public.t", 0): 5000, ("s.public.t", 2): 7},
        {"t:s.public.t": b"[3,4]", "other": {"k": [1, 2]}},
    )
    assert dict(store.rows("s.public.t")) == rows
    assert list(store.rows("s.public.u")) == []
    assert store.offsets() == {("s.public.t", 0): 5000, ("s.public.t", 2): 7}
    assert store.meta("t") == {"s.public.t": b"[3,4]"}
    assert client.hget(f"{store.prefix}:meta", "other") == b'{"k":[1,2]}'


def test_a_task_whose_store_was_claimed_again_cannot_commit(
    client: redis.Redis, unique: str
) -> None:
    old = Store(client, "view", unique, 1)
    old.claim()
    old.commit({"s.public.t": {"a": b"1"}}, {("s.public.t", 0): 1})
    new = Store(client, "view", unique, 1)
    new.claim()
    with pytest.raises(Fenced):
        old.commit({"s.public.t": {"a": b"2"}}, {("s.public.t", 0): 2})
    assert dict(new.rows("s.public.t")) == {"a": b"1"}
    assert new.offsets() == {("s.public.t", 0): 1}
    new.commit({"s.public.t": {"a": b"3"}}, {("s.public.t", 0): 3})
    assert new.offsets() == {("s.public.t", 0): 3}


def test_a_claim_between_watch_and_exec_fences_the_commit(
    client: redis.Redis, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = Store(client, "view", unique, 1)
    old.claim()
    # The successor claims while the old task's transaction is being sent (after its GET).
    sent = threading.Event()
    connection_class = client.connection_pool.connection_class
    original = connection_class.send_packed_command

    def send(self, command, check_health=True):  # type: ignore[no-untyped-def]
        if not sent.is_set() and isinstance(command, list):
            sent.set()
            Store(redis.Redis.from_url(client_url(client)), "view", unique, 1).claim()
        return original(self, command, check_health)

    monkeypatch.setattr(connection_class, "send_packed_command", send)
    with pytest.raises(Fenced):
        old.commit({"s.public.t": {"a": b"1"}}, {("s.public.t", 0): 1})
    assert sent.is_set()
    assert old.offsets() == {}
    monkeypatch.undo()
    # The connection it used was dropped, not returned with a transaction half read.
    assert client.ping()


def test_a_command_that_fails_inside_the_transaction_is_raised(
    client: redis.Redis, unique: str
) -> None:
    store = Store(client, "view", unique, 1)
    store.claim()
    client.set(f"{store.prefix}:rows:s.public.t", "not a hash")
    with pytest.raises(redis.ResponseError):
        store.commit({"s.public.t": {"a": b"1"}}, {("s.public.t", 0): 1})
    assert client.ping()


def client_url(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"
