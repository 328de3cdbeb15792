"""Limiter port: per-tool limits on concurrent calls and calls per second, held across every instance of
the step function (Firestore in the cloud), not per process."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import datetime

from agex.core.tool import ToolLimits


@dataclass(frozen=True)
class Permit:
    """Leave to make one call. ``slot`` is the concurrency slot held, to give back with ``release``."""

    tool: str
    holder: str
    slot: int | None = None


@dataclass(frozen=True)
class Wait:
    """No permit now: try again after ``seconds`` (from a scheduled task; nothing sleeps)."""

    seconds: float
    reason: str


class Limiter(abc.ABC):
    @abc.abstractmethod
    def acquire(self, tool: str, limits: ToolLimits, holder: str, now: datetime, lease_s: float) -> Permit | Wait:
        """Take a permit for one call of ``tool``.

        ``holder`` is the call's idempotency key: a holder that already holds a live concurrency slot (its
        earlier attempt crashed) gets it again instead of a second one. A slot whose holder never released
        it frees itself ``lease_s`` after it was taken. ``per_second`` counts calls started in each wall
        clock second; over it, or with every slot held, the answer is ``Wait``."""

    @abc.abstractmethod
    def release(self, permit: Permit) -> None:
        """Give back the permit's concurrency slot (a no-op without one, or if it was taken over)."""
