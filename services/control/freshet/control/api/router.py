"""All routes of the control API in one place.

Everything under ``/v1`` requires the admin token (the ``Admin`` dependency on the version
router), so a resource added there is protected without doing anything; ``/health`` is the one
open route.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from freshet.control.api.routes import health, keys, pipelines, products, sources, views
from freshet.control.deps import require_admin

v1_router = APIRouter(prefix="/v1", dependencies=[Depends(require_admin)])
v1_router.include_router(sources.router)
v1_router.include_router(views.router)
v1_router.include_router(pipelines.router)
v1_router.include_router(products.router)
v1_router.include_router(keys.router)

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(v1_router)
