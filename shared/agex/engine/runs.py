"""The application layer behind the API: start, read, list and cancel runs, and sweep lost ones.

Pure over ports, like the engine: HTTP parsing lives in ``agex.app.http``, storage in the adapters.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from agex.core.agent import Agent, AgentRegistry
from agex.core.clock import Clock, Ids, derived_id
from agex.core.errors import (
    AlreadyExists,
    BudgetExceeded,
    Conflict,
    NotFound,
    PayloadTooLarge,
    TransientError,
)
from agex.core.guard import Chain
from agex.core.run import ACTIVE_STATUSES, Event, EventKind, RunHead, RunStatus
from agex.core.thread import ThreadContext
from agex.core.webhook import Webhook
from agex.engine import decisions, notify
from agex.engine.budgets import Budgets
from agex.obs import logging as log
from agex.ports.auth import Caller
from agex.ports.checkpoint_store import CheckpointStore, Mutation, RunFilter
from agex.ports.failpoints import NO_FAILPOINTS, Failpoints
from agex.ports.task_queue import StepTask, TaskQueue

RUN_RETENTION = timedelta(days=7)
_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_log = log.get("service")


MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]


class CreateRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str = Field(min_length=1, description="What the agent is asked to do.")
    metadata: dict[MetadataKey, MetadataValue] = Field(
        default_factory=dict, max_length=32, description="Up to 32 string labels, kept on the run.")


@dataclass(frozen=True)
class ThreadTurn:
    """A run that is a turn of a thread: started now with the conversation so far (``context``), or waiting
    (``waiting_turn``) until the runs before it ended, when the thread gives it its context."""

    thread_id: str
    context: ThreadContext | None

    def fields(self) -> dict[str, Any]:
        if self.context is None:
            return {"thread_id": self.thread_id, "status": RunStatus.waiting_turn}
        return {"thread_id": self.thread_id, "context": self.context}


@dataclass(frozen=True)
class Started:
    run: RunHead
    replayed: bool
    """True when an earlier request with the same Idempotency-Key created the run."""


@dataclass
class SweepReport:
    examined: int = 0
    reenqueued: int = 0
    expired: int = 0
    deleted: int = 0
    """Rows past their retention deleted, by a store without TTL policies (Postgres)."""


class RunService:
    def __init__(self, *, store: CheckpointStore, queue: TaskQueue, agents: AgentRegistry, clock: Clock,
                 ids: Ids, max_input_bytes: int = 32 * 1024, sweep_after: timedelta = timedelta(minutes=5),
                 failpoints: Failpoints = NO_FAILPOINTS,
                 chains: Callable[[Agent], Chain | None] | None = None,
                 fingerprint: Callable[[Agent], str] | None = None, budgets: Budgets | None = None,
                 webhooks: Sequence[Webhook] = ()) -> None:
        self.store, self.queue, self.agents, self.clock, self.ids = store, queue, agents, clock, ids
        self.budgets, self.webhooks = budgets, tuple(webhooks)
        self.fingerprint = fingerprint or (lambda agent: "")
        self.chains = chains or (lambda agent: None)
        self.failpoints = failpoints
        self.max_input_bytes = max_input_bytes
        self.sweep_after = sweep_after

    def _shown(self, agent: Agent, text: str) -> str:
        """The input as events show it: personal data redacted when the agent's chain has the pii guard
        (the head keeps it whole, for its sender and the model)."""
        chain = self.chains(agent)
        return str(chain.redact_for_records(text)) if chain is not None else text

    def check(self, agent_name: str, request: CreateRunRequest) -> Agent:
        """What ``start`` refuses before it writes anything: an unknown agent, an input over the limit."""
        agent = self.agents.get(agent_name)
        size = len(request.input.encode())
        if size > self.max_input_bytes:
            raise PayloadTooLarge(f"input is {size} bytes; the limit is {self.max_input_bytes} bytes. "
                                  "Pass large documents by reference (a URL or object name) instead")
        return agent

    def run_id_for(self, caller: Caller, idempotency_key: str | None) -> str:
        """The id a new run gets: derived from the Idempotency-Key when there is one (the same key always names
        the same run in a tenant), new otherwise."""
        return self.ids.new_id("run_") if idempotency_key is None else keyed_run_id(caller.tenant, idempotency_key)

    def start(self, caller: Caller, agent_name: str, request: CreateRunRequest, *,
              idempotency_key: str | None = None, traceparent: str = "", run_id: str | None = None,
              turn: ThreadTurn | None = None) -> Started:
        """Create the run and enqueue its first step. ``idempotency_key`` comes checked by the caller (the
        API's one check is ``agex.app.http.rules.idempotency_key``): the same key and request in a tenant
        give the same run, a different request under it is a ``Conflict``. ``run_id``: the id
        ``run_id_for`` gave beforehand (a thread admits its run before creating it); ``turn``: the run is a
        turn of a thread (``agex.engine.threads``), which starts now or waits its turn."""
        agent = self.check(agent_name, request)
        request_hash = _hash({"agent": agent_name, **request.model_dump(),
                              **({"thread": turn.thread_id} if turn else {})})
        run_id = run_id or self.run_id_for(caller, idempotency_key)
        now = self.clock.now()
        if self.budgets is not None and self.budgets.applying(caller.tenant, agent.name):
            try:
                self.budgets.admit(caller.tenant, agent.name, caller.principal, now)
            except BudgetExceeded:
                # a retried request for a run created before the budget was spent gets its run back
                earlier = self.store.get_run(caller.tenant, run_id) if idempotency_key is not None else None
                if earlier is None or earlier.request_hash != request_hash:
                    raise
        head = RunHead(run_id=run_id, tenant=caller.tenant, agent=agent.name, agent_version=agent.version,
                       principal=caller.principal, input=request.input, metadata=request.metadata,
                       limits=agent.limits, trace=traceparent, idempotency_key=idempotency_key,
                       request_hash=request_hash, created_at=now, updated_at=now, expire_at=now + RUN_RETENTION,
                       seq=1, **(turn.fields() if turn else {}))
        created = Event(seq=1, step=0, kind=EventKind.run_created, at=now, expire_at=head.expire_at,
                        data={"agent": agent.name, "agent_version": agent.version, "principal": caller.principal,
                              "input": self._shown(agent, request.input), "metadata": request.metadata,
                              "fingerprint": self.fingerprint(agent),
                              **({"thread_id": turn.thread_id} if turn else {})})
        try:
            self.store.create_run(head, [created])
            replayed = False
            self.failpoints.hit("service.after_create")
        except AlreadyExists as e:
            existing = e.existing
            if not isinstance(existing, RunHead) or existing.request_hash != request_hash:
                raise Conflict("this Idempotency-Key was already used with a different request; "
                               "use a new key for a new run") from e
            head, replayed = existing, True
        if head.status in ACTIVE_STATUSES and head.step == 0:
            # also on a replay: if the first enqueue was lost, the retried request repairs it (the task
            # name dedupes, so this never starts the run twice)
            self._enqueue_first(head)
        return Started(head, replayed)

    def _enqueue_first(self, head: RunHead) -> None:
        try:
            self.queue.enqueue(StepTask.next_of(head))
        except Exception:  # the run is stored; the sweep enqueues it if this was lost
            _log.exception("could not enqueue the first step; the sweep will retry it")

    def get(self, caller: Caller, run_id: str) -> RunHead:
        head = self.store.get_run(caller.tenant, run_id) if _ID.match(run_id) else None
        if head is None:
            # another tenant's run is indistinguishable from a missing one
            raise NotFound(f"run {run_id!r} not found")
        return decisions.as_seen(head, self.clock.now())

    def events(self, caller: Caller, run_id: str, *, after_seq: int = 0, limit: int = 100) -> list[Event]:
        self.get(caller, run_id)
        return self.store.list_events(caller.tenant, run_id, after_seq=after_seq, limit=limit)

    def events_of_checked(self, caller: Caller, run_id: str, *, after_seq: int, limit: int) -> list[Event]:
        """``events`` without reading the run again: for a follower that checked once that the run is the
        caller's tenant's (a run never changes tenant), so each poll is one query."""
        return self.store.list_events(caller.tenant, run_id, after_seq=after_seq, limit=limit)

    def list(self, caller: Caller, where: RunFilter, *, limit: int = 100,
             after: tuple[datetime, str] | None = None) -> list[RunHead]:
        """The caller's tenant's runs, newest first, as their readers see them (an overdue run as expired)."""
        now = self.clock.now()
        return [decisions.as_seen(h, now) for h in self.store.list_runs(caller.tenant, where, limit=limit, after=after)]

    def watch(self, caller: Caller, run_id: str, for_: timedelta) -> None:
        """Someone follows the run's events: mark it watched for ``for_``, so its steps stream the model's text
        (the mark is renewed while they follow; not written again while it has most of its time left, and not
        at all on a run that ended)."""
        now = self.clock.now()

        def mark(h: RunHead) -> Mutation[None]:
            if h.status.terminal or (h.watched_until is not None and h.watched_until - now > for_ / 2):
                return Mutation(None)
            return Mutation(h.model_copy(update={"watched_until": now + for_}))

        try:
            self.store.update_run(caller.tenant, run_id, mark)
        except (NotFound, TransientError) as e:  # the stream goes on: its text comes with the recorded answer
            _log.info("could not mark run %s watched: %s", run_id, e.message)

    def unfinished_versions(self, caller: Caller, agent: str) -> dict[tuple[str, str], int]:
        """The caller's tenant's runs of ``agent`` that have not ended, per version."""
        return self.store.unfinished_versions(tenant=caller.tenant, agent=agent)

    def cancel(self, caller: Caller, run_id: str) -> RunHead:
        head = self.get(caller, run_id)
        for _ in range(3):
            # the approval the run waits for is cancelled with it, in the same commit; it is read first,
            # and read again if the run moved on to another one meanwhile
            approval = self.store.get_approval(caller.tenant, head.approval_id) if head.approval_id else None
            try:
                result = self.store.update_run(caller.tenant, run_id, functools.partial(
                    decisions.cancel, principal=caller.principal, now=self.clock.now(), approval=approval))
            except decisions.ApprovalMoved:
                head = self.get(caller, run_id)
                continue
            assert result.head is not None
            notify.enqueue_webhooks(self.queue, result.head, self.webhooks)
            return result.head
        raise TransientError(f"run {run_id} kept changing while it was being cancelled; try again")

    def sweep(self, limit: int = 200) -> SweepReport:
        """Re-enqueue active runs whose step task was lost, and timers whose task is overdue; expire runs
        past their retention. (Overdue approvals are the approvals applier's, see its ``sweep``.)"""
        now = self.clock.now()
        report = SweepReport()
        overdue = self.store.find_waiting(now - self.sweep_after, limit)
        for head in self.store.find_runs(list(ACTIVE_STATUSES), now - self.sweep_after, limit) + overdue:
            report.examined += 1
            if now >= head.expire_at:
                self.store.update_run(head.tenant, head.run_id, lambda h: decisions.expire(h, now))
                report.expired += 1
                continue
            if head.status == RunStatus.waiting_approval:
                continue
            if self.queue.exists(StepTask.next_of(head)):
                continue
            bumped = self.store.update_run(head.tenant, head.run_id,
                                           lambda h: decisions.reenqueue(h, now, now - self.sweep_after))
            if bumped.head is not None and bumped.value:
                self.queue.enqueue(StepTask.next_of(bumped.head))
                log.info(_log, "re-enqueued a run that lost its step task", run=head.run_id,
                         step=bumped.head.step + 1, generation=bumped.value)
                report.reenqueued += 1
        # in batches of a transaction each, so deleting never holds many rows locked at once
        report.deleted = sum(self.store.delete_expired(now, batch=500).values())
        return report


def keyed_run_id(tenant: str, idempotency_key: str) -> str:
    """The run id an Idempotency-Key maps to in a tenant: the same key always names the same run."""
    return derived_id("run_", f"{tenant}\0{idempotency_key}")


def _hash(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
