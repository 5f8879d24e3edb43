"""Serve's HTTP routes, one module per resource, aggregated in :data:`router`."""

from __future__ import annotations

from fastapi import APIRouter

from freshet.serve.routes import health

router = APIRouter()
router.include_router(health.router)
