"""Fast encoding of PostgreSQL change events, byte for byte what the shared contract builds.

:func:`freshet.common.events.envelope` around :func:`freshet.common.events.postgres_source`,
encoded with :func:`freshet.common.codec.dumps`, is the definition of a change event. Most of
it is the same for every event of a transaction, or of a table, so :class:`EnvelopeEncoder`
encodes those parts once, and per event only the row images, the LSN, the op and the clock.
The unit tests check the bytes against the shared functions.
"""

from __future__ import annotations

from typing import Any

from freshet.common import events
from freshet.common.codec import dumps

_OPS = {op: dumps(op) for op in ("c", "u", "d", "r", "t")}


class EnvelopeEncoder:
    """Encodes the change events of one source (``name``, database ``db``).

    Call :meth:`transaction` before the events of a transaction (or of a snapshot marker),
    then :meth:`encode` for each event.
    """

    def __init__(self, name: str, db: str) -> None:
        self._name = dumps(name)
        self._db = dumps(db)
        self._source_head = b',"source":{"version":%b,"connector":"postgresql","name":%b' % (
            dumps(events.CONNECTOR_VERSION),
            self._name,
        )
        self._snapshots: dict[str, bytes] = {}
        self._tables: dict[tuple[str, str], bytes] = {}
        self._tx: tuple[int, str, int | None, int, int | None] | None = None
        self._head = self._tail = self._commit = b""
        self.transaction(0, "false", None, 0, None)

    def transaction(
        self,
        ts_us: int,
        snapshot: str,
        tx_id: int | None,
        commit_lsn: int,
        last_commit_lsn: int | None,
    ) -> None:
        """The fields the following events share (see :func:`events.postgres_source`)."""
        tx = (ts_us, snapshot, tx_id, commit_lsn, last_commit_lsn)
        if tx == self._tx:
            return
        self._tx = tx
        # Once per transaction: one formatting operation for each part.
        marker = self._snapshots.get(snapshot)
        if marker is None:
            marker = self._snapshots[snapshot] = dumps(snapshot)
        self._head = (
            b'%b,"ts_ms":%d,"ts_us":%d,"ts_ns":%d,"snapshot":%b,"db":%b,"sequence":"[%b,\\"'
            % (
                self._source_head,
                ts_us // 1000,
                ts_us,
                ts_us * 1000,
                marker,
                self._db,
                b"null" if last_commit_lsn is None else b'\\"%d\\"' % last_commit_lsn,
            )
        )
        self._tail = b',"txId":null,"lsn":' if tx_id is None else b',"txId":%d,"lsn":' % tx_id
        self._commit = b',"xmin":null,"commit_lsn":%d},"transaction":null,"op":' % commit_lsn

    def _table(self, schema: str, table: str) -> bytes:
        part = b'\\"]","schema":%b,"table":%b' % (dumps(schema), dumps(table))
        self._tables[(schema, table)] = part
        return part

    def encode(
        self,
        schema: str,
        table: str,
        op: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        lsn: int,
        now_us: int,
    ) -> bytes:
        """One event's value: ``dumps(envelope(op, before, after, source, now_us))``."""
        part = self._tables.get((schema, table)) or self._table(schema, table)
        at = b"%d" % lsn
        if now_us < 1000:  # never from a real clock, but the digits below need 4 or more
            ms, us, ns = b"%d" % (now_us // 1000), b"%d" % now_us, b"%d" % (now_us * 1000)
        else:
            us = b"%d" % now_us
            ms, ns = us[:-3], us + b"000"
        return b"".join(
            (
                b'{"before":',
                b"null" if before is None else dumps(before),
                b',"after":',
                b"null" if after is None else dumps(after),
                self._head,
                at,
                part,
                self._tail,
                at,
                self._commit,
                _OPS.get(op) or dumps(op),
                b',"ts_ms":',
                ms,
                b',"ts_us":',
                us,
                b',"ts_ns":',
                ns,
                b"}",
            )
        )
