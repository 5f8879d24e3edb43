"""``/v1/views``: create, list, read, replace and delete incremental materialized views.

A view's SQL is compiled against the tables ingest captures (``freshet.schemas``, only those of
sources that exist) before anything is written: SQL the compiler refuses is a 422 naming the
problem and its position, and changes nothing. The spec written to ``freshet.control.views``
carries what the compiler derived (key, columns, tables); transform runs it from there.

``GET /v1/views/{name}/wait`` gives read-your-writes: it answers once the view has applied a
source position the client knows (e.g. ``pg_current_wal_lsn()`` after its own commit).
"""

from __future__ import annotations

import logging
import re
from typing import Annotated

from fastapi import APIRouter, Body, Query, Request, Response, status

from freshet.common.events import lsn_from_str, lsn_to_str
from freshet.common.products import ProductSpec
from freshet.common.schemas import DataflowStatus, ViewSpec
from freshet.common.sql.errors import SqlError
from freshet.common.sql.types import is_ordered, sql_name
from freshet.common.sql.views import Catalog, compile_view
from freshet.control.api.responses import COMMON, Responses, not_found
from freshet.control.deps import StateDep
from freshet.control.exceptions import (
    InUseError,
    InvalidSpecError,
    InvalidSqlError,
    NotFoundError,
    StateUnavailableError,
    WaitTimeoutError,
)
from freshet.control.models import DataflowStatusOut, ViewCreate, ViewList, ViewOut, ViewReplace
from freshet.control.products import conflicts, key_changes, refit
from freshet.control.state import ControlState

log = logging.getLogger(__name__)

router = APIRouter(prefix="/views", tags=["views"])

DEFAULT_WAIT_MS = 10_000
MAX_WAIT_MS = 60_000
_LSN = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")

_NOT_FOUND = not_found("view")
_REFUSED: Responses = {
    422: {"description": "Invalid body, or SQL the compiler refuses (with its position)."}
}
_IN_USE: Responses = {
    409: {
        "description": "A product over the view exposes a field the new SQL drops or retypes, "
        "or addresses rows by a key the new SQL changes."
    }
}


def _compile(
    state: ControlState, name: str, sql: str, indexes: list[str], generation: int
) -> ViewSpec:
    """The spec of view ``name`` defined by ``sql``, compiled against the captured tables.

    Raises:
        InvalidSqlError: the compiler refused the SQL.
        InvalidSpecError: ``indexes`` names a column the view does not have, or one of a type
            without an order (json, jsonb, bytea, arrays), or a column twice.
    """
    try:
        plan = compile_view(name, sql, Catalog(state.tables()))
    except SqlError as exc:
        raise InvalidSqlError(("body", "sql"), exc.message, sql, exc.position) from None
    _check_indexes(indexes, {c.name: c.type for c in plan.columns})
    return ViewSpec(
        name=name,
        sql=sql,
        key=plan.key,
        columns=plan.columns,
        tables=plan.tables,
        generation=generation,
        key_columns=plan.key_columns,
        indexes=tuple(indexes),
    )


def _check_indexes(indexes: list[str], columns: dict[str, str]) -> None:
    for position, column in enumerate(indexes):
        where = ("body", "indexes", position)
        if column not in columns:
            raise InvalidSpecError(
                where,
                f"index on {column!r}: the view has no such column "
                f"(its columns: {', '.join(columns)})",
            )
        if not is_ordered(columns[column]):
            raise InvalidSpecError(
                where,
                f"index on {column!r}: a {sql_name(columns[column])} column has no order to "
                "index (json, jsonb, bytea and array columns can be neither indexed nor sorted on)",
            )
        if column in indexes[:position]:
            raise InvalidSpecError(where, f"index on {column!r} is listed twice")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={**COMMON, **_REFUSED, 409: {"description": "A view of that name exists."}},
)
def create_view(
    body: Annotated[ViewCreate, Body()], state: StateDep, request: Request, response: Response
) -> ViewOut:
    """Compile the SQL and create the view at generation 1; 409 if the name is taken."""
    spec = _compile(state, body.name, body.sql, body.indexes, generation=1)
    state.views.create(spec.name, spec)
    log.info("view %s created over %s", spec.name, ", ".join(spec.tables))
    response.headers["Location"] = request.url_for("get_view", name=spec.name).path
    return ViewOut.from_spec(spec, state.view_status(spec.name))


@router.get("", responses=COMMON)
def list_views(state: StateDep) -> ViewList:
    """Every view with its status, sorted by name."""
    return ViewList(
        views=[ViewOut.from_spec(v, state.view_status(v.name)) for v in state.views.specs()]
    )


@router.get("/{name}", responses={**COMMON, **_NOT_FOUND})
def get_view(name: str, state: StateDep) -> ViewOut:
    """One view with its status (``{"state": "pending"}`` until transform reports)."""
    return ViewOut.from_spec(state.views.require(name), state.view_status(name))


@router.put("/{name}", responses={**COMMON, **_NOT_FOUND, **_REFUSED, **_IN_USE})
def replace_view(name: str, body: Annotated[ViewReplace, Body()], state: StateDep) -> ViewOut:
    """Replace the SQL (and indexes) of a view and increase its generation by one.

    Serve builds the new generation beside the old one, which it serves until the new one has
    caught up: changing only the indexes rebuilds the view too.

    The products over the view keep their key and their fields with their types: a new SQL that
    changes them is a 409 naming each product and field, and changes nothing. The products then
    sort on the view's new indexes (each whose indexes changed gets a new generation; serve may
    offer them a moment before it serves the view's new generation, which has them).
    """
    if body.name is not None and body.name != name:
        raise InvalidSpecError(
            ("body", "name"), "the name in the body differs from the path: a view cannot be renamed"
        )
    state.views.require(name)  # an unknown view is a 404 whatever its SQL
    compiled = _compile(state, name, body.sql, body.indexes, generation=1)
    with state.views_and_products:
        current = state.views.require(name)
        over = [p for p in state.products.specs() if p.view == name]
        _check_products(name, over, current, compiled)
        spec = state.views.replace(
            name,
            lambda now: compiled.model_copy(update={"generation": now.generation + 1}),
        )
        log.info("view %s replaced (generation %d)", name, spec.generation)
        _refit_products(state, spec, over)
    return ViewOut.from_spec(spec, state.view_status(name))


def _check_products(
    name: str, over: list[ProductSpec], current: ViewSpec, compiled: ViewSpec
) -> None:
    """Raises InUseError: ``compiled`` breaks products ``over`` the view (see ``conflicts``)."""
    problems = [problem for product in over for problem in conflicts(product, current, compiled)]
    if not problems:
        return
    if any(key_changes(product, current, compiled) for product in over):
        remedy = "delete those products, redefine the view, then create them again"
    else:
        remedy = (
            "change those products first (PUT /v1/products/<product>), or delete them and "
            "create them again once the view is redefined"
        )
    raise InUseError(
        f"view {name!r} cannot be redefined this way: {'; '.join(problems)}. To do it, {remedy}"
    )


def _refit_products(state: ControlState, spec: ViewSpec, over: list[ProductSpec]) -> None:
    """Rewrite the products ``over`` view ``spec`` whose sortable fields it changed."""
    for product in over:
        if refit(product, spec) is product:
            continue
        try:
            refitted = state.products.replace(product.name, lambda now: refit(now, spec))
        except NotFoundError:
            continue  # deleted meanwhile
        except StateUnavailableError:
            raise StateUnavailableError(
                f"view {spec.name!r} was redefined (generation {spec.generation}), but product "
                f"{product.name!r} could not be given its new indexes: the broker did not "
                "acknowledge the write. PUT the product again (unchanged) to refresh it"
            ) from None
        log.info(
            "product %s now sorts on the view's indexes %s (generation %d)",
            product.name,
            list(refitted.indexes),
            refitted.generation,
        )


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        **COMMON,
        **_NOT_FOUND,
        409: {"description": "Products expose the view: delete them first."},
    },
)
def delete_view(name: str, state: StateDep) -> Response:
    """Delete a view (a tombstone on the desired-state topic); transform then stops it.

    A view that products expose is not deleted (409 naming them): delete them first.
    """
    with state.views_and_products:
        state.views.require(name)
        over = sorted(p.name for p in state.products.specs() if p.view == name)
        if over:
            raise InUseError(
                f"view {name!r} is exposed by the products {', '.join(map(repr, over))}: delete "
                "them first (DELETE /v1/products/<product>), then the view"
            )
        state.views.delete(name)
    log.info("view %s deleted", name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _source_of(spec: ViewSpec, source: str | None) -> str:
    """The source a wait is about: the one given, or the view's only one.

    Raises:
        InvalidSpecError: none given and the view reads several, or the view does not read it.
    """
    sources = sorted({table.split(".", 1)[0] for table in spec.tables})
    if source is None:
        if len(sources) == 1:
            return sources[0]
        raise InvalidSpecError(
            ("query", "source"),
            f"view {spec.name!r} reads the sources {', '.join(sources)}: say which one the lsn "
            "is of with source=<name>",
        )
    if source not in sources:
        raise InvalidSpecError(
            ("query", "source"),
            f"view {spec.name!r} does not read that source: it reads {', '.join(sources)}",
        )
    return source


def _parse_lsn(text: str) -> int:
    if not _LSN.match(text):
        raise InvalidSpecError(
            ("query", "lsn"),
            "not a PostgreSQL LSN: give two hexadecimal numbers of up to 8 digits separated by "
            "'/', as pg_current_wal_lsn() shows them (e.g. 0/16B3748)",
        )
    return lsn_from_str(text)


def _not_yet(spec: ViewSpec, source: str, lsn: int, last: DataflowStatus | None, ms: int) -> str:
    """Why a wait timed out, in one sentence."""
    target = lsn_to_str(lsn)
    if last is None:
        return (
            f"view {spec.name!r} has reported no status yet, so it has not applied source "
            f"{source!r} up to {target}, after {ms} ms"
        )
    if last.generation < spec.generation:
        said = (
            f"view {spec.name!r} still runs generation {last.generation}, not {spec.generation} "
            f"(its current SQL), so it has not applied source {source!r} up to {target} with "
            f"that SQL, after {ms} ms"
        )
    else:
        applied = last.applied.get(source)
        done = "nothing" if applied is None else lsn_to_str(applied)
        said = (
            f"view {spec.name!r} has applied source {source!r} up to {done}, not yet {target}, "
            f"after {ms} ms"
        )
    reason = f": {last.reason}" if last.reason else ""
    return f"{said} (state {last.state}{reason})"


@router.get(
    "/{name}/wait",
    responses={
        **COMMON,
        **_NOT_FOUND,
        422: {"description": "Not an LSN, or the source is missing or not read by the view."},
        504: {"description": "The view had not applied the LSN when the timeout expired."},
    },
)
async def wait_for_view(
    name: str,
    state: StateDep,
    lsn: Annotated[str, Query(description="A source position, X/Y as PostgreSQL shows it.")],
    source: Annotated[
        str | None, Query(description="The source of lsn; optional if the view reads one.")
    ] = None,
    timeout_ms: Annotated[int, Query(ge=0, le=MAX_WAIT_MS)] = DEFAULT_WAIT_MS,
) -> DataflowStatusOut:
    """Answer the view's status once it has applied ``lsn`` of ``source``; 504 after the timeout.

    Applied means: transform reports, for the view's current generation (its current SQL),
    that every change of the source up to ``lsn`` has been applied and its output acknowledged
    by Kafka, so a reader of the view's topic (or of serve) sees it. Nothing polls: the wait
    wakes when the view's status changes.
    """
    target = _parse_lsn(lsn)
    spec = state.views.require(name)
    source_name = _source_of(spec, source)

    def applied(status: DataflowStatus | None) -> bool:
        return (
            status is not None
            and status.generation >= spec.generation
            and status.applied.get(source_name, -1) >= target
        )

    done, last = await state.status.wait_until(
        "view", name, DataflowStatus, applied, timeout_ms / 1000
    )
    if not done or last is None:
        raise WaitTimeoutError(_not_yet(spec, source_name, target, last, timeout_ms))
    return DataflowStatusOut.from_status(last)
