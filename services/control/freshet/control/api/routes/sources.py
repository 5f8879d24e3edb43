"""``/v1/sources``: create, list, read, replace and delete CDC sources.

Every write goes to the compacted desired-state topic and is acknowledged by Kafka before it is
answered; ingest picks it up from there. Responses never carry the password (see
:mod:`freshet.control.models`); logs name the source, never its password.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Body, Request, Response, status

from freshet.common.schemas import SourceSpec
from freshet.control.api.responses import COMMON, not_found
from freshet.control.deps import SecretBoxDep, StateDep
from freshet.control.exceptions import InvalidSpecError
from freshet.control.models import SourceCreate, SourceList, SourceOut, SourceReplace

log = logging.getLogger(__name__)

router = APIRouter(prefix="/sources", tags=["sources"])

_NOT_FOUND = not_found("source")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={**COMMON, 409: {"description": "A source of that name exists."}},
)
def create_source(
    body: Annotated[SourceCreate, Body()],
    state: StateDep,
    box: SecretBoxDep,
    request: Request,
    response: Response,
) -> SourceOut:
    """Create a source at generation 1; 409 if the name is taken."""
    spec = body.to_spec(body.name, box.encrypt(body.password), generation=1)
    state.sources.create(spec.name, spec)
    log.info("source %s created (%s:%d/%s)", spec.name, spec.host, spec.port, spec.database)
    response.headers["Location"] = request.url_for("get_source", name=spec.name).path
    return SourceOut.from_spec(spec, state.source_status(spec.name))


@router.get("", responses=COMMON)
def list_sources(state: StateDep) -> SourceList:
    """Every source with its status, sorted by name."""
    return SourceList(
        sources=[SourceOut.from_spec(s, state.source_status(s.name)) for s in state.sources.specs()]
    )


@router.get("/{name}", responses={**COMMON, **_NOT_FOUND})
def get_source(name: str, state: StateDep) -> SourceOut:
    """One source with its status (``{"state": "pending"}`` until ingest reports)."""
    return SourceOut.from_spec(state.sources.require(name), state.source_status(name))


@router.put("/{name}", responses={**COMMON, **_NOT_FOUND})
def replace_source(
    name: str,
    body: Annotated[SourceReplace, Body()],
    state: StateDep,
    box: SecretBoxDep,
) -> SourceOut:
    """Replace the whole spec of a source and increase its generation by one.

    Omitted optional fields take their defaults, not their previous values. The password may be
    omitted to keep the stored one while host, port and user stay the same.
    """
    if body.name is not None and body.name != name:
        raise InvalidSpecError(
            ("body", "name"),
            "the name in the body differs from the path: a source cannot be renamed",
        )

    def build(current: SourceSpec) -> SourceSpec:
        if body.password is not None:
            password_encrypted = box.encrypt(body.password)
        elif (body.host, body.port, body.user) == (current.host, current.port, current.user):
            password_encrypted = current.password_encrypted
        else:
            raise InvalidSpecError(
                ("body", "password"),
                "Field required when host, port or user change: the stored password is only "
                "kept for the same server and user",
            )
        return body.to_spec(name, password_encrypted, generation=current.generation + 1)

    spec = state.sources.replace(name, build)
    log.info("source %s replaced (generation %d)", name, spec.generation)
    return SourceOut.from_spec(spec, state.source_status(name))


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**COMMON, **_NOT_FOUND},
)
def delete_source(name: str, state: StateDep) -> Response:
    """Delete a source (a tombstone on the desired-state topic); ingest then stops it."""
    state.sources.delete(name)
    log.info("source %s deleted", name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
