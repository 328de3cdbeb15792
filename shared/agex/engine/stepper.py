"""Drive one step of one run over the ports: claim, plan, act, observe, evaluate, commit, enqueue.

Each phase ends in a fenced write (see ``decisions``); a crash between any two lines costs at most the
work since the last write, and the retried delivery picks up from what was written.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from agex import failpoints
from agex.agent import Agent, AgentRegistry
from agex.clock import Clock
from agex.engine import conversation, decisions
from agex.engine.decisions import Claim, Delivery
from agex.errors import ModelError, NotFound, StaleDelivery
from agex.messages import FunctionCall, ModelRequest, ModelResponse
from agex.obs import logging as log
from agex.obs import tracing
from agex.ports.checkpoint_store import CheckpointStore, Mutation
from agex.ports.event_bus import EventBus
from agex.ports.model import Model
from agex.ports.task_queue import StepTask, TaskQueue
from agex.pricing import Pricing
from agex.run import ACTIVE_STATUSES, RunError, RunHead
from agex.tools import ToolContext

_log = log.get("step")

RUN_EVENTS_TOPIC = "agex-run-events"


class Outcome(StrEnum):
    committed = "committed"
    """The step committed and the next one is enqueued."""
    finished = "finished"
    """The run ended in this delivery."""
    stale = "stale"
    """Nothing to do: duplicate, stale, or the run moved on."""


@dataclass(frozen=True)
class StepResult:
    outcome: Outcome
    detail: str = ""


@dataclass(frozen=True)
class StepSettings:
    lease_seconds: float = 120.0
    """Longer than one step's model call plus tools; a crashed attempt's retry takes over at once
    anyway (see ``Delivery.attempt``), so this only bounds how long a lost duplicate blocks."""


class StepRunner:
    def __init__(self, *, store: CheckpointStore, queue: TaskQueue, bus: EventBus, agents: AgentRegistry,
                 models: Callable[[Agent], Model], pricing: Pricing, clock: Clock,
                 settings: StepSettings | None = None) -> None:
        self.store, self.queue, self.bus, self.agents = store, queue, bus, agents
        self.models, self.pricing, self.clock = models, pricing, clock
        self.settings = settings or StepSettings()

    def run(self, d: Delivery) -> StepResult:
        with log.labels(run=d.run_id, tenant=d.tenant, step=d.step), tracing.tracer().start_as_current_span(
                f"step {d.step}", attributes={"agex.run": d.run_id, "agex.step": d.step, "agex.attempt": d.attempt}):
            try:
                return self._run(d)
            except StaleDelivery as e:
                log.info(_log, f"acknowledged without work: {e.message}", outcome="stale")
                self._repair_successor(d)
                return StepResult(Outcome.stale, e.message)

    def _run(self, d: Delivery) -> StepResult:
        claimed = self.store.update_run(
            d.tenant, d.run_id, lambda h: decisions.claim(h, d, self.clock.now(), self.settings.lease_seconds))
        head = claimed.head
        assert head is not None
        if claimed.value == Claim.finished:
            return self._finished(head)
        try:
            agent = self.agents.get(head.agent)
        except NotFound:
            # the deployment no longer runs this agent: retrying cannot help, so say so on the run
            return self._fail(d, RunError(code="configuration_error", message=(
                f"agent {head.agent!r} is not deployed here any more; add it back to AGEX_AGENTS to run it")))
        with log.labels(agent=agent.name):
            log.info(_log, f"step {d.step} started (attempt {d.attempt})", attempt=d.attempt)
            failpoints.hit("step.after_claim")
            first = conversation.window_start(d.step, agent.context_window_steps)
            events = self.store.events_since_step(d.tenant, d.run_id, first)
            messages, progress = conversation.rebuild(head.input, events, d.step, first)
            earlier_intents = frozenset(progress.intents)
            response = progress.response
            if response is None:
                response = self._plan(agent, head, d, messages)
                if response is None:
                    return self._finished_now(d)
                # record_model_response wrote the intent of the first call with the response
                progress.intents.update(c.id for c in response.message.function_calls[:1])
            else:
                log.info(_log, "reusing the model response recorded by an earlier attempt")
            failpoints.hit("step.after_model")
            ended = self._act(agent, head, d, response, progress, earlier_intents)
            if ended:
                return ended
            return self._commit(head, d, response)

    def _plan(self, agent: Agent, head: RunHead, d: Delivery, messages: list) -> ModelResponse | None:
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
        recorded = self.store.update_run(d.tenant, d.run_id, lambda h: decisions.record_model_response(
            h, d.owner, d.step, response, agent.model, cost, self.clock.now()))
        if recorded.value == Claim.finished:
            return None
        return response

    def _act(self, agent: Agent, head: RunHead, d: Delivery, response: ModelResponse,
             progress: conversation.StepProgress, earlier_intents: frozenset[str]) -> StepResult | None:
        """Run the calls without a recorded result, in order. ``earlier_intents`` are calls an earlier,
        crashed attempt announced: it may or may not have made them."""
        pending = conversation.pending_calls(response, progress)
        for i, call in enumerate(pending):
            tool = agent.tool(call.name)
            if call.id in earlier_intents and tool is not None and not tool.idempotent:
                return self._fail(d, RunError(code="tool_uncertain", message=(
                    f"tool {call.name} (call {call.id}) is not idempotent and an earlier attempt of step "
                    f"{d.step} may have run it before crashing; it was not called again. Reconcile by hand.")))
            if call.id not in progress.intents:
                # an earlier attempt recorded the previous result but died before writing this intent
                self.store.update_run(d.tenant, d.run_id, functools.partial(
                    _record_intent, owner=d.owner, step=d.step, call=call, clock=self.clock))
            ok, output = self._call_tool(agent, head, d, call)
            failpoints.hit("step.after_tool")
            following = pending[i + 1] if i + 1 < len(pending) else None
            self.store.update_run(d.tenant, d.run_id, functools.partial(
                _record_result, owner=d.owner, step=d.step, call=call, ok=ok, output=output, next_call=following,
                clock=self.clock))
            if following:
                progress.intents.add(following.id)
        return None

    def _call_tool(self, agent: Agent, head: RunHead, d: Delivery, call: FunctionCall) -> tuple[bool, dict]:
        tool = agent.tool(call.name)
        if tool is None:
            known = ", ".join(t.name for t in agent.tools) or "none"
            return False, {"error": f"unknown tool {call.name!r}; available tools: {known}"}
        ctx = ToolContext(tenant=d.tenant, run_id=d.run_id, step=d.step, call_id=call.id,
                          idempotency_key=decisions.idempotency_key(head, d.step, call))
        with tracing.tracer().start_as_current_span(f"tool {call.name}", attributes={"agex.tool": call.name}):
            outcome = tool.call(call.args, ctx)
        log.info(_log, f"tool {call.name} {'succeeded' if outcome.ok else 'failed'}", tool=call.name, ok=outcome.ok)
        return outcome.ok, outcome.output

    def _commit(self, head: RunHead, d: Delivery, response: ModelResponse) -> StepResult:
        committed = self.store.update_run(d.tenant, d.run_id, lambda h: decisions.complete_step(
            h, d.owner, d.step, response.message, self.clock.now()))
        new = committed.head
        assert new is not None
        failpoints.hit("step.after_commit")
        if committed.value == Claim.finished:
            return self._finished(new)
        self.enqueue_next(new)
        log.info(_log, f"step {d.step} committed", outcome="committed")
        return StepResult(Outcome.committed)

    def _repair_successor(self, d: Delivery) -> None:
        """A retry of a step that committed may mean its attempt died before enqueuing the next step:
        enqueue it again. The task name is deterministic, so when it was enqueued this is a no-op."""
        head = self.store.get_run(d.tenant, d.run_id)
        if head is not None and head.step == d.step and head.status in ACTIVE_STATUSES:
            self.enqueue_next(head)

    def enqueue_next(self, head: RunHead, delay: timedelta | None = None) -> None:
        task = StepTask(tenant=head.tenant, run_id=head.run_id, step=head.step + 1, generation=head.generation,
                        traceparent=tracing.current_traceparent() or head.trace,
                        schedule_at=self.clock.now() + delay if delay else None)
        self.queue.enqueue(task)

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
        try:
            self.bus.publish(RUN_EVENTS_TOPIC, {
                "type": "run.finished", "version": 1, "tenant": head.tenant, "run_id": head.run_id,
                "agent": head.agent, "status": head.status.value, "usage": head.usage.model_dump()},
                {"type": "run.finished", "tenant": head.tenant, "traceparent": head.trace})
        except Exception:  # the run is committed; a lost notification must not fail or retry the step
            _log.exception("could not publish run.finished")
        return StepResult(Outcome.finished, head.status.value)


def _record_result(head: RunHead, *, owner: str, step: int, call: FunctionCall, ok: bool, output: dict,
                   next_call: FunctionCall | None, clock: Clock) -> Mutation[None]:
    return decisions.record_tool_result(head, owner, step, call, ok, output, next_call, clock.now())


def _record_intent(head: RunHead, *, owner: str, step: int, call: FunctionCall, clock: Clock) -> Mutation[None]:
    return decisions.record_intent(head, owner, step, call, clock.now())
