"""OpenAPI descriptions of the answers every resource's routes share."""

from __future__ import annotations

from typing import Any

Responses = dict[int | str, dict[str, Any]]

COMMON: Responses = {
    401: {"description": "Missing or wrong bearer token."},
    503: {"description": "Kafka did not acknowledge the change, or control is starting; retry."},
}


def not_found(kind: str) -> Responses:
    return {404: {"description": f"No such {kind}."}}
