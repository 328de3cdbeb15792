"""In-memory circuit breakers: one process's view, shared by its threads."""

from __future__ import annotations

import threading
from datetime import datetime

from agex.ports.breakers import BreakerPolicy, Breakers, BreakerState, breaker_document_id, record_failure

__all__ = ["InMemoryBreakers"]


class InMemoryBreakers(Breakers):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, BreakerState] = {}

    def open_until(self, model: str, now: datetime) -> datetime | None:
        key = breaker_document_id(model)
        with self._lock:
            state = self._states.get(key)
        return state.open_at(now) if state is not None else None

    def failed(self, model: str, now: datetime, policy: BreakerPolicy) -> datetime | None:
        key = breaker_document_id(model)
        with self._lock:
            state = self._states.get(key, BreakerState())
            new = record_failure(state, now, policy)
            if new is None:
                return state.open_until
            self._states[key] = new
            return new.open_until
