"""Errors of the control service; each carries the HTTP status it is answered with."""

from __future__ import annotations

from freshet.common.exceptions import FreshetError


class ControlError(FreshetError):
    """Base class of control's errors; ``status_code`` is the HTTP status of the answer."""

    status_code = 500


class SourceNotFoundError(ControlError):
    status_code = 404

    def __init__(self, name: str) -> None:
        super().__init__(f"source {name!r} does not exist: list the sources with GET /v1/sources")


class SourceExistsError(ControlError):
    status_code = 409

    def __init__(self, name: str) -> None:
        super().__init__(
            f"source {name!r} already exists: change it with PUT /v1/sources/{name} "
            "or choose another name"
        )


class StateUnavailableError(ControlError):
    """The desired-state topic could not be written (the broker refused or did not answer)."""

    status_code = 503


class InvalidSpecError(ControlError):
    """A request is well-formed but its spec is invalid; answered as a 422 naming the field.

    Args:
        loc: where the problem is, as in a validation error (e.g. ``("body", "slot_name")``).
        msg: what is wrong and what to do; must never contain a secret.
    """

    status_code = 422

    def __init__(self, loc: tuple[str, ...], msg: str) -> None:
        super().__init__(msg)
        self.loc = loc
        self.msg = msg
