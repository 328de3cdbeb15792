"""Breakers port: a circuit breaker per model, shared by every instance of the step function.

A model that keeps failing (429, 5xx, timeouts) is skipped for a cool-down by every instance, instead of
each instance learning it alone and the fleet hammering an overloaded endpoint. Before a call the engine
asks :meth:`Breakers.open_until`; after each failure it reports :meth:`Breakers.failed`.

The rules both adapters follow, defined here so they cannot drift apart:

- :func:`record_failure`: a failure counts for ``policy.window_s`` seconds after it (times are the ``now``
  the callers pass). The failure that makes ``policy.failures`` within the window opens the circuit until
  ``now + policy.cooldown_s`` and clears the count, so the circuit closes after the cool-down with a clean
  slate. A failure while the circuit is open changes nothing: it returns the open-until time already set,
  so racing instances all agree on one. Only the ``policy.failures`` newest failures are kept.
- :func:`breaker_document_id`: the model name as a Firestore document id (``/`` becomes ``~``); a name
  that cannot be one is a configuration mistake, refused by both adapters.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from agex.ports.metrics_rules import utc
from agex.ports.rules import valid_document_id


@dataclass(frozen=True)
class BreakerPolicy:
    failures: int = 5  # failures within window_s that open the circuit
    window_s: float = 30.0
    cooldown_s: float = 60.0  # how long an open circuit stays open


class Breakers(abc.ABC):
    @abc.abstractmethod
    def open_until(self, model: str, now: datetime) -> datetime | None:
        """When the model's circuit closes again, if it is open at ``now``; None if closed."""

    @abc.abstractmethod
    def failed(self, model: str, now: datetime, policy: BreakerPolicy) -> datetime | None:
        """Record a failure of ``model`` at ``now``; return the open-until time if this failure opened the
        circuit (or it is open already), else None. Failures older than ``policy.window_s`` do not count."""


@dataclass(frozen=True)
class BreakerState:
    """What a store keeps per model: the recent failures (oldest first) and when an opened circuit closes."""

    failures: tuple[datetime, ...] = ()
    open_until: datetime | None = None

    def open_at(self, now: datetime) -> datetime | None:
        return self.open_until if self.open_until is not None and utc(now) < self.open_until else None


def record_failure(state: BreakerState, now: datetime, policy: BreakerPolicy) -> BreakerState | None:
    """The state after a failure at ``now``; None if it changes nothing (the circuit is open already)."""
    if policy.failures < 1 or policy.window_s < 0 or policy.cooldown_s < 0:
        raise ValueError(f"invalid breaker policy {policy}")
    now = utc(now)
    if state.open_at(now) is not None:
        return None
    since = now - timedelta(seconds=policy.window_s)
    recent: Sequence[datetime] = sorted([t for t in state.failures if t >= since] + [now])
    if len(recent) >= policy.failures:
        return BreakerState((), now + timedelta(seconds=policy.cooldown_s))
    return BreakerState(tuple(recent[-policy.failures:]), None)


def breaker_document_id(model: str) -> str:
    doc_id = model.replace("/", "~")
    if not valid_document_id(doc_id):
        raise ValueError(f"model name {model!r} cannot name a circuit breaker")
    return doc_id


