"""Firestore adapter of the breakers port: one circuit per model, shared by every instance.

Layout (``prefix`` is empty in production; tests isolate themselves with a unique one)::

    {prefix}model_breakers/{model, "/" as "~"}      failures: [Timestamp] (the newest, at most
                                                    policy.failures), open_until: Timestamp | null

A document is a few hundred bytes and there is one per model ever failed: no TTL policy is needed.

Reads are cached. ``open_until`` is asked before every model call, and a failure storm is exactly when
steps run fastest (each failing quickly): without a cache every step would add a Firestore read. Each
process keeps what it last read or wrote per model for ``cache_s`` seconds of the callers' ``now``, so an
instance learns that another opened (or that the cool-down ended) up to ``cache_s`` late. An instance
sees its own failures at once: ``failed`` always goes to Firestore and refreshes the cache.

Contention. Only failures write, each with a precondition (an ``update`` on the version read, or a
``create``), retried on the new version if another instance got there first, as the metrics store does;
no transaction holds a lock. Once the circuit is open, a failure reads and changes nothing, and callers
skip the model anyway, so writes stop for the cool-down: the hottest the document gets is
``policy.failures`` writes racing before it opens.

The Google client libraries are imported only when a store is made or used (cold start).
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from agex.adapters.gcp.firestore_calls import calling, native
from agex.core.errors import TransientError
from agex.ports.breakers import (
    BreakerPolicy,
    Breakers,
    BreakerState,
    breaker_document_id,
    record_failure,
)
from agex.ports.metrics_rules import utc
from agex.ports.rules import check_collection_prefix

if TYPE_CHECKING:
    from google.cloud import firestore

__all__ = ["FirestoreBreakers"]


class _Retry(Exception):
    """A precondition failed: another instance changed the document since it was read."""


class FirestoreBreakers(Breakers):
    """``client``: a ``google.cloud.firestore.Client`` (honours ``FIRESTORE_EMULATOR_HOST``); if omitted,
    one is made for ``project``. ``cache_s``: how long a read of a circuit is reused by this process
    (0: every ``open_until`` reads). ``max_attempts``: reads of a contended document before a failure
    gives up with ``TransientError``."""

    def __init__(self, client: firestore.Client | None = None, *, project: str | None = None, prefix: str = "",
                 cache_s: float = 2.0, max_attempts: int = 20) -> None:
        check_collection_prefix(prefix)
        if client is None:
            from google.cloud import firestore

            client = firestore.Client(project=project)
        self._client = client
        self._collection = f"{prefix}model_breakers"
        self._cache_s = timedelta(seconds=cache_s)
        self._max_attempts = max_attempts
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[datetime, BreakerState]] = {}  # doc id -> (read at, state)

    def open_until(self, model: str, now: datetime) -> datetime | None:
        key, now = breaker_document_id(model), utc(now)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and timedelta(0) <= now - cached[0] < self._cache_s:
            return cached[1].open_at(now)
        with calling(f"reading the circuit of model {model}"):
            snap = self._ref(key).get()
        state = _state(snap)
        self._remember(key, now, state)
        return state.open_at(now)

    def failed(self, model: str, now: datetime, policy: BreakerPolicy) -> datetime | None:
        from google.api_core import exceptions as gexc

        key, now = breaker_document_id(model), utc(now)
        ref = self._ref(key)
        with calling(f"recording a failure of model {model}"):
            for _ in range(self._max_attempts):
                snap = ref.get()
                state = _state(snap)
                new = record_failure(state, now, policy)
                if new is None:
                    self._remember(key, now, state)
                    return state.open_until
                doc = {"failures": list(new.failures), "open_until": new.open_until}
                try:
                    if snap.exists:
                        ref.update(doc, option=self._client.write_option(last_update_time=snap.update_time))
                    else:
                        ref.create(doc)
                except (gexc.FailedPrecondition, gexc.Conflict, gexc.NotFound):
                    continue
                self._remember(key, now, new)
                return new.open_until
        raise TransientError(f"recording a failure of model {model}: too much contention, "
                             f"gave up after {self._max_attempts} attempts")

    def _ref(self, key: str) -> firestore.DocumentReference:
        return self._client.collection(self._collection).document(key)

    def _remember(self, key: str, now: datetime, state: BreakerState) -> None:
        with self._lock:
            self._cache[key] = (now, state)


def _state(snap: Any) -> BreakerState:
    if not snap.exists:
        return BreakerState()
    doc = snap.to_dict() or {}
    until = doc.get("open_until")
    return BreakerState(tuple(native(t) for t in doc.get("failures") or ()),
                        native(until) if until is not None else None)


