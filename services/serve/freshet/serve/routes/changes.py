"""``GET /v1/products/{name}/changes``: a product's live changes as Server-Sent Events.

The events and how a client resumes are described in :mod:`freshet.serve.read.changes`.
Parameters: ``last_event_id`` (the ``Last-Event-ID`` header wins over it: it is what an
``EventSource`` sends when it reconnects), ``snapshot=true`` (the rows first, when starting
without an id) and read-your-writes ``lsn``, ``source``, ``timeout_ms`` (wait before starting).
Everything that can be refused is refused before the stream starts, with its HTTP status (400,
401, 403, 503, 504); once it runs, what ends it is an event (``reset`` or ``error``).

The stream is a plain :class:`~starlette.responses.StreamingResponse` with the SSE framing of
:func:`~freshet.serve.read.changes.frame`: the heartbeat is part of the read loop (it carries the
resume position past changes the role does not see), which a separate ping task would not know.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from freshet.serve.access import Grant
from freshet.serve.deps import CatalogDep, GrantsDep, KeyDep, RedisDep, SettingsDep, ViewsDep
from freshet.serve.exceptions import BadRequest, Unauthorized
from freshet.serve.read.changes import ChangeFeed, blocking_client, parse_event_id, parse_snapshot
from freshet.serve.routes.products import WAIT_PARAMS, wait_if_asked

router = APIRouter(prefix="/v1/products")

PARAMS = ("last_event_id", "snapshot", *WAIT_PARAMS)

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
"""No caching, and no buffering by nginx-like proxies."""


@router.get("/{name}/changes")
async def changes(
    name: str,
    request: Request,
    catalog: CatalogDep,
    grants: GrantsDep,
    views: ViewsDep,
    redis: RedisDep,
    settings: SettingsDep,
    key: KeyDep,
) -> StreamingResponse:
    """Upserts and deletes as they are applied, resumable from the last event id."""
    grant = grants.for_key(key, name)
    params = request.query_params
    for param, _value in params.multi_items():
        if param not in PARAMS:
            raise BadRequest(f"unknown parameter {param!r}: changes take only {', '.join(PARAMS)}")
    last_event_id = request.headers.get("last-event-id") or params.get("last_event_id")
    start = parse_event_id(last_event_id) if last_event_id else None
    snapshot = parse_snapshot(params.get("snapshot"))
    await wait_if_asked(request, catalog, redis, settings, grant.product.view)
    view = await views.ready(grant.product.view)

    def access() -> Grant:
        """The grant, checked again: the key may have expired or been revoked meanwhile."""
        current = catalog.key(key.id)
        if (
            current is None
            or current.secret_sha256 != key.secret_sha256
            or (current.expires_at_ms is not None and current.expires_at_ms <= time.time() * 1000)
        ):
            raise Unauthorized("the API key is no longer valid")
        return grants.for_key(current, name)

    feed = ChangeFeed(redis, blocking_client(settings.redis_url), view, access)
    return StreamingResponse(
        feed.events(start, snapshot), media_type="text/event-stream", headers=HEADERS
    )
