"""Serve's errors, all derived from :class:`~freshet.common.exceptions.FreshetError`."""

from __future__ import annotations

import logging
import time

import redis.exceptions

from freshet.common.exceptions import FreshetError

log = logging.getLogger(__name__)


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


class StoreUnavailable(Unavailable):
    """Redis did not answer a read (down, restarting, loading its data, or too slow): retry."""

    retry_after_s = 1


class StoreRefused(ApiError):
    """Redis refused serve's credentials or commands: serve's configuration must change."""

    status_code = 500


REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
"""What redis-py raises when Redis does not answer or refuses serve (see :func:`store_error`)."""

STORE_LOG_INTERVAL_S = 10.0
_store_logged = float("-inf")


def store_error(exc: BaseException) -> ApiError:
    """The error a read gets when Redis failed it with ``exc`` (one of :data:`REDIS_DOWN`).

    Redis refusing serve's password or commands is :class:`StoreRefused` (500, an error in the
    log): retrying will not help. Anything else is :class:`StoreUnavailable` (503). Logged at
    most every :data:`STORE_LOG_INTERVAL_S` (every read fails meanwhile), by the exception's
    class only: redis-py's messages name Redis's host and port.
    """
    global _store_logged
    refused = isinstance(
        exc, (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError)
    )
    now = time.monotonic()
    if now - _store_logged >= STORE_LOG_INTERVAL_S:
        _store_logged = now
        if refused:
            log.error("reads fail: Redis refused serve (%s); check its URL", type(exc).__name__)
        else:
            log.warning("reads fail: Redis did not answer (%s); answering 503", type(exc).__name__)
    if refused:
        return StoreRefused("serve's store (Redis) refused serve; an operator must check serve")
    return StoreUnavailable("serve's store (Redis) did not answer; retry in a moment")
