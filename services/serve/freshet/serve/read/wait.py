"""Read-your-writes: wait until what serve reads of a view reflects a source position.

A client that knows a source position (``pg_current_wal_lsn()`` after its own commit) passes it
as ``lsn`` (and ``source`` when the view reads several). Two conditions, in order:

1. transform reports (on ``freshet.status``) that the view has applied every change of the
   source up to ``lsn`` and that Kafka acknowledged its output: every row reflecting it lies
   below the offsets the status names (:meth:`~freshet.serve.catalog.Catalog.outputs`);
2. Redis holds the view's topic up to those offsets, in the generation the status is about,
   and that generation is the one readers read.

The first is woken by the status follower; the second is polled (a few milliseconds apart: it is
usually true, or soon, once the first is). Past ``timeout_ms`` the request fails with 504 and
says which condition was not met.
"""

from __future__ import annotations

import asyncio
import re

from redis.asyncio import Redis

from freshet.common.events import lsn_from_str, lsn_to_str
from freshet.common.schemas import DataflowStatus
from freshet.serve.catalog import Catalog
from freshet.serve.exceptions import BadRequest, WaitTimeout
from freshet.serve.materialize.stores.redis import RedisKeys

DEFAULT_TIMEOUT_MS = 5_000
MAX_TIMEOUT_MS = 60_000
POLL_FIRST_S = 0.002
POLL_MAX_S = 0.02

_LSN = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")


def parse_lsn(text: str) -> int:
    """``X/Y`` as PostgreSQL shows a position -> the integer LSN.

    Raises:
        BadRequest: not an LSN.
    """
    if not _LSN.match(text):
        raise BadRequest(
            "lsn: not a PostgreSQL LSN: give two hexadecimal numbers of up to 8 digits "
            "separated by '/', as pg_current_wal_lsn() shows them (e.g. 0/16B3748)"
        )
    return lsn_from_str(text)


def parse_timeout(text: str | None) -> float:
    """``timeout_ms`` -> seconds (default 5 s, at most 60 s).

    Raises:
        BadRequest: not an integer in range.
    """
    if text is None:
        return DEFAULT_TIMEOUT_MS / 1000
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"timeout_ms: {text!r} is not an integer") from None
    if not 0 <= value <= MAX_TIMEOUT_MS:
        raise BadRequest(f"timeout_ms must be between 0 and {MAX_TIMEOUT_MS}, not {value}")
    return value / 1000


def _source(status: DataflowStatus | None, source: str | None, view: str) -> str | None:
    if source is not None or status is None:
        return source
    sources = sorted(status.applied)
    if len(sources) > 1:
        raise BadRequest(
            f"source: view {view!r} reads the sources {', '.join(sources)}: say which one the "
            "lsn is of with source=<name>"
        )
    return sources[0] if sources else None


async def wait_applied(
    catalog: Catalog,
    redis: Redis,
    root: str,
    view: str,
    lsn: int,
    source: str | None,
    timeout: float,
) -> None:
    """Return once serve's Redis reflects ``lsn`` of ``source`` in ``view``.

    Raises:
        BadRequest: no source given and the view reads several.
        WaitTimeout: not within ``timeout`` seconds; the message says what was missing.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    keys = RedisKeys(root, view)
    target = lsn_to_str(lsn)
    chosen: list[str | None] = [source]

    def applied(status: DataflowStatus | None) -> bool:
        chosen[0] = _source(status, source, view)
        return (
            status is not None
            and chosen[0] is not None
            and status.applied.get(chosen[0], -1) >= lsn
        )

    while True:
        done, status = await catalog.status.wait_until(
            "view", view, DataflowStatus, applied, max(0.0, deadline - loop.time())
        )
        if not done or status is None:
            got = (
                "no status yet"
                if status is None
                else f"it has applied {_applied_text(status, chosen[0])}"
            )
            raise WaitTimeout(
                f"view {view!r} did not apply {target} of {chosen[0] or 'its source'} within "
                f"{timeout * 1000:.0f} ms ({got})"
            )
        outputs = catalog.outputs(view, status.generation)
        missing = await _poll_store(redis, keys, root, view, status.generation, outputs, deadline)
        if missing is None:
            return
        if missing == "generation" and loop.time() < deadline:
            # Serve reads a newer generation than the status is about: wait for its status.
            await asyncio.sleep(POLL_MAX_S)
            continue
        raise WaitTimeout(
            f"view {view!r} applied {target}, but serve has not stored its rows within "
            f"{timeout * 1000:.0f} ms ({missing})"
        )


def _applied_text(status: DataflowStatus, source: str | None) -> str:
    if source is None or source not in status.applied:
        return "nothing of it"
    return lsn_to_str(status.applied[source])


async def _poll_store(
    redis: Redis,
    keys: RedisKeys,
    root: str,
    view: str,
    generation: int,
    outputs: dict[int, int],
    deadline: float,
) -> str | None:
    """None once Redis holds ``outputs`` of ``generation`` as the ready one; else why not."""
    loop = asyncio.get_running_loop()
    meta = RedisKeys(root, view, generation).meta
    pause = POLL_FIRST_S
    while True:
        ready = await redis.hget(keys.gen, "ready")
        ready_gen = int(ready) if ready is not None else 0
        if ready_gen > generation:
            return "generation"
        missing: str | None = f"generation {generation} is not ready (serve reads {ready_gen})"
        if ready_gen == generation:
            fields = [f"o:{p}" for p in outputs]
            held = await redis.hmget(meta, fields) if fields else []
            behind = [
                f"partition {p} at {int(h or 0)} of {end}"
                for (p, end), h in zip(outputs.items(), held, strict=True)
                if int(h or 0) < end
            ]
            missing = "; ".join(behind) or None
        if missing is None:
            return None
        if loop.time() + pause > deadline:
            return missing
        await asyncio.sleep(pause)
        pause = min(pause * 2, POLL_MAX_S)
