"""``GET /health``: the only endpoint that answers without credentials; it tells nothing else."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from freshet.control.deps import StateDep
from freshet.control.models import Health

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
def health(state: StateDep) -> JSONResponse:
    """200 ``{"status": "ok"}`` once the desired state has been read, else 503."""
    if state.started:
        return JSONResponse(Health(status="ok").model_dump())
    return JSONResponse(Health(status="unavailable").model_dump(), status_code=503)
