"""Views equal PostgreSQL: the oracle test.

PostgreSQL -> ingest -> Kafka -> transform -> view topics, all real. Every view of
:data:`views_workload.VIEWS` is registered over a snapshot of seeded rows, then random workload
rounds run; after each round the test waits (read-your-writes, no sleeping) until every view has
applied the database's current LSN and compares each view topic, folded, with the same SQL run
by PostgreSQL. Each round uses its own seed; seeds that ever failed are kept in
``REGRESSION_SEEDS`` and always run. ``FRESHET_ORACLE_ROUNDS`` raises the number of random rounds.
"""

from __future__ import annotations

import os
import random
from typing import Any

import pytest

from freshet.common import topics
from freshet.devstack.harness import fold, wait_applied

from .views_workload import SCHEMA, TABLES, VIEWS, Workload, canonical, oracle_rows, view_rows

REGRESSION_SEEDS: list[int] = []
ROUNDS = int(os.environ.get("FRESHET_ORACLE_ROUNDS", "6"))
STEPS_PER_ROUND = 60


def current_lsn(conn: Any) -> int:
    text = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def assert_views_equal_oracle(kafka: Any, conn: Any, names: dict[str, str], catalog: Any) -> None:
    mismatches = []
    for view, sql in VIEWS.items():
        name = names[view]
        got = canonical(view_rows(fold(kafka.bootstrap, topics.view_topic(name))))
        want = canonical(oracle_rows(conn, name, sql, catalog))
        if got != want:
            missing = sorted(set(want) - set(got))[:5]
            extra = sorted(set(got) - set(want))[:5]
            mismatches.append(
                f"{view}: {len(got)} rows vs {len(want)}; missing {missing}; extra {extra}"
            )
    assert not mismatches, "\n".join(mismatches)


def test_every_view_equals_postgresql_after_each_random_round(
    kafka: Any, pg_database: Any, control: Any, ingest: Any, transform: Any, unique: str
) -> None:
    conn = pg_database.connect()
    conn.execute(SCHEMA)
    base_seed = random.randrange(1 << 30)
    seeds = [*REGRESSION_SEEDS, *(base_seed + i for i in range(ROUNDS))]
    work = Workload(seeds[0])
    work.seed_rows(conn)

    control.add_source(pg_database, unique, TABLES)
    catalog = control.catalog({f"{unique}.{t}" for t in TABLES})
    names = {view: f"{unique}_{view}" for view in VIEWS}
    for view, sql in VIEWS.items():
        control.add_view(names[view], sql, catalog)

    wait_applied(kafka.bootstrap, list(names.values()), unique, current_lsn(conn))
    assert_views_equal_oracle(kafka, conn, names, catalog)

    for seed in seeds:
        work = Workload(seed)
        for _ in range(STEPS_PER_ROUND):
            work.step(conn)
        try:
            wait_applied(kafka.bootstrap, list(names.values()), unique, current_lsn(conn))
            assert_views_equal_oracle(kafka, conn, names, catalog)
        except AssertionError as exc:
            pytest.fail(f"seed {seed} (add it to REGRESSION_SEEDS): {exc}")
