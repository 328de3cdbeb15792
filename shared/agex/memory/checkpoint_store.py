"""In-memory checkpoint store: one lock stands in for Firestore's transactions."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

from agex.errors import AlreadyExists, NotFound
from agex.ports.checkpoint_store import CheckpointStore, Mutation, check_continues, check_size
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
            check_continues(head.seq - len(events), events)
            _check_sizes(head, events)
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
                check_continues(head.seq, result.events)
                _check_sizes(result.head, result.events)
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


def _check_sizes(head: RunHead, events: Sequence[Event]) -> None:
    """The same document limit as Firestore's, so code that passes here does not fail there."""
    path = f"tenants/{head.tenant}/runs/{head.run_id}"
    check_size(path, head.model_dump(mode="python"))
    for event in events:
        check_size(f"{path}/events/{event.seq:010d}", event.model_dump(mode="python"))
