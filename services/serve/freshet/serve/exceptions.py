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
