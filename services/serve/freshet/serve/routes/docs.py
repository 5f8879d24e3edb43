"""``GET /openapi.json``: the API as the calling key sees it (see :mod:`freshet.serve.openapi`)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from freshet.serve import openapi
from freshet.serve.access import readable_grants
from freshet.serve.deps import CatalogDep, GrantsDep, KeyDep
from freshet.serve.routes.products import json_response

router = APIRouter()


@router.get("/openapi.json")
async def openapi_document(catalog: CatalogDep, grants: GrantsDep, key: KeyDep) -> Response:
    """The OpenAPI 3.1 document of the products this key may read."""
    return json_response(openapi.document(readable_grants(catalog, grants, key)))
