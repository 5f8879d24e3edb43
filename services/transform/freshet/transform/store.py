"""The durable store of a view or pipeline: its base rows and consumed offsets, in Redis.

Every batch commits the rows it changed and the offsets it consumed in one MULTI/EXEC
transaction, so state and offsets never disagree: after a crash the task reloads the rows and
resumes from exactly the offsets that produced them. Kafka's own offsets and transactions are
not used (the embedded broker has none that can be trusted).

A task claims its store by incrementing an epoch. Each commit WATCHes the epoch, so a task that
lost its assignment but still runs (a zombie) cannot commit over its successor: its transaction
fails and it stops.

Keys (``<prefix>`` = ``freshet:<kind>:<name>:g<generation>``): ``<prefix>:epoch``;
``<prefix>:meta`` (a hash: ``o:<topic>:<partition>`` = next offset, ``t:<table>`` = truncate
position); ``<prefix>:rows:<table>`` (a hash: primary key JSON = stored row).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import orjson
import redis

SCAN_COUNT = 5000


class Fenced(Exception):
    """Another task claimed this store; this one must stop without committing."""


class Store:
    def __init__(self, client: redis.Redis, kind: str, name: str, generation: int) -> None:
        self._r: Any = client  # bytes responses (no decode_responses)
        self.prefix = f"freshet:{kind}:{name}:g{generation}"
        self._epoch_key = f"{self.prefix}:epoch"
        self._meta_key = f"{self.prefix}:meta"
        self.epoch = 0

    def claim(self) -> int:
        """Take the store over from any earlier task; returns the new epoch."""
        self.epoch = int(self._r.incr(self._epoch_key))
        return self.epoch

    def exists(self) -> bool:
        return bool(self._r.exists(self._meta_key))

    def offsets(self) -> dict[tuple[str, int], int]:
        out: dict[tuple[str, int], int] = {}
        for field, value in self._r.hgetall(self._meta_key).items():
            kind, _, rest = field.decode().partition(":")
            if kind == "o":
                topic, _, partition = rest.rpartition(":")
                out[(topic, int(partition))] = int(value)
        return out

    def meta(self, prefix: str) -> dict[str, bytes]:
        """Meta fields whose name starts with ``prefix:`` (the prefix removed)."""
        head = f"{prefix}:"
        return {
            f.decode()[len(head) :]: v
            for f, v in self._r.hgetall(self._meta_key).items()
            if f.decode().startswith(head)
        }

    def rows(self, table: str) -> Iterator[tuple[str, bytes]]:
        for field, value in self._r.hscan_iter(f"{self.prefix}:rows:{table}", count=SCAN_COUNT):
            yield field.decode(), value

    def commit(
        self,
        rows: Mapping[str, Mapping[str, bytes]],
        offsets: Mapping[tuple[str, int], int],
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        """Write changed rows, the offsets after them and other meta fields, atomically.

        Raises:
            Fenced: the epoch changed since :meth:`claim`.
        """
        with self._r.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(self._epoch_key)
                current = pipe.get(self._epoch_key)
                if current is None or int(current) != self.epoch:
                    raise Fenced(f"{self.prefix} was claimed by another task")
                pipe.multi()
                for table, changed in rows.items():
                    if changed:
                        pipe.hset(f"{self.prefix}:rows:{table}", mapping=dict(changed))
                fields: dict[str, Any] = {f"o:{t}:{p}": o for (t, p), o in offsets.items()}
                for name, value in (meta or {}).items():
                    fields[name] = (
                        value if isinstance(value, bytes | str | int) else orjson.dumps(value)
                    )
                if fields:
                    pipe.hset(self._meta_key, mapping=fields)
                else:
                    pipe.hsetnx(self._meta_key, "created", 1)
                pipe.execute()
            except redis.WatchError:
                raise Fenced(f"{self.prefix} was claimed by another task") from None

    def drop(self) -> None:
        """Delete everything of this store (the view or pipeline was deleted or replaced)."""
        for key in self._r.scan_iter(match=f"{self.prefix}:*", count=SCAN_COUNT):
            self._r.unlink(key)
