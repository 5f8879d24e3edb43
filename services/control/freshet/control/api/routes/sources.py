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
from freshet.control.deps import SecretBoxDep, StateDep
from freshet.control.exceptions import InvalidSpecError, SourceNotFoundError
from freshet.control.models import SourceCreate, SourceList, SourceOut, SourceReplace

log = logging.getLogger(__name__)

router = APIRouter(prefix="/sources", tags=["sources"])

_ERRORS: dict[int | str, dict[str, str]] = {
    401: {"description": "Missing or wrong bearer token."},
    503: {"description": "Kafka did not acknowledge the change; retry."},
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={**_ERRORS, 409: {"description": "A source of that name exists."}},
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
    state.create_source(spec)
    log.info("source %s created (%s:%d/%s)", spec.name, spec.host, spec.port, spec.database)
    response.headers["Location"] = request.url_for("get_source", name=spec.name).path
    return SourceOut.from_spec(spec, state.get_status(spec.name))


@router.get("", responses=_ERRORS)
def list_sources(state: StateDep) -> SourceList:
    """Every source with its status, sorted by name."""
    return SourceList(
        sources=[SourceOut.from_spec(s, state.get_status(s.name)) for s in state.list_sources()]
    )


@router.get("/{name}", responses={**_ERRORS, 404: {"description": "No such source."}})
def get_source(name: str, state: StateDep) -> SourceOut:
    """One source with its status (``{"state": "pending"}`` until ingest reports)."""
    spec = state.get_source(name)
    if spec is None:
        raise SourceNotFoundError(name)
    return SourceOut.from_spec(spec, state.get_status(name))


@router.put("/{name}", responses={**_ERRORS, 404: {"description": "No such source."}})
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

    spec = state.replace_source(name, build)
    log.info("source %s replaced (generation %d)", name, spec.generation)
    return SourceOut.from_spec(spec, state.get_status(name))


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**_ERRORS, 404: {"description": "No such source."}},
)
def delete_source(name: str, state: StateDep) -> Response:
    """Delete a source (a tombstone on the desired-state topic); ingest then stops it."""
    state.delete_source(name)
    log.info("source %s deleted", name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
