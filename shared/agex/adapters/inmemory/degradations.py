"""In-memory degradations: one process's view, shared by its threads; nothing is cached, every read is current.
The rules both adapters follow are in :mod:`agex.ports.degradations`."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import datetime

from agex.ports.degradations import (
    Degradation,
    DegradationStore,
    Recovery,
    Transition,
    check,
    combine,
    entered,
    marked,
    pending,
    recovered,
)

__all__ = ["InMemoryDegradations"]


class InMemoryDegradations(DegradationStore):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._agents: dict[str, dict[str, Transition]] = {}

    def active(self, agent: str, now: datetime) -> Degradation | None:
        with self._lock:
            return combine(self._agents.get(agent, {}))

    def enter(self, degradation: Degradation) -> bool:
        key = check(degradation.agent, degradation.source)
        with self._lock:
            new, changed = entered(self._agents.get(key, {}), degradation)
            if new is not None:
                self._agents[key] = new
            return changed

    def recover(self, agent: str, source: str, now: datetime, *, reason: str = "",
                burn_rates: Mapping[str, float] | None = None, runs: int = 0) -> Degradation | None:
        key = check(agent, source)
        recovery = Recovery(at=now, reason=reason, burn_rates=dict(burn_rates or {}), runs=runs)
        with self._lock:
            new, ended = recovered(self._agents.get(key, {}), source, recovery)
            if new is not None:
                self._agents[key] = new
            return ended

    def unannounced(self, before: datetime) -> list[Transition]:
        with self._lock:
            found = [t for entries in self._agents.values() for t in pending(entries, before)]
        return sorted(found, key=lambda t: t.at)

    def announced(self, transition: Transition) -> None:
        key = check(transition.degradation.agent, transition.degradation.source)
        with self._lock:
            new = marked(self._agents.get(key, {}), transition)
            if new is not None:
                self._agents[key] = new
