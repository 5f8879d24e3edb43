"""The one error every SQL and expression problem raises."""

from __future__ import annotations


class SqlError(Exception):
    """A definition Freshet refuses.

    ``message`` names the problem; ``position`` is the 0-based character offset in the user's
    text where it is (``None`` when it has no place).
    """

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.position = position

    def __str__(self) -> str:
        if self.position is None:
            return self.message
        return f"{self.message} (at character {self.position + 1})"
