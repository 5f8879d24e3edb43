"""Source connectors, by kind.

Adding a kind: write its spec model in ``freshet.common.schemas`` (and the control API model),
implement :class:`freshet.ingest.sources.base.Source` in a sub-package with its I/O client, its
pipeline and its config apart, add it to :data:`REGISTRY`, and give it an integration test
against the real database.
"""

from __future__ import annotations

from freshet.ingest.sources.base import Source
from freshet.ingest.sources.postgres.connector import PostgresSource

REGISTRY: dict[str, type[Source]] = {
    "postgres": PostgresSource,
}
