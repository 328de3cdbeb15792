"""Checkpoint store port: run heads and their append-only events. What every store checks before it writes
(document sizes, event sequences, a mutation's approvals) is in :mod:`agex.ports.rules`."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from agex.core.approval import Approval, ApprovalStatus
from agex.core.run import Event, RunHead, RunStatus
from agex.core.spend import SpendEntry

T = TypeVar("T")


@dataclass(frozen=True)
class Mutation(Generic[T]):
    """What a transactional update decided: the new head (or None to write nothing), new events, and a
    value handed back to the caller. ``events`` must continue ``head.seq`` of the head read.

    ``approvals`` are written (whole, created or replaced) in the same atomic commit: an approval
    changes state only together with its run's head, so the head's precondition guards both.

    ``spend``: ledger entries of the model calls the mutation records, written in the same commit (so a
    call is counted exactly once: see :mod:`agex.ports.spend_ledger`)."""

    head: RunHead | None
    events: Sequence[Event] = field(default_factory=tuple)
    value: T | None = None
    approvals: Sequence[Approval] = field(default_factory=tuple)
    spend: Sequence[SpendEntry] = field(default_factory=tuple)


@dataclass(frozen=True)
class RunFilter:
    """Which of a tenant's runs to list: each field set must match (``created_after`` inclusive,
    ``created_before`` exclusive)."""

    agent: str | None = None
    status: RunStatus | None = None
    principal: str | None = None
    thread: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


class CheckpointStore(abc.ABC):
    """Transactions on one run head plus appends to its events.

    ``update_run`` is the only way to change a run: the store reads the head, calls ``mutate`` (a pure
    function, which may run several times when the store retries on contention), and writes the new head
    and events atomically, or nothing. Events are created, never overwritten.
    """

    @abc.abstractmethod
    def create_run(self, head: RunHead, events: Sequence[Event]) -> RunHead:
        """Create the head and its first events; raise ``AlreadyExists`` with the stored head attached
        as ``existing`` if a run with this id exists already."""

    @abc.abstractmethod
    def get_run(self, tenant: str, run_id: str) -> RunHead | None: ...

    @abc.abstractmethod
    def update_run(self, tenant: str, run_id: str, mutate: Callable[[RunHead], Mutation[T]]) -> Mutation[T]:
        """Apply ``mutate`` in a transaction; raise ``NotFound`` if the run does not exist."""

    @abc.abstractmethod
    def list_events(
        self, tenant: str, run_id: str, *, after_seq: int = 0, limit: int = 100
    ) -> list[Event]:
        """Events with ``seq > after_seq`` in order, at most ``limit``."""

    @abc.abstractmethod
    def events_since_step(self, tenant: str, run_id: str, step: int) -> list[Event]:
        """Events of steps ``>= step`` in order: the context window and the step in progress."""

    @abc.abstractmethod
    def find_runs(
        self, statuses: Sequence[RunStatus], updated_before: datetime, limit: int = 100, *,
        updated_after: datetime | None = None,
    ) -> list[RunHead]:
        """Runs of every tenant in one of ``statuses`` not updated since ``updated_before`` (and updated
        after ``updated_after``), oldest update first: the sweep's query for runs that lost their step
        task, and the drift collector's for runs that ended."""

    @abc.abstractmethod
    def list_runs(self, tenant: str, where: RunFilter, *, limit: int = 100,
                  after: tuple[datetime, str] | None = None) -> list[RunHead]:
        """A tenant's runs matching ``where``, newest first (``created_at`` descending, then ``run_id``
        descending), starting after the ``after`` position."""

    @abc.abstractmethod
    def unfinished_versions(self, *, tenant: str | None = None, agent: str | None = None) -> dict[tuple[str, str], int]:
        """How many runs that have not ended there are per ``(agent, agent_version)``: of one tenant or of every
        tenant, of one agent or of all. What says whether a version may be retired (docs/versions.md)."""

    @abc.abstractmethod
    def find_waiting(self, due_before: datetime, limit: int = 100) -> list[RunHead]:
        """Runs of every tenant in a waiting status whose ``wake_at`` is before ``due_before``, earliest
        first: the sweep's query for waits whose scheduled task was lost."""

    @abc.abstractmethod
    def get_approval(self, tenant: str, approval_id: str) -> Approval | None: ...

    @abc.abstractmethod
    def list_approvals(self, tenant: str, *, status: ApprovalStatus | None = None, limit: int = 100,
                       after: tuple[datetime, str] | None = None) -> list[Approval]:
        """A tenant's approvals (of one status, or all) ordered by ``(created_at, approval_id)``, starting
        after the ``after`` position."""

    def delete_expired(self, now: datetime, *, batch: int = 1000) -> dict[str, int]:
        """Delete what passed its ``expire_at``, for a store without TTL policies (Postgres); the rows deleted per
        table. Firestore's TTL policies delete expired documents themselves: nothing to do (the default)."""
        return {}

    @abc.abstractmethod
    def add_late_decision(self, tenant: str, approval_id: str, entry: dict[str, Any]) -> None:
        """Append ``entry`` to the approval's ``late_decisions`` unless an equal entry is there already
        (a redelivered late decision is recorded once). Raise ``NotFound`` if there is no such approval."""
