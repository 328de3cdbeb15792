"""The step protocol on the in-memory ports: happy path, redelivery, crashes, limits."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from agex.core.agent import Agent
from agex.core.errors import LeaseHeld
from agex.core.messages import ModelRequest
from agex.core.run import EventKind, Limits, RunStatus
from agex.engine.decisions import Delivery
from agex.ports.task_queue import StepTask
from agex.testing import FunctionModel, TestModel
from agex.testing.harness import InMemoryRuntime
from agex.testing.models import scripted
from agex.tools import ToolContext, tool


class Note(BaseModel):
    text: str


effects: list[str] = []


@tool
def write_note(args: Note, ctx: ToolContext) -> dict[str, Any]:
    """Write a note somewhere durable."""
    effects.append(ctx.idempotency_key)
    return {"written": args.text}


@tool(idempotent=False)
def send_fax(args: Note, ctx: ToolContext) -> dict[str, Any]:
    """Send a fax; cannot be undone or deduplicated."""
    effects.append("fax:" + ctx.idempotency_key)
    return {"sent": True}


@pytest.fixture(autouse=True)
def _clear() -> None:
    effects.clear()


def make(model: Any, tools: tuple = (write_note,), **limits: Any) -> InMemoryRuntime:
    agent = Agent(name="notes", instructions="take notes", tools=tools, limits=Limits(**limits) if limits else Limits())
    return InMemoryRuntime([agent], model)


def test_a_run_goes_through_plan_act_observe_evaluate_and_succeeds() -> None:
    rt = make(scripted([("write_note", {"text": "a"})], [("write_note", {"text": "b"})], "all noted"))
    head = rt.run("notes", "note a and b")
    assert head.status == RunStatus.succeeded
    assert head.result == "all noted"
    assert head.step == 3
    assert head.usage.model_calls == 3 and head.usage.input_tokens > 0 and head.usage.cost_usd > 0
    kinds = [e.kind for e in rt.store.list_events("dev", head.run_id, limit=1000)]
    assert kinds[0] == EventKind.run_created and kinds[-1] == EventKind.run_finished
    assert kinds.count(EventKind.tool_intent) == kinds.count(EventKind.tool_result) == 2
    assert len(effects) == 2
    assert [m.message["status"] for m in rt.bus.on("agex-run-events")] == ["succeeded"]


def test_the_model_sees_the_tool_results_of_earlier_steps() -> None:
    seen: list[ModelRequest] = []

    def answer(request: ModelRequest) -> Any:
        seen.append(request)
        return [("write_note", {"text": "x"})] if len(seen) == 1 else "ok"

    rt = make(FunctionModel(answer))
    rt.run("notes", "go")
    last = seen[-1].messages
    assert [m.role for m in last] == ["user", "model", "user"]
    assert last[2].parts[0].function_response.response == {"written": "x"}


def test_duplicate_and_stale_deliveries_change_nothing() -> None:
    rt = make(scripted([("write_note", {"text": "a"})], "done"))
    head = rt.start("notes", "go")
    first = rt.queue.pending()[0]
    rt.drive()
    before = rt.store.list_events("dev", head.run_id, limit=1000)
    for attempt in (0, 1, 5):
        assert rt.deliver(first, attempt).outcome == "stale"
    assert rt.store.list_events("dev", head.run_id, limit=1000) == before
    assert len(effects) == 1


def test_a_concurrent_duplicate_is_refused_while_the_lease_is_live() -> None:
    rt = make(scripted("done"))
    head = rt.start("notes", "go")
    task = rt.queue.pending()[0]
    d = Delivery(tenant="dev", run_id=head.run_id, step=1, task_name=task.name, attempt=0, instance="a")
    from agex.engine import decisions

    rt.store.update_run("dev", head.run_id, lambda h: decisions.claim(h, d, rt.clock.now(), 60))
    with pytest.raises(LeaseHeld):
        rt.deliver(task, attempt=0, instance="b")
    # a later attempt of the same task proves nothing: Cloud Tasks dispatches one while the first still
    # runs (RunTask, a retry after the dispatch deadline); it is refused too while the lease is live
    with pytest.raises(LeaseHeld):
        rt.deliver(task, attempt=1, instance="b")
    rt.clock.advance(59)
    with pytest.raises(LeaseHeld):
        rt.deliver(task, attempt=2, instance="b")
    # the holder never renewed: past the lease it is presumed dead and the step is taken over
    rt.clock.advance(2)
    assert rt.deliver(task, attempt=3, instance="b").outcome == "finished"
    started = [e for e in rt.store.list_events("dev", head.run_id, limit=100) if e.kind == EventKind.step_started]
    assert started[-1].data["previous_owner"] == d.owner and started[-1].data["resumed"] is True
    assert started[-1].data["previous_until"] == "2026-01-01T00:01:00+00:00"


def test_a_live_holder_renews_its_lease_and_keeps_the_step() -> None:
    from agex.engine import decisions
    from agex.engine.lease import LeaseKeeper

    rt = make(scripted("done"))
    head = rt.start("notes", "go")
    task = rt.queue.pending()[0]
    d = Delivery(tenant="dev", run_id=head.run_id, step=1, task_name=task.name, attempt=0, instance="a")
    rt.store.update_run("dev", head.run_id, lambda h: decisions.claim(h, d, rt.clock.now(), 60))
    keeper = LeaseKeeper(rt.store, rt.clock, d, 60)
    for _ in range(5):  # five minutes of a long tool call, renewed every 20 s
        rt.clock.advance(20)
        assert keeper.renew()
        with pytest.raises(LeaseHeld):
            rt.deliver(task, attempt=1, instance="b")
    lease = rt.store.get_run("dev", head.run_id).lease  # type: ignore[union-attr]
    assert lease is not None and lease.owner == d.owner and lease.until == rt.clock.now() + timedelta(seconds=60)
    # renewals write the head only: no event per beat
    assert [e.kind for e in rt.store.list_events("dev", head.run_id)][-1] == EventKind.step_started
    # it stops renewing (it died): past the lease, the step is taken over, and the keeper learns so
    rt.clock.advance(61)
    assert rt.deliver(task, attempt=2, instance="b").outcome == "finished"
    assert not keeper.renew()


def deliver_dying_at_write(rt: InMemoryRuntime, task: StepTask, n: int) -> None:
    """Deliver ``task`` with the instance lost at its ``n``-th store write, as a crash would."""
    original = rt.store.update_run
    calls = {"n": 0}

    def flaky(tenant: str, run_id: str, mutate: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == n:
            raise RuntimeError("instance lost")
        return original(tenant, run_id, mutate)

    rt.store.update_run = flaky  # type: ignore[method-assign]
    try:
        with pytest.raises(RuntimeError):
            rt.deliver(task, attempt=0)
    finally:
        rt.store.update_run = original  # type: ignore[method-assign]


def test_a_crash_after_the_model_call_reuses_the_recorded_response() -> None:
    model = scripted([("write_note", {"text": "a"})], "done")
    rt = make(model)
    head = rt.start("notes", "go")
    task = rt.queue.pending()[0]

    deliver_dying_at_write(rt, task, 3)  # claim, model response, then the tool result write dies
    rt.clock.advance(61)  # the dead attempt's lease expires
    rt.deliver(task, attempt=1)
    rt.drive()
    final = rt.store.get_run("dev", head.run_id)
    assert final is not None and final.status == RunStatus.succeeded
    assert model.calls == 2  # step 1 once (reused on retry), step 2 once
    assert effects == [f"{head.run_id}:1:call-0"] * 2  # idempotent tool re-called with the same key


def test_a_non_idempotent_tool_is_never_called_twice_blindly() -> None:
    rt = make(scripted([("send_fax", {"text": "a"})], "done"), tools=(send_fax,))
    head = rt.start("notes", "go")
    task = rt.queue.pending()[0]
    deliver_dying_at_write(rt, task, 3)  # claim, model response, then the tool result write dies
    with pytest.raises(LeaseHeld):  # the retry waits for the dead attempt's lease to expire
        rt.deliver(task, attempt=1)
    rt.clock.advance(61)
    rt.deliver(task, attempt=2)
    # not called again: the run waits for a human to say what became of the call
    waiting = rt.store.get_run("dev", head.run_id)
    assert waiting is not None and waiting.status == RunStatus.waiting_approval
    approval = rt.store.get_approval("dev", waiting.approval_id or "")
    assert approval is not None and approval.kind == "reconcile"
    assert len(effects) == 1


@pytest.mark.parametrize(("limits", "code"), [
    ({"max_steps": 2}, "max_steps"),
    ({"max_tokens": 50}, "max_tokens"),
    ({"max_cost_usd": 1e-9}, "max_cost"),
])
def test_a_run_over_a_limit_fails_naming_the_limit(limits: dict[str, Any], code: str) -> None:
    rt = make(scripted([("write_note", {"text": "again"})]), **limits)
    head = rt.run("notes", "loop forever")
    assert head.status == RunStatus.failed
    assert head.error is not None and head.error.code == code


def test_wall_time_and_expiry_are_enforced_by_the_runtime() -> None:
    rt = make(scripted([("write_note", {"text": "a"})], "done"), max_wall_time_s=10)
    head = rt.start("notes", "go")
    rt.clock.advance(11)
    rt.drive()
    final = rt.store.get_run("dev", head.run_id)
    assert final is not None and final.error is not None and final.error.code == "max_wall_time"

    rt = make(scripted("done"))
    head = rt.start("notes", "go")
    rt.clock.advance(7 * 24 * 3600 + 1)
    assert rt.service.get(rt_caller(), head.run_id).status == RunStatus.expired
    rt.drive()
    final = rt.store.get_run("dev", head.run_id)
    assert final is not None and final.status == RunStatus.expired


def rt_caller() -> Any:
    from agex.testing.harness import DEFAULT_CALLER

    return DEFAULT_CALLER


def test_the_sweep_reenqueues_a_run_whose_task_was_lost() -> None:
    rt = make(scripted([("write_note", {"text": "a"})], "done"))
    head = rt.start("notes", "go")
    lost = rt.queue.pending()[0]
    rt.queue.drop(lost)
    assert rt.service.sweep().reenqueued == 0  # too recent: the task may still be on its way
    rt.clock.advance(600)
    assert rt.service.sweep().reenqueued == 1
    assert rt.service.sweep().reenqueued == 0  # the new task is live
    rt.drive()
    final = rt.store.get_run("dev", head.run_id)
    assert final is not None and final.status == RunStatus.succeeded
    assert rt.deliver(lost).outcome == "stale"


def test_cancel_stops_the_run_and_later_tasks_are_acknowledged() -> None:
    rt = make(scripted([("write_note", {"text": "a"})]))
    head = rt.start("notes", "go")
    rt.queue.deliver_due(rt.clock.now(), lambda t, a: (rt.deliver(t, a), True)[1])
    cancelled = rt.service.cancel(rt_caller(), head.run_id)
    assert cancelled.status == RunStatus.cancelled
    rt.drive()
    final = rt.store.get_run("dev", head.run_id)
    assert final is not None and final.status == RunStatus.cancelled and final.step == 1


def test_test_model_calls_every_tool_then_answers() -> None:
    rt = make(TestModel(final_text="fine", args_for=lambda name: {"text": name}))
    head = rt.run("notes", "hello")
    assert head.status == RunStatus.succeeded and head.result == "fine"
    assert len(effects) == 1


def test_a_tool_error_goes_back_to_the_model_and_the_run_continues() -> None:
    rt = make(scripted([("write_note", {"wrong": 1})], [("no_such_tool", {})], "recovered"))
    head = rt.run("notes", "go")
    assert head.status == RunStatus.succeeded
    results = [e.data for e in rt.store.list_events("dev", head.run_id, limit=100) if e.kind == EventKind.tool_result]
    assert [r["ok"] for r in results] == [False, False]
    assert "invalid arguments for write_note" in results[0]["output"]["error"]
    assert "unknown tool" in results[1]["output"]["error"]


def test_step_task_names_are_deterministic() -> None:
    task = StepTask(tenant="t", run_id="run_x", step=3)
    assert task.name == "t--run_x--s000003"
    assert StepTask(tenant="t", run_id="run_x", step=3, generation=2).name == "t--run_x--s000003-g2"


def test_a_run_of_an_agent_no_longer_deployed_fails_clearly() -> None:
    rt = make(scripted("done"))
    head = rt.start("notes", "go")
    rt.runner.agents = type(rt.agents)([])  # a redeploy without the agent
    rt.drive()
    final = rt.store.get_run("dev", head.run_id)
    assert final is not None and final.status == RunStatus.failed
    assert final.error is not None and "not deployed" in final.error.message
