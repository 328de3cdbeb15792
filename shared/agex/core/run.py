"""The durable state of a run: its head document and its append-only events.

Stored as ``tenants/{tenant}/runs/{run}`` (the head) and ``tenants/{tenant}/runs/{run}/events/{seq}`` (on
Firestore, one document holds the events of one commit).
The head has a fixed shape whatever the run's length: history lives only in events, so a step writes
its own delta and the head never approaches Firestore's 1 MiB document limit.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agex.core.thread import ThreadContext

FORMAT_VERSION = 1
"""Bumped when the stored shape changes incompatibly; every head and event carries it."""


class RunStatus(StrEnum):
    queued = "queued"
    running = "running"
    waiting_approval = "waiting_approval"
    waiting_timer = "waiting_timer"
    waiting_turn = "waiting_turn"
    """A thread's message sent while its run was going (policy ``queue``): it starts when the runs before it
    ended (docs/threads.md)."""
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    expired = "expired"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = {RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled, RunStatus.expired}
ACTIVE_STATUSES = (RunStatus.queued, RunStatus.running)
"""Statuses in which a run must have a live step task; the sweep looks for runs that lost theirs."""
WAITING_STATUSES = (RunStatus.waiting_approval, RunStatus.waiting_timer)
"""Statuses in which nothing runs until ``wake_at`` (or a decision): one scheduled task is all there is."""
UNFINISHED_STATUSES = tuple(s for s in RunStatus if not s.terminal)
"""Every status of a run that has not ended: it still needs the agent version it runs on."""


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Usage(_Doc):
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    model_calls: int = 0

    def add(self, input_tokens: int, output_tokens: int, cost_usd: float) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + input_tokens,
            output_tokens=self.output_tokens + output_tokens,
            cost_usd=round(self.cost_usd + cost_usd, 9),
            model_calls=self.model_calls + 1,
        )


class Limits(_Doc):
    """Per-run limits; a run over any of them stops as ``failed`` with the limit named."""

    max_steps: int = Field(default=25, ge=1, le=10_000)
    max_tokens: int = Field(default=500_000, ge=1)
    """Input plus output tokens over all model calls of the run."""
    max_cost_usd: float = Field(default=1.0, gt=0)
    max_wall_time_s: int = Field(default=7 * 24 * 3600, ge=1, le=7 * 24 * 3600)
    # runaway guards (docs/budgets.md): on by default, each a loop's signature
    max_repeated_calls: int = Field(default=5, ge=1)
    """The same tool with the same arguments at most this many times in a run: the model asking once more
    stops the run (``repeated_call``) before the call is made."""
    max_context_tokens: int = Field(default=100_000, ge=100)
    """About this many input tokens per model call at most: a larger request is cut to fewer of the last
    steps (recorded as a degradation), and a run whose input alone is over stops (``context_too_large``)."""
    max_steps_per_minute: int = Field(default=60, ge=1)
    """A run steps no faster than this on average, with bursts of as many steps: a faster one waits
    (``timer_set``, reason ``step_rate``) before its next step."""


CALLS_SEEN_KEPT = 8


ISSUED = -1
"""``Lease.attempt`` of a lease the last step's commit issued to the next step's task, no attempt holding it yet."""


class Lease(_Doc):
    """Who may write the step in progress. Fencing: every write of a step checks the owner.

    The holder renews ``until`` while it works (a heartbeat every third of the lease), so a live
    attempt keeps its lease however long its model and tool calls take; another delivery of the step
    is refused (409) until ``until`` passes without a renewal, when the holder is presumed dead and
    the lease may be taken over. See docs/architecture.md, "The lease"."""

    owner: str
    """``{task name}#{retry count}@{instance}``: unique per delivery attempt; ``{task name}#issued`` for a lease
    the last step's commit issued to the next step's task (``attempt`` ``ISSUED``)."""
    task: str
    attempt: int
    step: int
    until: datetime
    """Expiry: pushed forward by every renewal; passed, the lease may be taken over."""

    @property
    def issued(self) -> bool:
        """Issued by the last commit to the next step's first delivery, which takes it with its first write."""
        return self.attempt == ISSUED


class RunError(_Doc):
    code: str
    """Stable, machine-readable: ``max_steps``, ``max_tokens``, ``max_cost``, ``max_wall_time``,
    ``model_error``, ``tool_uncertain``, ``approval_expired``, ``guardrail_blocked``, ``expired``,
    ``budget_exceeded``, ``repeated_call``, ``context_too_large``, ``internal``."""
    message: str


class RunHead(_Doc):
    format: int = FORMAT_VERSION
    run_id: str
    tenant: str
    agent: str
    agent_version: str
    principal: str
    """Who started the run."""
    status: RunStatus = RunStatus.queued
    step: int = 0
    """Steps committed so far; the task for step ``step + 1`` is the only one that may run."""
    seq: int = 0
    """Events written so far; the next event gets ``seq + 1``."""
    generation: int = 0
    """Bumped by the sweep when it re-enqueues a lost step task, so the new task gets a fresh name."""
    input: str
    input_view: str | None = None
    """What the model sees of ``input`` when a guard redacted or quarantined it (set at step 1; the
    original stays in ``input``, for its sender)."""
    metadata: dict[str, str] = Field(default_factory=dict)
    limits: Limits = Field(default_factory=Limits)
    usage: Usage = Field(default_factory=Usage)
    lease: Lease | None = None
    approval_id: str | None = None
    """The approval the run waits for (``waiting_approval``)."""
    wake_at: datetime | None = None
    """When a waiting run's scheduled task is due: the timer, or the approval's expiry."""
    result: str | None = None
    error: RunError | None = None
    trace: str = ""
    """W3C traceparent of the run's root span; every step task carries a child of it."""
    idempotency_key: str | None = None
    request_hash: str | None = None
    created_at: datetime
    updated_at: datetime
    expire_at: datetime
    """Firestore TTL deletes the run after this; the runtime also refuses to step past it."""
    calls_seen: list[str] = Field(default_factory=list)
    """How often the model asked for recent tool calls, as ``{digest}:{count}`` (the digest of the tool and its
    arguments), least recently asked first: the ``CALLS_SEEN_KEPT`` most asked, the newest of equals, so the
    head keeps its fixed shape (a list, because Firestore keeps a list's order and not a map's)."""
    budget_decisions: dict[str, str] = Field(default_factory=dict)
    """Budgets with ``action: approve`` a human decided on for this run: ``approved`` (it goes on) or
    ``rejected``."""
    step_tokens: float | None = None
    step_tokens_at: datetime | None = None
    """The step rate's token bucket: steps the run may take at once, as of ``step_tokens_at``."""
    thread_id: str | None = None
    """The thread the run is a turn of (docs/threads.md)."""
    watched_until: datetime | None = None
    """A follower of the run's events is reading until then: its steps stream the model's text as it comes
    (docs/api.md, "Following a run")."""
    context: ThreadContext | None = None
    """The conversation before this turn, as the thread had it when the run started: bounded (a summary and the
    last turns), and fixed for the run's life."""
    recalled: str | None = None
    """The memories recalled for the run (docs/memory.md), as the note its first message shows the model: fixed at
    the first model call, so every step and redelivery shows the same."""
    window: str | None = None
    """``"{seq}:{sha256}"``: the context window the last step's commit handed to the next step's task, as of event
    ``seq``, and the digest of its text. The next step uses the window its task carries only if it has this
    digest, so a task body is never trusted for what the model sees (``agex.engine.window``)."""


class EventKind(StrEnum):
    run_created = "run_created"
    step_started = "step_started"
    model_response = "model_response"
    tool_intent = "tool_intent"
    tool_result = "tool_result"
    step_completed = "step_completed"
    run_finished = "run_finished"
    run_cancelled = "run_cancelled"
    sweep_reenqueued = "sweep_reenqueued"
    approval_requested = "approval_requested"
    approval_decided = "approval_decided"
    """Approved, rejected or expired: who, when, the comment and any edited arguments."""
    tool_deferred = "tool_deferred"
    """A tool asked to be called again later (rate limited); it did not run."""
    timer_set = "timer_set"
    """The run waits until ``wake_at`` before its next step."""
    guard_verdict = "guard_verdict"
    """A guard did not simply allow a content: which channel, the chain's action, and each verdict
    (guard, action, reason, score, findings; never the content). Written with what it judged."""
    run_migrated = "run_migrated"
    """A declared migration rule moved the run to another version of its agent from this step on
    (``from_version``, ``to_version``, ``rule``): the only way a run changes version (docs/versions.md)."""
    tool_late_result = "tool_late_result"
    """What a call returned, reported by an attempt that had lost its lease meanwhile: a fact, recorded
    whatever became of the run; it settles the call's reconciliation (see docs/tools.md)."""
    memory_recalled = "memory_recalled"
    """The memories put in the run's context before its first model call (``memories``: id, text, score,
    trusted), written with that call's response: every later step and redelivery shows the model the same."""
    memory_learned = "memory_learned"
    """What was learned from the run after it ended (docs/memory.md): the facts kept (with their record ids and
    what became of conflicts), those left out and why, and the extraction's model and cost."""


class Event(_Doc):
    format: int = FORMAT_VERSION
    seq: int
    step: int
    kind: EventKind
    at: datetime
    expire_at: datetime
    data: dict[str, Any] = Field(default_factory=dict)
