"""``/v1/keys``: create, list, read and revoke the API keys serve accepts.

``POST`` answers the key itself, ``fsk_<id>_<secret>``, once (with ``Cache-Control: no-store``);
control writes only the SHA-256 of the secret to ``freshet.control.keys`` (see
:mod:`freshet.control.keys`), so no later answer can show it. ``DELETE`` revokes a key with a
tombstone. The products a key names need not exist yet. Logs name a key by its id only.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated

from fastapi import APIRouter, Body, Path, Request, Response, status

from freshet.common.products import ApiKeySpec
from freshet.control.access_models import (
    ALL_PRODUCTS,
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyOut,
    to_ms,
)
from freshet.control.api.responses import COMMON, Responses, not_found
from freshet.control.deps import StateDep
from freshet.control.exceptions import AlreadyExistsError, InvalidSpecError
from freshet.control.keys import new_key

log = logging.getLogger(__name__)

router = APIRouter(prefix="/keys", tags=["keys"])

_NOT_FOUND = not_found("key")
_REFUSED: Responses = {
    422: {"description": "Invalid body: a bad role or product name, or an expiry in the past."}
}
_BAD_ID: Responses = {422: {"description": "Not a key id."}}
_ID_ATTEMPTS = 3

KeyId = Annotated[
    str,
    Path(
        pattern=r"^[a-z0-9]{8,32}$",
        description="The key's id: the part between fsk_ and the next _ of the key.",
    ),
]
"""A key id in a path; anything else (a whole key pasted by mistake) is a 422 that echoes
nothing, rather than a 404 that would repeat it."""


def _once(items: list[str]) -> tuple[str, ...]:
    """``items`` without repetitions, in their first order (a key's roles are ordered)."""
    return tuple(dict.fromkeys(items))


def _check(body: KeyCreate, now_ms: int) -> int | None:
    """The expiry in milliseconds, after checking what the body's types cannot.

    Raises:
        InvalidSpecError: ``"*"`` given with product names, or an expiry not in the future.
    """
    if ALL_PRODUCTS in body.products and len(set(body.products)) > 1:
        raise InvalidSpecError(
            ("body", "products"),
            '"*" means every product: give it alone, or list product names without it',
        )
    if body.expires_at is None:
        return None
    expires_ms = to_ms(body.expires_at)
    if expires_ms <= now_ms:
        raise InvalidSpecError(
            ("body", "expires_at"), "the key would have expired already: give a future time"
        )
    return expires_ms


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={**COMMON, **_REFUSED},
)
def create_key(
    body: Annotated[KeyCreate, Body()], state: StateDep, request: Request, response: Response
) -> KeyCreated:
    """Make a key and answer it, ``fsk_<id>_<secret>``, this once: only its hash is kept."""
    now_ms = int(time.time() * 1000)
    expires_ms = _check(body, now_ms)
    for attempt in range(_ID_ATTEMPTS):
        made = new_key()
        spec = ApiKeySpec(
            id=made.id,
            name=body.name,
            secret_sha256=made.sha256,
            roles=_once(body.roles),
            products=_once(body.products),
            created_at_ms=now_ms,
            expires_at_ms=expires_ms,
        )
        try:
            state.keys.create(spec.id, spec)
            break
        except AlreadyExistsError:  # 36**12 ids: only if the generator is broken
            if attempt == _ID_ATTEMPTS - 1:
                raise
    log.info("key %s created (roles %s)", spec.id, ", ".join(spec.roles))
    response.headers["Location"] = request.url_for("get_key", key_id=spec.id).path
    response.headers["Cache-Control"] = "no-store"
    return KeyCreated(**KeyOut.from_spec(spec).model_dump(), key=made.full)


@router.get("", responses=COMMON)
def list_keys(state: StateDep) -> KeyList:
    """Every key that is not revoked (expired ones included), sorted by id; never a secret."""
    return KeyList(keys=[KeyOut.from_spec(k) for k in state.keys.specs()])


@router.get("/{key_id}", responses={**COMMON, **_NOT_FOUND, **_BAD_ID})
def get_key(key_id: KeyId, state: StateDep) -> KeyOut:
    """One key, without its secret or the secret's hash."""
    return KeyOut.from_spec(state.keys.require(key_id))


@router.delete(
    "/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**COMMON, **_NOT_FOUND, **_BAD_ID},
)
def delete_key(key_id: KeyId, state: StateDep) -> Response:
    """Revoke a key (a tombstone on the desired-state topic); serve then refuses it."""
    state.keys.delete(key_id)
    log.info("key %s revoked", key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
