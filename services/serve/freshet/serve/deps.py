"""FastAPI dependencies of serve, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis

from freshet.serve.service import ServeService


def get_redis(request: Request) -> Redis:
    """The process's Redis client, created by the app's lifespan."""
    client: Redis = request.app.state.redis
    return client


def get_service(request: Request) -> ServeService | None:
    """The materializer the app runs (None in an app built without one)."""
    service: ServeService | None = request.app.state.service
    return service


RedisDep = Annotated[Redis, Depends(get_redis)]
ServiceDep = Annotated[ServeService | None, Depends(get_service)]
