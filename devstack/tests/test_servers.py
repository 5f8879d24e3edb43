"""The servers the devstack and the tests start are ready for commands when started."""

from __future__ import annotations

from pathlib import Path

import redis

from freshet.devstack import servers

KEYS = 1_000_000


def test_redis_is_ready_only_once_its_append_only_file_is_loaded(tmp_path: Path) -> None:
    """Redis listens while it loads its append-only file and refuses commands (LOADING) until
    it is done: a restarted devstack flushed it in that window and failed. ``start_redis``
    returns once it answers, with every key back."""
    data, log = tmp_path / "redis", tmp_path / "redis.log"
    port = servers.free_port()
    first = servers.start_redis(port, data, log)
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        # A script's writes reach the append-only file as one SET each: KEYS commands, which
        # Redis replays one by one at its next start (about a second here).
        script = "for i = ARGV[1], ARGV[1] + 99999 do redis.call('SET', 'k' .. i, 'v') end"
        for start in range(1, KEYS, 100_000):
            client.eval(script, 0, start)
        client.close()
    finally:
        first.stop()
    second = servers.start_redis(port, data, log)
    # As the devstack connects (a database named: redis-py does not retry LOADING then).
    client = redis.Redis.from_url(f"redis://127.0.0.1:{port}/0")
    try:
        # The first command after the start: refused with LOADING if it came too early.
        assert client.dbsize() == KEYS
        assert client.get(f"k{KEYS}") == b"v"
    finally:
        client.close()
        second.stop()
