"""Threads: conversations made of runs, one turn per run, one run of a thread stepping at a time (docs/threads.md).

The thread document says which run is the turn under way (``active_run``) and which wait (``pending``). Admitting
a message and creating its run are two writes, so each is idempotent and the gap between them repaired:

1. ``post`` admits the message's run id in a thread transaction (or refuses it: policy ``reject``), then creates
   the run: started now with the conversation so far, or ``waiting_turn``. A run that could not be created
   is released from the thread again; one left admitted by a crash is released by the next post or the sweep.
2. A run that ends (whatever ended it: its step, an approval, a cancel, the sweep) enqueues a ``ThreadTask``
   (``agex.engine.notify``). ``advance`` records the turn and makes the next pending run the active one in one
   thread transaction, then starts that run (its status and context in one run transaction, then its first
   step task); a crash between the two is repaired by ``advance`` again (the task is retried) or the sweep.
3. When the thread keeps more than ``KEEP_TURNS`` turns, ``advance`` asks the agent's model to fold the oldest
   into the summary: after the next run started, so no one waits for it. Its cost goes to the spend ledger.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from agex.core.agent import Agent, AgentRegistry
from agex.core.clock import Clock, Ids, derived_id
from agex.core.errors import AlreadyExists, Conflict, NotFound
from agex.core.messages import Message, ModelRequest, Part
from agex.core.pricing import Pricing
from agex.core.run import RunHead, RunStatus
from agex.core.spend import LEDGER_RETENTION, SpendEntry
from agex.core.thread import (
    KEEP_TURNS,
    MAX_PENDING,
    MAX_RECENT_TURNS,
    SUMMARY_BATCH,
    SUMMARY_CHARS,
    THREAD_RETENTION,
    Thread,
    ThreadPolicy,
    Turn,
    clip,
)
from agex.engine.runs import CreateRunRequest, RunService, Started, ThreadTurn
from agex.obs import logging as log
from agex.ports.auth import Caller
from agex.ports.checkpoint_store import CheckpointStore, Mutation
from agex.ports.model import Model
from agex.ports.spend_ledger import SpendLedger
from agex.ports.task_queue import StepTask, TaskQueue
from agex.ports.threads import ThreadStore

_log = log.get("threads")
ADMISSION_GRACE = timedelta(seconds=60)
"""How long a run id admitted to a thread may go without its run existing before it is presumed lost (its
request crashed between the two writes) and released."""

SUMMARY_INSTRUCTIONS = (
    "You summarise conversations between a user and an assistant, for the assistant to continue them. Keep what "
    "the rest of the conversation may need: facts, names, numbers, what was decided or done, the user's "
    "preferences, open questions. Drop greetings and repetition. Write at most 250 words, in the third person, "
    "as plain text.")

MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]


class CreateThreadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: ThreadPolicy = Field(default=ThreadPolicy.reject, description=(
        "What a message sent while the thread's run is still going does: `reject` (409 thread_busy), `queue` "
        "(its run waits its turn) or `interrupt` (the run going on is cancelled)."))
    metadata: dict[MetadataKey, MetadataValue] = Field(default_factory=dict, max_length=32,
                                                       description="Up to 32 string labels, kept on the thread.")


class ThreadBusy(Conflict):
    code = "thread_busy"


@dataclass(frozen=True)
class _Admitted:
    role: str
    """``active`` (the run starts now), ``queued`` (it waits its turn) or ``interrupt`` (it goes next, once the
    runs in ``cancel`` were cancelled)."""
    cancel: tuple[str, ...] = ()


class ThreadService:
    def __init__(self, *, threads: ThreadStore, runs: RunService, store: CheckpointStore, queue: TaskQueue,
                 agents: AgentRegistry, clock: Clock, ids: Ids, models: Callable[[Agent], Model] | None = None,
                 pricing: Pricing | None = None, ledger: SpendLedger | None = None) -> None:
        self.threads, self.runs, self.store, self.queue = threads, runs, store, queue
        self.agents, self.clock, self.ids = agents, clock, ids
        self.models, self.pricing, self.ledger = models, pricing, ledger

    # --- the API's side ------------------------------------------------------------------------------

    def create(self, caller: Caller, agent_name: str, request: CreateThreadRequest, *,
               idempotency_key: str | None = None) -> tuple[Thread, bool]:
        """A new thread of ``agent``; with an Idempotency-Key, the same key and request give the same thread."""
        agent = self.agents.get(agent_name)
        request_hash = _hash({"agent": agent_name, **request.model_dump(mode="json")})
        thread_id = (self.ids.new_id("thr_") if idempotency_key is None
                     else derived_id("thr_", f"{caller.tenant}\0{idempotency_key}"))
        now = self.clock.now()
        thread = Thread(thread_id=thread_id, tenant=caller.tenant, agent=agent.name, principal=caller.principal,
                        policy=request.policy, metadata=request.metadata, idempotency_key=idempotency_key,
                        request_hash=request_hash, created_at=now, updated_at=now, expire_at=now + THREAD_RETENTION)
        try:
            return self.threads.create_thread(thread), False
        except AlreadyExists as e:
            existing = e.existing
            if not isinstance(existing, Thread) or existing.request_hash != request_hash:
                raise Conflict("this Idempotency-Key was already used with a different request; use a new key "
                               "for a new thread") from e
            return existing, True

    def get(self, caller: Caller, thread_id: str) -> Thread:
        thread = self.threads.get_thread(caller.tenant, thread_id) if _valid(thread_id) else None
        if thread is None or self.clock.now() >= thread.expire_at:
            raise NotFound(f"thread {thread_id!r} not found")
        return thread

    def post(self, caller: Caller, thread_id: str, request: CreateRunRequest, *,
             idempotency_key: str | None = None, traceparent: str = "") -> Started:
        """The next turn: a run of the thread's agent with the conversation so far, started now or when the
        runs before it ended, as the thread's policy says; ``ThreadBusy`` (409) when the policy refuses it."""
        thread = self.get(caller, thread_id)
        self.runs.check(thread.agent, request)
        run_id = self.runs.run_id_for(caller, idempotency_key)
        existing = self.store.get_run(caller.tenant, run_id) if idempotency_key is not None else None
        if existing is not None:
            # a retried request: the run is there (the thread admitted it before it was created)
            return self.runs.start(caller, thread.agent, request, idempotency_key=idempotency_key,
                                   traceparent=traceparent, run_id=run_id, turn=ThreadTurn(thread_id, None))
        self._repair(thread)
        now = self.clock.now()
        thread, admitted = self.threads.update_thread(caller.tenant, thread_id, lambda t: _admit(t, run_id, now))
        turn = ThreadTurn(thread_id, thread.context if admitted.role == "active" else None)
        try:
            started = self.runs.start(caller, thread.agent, request, idempotency_key=idempotency_key,
                                      traceparent=traceparent, run_id=run_id, turn=turn)
        except Exception:
            self._release(caller.tenant, thread_id, run_id)
            raise
        for other in admitted.cancel:
            with contextlib.suppress(Conflict, NotFound):  # it ended meanwhile: advance moves the thread on
                self.runs.cancel(caller, other)
            self.advance(caller.tenant, thread_id, other)
        if admitted.role != "active":
            # the runs before it may have ended while it was being created: then nobody else starts it
            fresh = self.threads.get_thread(caller.tenant, thread_id)
            if fresh is not None:
                self._repair(fresh)
        log.info(_log, f"thread turn {admitted.role}", thread=thread_id, run=run_id)
        return started

    # --- the step function's side (the thread task) ---------------------------------------------------

    def advance(self, tenant: str, thread_id: str, run_id: str) -> str:
        """Move the thread on past ``run_id``, which ended: record its turn, start the next pending run, and bring
        the summary up to date. Safe to call again (a redelivered task) and for a run that is not the active one
        (a queued run cancelled before its turn leaves the queue)."""
        head = self.store.get_run(tenant, run_id)
        if head is not None and not head.status.terminal:
            return "not ended"
        now = self.clock.now()
        try:
            thread, started = self.threads.update_thread(tenant, thread_id, lambda t: _ended(t, run_id, head, now))
        except NotFound:
            return "no thread"
        self._start_from(thread, started)
        self.summarize(tenant, thread_id)
        return "advanced"

    def summarize(self, tenant: str, thread_id: str) -> bool:
        """Fold the turns kept beyond ``KEEP_TURNS`` into the summary, when at least ``SUMMARY_BATCH`` are; True
        if the summary changed. A failed model call raises (the task is retried); the turns stay kept meanwhile
        (at most ``MAX_RECENT_TURNS``)."""
        thread = self.threads.get_thread(tenant, thread_id)
        if thread is None or self.models is None:
            return False
        kept = thread.context.turns
        if len(kept) < KEEP_TURNS + SUMMARY_BATCH:
            return False
        folding = kept[:len(kept) - KEEP_TURNS]
        agent = self.agents.get(thread.agent)  # the current version's model writes the summary
        text = "\n\n".join([*([f"Summary so far: {thread.context.summary}"] if thread.context.summary else []),
                            "Turns to add to it:",
                            *(f"User: {t.input}\nAssistant: {t.answer}" for t in folding)])
        response = self.models(agent).request(ModelRequest(model=agent.model, system=SUMMARY_INSTRUCTIONS,
                                                           messages=[Message(role="user", parts=[Part(text=text)])]))
        summary = clip(response.message.text.strip(), SUMMARY_CHARS)
        usage = response.usage
        cost = self.pricing.cost(agent.model, usage.input_tokens, usage.output_tokens,
                                 cached_input_tokens=usage.cached_input_tokens) if self.pricing else 0.0
        now = self.clock.now()
        if self.ledger is not None:
            # the agent's spend, once per fold however often the task runs: named by the first turn folded
            self.ledger.record(SpendEntry(
                entry_id=f"thread-{thread_id}-{folding[0].run_id}", tenant=tenant, principal=thread.principal,
                agent=thread.agent, run_id=folding[0].run_id, model=agent.model, at=now, cost_usd=cost,
                tokens=usage.input_tokens + usage.output_tokens, expire_at=now + LEDGER_RETENTION))
        folded = [t.run_id for t in folding]

        def fold(t: Thread) -> tuple[Thread | None, bool]:
            if [x.run_id for x in t.context.turns[:len(folded)]] != folded:
                return None, False  # another attempt folded them already
            context = t.context.model_copy(update={
                "summary": summary, "summarized_turns": t.context.summarized_turns + len(folded),
                "turns": t.context.turns[len(folded):]})
            return t.model_copy(update={"context": context, "summary_cost_usd": round(t.summary_cost_usd + cost, 9),
                                        "summary_calls": t.summary_calls + 1, "updated_at": now}), True

        _, changed = self.threads.update_thread(tenant, thread_id, fold)
        if changed:
            log.info(_log, "thread summary brought up to date", thread=thread_id, folded=len(folded),
                     cost_usd=cost, summary_chars=len(summary))
        return changed

    def sweep(self, stale_after: timedelta, limit: int = 200) -> int:
        """Threads a crash left stuck: a queued run whose turn never came although the runs before it ended. Found
        through their ``waiting_turn`` runs that nothing updated for ``stale_after``."""
        now = self.clock.now()
        repaired = 0
        seen: set[tuple[str, str]] = set()
        for head in self.store.find_runs([RunStatus.waiting_turn], now - stale_after, limit):
            key = (head.tenant, head.thread_id or "")
            if head.thread_id is None or key in seen:
                continue
            seen.add(key)
            thread = self.threads.get_thread(head.tenant, head.thread_id)
            if thread is not None and self._repair(thread):
                repaired += 1
        return repaired

    # --- internals --------------------------------------------------------------------------------------

    def _repair(self, thread: Thread) -> bool:
        """Move on a thread whose active run ended without the thread being told (its task lost), whose active
        run was admitted and never created, or whose next run was made active and never started."""
        active = thread.active_run
        if active is None:
            if not thread.pending:
                return False
            # a pending run and no active one: only a crash inside advance leaves this; advance picks it up
            thread, started = self.threads.update_thread(thread.tenant, thread.thread_id, _promote)
            self._start_from(thread, started)
            return True
        head = self.store.get_run(thread.tenant, active)
        if head is None:
            if self.clock.now() - thread.updated_at < ADMISSION_GRACE:
                return False  # its request may still be creating it
            self._release(thread.tenant, thread.thread_id, active)
            return True
        if head.status.terminal:
            self.advance(thread.tenant, thread.thread_id, active)
            return True
        if head.status == RunStatus.waiting_turn:
            self._start_from(thread, active)
            return True
        return False

    def _start_from(self, thread: Thread, run_id: str | None) -> None:
        """Start the thread's new active run with the conversation as the thread has it now; when that run ended
        while it waited (cancelled), move the thread on past it and start the next, and so on."""
        now = self.clock.now()
        while run_id is not None:
            try:
                result = self.store.update_run(thread.tenant, run_id, functools.partial(_begin, thread=thread, now=now))
            except NotFound:
                return  # admitted and not created yet: the request creating it starts it
            head = result.value
            assert head is not None
            if not head.status.terminal:
                if head.status == RunStatus.queued and head.step == 0:
                    self.queue.enqueue(StepTask.next_of(head))  # named: a second start enqueues nothing
                return
            thread, run_id = self.threads.update_thread(
                thread.tenant, thread.thread_id, functools.partial(_ended, run_id=run_id, head=head, now=now))

    def _release(self, tenant: str, thread_id: str, run_id: str) -> None:
        """Forget a run the thread admitted and that was never created."""
        now = self.clock.now()

        def release(t: Thread) -> tuple[Thread | None, None]:
            if t.active_run != run_id and run_id not in t.pending:
                return None, None
            pending = [r for r in t.pending if r != run_id]
            if t.active_run == run_id:
                return t.model_copy(update={"active_run": pending[0] if pending else None, "pending": pending[1:],
                                            "updated_at": now}), None
            return t.model_copy(update={"pending": pending, "updated_at": now}), None

        try:
            thread, _ = self.threads.update_thread(tenant, thread_id, release)
        except NotFound:
            return
        if thread.active_run is not None:
            self._start_from(thread, thread.active_run)


def _admit(t: Thread, run_id: str, now: datetime) -> tuple[Thread | None, _Admitted]:
    if t.active_run == run_id:
        return None, _Admitted("active")
    if run_id in t.pending:
        return None, _Admitted("queued")
    if t.active_run is None and not t.pending:
        return t.model_copy(update={"active_run": run_id, "updated_at": now, "expire_at": now + THREAD_RETENTION}), \
            _Admitted("active")
    if t.policy == ThreadPolicy.reject:
        raise ThreadBusy(f"thread {t.thread_id} has a run going ({t.active_run}); send the message once it ended, "
                         "or create the thread with policy queue or interrupt")
    if t.policy == ThreadPolicy.interrupt:
        cancel = tuple(r for r in (t.active_run, *t.pending) if r is not None)
        return t.model_copy(update={"pending": [run_id], "updated_at": now}), _Admitted("interrupt", cancel)
    if len(t.pending) >= MAX_PENDING:
        raise ThreadBusy(f"thread {t.thread_id} has {len(t.pending)} messages waiting already, the most it queues; "
                         "send this one once some have been answered")
    return t.model_copy(update={"pending": [*t.pending, run_id], "updated_at": now}), _Admitted("queued")


def _ended(t: Thread, run_id: str, head: RunHead | None, now: datetime) -> tuple[Thread | None, str | None]:
    """The thread once ``run_id`` ended (``head``, None if the run is gone): its turn recorded when it was the
    active run, and the next pending run made active (returned, to be started)."""
    if run_id in t.pending:
        return t.model_copy(update={"pending": [r for r in t.pending if r != run_id], "updated_at": now}), None
    if t.active_run != run_id:
        return None, None  # moved on already
    context = t.context
    if head is not None:
        if head.status == RunStatus.succeeded:
            answer = head.result or ""
        else:
            answer = f"[{head.status.value}: {head.error.message if head.error else 'no answer'}]"
        turn = Turn(run_id=run_id, input=clip(head.input_view if head.input_view is not None else head.input),
                    answer=clip(answer), at=now)
        turns = [*context.turns, turn]
        dropped = max(0, len(turns) - MAX_RECENT_TURNS)
        context = context.model_copy(update={"turns": turns[dropped:], "dropped_turns": context.dropped_turns + dropped})
    following = t.pending[0] if t.pending else None
    return t.model_copy(update={"active_run": following, "pending": t.pending[1:], "context": context,
                                "turns": t.turns + (head is not None), "updated_at": now,
                                "expire_at": now + THREAD_RETENTION}), following


def _promote(t: Thread) -> tuple[Thread | None, str | None]:
    if t.active_run is not None or not t.pending:
        return None, None
    return t.model_copy(update={"active_run": t.pending[0], "pending": t.pending[1:]}), t.pending[0]


def _begin(h: RunHead, thread: Thread, now: datetime) -> Mutation[RunHead]:
    """A waiting run's turn came: it starts with the conversation as the thread has it now. The value is the
    run as it is after (unchanged when it was not waiting)."""
    if h.status != RunStatus.waiting_turn:
        return Mutation(None, value=h)
    started = h.model_copy(update={"status": RunStatus.queued, "context": thread.context, "updated_at": now})
    return Mutation(started, value=started)


def _valid(thread_id: str) -> bool:
    return thread_id.startswith("thr_") and 4 < len(thread_id) <= 128 and thread_id.replace("_", "").replace(
        "-", "").isalnum()


def _hash(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
