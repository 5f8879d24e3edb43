"""``/v1/pipelines``: create, list, read, replace, validate and delete pipelines.

A pipeline is validated against the tables ingest captures (``freshet.schemas``, only those of
sources that exist) before anything is written: every problem is a 422 entry naming the node, the
attribute and, in an expression, the position (see :func:`_refused`). Mask salts are encrypted
with the deployment's key before the spec goes to ``freshet.control.pipelines``; no answer shows
them. Transform runs the spec from there and reports ``pipeline/<name>`` on ``freshet.status``.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, NoReturn

from fastapi import APIRouter, Body, HTTPException, Request, Response, status

from freshet.common.pipelines import (
    MaskNode,
    PipelineError,
    PipelinePlan,
    PipelineSpec,
    Problem,
    compile_pipeline,
)
from freshet.common.schemas import DataflowStatus
from freshet.common.secrets import SecretBox
from freshet.control.api.responses import COMMON, Responses, not_found
from freshet.control.deps import SecretBoxDep, StateDep
from freshet.control.exceptions import InvalidSpecError
from freshet.control.models import (
    PipelineCheck,
    PipelineCreate,
    PipelineList,
    PipelineOut,
    PipelineReplace,
)
from freshet.control.state import ControlState

log = logging.getLogger(__name__)

router = APIRouter(prefix="/pipelines", tags=["pipelines"])

_NOT_FOUND = not_found("pipeline")
_REFUSED: Responses = {
    422: {
        "description": "Invalid body, or a pipeline that cannot run: every problem, each with "
        "the node, the attribute and (in an expression) the position."
    }
}


def _loc(spec: PipelineSpec, problem: Problem) -> list[str | int]:
    loc: list[str | int] = ["body", "nodes"]
    if problem.node is None:
        return loc
    index = next((i for i, n in enumerate(spec.nodes) if n.id == problem.node), None)
    if index is None:
        return loc
    loc.append(index)
    for part in (problem.attribute or "").split("."):
        if part:
            loc.append(int(part) if part.isdigit() else part)
    return loc


def _refused(spec: PipelineSpec, error: PipelineError) -> NoReturn:
    """Answer 422 with one entry per problem.

    ``{"loc": ["body", "nodes", <index>, <attribute>...], "msg", "type": "pipeline", "node",
    "position", "line", "column"}``: ``position`` (0-based) is in the expression or type text
    at ``loc``, ``line`` and ``column`` (1-based) too; ``null`` when the problem has no place.
    The message quotes identifiers of the spec, never a salt.
    """
    details: list[dict[str, Any]] = []
    for problem in error.problems:
        line = column = None
        if problem.position is not None and problem.text is not None:
            line = problem.text.count("\n", 0, problem.position) + 1
            column = problem.position - problem.text.rfind("\n", 0, problem.position)
        details.append(
            {
                "loc": _loc(spec, problem),
                "msg": problem.message,
                "type": "pipeline",
                "node": problem.node,
                "position": problem.position,
                "line": line,
                "column": column,
            }
        )
    raise HTTPException(422, detail=details)


def _compile(state: ControlState, spec: PipelineSpec) -> PipelinePlan:
    sources = [s.name for s in state.sources.specs()]
    try:
        return compile_pipeline(spec, state.tables(), sources)
    except PipelineError as exc:
        _refused(spec, exc)


def _no_ciphertext(nodes: list[Any]) -> None:
    for i, node in enumerate(nodes):
        if isinstance(node, MaskNode) and node.salt_encrypted is not None:
            raise InvalidSpecError(
                ("body", "nodes", str(i), "salt_encrypted"),
                "give the salt in clear in 'salt': control encrypts it before storing it",
            )


def _sealed(spec: PipelineSpec, box: SecretBox) -> PipelineSpec:
    """``spec`` with every clear salt encrypted (and gone)."""
    nodes = []
    for node in spec.nodes:
        if isinstance(node, MaskNode) and node.salt is not None:
            node = node.model_copy(update={"salt": None, "salt_encrypted": box.encrypt(node.salt)})
        nodes.append(node)
    return spec.model_copy(update={"nodes": tuple(nodes)})


def _keep_salts(spec: PipelineSpec, current: PipelineSpec) -> PipelineSpec:
    """Mask nodes without a salt take the stored one of the current node with the same id."""
    stored = {
        n.id: n.salt_encrypted
        for n in current.nodes
        if isinstance(n, MaskNode) and n.salt_encrypted is not None
    }
    nodes = []
    for node in spec.nodes:
        if isinstance(node, MaskNode) and node.salt is None and node.id in stored:
            node = node.model_copy(update={"salt_encrypted": stored[node.id]})
        nodes.append(node)
    return spec.model_copy(update={"nodes": tuple(nodes)})


def _status(state: ControlState, name: str) -> DataflowStatus | None:
    return state.status.get("pipeline", name, DataflowStatus)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={**COMMON, **_REFUSED, 409: {"description": "A pipeline of that name exists."}},
)
def create_pipeline(
    body: Annotated[PipelineCreate, Body()],
    state: StateDep,
    box: SecretBoxDep,
    request: Request,
    response: Response,
) -> PipelineOut:
    """Validate the pipeline and create it at generation 1; 409 if the name is taken."""
    _no_ciphertext(body.nodes)
    spec = PipelineSpec(name=body.name, nodes=tuple(body.nodes), generation=1)
    _compile(state, spec)
    spec = _sealed(spec, box)
    state.pipelines.create(spec.name, spec)
    log.info("pipeline %s created with %d nodes", spec.name, len(spec.nodes))
    response.headers["Location"] = request.url_for("get_pipeline", name=spec.name).path
    return PipelineOut.from_spec(spec, _status(state, spec.name))


@router.post("/validate", responses={**COMMON, **_REFUSED})
def validate_pipeline(body: Annotated[PipelineCreate, Body()], state: StateDep) -> PipelineCheck:
    """Validate a pipeline without creating it: 200 with each node's output fields, or 422."""
    spec = PipelineSpec(name=body.name, nodes=tuple(body.nodes), generation=1)
    plan = _compile(state, spec)
    return PipelineCheck(
        nodes={
            node_id: {name: str(ftype) for name, ftype in (node.schema or {}).items()}
            for node_id, node in plan.nodes.items()
            if node.kind != "sink"
        }
    )


@router.get("", responses=COMMON)
def list_pipelines(state: StateDep) -> PipelineList:
    """Every pipeline with its status, sorted by name."""
    return PipelineList(
        pipelines=[
            PipelineOut.from_spec(p, _status(state, p.name)) for p in state.pipelines.specs()
        ]
    )


@router.get("/{name}", responses={**COMMON, **_NOT_FOUND})
def get_pipeline(name: str, state: StateDep) -> PipelineOut:
    """One pipeline with its status (``{"state": "pending"}`` until transform reports).

    The status has, per node, the events in and out (``_dlq``: dead letters), the LSN applied
    per source, freshness, lag, and ``stalled``/``error`` with the reason.
    """
    return PipelineOut.from_spec(state.pipelines.require(name), _status(state, name))


@router.put("/{name}", responses={**COMMON, **_NOT_FOUND, **_REFUSED})
def replace_pipeline(
    name: str, body: Annotated[PipelineReplace, Body()], state: StateDep, box: SecretBoxDep
) -> PipelineOut:
    """Replace the nodes of a pipeline and increase its generation by one.

    The new generation starts afresh: new state, its inputs read from their beginning, so the
    sinks get every event again (keyed, as before).
    """
    if body.name is not None and body.name != name:
        raise InvalidSpecError(
            ("body", "name"),
            "the name in the body differs from the path: a pipeline cannot be renamed",
        )
    _no_ciphertext(body.nodes)
    current = state.pipelines.require(name)  # an unknown pipeline is a 404 whatever its nodes
    spec = _keep_salts(PipelineSpec(name=name, nodes=tuple(body.nodes)), current)
    _compile(state, spec)
    sealed = _sealed(spec, box)
    stored = state.pipelines.replace(
        name, lambda now: sealed.model_copy(update={"generation": now.generation + 1})
    )
    log.info("pipeline %s replaced (generation %d)", name, stored.generation)
    return PipelineOut.from_spec(stored, _status(state, name))


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**COMMON, **_NOT_FOUND},
)
def delete_pipeline(name: str, state: StateDep) -> Response:
    """Delete a pipeline (a tombstone on the desired-state topic); transform then stops it.

    Its sink topics and dead-letter topic are left as they are.
    """
    state.pipelines.delete(name)
    log.info("pipeline %s deleted", name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
