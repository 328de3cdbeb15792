"""Issued leases (docs/architecture.md, "Issued leases"): a step's commit issues the next step's lease to its task,
whose first delivery works without a claim write. Two commits a step; a duplicate may pay for one model call more
but never runs a tool twice or records two responses; a retry never waits on an issued lease."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from agex.core.agent import Agent
from agex.core.errors import LeaseHeld
from agex.core.messages import ModelRequest
from agex.core.run import ISSUED, EventKind, RunHead, RunStatus
from agex.engine.decisions import Delivery
from agex.engine.lease import LeaseKeeper
from agex.engine.stepper import Outcome, StepResult
from agex.ports.checkpoint_store import Mutation
from agex.ports.task_queue import StepTask
from agex.testing import FunctionModel
from agex.testing.harness import InMemoryRuntime
from agex.tools import ToolContext, tool

effects: list[str] = []


class Note(BaseModel):
    text: str


@tool(idempotent=False)
def send(args: Note, ctx: ToolContext) -> dict[str, Any]:
    """Send a note; not idempotent."""
    effects.append(ctx.idempotency_key)
    return {"sent": args.text}


def model(answers: list[Any], during: Callable[[int], None] = lambda n: None) -> tuple[FunctionModel, list[int]]:
    """Answers in turn (a call: ``("send", args)``; text: the answer); ``during(n)`` runs inside the n-th call."""
    calls: list[int] = []

    def answer(request: ModelRequest) -> Any:
        calls.append(len(calls) + 1)
        during(len(calls))
        steps = sum(1 for m in request.messages for p in m.parts if p.function_response)
        return answers[min(steps, len(answers) - 1)]

    return FunctionModel(answer), calls


def runtime(m: FunctionModel, **settings: Any) -> InMemoryRuntime:
    effects.clear()
    rt = InMemoryRuntime([Agent(name="notes", instructions="n", tools=(send,))], m)
    if settings:
        rt.runner.settings = rt.runner.settings.__class__(**{**rt.runner.settings.__dict__, **settings})
    return rt


def counting(rt: InMemoryRuntime) -> list[str]:
    """The store's commits, by the step decision that made them (wraps the store's own method)."""
    commits: list[str] = []
    update = rt.store.update_run

    def counted(tenant: str, run_id: str, mutate: Callable[[RunHead], Mutation[Any]]) -> Mutation[Any]:
        written = update(tenant, run_id, mutate)
        if written.head is not None:
            commits.append(",".join(e.kind.value for e in written.events) or "head")
        return written

    rt.store.update_run = counted  # type: ignore[method-assign]
    return commits


def task_of(rt: InMemoryRuntime, step: int) -> StepTask:
    (task,) = [t for t in rt.queue.pending() if isinstance(t, StepTask) and t.step == step]
    return task


THREE_STEPS = [[("send", {"text": "a"})], [("send", {"text": "b"})], "done"]


def test_a_step_after_the_first_takes_two_commits_and_its_started_event_comes_with_the_response() -> None:
    m, calls = model(THREE_STEPS)
    rt = runtime(m)
    commits = counting(rt)
    head = rt.run("notes", "send a and b")
    assert head.status == RunStatus.succeeded and len(effects) == 2
    # step 1 is claimed (the run's creation issues no lease); steps 2 and 3 adopt the lease step 1 and 2 issued
    assert commits[0] == "step_started"
    assert commits[1:3] == ["model_response,tool_intent", "tool_result,step_completed"]
    assert commits[3:5] == ["step_started,model_response,tool_intent", "tool_result,step_completed"]
    # the answer: its response, then the run's end (nothing between them, but hooks see the response first)
    assert commits[5:] == ["step_started,model_response", "step_completed,run_finished"]
    started = [e for e in rt.store.list_events(head.tenant, head.run_id, limit=100) if e.kind == EventKind.step_started]
    assert [e.data.get("issued", False) for e in started] == [False, True, True]
    assert len(calls) == 3


def test_with_issued_leases_off_every_step_claims_first() -> None:
    m, _ = model(THREE_STEPS)
    rt = runtime(m, issue_lease=False)
    commits = counting(rt)
    head = rt.run("notes", "send a and b")
    assert head.status == RunStatus.succeeded
    assert commits.count("step_started") == 3 and len(commits) == 9
    assert head.lease is None


def test_the_commit_issues_the_next_lease_to_the_next_task_only_when_the_step_is_due_now() -> None:
    m, _ = model(THREE_STEPS)
    rt = runtime(m)
    head = rt.start("notes", "send a and b")
    rt.deliver(rt.queue.pending()[0])
    after = rt.store.get_run(head.tenant, head.run_id)
    assert after is not None and after.lease is not None
    task = task_of(rt, 2)
    assert after.lease.attempt == ISSUED and after.lease.task == task.name and after.lease.step == 2


def test_two_first_deliveries_at_once_pay_twice_but_record_one_response_and_send_once() -> None:
    rt: InMemoryRuntime
    seen: list[StepResult | Any] = []

    def duplicate(n: int) -> None:
        if n == 2:  # inside step 2's model call, the same task is delivered again as a first attempt
            seen.append(rt.deliver(task_of(rt, 2), 0, instance="other"))

    m, calls = model(THREE_STEPS, duplicate)
    rt = runtime(m)
    head = rt.start("notes", "send a and b")
    rt.drive()
    final = rt.store.get_run(head.tenant, head.run_id)
    assert final is not None and final.status == RunStatus.succeeded
    assert isinstance(seen[0], StepResult) and seen[0].outcome == Outcome.committed
    lost = [r for r in rt.results if isinstance(r, StepResult) and r.outcome == Outcome.lease_lost]
    assert len(lost) == 1  # the delivery whose model call was overtaken stopped at its fence
    assert sorted(effects) == sorted(set(effects)) and len(effects) == 2  # each send once
    responses = [e for e in rt.store.list_events(head.tenant, head.run_id, limit=200) if e.kind == EventKind.model_response]
    assert [e.step for e in responses] == [1, 2, 3]
    assert len(calls) == 4  # the one model call the protocol allows to be repeated


def test_a_retry_after_a_first_delivery_that_died_claims_at_once_and_counts_the_lost_call() -> None:
    def die(n: int) -> None:
        if n == 2:
            raise RuntimeError("the instance died inside the model call")

    m, _ = model(THREE_STEPS, die)
    rt = runtime(m)
    head = rt.start("notes", "send a and b")
    rt.deliver(rt.queue.pending()[0])
    task = task_of(rt, 2)
    with pytest.raises(RuntimeError):
        rt.deliver(task, 0)
    result = rt.deliver(task, 1)  # no waiting on the issued lease: it is taken
    assert isinstance(result, StepResult) and result.outcome == Outcome.committed
    rt.drive()
    events = rt.store.list_events(head.tenant, head.run_id, limit=200)
    (claim,) = [e for e in events if e.kind == EventKind.step_started and e.step == 2]
    assert claim.data["issued_to"] == task.name and claim.data["resumed"] is False
    (record,) = rt.metrics.query_run_metrics(ended_from=head.created_at, ended_to=rt.clock.now() + timedelta(days=1))
    assert record.unrecorded_model_calls == 1


def test_a_heartbeat_takes_the_issued_lease_for_a_long_model_call() -> None:
    m, _ = model(THREE_STEPS)
    rt = runtime(m)
    head = rt.start("notes", "send a and b")
    rt.deliver(rt.queue.pending()[0])
    task = task_of(rt, 2)
    d = Delivery.of(task, 0, "slow")
    keeper = LeaseKeeper(rt.store, rt.clock, d, 60.0, adopted=True)
    rt.clock.advance(20)
    assert keeper.renew()
    taken = rt.store.get_run(head.tenant, head.run_id)
    assert taken is not None and taken.lease is not None
    assert taken.lease.owner == d.owner and taken.lease.attempt == 0
    events = rt.store.list_events(head.tenant, head.run_id, limit=100)
    assert events[-1].kind == EventKind.step_started and events[-1].data["owner"] == d.owner
    # another first delivery of the task now claims and is refused: the lease is held
    with pytest.raises(LeaseHeld):
        rt.deliver(task, 0, instance="other")
