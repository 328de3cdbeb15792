"""In-memory schedule state."""

from __future__ import annotations

import threading
from datetime import datetime

from agex.core.schedule import ScheduleState
from agex.ports.schedules import ScheduleStore


class InMemorySchedules(ScheduleStore):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, ScheduleState] = {}

    def state(self, name: str) -> ScheduleState | None:
        with self._lock:
            return self._states.get(name)

    def set_paused(self, name: str, paused: bool, by: str, at: datetime) -> ScheduleState:
        state = ScheduleState(name=name, paused=paused, by=by, at=at)
        with self._lock:
            self._states[name] = state
        return state
