"""Errors of the control service; each carries the HTTP status it is answered with."""

from __future__ import annotations

from typing import Any

from freshet.common.exceptions import FreshetError


class ControlError(FreshetError):
    """Base class of control's errors; ``status_code`` is the HTTP status of the answer."""

    status_code = 500


class NotFoundError(ControlError):
    """No object of that kind and name (a source, a view) exists."""

    status_code = 404

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"{kind} {name!r} does not exist: list the {kind}s with GET /v1/{kind}s")


class AlreadyExistsError(ControlError):
    """An object of that kind and name exists already."""

    status_code = 409

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(
            f"{kind} {name!r} already exists: change it with PUT /v1/{kind}s/{name} "
            "or choose another name"
        )


class InUseError(ControlError):
    """A change that objects depending on the one changed cannot follow (a 409 naming them)."""

    status_code = 409


class StateUnavailableError(ControlError):
    """The desired-state topic could not be written (the broker refused or did not answer)."""

    status_code = 503


class WaitTimeoutError(ControlError):
    """What a client waits for did not happen within its timeout."""

    status_code = 504


class InvalidSpecError(ControlError):
    """A request is well-formed but its spec is invalid; answered as a 422 naming the field.

    Args:
        loc: where the problem is, as in a validation error (e.g. ``("body", "slot_name")``).
        msg: what is wrong and what to do; must never contain a secret.
    """

    status_code = 422
    error_type = "value_error"

    def __init__(self, loc: tuple[str | int, ...], msg: str) -> None:
        super().__init__(msg)
        self.loc = loc
        self.msg = msg

    def detail(self) -> dict[str, Any]:
        """The error as one entry of a 422's ``detail`` list."""
        return {"loc": list(self.loc), "msg": self.msg, "type": self.error_type}


class InvalidSqlError(InvalidSpecError):
    """SQL the compiler refused, with where the problem is in it.

    Args:
        loc: the field holding the SQL.
        msg: the compiler's message (it may quote identifiers of the SQL, never more of it).
        sql: the SQL text, only to turn ``position`` into a line and a column; never returned.
        position: 0-based character offset of the problem, ``None`` when it has no place.
    """

    error_type = "sql"

    def __init__(self, loc: tuple[str, ...], msg: str, sql: str, position: int | None) -> None:
        super().__init__(loc, msg)
        self.position = position
        self.line: int | None = None
        self.column: int | None = None
        if position is not None:
            self.line = sql.count("\n", 0, position) + 1
            self.column = position - sql.rfind("\n", 0, position)

    def detail(self) -> dict[str, Any]:
        """Adds ``position`` (0-based), ``line`` and ``column`` (1-based); ``null`` if unknown."""
        return {
            **super().detail(),
            "position": self.position,
            "line": self.line,
            "column": self.column,
        }
