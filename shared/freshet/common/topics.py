"""Every Kafka topic name Freshet uses, and the rules for derived ones.

Change events follow Debezium's ``<prefix>.<schema>.<table>``; everything else lives under
``freshet.``. Characters Kafka does not allow in a topic name are replaced by ``_``, as Debezium
does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

CONTROL_SOURCES = "freshet.control.sources"
"""Desired state of sources: key = source name, value = spec JSON, tombstone = deleted."""

CONTROL_PIPELINES = "freshet.control.pipelines"
CONTROL_VIEWS = "freshet.control.views"
CONTROL_PRODUCTS = "freshet.control.products"
CONTROL_KEYS = "freshet.control.keys"

INGEST_OFFSETS = "freshet.ingest.offsets"
"""Ingest's own progress per source (snapshot done, slot), like Kafka Connect's offsets topic."""

SCHEMAS = "freshet.schemas"
"""Table schemas as ingest sees them: key = ``<source>.<schema>.<table>``, value =
:class:`~freshet.common.schemas.TableSchema`, compacted. Control validates view SQL against it."""

POSITIONS = "freshet.positions"
"""Ingest's confirmed position per source: key = source name, value =
:class:`~freshet.common.schemas.SourcePosition`, compacted. Every change of the source committed
at or before ``lsn`` is in Kafka below ``offsets``: the watermark for read-your-writes."""

STATUS = "freshet.status"
"""Latest status per component: key = ``<kind>/<name>``, compacted."""

METRICS = "freshet.metrics"
SPANS = "otlp_spans"
"""OTLP protobuf ``ExportTraceServiceRequest`` per message, as the collector's Kafka exporter."""

_ILLEGAL = re.compile(r"[^a-zA-Z0-9._-]")


def _clean(part: str) -> str:
    return _ILLEGAL.sub("_", part)


def cdc_topic(source: str, schema: str, table: str) -> str:
    """The change-event topic of one table: ``<source>.<schema>.<table>``."""
    return f"{_clean(source)}.{_clean(schema)}.{_clean(table)}"


APPLIED_HEADER = "freshet.applied"
"""Header of every view-topic record: JSON ``{source: lsn}``, every change of the source up to
``lsn`` is reflected in the view."""


def view_topic(view: str) -> str:
    return f"freshet.view.{_clean(view)}"


def product_topic(product: str) -> str:
    """The topic a product is published on when its ``publish_topic`` is set.

    Compacted, with as many partitions as its view's topic; a record is in the partition its
    view record is in. Key = the view record's key, byte for byte (a consumer of either topic
    reads the same keys); value = the row as the product's ``topic_role`` sees it (a JSON object
    of the product's fields, masked), or a tombstone when the row leaves the view or the role's
    row filter. The view record's :data:`APPLIED_HEADER` is copied.
    """
    return f"freshet.product.{_clean(product)}"


def dlq_topic(pipeline: str) -> str:
    return f"freshet.dlq.{_clean(pipeline)}"


def status_key(kind: str, name: str) -> str:
    return f"{kind}/{name}"


@dataclass(frozen=True)
class TopicSpec:
    """A topic Freshet creates when it is missing."""

    name: str
    partitions: int = 1
    config: dict[str, str] = field(default_factory=dict)


COMPACTED = {"cleanup.policy": "compact"}


def control_topics(partitions: int) -> list[TopicSpec]:
    """The topics the control plane needs, all compacted."""
    return [
        TopicSpec(CONTROL_SOURCES, partitions, COMPACTED),
        TopicSpec(CONTROL_PIPELINES, partitions, COMPACTED),
        TopicSpec(CONTROL_VIEWS, partitions, COMPACTED),
        TopicSpec(CONTROL_PRODUCTS, partitions, COMPACTED),
        TopicSpec(CONTROL_KEYS, partitions, COMPACTED),
        TopicSpec(INGEST_OFFSETS, partitions, COMPACTED),
        TopicSpec(SCHEMAS, partitions, COMPACTED),
        TopicSpec(POSITIONS, partitions, COMPACTED),
        TopicSpec(STATUS, partitions, COMPACTED),
        TopicSpec(METRICS, partitions, {"retention.ms": str(24 * 3600 * 1000)}),
        TopicSpec(SPANS, partitions, {"retention.ms": str(24 * 3600 * 1000)}),
    ]
