"""``GET /health``: answers without credentials, like ``/metrics``; every other route needs them."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from freshet.serve.deps import RedisDep

log = logging.getLogger(__name__)
router = APIRouter()


@router.get("/health")
async def health(redis: RedisDep) -> JSONResponse:
    """200 ``{"status": "ok"}`` when Redis answers a PING, else 503 naming the failure.

    The body names only the kind of error, never the Redis URL (it may carry a password).
    """
    try:
        await redis.ping()
    except (RedisError, OSError) as exc:
        log.warning("health: redis unreachable: %s", type(exc).__name__)
        return JSONResponse(
            {"status": "unhealthy", "redis": f"unreachable ({type(exc).__name__})"},
            status_code=503,
        )
    return JSONResponse({"status": "ok", "redis": "ok"})
