"""Approvals and timers in the step protocol, on the in-memory ports with a manual clock."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from agex.core.agent import Agent
from agex.core.approval import (
    DECISIONS_TOPIC,
    ApprovalPolicy,
    ApprovalStatus,
    Condition,
    Decision,
    DecisionMessage,
)
from agex.core.errors import NotDue
from agex.core.messages import ModelRequest
from agex.core.run import EventKind, RunStatus
from agex.engine.approvals import Applied, DecideRequest
from agex.engine.decisions import Delivery
from agex.engine.guarding import model_view
from agex.ports.auth import Caller
from agex.ports.task_queue import ApprovalExpiryTask, StepTask
from agex.testing import FunctionModel
from agex.testing.harness import DEFAULT_CALLER, InMemoryRuntime
from agex.testing.models import scripted
from agex.tools import ContinueLater, RetryLater, ToolContext, continue_later, tool

MANAGER = Caller("dev", "manager@example.com")


class Payment(BaseModel):
    to: str
    amount: float
    card: str = ""


paid: list[tuple[str, float, str]] = []
attempts: list[str] = []


@tool(idempotent=False)
def pay(args: Payment, ctx: ToolContext) -> dict[str, Any]:
    """Pay someone; not idempotent."""
    paid.append((args.to, args.amount, ctx.idempotency_key))
    return {"paid": args.amount}


class Ping(BaseModel):
    host: str


@tool
def ping(args: Ping, ctx: ToolContext) -> dict[str, Any]:
    """Ping a host; rate limited the first time."""
    attempts.append(ctx.idempotency_key)
    if len(attempts) == 1:
        raise RetryLater(30, "429 Too Many Requests; Retry-After: 30")
    return {"up": True}


@tool
def check_later(args: Ping, ctx: ToolContext) -> ContinueLater:
    """Check a host, then look again in an hour."""
    return ContinueLater(3600, {"checked": args.host})


@pytest.fixture(autouse=True)
def _clear() -> None:
    paid.clear()
    attempts.clear()


def payer(**policy: Any) -> InMemoryRuntime:
    settings = {"tool": "pay", "when": (Condition(field="amount", op="gt", value=100),),
                "approvers": ("manager@example.com", "*@finance.example.com"), "redact": ("card",), **policy}
    agent = Agent(name="payer", instructions="pay", tools=(pay,), approvals=(ApprovalPolicy(**settings),))
    model = scripted([("pay", {"to": "acme", "amount": 250.0, "card": "4111-1111"})], "paid")
    return InMemoryRuntime([agent], model)


def pending_approval(rt: InMemoryRuntime, run_id: str) -> Any:
    head = rt.store.get_run("dev", run_id)
    assert head is not None and head.status == RunStatus.waiting_approval and head.approval_id
    approval = rt.store.get_approval("dev", head.approval_id)
    assert approval is not None
    return approval


def kinds(rt: InMemoryRuntime, run_id: str) -> list[str]:
    return [e.kind.value for e in rt.store.list_events("dev", run_id, limit=1000)]


def test_a_covered_call_waits_with_only_its_expiry_task_queued() -> None:
    rt = payer()
    run = rt.start("payer", "pay acme")
    rt.drive()
    approval = pending_approval(rt, run.run_id)
    assert paid == []
    assert [type(t) for t in rt.queue.pending()] == [ApprovalExpiryTask]
    assert rt.queue.pending()[0].schedule_at == approval.expires_at
    assert approval.arguments == {"to": "acme", "amount": 250.0, "card": "[redacted]"}
    requested = rt.bus.on("agex-approval-requests")
    assert len(requested) == 1 and requested[0].message["arguments"]["card"] == "[redacted]"
    assert "call_arguments" not in requested[0].message
    # no intent was written for the held call: it has not started
    assert EventKind.tool_intent.value not in kinds(rt, run.run_id)


def test_an_uncovered_call_runs_without_approval() -> None:
    agent = Agent(name="payer", instructions="pay", tools=(pay,), approvals=(ApprovalPolicy(
        tool="pay", when=(Condition(field="amount", op="gt", value=100),), approvers=("manager@example.com",)),))
    rt = InMemoryRuntime([agent], scripted([("pay", {"to": "acme", "amount": 20.0})], "paid"))
    assert rt.run("payer", "pay").status == RunStatus.succeeded
    assert len(paid) == 1


def test_approve_resumes_and_the_tool_runs_once() -> None:
    rt = payer()
    run = rt.start("payer", "pay acme")
    rt.drive()
    approval = pending_approval(rt, run.run_id)
    rt.approvals.decide(MANAGER, approval.approval_id, DecideRequest(decision=Decision.approve, comment="ok"))
    rt.drive()
    head = rt.store.get_run("dev", run.run_id)
    assert head is not None and head.status == RunStatus.succeeded
    assert [(to, amount) for to, amount, _ in paid] == [("acme", 250.0)]
    settled = rt.store.get_approval("dev", approval.approval_id)
    assert settled is not None and settled.status == ApprovalStatus.approved
    assert settled.decided_by == "manager@example.com" and settled.comment == "ok"
    decided = [e for e in rt.store.list_events("dev", run.run_id, limit=100) if e.kind == EventKind.approval_decided]
    assert decided[0].data["by"] == "manager@example.com" and decided[0].data["decision"] == "approved"
    # the model was told who approved
    result = [e for e in rt.store.list_events("dev", run.run_id, limit=100) if e.kind == EventKind.tool_result]
    assert model_view(result[0].data, "output")["approval"] == {"decision": "approved", "by": "manager@example.com",
                                                    "comment": "ok"}
    assert rt.queue.pending() == [] or all(isinstance(t, ApprovalExpiryTask) for t in rt.queue.pending())


def test_the_expiry_task_after_a_decision_changes_nothing() -> None:
    rt = payer()
    run = rt.start("payer", "pay acme")
    rt.drive()
    approval = pending_approval(rt, run.run_id)
    rt.approvals.decide(MANAGER, approval.approval_id, DecideRequest(decision=Decision.approve))
    rt.drive()
    rt.clock.advance(25 * 3600)
    rt.drive()
    outcome = rt.applier.expire("dev", run.run_id, approval.approval_id)
    assert outcome.result == Applied.not_pending
    assert rt.store.get_approval("dev", approval.approval_id).status == ApprovalStatus.approved  # type: ignore[union-attr]
    assert len(paid) == 1


def test_reject_tells_the_model_the_reason_and_the_tool_never_runs() -> None:
    seen: list[Any] = []

    def model(request: ModelRequest) -> Any:
        k = sum(1 for m in request.messages if m.role == "model")
        if k == 0:
            return [("pay", {"to": "acme", "amount": 250.0})]
        seen.append(request.messages[-1].parts[0].function_response.response)  # type: ignore[union-attr]
        return "not paid"

    agent = Agent(name="payer", instructions="pay", tools=(pay,),
                  approvals=(ApprovalPolicy(tool="pay", approvers=("manager@example.com",)),))
    rt = InMemoryRuntime([agent], FunctionModel(model))
    run = rt.start("payer", "pay")
    rt.drive()
    approval = pending_approval(rt, run.run_id)
    rt.approvals.decide(MANAGER, approval.approval_id,
                        DecideRequest(decision=Decision.reject, comment="vendor not on the approved list"))
    rt.drive()
    assert paid == []
    assert rt.store.get_run("dev", run.run_id).status == RunStatus.succeeded  # type: ignore[union-attr]
    assert "manager@example.com rejected it: vendor not on the approved list" in seen[0]["error"]


def test_edited_arguments_are_used_and_redacted_fields_keep_their_values() -> None:
    rt = payer(allow_edits=True, editable=("amount",))
    run = rt.start("payer", "pay acme")
    rt.drive()
    approval = pending_approval(rt, run.run_id)
    rt.approvals.decide(MANAGER, approval.approval_id, DecideRequest(
        decision=Decision.approve, arguments={"to": "acme", "amount": 200.0, "card": "[redacted]"}))
    rt.drive()
    assert [(to, amount) for to, amount, _ in paid] == [("acme", 200.0)]
    settled = rt.store.get_approval("dev", approval.approval_id)
    assert settled is not None and settled.edited_arguments == {"to": "acme", "amount": 200.0, "card": "[redacted]"}


def test_expiry_continues_as_after_a_rejection() -> None:
    rt = payer(expires_after_s=600)
    run = rt.start("payer", "pay acme")
    rt.drive()
    approval = pending_approval(rt, run.run_id)
    rt.clock.advance(599)
    rt.drive()
    assert rt.store.get_run("dev", run.run_id).status == RunStatus.waiting_approval  # type: ignore[union-attr]
    rt.clock.advance(2)
    rt.drive()
    assert rt.store.get_approval("dev", approval.approval_id).status == ApprovalStatus.expired  # type: ignore[union-attr]
    head = rt.store.get_run("dev", run.run_id)
    assert head is not None and head.status == RunStatus.succeeded and paid == []


def test_expiry_can_fail_the_run() -> None:
    rt = payer(expires_after_s=60, on_expiry="fail")
    run = rt.start("payer", "pay acme")
    rt.drive()
    rt.clock.advance(61)
    rt.drive()
    head = rt.store.get_run("dev", run.run_id)
    assert head is not None and head.status == RunStatus.failed and head.error is not None
    assert head.error.code == "approval_expired"
    assert any(m.message["status"] == "failed" for m in rt.bus.on("agex-run-events"))


def test_an_early_expiry_task_is_retried_later() -> None:
    rt = payer(expires_after_s=600)
    run = rt.start("payer", "pay acme")
    rt.drive()
    approval = pending_approval(rt, run.run_id)
    with pytest.raises(NotDue):
        rt.applier.expire("dev", run.run_id, approval.approval_id)


def decision(rt: InMemoryRuntime, approval_id: str, decision_id: str, verdict: Decision = Decision.approve,
             principal: str = "manager@example.com", **extra: Any) -> DecisionMessage:
    """A decision as a decision source (a chat bot, say) publishes it: signed with the runtime's key."""
    return rt.signer.sign(DecisionMessage(decision_id=decision_id, tenant="dev", approval_id=approval_id,
                                          decision=verdict, principal=principal, decided_at=rt.clock.now(), **extra))


def test_a_decision_delivered_twice_is_applied_once() -> None:
    rt = payer()
    run = rt.start("payer", "pay acme")
    rt.drive()
    approval = pending_approval(rt, run.run_id)
    message = decision(rt, approval.approval_id, "dec_1")
    assert rt.applier.apply(message).result == Applied.applied
    assert rt.applier.apply(message).result == Applied.duplicate
    rt.drive()
    assert rt.applier.apply(message).result == Applied.duplicate
    assert len(paid) == 1
    assert kinds(rt, run.run_id).count("approval_decided") == 1


def test_a_second_decision_is_late_and_recorded_once() -> None:
    rt = payer()
    run = rt.start("payer", "pay acme")
    rt.drive()
    approval = pending_approval(rt, run.run_id)
    assert rt.applier.apply(decision(rt, approval.approval_id, "dec_1")).result == Applied.applied
    late = decision(rt, approval.approval_id, "dec_2", Decision.reject, "ann@finance.example.com", comment="no")
    assert rt.applier.apply(late).result == Applied.late
    assert rt.applier.apply(late).result == Applied.late
    settled = rt.store.get_approval("dev", approval.approval_id)
    assert settled is not None and settled.status == ApprovalStatus.approved
    assert [d["decision_id"] for d in settled.late_decisions] == ["dec_2"]
    rt.drive()
    assert len(paid) == 1


def test_the_applier_refuses_non_approvers_and_four_eyes() -> None:
    rt = payer()
    run = rt.start("payer", "pay acme")
    rt.drive()
    approval = pending_approval(rt, run.run_id)
    refused = rt.applier.apply(decision(rt, approval.approval_id, "dec_x", principal="eve@example.com"))
    assert refused.result == Applied.refused and "not an approver" in refused.detail
    own = rt.applier.apply(decision(rt, approval.approval_id, "dec_y", principal=DEFAULT_CALLER.principal))
    assert own.result == Applied.refused
    # the starter is not an approver here; with a pattern that matches them, four eyes still refuses
    rt2 = payer(approvers=("*@example.com",))
    run2 = rt2.start("payer", "pay acme")
    rt2.drive()
    approval2 = pending_approval(rt2, run2.run_id)
    refused2 = rt2.applier.apply(decision(rt2, approval2.approval_id, "dec_z", principal=DEFAULT_CALLER.principal))
    assert refused2.result == Applied.refused and "four-eyes" in refused2.detail
    assert pending_approval(rt2, run2.run_id).status == ApprovalStatus.pending


def test_cancel_cancels_the_approval_and_a_later_decision_changes_nothing() -> None:
    rt = payer()
    run = rt.start("payer", "pay acme")
    rt.drive()
    approval = pending_approval(rt, run.run_id)
    rt.service.cancel(DEFAULT_CALLER, run.run_id)
    assert rt.store.get_approval("dev", approval.approval_id).status == ApprovalStatus.cancelled  # type: ignore[union-attr]
    assert rt.applier.apply(decision(rt, approval.approval_id, "dec_1")).result == Applied.not_pending
    rt.clock.advance(25 * 3600)
    rt.drive()
    assert paid == [] and rt.store.get_run("dev", run.run_id).status == RunStatus.cancelled  # type: ignore[union-attr]


def test_a_retried_step_after_the_pause_repairs_the_announcement_only() -> None:
    rt = payer()
    run = rt.start("payer", "pay acme")
    rt.drive()
    approval = pending_approval(rt, run.run_id)
    # Cloud Tasks retries step 1 (its answer was lost): the run is waiting, so nothing runs
    result = rt.deliver(StepTask(tenant="dev", run_id=run.run_id, step=1), attempt=1)
    assert result.outcome.value == "stale"  # type: ignore[union-attr]
    assert len(rt.bus.on("agex-approval-requests")) == 2  # at least once
    assert pending_approval(rt, run.run_id).approval_id == approval.approval_id
    assert len(rt.queue.pending()) == 1


def test_a_rate_limited_tool_resumes_after_retry_after_without_a_blind_repeat() -> None:
    agent = Agent(name="pinger", instructions="ping", tools=(ping,))
    rt = InMemoryRuntime([agent], scripted([("ping", {"host": "db"})], "db is up"))
    run = rt.start("pinger", "is db up?")
    rt.drive()
    head = rt.store.get_run("dev", run.run_id)
    assert head is not None and head.status == RunStatus.waiting_timer
    assert [t.schedule_at for t in rt.queue.pending()] == [head.wake_at]
    rt.clock.advance(29)
    rt.drive()
    assert len(attempts) == 1
    rt.clock.advance(2)
    rt.drive()
    head = rt.store.get_run("dev", run.run_id)
    assert head is not None and head.status == RunStatus.succeeded and len(attempts) == 2
    assert "tool_deferred" in kinds(rt, run.run_id)


def test_a_non_idempotent_tool_that_asked_to_retry_is_not_uncertain() -> None:
    calls: list[int] = []

    @tool(idempotent=False)
    def book(args: Ping, ctx: ToolContext) -> dict[str, Any]:
        """Book a slot."""
        calls.append(1)
        if len(calls) == 1:
            raise RetryLater(5)
        return {"booked": True}

    rt = InMemoryRuntime([Agent(name="booker", instructions="book", tools=(book,))],
                         scripted([("book", {"host": "x"})], "booked"))
    run = rt.start("booker", "book")
    rt.drive()
    rt.clock.advance(6)
    rt.drive()
    assert rt.store.get_run("dev", run.run_id).status == RunStatus.succeeded  # type: ignore[union-attr]
    assert len(calls) == 2


def test_continue_later_parks_the_run_until_its_timer() -> None:
    agent = Agent(name="watcher", instructions="watch", tools=(check_later,))
    rt = InMemoryRuntime([agent], scripted([("check_later", {"host": "db"})], "checked twice"))
    run = rt.start("watcher", "watch db")
    rt.drive()
    head = rt.store.get_run("dev", run.run_id)
    assert head is not None and head.status == RunStatus.waiting_timer and head.step == 1
    assert "timer_set" in kinds(rt, run.run_id)
    # an early delivery of the timer's task is refused for a retry, not run
    task = rt.queue.pending()[0]
    assert isinstance(task, StepTask)
    with pytest.raises(NotDue):
        rt.runner.run(Delivery(tenant="dev", run_id=run.run_id, step=2, task_name=task.name, attempt=0,
                               instance="x"))
    rt.clock.advance(3600)
    rt.drive()
    assert rt.store.get_run("dev", run.run_id).status == RunStatus.succeeded  # type: ignore[union-attr]


def test_the_builtin_continue_later_tool() -> None:
    agent = Agent(name="waiter", instructions="wait", tools=(continue_later,))
    rt = InMemoryRuntime([agent], scripted([("continue_later", {"seconds": 7200, "reason": "shipment"})], "done"))
    run = rt.start("waiter", "check the shipment again in 2 hours")
    rt.drive()
    head = rt.store.get_run("dev", run.run_id)
    assert head is not None and head.status == RunStatus.waiting_timer
    assert head.wake_at is not None and (head.wake_at - head.updated_at).total_seconds() == 7200
    rt.clock.advance(7200)
    rt.drive()
    assert rt.store.get_run("dev", run.run_id).status == RunStatus.succeeded  # type: ignore[union-attr]


def test_the_sweep_expires_an_approval_whose_expiry_task_was_lost() -> None:
    rt = payer(expires_after_s=60)
    run = rt.start("payer", "pay acme")
    rt.drive()
    approval = pending_approval(rt, run.run_id)
    for task in rt.queue.pending():
        rt.queue.drop(task)
    rt.clock.advance(60 + 400)
    assert rt.applier.sweep(rt.service.sweep_after) == 1
    rt.drive()
    assert rt.store.get_approval("dev", approval.approval_id).status == ApprovalStatus.expired  # type: ignore[union-attr]
    assert rt.store.get_run("dev", run.run_id).status == RunStatus.succeeded  # type: ignore[union-attr]


def test_the_sweep_repairs_a_lost_timer_task() -> None:
    agent = Agent(name="watcher", instructions="watch", tools=(check_later,))
    rt = InMemoryRuntime([agent], scripted([("check_later", {"host": "db"})], "ok"))
    run = rt.start("watcher", "watch")
    rt.drive()
    for task in rt.queue.pending():
        rt.queue.drop(task)
    rt.clock.advance(3600 + 400)
    assert rt.service.sweep().reenqueued == 1
    rt.drive()
    assert rt.store.get_run("dev", run.run_id).status == RunStatus.succeeded  # type: ignore[union-attr]


def test_a_policy_must_name_a_tool_of_the_agent() -> None:
    with pytest.raises(ValueError, match="has no such tool"):
        Agent(name="x", instructions="x", tools=(pay,), approvals=(ApprovalPolicy(tool="nope", approvers=("a",)),))


def test_a_condition_on_an_unexpected_type_asks_a_human() -> None:
    assert Condition(field="amount", op="gt", value=100).holds({"amount": "lots"})
    assert not Condition(field="amount", op="gt", value=100).holds({})
    assert Condition(field="a.b", op="in", value=["x"]).holds({"a": {"b": "x"}})


def test_published_decisions_carry_the_schema_version() -> None:
    rt = payer()
    run = rt.start("payer", "pay acme")
    rt.drive()
    approval = pending_approval(rt, run.run_id)
    rt.approvals.decide(MANAGER, approval.approval_id, DecideRequest(decision=Decision.approve))
    (message,) = rt.bus.on(DECISIONS_TOPIC)
    assert message.message["type"] == "approval.decision" and message.message["version"] == 2
    assert message.message["source"] == "api" and message.message["signature"]
    assert message.attributes["type"] == "approval.decision"
