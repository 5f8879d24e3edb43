"""Each start of the devstack clears the state derived from the previous run's (in-memory) topics."""

from __future__ import annotations

import psycopg
import redis

from freshet.devstack.stack import reset_derived_state


def test_redis_and_the_serve_database_start_empty(redis_server, postgres_server, unique):
    url = redis_server.rsplit("/", 1)[0] + "/7"  # a database of its own: FLUSHDB clears only it
    client = redis.Redis.from_url(url)
    other = redis.Redis.from_url(redis_server)
    try:
        client.hset("freshet:view:v:g1:meta", "o:t:0", 881)
        other.set(f"{unique}:untouched", 1)
        database = f"serve_{unique}"
        with psycopg.connect(postgres_server.conninfo(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{database}"')
        with psycopg.connect(postgres_server.conninfo(database), autocommit=True) as conn:
            conn.execute("CREATE SCHEMA freshet")
            conn.execute("CREATE TABLE freshet._offsets (topic text, next bigint)")
            # An open session does not stop the reset (FORCE).
            reset_derived_state(url, postgres_server, database)
        assert client.dbsize() == 0
        assert other.get(f"{unique}:untouched") == b"1"
        with psycopg.connect(postgres_server.conninfo(database)) as conn:
            found = conn.execute("SELECT to_regclass('freshet._offsets')").fetchone()
        assert found == (None,)
        reset_derived_state(url, postgres_server, database)  # again: nothing to clear, no error
    finally:
        client.close()
        other.delete(f"{unique}:untouched")
        other.close()
