"""Error answers of the control API.

Validation errors are answered as FastAPI does (422, ``{"detail": [{"loc", "msg", "type"}]}``)
but without ``input``, ``ctx`` and ``url``: FastAPI's default echoes the submitted values,
passwords included. Refused SQL adds where the problem is (see
:class:`~freshet.control.exceptions.InvalidSqlError`): ``{"loc": ["body", "sql"], "msg",
"type": "sql", "position", "line", "column"}``; the message is the compiler's, never the SQL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from freshet.control.exceptions import ControlError, InvalidSpecError

DISCRIMINATOR = "kind"
"""The field that discriminates the unions of the API's bodies."""
_MISSING_TAG = "union_tag_not_found"
_WRONG_TAG = "union_tag_invalid"


def _without_tags(loc: Sequence[Any], body: Any) -> list[Any]:
    """``loc`` without the tags pydantic inserts after a discriminated union's location.

    ``["body", "postgres", "port"]`` becomes ``["body", "port"]``: a part is a tag where the body
    holds an object whose ``kind`` equals it and that has no field of that name.
    """
    if not loc or loc[0] != "body":
        return list(loc)
    out: list[Any] = ["body"]
    node = body
    for part in loc[1:]:
        if isinstance(node, Mapping) and node.get(DISCRIMINATOR) == part and part not in node:
            continue
        out.append(part)
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
    return out


def safe_error(error: Mapping[str, Any], body: Any = None) -> dict[str, Any]:
    """One validation error reduced to ``loc``, ``msg`` and ``type``.

    A discriminated union reports a missing or unknown ``kind`` at the union's own location;
    the discriminator is appended so ``loc`` names the field. ``body`` (the request's parsed
    body, if any) only serves to recognise union tags in ``loc``; none of it is returned.
    """
    loc = _without_tags(error.get("loc", ()), body)
    msg = str(error.get("msg", "invalid value"))
    kind = str(error.get("type", "value_error"))
    if kind in (_MISSING_TAG, _WRONG_TAG):
        discriminator = str((error.get("ctx") or {}).get("discriminator", "")).strip("'")
        if discriminator:
            loc.append(discriminator)
        if kind == _MISSING_TAG:
            msg = "Field required"
    return {"loc": loc, "msg": msg, "type": kind}


def _unprocessable(errors: Sequence[Mapping[str, Any]], body: Any = None) -> JSONResponse:
    return JSONResponse({"detail": [safe_error(e, body) for e in errors]}, status_code=422)


async def _on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    error = cast(RequestValidationError, exc)
    return _unprocessable(error.errors(), error.body)


async def _on_control_error(_request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, InvalidSpecError):
        return JSONResponse({"detail": [exc.detail()]}, status_code=422)
    status_code = exc.status_code if isinstance(exc, ControlError) else 500
    return JSONResponse({"detail": str(exc)}, status_code=status_code)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(ControlError, _on_control_error)
