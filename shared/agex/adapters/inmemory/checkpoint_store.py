"""In-memory checkpoint store: one lock stands in for Firestore's transactions."""

from __future__ import annotations

import copy
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from agex.core.approval import Approval, ApprovalStatus
from agex.core.errors import AlreadyExists, NotFound
from agex.core.run import WAITING_STATUSES, Event, RunHead, RunStatus
from agex.core.spend import SpendEntry
from agex.ports.checkpoint_store import CheckpointStore, Mutation, RunFilter
from agex.ports.rules import check_continues, check_late_decision, check_size, check_update

T = TypeVar("T")


class InMemoryCheckpointStore(CheckpointStore):
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._heads: dict[tuple[str, str], RunHead] = {}
        self._events: dict[tuple[str, str], list[Event]] = {}
        self._approvals: dict[tuple[str, str], Approval] = {}
        self._spend: dict[str, SpendEntry] = {}

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
                # all checked before anything is stored: all or nothing
                check_update(head, result.events, result.approvals)
                _check_sizes(result.head, result.events)
                for approval in result.approvals:
                    check_size(approval_path(approval.tenant, approval.approval_id), approval.model_dump(mode="python"))
                self._heads[key] = result.head.model_copy(deep=True)
                self._events[key].extend(e.model_copy(deep=True) for e in result.events)
                for approval in result.approvals:
                    self._approvals[(tenant, approval.approval_id)] = approval.model_copy(deep=True)
                self._spend.update((e.entry_id, e) for e in result.spend)
            return result

    def add_spend(self, entry: SpendEntry) -> bool:
        """Keep an entry no commit carried, unless one of its id is kept already."""
        with self._lock:
            if entry.entry_id in self._spend:
                return False
            self._spend[entry.entry_id] = entry
            return True

    def spend_entries(self) -> list[SpendEntry]:
        """The ledger's entries, for :class:`agex.adapters.inmemory.spend_ledger.InMemorySpendLedger`."""
        with self._lock:
            return list(self._spend.values())

    def list_events(self, tenant: str, run_id: str, *, after_seq: int = 0, limit: int = 100) -> list[Event]:
        with self._lock:
            events = self._events.get((tenant, run_id), [])
            return [e.model_copy(deep=True) for e in events if e.seq > after_seq][:limit]

    def events_since_step(self, tenant: str, run_id: str, step: int) -> list[Event]:
        with self._lock:
            return [e.model_copy(deep=True) for e in self._events.get((tenant, run_id), []) if e.step >= step]

    def find_runs(self, statuses: Sequence[RunStatus], updated_before: datetime, limit: int = 100, *,
                  updated_after: datetime | None = None) -> list[RunHead]:
        with self._lock:
            found = [h for h in self._heads.values() if h.status in statuses and h.updated_at < updated_before
                     and (updated_after is None or h.updated_at > updated_after)]
            return [h.model_copy(deep=True) for h in sorted(found, key=lambda h: h.updated_at)[:limit]]

    def unfinished_versions(self, *, tenant: str | None = None, agent: str | None = None) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(Counter((h.agent, h.agent_version) for (t, _), h in self._heads.items()
                                if not h.status.terminal and tenant in (None, t) and agent in (None, h.agent)))

    def list_runs(self, tenant: str, where: RunFilter, *, limit: int = 100,
                  after: tuple[datetime, str] | None = None) -> list[RunHead]:
        with self._lock:
            found = [h for (t, _), h in self._heads.items() if t == tenant and _matches(h, where)]
        found.sort(key=lambda h: (h.created_at, h.run_id), reverse=True)
        if after is not None:
            found = [h for h in found if (h.created_at, h.run_id) < after]
        return [h.model_copy(deep=True) for h in found[:max(limit, 0)]]

    def find_waiting(self, due_before: datetime, limit: int = 100) -> list[RunHead]:
        with self._lock:
            found = [h for h in self._heads.values()
                     if h.status in WAITING_STATUSES and h.wake_at is not None and h.wake_at < due_before]
            # run_id breaks ties so the order is stable, as Firestore's (document name) is
            found.sort(key=lambda h: (h.wake_at or due_before, h.tenant, h.run_id))
            return [h.model_copy(deep=True) for h in found[:limit]]

    def get_approval(self, tenant: str, approval_id: str) -> Approval | None:
        with self._lock:
            approval = self._approvals.get((tenant, approval_id))
            return approval.model_copy(deep=True) if approval else None

    def list_approvals(self, tenant: str, *, status: ApprovalStatus | None = None, limit: int = 100,
                       after: tuple[datetime, str] | None = None) -> list[Approval]:
        with self._lock:
            found = [a for (t, _), a in self._approvals.items()
                     if t == tenant and (status is None or a.status == status)
                     and (after is None or (a.created_at, a.approval_id) > after)]
            found.sort(key=lambda a: (a.created_at, a.approval_id))
            return [a.model_copy(deep=True) for a in found[:limit]]

    def add_late_decision(self, tenant: str, approval_id: str, entry: dict[str, Any]) -> None:
        with self._lock:
            approval = self._approvals.get((tenant, approval_id))
            if approval is None:
                raise NotFound(f"approval {approval_id} not found")
            check_late_decision(approval_id, entry)
            if entry in approval.late_decisions:
                return  # a redelivered late decision is recorded once
            updated = approval.model_copy(deep=True)
            updated.late_decisions.append(copy.deepcopy(entry))
            check_size(approval_path(tenant, approval_id), updated.model_dump(mode="python"))
            self._approvals[(tenant, approval_id)] = updated


def approval_path(tenant: str, approval_id: str) -> str:
    return f"tenants/{tenant}/approvals/{approval_id}"


def _check_sizes(head: RunHead, events: Sequence[Event]) -> None:
    """The same document limit as Firestore's, so code that passes here does not fail there."""
    path = f"tenants/{head.tenant}/runs/{head.run_id}"
    check_size(path, head.model_dump(mode="python"))
    for event in events:
        check_size(f"{path}/events/{event.seq:010d}", event.model_dump(mode="python"))


def _matches(head: RunHead, where: RunFilter) -> bool:
    return ((where.agent is None or head.agent == where.agent)
            and (where.status is None or head.status == where.status)
            and (where.principal is None or head.principal == where.principal)
            and (where.thread is None or head.thread_id == where.thread)
            and (where.created_after is None or head.created_at >= where.created_after)
            and (where.created_before is None or head.created_at < where.created_before))
