"""Serve's errors, all derived from :class:`~freshet.common.exceptions.FreshetError`."""

from __future__ import annotations

from freshet.common.exceptions import FreshetError


class ServeError(FreshetError):
    """Base class of serve's errors."""


class BadValueError(ServeError, ValueError):
    """A view-row value (or key) that is not of its column's type."""


class Fenced(ServeError):
    """A store's offsets or generation are not the ones this writer expected.

    Another writer (a replica that took the view over, or a newer generation) wrote there since
    this one read them. The writer must re-read the store's offsets before writing again; it
    never overwrites what it did not expect.
    """


class StaleGeneration(ServeError):
    """A newer generation of the view is already materialized: this writer must stop."""


class TableConflictError(ServeError):
    """The target table exists but serve did not create it: serve leaves it alone."""


class ApiError(ServeError):
    """An error a request gets, with its HTTP status; the message is safe to show."""

    status_code = 400


class BadRequest(ApiError):
    """A parameter is not valid: the message names it and what is wrong."""

    status_code = 400


class Unauthorized(ApiError):
    status_code = 401


class Forbidden(ApiError):
    status_code = 403


class NotFound(ApiError):
    status_code = 404


class Gone(ApiError):
    """A cursor or event id from a generation of the view that no longer exists."""

    status_code = 410


class WaitTimeout(ApiError):
    """What a read-your-writes request waited for did not happen within its timeout."""

    status_code = 504


class Unavailable(ApiError):
    """Serve cannot answer yet (the catalog is not read, the view not materialized)."""

    status_code = 503
