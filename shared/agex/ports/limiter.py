"""Limiter port: per-tool limits on concurrent calls and calls per second, held across every instance of
the step function (Firestore in the cloud), not per process.

The rules both adapters follow, defined here so they cannot drift apart:

- :func:`check_request` refuses limits that can never grant a call (``max_concurrent < 1``,
  ``per_second <= 0``) as a configuration mistake rather than waiting forever.
- :func:`rate_window`: calls are counted per window of whole wall-clock seconds since the epoch, taken
  from the ``now`` the caller passes. At ``per_second >= 1`` a window is one second with
  ``floor(per_second)`` permits: the limit is a maximum, so 2.5/s allows 2 calls in a second, never 3.
  Below 1/s a window is ``ceil(1 / per_second)`` seconds with one permit (0.4/s: one call per 3 s).
- :func:`slot_order`: which slots to try, the holder's own first (re-entrance: a retried call gets its
  slot back, with a fresh lease), then free or expired ones from a random offset, so that instances
  racing for slots spread over them instead of all fighting for slot 0.
- :func:`slot_wait` / :func:`rate_wait`: how long a refused caller waits. For slots: until the earliest
  lease expires, at least 1 s (a release usually frees a slot sooner, and a retry costs a read) and at
  most 30 s (a long lease is usually released long before it expires). For the rate: until the next
  window starts.

When a tool has both limits the rate permit is taken first, then the slot; a call refused for want of
a slot has spent its rate permit (giving it back would need another write, and counting it errs on the
safe side).
"""

from __future__ import annotations

import abc
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from agex.core.errors import ConfigurationError
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


# --- the rules every limiter follows ------------------------------------------------------------------

MIN_SLOT_WAIT_S = 1.0
MAX_SLOT_WAIT_S = 30.0
_EPS = 1e-9  # float noise: 1 / 0.2 must give a 5 s window, not 6


@dataclass(frozen=True)
class RateWindow:
    start: int
    """Epoch second at which the window starts (a multiple of ``seconds``)."""
    seconds: int
    permits: int

    @property
    def end(self) -> int:
        return self.start + self.seconds


def check_request(limits: ToolLimits, now: datetime, lease_s: float) -> None:
    if limits.max_concurrent is not None and limits.max_concurrent < 1:
        raise ConfigurationError(f"max_concurrent must be at least 1, not {limits.max_concurrent}")
    if limits.per_second is not None and not (limits.per_second > 0 and math.isfinite(limits.per_second)):
        raise ConfigurationError(f"per_second must be a positive number, not {limits.per_second}")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if not lease_s > 0:
        raise ValueError(f"lease_s must be positive, not {lease_s}")


def rate_window(per_second: float, now: datetime) -> RateWindow:
    if per_second >= 1:
        seconds, permits = 1, math.floor(per_second + _EPS)
    else:
        seconds, permits = math.ceil(1 / per_second - _EPS), 1
    epoch = math.floor(now.timestamp())
    return RateWindow(epoch - epoch % seconds, seconds, permits)


def rate_wait(tool: str, per_second: float, window: RateWindow, now: datetime) -> Wait:
    seconds = max(0.001, window.end - now.timestamp())
    return Wait(seconds, f"tool {tool}: rate limit of {per_second:g} calls per second reached "
                         f"({window.permits} per {window.seconds} s window)")


def slot_order(max_concurrent: int, held: Mapping[int, tuple[str, datetime]], holder: str,
               now: datetime) -> list[int]:
    """Slots worth trying, best first: ``held`` maps each slot in use (possibly expired) to its holder
    and lease end; a slot absent from it is free."""
    own = [k for k, (h, _) in held.items() if h == holder and k < max_concurrent]
    offset = random.randrange(max_concurrent)
    rotated = [(offset + i) % max_concurrent for i in range(max_concurrent)]
    free = [k for k in rotated if k not in own and (k not in held or held[k][1] <= now)]
    return sorted(own) + free


def slot_wait(tool: str, max_concurrent: int, held: Mapping[int, tuple[str, datetime]], now: datetime) -> Wait:
    ends = [until for k, (_, until) in held.items() if k < max_concurrent]
    soonest = (min(ends) - now).total_seconds() if ends else MIN_SLOT_WAIT_S
    seconds = min(MAX_SLOT_WAIT_S, max(MIN_SLOT_WAIT_S, soonest))
    return Wait(seconds, f"tool {tool}: all {max_concurrent} concurrent call slots are held")
