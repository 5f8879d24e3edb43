"""Large transactions, errors, slot invalidation and deletion, on the real servers."""

from __future__ import annotations

import psycopg

from freshet.common import topics


def test_large_transaction_is_streamed_spooled_and_exact(ingest, reader, pg_database, unique):
    with pg_database.connect() as conn:
        conn.execute("CREATE TABLE public.big (id int PRIMARY KEY, payload text)")
        # Make this database's walsender stream transactions larger than 64kB while in progress.
        conn.execute(f"ALTER DATABASE {unique} SET logical_decoding_work_mem = '64kB'")
    topic = topics.cdc_topic(unique, "public", "big")
    ingest.start()
    ingest.register(pg_database, unique, ["public.big"])
    ingest.wait_status(unique, lambda s: s.state == "streaming")
    reader.follow(topic)
    with pg_database.connect(autocommit=False) as conn:
        # Aborted whole transaction: must never appear.
        conn.execute(
            "INSERT INTO public.big SELECT g, repeat('a', 100) FROM generate_series(100001, 105000) g"
        )
        conn.rollback()
        # Committed transaction with an aborted subtransaction in the middle.
        conn.execute(
            "INSERT INTO public.big SELECT g, repeat('b', 100) FROM generate_series(1, 5000) g"
        )
        conn.execute("SAVEPOINT s1")
        conn.execute(
            "INSERT INTO public.big SELECT g, 'gone' FROM generate_series(200001, 203000) g"
        )
        conn.execute("ROLLBACK TO SAVEPOINT s1")
        conn.execute(
            "INSERT INTO public.big SELECT g, repeat('c', 100) FROM generate_series(5001, 10000) g"
        )
        conn.execute("UPDATE public.big SET payload = 'updated' WHERE id <= 10")
        conn.commit()
        conn.execute("INSERT INTO public.big VALUES (0, 'small after')")
        conn.commit()
    reader.wait_for(lambda rs: any(r.key == {"id": 0} for r in rs), timeout=120)
    reader.read_to_end(topic)  # id 0 was written last, but maybe not to the last partition read
    creates = [r for r in reader.records if r.value and r.value["op"] == "c"]
    assert sorted(r.key["id"] for r in creates) == list(range(10001))
    for partition in {r.partition for r in creates}:  # commit order within each partition
        ids = [r.key["id"] for r in creates if r.partition == partition]
        assert ids == [*sorted(ids[:-1]), ids[-1]] if ids[-1] == 0 else ids == sorted(ids)
    updates = [r for r in reader.records if r.value and r.value["op"] == "u"]
    assert sorted(r.key["id"] for r in updates) == list(range(1, 11))
    assert all(r.value["after"]["payload"] == "updated" for r in updates)
    tx_ids = {r.value["source"]["txId"] for r in reader.records if r.value and r.key["id"] != 0}
    assert len(tx_ids) == 1
    with pg_database.connect() as conn:
        streamed = conn.execute(
            "SELECT stream_txns FROM pg_stat_replication_slots WHERE slot_name = %s",
            (f"freshet_{unique}",),
        ).fetchone()
    assert streamed is not None and streamed[0] >= 1, "the transaction was not streamed in progress"
    assert not any((ingest.settings.ingest_spool_dir / unique).iterdir()), "spool files left behind"


def test_unreachable_source_and_bad_password_are_reported_as_errors(ingest, pg_database, unique):
    ingest.start()
    spec = ingest.register(pg_database, unique, None)
    ingest.put(spec.model_copy(update={"port": 1, "generation": 2}))
    status = ingest.wait_status(unique, lambda s: s.state == "error" and s.generation == 2)
    assert "port 1 failed" in (status.reason or "") or "Connection refused" in (status.reason or "")
    assert "retrying" in (status.reason or "")
    box_password = ingest.box.encrypt(__import__("pydantic").SecretStr("wrong-password"))
    ingest.put(spec.model_copy(update={"password_encrypted": box_password, "generation": 3}))
    status = ingest.wait_status(unique, lambda s: s.state == "error" and s.generation == 3)
    assert "password authentication failed" in (status.reason or "")
    assert "wrong-password" not in (status.reason or "")
    # Put right again: the source recovers by itself.
    ingest.put(spec.model_copy(update={"generation": 4}))
    ingest.wait_status(unique, lambda s: s.state == "streaming" and s.generation == 4)


def test_missing_table_is_a_clear_error(ingest, pg_database, unique):
    ingest.start()
    ingest.register(pg_database, unique, ["public.nope"])
    status = ingest.wait_status(unique, lambda s: s.state == "error")
    assert "public.nope" in (status.reason or "")


def test_invalidated_slot_is_reported(ingest, pg_database, postgres_server, unique):
    with pg_database.connect() as conn:
        conn.execute("CREATE TABLE public.t (id int PRIMARY KEY, v text)")
    ingest.start()
    ingest.register(pg_database, unique, ["public.t"])
    ingest.wait_status(unique, lambda s: s.state == "streaming")
    ingest.shutdown()
    admin = psycopg.connect(postgres_server.conninfo(), autocommit=True)
    try:
        admin.execute("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
        admin.execute("SELECT pg_reload_conf()")
        state = None
        with pg_database.connect() as conn:
            for _ in range(10):
                conn.execute("SELECT pg_sleep(0.3)")  # the checkpointer reloads its settings
                conn.execute(
                    "INSERT INTO public.t SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g "
                    "ON CONFLICT (id) DO UPDATE SET v = excluded.v || 'y'"
                )
                conn.execute("SELECT pg_switch_wal()")
                conn.execute("CHECKPOINT")
                state = admin.execute(
                    "SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s",
                    (f"freshet_{unique}",),
                ).fetchone()
                if state is not None and state[0] == "lost":
                    break
        assert state is not None and state[0] == "lost"
    finally:
        admin.execute("ALTER SYSTEM RESET max_slot_wal_keep_size")
        admin.execute("SELECT pg_reload_conf()")
        admin.close()
    ingest.start()
    status = ingest.wait_status(
        unique, lambda s: s.state == "error" and "invalidated" in (s.reason or "")
    )
    assert "new snapshot" in (status.reason or "")


def test_deleting_a_source_drops_its_slot_and_publication(ingest, pg_database, unique):
    with pg_database.connect() as conn:
        conn.execute("CREATE TABLE public.t (id int PRIMARY KEY)")
    ingest.start()
    ingest.register(pg_database, unique, ["public.t"])
    ingest.wait_status(unique, lambda s: s.state == "streaming")
    ingest.delete(unique)
    ingest.registered.remove(unique)
    import time

    deadline = time.monotonic() + 30
    with pg_database.connect() as conn:
        while time.monotonic() < deadline:
            slot = conn.execute(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (f"freshet_{unique}",)
            ).fetchone()
            pub = conn.execute(
                "SELECT 1 FROM pg_publication WHERE pubname = %s", (f"freshet_{unique}",)
            ).fetchone()
            if slot is None and pub is None:
                break
            time.sleep(0.2)
        assert slot is None and pub is None
    assert ingest.status(unique) is None
