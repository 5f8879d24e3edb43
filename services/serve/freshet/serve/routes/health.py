"""``GET /health``: answers without credentials, like ``/metrics``; every other route needs them."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from freshet.serve.deps import RedisDep, ServiceDep

log = logging.getLogger(__name__)
router = APIRouter()


@router.get("/health")
async def health(redis: RedisDep, service: ServiceDep) -> JSONResponse:
    """200 ``{"status": "ok", ...}`` when Redis and the target PostgreSQL answer, else 503.

    ``postgres`` is ``"not configured"`` when serve has no target database (not a failure).
    ``views`` shows each view this replica materializes: its generation and, per store, its
    state (``pending``, ``loading``, ``ready``, ``error`` with the reason, ``stale``) and lag.
    ``products`` shows each product this replica publishes as a Kafka topic: its generation,
    topic, topic role, state (``starting``, ``republishing`` during a first pass, ``publishing``,
    ``error`` with the reason), records published since it started, and lag.
    The body names only the kind of an error, never a URL (it may carry a password).
    """
    ok = True
    body: dict[str, Any] = {}
    try:
        await redis.ping()
        body["redis"] = "ok"
    except (RedisError, OSError) as exc:
        log.warning("health: redis unreachable: %s", type(exc).__name__)
        body["redis"] = f"unreachable ({type(exc).__name__})"
        ok = False
    target = service.target if service is not None else None
    if target is None:
        body["postgres"] = "not configured"
    else:
        try:
            await run_in_threadpool(target.ping)
            body["postgres"] = "ok"
        except (SQLAlchemyError, OSError) as exc:
            log.warning("health: postgres unreachable: %s", type(exc).__name__)
            body["postgres"] = f"unreachable ({type(exc).__name__})"
            ok = False
    if service is not None:
        if not service.alive():
            body["materializer"] = "stalled"
            ok = False
        body["views"] = service.views()
        if not service.publishing.alive():
            body["publisher"] = "stalled"
            ok = False
        body["products"] = service.products()
    status = {"status": "ok" if ok else "unhealthy"}
    return JSONResponse({**status, **body}, status_code=200 if ok else 503)
