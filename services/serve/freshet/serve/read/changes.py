"""Live changes of a product as Server-Sent Events, from a view generation's change stream.

The materializer appends one entry to ``<g>:changes`` (a Redis stream, see
:mod:`freshet.serve.materialize.stores.redis`) for every change it applies, in the same script
as the change: the key, the new row (empty for a delete) and the row held before. A reader
turns each entry into what one role sees, from the role's row filter on the two images:

==================  ==================  ==========================================================
before visible      after visible       event
==================  ==================  ==========================================================
no (or no row)      yes                 ``upsert``: the row as the role sees it (masked)
yes                 yes                 ``upsert``, unless the role sees the same row as before
                                        (only fields it does not see changed): nothing
yes                 no (or deleted)     ``delete``: the key, as an object of the key's fields
no                  no                  nothing: a key the role never sees is never sent
==================  ==================  ==========================================================

Every change event has the id ``g<generation>-<stream id>``. A client resumes after it with
``Last-Event-ID`` (what a browser's ``EventSource`` sends when it reconnects): the stream goes on
with the entries after that id, exactly once each, while that id is of the generation readers
read and still in the stream (``serve_changes_retained`` entries are kept). Otherwise the client
gets one ``reset`` event (data ``{"reason": ...}``, and an empty ``id``, so that a reconnecting
``EventSource`` sends none) and the stream ends: the client re-reads the rows (or reconnects
with ``snapshot=true``) and follows again without an id.

A stream started without an id follows from the moment it starts; with ``snapshot=true`` it first
sends every row the role sees (as ``upsert`` events without id), reading from a stream position
taken before the rows, so no change is missed; a row changed during the walk may be sent twice
(the snapshot already shows the change). Either way a ``live`` event follows (data
``{"generation": g, "snapshot_rows": n}``) whose id is the position the changes continue from.

While nothing is sent for :data:`HEARTBEAT_S` the stream sends a comment (``: heartbeat``), so
proxies keep it open. When the role skipped entries since its last event, the heartbeat carries
their position as an ``id`` without data: a client's resume point moves past changes it does not
see (an SSE client dispatches no event for it; the id reveals that the view changed, never a key
or a row). The key and the product are checked again while the stream runs: a key that expires
or is revoked, or a product it may no longer read, ends the stream with an ``error`` event
(``{"status": 401 or 403, "detail": ...}``); so does Redis failing (503), after which a client
reconnects with its last id.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from freshet.serve.access import Grant
from freshet.serve.exceptions import ApiError, BadRequest
from freshet.serve.read.rows import MAX_LIMIT, Query, StoredView, read_page

log = logging.getLogger(__name__)

HEARTBEAT_S = 15.0
"""A comment is sent when nothing else was for this long."""
BLOCK_S = 5.0
"""The longest a read waits for new entries: how soon a stream notices what else may end it (a
new generation, a revoked key). A client that went away cancels the stream (Starlette listens for
the disconnect), or fails its next write."""
READ_COUNT = 500
"""Stream entries read per round trip at most."""
CONNECT_TIMEOUT_S = 1.0
CLIENT_NAME = "freshet-serve-changes"
"""The Redis client name of a stream's blocking connection (``CLIENT LIST`` shows them)."""

START = "0-0"
"""The stream position before its first entry."""

_STREAM_ID_MAX = 2**64 - 1
"""Each of the two numbers of a Redis stream id is a 64-bit unsigned integer."""
_EVENT_ID = re.compile(r"^g(\d{1,18})-(\d{1,20}-\d{1,20})$")

_READ_AFTER = """
-- KEYS: the change stream; ARGV: the position (a stream id, or 0-0), count
-- {1, entries after the position} when none of them was trimmed away; {0} otherwise
local after, count = ARGV[1], tonumber(ARGV[2])
if after == '0-0' then
  if redis.call('EXISTS', KEYS[1]) == 0 then
    return {1, {}}
  end
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  local fields = {}
  for i = 1, #info, 2 do
    fields[info[i]] = info[i + 1]
  end
  if fields['entries-added'] ~= fields['length'] then
    return {0}
  end
  return {1, redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', count)}
end
local entries = redis.call('XRANGE', KEYS[1], after, '+', 'COUNT', count + 1)
if #entries == 0 or entries[1][1] ~= after then
  return {0}
end
table.remove(entries, 1)
return {1, entries}
"""


@dataclass(frozen=True)
class Position:
    """A place in one generation's change stream: the entry last sent, or :data:`START`."""

    generation: int
    entry: str

    @property
    def event_id(self) -> str:
        return f"g{self.generation}-{self.entry}"


def parse_event_id(text: str) -> Position:
    """``g<generation>-<stream id>`` as sent in the ``id`` of an event.

    Raises:
        BadRequest: not an id this API sends.
    """
    match = _EVENT_ID.match(text.strip())
    parts = [int(p) for p in match.group(2).split("-")] if match is not None else []
    if match is None or any(p > _STREAM_ID_MAX for p in parts):
        # A part past 64 bits is no stream id: Redis would refuse it once the stream started.
        raise BadRequest(
            "Last-Event-ID: not an event id of this API (g<generation>-<ms>-<seq>); reconnect "
            "without it to follow from now"
        )
    return Position(int(match.group(1)), f"{parts[0]}-{parts[1]}")


def parse_snapshot(text: str | None) -> bool:
    """``snapshot``: true or false (default false).

    Raises:
        BadRequest: neither.
    """
    if text is None:
        return False
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise BadRequest(f"snapshot: {text!r} is not true or false")


def frame(
    *,
    event: str | None = None,
    data: bytes | None = None,
    event_id: str | None = None,
    comment: str | None = None,
) -> bytes:
    """One SSE message (``text/event-stream``): its lines and the blank line that ends it.

    ``event_id`` ``""`` clears the client's last event id. ``data`` is split at line ends, one
    ``data:`` line each (JSON from orjson has none; the split keeps any other text well framed).
    """
    lines: list[bytes] = []
    if comment is not None:
        lines.append(b": " + comment.encode())
    if event_id is not None:
        lines.append(b"id: " + event_id.encode())
    if event is not None:
        lines.append(b"event: " + event.encode())
    if data is not None:
        lines.extend(b"data: " + line for line in data.replace(b"\r\n", b"\n").split(b"\n"))
    return b"\n".join(lines) + b"\n\n"


def reset(reason: str) -> bytes:
    return frame(event="reset", event_id="", data=orjson.dumps({"reason": reason}))


def error(status: int, detail: str) -> bytes:
    return frame(event="error", data=orjson.dumps({"status": status, "detail": detail}))


def blocking_client(url: str) -> Redis:
    """A client of one stream's own for its blocking reads.

    ``XREAD BLOCK`` holds a connection for as long as it waits, and needs a socket timeout
    longer than the block (the app's client times out after a second).
    """
    return Redis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=BLOCK_S + CONNECT_TIMEOUT_S + 5.0,
        single_connection_client=True,
        client_name=CLIENT_NAME,
    )


def change_event(grant: Grant, fields: dict[bytes, bytes]) -> tuple[str, bytes] | None:
    """(event, data) of one stream entry as ``grant`` sees it, None when it sees no change."""
    raw_after, raw_before = fields.get(b"r", b""), fields.get(b"b", b"")
    after = grant.present_raw(raw_after) if raw_after else None
    before: Any = orjson.loads(raw_before) if raw_before else None
    if not isinstance(before, dict) or not grant.visible(before):
        before = None
    if after is not None:
        if before is not None and grant.present(before) == after:
            return None
        return "upsert", orjson.dumps(after)
    if before is None:
        return None
    key = orjson.loads(fields[b"kj"])
    # Key columns are never masked (control refuses it); a key field masked all the same is
    # left out rather than shown.
    shown = {name: key.get(name) for name in grant.product.key if name not in grant.masked}
    return "delete", orjson.dumps(shown)


class ChangeFeed:
    """One client's stream of changes of one product (see the module docstring).

    ``access`` returns the grant the request reads under, checked again: it raises
    :class:`~freshet.serve.exceptions.ApiError` once the key or the product no longer allow
    reading.
    """

    def __init__(
        self, redis: Redis, blocking: Redis, view: StoredView, access: Callable[[], Grant]
    ) -> None:
        self._r = redis
        self._blocking = blocking
        self._view = view
        self._access = access
        self._read_after = redis.register_script(_READ_AFTER)

    async def events(self, start: Position | None, snapshot: bool) -> AsyncIterator[bytes]:
        """The stream's messages, from ``start`` (None: from now, after a snapshot if asked).

        Closes the blocking client when it ends (or is closed).
        """
        try:
            async for message in self._events(start, snapshot):
                yield message
        except ApiError as exc:
            yield error(exc.status_code, str(exc))
        except RedisError as exc:
            log.warning("changes of %s: Redis failed: %s", self._view.name, exc)
            yield error(503, "serve cannot read Redis: reconnect with the last event id")
        finally:
            # A stream ends by cancellation when its client goes: close the connection all the
            # same (a cancelled scope would cancel the close too).
            with anyio.CancelScope(shield=True):
                await self._blocking.aclose()

    async def _events(self, start: Position | None, snapshot: bool) -> AsyncIterator[bytes]:
        view = self._view
        stream = view.keys.changes
        if start is not None:
            if start.generation != view.generation:
                yield reset(
                    f"event id {start.event_id} is of generation {start.generation} of the view, "
                    f"and generation {view.generation} is served now: re-read the rows and "
                    "reconnect without an id"
                )
                return
            position = start.entry
        else:
            position = await self._last_entry(stream)
            shown = 0
            if snapshot:
                async for message in self._snapshot():
                    shown += 1
                    yield message
                if await self._ready_generation() != view.generation:
                    yield reset(self._redefined())
                    return
            live = orjson.dumps({"generation": view.generation, "snapshot_rows": shown})
            event_id = Position(view.generation, position).event_id
            yield frame(event="live", event_id=event_id, data=live)
        sent = position
        loop_time = asyncio.get_running_loop().time
        last_write = loop_time()
        while True:
            grant = self._access()
            if grant.product.view != view.name:
                yield reset(
                    f"product {grant.product.name!r} now exposes view {grant.product.view!r}: "
                    "re-read the rows and reconnect without an id"
                )
                return
            found = await self._read_after(keys=[stream], args=[position, READ_COUNT])
            if not int(found[0]):
                if await self._ready_generation() != view.generation:
                    yield reset(self._redefined())
                else:
                    yield reset(
                        f"the changes after {Position(view.generation, position).event_id} are "
                        "no longer kept: re-read the rows and reconnect without an id"
                    )
                return
            entries = found[1]
            for raw_id, raw_fields in entries:
                position = raw_id.decode()
                fields = dict(zip(raw_fields[::2], raw_fields[1::2], strict=True))
                event = change_event(grant, fields)
                if event is not None:
                    sent = position
                    last_write = loop_time()
                    yield frame(
                        event=event[0],
                        event_id=Position(view.generation, position).event_id,
                        data=event[1],
                    )
            idle = loop_time() - last_write
            if idle >= HEARTBEAT_S:
                # Also while entries the role does not see keep coming.
                moved = None if sent == position else Position(view.generation, position)
                sent = position
                last_write = loop_time()
                yield frame(
                    comment="heartbeat", event_id=moved.event_id if moved is not None else None
                )
                idle = 0.0
            if entries:
                continue
            # Caught up: what else may end the stream, then wait for entries or a heartbeat.
            if await self._ready_generation() != view.generation:
                yield reset(self._redefined())
                return
            block = max(0.001, min(BLOCK_S, HEARTBEAT_S - idle))
            await self._blocking.xread({stream: position}, count=1, block=int(block * 1000))

    async def _snapshot(self) -> AsyncIterator[bytes]:
        """Every row the role sees, as ``upsert`` events without ids, in key order."""
        cursor: str | None = None
        while True:
            page = await read_page(
                self._r, self._view, self._access(), Query((), None, False, MAX_LIMIT, cursor)
            )
            for row in page.rows:
                yield frame(event="upsert", data=orjson.dumps(row))
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def _last_entry(self, stream: str) -> str:
        found: Any = await self._r.xrevrange(stream, "+", "-", count=1)
        return found[0][0].decode() if found else START

    async def _ready_generation(self) -> int | None:
        raw = await self._r.hget(self._view.keys.gen, "ready")
        return int(raw) if raw is not None else None

    def _redefined(self) -> str:
        return (
            f"view {self._view.name!r} was redefined: generation {self._view.generation} is no "
            "longer served; re-read the rows and reconnect without an id"
        )
