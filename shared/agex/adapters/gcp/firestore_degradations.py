"""Firestore adapter of the degradations port: which agents run degraded, shared by every instance.

Layout (``prefix`` is empty in production; tests isolate themselves with a unique one)::

    {prefix}degradations/{agent}    agent, sources: {source: {degradation, recovery, announced}},
                                    pending: bool (a transition is not announced yet), updated_at

One document per agent that was ever degraded, a few hundred bytes per source: no TTL policy is needed. The
only query, :meth:`unannounced`, is an equality on ``pending`` (the automatic single-field index).

Reads are cached. ``active`` is asked before every step of an agent that declares an SLO; each process
keeps what it last read or wrote per agent for ``cache_s`` seconds (2) of the callers' ``now``, so a step
applies a transition another instance made up to ``cache_s`` late: nothing next to the minutes an
objective's window spans. The transitions always read the document.

Concurrency. A transition reads the document and writes it on the precondition that it is still the
version read (an ``update`` on its ``update_time``, or a ``create``), and starts over on the new version if
another instance got there first: a compare-and-set on one document, with no lock held (the emulator
deadlocks concurrent transactions on one document until its lock timeout). So of instances racing to
degrade an agent exactly one gets True, and only transitions write: an evaluation that changes nothing
reads one document per agent.

The Google client libraries are imported only when a store is made or used (cold start).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from agex.adapters.gcp.firestore_calls import calling, native
from agex.core.errors import TransientError
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
from agex.ports.metrics_rules import utc
from agex.ports.rules import check_collection_prefix

if TYPE_CHECKING:
    from google.cloud import firestore

__all__ = ["FirestoreDegradations"]

T = TypeVar("T")
_Entries = dict[str, Transition]


class FirestoreDegradations(DegradationStore):
    """``client``: a ``google.cloud.firestore.Client`` (honours ``FIRESTORE_EMULATOR_HOST``); if omitted,
    one is made for ``project``. ``cache_s``: how long ``active`` reuses a read of an agent (0: never).
    ``max_attempts``: reads of a contended document before a transition gives up with ``TransientError``."""

    def __init__(self, client: firestore.Client | None = None, *, project: str | None = None, prefix: str = "",
                 cache_s: float = 2.0, max_attempts: int = 20) -> None:
        check_collection_prefix(prefix)
        if client is None:
            from google.cloud import firestore

            client = firestore.Client(project=project)
        self._client = client
        self._collection = f"{prefix}degradations"
        self._cache_s = timedelta(seconds=cache_s)
        self._max_attempts = max_attempts
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[datetime, _Entries]] = {}  # agent -> (read at, entries)

    def active(self, agent: str, now: datetime) -> Degradation | None:
        now = utc(now)
        with self._lock:
            cached = self._cache.get(agent)
        if cached is not None and timedelta(0) <= now - cached[0] < self._cache_s:
            return combine(cached[1])
        check(agent, "slo")
        with calling(f"reading the degradations of agent {agent}"):
            entries = _entries(self._ref(agent).get())
        self._remember(agent, now, entries)
        return combine(entries)

    def enter(self, degradation: Degradation) -> bool:
        agent = check(degradation.agent, degradation.source)
        return self._transition(agent, utc(degradation.since), f"degrading agent {agent}",
                                lambda entries: entered(entries, degradation))

    def recover(self, agent: str, source: str, now: datetime, *, reason: str = "",
                burn_rates: Mapping[str, float] | None = None, runs: int = 0) -> Degradation | None:
        check(agent, source)
        recovery = Recovery(at=now, reason=reason, burn_rates=dict(burn_rates or {}), runs=runs)
        return self._transition(agent, utc(now), f"recovering agent {agent}",
                                lambda entries: recovered(entries, source, recovery))

    def unannounced(self, before: datetime) -> list[Transition]:
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = self._client.collection(self._collection).where(filter=FieldFilter("pending", "==", True))
        with calling("listing unannounced degradations"):
            found = [t for snap in query.stream() for t in pending(_entries(snap), before)]
        return sorted(found, key=lambda t: t.at)

    def announced(self, transition: Transition) -> None:
        agent = check(transition.degradation.agent, transition.degradation.source)
        self._transition(agent, None, f"marking a transition of agent {agent} announced",
                         lambda entries: (marked(entries, transition), None))

    def _transition(self, agent: str, now: datetime | None, what: str,
                    rule: Callable[[_Entries], tuple[_Entries | None, T]]) -> T:
        from google.api_core import exceptions as gexc
        from google.cloud import firestore

        ref = self._ref(agent)
        with calling(what):
            for _ in range(self._max_attempts):
                snap = ref.get()
                entries = _entries(snap)
                new, result = rule(entries)
                if new is None:
                    if now is not None:
                        self._remember(agent, now, entries)
                    return result
                doc = {"agent": agent, "sources": {s: t.model_dump(mode="python") for s, t in new.items()},
                       "pending": any(not t.announced for t in new.values()),
                       "updated_at": firestore.SERVER_TIMESTAMP}
                try:
                    if snap.exists:
                        ref.update(doc, option=self._client.write_option(last_update_time=snap.update_time))
                    else:
                        ref.create(doc)
                except (gexc.FailedPrecondition, gexc.Conflict, gexc.NotFound):
                    continue
                if now is not None:
                    self._remember(agent, now, new)
                return result
        raise TransientError(f"{what}: too much contention, gave up after {self._max_attempts} attempts")

    def _ref(self, agent: str) -> firestore.DocumentReference:
        return self._client.collection(self._collection).document(agent)

    def _remember(self, agent: str, now: datetime, entries: _Entries) -> None:
        with self._lock:
            self._cache[agent] = (now, entries)


def _entries(snap: Any) -> _Entries:
    if not snap.exists:
        return {}
    sources = native((snap.to_dict() or {}).get("sources") or {})
    return {s: Transition.model_validate(t) for s, t in sources.items()}
