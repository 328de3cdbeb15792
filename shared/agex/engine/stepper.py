"""Drive one step of one run over the ports: claim, plan, act, observe, evaluate, commit, enqueue.

Each phase ends in a fenced write (see ``decisions``); a crash between any two lines costs at most the
work since the last write, and the retried delivery picks up from what was written. While it works, an
attempt renews its lease (``agex.engine.lease``); an attempt that finds it lost the lease after a tool
call still records what the call did, as a late result.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from agex.core.agent import Agent, AgentRegistry
from agex.core.approval import Approval, ApprovalPolicy
from agex.core.clock import Clock
from agex.core.errors import (
    AgexError,
    LeaseHeld,
    LeaseLost,
    ModelError,
    NotFound,
    SecretError,
    SecretUnavailable,
    StaleDelivery,
    TransientError,
)
from agex.core.messages import FunctionCall, Message, ModelRequest, ModelResponse
from agex.core.pricing import Pricing
from agex.core.run import ACTIVE_STATUSES, EventKind, RunError, RunHead, RunStatus
from agex.core.tool import Tool, ToolContext, ToolOutcome
from agex.engine import conversation, decisions, notify
from agex.engine.conversation import LateResult, Settled
from agex.engine.decisions import Claim, Delivery, Late
from agex.engine.lease import LeaseKeeper
from agex.obs import logging as log
from agex.obs import tracing
from agex.ports.checkpoint_store import CheckpointStore, Mutation
from agex.ports.event_bus import EventBus
from agex.ports.failpoints import NO_FAILPOINTS, Failpoints
from agex.ports.limiter import Limiter, Permit, Wait
from agex.ports.model import Model
from agex.ports.secret_store import SecretStore
from agex.ports.task_queue import StepTask, TaskQueue

_log = log.get("step")

RUN_EVENTS_TOPIC = notify.RUN_EVENTS_TOPIC

_Result = tuple[bool, dict[str, Any], "datetime | None", bool]
"""A call's result: ok, the output recorded and shown to the model, when the run should go on (a tool
asked to continue later) if it said, and whether this attempt made the call."""


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


class StepRunner:
    def __init__(self, *, store: CheckpointStore, queue: TaskQueue, bus: EventBus, agents: AgentRegistry,
                 models: Callable[[Agent], Model], pricing: Pricing, clock: Clock,
                 settings: StepSettings | None = None, secrets: SecretStore | None = None,
                 limiter: Limiter | None = None, failpoints: Failpoints = NO_FAILPOINTS) -> None:
        self.store, self.queue, self.bus, self.agents = store, queue, bus, agents
        self.models, self.pricing, self.clock = models, pricing, clock
        self.settings = settings or StepSettings()
        self.secrets, self.limiter, self.failpoints = secrets, limiter, failpoints

    def run(self, d: Delivery) -> StepResult:
        with log.labels(run=d.run_id, tenant=d.tenant, step=d.step), tracing.tracer().start_as_current_span(
                f"step {d.step}", attributes={"agex.run": d.run_id, "agex.step": d.step, "agex.attempt": d.attempt}):
            try:
                return self._run(d)
            except StaleDelivery as e:
                log.info(_log, f"acknowledged without work: {e.message}", outcome="stale")
                self._repair_successor(d)
                return StepResult(Outcome.stale, e.message)
            except LeaseHeld as e:
                log.info(_log, f"refused attempt {d.owner}: {e.message}; Cloud Tasks retries it later",
                         outcome="lease_held", attempt=d.attempt)
                raise
            except LeaseLost as e:
                _log.warning("attempt %s lost its lease and stopped: %s", d.owner, e.message,
                             extra={"fields": {"outcome": "lease_lost", "attempt": d.attempt}})
                return StepResult(Outcome.lease_lost, e.message)

    def _run(self, d: Delivery) -> StepResult:
        claimed = self.store.update_run(
            d.tenant, d.run_id, lambda h: decisions.claim(h, d, self.clock.now(), self.settings.lease_seconds))
        head = claimed.head
        assert head is not None
        if claimed.value == Claim.finished:
            return self._finished(head)
        with LeaseKeeper(self.store, self.clock, d, self.settings.lease_seconds, failpoints=self.failpoints) as keeper:
            return self._work(head, d, keeper)

    def _work(self, head: RunHead, d: Delivery, keeper: LeaseKeeper) -> StepResult:
        try:
            agent = self.agents.get(head.agent)
        except NotFound:
            # the deployment no longer runs this agent: retrying cannot help, so say so on the run
            return self._fail(d, RunError(code="configuration_error", message=(
                f"agent {head.agent!r} is not deployed here any more; add it back to AGEX_AGENTS to run it")))
        with log.labels(agent=agent.name):
            log.info(_log, f"step {d.step} started (attempt {d.attempt})", attempt=d.attempt)
            self.failpoints.hit("step.after_claim")
            first = conversation.window_start(d.step, agent.context_window_steps)
            events = self.store.events_since_step(d.tenant, d.run_id, first)
            messages, progress = conversation.rebuild(head.input, events, d.step, first)
            earlier_intents = frozenset(progress.intents)
            response = progress.response
            if response is None:
                # record_model_response writes the intent of the first call with the response, unless it
                # has to wait for approval
                response = self._plan(agent, head, d, messages, progress)
                if response is None:
                    return self._finished_now(d)
            else:
                log.info(_log, "reusing the model response recorded by an earlier attempt")
            self.failpoints.hit("step.after_model")
            ended = self._act(agent, head, d, response, progress, earlier_intents, keeper)
            if ended:
                return ended
            return self._commit(head, d, response, progress.continue_at)

    def _plan(self, agent: Agent, head: RunHead, d: Delivery, messages: list[Message],
              progress: conversation.StepProgress) -> ModelResponse | None:
        request = ModelRequest(model=agent.model, system=agent.instructions, messages=messages,
                               tools=[t.spec() for t in agent.tools])
        with tracing.tracer().start_as_current_span("model.request", attributes={"gen_ai.request.model": agent.model}):
            try:
                response = self.models(agent).request(request)
            except ModelError as e:
                self._fail(d, RunError(code="model_error", message=e.message))
                return None
        cost = self.pricing.cost(agent.model, response.usage.input_tokens, response.usage.output_tokens)
        log.info(_log, "model responded", model=agent.model, input_tokens=response.usage.input_tokens,
                 output_tokens=response.usage.output_tokens, cost_usd=cost,
                 tool_calls=[c.name for c in response.message.function_calls])
        calls = response.message.function_calls
        announce = calls[0] if calls and _may_announce(agent, calls[0], {}) else None
        recorded = self.store.update_run(d.tenant, d.run_id, lambda h: decisions.record_model_response(
            h, d.owner, d.step, response, agent.model, cost, self.clock.now(), announce))
        if recorded.value == Claim.finished:
            return None
        _note_intents(progress, recorded)
        return response

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
            ok, output, continue_at, called = resolved
            following = pending[i + 1] if i + 1 < len(pending) else None
            announce = following if following and _may_announce(agent, following, progress.settled) else None
            try:
                recorded = self.store.update_run(d.tenant, d.run_id, functools.partial(
                    _record_result, owner=d.owner, step=d.step, call=call, ok=ok, output=output,
                    next_call=announce, continue_at=continue_at, clock=self.clock))
            except LeaseLost as e:
                if called:
                    self._report_late(d, call, ok, output, continue_at, progress, e.message)
                raise
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
        if policy is not None and settled is None:
            return self._request_approval(d, call, policy)
        if reconciled is not None and reconciled.decision in ("fail", "expired"):
            return self._fail(d, RunError(code="tool_uncertain", message=_unreconciled(call, reconciled)))
        if settled is not None and settled.decision != "approved":
            return False, {"error": _refusal(call, settled), "approval": settled.note()}, None, False
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
            return True, {"reconciled": reconciled.note()}, None, False
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
            announced = self.store.update_run(d.tenant, d.run_id, functools.partial(
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
        continue_at = (self.clock.now() + timedelta(seconds=outcome.continue_after_s)
                       if outcome.continue_after_s is not None else None)
        return outcome.ok, output, continue_at, True

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
                                              seen_seq=max((e.seq for e in events), default=head.seq))
            except decisions.EventsMoved:
                continue
        raise TransientError(f"step {d.step} of run {d.run_id}: events kept arriving while reconciling {call.name}")

    def _report_late(self, d: Delivery, call: FunctionCall, ok: bool, output: dict[str, Any],
                     continue_at: datetime | None, progress: conversation.StepProgress, why: str) -> None:
        """This attempt made ``call`` and lost its lease meanwhile: record what the call returned anyway
        (append-only), so that whoever took over, or the operator reconciling the call, goes by the facts.
        Logged first, the output in full in the entry's ``output``, so the fact survives even if the store
        cannot take it."""
        _log.warning("attempt %s lost its lease while calling %s (%s); the call %s and its result is recorded "
                     "as a late result: %s", d.owner, call.name, why, "succeeded" if ok else "returned an error",
                     _brief(output), extra={"fields": {"outcome": "late_result", "tool": call.name,
                                                       "call_id": call.id, "ok": ok, "output": output}})
        round = progress.reconcile_rounds.get(call.id, 0)
        expected = decisions.reconcile_approval_id(d.run_id, d.step, call.id, round)
        recorded: Mutation[Late] | None = None
        for attempt in range(8):
            try:
                approval = self.store.get_approval(d.tenant, expected)
                recorded = self.store.update_run(d.tenant, d.run_id, functools.partial(
                    _late, owner=d.owner, step=d.step, call=call, ok=ok, output=output,
                    intent_seq=progress.intent_seq.get(call.id), round=round, approval=approval,
                    continue_at=continue_at, clock=self.clock))
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
                          kind: Literal["approval", "reconcile"] = "approval", round: int = 0,
                          seen_seq: int | None = None) -> StepResult:
        requested = self.store.update_run(d.tenant, d.run_id, lambda h: decisions.request_approval(
            h, d.owner, d.step, call, policy, self.clock.now(), kind, round, seen_seq))
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
        deferred = self.store.update_run(d.tenant, d.run_id, lambda h: decisions.defer_call(
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
        ctx = ToolContext(tenant=d.tenant, run_id=d.run_id, step=d.step, call_id=call.id,
                          idempotency_key=decisions.idempotency_key(head, d.step, call), secrets=values)
        with tracing.tracer().start_as_current_span(f"tool {call.name}", attributes={"agex.tool": call.name}):
            permit = self._permit(tool, ctx)
            if isinstance(permit, Wait):
                log.info(_log, f"tool {call.name} is at its limit: {permit.reason}", tool=call.name)
                return ToolOutcome(False, {"error": permit.reason}, retry_after_s=permit.seconds)
            try:
                outcome = tool.call(args, ctx)
            finally:
                if permit is not None and self.limiter is not None:
                    self.limiter.release(permit)
        log.info(_log, f"tool {call.name} {'succeeded' if outcome.ok else 'failed'}", tool=call.name, ok=outcome.ok)
        return outcome  # scrubbed of the secrets in ctx by Tool.call

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

    def _commit(self, head: RunHead, d: Delivery, response: ModelResponse,
                continue_at: datetime | None) -> StepResult:
        committed = self.store.update_run(d.tenant, d.run_id, lambda h: decisions.complete_step(
            h, d.owner, d.step, response.message, self.clock.now(), continue_at))
        new = committed.head
        assert new is not None
        self.failpoints.hit("step.after_commit")
        if committed.value == Claim.finished:
            return self._finished(new)
        self.enqueue_next(new, at=new.wake_at)
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

    def enqueue_next(self, head: RunHead, at: datetime | None = None) -> None:
        self.queue.enqueue(StepTask.next_of(head, schedule_at=at, traceparent=tracing.current_traceparent()))

    def _fail(self, d: Delivery, error: RunError) -> StepResult:
        ended = self.store.update_run(d.tenant, d.run_id, lambda h: decisions.fail_step(
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
        notify.run_finished(self.bus, head)
        return StepResult(Outcome.finished, head.status.value)


def _may_announce(agent: Agent, call: FunctionCall, settled: dict[str, Settled]) -> bool:
    """Whether the call's intent may be written before it is reached: not for a call that waits for (or
    was refused) approval, which is announced, if ever, only once approved."""
    if agent.approval_policy(call.name, call.args) is None:
        return True
    decided = settled.get(call.id)
    return decided is not None and decided.decision == "approved"


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
    return late.ok, late.output, late.continue_at, False


def _brief(output: dict[str, Any], limit: int = 2000) -> str:
    text = json.dumps(output, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "...(truncated)"


def _record_result(head: RunHead, *, owner: str, step: int, call: FunctionCall, ok: bool, output: dict[str, Any],
                   next_call: FunctionCall | None, continue_at: datetime | None, clock: Clock) -> Mutation[None]:
    return decisions.record_tool_result(head, owner, step, call, ok, output, next_call, clock.now(), continue_at)


def _record_intent(head: RunHead, *, owner: str, step: int, call: FunctionCall, clock: Clock) -> Mutation[None]:
    return decisions.record_intent(head, owner, step, call, clock.now())


def _late(head: RunHead, *, owner: str, step: int, call: FunctionCall, ok: bool, output: dict[str, Any],
          intent_seq: int | None, round: int, approval: Approval | None, continue_at: datetime | None,
          clock: Clock) -> Mutation[Late]:
    return decisions.record_late_result(head, owner, step, call, ok, output, intent_seq, round, approval,
                                        clock.now(), continue_at)
