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

        One ``WATCH epoch``, ``GET epoch``, ``MULTI``, ``HSET``..., ``EXEC`` on one connection.
        The transaction is written in Redis's protocol here: redis-py's own encoding of a batch of
        100,000 rows cost more CPU than applying the batch's changes to a view.

        Raises:
            Fenced: the epoch changed since :meth:`claim`.
        """
        fields: dict[str, Any] = {f"o:{t}:{p}": o for (t, p), o in offsets.items()}
        for name, value in (meta or {}).items():
            fields[name] = value if isinstance(value, bytes | str | int) else orjson.dumps(value)
        queued = [_command(b"MULTI")]
        for table, changed in rows.items():
            if changed:
                queued.append(_hset(f"{self.prefix}:rows:{table}".encode(), changed))
        if fields:
            queued.append(_hset(self._meta_key.encode(), fields))
        else:
            queued.append(_command(b"HSETNX", self._meta_key.encode(), b"created", b"1"))
        queued.append(_command(b"EXEC"))
        pool = self._r.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_command("WATCH", self._epoch_key)
            conn.read_response()
            conn.send_command("GET", self._epoch_key)
            current = conn.read_response()
            if current is None or int(current) != self.epoch:
                raise Fenced(f"{self.prefix} was claimed by another task")
            conn.send_packed_command(queued)
            for _ in range(len(queued) - 1):
                conn.read_response()  # OK, then QUEUED for each command
            results = conn.read_response()
            if results is None:  # EXEC refused: the epoch changed after WATCH
                raise Fenced(f"{self.prefix} was claimed by another task")
            for result in results:
                if isinstance(result, Exception):  # a command failed inside the transaction
                    raise result
        except BaseException:
            conn.disconnect()  # whatever is left unread or still WATCHed goes with it
            raise
        finally:
            pool.release(conn)

    def drop(self) -> None:
        """Delete everything of this store (the view or pipeline was deleted or replaced)."""
        for key in self._r.scan_iter(match=f"{self.prefix}:*", count=SCAN_COUNT):
            self._r.unlink(key)


def _bytes(value: bytes | str | int) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode() if isinstance(value, int) else value.encode()


def _command(*args: bytes) -> bytes:
    """One command in Redis's protocol (RESP)."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def _hset(key: bytes, mapping: Mapping[str, Any]) -> bytes:
    """``HSET key field value ...`` in Redis's protocol; values are bytes, str or int."""
    parts = [b"*%d\r\n$4\r\nHSET\r\n$%d\r\n%s\r\n" % (2 + 2 * len(mapping), len(key), key)]
    append = parts.append
    for field, value in mapping.items():
        f = field.encode()
        v = value if type(value) is bytes else _bytes(value)
        append(b"$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(f), f, len(v), v))
    return b"".join(parts)
