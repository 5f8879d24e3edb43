"""The contract of a store that materializes view topics (PostgreSQL, Redis).

A store holds, for one view generation, the view's rows and, next to them, the position it has
reached in the view topic: per partition the next offset to apply and the ``freshet.applied``
header of the last record applied. Rows and positions change together, atomically, so a store
is always the fold of a prefix of every partition, and a restart resumes from the store's own
positions: each store from its own consistent point, whatever the other store did.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from freshet.serve.materialize.batch import Batch


class ViewStore(ABC):
    """One store of one view generation, written by one materializer at a time.

    Guarantees:

    * :meth:`write` applies every change of the batch and moves the positions of its partitions
      to ``batch.end`` in one atomic step, and only if the store still holds this generation and
      its positions equal ``batch.start``. Otherwise it raises
      :class:`~freshet.serve.exceptions.Fenced` (another writer got there first: re-open and
      go on from the store's positions) or :class:`~freshet.serve.exceptions.StaleGeneration`
      (a newer generation took over: stop) and changes nothing.
    * Any other exception leaves the store at the positions before the batch or after it
      (a commit whose outcome is unknown); the writer re-opens it and resumes from what
      :meth:`open` returns. Applying a batch a second time changes nothing.
    """

    kind: str
    """``"postgres"`` or ``"redis"``: the ``store`` label of metrics."""

    max_records: int | None = None
    """At most this many records per batch (None: no limit)."""

    fetch_wait_ms: int = 100
    """``fetch.wait.max.ms`` of the consumer that follows the view topic into this store: the
    broker may hold a fetch that long before it answers with a change that arrived meanwhile, and
    each fetch costs it CPU (see :mod:`freshet.common.kafka`). The store the API reads from waits
    less."""

    batch_interval_s: float = 0.0
    """The least time between two batches while the store keeps up: changes that arrive
    meanwhile wait and go in the next batch, and its consumer does not fetch ahead of what the
    store applied (0: fetch and apply as changes arrive). See ``ViewMaterializer._follow``."""

    @abstractmethod
    def open(self, partitions: list[int]) -> dict[int, int]:
        """Prepare the store for this generation; the next offset to apply per partition.

        Creates or alters what the generation needs; a store that held an older generation of
        the view starts over from offset 0. Raises
        :class:`~freshet.serve.exceptions.StaleGeneration` if a newer one is there.
        """

    @abstractmethod
    def write(self, batch: Batch) -> None:
        """Apply ``batch`` atomically with its positions (see the class docstring)."""

    def caught_up(self) -> None:  # noqa: B027 - optional hook
        """Called once the store has applied everything the topic held: it is complete."""
