"""``/v1/products``: create, list, read, replace and delete data products.

A product exposes fields of one view to API keys, per access role with a row filter and masks;
serve reads it from ``freshet.control.products``. It is checked against the view before anything
is written (see :mod:`freshet.control.products`): a problem is a 422 naming the role and field
(and, for a row filter, the position in it) and changes nothing. The view's key columns are
always exposed. No answer and no log carries the salt of ``hash`` masks.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Body, Request, Response, status

from freshet.common.products import ProductSpec
from freshet.control.access_models import ProductCreate, ProductList, ProductOut, ProductReplace
from freshet.control.api.responses import COMMON, Responses, not_found
from freshet.control.deps import SecretBoxDep, StateDep
from freshet.control.exceptions import InvalidSpecError
from freshet.control.products import build_product

log = logging.getLogger(__name__)

router = APIRouter(prefix="/products", tags=["products"])

_NOT_FOUND = not_found("product")
_REFUSED: Responses = {
    422: {
        "description": "Invalid body, a view or field that does not exist, a mask on a field "
        "not exposed or on a key column, a row filter that does not compile (with its "
        "position), or a topic_role missing (publish_topic) or naming no role of the product."
    }
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={**COMMON, **_REFUSED, 409: {"description": "A product of that name exists."}},
)
def create_product(
    body: Annotated[ProductCreate, Body()],
    state: StateDep,
    box: SecretBoxDep,
    request: Request,
    response: Response,
) -> ProductOut:
    """Check the product against its view and create it at generation 1; 409 if it exists."""
    with state.views_and_products:  # checked against the view as it is when written
        spec = build_product(
            body.name,
            state.views.get(body.view),
            body.view,
            body.fields,
            body.roles,
            body.publish_topic,
            topic_role=body.topic_role,
            box=box,
        )
        state.products.create(spec.name, spec)
    log.info("product %s created over view %s (%d fields)", spec.name, spec.view, len(spec.fields))
    response.headers["Location"] = request.url_for("get_product", name=spec.name).path
    return ProductOut.from_spec(spec)


@router.get("", responses=COMMON)
def list_products(state: StateDep) -> ProductList:
    """Every product, sorted by name."""
    return ProductList(products=[ProductOut.from_spec(p) for p in state.products.specs()])


@router.get("/{name}", responses={**COMMON, **_NOT_FOUND})
def get_product(name: str, state: StateDep) -> ProductOut:
    """One product."""
    return ProductOut.from_spec(state.products.require(name))


@router.put("/{name}", responses={**COMMON, **_NOT_FOUND, **_REFUSED})
def replace_product(
    name: str, body: Annotated[ProductReplace, Body()], state: StateDep, box: SecretBoxDep
) -> ProductOut:
    """Replace the whole spec of a product and increase its generation by one.

    It is checked against the view as it is now; the salt of ``hash`` masks is kept.
    """
    if body.name is not None and body.name != name:
        raise InvalidSpecError(
            ("body", "name"),
            "the name in the body differs from the path: a product cannot be renamed",
        )

    def build(current: ProductSpec) -> ProductSpec:
        return build_product(
            name,
            state.views.get(body.view),
            body.view,
            body.fields,
            body.roles,
            body.publish_topic,
            topic_role=body.topic_role,
            box=box,
            salt_encrypted=current.hash_salt_encrypted,
            generation=current.generation + 1,
        )

    with state.views_and_products:  # checked against the view as it is when written
        spec = state.products.replace(name, build)
    log.info("product %s replaced (generation %d)", name, spec.generation)
    return ProductOut.from_spec(spec)


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**COMMON, **_NOT_FOUND},
)
def delete_product(name: str, state: StateDep) -> Response:
    """Delete a product (a tombstone on the desired-state topic); serve then stops serving it."""
    state.products.delete(name)
    log.info("product %s deleted", name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
