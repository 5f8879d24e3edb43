"""kill -9 of ingest, again and again, during a steady workload: every committed change still
reaches Kafka, in commit order per key."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict

import pytest

from freshet.common import events, topics
from freshet.devstack import servers


def _spawn_ingest(settings, log_path):
    env = {
        **os.environ,
        "FRESHET_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "FRESHET_SECRET_KEY": settings.secret_key.get_secret_value(),
        "FRESHET_INGEST_PORT": str(servers.free_port()),
        "FRESHET_INGEST_GROUP": settings.ingest_group,
        "FRESHET_INGEST_SPOOL_DIR": str(settings.ingest_spool_dir),
        "FRESHET_INGEST_STATUS_INTERVAL_S": "0.3",
        "FRESHET_INGEST_RETRY_INITIAL_S": "0.3",
        "FRESHET_INGEST_RETRY_MAX_S": "1",
        "FRESHET_TOPIC_PARTITIONS": "3",
    }
    out = open(log_path, "ab")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "freshet.ingest"], env=env, stdout=out, stderr=out
    )


@pytest.mark.slow
def test_kill_9_during_workload_loses_nothing_and_keeps_order(
    ingest, reader, pg_database, unique, tmp_path
):
    keys = 40
    with pg_database.connect() as conn:
        conn.execute(
            "CREATE TABLE public.counters (id int PRIMARY KEY, v bigint NOT NULL, pad text)"
        )
        conn.execute(
            "INSERT INTO public.counters SELECT g, 0, repeat('p', 50) FROM generate_series(1, %s) g",
            (keys,),
        )
    committed: dict[int, list[int]] = defaultdict(lambda: [0])
    stop_writer = threading.Event()

    def writer():
        rng = random.Random(7)
        with pg_database.connect(autocommit=False) as conn:
            while not stop_writer.is_set():
                chosen = rng.sample(range(1, keys + 1), rng.randint(1, 4))
                results = [
                    conn.execute(
                        "UPDATE public.counters SET v = v + 1 WHERE id = %s RETURNING id, v", (k,)
                    ).fetchone()
                    for k in sorted(chosen)
                ]
                conn.commit()
                for key, value in results:
                    committed[key].append(value)
                time.sleep(0.002)

    log_path = tmp_path / "ingest.log"
    proc = _spawn_ingest(ingest.settings, log_path)
    ingest.register(pg_database, unique, ["public.counters"])
    # Kills start once the initial snapshot is done: a crash inside the snapshot restarts the
    # snapshot (as Debezium does), which keeps final values but not the versions in between.
    ingest.wait_status(unique, lambda s: s.state == "streaming", timeout=60)
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    kills = 0
    rng = random.Random(11)
    deadline = time.monotonic() + 45
    try:
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(2.0, 7.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
            proc = _spawn_ingest(ingest.settings, log_path)
        stop_writer.set()
        thread.join(30)
        with pg_database.connect() as conn:
            end_lsn = events.lsn_from_str(
                conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
            )
        ingest.wait_status(
            unique,
            lambda s: (
                s.state == "streaming"
                and s.lsn is not None
                and events.lsn_from_str(s.lsn) >= end_lsn
            ),
            timeout=120,
        )
    finally:
        stop_writer.set()
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(30) == 0, "ingest did not stop cleanly on SIGTERM"
        finally:
            if proc.poll() is None:
                proc.kill()
    assert kills >= 5
    topic = topics.cdc_topic(unique, "public", "counters")
    reader.follow(topic)
    # The slot confirmed the end: Kafka acknowledged everything. Read until the topic is quiet.
    quiet_since = time.monotonic()
    count = 0
    while time.monotonic() - quiet_since < 3:
        reader.pump(0.5)
        if len(reader.records) != count:
            count, quiet_since = len(reader.records), time.monotonic()
    seen: dict[int, list[int]] = defaultdict(list)
    for record in reader.records:  # one partition per key: this is the order a consumer sees
        if record.value is not None:
            seen[record.key["id"]].append(record.value["after"]["v"])
    assert sum(len(v) for v in committed.values()) > 500, "the workload was too small to prove much"
    for key, values in committed.items():
        got = seen[key]
        assert set(got) == set(values), f"key {key}: missing {sorted(set(values) - set(got))[:10]}"
        first_seen = list(dict.fromkeys(got))
        assert first_seen == sorted(first_seen), f"key {key}: out of commit order"
        # A replay after a crash repeats a suffix; the latest value always ends the sequence.
        assert got[-1] == values[-1]
