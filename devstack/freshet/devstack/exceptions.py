"""Errors of the developer stack."""

from __future__ import annotations

from freshet.common.exceptions import FreshetError


class DevstackError(FreshetError):
    """The stack cannot start or stop as asked; the message says why and what to do."""
