"""Drive one step of one run over the ports: claim, plan, act, observe, evaluate, commit, enqueue.

Each phase ends in a fenced write (see ``decisions``); a crash between any two lines costs at most the
work since the last write, and the retried delivery picks up from what was written. While it works, an
attempt renews its lease (``agex.engine.lease``); an attempt that finds it lost the lease after a tool
call still records what the call did, as a late result.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from agex.core.agent import Agent, AgentRegistry, VersionNotServed
from agex.core.approval import Approval, ApprovalKind, ApprovalPolicy, changed_paths
from agex.core.clock import Clock
from agex.core.errors import (
    AgexError,
    LeaseHeld,
    LeaseLost,
    ModelBlocked,
    ModelError,
    ModelUnavailable,
    NotFound,
    SecretError,
    SecretUnavailable,
    StaleDelivery,
    TransientError,
)
from agex.core.guard import SECURITY_ALERTS_TOPIC, Action, Chain, Channel
from agex.core.messages import FunctionCall, Message, ModelRequest, ModelResponse, Part
from agex.core.pricing import Pricing
from agex.core.run import ACTIVE_STATUSES, Event, EventKind, RunError, RunHead, RunStatus
from agex.core.spend import Degrade, Spent
from agex.core.tool import Tool, ToolContext, ToolOutcome
from agex.core.webhook import Webhook
from agex.engine import conversation, decisions, guarding, notify, routing, window
from agex.engine.budgets import Budgets
from agex.engine.conversation import LateResult, Settled
from agex.engine.decisions import Claim, Delivery, Late
from agex.engine.lease import LeaseKeeper
from agex.engine.memory import MemoryService, Recalled, RunMemory
from agex.obs import logging as log
from agex.obs import metrics, tracing
from agex.ports.breakers import BreakerPolicy, Breakers
from agex.ports.checkpoint_store import CheckpointStore, Mutation
from agex.ports.event_bus import EventBus
from agex.ports.failpoints import NO_FAILPOINTS, Failpoints
from agex.ports.limiter import Limiter, Permit, Wait
from agex.ports.live_text import LiveText, LiveTexts
from agex.ports.model import Model
from agex.ports.secret_store import SecretStore
from agex.ports.task_queue import MemoryTask, StepTask, TaskQueue

_log = log.get("step")
T = TypeVar("T")


@dataclass
class _Seen:
    """What this delivery knows of its run's events, to seal the next step's window: every event of the window it
    read, complete up to seq ``through``, and each one it wrote since; and the window its commit sealed."""

    events: dict[int, Event]
    through: int
    carried: window.Carried | None = None
    adopted: bool = False
    """The delivery works under the lease the last commit issued to its task: its first write takes it."""


_seen: contextvars.ContextVar[_Seen | None] = contextvars.ContextVar("agex_step_seen", default=None)

RUN_EVENTS_TOPIC = notify.RUN_EVENTS_TOPIC

_Result = tuple[bool, dict[str, Any], "datetime | None", bool, "guarding.Guarded | None"]
"""A call's result: ok, the output shown to the model, when the run should go on (a tool asked to
continue later) if it said, whether this attempt made the call, and, for a call this attempt made, its
output as the guardrail chain left it (what is stored, and the verdict)."""


class Outcome(StrEnum):
    committed = "committed"
    """The step committed and the next one is enqueued."""
    finished = "finished"
    """The run ended in this delivery."""
    stale = "stale"
    """Nothing to do: duplicate, stale, or the run moved on."""
    waiting = "waiting"
    """The run waits for a human or a timer; one scheduled task (or a decision) resumes it."""
    lease_lost = "lease_lost"
    """This attempt lost its lease (taken over after it expired, or the run was cancelled) and stopped;
    what its last tool call returned, if anything, is recorded as a late result."""


@dataclass(frozen=True)
class StepResult:
    outcome: Outcome
    detail: str = ""


@dataclass(frozen=True)
class StepSettings:
    lease_seconds: float = 120.0
    """How long a lease outlives its last renewal. A live attempt renews it every third of this while it
    works, however long its calls take; an attempt that died blocks its step this long at most, after
    which the next delivery takes over (and only then may a call it left uncertain be reconciled)."""
    public_url: str = ""
    """Base URL of the API, for the decide link in ``approval.requested`` messages."""
    issue_lease: bool = True
    """The commit of a step issues the next step's lease to its task, so that task's first delivery starts without
    a claim of its own: two commits a step instead of three (docs/architecture.md, "Issued leases"). Off, every
    delivery claims its step with a write before it calls the model."""
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    """When a model's circuit opens (failures in a window) and for how long every instance skips it for
    the agents' fallbacks."""


class StepRunner:
    def __init__(self, *, store: CheckpointStore, queue: TaskQueue, bus: EventBus, agents: AgentRegistry,
                 models: Callable[[Agent], Model], pricing: Pricing, clock: Clock,
                 settings: StepSettings | None = None, secrets: SecretStore | None = None,
                 limiter: Limiter | None = None, failpoints: Failpoints = NO_FAILPOINTS,
                 chains: Callable[[Agent], Chain | None] | None = None,
                 record: Callable[[RunHead], object] | None = None, breakers: Breakers | None = None,
                 budgets: Budgets | None = None, webhooks: Sequence[Webhook] = (),
                 degradation: Callable[[str, datetime], Degrade | None] | None = None,
                 live: LiveTexts | None = None, memory: Callable[[], MemoryService] | None = None) -> None:
        self.memory = memory
        """Long-term memory (docs/memory.md): recall before a run's first model call, the memory tools, learning
        after the run (a task). None: this deployment keeps no memory."""
        self.store, self.queue, self.bus, self.agents = store, queue, bus, agents
        self.live = live
        """Where a model's text goes as it is written, for a run someone follows (advice: never fails a step)."""
        self.record, self.breakers = record, breakers
        self.budgets, self.webhooks = budgets, tuple(webhooks)
        self.degradation = degradation
        """An agent's current degradation for its objective (shared by every instance), if it has one."""
        self.chains = chains or (lambda agent: None)
        self.models, self.pricing, self.clock = models, pricing, clock
        self.settings = settings or StepSettings()
        self.secrets, self.limiter, self.failpoints = secrets, limiter, failpoints

    def run(self, d: Delivery) -> StepResult:
        with log.labels(run=d.run_id, tenant=d.tenant, step=d.step), tracing.tracer().start_as_current_span(
                f"step {d.step}", attributes={"agex.run": d.run_id, "agex.step": d.step, "agex.attempt": d.attempt}), \
                metrics.step() as meter:
            try:
                return meter.ended(self._run(d))
            except StaleDelivery as e:
                log.info(_log, f"acknowledged without work: {e.message}", outcome="stale")
                self._repair_successor(d)
                return meter.ended(StepResult(Outcome.stale, e.message))
            except LeaseHeld as e:
                log.info(_log, f"refused attempt {d.owner}: {e.message}; Cloud Tasks retries it later",
                         outcome="lease_held", attempt=d.attempt)
                raise
            except LeaseLost as e:
                _log.warning("attempt %s lost its lease and stopped: %s", d.owner, e.message,
                             extra={"fields": {"outcome": "lease_lost", "attempt": d.attempt}})
                return meter.ended(StepResult(Outcome.lease_lost, e.message))

    def _run(self, d: Delivery) -> StepResult:
        # what this delivery knows is its own, even when another delivery runs within it (a test's model, a hook)
        token = _seen.set(_Seen({}, 0))
        try:
            return self._deliver(d)
        finally:
            _seen.reset(token)

    def _deliver(self, d: Delivery) -> StepResult:
        seen = _seen.get()
        assert seen is not None
        if self.settings.issue_lease and d.attempt == 0:
            head = self.store.get_run(d.tenant, d.run_id)
            if head is None:
                raise NotFound(f"run {d.run_id} not found")
            if decisions.adopts(head, d, self.clock.now(), self.settings.lease_seconds, self._version_of(head)):
                seen.adopted = True
                with LeaseKeeper(self.store, self.clock, d, self.settings.lease_seconds, failpoints=self.failpoints,
                                 adopted=True) as keeper:
                    return self._work(head, d, keeper)
        claimed = self.store.update_run(d.tenant, d.run_id, lambda h: decisions.claim(
            h, d, self.clock.now(), self.settings.lease_seconds, self._version_of(h)))
        head = claimed.head
        assert head is not None
        if claimed.value == Claim.finished:
            return self._finished(head)
        # a delivery that took over an expired lease follows an attempt that may have died at any line
        took_over = any(e.kind == EventKind.step_started and e.data.get("resumed") for e in claimed.events)
        with LeaseKeeper(self.store, self.clock, d, self.settings.lease_seconds, failpoints=self.failpoints) as keeper:
            return self._work(head, d, keeper, took_over, claimed.events)

    def _version_of(self, head: RunHead) -> str | None:
        """The version the run goes on with, checked before anything is written: a version this deployment
        does not serve raises ``VersionNotServed`` (retried, the run untouched); an agent no longer deployed at
        all is the step's to fail."""
        if head.status.terminal:
            return None
        try:
            agent, _ = self.agents.for_run(head.agent, head.agent_version)
        except VersionNotServed as e:
            _log.error("step of run %s not taken: %s", head.run_id, e.message,
                       extra={"fields": {"outcome": "version_not_served", "agent_version": head.agent_version}})
            raise
        except NotFound:
            return None
        return agent.version

    def _update(self, d: Delivery, mutate: Callable[[RunHead], Mutation[T]]) -> Mutation[T]:
        """Every write of the step after its claim: what it writes is known, for the window it seals. The first write
        of a delivery that adopted its step takes the issued lease with it (``decisions.take_issued``)."""
        seen = _seen.get()
        if seen is not None and seen.adopted:
            mutate = _taking(mutate, d, self.clock.now(), self.settings.lease_seconds)
        written = self.store.update_run(d.tenant, d.run_id, mutate)
        if seen is not None:
            seen.events.update((e.seq, e) for e in written.events)
        return written

    def _events(self, head: RunHead, d: Delivery, first: int, claimed: Sequence[Event]) -> list[Event]:
        """The events of steps ``>= first``: the window the task carries if the head sealed it, and what was written
        after it (the claim's own events, known); else read from the store."""
        carried = window.opened(head, d.carried, first)
        if carried is not None and d.carried is not None:
            after = d.carried.through
            if head.seq == after:
                later = []
            elif claimed and claimed[0].seq == after + 1 and claimed[-1].seq == head.seq:
                later = list(claimed)
            else:
                later = self._events_after(d, after)
            events = carried + [e for e in later if e.step >= first]
        else:
            events = self.store.events_since_step(d.tenant, d.run_id, first)
        seen = _seen.get()
        if seen is not None:
            seen.events = {e.seq: e for e in events}
            seen.through = max([head.seq, *(e.seq for e in events)])
        return events

    def _events_after(self, d: Delivery, seq: int) -> list[Event]:
        events: list[Event] = []
        while page := self.store.list_events(d.tenant, d.run_id, after_seq=seq, limit=500):
            events += page
            seq = page[-1].seq
        return events

    def _sealing(self, agent: Agent, d: Delivery, mutate: Callable[[RunHead], Mutation[T]]) -> Callable[[RunHead], Mutation[T]]:
        """``mutate``, the step's commit, sealing the next step's window on the head it writes."""
        seen = _seen.get()
        if seen is None:
            return mutate
        first = conversation.window_start(d.step + 1, agent.context_window_steps)

        def sealed(h: RunHead) -> Mutation[T]:
            decided = mutate(h)
            if decided.value == Claim.finished:
                return decided
            decided, seen.carried = window.seal(decided, h, seen.events.values(), seen.through, first)
            return decided

        return sealed

    def _work(self, head: RunHead, d: Delivery, keeper: LeaseKeeper, took_over: bool = False,
              claimed: Sequence[Event] = ()) -> StepResult:
        try:
            agent, _ = self.agents.for_run(head.agent, head.agent_version)
        except NotFound:
            # the deployment no longer runs this agent: retrying cannot help, so say so on the run
            return self._fail(d, RunError(code="configuration_error", message=(
                f"agent {head.agent!r} is not deployed here any more; add it back to AGEX_AGENTS to run it")))
        with log.labels(agent=agent.name):
            tracing.note_agent(agent.name, agent.version)
            log.info(_log, f"step {d.step} started (attempt {d.attempt})", attempt=d.attempt)
            self.failpoints.hit("step.after_claim")
            first = conversation.window_start(d.step, agent.context_window_steps)
            events = self._events(head, d, first, claimed)
            shown = head.input_view if head.input_view is not None else head.input
            messages, progress = conversation.rebuild(shown, events, d.step, first, head.context, head.recalled)
            earlier_intents = frozenset(progress.intents)
            response = progress.response
            if response is None:
                # record_model_response writes the intent of the first call with the response, unless it
                # has to wait for approval
                planned = self._plan(agent, head, d, messages, progress, events)
                if planned is None:
                    return self._finished_now(d)
                if isinstance(planned, StepResult):
                    return planned
                response = planned
            else:
                log.info(_log, "reusing the model response recorded by an earlier attempt")
                if took_over:
                    # that attempt may have died between recording its verdicts and sending their alerts:
                    # send them again, with the same alert ids (a consumer drops the copies)
                    self._alert(agent, head, d, [e for e in events if e.step == d.step
                                                 and e.kind == EventKind.guard_verdict])
            self.failpoints.hit("step.after_model")
            ended = self._act(agent, head, d, response, progress, earlier_intents, keeper)
            if ended:
                return ended
            return self._commit(agent, d, response, progress.continue_at, progress.shown_answer)

    def _plan(self, agent: Agent, head: RunHead, d: Delivery, messages: list[Message],
              progress: conversation.StepProgress, events: list[Event]) -> ModelResponse | StepResult | None:
        """The model's response, recorded; the step's result when it ends here without one (waiting for a
        human); None when the run ended here."""
        steer = self._steer(agent, head, d)
        if steer is None or isinstance(steer, StepResult):
            return steer
        degrade, degraded = steer
        tools = [t for t in agent.tools if t.critical or not degrade.skip_optional_tools]
        window = min(degrade.context_window_steps or agent.context_window_steps, agent.context_window_steps)
        if window < agent.context_window_steps:
            messages = _window(head, events, d.step, window)
        # the runaway guard on context growth: fewer of the last steps until the request fits
        limit = head.limits.max_context_tokens
        size = routing.estimated_tokens(ModelRequest(model=agent.model, system=agent.instructions, messages=messages,
                                                     tools=[t.spec() for t in tools]))
        while size > limit and window > 1:
            window = max(1, min(window, d.step) // 2)
            messages = _window(head, events, d.step, window)
            size = routing.estimated_tokens(ModelRequest(
                model=agent.model, system=agent.instructions, messages=messages, tools=[t.spec() for t in tools]))
            if size <= limit or window == 1:
                degraded = (*degraded, f"context over {limit} tokens: the last {window} steps only")
        for source in dict.fromkeys(r.split(" ", 1)[0] for r in degraded):
            metrics.record_degradation(agent=agent.name, source=source.rstrip(":"), event="applied")
        if size > limit:
            self._fail(d, RunError(code="context_too_large", message=(
                f"the model's input is about {size} tokens with only the last step in context, over the run's limit "
                f"of {limit} (limits.max_context_tokens): a tool output or the input is too large")))
            return None
        chain = self.chains(agent)
        verdicts: list[dict[str, Any]] = []
        input_view = None
        if chain is not None and d.step == 1 and head.input_view is None and chain.watches(Channel.user_input):
            seen = guarding.guard(chain, Channel.user_input, head.input, guarding.context(agent, head.input))
            if seen.verdict is not None:
                verdicts.append(seen.verdict)
            blocked = seen.blocked()
            if blocked is not None:
                ended = self._update(d, lambda h: decisions.fail_step(
                    h, d.owner, d.step, blocked, self.clock.now(), verdicts=tuple(verdicts)))
                self._alert(agent, head, d, ended.events)
                return None
            if seen.action != Action.allow:
                input_view = seen.value
                # the run's own input opens its first message after the thread's history: its last text part
                at = len(conversation.history(head.context)) // 2 * 2
                opening = messages[at]
                texts = [i for i, p in enumerate(opening.parts) if p.text == head.input]
                parts = list(opening.parts)
                parts[texts[-1] if texts else -1] = Part(text=input_view)
                messages = [*messages[:at], Message(role="user", parts=parts), *messages[at + 1:]]
        recalled = self._recall(agent, head)
        if recalled is not None:
            # after the run's own input (and the thread's history), in the message that opens the run
            at = len(conversation.history(head.context)) // 2 * 2
            opening = messages[at]
            messages = [*messages[:at], Message(role="user", parts=[*opening.parts, Part(text=recalled.note)]),
                        *messages[at + 1:]]
        tokens: dict[str, str] = {}
        if chain is not None and chain.tokenizes:
            # the model gets personal data as tokens stable for the run; its answer gets the values back, so
            # what it asks a tool to do and what it tells the user carry the real ones
            dumped, tokens = chain.tokenize([_dump(m) for m in messages], _token_key(head))
            messages = [Message.model_validate(m) for m in dumped]
        request = ModelRequest(model=agent.model, system=agent.instructions, messages=messages,
                               tools=[t.spec() for t in tools])
        watched = (self.live is not None and agent.stream_text and head.watched_until is not None
                   and head.watched_until > self.clock.now())
        answered = self._ask(agent, d, request, events, degrade.model, degraded, watched)
        if answered is None:
            return None
        response, model, cost, route = answered
        # the call is paid for from here: an attempt that dies before the response is recorded leaves a call no
        # event shows (its run's metrics estimate it, docs/observability.md)
        self.failpoints.hit("step.before_record")
        if tokens and chain is not None:
            response = response.model_copy(update={"message": Message.model_validate(
                chain.detokenize(_dump(response.message), tokens))})
        log.info(_log, "model responded", model=model, input_tokens=response.usage.input_tokens,
                 cached_input_tokens=response.usage.cached_input_tokens,
                 output_tokens=response.usage.output_tokens, cost_usd=cost,
                 tool_calls=[c.name for c in response.message.function_calls])
        guarded = self._guard_response(agent, head, d, response, events, progress, chain) if chain else None
        if guarded is not None:
            response = guarded.response
            verdicts += guarded.verdicts
        calls = response.message.function_calls
        announce = calls[0] if calls and _may_announce(agent, calls[0], {}, progress.held) else None
        recorded = self._update(d, lambda h: decisions.record_model_response(
            h, d.owner, d.step, response, model, cost, self.clock.now(), announce,
            message=guarded.stored if guarded else None, verdicts=tuple(verdicts),
            blocked=guarded.blocked if guarded else None, input_view=input_view, route=route,
            recalled=(recalled.note, recalled.memories) if recalled is not None else None))
        self._alert(agent, head, d, recorded.events)
        if self.budgets is not None:
            self.budgets.spent_here(head.tenant, agent.name, head.principal, Spent(
                cost_usd=cost, tokens=response.usage.input_tokens + response.usage.output_tokens))
        if recorded.value == Claim.finished:
            return None
        _note_intents(progress, recorded)
        return response

    def _recall(self, agent: Agent, head: RunHead) -> Recalled | None:
        """What the agent remembers that bears on the run, before its first model call; fixed on the head with that
        call's response. Advice: memory that cannot answer now leaves the run without it, never fails it."""
        if (self.memory is None or agent.memory is None or not agent.memory.recall or head.recalled is not None
                or head.usage.model_calls > 0):
            return None
        try:
            return self.memory().recall(agent, head)
        except Exception as e:
            _log.warning("could not recall memories for run %s; it goes on without them: %s", head.run_id, e,
                         extra={"fields": {"outcome": "recall_failed"}})
            return None

    def _steer(self, agent: Agent, head: RunHead, d: Delivery) -> tuple[Degrade, tuple[str, ...]] | StepResult | None:
        """What the agent's objective and the run's budgets say about this step's model call: how to degrade it
        and why; None when a budget stopped the run here; the waiting step when a human must let it go on."""
        now = self.clock.now()
        degrade, why = Degrade(), []
        if self.degradation is not None and agent.slo is not None:
            try:
                current = self.degradation(agent.name, now)
            except AgexError as e:  # advice: without it, the step runs as declared
                _log.warning("could not read the degradation of agent %s: %s", agent.name, e.message)
                current = None
            if current is not None:
                degrade = degrade.merge(current)
                why.append("objective: burn rate over its threshold")
        if self.budgets is not None and self.budgets.applying(head.tenant, agent.name):
            # unreadable budgets raise: the step is retried rather than spending past a cap unseen
            verdict = self.budgets.for_step(head.tenant, agent.name, head.principal, now)
            if verdict.refuse is not None:
                resets = self.budgets.resets_at(verdict.refuse, now)
                self._fail(d, RunError(code="budget_exceeded", message=(
                    f"{verdict.refuse.describe()}: the run stopped before its next model call; the budget frees "
                    f"up from {resets.isoformat()}")))
                return None
            for s in verdict.approve:
                decided = head.budget_decisions.get(s.budget.name)
                if decided == "approved":
                    continue
                if decided == "rejected":
                    self._fail(d, RunError(code="budget_exceeded", message=(
                        f"{s.describe()}: going on past it was rejected")))
                    return None
                return self._request_approval(d, decisions.budget_call(s.budget.name, s.record()), ApprovalPolicy(
                    tool=f"budget:{s.budget.name}", approvers=s.budget.approvers, four_eyes=True, on_expiry="fail",
                    expires_after_s=s.budget.approval_expires_s,
                    reason=(f"{s.describe()}: approve to let run {head.run_id} go on past it (for the rest of the run), "
                            "or reject to stop it")), kind="budget")
            degrade = degrade.merge(verdict.degrade)
            why += [f"budget {b}" for b in verdict.degraded_by]
        if why:
            log.info(_log, f"step degraded: {'; '.join(why)}", degradation=why, degraded_model=degrade.model,
                     degraded_window=degrade.context_window_steps, skipped_tools=degrade.skip_optional_tools)
        return degrade, tuple(why)

    def _ask(self, agent: Agent, d: Delivery, request: ModelRequest, events: Sequence[Event],
             degraded_model: str | None = None, degraded: tuple[str, ...] = (), watched: bool = False,
             ) -> tuple[ModelResponse, str, float, dict[str, Any] | None] | None:
        """The agent's model, then its fallbacks in order while one cannot answer for a reason the agent
        falls back on: the response, the model that gave it, its cost, and the routing decision when it was
        not the first model (recorded with the response, so a redelivery never changes model mid-step).
        None when the run failed here (a refusal no model is tried for); a transient error of the last model
        tried is raised, and Cloud Tasks retries the step."""
        first = (degraded_model, f"degraded: {'; '.join(degraded)}") if degraded_model else None
        candidates, chosen = routing.candidates(agent, request, events, d.step, first)
        failed: list[dict[str, str]] = []
        for i, model in enumerate(candidates):
            last = i == len(candidates) - 1
            closes = self._circuit(model) if not last else None
            if closes is not None:
                # another instance (or this one) saw this model fail enough to stop asking it for a while
                failed.append({"model": model, "reason": "circuit_open",
                               "error": f"open until {closes.isoformat()}"})
                continue
            with tracing.model_call(model, agent=agent.name, agent_version=agent.version, run=d.run_id) as call:
                try:
                    asked = request.model_copy(update={"model": model})
                    if watched and self.live is not None:
                        sink = _LiveSink(self.live, self.clock, d, f"{d.owner}/{model}")
                        response = self.models(agent).stream(asked, sink)
                    else:
                        response = self.models(agent).request(asked)
                except (ModelUnavailable, ModelBlocked) as e:
                    call.failed(e)
                    if isinstance(e, ModelUnavailable):
                        self._failed(model, e)
                    if last or e.reason not in agent.fallback_on:
                        if isinstance(e, ModelBlocked):
                            self._fail(d, RunError(code="model_error", message=e.message))
                            return None
                        raise
                    failed.append({"model": model, "reason": e.reason, "error": e.message[:300]})
                    _log.warning("model %s could not answer (%s): %s; trying %s", model, e.reason, e.message,
                                 candidates[i + 1], extra={"fields": {"routing": "fallback", "model": model,
                                                                      "reason": e.reason, "next": candidates[i + 1]}})
                    continue
                except ModelError as e:
                    call.failed(e)
                    self._fail(d, RunError(code="model_error", message=e.message))
                    return None
                cost = self.pricing.cost(model, response.usage.input_tokens, response.usage.output_tokens,
                                         cached_input_tokens=response.usage.cached_input_tokens)
                call.record(response, cost)
            route = None
            if failed or chosen or degraded:
                reasons = ", ".join(f"{f['model']} ({f['reason']})" for f in failed)
                why = "; ".join(w for w in (chosen, f"fallback after {reasons}" if failed else "") if w)
                route = {"model": model, "reason": why or f"degraded: {'; '.join(degraded)}", "failed": failed,
                         **({"degraded": list(degraded)} if degraded else {})}
            return response, model, cost, route
        raise AssertionError("an agent has at least its own model")

    def _circuit(self, model: str) -> datetime | None:
        if self.breakers is None:
            return None
        try:
            return self.breakers.open_until(model, self.clock.now())
        except AgexError as e:  # the breakers are advice: without them, the model is simply asked
            _log.warning("could not read the circuit of %s: %s", model, e.message)
            return None

    def _failed(self, model: str, error: ModelUnavailable) -> None:
        if self.breakers is None:
            return
        try:
            opened = self.breakers.failed(model, self.clock.now(), self.settings.breaker)
        except AgexError as e:
            _log.warning("could not record a failure of %s: %s", model, e.message)
            return
        if opened is not None:
            _log.warning("circuit of model %s is open until %s (%s): agents fall back without asking it",
                         model, opened.isoformat(), error.reason,
                         extra={"fields": {"routing": "circuit_open", "model": model, "until": opened.isoformat()}})

    def _guard_response(self, agent: Agent, head: RunHead, d: Delivery, response: ModelResponse,
                        events: list[Event], progress: conversation.StepProgress, chain: Chain) -> _GuardedResponse:
        """The chain on what the model said: its text (model_output) and each call's arguments
        (tool_args, judged against the untrusted content the model had seen). Calls a guard holds are
        noted in ``progress.held``."""
        message = response.message
        verdicts: list[dict[str, Any]] = []
        blocked: RunError | None = None
        text = message.text
        answer = None
        if text.strip() and chain.watches(Channel.model_output):
            ctx = guarding.context(agent, head.input, secrets=self._secret_values(agent))
            answer = guarding.guard(chain, Channel.model_output, text, ctx)
            if answer.verdict is not None:
                verdicts.append(answer.verdict)
            blocked = answer.blocked()
            if answer.value != text:
                message = guarding.with_text(message, answer.value)
        shown_args: dict[str, Any] = {}
        if message.function_calls:
            ctx = guarding.context(agent, head.input, events, before_step=d.step)
            for call in message.function_calls:
                judged = guarding.guard(chain, Channel.tool_args, call.args, ctx, tool=call.name, call_id=call.id)
                shown_args[call.id] = judged.record
                if judged.verdict is not None:
                    verdicts.append(judged.verdict)
                if judged.action == Action.approve and judged.result and judged.result.deciding:
                    progress.held[call.id] = guarding.hold_reason(judged.result.deciding.record())
                blocked = blocked or judged.blocked()
        record_text = answer.record if answer is not None else chain.redact_for_records(message.text)
        record = guarding.with_text(message, record_text if isinstance(record_text, str) else message.text)
        record = record.model_copy(update={"parts": [
            p.model_copy(update={"function_call": p.function_call.model_copy(update={"args": shown_args[p.function_call.id]})})
            if p.function_call is not None and p.function_call.id in shown_args else p for p in record.parts]})
        shown = _dump(record)
        restricted = guarding.restricted_views(_dump(response.message), _dump(message), shown)
        stored: dict[str, Any] = {"message": shown, **({guarding.RESTRICTED: restricted} if restricted else {})}
        if record.text != message.text:
            progress.shown_answer = record.text
        return _GuardedResponse(response.model_copy(update={"message": message}), stored, verdicts, blocked)

    def _secret_values(self, agent: Agent) -> tuple[str, ...]:
        """The values of the agent's tool secrets, for the output guard (an answer must never carry them)."""
        names = sorted({s for t in agent.tools for s in t.secrets})
        if not names or self.secrets is None:
            return ()
        values = []
        for name in names:
            try:
                values.append(self.secrets.access(agent.identity, name))
            except SecretError as e:
                _log.warning("the output guard cannot check for secret %s: %s", name, e.message)
        return tuple(values)

    def _alert(self, agent: Agent, head: RunHead, d: Delivery, written: Sequence[Event]) -> None:
        """Each verdict just recorded (or found recorded by an earlier attempt) as a log entry, a span
        event and a ``security.alert`` on Pub/Sub, keyed by ``alert_id`` (run and event), so a consumer
        drops the copy a redelivery may send. Best effort after the commit: the event is the record."""
        for e in written:
            if e.kind != EventKind.guard_verdict:
                continue
            data = e.data
            alert = {"type": "security.alert", "version": 1, "kind": "guard_verdict",
                     "alert_id": f"{d.run_id}:{e.seq}", "tenant": d.tenant, "run_id": d.run_id, "agent": agent.name,
                     "agent_version": agent.version, "step": e.step, "at": e.at.isoformat(),
                     "channel": data["channel"], "action": data["action"], "tool": data.get("tool"),
                     "call_id": data.get("call_id"), "verdicts": data["verdicts"]}
            _log.warning("guard verdict on %s: %s (%s)", data["channel"], data["action"],
                         "; ".join(f"{v['guard']}: {v.get('reason', v['action'])}" for v in data["verdicts"]),
                         extra={"fields": {"security_event": "guard_verdict", "channel": data["channel"],
                                           "action": data["action"], "alert_id": alert["alert_id"],
                                           "guards": [v["guard"] for v in data["verdicts"]], "tool": data.get("tool")}})
            tracing.annotate_guard(data["channel"], data["action"], [v["guard"] for v in data["verdicts"]])
            try:
                self.bus.publish(SECURITY_ALERTS_TOPIC, alert, {
                    "type": "security.alert", "version": "1", "tenant": d.tenant, "agent": agent.name,
                    "alert_id": alert["alert_id"], "action": data["action"]})
            except Exception:
                _log.exception("could not publish security alert %s; it is in the run's events and this log",
                               alert["alert_id"])

    def _act(self, agent: Agent, head: RunHead, d: Delivery, response: ModelResponse,
             progress: conversation.StepProgress, earlier_intents: frozenset[str],
             keeper: LeaseKeeper) -> StepResult | None:
        """Run the calls without a recorded result, in order, recording each result together with the
        intent of the next call. A call that cannot go on now (it waits for a human or a timer, or ends
        the run) ends the delivery."""
        pending = conversation.pending_calls(response, progress)
        for i, call in enumerate(pending):
            resolved = self._resolve(agent, head, d, call, progress, earlier_intents, keeper)
            if isinstance(resolved, StepResult):
                return resolved
            ok, output, continue_at, called, guarded = resolved
            following = pending[i + 1] if i + 1 < len(pending) else None
            announce = (following if following and _may_announce(agent, following, progress.settled, progress.held)
                        else None)
            blocked = guarded.blocked() if guarded is not None else None
            # the step's last result commits the step with it (docs/architecture.md, "The step protocol")
            last = following is None and blocked is None
            mutate: Callable[[RunHead], Mutation[Any]] = functools.partial(
                _record_result, owner=d.owner, step=d.step, call=call, ok=ok, output=output,
                next_call=announce, continue_at=continue_at, clock=self.clock, guarded=guarded)
            if last:
                wake = max(filter(None, (progress.continue_at, continue_at)), default=None)
                mutate = functools.partial(
                    _record_last_result, owner=d.owner, step=d.step, call=call, ok=ok, output=output,
                    continue_at=continue_at, clock=self.clock, guarded=guarded, message=response.message,
                    wake_at=wake, shown=progress.shown_answer, issue_seconds=self._issued_seconds())
            try:
                recorded = self._update(d, self._sealing(agent, d, mutate) if last else mutate)
            except LeaseLost as e:
                if called:
                    self._report_late(d, call, ok, output, continue_at, progress, e.message, guarded)
                raise
            self._alert(agent, head, d, recorded.events)
            if last:
                return self._committed(agent, d, recorded)
            if blocked is not None:
                return self._fail(d, blocked)
            _note_intents(progress, recorded)
            progress.continue_at = max(filter(None, (progress.continue_at, continue_at)), default=None)
        return None

    def _resolve(self, agent: Agent, head: RunHead, d: Delivery, call: FunctionCall,
                 progress: conversation.StepProgress, earlier_intents: frozenset[str],
                 keeper: LeaseKeeper) -> StepResult | _Result:
        """What became of one call: its result, from a decision, a late report or calling the tool; or
        the end of this delivery. ``earlier_intents`` are calls an earlier attempt announced: it may or
        may not have made them."""
        tool = agent.tool(call.name)
        settled = progress.settled.get(call.id)
        reconciled = progress.reconciled.get(call.id)
        policy = agent.approval_policy(call.name, call.args) if tool is not None else None
        if policy is None and tool is not None and call.id in progress.held:
            policy = guarding.held_for_approval(agent, call.name, progress.held[call.id])
        if policy is not None and settled is None:
            return self._request_approval(d, call, policy, personal=self._personal(agent, call))
        if reconciled is not None and reconciled.decision in ("fail", "expired"):
            return self._fail(d, RunError(code="tool_uncertain", message=_unreconciled(call, reconciled)))
        if settled is not None and settled.decision != "approved":
            return False, {"error": _refusal(call, settled), "approval": settled.note()}, None, False, None
        late = progress.late.get(call.id)
        if late is not None:
            # the attempt that made the call reported its result after losing the lease: a fact, which
            # settles the call whatever a human guessed (even `retry`: calling again would do it twice)
            if reconciled is not None and reconciled.decision == "retry":
                _log.warning("%s was reconciled as retry, but attempt %s reported at %s that the call returned; "
                             "not calling it again", call.name, late.owner, late.at,
                             extra={"fields": {"tool": call.name}})
            return _late_result(late)
        if reconciled is not None and reconciled.decision == "done":
            return True, {"reconciled": reconciled.note()}, None, False, None
        if call.id in earlier_intents and tool is not None and not tool.idempotent:
            # never a blind second call: a human says what became of the first one, unless its result
            # arrives first
            return self._reconcile(agent, head, d, call)
        return self._make_call(agent, head, d, call, progress, settled, keeper)

    def _make_call(self, agent: Agent, head: RunHead, d: Delivery, call: FunctionCall,
                   progress: conversation.StepProgress, settled: Settled | None,
                   keeper: LeaseKeeper) -> StepResult | _Result:
        if call.id not in progress.intents:
            # not announced yet: it waited for approval, or an earlier attempt recorded the previous result
            # but died before writing this intent
            announced = self._update(d, functools.partial(
                _record_intent, owner=d.owner, step=d.step, call=call, clock=self.clock))
            _note_intents(progress, announced)
        args = settled.arguments if settled is not None and settled.arguments is not None else call.args
        keeper.check()  # no call on a lease the heartbeat saw taken over
        try:
            outcome = self._call_tool(agent, head, d, call, args)
        except SecretError as e:
            return self._fail(d, RunError(code=e.code, message=e.message))
        self.failpoints.hit("step.after_tool")
        if outcome.retry_after_s is not None:
            return self._defer(d, call, outcome)
        output = {**outcome.output, "approval": settled.note()} if settled is not None else outcome.output
        guarded = guarding.guard(self.chains(agent), Channel.tool_output, output,
                                 guarding.context(agent, head.input), tool=call.name, call_id=call.id)
        continue_at = (self.clock.now() + timedelta(seconds=outcome.continue_after_s)
                       if outcome.continue_after_s is not None else None)
        return outcome.ok, guarded.value, continue_at, True, guarded

    def _reconcile(self, agent: Agent, head: RunHead, d: Delivery, call: FunctionCall) -> StepResult | _Result:
        """Open the reconciliation of a non-idempotent call an earlier attempt announced and never reported,
        saying what is known of it; or take its late result, if one arrived meanwhile. The events are read
        again, and the reconciliation is written only if none was added since: a late result written in
        between is seen, not raced."""
        for _ in range(5):
            events = self.store.events_since_step(d.tenant, d.run_id, d.step)
            _, fresh = conversation.rebuild(head.input, events, d.step, d.step)
            late = fresh.late.get(call.id)
            if late is not None:
                return _late_result(late)
            facts = conversation.uncertainty(events, d.step, call.id)
            policy = agent.reconcile_policy(call.name)
            policy = policy.model_copy(update={"reason": decisions.reconcile_reason(call, facts)})
            try:
                return self._request_approval(d, call, policy, kind="reconcile",
                                              round=fresh.reconcile_rounds.get(call.id, 0),
                                              seen_seq=max((e.seq for e in events), default=head.seq),
                                              personal=self._personal(agent, call))
            except decisions.EventsMoved:
                continue
        raise TransientError(f"step {d.step} of run {d.run_id}: events kept arriving while reconciling {call.name}")

    def _report_late(self, d: Delivery, call: FunctionCall, ok: bool, output: dict[str, Any],
                     continue_at: datetime | None, progress: conversation.StepProgress, why: str,
                     guarded: guarding.Guarded | None = None) -> None:
        """This attempt made ``call`` and lost its lease meanwhile: record what the call returned anyway
        (append-only), so that whoever took over, or the operator reconciling the call, goes by the facts.
        Logged first, the output in full in the entry's ``output`` (its record view: personal data
        redacted), so the fact survives even if the store cannot take it."""
        shown = guarded.record if guarded is not None else output
        _log.warning("attempt %s lost its lease while calling %s (%s); the call %s and its result is recorded "
                     "as a late result: %s", d.owner, call.name, why, "succeeded" if ok else "returned an error",
                     _brief(shown), extra={"fields": {"outcome": "late_result", "tool": call.name,
                                                      "call_id": call.id, "ok": ok, "output": shown}})
        round = progress.reconcile_rounds.get(call.id, 0)
        expected = decisions.reconcile_approval_id(d.run_id, d.step, call.id, round)
        recorded: Mutation[Late] | None = None
        for attempt in range(8):
            try:
                approval = self.store.get_approval(d.tenant, expected)
                recorded = self._update(d, functools.partial(
                    _late, owner=d.owner, step=d.step, call=call, ok=ok, output=output,
                    intent_seq=progress.intent_seq.get(call.id), round=round, approval=approval,
                    continue_at=continue_at, clock=self.clock,
                    stored=guarded.stored("output") if guarded is not None else None))
                break
            except decisions.ApprovalMoved:
                continue
            except NotFound:
                return  # the run is gone
            except AgexError as e:
                _log.warning("could not record the late result of %s yet: %s", call.name, e.message)
                time.sleep(min(5.0, 0.2 * 2**attempt))
        if recorded is None or recorded.head is None:
            _log.error("the late result of %s (call %s) could not be recorded; it is in the log line above",
                       call.name, call.id)
            return
        if recorded.value == Late.settled:
            log.info(_log, f"the late result settled reconciliation {expected}; the run resumes",
                     outcome="reconciled", approval=expected)
            self.enqueue_next(recorded.head)
        elif recorded.value == Late.attached:
            _log.warning("reconciliation %s of %s was settled before the call's result arrived; the result is "
                         "recorded on it", expected, call.name, extra={"fields": {"approval": expected}})

    def _request_approval(self, d: Delivery, call: FunctionCall, policy: ApprovalPolicy,
                          kind: ApprovalKind = "approval", round: int = 0,
                          seen_seq: int | None = None, personal: tuple[str, ...] = ()) -> StepResult:
        requested = self._update(d, lambda h: decisions.request_approval(
            h, d.owner, d.step, call, policy, self.clock.now(), kind, round, seen_seq, personal))
        approval = requested.value
        assert approval is not None
        self.failpoints.hit("step.after_approval_request")
        notify.approval_waiting(self.queue, self.bus, approval, self.settings.public_url)
        log.info(_log, f"waiting for {kind} {approval.approval_id} of {call.name}", outcome="waiting",
                 approval=approval.approval_id, tool=call.name, expires_at=approval.expires_at.isoformat())
        return StepResult(Outcome.waiting, f"waiting for approval {approval.approval_id}")

    def _defer(self, d: Delivery, call: FunctionCall, outcome: ToolOutcome) -> StepResult:
        assert outcome.retry_after_s is not None
        retry_at = self.clock.now() + timedelta(seconds=outcome.retry_after_s)
        reason = str(outcome.output.get("error", ""))
        deferred = self._update(d, lambda h: decisions.defer_call(
            h, d.owner, d.step, call, retry_at, reason, self.clock.now()))
        assert deferred.head is not None
        self.enqueue_next(deferred.head, at=retry_at)
        log.info(_log, f"tool {call.name} asked to retry later; step {d.step} resumes at {retry_at.isoformat()}",
                 outcome="waiting", tool=call.name)
        return StepResult(Outcome.waiting, f"{call.name} deferred until {retry_at.isoformat()}")

    def _call_tool(self, agent: Agent, head: RunHead, d: Delivery, call: FunctionCall,
                   args: dict[str, Any]) -> ToolOutcome:
        tool = agent.tool(call.name)
        if tool is None:
            known = ", ".join(t.name for t in agent.tools) or "none"
            return ToolOutcome(False, {"error": f"unknown tool {call.name!r}; available tools: {known}"})
        values = self._secrets_of(agent, tool)
        key = decisions.idempotency_key(head, d.step, call)
        ctx = ToolContext(tenant=d.tenant, run_id=d.run_id, step=d.step, call_id=call.id,
                          idempotency_key=key, secrets=values, memory=self._run_memory(agent, head, d, key))
        with tracing.tool_call(call.name, call_id=call.id, agent=agent.name, agent_version=agent.version) as span:
            permit = self._permit(tool, ctx)
            if isinstance(permit, Wait):
                log.info(_log, f"tool {call.name} is at its limit: {permit.reason}", tool=call.name)
                return span.record(ToolOutcome(False, {"error": permit.reason}, retry_after_s=permit.seconds))
            try:
                outcome = span.record(tool.call(args, ctx))
            finally:
                if permit is not None and self.limiter is not None:
                    self.limiter.release(permit)
        log.info(_log, f"tool {call.name} {'succeeded' if outcome.ok else 'failed'}", tool=call.name, ok=outcome.ok)
        return outcome  # scrubbed of the secrets in ctx by Tool.call

    def _run_memory(self, agent: Agent, head: RunHead, d: Delivery, key: str) -> RunMemory | None:
        if self.memory is None or agent.memory is None:
            return None
        seen = _seen.get()
        outputs = [e for e in (seen.events.values() if seen is not None else ())
                   if e.kind in (EventKind.tool_result, EventKind.tool_late_result)]
        tainted = seen is None or bool(outputs)
        read = max((float(((e.data.get("guard") or {}).get("scores") or {}).get("prompt_injection", 0.0))
                    for e in outputs), default=0.0)

        def approve(approval: Approval) -> None:
            # the conflict's approval joins the run's other approvals (the run does not wait for it)
            self.store.update_run(d.tenant, d.run_id, lambda h: Mutation(h, approvals=[approval]))
            notify.approval_waiting(self.queue, self.bus, approval, self.settings.public_url)

        return RunMemory(self.memory(), agent, head, key, tainted=tainted, approve=approve, read_injection=read)

    def _personal(self, agent: Agent, call: FunctionCall) -> tuple[str, ...]:
        """The argument paths of ``call`` that hold personal data: an approval shows them redacted."""
        chain = self.chains(agent)
        if chain is None:
            return ()
        return tuple(changed_paths(call.args, chain.redact_for_records(call.args)))

    def _secrets_of(self, agent: Agent, tool: Tool) -> dict[str, str]:
        """The tool's secrets, read as the agent's identity (cached briefly by the store)."""
        if not tool.secrets:
            return {}
        if self.secrets is None:
            raise SecretUnavailable(f"tool {tool.name} needs secrets but this deployment has no secret store",
                                    secret=tool.secrets[0], identity=agent.identity)
        return {name: self.secrets.access(agent.identity, name) for name in tool.secrets}

    def _permit(self, tool: Tool, ctx: ToolContext) -> Permit | Wait | None:
        if not tool.limits.any or self.limiter is None:
            return None
        # the lease outlives the call's timeout: a crashed holder's slot frees itself after it
        return self.limiter.acquire(tool.name, tool.limits, ctx.idempotency_key, self.clock.now(),
                                    lease_s=tool.timeout_s + 30)

    def _commit(self, agent: Agent, d: Delivery, response: ModelResponse, continue_at: datetime | None,
                shown: str | None) -> StepResult:
        """Commit a step whose calls all have their results (or that has none: the final answer). ``shown``: the
        answer as events show it, when it differs (personal data redacted)."""
        committed = self._update(d, self._sealing(agent, d, lambda h: decisions.complete_step(
            h, d.owner, d.step, response.message, self.clock.now(), continue_at, shown=shown,
            issue_seconds=self._issued_seconds())))
        return self._committed(agent, d, committed)

    def _issued_seconds(self) -> float | None:
        return self.settings.lease_seconds if self.settings.issue_lease else None

    def _committed(self, agent: Agent, d: Delivery, committed: Mutation[Any]) -> StepResult:
        """After the step's commit: its hooks, then the run's end or its next step's task."""
        new = committed.head
        assert new is not None
        self.failpoints.hit("step.after_commit")
        for hook in agent.hooks:
            _observe(hook, "after_step", new, committed.events)
        if committed.value == Claim.finished:
            return self._finished(new)
        seen = _seen.get()
        carried = seen.carried if seen is not None and seen.carried is not None and seen.carried.through == new.seq else None
        self.enqueue_next(new, at=new.wake_at, carried=carried)
        if new.status == RunStatus.waiting_timer:
            log.info(_log, f"step {d.step} committed; the run continues at {new.wake_at}", outcome="waiting")
            return StepResult(Outcome.waiting, f"continues at {new.wake_at}")
        log.info(_log, f"step {d.step} committed", outcome="committed")
        return StepResult(Outcome.committed)

    def _repair_successor(self, d: Delivery) -> None:
        """A retry of a step whose attempt got further than its answer reached Cloud Tasks may mean the
        attempt died before its follow-up: enqueue the next step again, or re-announce the approval the run
        waits for. Task names are deterministic, so what was done already is not done twice."""
        head = self.store.get_run(d.tenant, d.run_id)
        if head is None:
            return
        if head.step == d.step and (head.status in ACTIVE_STATUSES or head.status == RunStatus.waiting_timer):
            self.enqueue_next(head, at=head.wake_at)
        elif head.status == RunStatus.waiting_approval and head.step + 1 == d.step and head.approval_id:
            approval = self.store.get_approval(head.tenant, head.approval_id)
            if approval is not None:
                notify.approval_waiting(self.queue, self.bus, approval, self.settings.public_url)

    def enqueue_next(self, head: RunHead, at: datetime | None = None, carried: window.Carried | None = None) -> None:
        self.queue.enqueue(StepTask.next_of(head, schedule_at=at, traceparent=tracing.current_traceparent(),
                                            window=(carried.through, carried.text) if carried is not None else None))

    def _fail(self, d: Delivery, error: RunError) -> StepResult:
        ended = self._update(d, lambda h: decisions.fail_step(
            h, d.owner, d.step, error, self.clock.now()))
        assert ended.head is not None
        return self._finished(ended.head)

    def _finished_now(self, d: Delivery) -> StepResult:
        head = self.store.get_run(d.tenant, d.run_id)
        assert head is not None
        return self._finished(head)

    def _finished(self, head: RunHead) -> StepResult:
        log.info(_log, f"run {head.status.value}", outcome="finished", status=head.status.value,
                 error=head.error.model_dump() if head.error else None, usage=head.usage.model_dump())
        notify.run_finished(self.bus, head, self.queue, self.webhooks)
        if self.record is not None:
            try:
                self.record(head)
            except Exception:
                # the drift function's collector records the run later: a metrics record never fails a run
                _log.exception("could not record the metrics of run %s; the collector will", head.run_id)
        agent = self.agents.version(head.agent, head.agent_version)
        if (self.memory is not None and agent is not None and agent.memory is not None and agent.memory.learn
                and head.status in (RunStatus.succeeded, RunStatus.failed)):
            try:  # learning never holds the run's end up: a task, named by the run (enqueued once)
                self.queue.enqueue(MemoryTask(tenant=head.tenant, run_id=head.run_id, agent=head.agent,
                                              traceparent=head.trace))
            except Exception:
                _log.exception("could not enqueue the memory task of run %s; nothing is learned from it", head.run_id)
        hooks = agent.hooks if agent is not None else ()
        for hook in hooks:
            _observe(hook, "after_run", head)
        return StepResult(Outcome.finished, head.status.value)


LIVE_TEXT_INTERVAL_S = 0.2
"""How often at most a streaming step writes the text so far for its followers."""
LIVE_TEXT_RETENTION = timedelta(days=1)
"""The live text is deleted (TTL) a day after its last write: the step's event keeps the answer."""


class _LiveSink:
    """Gathers a streamed answer's pieces and writes the text so far at most every ``LIVE_TEXT_INTERVAL_S``
    (the last pieces are in the ``model_response`` event that follows). A failed write is logged and dropped."""

    def __init__(self, live: LiveTexts, clock: Clock, d: Delivery, attempt: str) -> None:
        self.live, self.clock, self.d, self.attempt = live, clock, d, attempt
        self.text = ""
        self.written_at = 0.0

    def __call__(self, piece: str) -> None:
        self.text += piece
        now = time.monotonic()
        if now - self.written_at < LIVE_TEXT_INTERVAL_S:
            return
        self.written_at = now
        at = self.clock.now()
        try:
            self.live.put(self.d.tenant, self.d.run_id, LiveText(step=self.d.step, attempt=self.attempt,
                                                                  text=self.text, at=at), at + LIVE_TEXT_RETENTION)
        except Exception as e:  # followers see the text when the step records it
            _log.warning("could not write the live text of run %s: %s", self.d.run_id, e)


def _may_announce(agent: Agent, call: FunctionCall, settled: dict[str, Settled], held: dict[str, str]) -> bool:
    """Whether the call's intent may be written before it is reached: not for a call that waits for (or
    was refused) approval, which is announced, if ever, only once approved."""
    if agent.approval_policy(call.name, call.args) is None and call.id not in held:
        return True
    decided = settled.get(call.id)
    return decided is not None and decided.decision == "approved"


def _window(head: RunHead, events: Sequence[Event], step: int, steps: int) -> list[Message]:
    """The conversation with only the last ``steps`` steps in context."""
    first = conversation.window_start(step, steps)
    shown = head.input_view if head.input_view is not None else head.input
    messages, _ = conversation.rebuild(shown, [e for e in events if e.step >= first], step, first, head.context,
                                       head.recalled)
    return messages


def _dump(message: Message) -> dict[str, Any]:
    return message.model_dump(mode="json", exclude_none=True)


def _observe(hook: Any, seam: str, *args: Any) -> None:
    try:
        getattr(hook, seam)(*args)
    except Exception:
        _log.exception("hook %s failed at %s; the step is committed and goes on", getattr(hook, "name", hook), seam)


def _token_key(head: RunHead) -> str:
    """The key of a run's personal-data tokens: the same token for the same value throughout the run,
    different ones in other runs (tokens hide values from the model; they are no protection from someone
    who knows the run and guesses the value)."""
    return f"{head.tenant}/{head.run_id}/{head.created_at.isoformat()}"


def _unreconciled(call: FunctionCall, reconciled: Settled) -> str:
    why = (f"{reconciled.by} chose to stop the run" if reconciled.decision == "fail"
           else "nobody reconciled it in time")
    return (f"tool {call.name} (call {call.id}) may or may not have run: the attempt that made it stopped "
            f"reporting and lost its lease; {why}"
            + (f": {reconciled.comment}" if reconciled.comment else ""))


def _refusal(call: FunctionCall, settled: Settled) -> str:
    if settled.decision == "expired":
        return f"{call.name} was not called: it needed approval and {settled.comment or 'nobody decided in time'}"
    reason = f": {settled.comment}" if settled.comment else ""
    return f"{call.name} was not called: {settled.by or 'the approver'} rejected it{reason}"


def _note_intents(progress: conversation.StepProgress, written: Mutation[Any]) -> None:
    """Intents this attempt wrote: the calls are announced, and a late result names the intent it answers."""
    for e in written.events:
        if e.kind == EventKind.tool_intent:
            progress.intents.add(e.data["call_id"])
            progress.intent_seq[e.data["call_id"]] = e.seq
            progress.late.pop(e.data["call_id"], None)


def _late_result(late: LateResult) -> _Result:
    return late.ok, late.output, late.continue_at, False, None


def _brief(output: dict[str, Any], limit: int = 2000) -> str:
    text = json.dumps(output, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "...(truncated)"


def _record_result(head: RunHead, *, owner: str, step: int, call: FunctionCall, ok: bool, output: dict[str, Any],
                   next_call: FunctionCall | None, continue_at: datetime | None, clock: Clock,
                   guarded: guarding.Guarded | None) -> Mutation[None]:
    return decisions.record_tool_result(head, owner, step, call, ok, output, next_call, clock.now(), continue_at,
                                        stored=guarded.stored("output") if guarded is not None else None,
                                        verdict=guarded.verdict if guarded is not None else None)


def _record_last_result(head: RunHead, *, owner: str, step: int, call: FunctionCall, ok: bool, output: dict[str, Any],
                        continue_at: datetime | None, clock: Clock, guarded: guarding.Guarded | None,
                        message: Message, wake_at: datetime | None, shown: str | None,
                        issue_seconds: float | None) -> Mutation[Claim]:
    return decisions.record_last_result(head, owner, step, call, ok, output, clock.now(), continue_at, message, wake_at,
                                        stored=guarded.stored("output") if guarded is not None else None,
                                        verdict=guarded.verdict if guarded is not None else None, shown=shown,
                                        issue_seconds=issue_seconds)


def _taking(mutate: Callable[[RunHead], Mutation[T]], d: Delivery, now: datetime,
            lease_seconds: float) -> Callable[[RunHead], Mutation[T]]:
    """``mutate`` on the head with the issued lease taken, the ``step_started`` that records it written first."""

    def taking(head: RunHead) -> Mutation[T]:
        taken, started = decisions.take_issued(head, d, now, lease_seconds)
        decided = mutate(taken)
        if decided.head is None or not started:
            return decided
        return dataclasses.replace(decided, events=[*started, *decided.events])

    return taking


def _record_intent(head: RunHead, *, owner: str, step: int, call: FunctionCall, clock: Clock) -> Mutation[None]:
    return decisions.record_intent(head, owner, step, call, clock.now())


def _late(head: RunHead, *, owner: str, step: int, call: FunctionCall, ok: bool, output: dict[str, Any],
          intent_seq: int | None, round: int, approval: Approval | None, continue_at: datetime | None,
          clock: Clock, stored: dict[str, Any] | None) -> Mutation[Late]:
    return decisions.record_late_result(head, owner, step, call, ok, output, intent_seq, round, approval,
                                        clock.now(), continue_at, stored)


@dataclass(frozen=True)
class _GuardedResponse:
    """The model's response as the chain left it, its stored fields, and the verdicts to record with it."""

    response: ModelResponse
    stored: dict[str, Any]
    verdicts: list[dict[str, Any]]
    blocked: RunError | None
