"""The status the services report on ``freshet.status``, as control answers from it."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel

from freshet.common.statusboard import NotReadyError
from freshet.common.statusboard import StatusBoard as _StatusBoard
from freshet.control.exceptions import StateUnavailableError

M = TypeVar("M", bound=BaseModel)


class StatusBoard(_StatusBoard):
    """:class:`freshet.common.statusboard.StatusBoard`, unavailable (503) until it was read."""

    def get(self, kind: str, name: str, model: type[M]) -> M | None:
        try:
            return super().get(kind, name, model)
        except NotReadyError:
            raise StateUnavailableError("control has not read the status yet: retry soon") from None
