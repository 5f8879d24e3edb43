"""Serve's Prometheus metrics (on ``/metrics``): per view and store, and per product topic."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge

ROWS_APPLIED = Counter(
    "freshet_serve_rows_applied_total",
    "View rows upserted or deleted in a store (after merging the changes of a key in a batch)",
    ["view", "store", "op"],
)
BATCHES = Counter("freshet_serve_batches_total", "Batches committed to a store", ["view", "store"])
ERRORS = Counter(
    "freshet_serve_errors_total", "Failed opens and writes of a store (retried)", ["view", "store"]
)
LAG = Gauge(
    "freshet_serve_lag_messages",
    "View-topic records not yet applied to a store (from the fetch high watermarks)",
    ["view", "store"],
)
READY = Gauge(
    "freshet_serve_ready",
    "1 once the store has applied everything its view's topic held (since it started)",
    ["view", "store"],
)

_PER_STORE = (BATCHES, ERRORS, LAG, READY)

PRODUCT_RECORDS = Counter(
    "freshet_serve_product_records_total",
    "Records published on product topics (acknowledged), by kind: value or tombstone",
    ["product", "kind"],
)
PRODUCT_LAG = Gauge(
    "freshet_serve_product_lag_messages",
    "View-topic records not yet published on the product's topic (from the fetch watermarks)",
    ["product"],
)


def forget(view: str, stores: list[str]) -> None:
    """Remove the series of a view this replica no longer materializes."""
    for store in stores:
        for metric in _PER_STORE:
            with contextlib.suppress(KeyError):
                metric.remove(view, store)
        for op in ("upsert", "delete"):
            with contextlib.suppress(KeyError):
                ROWS_APPLIED.remove(view, store, op)


def forget_product(product: str) -> None:
    """Remove the series of a product this replica no longer publishes."""
    with contextlib.suppress(KeyError):
        PRODUCT_LAG.remove(product)
    for kind in ("value", "tombstone"):
        with contextlib.suppress(KeyError):
            PRODUCT_RECORDS.remove(product, kind)
