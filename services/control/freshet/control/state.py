"""Control's view of the desired state, the table schemas and the status, all on Kafka topics.

Every control replica folds the desired-state topics (``freshet.control.sources``, ``.views``,
``.pipelines``, ``.products``, ``.keys``), ``freshet.schemas`` and ``freshet.status`` into
memory, so all replicas answer from the same log. The desired state is read and written through
:class:`~freshet.control.store.SpecStore` (read-your-writes included); the status through
:class:`~freshet.control.status.StatusBoard`.
"""

from __future__ import annotations

import logging
import threading

from confluent_kafka import Producer
from prometheus_client import Counter

from freshet.common import topics
from freshet.common.kafka import CompactedTopicView, ensure_topics, producer_config
from freshet.common.pipelines import PipelineSpec
from freshet.common.products import ApiKeySpec, ProductSpec
from freshet.common.schemas import (
    DataflowStatus,
    PostgresSourceSpec,
    SourceSpec,
    SourceStatus,
    TableSchema,
    ViewSpec,
)
from freshet.control.config import ControlSettings
from freshet.control.exceptions import StateUnavailableError
from freshet.control.status import StatusBoard
from freshet.control.store import SpecStore, decoder

log = logging.getLogger(__name__)

SOURCE_WRITES = Counter(
    "freshet_control_source_writes_total",
    "Source specs written to the desired-state topic, by operation.",
    ["op"],
)
VIEW_WRITES = Counter(
    "freshet_control_view_writes_total",
    "View specs written to the desired-state topic, by operation.",
    ["op"],
)
PIPELINE_WRITES = Counter(
    "freshet_control_pipeline_writes_total",
    "Pipeline specs written to the desired-state topic, by operation.",
    ["op"],
)
PRODUCT_WRITES = Counter(
    "freshet_control_product_writes_total",
    "Product specs written to the desired-state topic, by operation.",
    ["op"],
)
KEY_WRITES = Counter(
    "freshet_control_key_writes_total",
    "API key specs written to the desired-state topic, by operation.",
    ["op"],
)


class ControlState:
    """The desired state of sources and views, the captured tables, and the status.

    Call :meth:`start` before anything else and :meth:`close` at the end. Thread-safe: the API
    calls it from its worker threads (and waits on :attr:`status` from its event loop).
    """

    def __init__(self, settings: ControlSettings) -> None:
        self._settings = settings
        self._producer: Producer | None = None
        self.sources: SpecStore[SourceSpec] = SpecStore(
            "source", topics.CONTROL_SOURCES, PostgresSourceSpec, SOURCE_WRITES
        )
        self.views: SpecStore[ViewSpec] = SpecStore(
            "view", topics.CONTROL_VIEWS, ViewSpec, VIEW_WRITES
        )
        self.pipelines: SpecStore[PipelineSpec] = SpecStore(
            "pipeline", topics.CONTROL_PIPELINES, PipelineSpec, PIPELINE_WRITES
        )
        self.products: SpecStore[ProductSpec] = SpecStore(
            "product", topics.CONTROL_PRODUCTS, ProductSpec, PRODUCT_WRITES
        )
        self.keys: SpecStore[ApiKeySpec] = SpecStore(
            "key", topics.CONTROL_KEYS, ApiKeySpec, KEY_WRITES
        )
        self.status = StatusBoard()
        self.views_and_products = threading.Lock()
        """Held by a write of a view or a product that checks the other kind first, so that a
        product is checked against the view as it is written and a view against the products
        over it (within this replica: replicas do not lock each other)."""
        self._schemas: CompactedTopicView | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Create the control topics if missing, then read the followed topics to their end.

        Raises:
            freshet.common.exceptions.KafkaError: the broker cannot be reached or the topics
                cannot be created or read within ``timeout`` seconds.
        """
        bootstrap = self._settings.kafka_bootstrap
        ensure_topics(bootstrap, topics.control_topics(self._settings.topic_partitions), timeout)
        self._producer = Producer(producer_config(bootstrap))
        self.sources.start(bootstrap, self._producer, timeout)
        self.views.start(bootstrap, self._producer, timeout)
        self.pipelines.start(bootstrap, self._producer, timeout)
        self.products.start(bootstrap, self._producer, timeout)
        self.keys.start(bootstrap, self._producer, timeout)
        schemas = CompactedTopicView(
            bootstrap, topics.SCHEMAS, decoder(TableSchema, "table schema")
        )
        schemas.start(timeout)
        self._schemas = schemas
        self.status.start(bootstrap, timeout)
        log.info(
            "following %s (%d sources), %s (%d views), %s (%d tables) and %s",
            topics.CONTROL_SOURCES,
            len(self.sources.specs()),
            topics.CONTROL_VIEWS,
            len(self.views.specs()),
            topics.SCHEMAS,
            len(schemas.items()),
            topics.STATUS,
        )

    def close(self) -> None:
        """Stop following the topics and flush the producer; safe to call more than once."""
        self.sources.close()
        self.views.close()
        self.pipelines.close()
        self.products.close()
        self.keys.close()
        self.status.close()
        if self._schemas is not None:
            self._schemas.close()
            self._schemas = None
        if self._producer is not None:
            self._producer.flush(5)
            self._producer = None

    @property
    def started(self) -> bool:
        return (
            self.sources.started
            and self.views.started
            and self.pipelines.started
            and self.products.started
            and self.keys.started
            and self._schemas is not None
            and self.status.started
        )

    def tables(self) -> list[TableSchema]:
        """The captured tables of the sources that exist now, sorted by qualified name.

        A schema ingest published for a source since deleted does not count.
        """
        if self._schemas is None:
            raise StateUnavailableError("control has not read the table schemas yet: retry soon")
        sources = {spec.name for spec in self.sources.specs()}
        return [table for _, table in self._schemas.items() if table.source in sources]

    def source_status(self, name: str) -> SourceStatus | None:
        """The status ingest last reported for source ``name``, or ``None`` if it has not yet."""
        return self.status.get("source", name, SourceStatus)

    def view_status(self, name: str) -> DataflowStatus | None:
        """The status transform last reported for view ``name``, or ``None`` if it has not yet."""
        return self.status.get("view", name, DataflowStatus)
