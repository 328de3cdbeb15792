"""In-memory checkpoint store: one lock stands in for Firestore's transactions."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

from agex.errors import AlreadyExists, NotFound
from agex.ports.checkpoint_store import CheckpointStore, Mutation
from agex.run import Event, RunHead, RunStatus

T = TypeVar("T")


class InMemoryCheckpointStore(CheckpointStore):
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._heads: dict[tuple[str, str], RunHead] = {}
        self._events: dict[tuple[str, str], list[Event]] = {}

    def create_run(self, head: RunHead, events: Sequence[Event]) -> RunHead:
        key = (head.tenant, head.run_id)
        with self._lock:
            if key in self._heads:
                raise AlreadyExists(f"run {head.run_id} exists", existing=self._heads[key].model_copy(deep=True))
            _check_continues(head.seq - len(events), events)
            self._heads[key] = head.model_copy(deep=True)
            self._events[key] = [e.model_copy(deep=True) for e in events]
            return head

    def get_run(self, tenant: str, run_id: str) -> RunHead | None:
        with self._lock:
            head = self._heads.get((tenant, run_id))
            return head.model_copy(deep=True) if head else None

    def update_run(self, tenant: str, run_id: str, mutate: Callable[[RunHead], Mutation[T]]) -> Mutation[T]:
        key = (tenant, run_id)
        with self._lock:
            head = self._heads.get(key)
            if head is None:
                raise NotFound(f"run {run_id} not found")
            result = mutate(head.model_copy(deep=True))
            if result.head is not None:
                _check_continues(head.seq, result.events)
                self._heads[key] = result.head.model_copy(deep=True)
                self._events[key].extend(e.model_copy(deep=True) for e in result.events)
            return result

    def list_events(self, tenant: str, run_id: str, *, after_seq: int = 0, limit: int = 100) -> list[Event]:
        with self._lock:
            events = self._events.get((tenant, run_id), [])
            return [e.model_copy(deep=True) for e in events if e.seq > after_seq][:limit]

    def events_since_step(self, tenant: str, run_id: str, step: int) -> list[Event]:
        with self._lock:
            return [e.model_copy(deep=True) for e in self._events.get((tenant, run_id), []) if e.step >= step]

    def find_runs(self, statuses: Sequence[RunStatus], updated_before: datetime, limit: int = 100) -> list[RunHead]:
        with self._lock:
            found = [h for h in self._heads.values() if h.status in statuses and h.updated_at < updated_before]
            return [h.model_copy(deep=True) for h in sorted(found, key=lambda h: h.updated_at)[:limit]]


def _check_continues(seq: int, events: Sequence[Event]) -> None:
    """Events must continue the head's sequence exactly: a gap or overlap is a bug in a decision."""
    for i, event in enumerate(events, start=1):
        if event.seq != seq + i:
            raise ValueError(f"event seq {event.seq} does not continue the run's sequence at {seq + i}")
