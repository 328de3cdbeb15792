"""Schedule state port: whether each schedule is paused, shared by the API (which pauses and resumes) and the
step function (which fires). A schedule never paused has no state."""

from __future__ import annotations

import abc
from datetime import datetime

from agex.core.schedule import ScheduleState


class ScheduleStore(abc.ABC):
    @abc.abstractmethod
    def state(self, name: str) -> ScheduleState | None: ...

    @abc.abstractmethod
    def set_paused(self, name: str, paused: bool, by: str, at: datetime) -> ScheduleState:
        """Record that ``by`` paused (or resumed) the schedule at ``at``; return the state now."""
