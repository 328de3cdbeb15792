"""Two live attempts of one step, on the in-memory ports: Cloud Tasks dispatches a task again while an
attempt still runs (``RunTask``, a retry after the dispatch deadline). The newer attempt never takes a
live lease; only an expired one is taken over; and an attempt that lost its lease during a tool call
still records what the call did, which settles the call's reconciliation by the facts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel

from agex.core.agent import Agent
from agex.core.approval import ApprovalStatus, Decision
from agex.core.errors import LeaseHeld, LeaseLost
from agex.core.messages import FunctionCall
from agex.core.run import EventKind, RunError, RunHead, RunStatus
from agex.engine import decisions
from agex.engine.approvals import DecideRequest
from agex.engine.decisions import Delivery
from agex.engine.stepper import Outcome, StepResult
from agex.ports.auth import Caller
from agex.ports.task_queue import StepTask
from agex.testing.harness import InMemoryRuntime
from agex.testing.models import scripted
from agex.tools import ToolContext, tool

OPERATOR = Caller("dev", "ops@example.com")
LEASE = 60.0


class Transfer(BaseModel):
    to: str
    amount: int


transfers: list[str] = []
during: list[Callable[[], None]] = []
"""What happens in the rest of the system while the tool call is under way (run in the tool's thread)."""


@tool(idempotent=False, timeout_s=600)
def transfer(args: Transfer, ctx: ToolContext) -> dict[str, Any]:
    """Transfer money; not idempotent."""
    while during:
        during.pop(0)()
    transfers.append(ctx.idempotency_key)
    return {"transferred": args.amount, "to": args.to, "reference": "TX-1"}


@pytest.fixture(autouse=True)
def _clear() -> None:
    transfers.clear()
    during.clear()


def runtime() -> tuple[InMemoryRuntime, RunHead, StepTask]:
    agent = Agent(name="bank", instructions="b", tools=(transfer,), operators=("ops@example.com",))
    rt = InMemoryRuntime([agent], scripted([("transfer", {"to": "acme", "amount": 500})], "done"),
                         lease_seconds=LEASE)
    run = rt.start("bank", "transfer 500 to acme")
    (task,) = rt.queue.pending()
    assert isinstance(task, StepTask)
    return rt, run, task


def kinds(rt: InMemoryRuntime, run_id: str) -> list[EventKind]:
    return [e.kind for e in rt.store.list_events("dev", run_id, limit=1000)]


def events_of(rt: InMemoryRuntime, run_id: str, kind: EventKind) -> list[Any]:
    return [e for e in rt.store.list_events("dev", run_id, limit=1000) if e.kind == kind]


def first_attempt(rt: InMemoryRuntime, task: StepTask) -> StepResult:
    result = rt.deliver(task, attempt=0, instance="first")
    assert isinstance(result, StepResult)
    return result


def test_a_second_dispatch_of_a_running_step_is_refused_and_nothing_is_reconciled() -> None:
    rt, run, task = runtime()
    refused: list[str] = []

    def run_task_again() -> None:  # RunTask: the same task, the next retry count, while the first runs
        with pytest.raises(LeaseHeld) as info:
            rt.deliver(task, attempt=1, instance="second")
        refused.append(info.value.message)
        rt.clock.advance(LEASE / 2)  # the call is slow, but the holder renews (see the keeper test)

    during.append(run_task_again)
    assert first_attempt(rt, task).outcome == Outcome.committed
    assert len(refused) == 1 and "is being worked by" in refused[0]
    rt.drive()
    assert rt.store.get_run("dev", run.run_id).status == RunStatus.succeeded  # type: ignore[union-attr]
    assert len(transfers) == 1
    assert EventKind.approval_requested not in kinds(rt, run.run_id)
    assert len(events_of(rt, run.run_id, EventKind.step_started)) == 2  # steps 1 and 2, once each


def take_over(rt: InMemoryRuntime, task: StepTask, attempt: int = 1) -> StepResult:
    """The first attempt stopped renewing (stalled, partitioned): its lease expires, and a new dispatch of
    the task takes the step over."""
    rt.clock.advance(LEASE + 1)
    result = rt.deliver(task, attempt=attempt, instance=f"taker{attempt}")
    assert isinstance(result, StepResult)
    return result


def test_takeover_after_expiry_opens_a_reconciliation_saying_what_is_known() -> None:
    rt, run, task = runtime()
    opened: list[StepResult] = []
    during.append(lambda: opened.append(take_over(rt, task)))
    lost = first_attempt(rt, task)
    assert opened[0].outcome == Outcome.waiting
    assert lost.outcome == Outcome.lease_lost
    approval = rt.store.list_approvals("dev")[0]
    assert approval.kind == "reconcile"
    assert "attempt dev--" in approval.reason and "#0@first announced the call at 2026-01-01T00:00:00+00:00" \
        in approval.reason
    assert "has not reported back; its lease expired at 2026-01-01T00:01:00+00:00" in approval.reason
    assert "#1@taker1 took the step over at 2026-01-01T00:01:01+00:00" in approval.reason
    assert "an attempt crashed" not in approval.reason


def test_a_late_result_settles_the_pending_reconciliation_and_the_run_goes_on_with_it() -> None:
    rt, run, task = runtime()
    during.append(lambda: take_over(rt, task))
    assert first_attempt(rt, task).outcome == Outcome.lease_lost
    # the first attempt's call completed: its result is a fact, recorded after the lease was lost
    (late,) = events_of(rt, run.run_id, EventKind.tool_late_result)
    assert late.data["ok"] is True and late.data["output"]["reference"] == "TX-1"
    assert late.data["owner"].endswith("#0@first")
    approval = rt.store.list_approvals("dev")[0]
    assert approval.status == ApprovalStatus.resolved and approval.resolution == Decision.done
    assert approval.decided_by == "agex" and "settled by the facts" in approval.comment
    assert approval.late_result is not None and approval.late_result["output"]["reference"] == "TX-1"
    head = rt.store.get_run("dev", run.run_id)
    assert head is not None and head.status == RunStatus.queued  # resumed: a task of a new generation waits
    rt.drive()
    final = rt.store.get_run("dev", run.run_id)
    assert final is not None and final.status == RunStatus.succeeded
    assert len(transfers) == 1
    (result,) = events_of(rt, run.run_id, EventKind.tool_result)
    assert result.data["output"] == {"transferred": 500, "to": "acme", "reference": "TX-1"}  # the real result


def test_a_late_result_after_the_operator_answered_retry_prevents_the_second_call() -> None:
    rt, run, task = runtime()

    def taken_over_and_answered() -> None:
        take_over(rt, task)
        head = rt.store.get_run("dev", run.run_id)
        assert head is not None and head.approval_id
        rt.approvals.decide(OPERATOR, head.approval_id, DecideRequest(decision=Decision.retry, comment="no record"))
        rt.deliver_decisions()

    during.append(taken_over_and_answered)
    assert first_attempt(rt, task).outcome == Outcome.lease_lost
    approval = rt.store.list_approvals("dev")[0]
    assert approval.resolution == Decision.retry and approval.decided_by == "ops@example.com"
    assert approval.late_result is not None and approval.late_result["ok"] is True  # what the operator did not know
    rt.drive()
    assert rt.store.get_run("dev", run.run_id).status == RunStatus.succeeded  # type: ignore[union-attr]
    assert len(transfers) == 1, "the call's known result wins over a retry decided without it"


def test_a_late_result_that_arrives_before_any_reconciliation_is_taken_as_the_result() -> None:
    rt, run, task = runtime()
    stalled = Delivery(tenant="dev", run_id=run.run_id, step=1, task_name=task.name, attempt=1, instance="stalled")

    def taken_over_by_an_attempt_that_stalls() -> None:
        rt.clock.advance(LEASE + 1)
        rt.store.update_run("dev", run.run_id, lambda h: decisions.claim(h, stalled, rt.clock.now(), LEASE))

    during.append(taken_over_by_an_attempt_that_stalls)
    assert first_attempt(rt, task).outcome == Outcome.lease_lost
    assert [e.data["ok"] for e in events_of(rt, run.run_id, EventKind.tool_late_result)] == [True]
    assert rt.store.list_approvals("dev") == []
    take_over(rt, task, attempt=2)  # the stalled one is presumed dead in turn
    rt.drive()
    assert rt.store.get_run("dev", run.run_id).status == RunStatus.succeeded  # type: ignore[union-attr]
    assert rt.store.list_approvals("dev") == [] and len(transfers) == 1


def test_a_late_result_written_while_the_reconciliation_is_being_opened_is_not_raced() -> None:
    rt, run, task = runtime()
    original_update = rt.store.update_run
    writes = {"n": 0}

    def dying(tenant: str, run_id: str, mutate: Any) -> Any:
        writes["n"] += 1
        if writes["n"] == 3:  # claim, model response + intent, then the first attempt is cut off
            raise RuntimeError("partitioned")
        return original_update(tenant, run_id, mutate)

    rt.store.update_run = dying  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        first_attempt(rt, task)
    rt.store.update_run = original_update  # type: ignore[method-assign]
    (intent,) = events_of(rt, run.run_id, EventKind.tool_intent)
    call = FunctionCall(id=intent.data["call_id"], name="transfer", args={"to": "acme", "amount": 500})
    original_read = rt.store.events_since_step
    reads = {"n": 0}

    def reading(tenant: str, run_id: str, step: int) -> Any:
        events = original_read(tenant, run_id, step)
        reads["n"] += 1
        if reads["n"] == 2:  # the taker read the events to open the reconciliation: the report lands now
            rt.store.update_run("dev", run.run_id, lambda h: decisions.record_late_result(
                h, intent.data["owner"], 1, call, True, {"reference": "TX-1"}, intent.seq, 0, None, rt.clock.now()))
        return events

    rt.store.events_since_step = reading  # type: ignore[method-assign]
    assert take_over(rt, task).outcome == Outcome.committed  # no reconciliation: the result is known
    assert reads["n"] == 3  # read again after the reconciliation's write was refused
    assert rt.store.list_approvals("dev") == []
    (result,) = events_of(rt, run.run_id, EventKind.tool_result)
    assert result.data["output"] == {"reference": "TX-1"}


def test_the_reconciliation_decision_refuses_events_it_did_not_see() -> None:
    rt, run, task = runtime()
    d = Delivery(tenant="dev", run_id=run.run_id, step=1, task_name=task.name, attempt=0, instance="a")
    claimed = rt.store.update_run("dev", run.run_id, lambda h: decisions.claim(h, d, rt.clock.now(), LEASE))
    head = claimed.head
    assert head is not None
    policy = rt.agents.get("bank").reconcile_policy("transfer")
    call = FunctionCall(id="call-0", name="transfer", args={"to": "x", "amount": 1})
    with pytest.raises(decisions.EventsMoved):
        decisions.request_approval(head, d.owner, 1, call, policy, rt.clock.now(), "reconcile", 0, seen_seq=head.seq - 1)
    assert decisions.request_approval(head, d.owner, 1, call, policy, rt.clock.now(), "reconcile", 0,
                                      seen_seq=head.seq).value is not None


def test_a_call_that_returns_after_its_run_was_cancelled_is_still_recorded() -> None:
    rt, run, task = runtime()
    during.append(lambda: rt.service.cancel(Caller("dev", "dev@example.com"), run.run_id))
    assert first_attempt(rt, task).outcome == Outcome.lease_lost
    head = rt.store.get_run("dev", run.run_id)
    assert head is not None and head.status == RunStatus.cancelled
    assert kinds(rt, run.run_id)[-2:] == [EventKind.run_cancelled, EventKind.tool_late_result]
    assert len(transfers) == 1


def _claimed(rt: InMemoryRuntime, run: RunHead, task: StepTask) -> Delivery:
    d = Delivery(tenant="dev", run_id=run.run_id, step=1, task_name=task.name, attempt=0, instance="a")
    rt.store.update_run("dev", run.run_id, lambda h: decisions.claim(h, d, rt.clock.now(), LEASE))
    return d


def _until(rt: InMemoryRuntime, run: RunHead) -> Any:
    lease = rt.store.get_run("dev", run.run_id).lease  # type: ignore[union-attr]
    return lease.until if lease else None


def _eventually(check: Callable[[], bool], timeout: float = 5) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.01)


def test_the_heartbeat_renews_in_the_background_and_stops_when_the_lease_is_released() -> None:
    from datetime import timedelta

    from agex.engine.lease import LeaseKeeper

    rt, run, task = runtime()
    d = _claimed(rt, run, task)
    with LeaseKeeper(rt.store, rt.clock, d, LEASE, every_seconds=0.01) as keeper:
        for _ in range(3):  # however long the call: each beat pushes the expiry a lease ahead
            rt.clock.advance(LEASE - 1)
            _eventually(lambda: _until(rt, run) == rt.clock.now() + timedelta(seconds=LEASE))
        with pytest.raises(LeaseHeld):
            rt.deliver(task, attempt=1, instance="b")
        # the attempt's last write releases the lease: the heartbeat ends by itself, and loses nothing
        rt.store.update_run("dev", run.run_id, lambda h: decisions.fail_step(
            h, d.owner, 1, RunError(code="internal", message="stop"), rt.clock.now()))
        assert keeper._thread is not None
        keeper._thread.join(timeout=5)
        assert not keeper._thread.is_alive() and keeper.lost is None and keeper.renewals >= 3


def test_a_stalled_heartbeat_lets_the_lease_expire_and_the_keeper_sees_the_takeover(tmp_path: Any) -> None:
    from agex.adapters.failpoints import FileFailpoints
    from agex.engine.lease import LeaseKeeper

    failpoints = tmp_path / "failpoints"
    failpoints.write_text("step.lease_renewal stall\n")
    rt, run, task = runtime()
    d = _claimed(rt, run, task)
    with LeaseKeeper(rt.store, rt.clock, d, LEASE, every_seconds=0.01,
                     failpoints=FileFailpoints(str(failpoints))) as keeper:
        _eventually(lambda: failpoints.read_text() == "")
        rt.clock.advance(LEASE + 1)
        taker = Delivery(tenant="dev", run_id=run.run_id, step=1, task_name=task.name, attempt=1, instance="b")
        rt.store.update_run("dev", run.run_id, lambda h: decisions.claim(h, taker, rt.clock.now(), LEASE))
        assert not keeper.renew() and keeper.lost is not None and "took the lease over" in keeper.lost
        with pytest.raises(LeaseLost):
            keeper.check()
