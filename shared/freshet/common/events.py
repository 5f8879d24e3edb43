"""Debezium-compatible change events: the contract between ingest and every consumer.

The value is Debezium's envelope as its JSON converter writes it with ``schemas.enable=false``::

    {"before": {...} | null, "after": {...} | null,
     "source": {"version", "connector", "name", "ts_ms", "ts_us", "ts_ns", "snapshot", "db",
                "sequence", "schema", "table", "txId", "lsn", "xmin", "commit_lsn"},
     "transaction": null, "op": "c" | "u" | "d" | "r" | "t", "ts_ms", "ts_us", "ts_ns"}

The key is the primary key as a JSON object (``null`` for a table without one or a truncate).
A delete is followed by a tombstone (same key, null value). A primary-key change is a delete of
the old key (plus tombstone) then a create of the new one, with Debezium's
``__debezium.newkey`` / ``__debezium.oldkey`` headers.

Value mapping (Debezium's defaults except ``decimal.handling.mode=string``): integers and booleans
as JSON numbers/booleans; ``numeric`` as a decimal string; ``float`` as numbers (``"NaN"``,
``"Infinity"``, ``"-Infinity"`` as strings); ``date`` as days since the epoch; ``time`` as
microseconds since midnight; ``timestamp`` as microseconds since the epoch (milliseconds when
its precision is 0-3); ``timestamptz`` and ``timetz`` as ISO-8601 strings in UTC; ``interval``
as microseconds (a month counts 30.4375 days); ``uuid``, ``json``, ``jsonb``, enums and other
types as strings; ``bytea`` as base64; arrays as JSON arrays of their elements.

Freshet's one extension: ``source.commit_lsn``, the LSN of the transaction's commit record, so
that ``(commit_lsn, lsn)`` orders every change of a source in commit order.
"""

from __future__ import annotations

from typing import Any

UNAVAILABLE_VALUE = "__debezium_unavailable_value"
"""Debezium's placeholder for an unchanged TOAST value that the source did not send."""

CONNECTOR_VERSION = "freshet-0.1.0"

OP_CREATE = "c"
OP_UPDATE = "u"
OP_DELETE = "d"
OP_READ = "r"
OP_TRUNCATE = "t"

HEADER_NEW_KEY = "__debezium.newkey"
HEADER_OLD_KEY = "__debezium.oldkey"


def postgres_source(
    *,
    name: str,
    db: str,
    schema: str,
    table: str,
    ts_us: int,
    snapshot: str,
    tx_id: int | None,
    lsn: int,
    commit_lsn: int,
    last_commit_lsn: int | None,
) -> dict[str, Any]:
    """The ``source`` block of a PostgreSQL change event, as Debezium's connector writes it."""
    return {
        "version": CONNECTOR_VERSION,
        "connector": "postgresql",
        "name": name,
        "ts_ms": ts_us // 1000,
        "ts_us": ts_us,
        "ts_ns": ts_us * 1000,
        "snapshot": snapshot,
        "db": db,
        "sequence": (
            f'["{last_commit_lsn}","{lsn}"]' if last_commit_lsn is not None else f'[null,"{lsn}"]'
        ),
        "schema": schema,
        "table": table,
        "txId": tx_id,
        "lsn": lsn,
        "xmin": None,
        "commit_lsn": commit_lsn,
    }


def envelope(
    op: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    source: dict[str, Any],
    now_us: int,
) -> dict[str, Any]:
    """A whole change event value."""
    return {
        "before": before,
        "after": after,
        "source": source,
        "transaction": None,
        "op": op,
        "ts_ms": now_us // 1000,
        "ts_us": now_us,
        "ts_ns": now_us * 1000,
    }


def lsn_to_str(lsn: int) -> str:
    """An LSN in PostgreSQL's ``X/Y`` notation."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def lsn_from_str(text: str) -> int:
    """Parse ``X/Y`` into an integer LSN; raises ``ValueError`` on anything else."""
    high, sep, low = text.partition("/")
    if not sep:
        raise ValueError(f"not an LSN: {text!r} (expected X/Y in hexadecimal)")
    return (int(high, 16) << 32) | int(low, 16)
