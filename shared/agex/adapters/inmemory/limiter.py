"""In-memory limiter: the semantics of the Firestore limiter in one process (thread-safe), for unit tests.
The rules it shares with the Firestore limiter are the port's (:mod:`agex.ports.limiter`).
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from agex.core.tool import ToolLimits
from agex.ports.limiter import (
    Limiter,
    Permit,
    Wait,
    check_request,
    rate_wait,
    rate_window,
    slot_order,
    slot_wait,
)

__all__ = ["InMemoryLimiter"]

class InMemoryLimiter(Limiter):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: dict[str, dict[int, tuple[str, datetime]]] = {}
        self._used: dict[tuple[str, int, int], int] = {}
        """(tool, window start, window length) -> permits used."""

    def acquire(self, tool: str, limits: ToolLimits, holder: str, now: datetime, lease_s: float) -> Permit | Wait:
        check_request(limits, now, lease_s)
        with self._lock:
            if limits.per_second is not None:
                wait = self._take_rate(tool, limits.per_second, now)
                if wait is not None:
                    return wait
            if limits.max_concurrent is None:
                return Permit(tool, holder)
            held = self._slots.setdefault(tool, {})
            order = slot_order(limits.max_concurrent, held, holder, now)
            if not order:
                return slot_wait(tool, limits.max_concurrent, held, now)
            held[order[0]] = (holder, now + timedelta(seconds=lease_s))
            return Permit(tool, holder, order[0])

    def _take_rate(self, tool: str, per_second: float, now: datetime) -> Wait | None:
        window = rate_window(per_second, now)
        key = (tool, window.start, window.seconds)
        used = self._used.get(key, 0)
        if used >= window.permits:
            return rate_wait(tool, per_second, window, now)
        self._used[key] = used + 1
        # forget windows long past (what the TTL policy does in Firestore)
        for old in [k for k in self._used if k[1] + k[2] < window.start - 3600]:
            del self._used[old]
        return None

    def release(self, permit: Permit) -> None:
        if permit.slot is None:
            return
        with self._lock:
            held = self._slots.get(permit.tool, {})
            current = held.get(permit.slot)
            if current is not None and current[0] == permit.holder:
                del held[permit.slot]
