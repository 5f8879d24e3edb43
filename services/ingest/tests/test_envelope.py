"""The fast envelope encoder writes exactly the bytes of the shared contract's functions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from freshet.common import events
from freshet.common.codec import dumps
from freshet.ingest.sources.postgres.envelope import EnvelopeEncoder

names = st.text(min_size=1, max_size=12)  # any unicode: quotes, backslashes, control characters
lsns = st.integers(min_value=0, max_value=2**64 - 1)
rows = st.one_of(
    st.none(),
    st.dictionaries(
        names,
        st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=20), st.booleans()),
        max_size=4,
    ),
)


def reference(name, db, schema, table, tx, op, before, after, lsn, now_us):
    ts_us, snapshot, tx_id, commit_lsn, last_commit_lsn = tx
    source = events.postgres_source(
        name=name,
        db=db,
        schema=schema,
        table=table,
        ts_us=ts_us,
        snapshot=snapshot,
        tx_id=tx_id,
        lsn=lsn,
        commit_lsn=commit_lsn,
        last_commit_lsn=last_commit_lsn,
    )
    return dumps(events.envelope(op, before, after, source, now_us))


transactions = st.tuples(
    st.integers(min_value=0, max_value=2**53),
    st.sampled_from(["false", "true", "first", "last"]),
    st.one_of(st.none(), st.integers(min_value=0, max_value=2**32 - 1)),
    lsns,
    st.one_of(st.none(), lsns),
)


@given(
    names,
    names,
    st.lists(
        st.tuples(
            transactions,
            st.lists(
                st.tuples(
                    st.sampled_from([("public", "a"), ("public", "b"), ('s"c\\h', "é\n")]),
                    st.sampled_from(["c", "u", "d", "r", "t"]),
                    rows,
                    rows,
                    lsns,
                    st.integers(min_value=0, max_value=2**53),
                ),
                min_size=1,
                max_size=4,
            ),
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_bytes_equal_the_shared_envelope(name, db, transactions_and_events):
    encoder = EnvelopeEncoder(name, db)
    for tx, evs in transactions_and_events:
        encoder.transaction(*tx)
        for (schema, table), op, before, after, lsn, now_us in evs:
            got = encoder.encode(schema, table, op, before, after, lsn, now_us)
            assert got == reference(name, db, schema, table, tx, op, before, after, lsn, now_us)


def test_clock_digits_around_the_millisecond_boundary():
    encoder = EnvelopeEncoder("src", "db")
    tx = (1, "false", 7, 100, None)
    encoder.transaction(*tx)
    for now_us in (0, 1, 999, 1000, 1001, 99_999, 1_700_000_000_123_456):
        got = encoder.encode("public", "t", "c", None, {"id": 1}, 42, now_us)
        assert got == reference("src", "db", "public", "t", tx, "c", None, {"id": 1}, 42, now_us)


def test_events_before_any_transaction_are_still_valid():
    got = EnvelopeEncoder("src", "db").encode("public", "t", "c", None, {"id": 1}, 42, 5000)
    assert got == reference(
        "src", "db", "public", "t", (0, "false", None, 0, None), "c", None, {"id": 1}, 42, 5000
    )
