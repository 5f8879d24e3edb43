"""Ingest's errors."""

from freshet.common.exceptions import FreshetError


class IngestError(FreshetError):
    """Base of ingest's errors."""


class DeliveryFailed(IngestError):
    """Kafka refused or did not acknowledge change events; the stream restarts."""


class SourceError(IngestError):
    """The source database refused something; the message says what and what to do."""


class SlotInvalidated(SourceError):
    """The replication slot lost WAL it needed; changes were lost and a new snapshot is needed."""
