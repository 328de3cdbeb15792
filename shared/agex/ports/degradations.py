"""Degradations port: which agents run degraded, and why, shared by every instance of every function.

A degradation is entered and recovered by an evaluator (``agex.engine.slo`` for service-level objectives,
run by the drift function); steps only read it (:meth:`DegradationStore.active`) and apply its ``Degrade``.
Each (agent, source) is degraded or not; ``source`` says which evaluator decided (``"slo"``).

Transitions are atomic and say whether *this* call made them: however many instances evaluate at once,
:meth:`~DegradationStore.enter` returns True once per degradation and :meth:`~DegradationStore.recover`
returns the ended degradation once, so each transition is announced (logged, metered, published) once.
A store also remembers whether the last transition of each (agent, source) was announced, so that one
whose announcer died in between is announced later by someone else (:meth:`~DegradationStore.unannounced`),
with the same id: a consumer drops the copy if the first one did go out.

The rules both adapters follow, defined here so they cannot drift apart:

- :func:`entered`: degrading an (agent, source) that is not degraded is a transition. Degrading it again
  changes nothing, unless the ``Degrade`` differs (the agent's declaration changed): then it is replaced,
  ``since`` kept, and it is not a transition (nothing is announced again).
- :func:`recovered`: recovering a degraded (agent, source) is a transition; the entry is kept, marked
  recovered, until it is announced and beyond (one small document per agent).
- :func:`combine`: what a step applies when several sources degrade one agent at once: their ``Degrade``
  merged in the order of the source names (``Degrade.merge``: the first model set wins, the shortest
  window, skipping optional tools if any says so).
"""

from __future__ import annotations

import abc
import hashlib
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agex.core.spend import Degrade
from agex.ports.metrics_rules import utc
from agex.ports.rules import valid_document_id

AGENT_PATTERN = r"^[a-z][a-z0-9-]{0,62}$"
SOURCE_PATTERN = r"^[a-z][a-z0-9_:-]{0,99}$"
"""A source's name: ``slo``, ``budget:daily``."""
Event = Literal["entered", "recovered"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Degradation(_Frozen):
    """An agent's steps degraded, since when, why, and how."""

    agent: str = Field(pattern=AGENT_PATTERN)
    source: str = Field(default="slo", pattern=r"^[a-z][a-z0-9_:+-]{0,999}$")
    """Who decided: ``slo``; several sources combined read ``budget+slo``."""
    reason: str
    since: datetime
    burn_rates: dict[str, float] = Field(default_factory=dict)
    """When it was entered: ``{"error": 3.0, "latency": 0.4}`` (the objectives the agent declares)."""
    runs: int = 0
    """How many runs the decision was made on."""
    degrade: Degrade


class Recovery(_Frozen):
    """How a degradation ended."""

    at: datetime
    reason: str = ""
    burn_rates: dict[str, float] = Field(default_factory=dict)
    runs: int = 0


class Transition(_Frozen):
    """The last change of an (agent, source): the degradation entered, or the degradation and its end."""

    degradation: Degradation
    recovery: Recovery | None = None
    announced: bool = False
    """Whether it was published; one that is not, and old enough, is published by the next evaluator."""

    @property
    def event(self) -> Event:
        return "entered" if self.recovery is None else "recovered"

    @property
    def at(self) -> datetime:
        return self.degradation.since if self.recovery is None else self.recovery.at

    @property
    def id(self) -> str:
        """The same for every copy of the announcement of this transition."""
        d = self.degradation
        key = f"{d.agent}\0{d.source}\0{self.event}\0{utc(d.since).isoformat()}"
        return "deg_" + hashlib.sha256(key.encode()).hexdigest()[:24]


Entries = Mapping[str, Transition]
"""What a store keeps of one agent: the last transition of each source."""


class DegradationStore(abc.ABC):
    @abc.abstractmethod
    def active(self, agent: str, now: datetime) -> Degradation | None:
        """The degradation steps of ``agent`` apply at ``now`` (every source's, :func:`combine`\\ d), or None.
        Adapters may answer from a cache for a short while (``FirestoreDegradations``: 2 s of ``now``)."""

    @abc.abstractmethod
    def enter(self, degradation: Degradation) -> bool:
        """Degrade the agent for the degradation's source; True if this call did (:func:`entered`)."""

    @abc.abstractmethod
    def recover(self, agent: str, source: str, now: datetime, *, reason: str = "",
                burn_rates: Mapping[str, float] | None = None, runs: int = 0) -> Degradation | None:
        """End the agent's degradation of ``source``; the degradation ended if this call ended it, else None."""

    @abc.abstractmethod
    def unannounced(self, before: datetime) -> list[Transition]:
        """Transitions of every agent not marked announced, made before ``before``, oldest first."""

    @abc.abstractmethod
    def announced(self, transition: Transition) -> None:
        """Mark the transition announced, if it is still the last of its (agent, source)."""


# --- the rules ---------------------------------------------------------------------------------------------


def check(agent: str, source: str) -> str:
    """The agent's document id; refuses names that cannot be an agent's or a source's."""
    if not re.match(AGENT_PATTERN, agent) or not valid_document_id(agent):
        raise ValueError(f"{agent!r} cannot name an agent")
    if not re.match(SOURCE_PATTERN, source):
        raise ValueError(f"{source!r} cannot name a degradation's source")
    return agent


def normalized(d: Degradation) -> Degradation:
    return d.model_copy(update={"since": utc(d.since)})


def entered(entries: Entries, d: Degradation) -> tuple[dict[str, Transition] | None, bool]:
    """The entries after ``enter(d)`` (None: unchanged), and whether it was a transition."""
    d = normalized(d)
    current = entries.get(d.source)
    if current is None or current.recovery is not None:
        return {**entries, d.source: Transition(degradation=d)}, True
    if current.degradation.degrade != d.degrade:
        kept = current.degradation.model_copy(update={"degrade": d.degrade})
        return {**entries, d.source: current.model_copy(update={"degradation": kept})}, False
    return None, False


def recovered(entries: Entries, source: str, recovery: Recovery) -> tuple[dict[str, Transition] | None,
                                                                        Degradation | None]:
    """The entries after recovering ``source`` (None: unchanged), and the degradation that ended."""
    current = entries.get(source)
    if current is None or current.recovery is not None:
        return None, None
    ended = Transition(degradation=current.degradation,
                       recovery=recovery.model_copy(update={"at": utc(recovery.at)}))
    return {**entries, source: ended}, current.degradation


def marked(entries: Entries, transition: Transition) -> dict[str, Transition] | None:
    """The entries with ``transition`` marked announced (None: unchanged, or superseded)."""
    current = entries.get(transition.degradation.source)
    if current is None or current.announced or current.id != transition.id:
        return None
    return {**entries, transition.degradation.source: current.model_copy(update={"announced": True})}


def pending(entries: Entries, before: datetime) -> list[Transition]:
    before = utc(before)
    return [t for t in entries.values() if not t.announced and t.at < before]


def combine(entries: Entries) -> Degradation | None:
    """The degradation a step applies: every active source's, merged in the order of their names."""
    active = [entries[s].degradation for s in sorted(entries) if entries[s].recovery is None]
    if not active:
        return None
    if len(active) == 1:
        return active[0]
    degrade = active[0].degrade
    for d in active[1:]:
        degrade = degrade.merge(d.degrade)
    return Degradation(agent=active[0].agent, source="+".join(d.source for d in active),
                       reason="; ".join(f"{d.source}: {d.reason}" for d in active),
                       since=min(d.since for d in active),
                       burn_rates={k: v for d in active for k, v in d.burn_rates.items()},
                       runs=max(d.runs for d in active), degrade=degrade)
