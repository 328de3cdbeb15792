"""The pure core of the step protocol, table by table: for every public function of
``agex.engine.decisions``, a head (and arguments) in, and out the new head's fields that matter, the events
appended, the value returned, or the exception raised. No I/O, no clock: heads are built directly and time
is a fixed datetime. Each row's id says what it proves."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import ANY

import pytest

from agex.core.approval import (
    REDACTED,
    Approval,
    ApprovalPolicy,
    ApprovalStatus,
    Decision,
    DecisionMessage,
    approval_id,
)
from agex.core.errors import Conflict, LeaseHeld, LeaseLost, NotDue, StaleDelivery
from agex.core.messages import FunctionCall, Message, ModelResponse, Part, TokenUsage
from agex.core.run import Event, EventKind, Lease, Limits, RunError, RunHead, RunStatus, Usage
from agex.engine import decisions
from agex.engine.conversation import Uncertainty
from agex.engine.decisions import (
    EXPIRED,
    SYSTEM,
    TIMER_TOLERANCE,
    ApprovalMoved,
    Claim,
    Delivery,
    EventsMoved,
    Late,
)
from agex.ports.checkpoint_store import Mutation

K = EventKind
T0 = datetime(2026, 1, 1, tzinfo=UTC)
"""When every run of these tables was created."""
RETENTION = timedelta(days=7)
LEASE = 60.0
RUN = "run_1"
TASK = "dev--run_1--s000001"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


NOW = at(600)
"""The time of most decisions: ten minutes into the run."""


# --- factories ---------------------------------------------------------------------------------------

def delivery(step: int = 1, attempt: int = 0, instance: str = "a", task: str | None = None) -> Delivery:
    return Delivery(tenant="dev", run_id=RUN, step=step, task_name=task or f"dev--run_1--s{step:06d}",
                    attempt=attempt, instance=instance)


A = delivery()
"""The attempt that holds (or takes) the lease of step 1 in most rows."""
B = delivery(attempt=1, instance="b")
"""A later attempt of the same task, elsewhere."""


def lease_of(d: Delivery = A, until: datetime = NOW + timedelta(seconds=LEASE)) -> Lease:
    return Lease(owner=d.owner, task=d.task_name, attempt=d.attempt, step=d.step, until=until)


def head(status: RunStatus = RunStatus.queued, step: int = 0, **changes: Any) -> RunHead:
    """A run of agent ``notes`` created at T0, with three events written (run_created and a step's worth)."""
    base = RunHead(run_id=RUN, tenant="dev", agent="notes", agent_version="1", principal="alice@example.com",
                   input="take notes", status=status, step=step, seq=3, created_at=T0, updated_at=at(1),
                   expire_at=T0 + RETENTION, trace="00-trace-span-01")
    return base.model_copy(update=changes)


def running(d: Delivery = A, until: datetime = NOW + timedelta(seconds=LEASE), **changes: Any) -> RunHead:
    """Step ``d.step`` in progress, leased to ``d`` until ``until``."""
    return head(RunStatus.running, **{"step": d.step - 1, "lease": lease_of(d, until), **changes})


CALL = FunctionCall(id="call-1", name="pay", args={"to": "acme", "amount": 250, "card": "4111"})
NEXT = FunctionCall(id="call-2", name="note", args={"text": "paid"})
POLICY = ApprovalPolicy(tool="pay", approvers=("lee@example.com",), redact=("card",), reason="over 100",
                        expires_after_s=3600)
APPROVAL_ID = approval_id(RUN, 1, CALL.id)
RECONCILE_ID = decisions.reconcile_approval_id(RUN, 1, CALL.id, 0)


def approval(kind: str = "approval", **changes: Any) -> Approval:
    """The pending approval of CALL in step 1 (a reconciliation of round 0 with ``kind="reconcile"``)."""
    base = Approval(approval_id=APPROVAL_ID if kind == "approval" else RECONCILE_ID, kind=kind, tenant="dev",
                    run_id=RUN, agent="notes", step=1, call_id=CALL.id, tool=CALL.name,
                    arguments={**CALL.args, "card": REDACTED}, call_arguments=dict(CALL.args), redact=["card"],
                    reason="over 100", approvers=["lee@example.com"], four_eyes=True, allow_edits=kind == "approval",
                    on_expiry="reject", requested_by="alice@example.com", created_at=at(60),
                    expires_at=at(3660), updated_at=at(60), expire_at=T0 + RETENTION)
    return base.model_copy(update=changes)


def waiting(a: Approval | None = None, **changes: Any) -> RunHead:
    """Step 1 parked on ``a`` (by default the pending approval of CALL)."""
    a = a or approval()
    return head(RunStatus.waiting_approval, step=0, approval_id=a.approval_id, wake_at=a.expires_at,
                generation=2, **changes)


def decision(d: Decision, comment: str = "", arguments: dict[str, Any] | None = None,
             by: str = "lee@example.com") -> DecisionMessage:
    return DecisionMessage(decision_id=f"dec-{d.value}", tenant="dev", approval_id=APPROVAL_ID, decision=d,
                           principal=by, comment=comment, arguments=arguments, decided_at=NOW)


def response(*calls: FunctionCall, text: str = "", tokens: tuple[int, int] = (100, 20)) -> ModelResponse:
    parts = [Part(text=text)] if text else []
    parts += [Part(function_call=c) for c in calls]
    return ModelResponse(message=Message(role="model", parts=parts),
                         usage=TokenUsage(input_tokens=tokens[0], output_tokens=tokens[1]),
                         model_version="gemini-x-001", finish_reason="STOP")


# --- expectations --------------------------------------------------------------------------------------

ABSENT = object()
"""In an expected event's data: the key is not there."""


@dataclass(frozen=True)
class Raises:
    error: type[BaseException]
    match: str | None = None


@dataclass(frozen=True)
class Out:
    """What a decision returns. ``head`` maps (dotted) field paths of the new head to their values; None means
    nothing is written at all. ``events``: kind and a subset of the data of each event appended, in order,
    all at ``step`` when given. ``approvals``: subsets of the approvals written in the same commit."""

    value: Any = None
    head: dict[str, Any] | None = field(default_factory=dict)
    events: tuple[tuple[EventKind, dict[str, Any]], ...] = ()
    step: int | None = None
    approvals: tuple[dict[str, Any], ...] = ()


def check_continues(seq: int, events: Any) -> None:
    """Events continue the sequence of the head they were decided on: no gap, no overlap."""
    assert [e.seq for e in events] == list(range(seq + 1, seq + 1 + len(events)))


def _get(obj: Any, path: str) -> Any:
    for name in path.split("."):
        obj = getattr(obj, name)
    return obj


def verify(call: Callable[[], Mutation[Any]], before: RunHead, now: datetime, expect: Out | Raises) -> Any:
    """Run one decision and hold it to its row; also the invariants of every mutation: events continue the
    head's sequence, are stamped ``now`` and carry the run's retention."""
    original = before.model_copy(deep=True)
    if isinstance(expect, Raises):
        with pytest.raises(expect.error, match=expect.match):
            call()
        assert before == original
        return None
    m = call()
    assert before == original, "a decision never changes the head it was given"
    assert m.value == expect.value
    if expect.head is None:
        assert m.head is None and list(m.events) == [] and list(m.approvals) == []
        return m
    assert m.head is not None
    for path, want in expect.head.items():
        assert _get(m.head, path) == want, path
    assert [e.kind for e in m.events] == [kind for kind, _ in expect.events]
    for e, (_, data) in zip(m.events, expect.events, strict=True):
        for key, want in data.items():
            assert e.data.get(key, ABSENT) == want, f"{e.kind.value}.{key}"
        assert e.at == now and e.expire_at == before.expire_at
        if expect.step is not None:
            assert e.step == expect.step
    check_continues(before.seq, m.events)
    assert m.head.seq == before.seq + len(m.events)
    if m.events:
        assert m.head.updated_at == now
    assert len(m.approvals) == len(expect.approvals)
    for written, want in zip(m.approvals, expect.approvals, strict=True):
        for path, value in want.items():
            assert _get(written, path) == value, f"approval.{path}"
    return m


def finished(status: RunStatus, **more: Any) -> dict[str, Any]:
    """A head that ended: no lease, nothing to wait for."""
    return {"status": status, "lease": None, "approval_id": None, "wake_at": None, **more}


# --- Delivery.owner -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("d", "owner"), [
    pytest.param(A, "dev--run_1--s000001#0@a", id="task, retry count and instance name one attempt"),
    pytest.param(delivery(attempt=7, instance="a"), "dev--run_1--s000001#7@a",
                 id="a later retry on the same instance is another owner"),
    pytest.param(delivery(step=3, instance="z"), "dev--run_1--s000003#0@z", id="another step's task"),
])
def test_delivery_owner(d: Delivery, owner: str) -> None:
    assert d.owner == owner


# --- finish ----------------------------------------------------------------------------------------------

ERROR = RunError(code="internal", message="stop")


@pytest.mark.parametrize(("before", "kwargs", "expect"), [
    pytest.param(running(usage=Usage(input_tokens=5, output_tokens=6, cost_usd=0.5, model_calls=1)),
                 {"status": RunStatus.succeeded, "result": "all noted"},
                 Out(Claim.finished, finished(RunStatus.succeeded, result="all noted", error=None, step=0),
                     ((K.run_finished, {"status": "succeeded", "result": "all noted", "error": None,
                                        "usage": {"input_tokens": 5, "output_tokens": 6, "cost_usd": 0.5,
                                                  "model_calls": 1}}),), step=0),
                 id="success: result kept, lease released, run_finished carries the usage"),
    pytest.param(running(), {"status": RunStatus.failed, "error": ERROR, "step": 1,
                             "extra": ((K.step_completed, {"done": True}),)},
                 Out(Claim.finished, finished(RunStatus.failed, result=None, error=ERROR),
                     ((K.step_completed, {"done": True}),
                      (K.run_finished, {"status": "failed", "error": ERROR.model_dump()})), step=1),
                 id="failure at a given step: the extra events come first, then run_finished"),
    pytest.param(waiting(), {"status": RunStatus.cancelled},
                 Out(Claim.finished, finished(RunStatus.cancelled), ((K.run_finished, {"status": "cancelled"}),),
                     step=0),
                 id="a waiting run: its approval and wake-up are dropped"),
])
def test_finish(before: RunHead, kwargs: dict[str, Any], expect: Out) -> None:
    verify(lambda: decisions.finish(before, NOW, **kwargs), before, NOW, expect)


# --- as_seen and expire ------------------------------------------------------------------------------------

SEEN_EXPIRED = {"status": RunStatus.expired, "lease": None, "error": EXPIRED, "approval_id": None, "wake_at": None}


@pytest.mark.parametrize(("before", "now", "seen"), [
    pytest.param(running(), NOW, None, id="within retention: the head as stored"),
    pytest.param(running(), T0 + RETENTION - timedelta(microseconds=1), None,
                 id="the last instant of retention: as stored"),
    pytest.param(running(), T0 + RETENTION, SEEN_EXPIRED, id="at expire_at: expired, lease gone"),
    pytest.param(waiting(), T0 + RETENTION + timedelta(days=3), SEEN_EXPIRED,
                 id="past retention while waiting for approval: expired, approval dropped"),
    pytest.param(head(RunStatus.waiting_timer, wake_at=at(900)), T0 + RETENTION, SEEN_EXPIRED,
                 id="past retention while waiting for a timer: expired, timer dropped"),
    pytest.param(head(RunStatus.succeeded, result="ok"), T0 + RETENTION + timedelta(days=1), None,
                 id="a finished run keeps its status and result past retention"),
    pytest.param(head(RunStatus.failed, error=ERROR), T0 + RETENTION + timedelta(days=1), None,
                 id="a failed run keeps its error past retention"),
])
def test_as_seen(before: RunHead, now: datetime, seen: dict[str, Any] | None) -> None:
    original = before.model_copy(deep=True)
    shown = decisions.as_seen(before, now)
    assert before == original, "as_seen writes nothing"
    if seen is None:
        assert shown is before
        return
    for path, want in seen.items():
        assert _get(shown, path) == want, path
    assert (shown.seq, shown.step, shown.updated_at) == (before.seq, before.step, before.updated_at)


@pytest.mark.parametrize(("before", "expect"), [
    pytest.param(head(RunStatus.queued), Out(Claim.finished, finished(RunStatus.expired, error=EXPIRED),
                                             ((K.run_finished, {"status": "expired",
                                                                "error": EXPIRED.model_dump()}),), step=0),
                 id="an unfinished run ends as expired"),
    pytest.param(waiting(), Out(Claim.finished, finished(RunStatus.expired, error=EXPIRED),
                                ((K.run_finished, {"status": "expired"}),)),
                 id="a run waiting for approval ends as expired, approval dropped"),
    pytest.param(running(), Out(Claim.finished, finished(RunStatus.expired), ((K.run_finished, {}),)),
                 id="a step in progress past retention: expired, its lease dropped"),
    pytest.param(head(RunStatus.succeeded), Out(None, None), id="a finished run: nothing written"),
    pytest.param(head(RunStatus.expired), Out(None, None), id="already expired: nothing written"),
])
def test_expire(before: RunHead, expect: Out) -> None:
    verify(lambda: decisions.expire(before, T0 + RETENTION), before, T0 + RETENTION, expect)


# --- claim -------------------------------------------------------------------------------------------------

def took(d: Delivery, now: datetime = NOW, **more: Any) -> dict[str, Any]:
    """The head after ``d`` took the lease at ``now``."""
    return {"status": RunStatus.running, "wake_at": None, "lease.owner": d.owner, "lease.task": d.task_name,
            "lease.attempt": d.attempt, "lease.step": d.step, "lease.until": now + timedelta(seconds=LEASE), **more}


def started(d: Delivery, **more: Any) -> tuple[EventKind, dict[str, Any]]:
    return (K.step_started, {"attempt": d.attempt, "task": d.task_name, "owner": d.owner, **more})


FRESH = {"resumed": False, "previous_owner": ABSENT, "previous_until": ABSENT}
LIVE_A = running(until=NOW + timedelta(seconds=1))
"""Step 1 leased to A, whose lease is still live at NOW."""
WALL = Limits(max_wall_time_s=3600)
D2 = delivery(step=2)


@pytest.mark.parametrize(("before", "d", "now", "expect"), [
    # fresh claims
    pytest.param(head(), A, NOW, Out(Claim.work, took(A, step=0, generation=0), (started(A, **FRESH),), step=1),
                 id="fresh claim of a queued run: lease taken, run running, step_started"),
    pytest.param(head(RunStatus.running, step=1), D2, NOW,
                 Out(Claim.work, took(D2, step=1), (started(D2, **FRESH),), step=2),
                 id="the next step after a commit (running, no lease)"),
    pytest.param(head(RunStatus.queued, generation=3), B, NOW,
                 Out(Claim.work, took(B, generation=3), (started(B, **FRESH),)),
                 id="a resumed step (new generation) is claimed by whichever attempt comes"),
    # stale deliveries: acknowledged, nothing written
    pytest.param(head(RunStatus.running, step=1), A, NOW, Raises(StaleDelivery, "already committed"),
                 id="redelivery of the committed step is stale"),
    pytest.param(head(RunStatus.running, step=5), A, NOW, Raises(StaleDelivery, "already committed"),
                 id="redelivery of a step long committed is stale"),
    pytest.param(head(), delivery(step=3), NOW, Raises(StaleDelivery, "ahead of run"),
                 id="a task for a step beyond the next is stale"),
    pytest.param(head(RunStatus.succeeded, step=1), D2, NOW, Raises(StaleDelivery, "already succeeded"),
                 id="terminal: succeeded"),
    pytest.param(head(RunStatus.failed), A, NOW, Raises(StaleDelivery, "already failed"), id="terminal: failed"),
    pytest.param(head(RunStatus.cancelled), A, NOW, Raises(StaleDelivery, "already cancelled"),
                 id="terminal: cancelled, even for the step that was due"),
    pytest.param(head(RunStatus.expired), A, NOW, Raises(StaleDelivery, "already expired"), id="terminal: expired"),
    pytest.param(waiting(), A, NOW, Raises(StaleDelivery, "waiting_approval; its step task is not due"),
                 id="a run waiting for approval: its step task is stale until the decision"),
    # a live lease is never taken over, whatever the retry count
    pytest.param(LIVE_A, B, NOW, Raises(LeaseHeld, "is being worked by dev--run_1--s000001#0@a"),
                 id="live lease: a second dispatch (retry count 1) gets 409"),
    pytest.param(LIVE_A, delivery(attempt=2, instance="a"), NOW, Raises(LeaseHeld, "is being worked by"),
                 id="live lease: retry count 2 on the holder's own instance gets 409"),
    pytest.param(LIVE_A, delivery(attempt=99, instance="z"), NOW, Raises(LeaseHeld, "is being worked by"),
                 id="live lease: retry count 99 gets 409 all the same"),
    pytest.param(LIVE_A, delivery(task=TASK + "-g1", instance="c"), NOW, Raises(LeaseHeld, "is being worked by"),
                 id="live lease: a task of another generation (sweep, RunTask) gets 409"),
    pytest.param(LIVE_A, A, NOW, Raises(LeaseHeld, "already in progress"),
                 id="live lease: the very same delivery again gets 409"),
    pytest.param(running(until=NOW + timedelta(microseconds=1)), B, NOW, Raises(LeaseHeld),
                 id="a lease one microsecond from its end is still live"),
    # expired leases are taken over
    pytest.param(running(until=NOW), B, NOW,
                 Out(Claim.work, took(B), (started(B, resumed=True, previous_owner=A.owner,
                                                   previous_until=NOW.isoformat()),), step=1),
                 id="lease expiring right now: taken over, previous owner and expiry recorded"),
    pytest.param(running(until=at(60)), B, NOW,
                 Out(Claim.work, took(B), (started(B, resumed=True, previous_owner=A.owner,
                                                   previous_until=at(60).isoformat()),)),
                 id="lease expired long ago (holder died): taken over"),
    pytest.param(running(until=at(60)), A, NOW,
                 Out(Claim.work, took(A), (started(A, resumed=True, previous_owner=A.owner),)),
                 id="the same delivery after its own lease expired resumes it"),
    pytest.param(head(RunStatus.queued, lease=lease_of(A, at(60)), generation=1), B, NOW,
                 Out(Claim.work, took(B, generation=1), (started(B, resumed=True, previous_owner=A.owner),)),
                 id="a sweep re-enqueue of a dead attempt's step takes its expired lease over"),
    # timers
    pytest.param(head(RunStatus.waiting_timer, wake_at=NOW + timedelta(seconds=30)), A, NOW,
                 Raises(NotDue, "came early"), id="timer not due: the early task is refused for a retry"),
    pytest.param(head(RunStatus.waiting_timer, wake_at=NOW + TIMER_TOLERANCE + timedelta(microseconds=1)), A,
                 NOW, Raises(NotDue), id="timer due just over the clock tolerance from now: not due"),
    pytest.param(head(RunStatus.waiting_timer, wake_at=NOW + TIMER_TOLERANCE), A, NOW,
                 Out(Claim.work, took(A), (started(A, **FRESH),)),
                 id="timer due within the clock tolerance: runs, wake_at cleared"),
    pytest.param(head(RunStatus.waiting_timer, wake_at=at(60)), A, NOW,
                 Out(Claim.work, took(A), (started(A, **FRESH),)), id="timer overdue: runs"),
    pytest.param(head(RunStatus.waiting_timer, step=1, wake_at=NOW + timedelta(hours=1)), A, NOW,
                 Raises(StaleDelivery, "already committed"),
                 id="a redelivered committed step of a waiting run is stale, not early"),
    # retention and wall time
    pytest.param(head(), A, T0 + RETENTION,
                 Out(Claim.finished, finished(RunStatus.expired, error=EXPIRED),
                     ((K.run_finished, {"status": "expired"}),), step=0),
                 id="past retention: the claim ends the run as expired"),
    pytest.param(running(until=T0 + RETENTION + timedelta(seconds=30)), B, T0 + RETENTION,
                 Out(Claim.finished, finished(RunStatus.expired), ((K.run_finished, {"status": "expired"}),)),
                 id="past retention: expired even while a lease is live (its holder's next write is fenced)"),
    pytest.param(head(limits=WALL), A, at(3601),
                 Out(Claim.finished, finished(RunStatus.failed, error=RunError(
                     code="max_wall_time", message="the run exceeded its wall-time limit of 3600 s")),
                     ((K.run_finished, {"status": "failed"}),), step=0),
                 id="over the wall-time limit: failed, naming the limit"),
    pytest.param(head(limits=WALL), A, at(3600), Out(Claim.work, took(A, now=at(3600)), (started(A),)),
                 id="exactly at the wall-time limit: still runs"),
])
def test_claim(before: RunHead, d: Delivery, now: datetime, expect: Out | Raises) -> None:
    verify(lambda: decisions.claim(before, d, now, LEASE), before, now, expect)


# --- renew_lease --------------------------------------------------------------------------------------------

RENEWED = NOW + timedelta(seconds=LEASE)


@pytest.mark.parametrize(("before", "owner", "step", "expect"), [
    pytest.param(running(until=NOW + timedelta(seconds=20)), A.owner, 1,
                 Out(True, {"lease.until": RENEWED, "lease.owner": A.owner, "updated_at": at(1), "seq": 3}),
                 id="the holder's heartbeat pushes the lease a lease ahead; no event, updated_at unchanged"),
    pytest.param(running(until=NOW + timedelta(hours=1)), A.owner, 1,
                 Out(True, {"lease.until": NOW + timedelta(hours=1)}),
                 id="a renewal never shortens the lease"),
    pytest.param(running(until=at(60)), A.owner, 1, Out(True, {"lease.until": RENEWED}),
                 id="an expired lease nobody took over is renewed by its holder"),
    pytest.param(running(B), A.owner, 1, Raises(LeaseLost, "took the lease over"),
                 id="another attempt took the step over: LeaseLost"),
    pytest.param(running(delivery(task=TASK + "-g1", instance="c")), A.owner, 1, Raises(LeaseLost),
                 id="taken over by a task of another generation: LeaseLost"),
    pytest.param(waiting(), A.owner, 1, Out(False, None),
                 id="the attempt released the lease (the run waits for approval): False, nothing written"),
    pytest.param(head(RunStatus.waiting_timer, wake_at=at(900)), A.owner, 1, Out(False, None),
                 id="the attempt deferred a call (waiting for a timer): False"),
    pytest.param(head(RunStatus.running, step=1), A.owner, 1, Out(False, None),
                 id="the step committed (lease released): False"),
    pytest.param(running(D2), A.owner, 1, Out(False, None),
                 id="the step committed and the next step's lease is someone else's: False, not LeaseLost"),
    pytest.param(head(RunStatus.cancelled), A.owner, 1, Out(False, None), id="the run was cancelled: False"),
    pytest.param(head(RunStatus.succeeded, step=1), A.owner, 1, Out(False, None), id="the run finished: False"),
])
def test_renew_lease(before: RunHead, owner: str, step: int, expect: Out | Raises) -> None:
    verify(lambda: decisions.renew_lease(before, owner, step, NOW, LEASE), before, NOW, expect)


# --- check_fence --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("before", "owner", "step", "raises"), [
    pytest.param(running(), A.owner, 1, None, id="the holder of the current step may write"),
    pytest.param(running(until=at(60)), A.owner, 1, None,
                 id="an expired lease nobody took over still fences for its holder (the CAS orders writes)"),
    pytest.param(running(B), A.owner, 1, Raises(LeaseLost, "#1@b took the step over after this attempt's lease"),
                 id="taken over: LeaseLost naming the taker"),
    pytest.param(head(RunStatus.cancelled), A.owner, 1, Raises(LeaseLost, "because the run is cancelled"),
                 id="cancelled under the attempt: LeaseLost"),
    pytest.param(waiting(), A.owner, 1, Raises(LeaseLost, "the run is waiting_approval"),
                 id="the run waits for approval: LeaseLost"),
    pytest.param(head(RunStatus.succeeded, step=1), A.owner, 1, Raises(LeaseLost, "the run is succeeded"),
                 id="the run finished: LeaseLost"),
    pytest.param(head(RunStatus.running), A.owner, 1, Raises(LeaseLost, "the lease moved on"),
                 id="running but nobody holds the lease: LeaseLost"),
    pytest.param(running(step=1), A.owner, 1, Raises(LeaseLost, "the lease moved on"),
                 id="the step is already committed: LeaseLost"),
    pytest.param(running(), A.owner, 2, Raises(LeaseLost), id="a write for another step: LeaseLost"),
])
def test_check_fence(before: RunHead, owner: str, step: int, raises: Raises | None) -> None:
    if raises is None:
        assert decisions.check_fence(before, owner, step) is None
        return
    with pytest.raises(raises.error, match=raises.match):
        decisions.check_fence(before, owner, step)


# --- idempotency_key, intent_event, reconcile_approval_id ---------------------------------------------------

@pytest.mark.parametrize(("before", "step", "call", "key"), [
    pytest.param(head(), 1, CALL, "run_1:1:call-1", id="run, step and call id"),
    pytest.param(running(B, generation=4), 1, CALL, "run_1:1:call-1",
                 id="the same for every attempt and generation of the step (so a retried call dedupes)"),
    pytest.param(head(), 2, CALL, "run_1:2:call-1", id="another step's call of the same id is another key"),
])
def test_idempotency_key(before: RunHead, step: int, call: FunctionCall, key: str) -> None:
    assert decisions.idempotency_key(before, step, call) == key


@pytest.mark.parametrize(("owner", "call", "data"), [
    pytest.param(A.owner, CALL, {"call_id": "call-1", "name": "pay", "idempotency_key": "run_1:1:call-1",
                                 "owner": A.owner},
                 id="names the call and the attempt about to make it; the arguments are not repeated"),
    pytest.param(B.owner, NEXT, {"call_id": "call-2", "name": "note", "idempotency_key": "run_1:1:call-2",
                                 "owner": B.owner}, id="another call by another attempt"),
])
def test_intent_event(owner: str, call: FunctionCall, data: dict[str, Any]) -> None:
    assert decisions.intent_event(running(), owner, 1, call) == (K.tool_intent, data)


@pytest.mark.parametrize(("a", "b", "same"), [
    pytest.param((RUN, 1, "call-1", 0), (RUN, 1, "call-1", 0), True, id="deterministic"),
    pytest.param((RUN, 1, "call-1", 0), (RUN, 1, "call-1", 1), False, id="each round is a new reconciliation"),
    pytest.param((RUN, 1, "call-1", 0), (RUN, 2, "call-1", 0), False, id="another step"),
    pytest.param((RUN, 1, "call-1", 0), (RUN, 1, "call-2", 0), False, id="another call"),
    pytest.param((RUN, 1, "call-1", 0), ("run_2", 1, "call-1", 0), False, id="another run"),
])
def test_reconcile_approval_id(a: tuple[str, int, str, int], b: tuple[str, int, str, int], same: bool) -> None:
    first, second = decisions.reconcile_approval_id(*a), decisions.reconcile_approval_id(*b)
    assert (first == second) is same
    assert first.startswith("apr_") and len(first) == 30
    assert first != approval_id(*a[:3]), "a reconciliation never takes the id of the call's approval"


# --- record_model_response ------------------------------------------------------------------------------

LIMITED = Limits(max_tokens=1000, max_cost_usd=0.5)
SPENT = Usage(input_tokens=800, output_tokens=80, cost_usd=0.4, model_calls=3)


def used(input_tokens: int, output_tokens: int, cost: float, calls: int) -> dict[str, Any]:
    return {"usage": Usage(input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost, model_calls=calls)}


@pytest.mark.parametrize(("before", "owner", "said", "cost", "announce", "expect"), [
    pytest.param(running(), A.owner, response(CALL), 0.01, CALL,
                 Out(Claim.work, {"status": RunStatus.running, "lease": lease_of(A), **used(100, 20, 0.01, 1)},
                     ((K.model_response, {"model": "gemini", "model_version": "gemini-x-001", "finish_reason": "STOP",
                                          "usage": {"input_tokens": 100, "output_tokens": 20, "cost_usd": 0.01}}),
                      (K.tool_intent, {"call_id": "call-1", "idempotency_key": "run_1:1:call-1",
                                       "owner": A.owner})), step=1),
                 id="a tool call: the response and the first call's intent in one write; usage added"),
    pytest.param(running(), A.owner, response(CALL), 0.01, None,
                 Out(Claim.work, used(100, 20, 0.01, 1), ((K.model_response, {}),)),
                 id="a call held for approval is not announced"),
    pytest.param(running(), A.owner, response(text="done"), 0.01, None,
                 Out(Claim.work, {}, ((K.model_response, {"message": {"role": "model",
                                                                      "parts": [{"text": "done"}]}}),)),
                 id="a final answer: the response alone, its message as sent"),
    pytest.param(running(limits=LIMITED, usage=SPENT), A.owner, response(CALL, tokens=(100, 21)), 0.01, CALL,
                 Out(Claim.finished, finished(RunStatus.failed, error=RunError(code="max_tokens", message=(
                     "the run used 1001 tokens, over its limit of 1000 (this call used 121)")),
                     **used(900, 101, 0.41, 4)),
                     ((K.model_response, {}), (K.run_finished, {"status": "failed", "usage": {
                         "input_tokens": 900, "output_tokens": 101, "cost_usd": 0.41, "model_calls": 4}})), step=1),
                 id="over the token limit: recorded, then failed naming the limit; no intent"),
    pytest.param(running(limits=LIMITED, usage=SPENT), A.owner, response(CALL, tokens=(100, 20)), 0.01, CALL,
                 Out(Claim.work, used(900, 100, 0.41, 4), ((K.model_response, {}), (K.tool_intent, {}))),
                 id="exactly at the token limit: goes on"),
    pytest.param(running(limits=LIMITED, usage=SPENT), A.owner, response(CALL, tokens=(10, 10)), 0.11, CALL,
                 Out(Claim.finished, finished(RunStatus.failed, error=RunError(code="max_cost", message=(
                     "the run cost $0.510000, over its limit of $0.500000"))),
                     ((K.model_response, {}), (K.run_finished, {}))),
                 id="over the cost limit: failed naming the limit"),
    pytest.param(running(limits=LIMITED, usage=SPENT), A.owner, response(CALL, tokens=(10, 10)), 0.1, CALL,
                 Out(Claim.work, used(810, 90, 0.5, 4), ((K.model_response, {}), (K.tool_intent, {}))),
                 id="exactly at the cost limit: goes on"),
    pytest.param(running(limits=LIMITED, usage=SPENT), A.owner, response(CALL, tokens=(500, 0)), 5.0, CALL,
                 Out(Claim.finished, {"error.code": "max_tokens"}, ((K.model_response, {}), (K.run_finished, {}))),
                 id="over both limits: the token limit is named"),
    pytest.param(running(B), A.owner, response(CALL), 0.01, CALL, Raises(LeaseLost, "took the step over"),
                 id="fenced: an attempt that was taken over cannot record (the taker calls the model again)"),
    pytest.param(head(RunStatus.cancelled), A.owner, response(CALL), 0.01, CALL, Raises(LeaseLost, "cancelled"),
                 id="fenced: cancelled while the model answered"),
])
def test_record_model_response(before: RunHead, owner: str, said: ModelResponse, cost: float,
                               announce: FunctionCall | None, expect: Out | Raises) -> None:
    verify(lambda: decisions.record_model_response(before, owner, 1, said, "gemini", cost, NOW, announce),
           before, NOW, expect)


# --- record_tool_result, record_intent ----------------------------------------------------------------------

LATER = NOW + timedelta(hours=1)


@pytest.mark.parametrize(("before", "owner", "ok", "output", "next_call", "continue_at", "expect"), [
    pytest.param(running(), A.owner, True, {"paid": 250}, NEXT, None,
                 Out(None, {"status": RunStatus.running, "lease": lease_of(A), "step": 0},
                     ((K.tool_result, {"call_id": "call-1", "name": "pay", "ok": True, "output": {"paid": 250},
                                       "continue_at": ABSENT}),
                      (K.tool_intent, {"call_id": "call-2", "name": "note", "owner": A.owner})), step=1),
                 id="a result and the next call's intent in the same write"),
    pytest.param(running(), A.owner, False, {"error": "card declined"}, None, None,
                 Out(None, {"status": RunStatus.running},
                     ((K.tool_result, {"ok": False, "output": {"error": "card declined"}}),)),
                 id="a failed result is recorded like any other (the model sees it); last call: no intent"),
    pytest.param(running(), A.owner, True, {"checked": "db"}, None, LATER,
                 Out(None, {}, ((K.tool_result, {"continue_at": LATER.isoformat()}),)),
                 id="ContinueLater: the time the tool asked to continue at is recorded with its result"),
    pytest.param(running(B), A.owner, True, {"paid": 250}, NEXT, None, Raises(LeaseLost, "took the step over"),
                 id="fenced: a taken-over attempt's result is refused (it records a late result instead)"),
    pytest.param(head(RunStatus.cancelled), A.owner, True, {}, None, None, Raises(LeaseLost, "cancelled"),
                 id="fenced: cancelled"),
])
def test_record_tool_result(before: RunHead, owner: str, ok: bool, output: dict[str, Any],
                            next_call: FunctionCall | None, continue_at: datetime | None,
                            expect: Out | Raises) -> None:
    verify(lambda: decisions.record_tool_result(before, owner, 1, CALL, ok, output, next_call, NOW, continue_at),
           before, NOW, expect)


@pytest.mark.parametrize(("before", "owner", "expect"), [
    pytest.param(running(), A.owner, Out(None, {"lease": lease_of(A)}, ((K.tool_intent, {
        "call_id": "call-1", "name": "pay", "idempotency_key": "run_1:1:call-1", "owner": A.owner}),), step=1),
        id="the intent alone (its predecessor's result was an earlier attempt's)"),
    pytest.param(running(B), A.owner, Raises(LeaseLost), id="fenced: taken over"),
    pytest.param(waiting(), A.owner, Raises(LeaseLost, "waiting_approval"), id="fenced: the lease was released"),
])
def test_record_intent(before: RunHead, owner: str, expect: Out | Raises) -> None:
    verify(lambda: decisions.record_intent(before, owner, 1, CALL, NOW), before, NOW, expect)


# --- fail_step ----------------------------------------------------------------------------------------------

UNCERTAIN = RunError(code="tool_uncertain", message="pay may or may not have run")


@pytest.mark.parametrize(("before", "owner", "expect"), [
    pytest.param(running(), A.owner,
                 Out(Claim.finished, finished(RunStatus.failed, error=UNCERTAIN, step=0),
                     ((K.run_finished, {"status": "failed", "error": UNCERTAIN.model_dump()}),), step=1),
                 id="the holder fails the run at its step"),
    pytest.param(running(B), A.owner, Raises(LeaseLost), id="fenced: an attempt taken over cannot fail the run"),
    pytest.param(head(RunStatus.succeeded, step=1), A.owner, Raises(LeaseLost), id="fenced: already finished"),
])
def test_fail_step(before: RunHead, owner: str, expect: Out | Raises) -> None:
    verify(lambda: decisions.fail_step(before, owner, 1, UNCERTAIN, NOW), before, NOW, expect)


# --- complete_step ------------------------------------------------------------------------------------------

def says(*calls: FunctionCall, text: str = "") -> Message:
    return response(*calls, text=text).message


STEPS3 = Limits(max_steps=3)


@pytest.mark.parametrize(("before", "owner", "message", "wake_at", "expect"), [
    pytest.param(running(), A.owner, says(text="all noted"), None,
                 Out(Claim.finished, finished(RunStatus.succeeded, step=1, result="all noted", error=None),
                     ((K.step_completed, {"tool_calls": 0, "done": True}),
                      (K.run_finished, {"status": "succeeded", "result": "all noted"})), step=1),
                 id="no tool calls: the answer is final, the run succeeded"),
    pytest.param(running(), A.owner, says(), None,
                 Out(Claim.finished, finished(RunStatus.failed, step=1, result=None, **{"error.code": "model_error"}),
                     ((K.step_completed, {"done": True}), (K.run_finished, {"status": "failed"}))),
                 id="neither text nor tool calls: failed (model_error)"),
    pytest.param(running(), A.owner, says(text="  \n "), None,
                 Out(Claim.finished, {"status": RunStatus.failed, "error.code": "model_error"},
                     ((K.step_completed, {}), (K.run_finished, {}))),
                 id="blank text counts as no answer"),
    pytest.param(running(), A.owner, says(CALL, NEXT, text="paying"), None,
                 Out(Claim.work, {"step": 1, "status": RunStatus.running, "lease": None, "wake_at": None},
                     ((K.step_completed, {"tool_calls": 2, "done": False}),), step=1),
                 id="tool calls: the step is committed and the lease released, on to the next step"),
    pytest.param(running(delivery(step=3), limits=STEPS3), delivery(step=3).owner, says(CALL), None,
                 Out(Claim.finished, finished(RunStatus.failed, step=3, error=RunError(
                     code="max_steps", message="the run reached its limit of 3 steps without a final answer")),
                     ((K.step_completed, {"tool_calls": 1}), (K.run_finished, {"status": "failed"})), step=3),
                 id="tool calls at the step limit: failed (max_steps)"),
    pytest.param(running(delivery(step=3), limits=STEPS3), delivery(step=3).owner, says(text="ok"), None,
                 Out(Claim.finished, {"status": RunStatus.succeeded, "step": 3}, ((K.step_completed, {}),
                                                                                  (K.run_finished, {}))),
                 id="a final answer at the step limit succeeds"),
    pytest.param(running(delivery(step=2), limits=STEPS3), delivery(step=2).owner, says(CALL), None,
                 Out(Claim.work, {"step": 2}, ((K.step_completed, {}),)), id="below the step limit: goes on"),
    pytest.param(running(), A.owner, says(CALL), LATER,
                 Out(Claim.work, {"step": 1, "status": RunStatus.waiting_timer, "wake_at": LATER, "lease": None,
                                  "generation": 0},
                     ((K.step_completed, {"tool_calls": 1}),
                      (K.timer_set, {"wake_at": LATER.isoformat(), "reason": "a tool asked to continue later"})),
                     step=1),
                 id="ContinueLater: committed, the run waits for a timer"),
    pytest.param(running(), A.owner, says(CALL), NOW,
                 Out(Claim.work, {"status": RunStatus.running, "wake_at": None}, ((K.step_completed, {}),)),
                 id="a continue time already reached: no timer"),
    pytest.param(running(), A.owner, says(text="done"), LATER,
                 Out(Claim.finished, {"status": RunStatus.succeeded, "wake_at": None},
                     ((K.step_completed, {}), (K.run_finished, {}))),
                 id="a final answer ends the run even if a tool asked to continue later"),
    pytest.param(running(B), A.owner, says(text="done"), None, Raises(LeaseLost, "took the step over"),
                 id="fenced: an attempt taken over cannot commit"),
    pytest.param(head(RunStatus.running, step=1), A.owner, says(CALL), None, Raises(LeaseLost, "moved on"),
                 id="fenced: the step is already committed (a double commit is refused)"),
    pytest.param(head(RunStatus.cancelled), A.owner, says(text="done"), None, Raises(LeaseLost, "cancelled"),
                 id="fenced: cancelled runs do not succeed"),
])
def test_complete_step(before: RunHead, owner: str, message: Message, wake_at: datetime | None,
                       expect: Out | Raises) -> None:
    step = before.lease.step if before.lease else 1
    verify(lambda: decisions.complete_step(before, owner, step, message, NOW, wake_at), before, NOW, expect)


# --- cancel -------------------------------------------------------------------------------------------------

CANCELLED = {"status": RunStatus.cancelled, "lease": None, "approval_id": None, "wake_at": None}
BY = {"by": "bob@example.com"}


@pytest.mark.parametrize(("before", "read", "now", "expect"), [
    pytest.param(head(), None, NOW, Out(None, CANCELLED, ((K.run_cancelled, BY),), step=0),
                 id="a queued run"),
    pytest.param(running(), None, NOW, Out(None, CANCELLED, ((K.run_cancelled, BY),), step=0),
                 id="a running step: its lease is dropped, so the holder's next write is fenced"),
    pytest.param(head(RunStatus.waiting_timer, step=2, wake_at=LATER), None, NOW,
                 Out(None, CANCELLED, ((K.run_cancelled, BY),), step=2), id="a run waiting for a timer"),
    pytest.param(waiting(), approval(), NOW,
                 Out(None, CANCELLED, ((K.run_cancelled, BY),),
                     approvals=({"status": ApprovalStatus.cancelled, "decided_by": "bob@example.com",
                                 "decided_at": NOW, "updated_at": NOW},)),
                 id="a run waiting for approval: the approval is cancelled in the same commit"),
    pytest.param(waiting(), None, NOW, Raises(ApprovalMoved, APPROVAL_ID),
                 id="waiting, but its approval was not read: read it first"),
    pytest.param(waiting(), approval(approval_id="apr_other"), NOW, Raises(ApprovalMoved),
                 id="waiting for another approval than the one read: read again"),
    pytest.param(head(RunStatus.succeeded), None, NOW, Raises(Conflict, "already succeeded"), id="terminal: 409"),
    pytest.param(head(RunStatus.cancelled), None, NOW, Raises(Conflict, "already cancelled"),
                 id="cancelling twice: 409"),
    pytest.param(head(), None, T0 + RETENTION, Raises(Conflict, "only an unfinished run can be cancelled"),
                 id="past retention (expired as seen): 409"),
])
def test_cancel(before: RunHead, read: Approval | None, now: datetime, expect: Out | Raises) -> None:
    verify(lambda: decisions.cancel(before, "bob@example.com", now, read), before, now, expect)


def test_cancel_past_retention_says_the_run_expired() -> None:
    with pytest.raises(Conflict, match="expired"):
        decisions.cancel(head(), "bob@example.com", T0 + RETENTION)


# --- reenqueue ----------------------------------------------------------------------------------------------

STALE = NOW - timedelta(minutes=5)
"""The sweep's ``stale_before``: no write since then means the step task was lost."""


def swept(generation: int, step: int) -> Out:
    return Out(generation, {"generation": generation}, ((K.sweep_reenqueued, {"generation": generation}),),
               step=step)


@pytest.mark.parametrize(("before", "expect"), [
    pytest.param(head(updated_at=at(1)), swept(1, 1),
                 id="queued and untouched since before the cutoff: a new task generation, for step+1"),
    pytest.param(head(RunStatus.running, step=4, generation=2, updated_at=at(1)), swept(3, 5),
                 id="committed, next task lost: generation bumped"),
    pytest.param(running(until=at(60), updated_at=at(1)), swept(1, 1),
                 id="a dead attempt's expired lease: re-enqueued (the new task takes the lease over)"),
    pytest.param(running(until=NOW + timedelta(seconds=30), updated_at=at(1)), Out(None, None),
                 id="a live lease (renewals leave updated_at old): not re-enqueued"),
    pytest.param(head(updated_at=STALE + timedelta(seconds=1)), Out(None, None), id="written recently: left alone"),
    pytest.param(head(RunStatus.waiting_timer, wake_at=at(60), updated_at=at(1)), swept(1, 1),
                 id="a timer overdue past the cutoff: re-enqueued"),
    pytest.param(head(RunStatus.waiting_timer, wake_at=LATER, updated_at=at(1)), Out(None, None),
                 id="a timer not yet due: left alone, however old the last write"),
    pytest.param(waiting(updated_at=at(1)), Out(None, None),
                 id="waiting for approval: the expiry task's, not the sweep's"),
    pytest.param(head(RunStatus.succeeded, updated_at=at(1)), Out(None, None), id="finished: left alone"),
    pytest.param(head(RunStatus.cancelled, updated_at=at(1)), Out(None, None), id="cancelled: left alone"),
])
def test_reenqueue(before: RunHead, expect: Out) -> None:
    verify(lambda: decisions.reenqueue(before, NOW, STALE), before, NOW, expect)


# --- request_approval ---------------------------------------------------------------------------------------

def parked(approval_id: str, expires: datetime) -> dict[str, Any]:
    return {"status": RunStatus.waiting_approval, "lease": None, "approval_id": approval_id, "wake_at": expires,
            "generation": 0, "step": 0}


EXPIRES = NOW + timedelta(seconds=3600)
REQUESTED = {"approval_id": APPROVAL_ID, "kind": "approval", "status": ApprovalStatus.pending, "step": 1,
             "call_id": "call-1", "tool": "pay", "arguments": {"to": "acme", "amount": 250, "card": REDACTED},
             "call_arguments": CALL.args, "redact": ["card"], "approvers": ["lee@example.com"],
             "requested_by": "alice@example.com", "created_at": NOW, "expires_at": EXPIRES,
             "on_expiry": "reject", "trace": "00-trace-span-01", "expire_at": T0 + RETENTION}


@pytest.mark.parametrize(("before", "policy", "kind", "round", "seen_seq", "expect"), [
    pytest.param(running(), POLICY, "approval", 0, None,
                 Out(ANY, parked(APPROVAL_ID, EXPIRES),
                     ((K.approval_requested, {"approval_id": APPROVAL_ID, "kind": "approval", "call_id": "call-1",
                                              "name": "pay", "approvers": ["lee@example.com"],
                                              "expires_at": EXPIRES.isoformat(), "reason": "over 100"}),),
                     step=1, approvals=(REQUESTED,)),
                 id="the run parks: lease released, waits until the expiry; approvers see redacted arguments"),
    pytest.param(running(), POLICY.model_copy(update={"expires_after_s": 7 * 24 * 3600, "on_expiry": "fail"}),
                 "approval", 0, None,
                 Out(ANY, parked(APPROVAL_ID, T0 + RETENTION), ((K.approval_requested, {}),),
                     approvals=({"expires_at": T0 + RETENTION, "on_expiry": "fail"},)),
                 id="the expiry is capped by the run's retention"),
    pytest.param(running(), POLICY, "reconcile", 0, 3,
                 Out(ANY, parked(RECONCILE_ID, EXPIRES), ((K.approval_requested, {"kind": "reconcile"}),),
                     approvals=({"approval_id": RECONCILE_ID, "kind": "reconcile"},)),
                 id="a reconciliation of round 0, on the events the caller read"),
    pytest.param(running(), POLICY, "reconcile", 2, None,
                 Out(ANY, parked(decisions.reconcile_approval_id(RUN, 1, CALL.id, 2), EXPIRES),
                     ((K.approval_requested, {}),), approvals=({"kind": "reconcile"},)),
                 id="a later round of reconciliation has an id of its own"),
    pytest.param(running(), POLICY, "reconcile", 0, 2, Raises(EventsMoved, "events after 2"),
                 id="events were written since the caller read them (a late result): read again"),
    pytest.param(running(B), POLICY, "reconcile", 0, 2, Raises(LeaseLost),
                 id="fenced before anything else: a taken-over attempt cannot park the run"),
    pytest.param(head(RunStatus.cancelled), POLICY, "approval", 0, None, Raises(LeaseLost, "cancelled"),
                 id="fenced: cancelled"),
])
def test_request_approval(before: RunHead, policy: ApprovalPolicy, kind: Any, round: int, seen_seq: int | None,
                          expect: Out | Raises) -> None:
    m = verify(lambda: decisions.request_approval(before, A.owner, 1, CALL, policy, NOW, kind, round, seen_seq),
               before, NOW, expect)
    if m is not None:
        assert m.value is m.approvals[0] and m.value.approval_id == m.head.approval_id


# --- decide_approval ----------------------------------------------------------------------------------------

def resumed(**more: Any) -> dict[str, Any]:
    """A run that resumes after a decision: queued again under a new task generation."""
    return {"status": RunStatus.queued, "lease": None, "approval_id": None, "wake_at": None, "generation": 3,
            "step": 0, **more}


def decided(outcome: str, kind: str = "approval", **more: Any) -> tuple[EventKind, dict[str, Any]]:
    return (K.approval_decided, {"kind": kind, "call_id": "call-1", "decision": outcome, **more})


RECONCILE = approval("reconcile")
EDIT = {"to": "acme", "amount": 90, "card": "4111"}


@pytest.mark.parametrize(("before", "read", "message", "now", "expect"), [
    pytest.param(waiting(), approval(), decision(Decision.approve, "fine"), NOW,
                 Out(True, resumed(), (decided("approved", approval_id=APPROVAL_ID, by="lee@example.com",
                                               comment="fine", decision_id="dec-approve", arguments=None),),
                     step=1, approvals=({"status": ApprovalStatus.approved, "decided_by": "lee@example.com",
                                         "decided_at": NOW, "comment": "fine", "decision_id": "dec-approve",
                                         "resolution": None, "edited_arguments": None},)),
                 id="approve: the run resumes (queued, new generation) and the approval is approved"),
    pytest.param(waiting(), approval(), decision(Decision.reject, "too much"), NOW,
                 Out(True, resumed(), (decided("rejected", comment="too much"),),
                     approvals=({"status": ApprovalStatus.rejected, "comment": "too much"},)),
                 id="reject: the run resumes too (the model is told), the approval is rejected"),
    pytest.param(waiting(), approval(), decision(Decision.approve, arguments=EDIT), NOW,
                 Out(True, resumed(), (decided("approved", arguments=EDIT),),
                     approvals=({"status": ApprovalStatus.approved,
                                 "edited_arguments": {**EDIT, "card": REDACTED}},)),
                 id="approve with edits: the event has the arguments to run with, the approval them redacted"),
    pytest.param(waiting(RECONCILE), RECONCILE, decision(Decision.retry, "no record of it"), NOW,
                 Out(True, resumed(), (decided("retry", "reconcile", approval_id=RECONCILE_ID),),
                     approvals=({"status": ApprovalStatus.resolved, "resolution": Decision.retry},)),
                 id="reconcile retry: resolved, the decision is the outcome"),
    pytest.param(waiting(RECONCILE), RECONCILE, decision(Decision.done), NOW,
                 Out(True, resumed(), (decided("done", "reconcile"),),
                     approvals=({"status": ApprovalStatus.resolved, "resolution": Decision.done},)),
                 id="reconcile done"),
    pytest.param(waiting(RECONCILE), RECONCILE, decision(Decision.fail), NOW,
                 Out(True, resumed(), (decided("fail", "reconcile"),),
                     approvals=({"status": ApprovalStatus.resolved, "resolution": Decision.fail},)),
                 id="reconcile fail: the run resumes, and its step fails it"),
    pytest.param(waiting(), approval(), decision(Decision.approve), at(3660) - timedelta(microseconds=1),
                 Out(True, resumed(), (decided("approved"),), approvals=({"status": ApprovalStatus.approved},)),
                 id="the last instant before the expiry still counts"),
    pytest.param(waiting(), approval(), decision(Decision.approve), at(3660), Out(False, None),
                 id="at the expiry: too late, nothing written (the expiry task settles it)"),
    pytest.param(head(RunStatus.queued), approval(), decision(Decision.approve), NOW, Out(False, None),
                 id="the run no longer waits (decided already): False, the caller reads the approval again"),
    pytest.param(waiting(RECONCILE), approval(), decision(Decision.approve), NOW, Out(False, None),
                 id="the run waits for another approval than the one read: False"),
    pytest.param(waiting(), approval(status=ApprovalStatus.approved), decision(Decision.reject), NOW,
                 Out(False, None), id="the approval read was settled already: False"),
    pytest.param(head(RunStatus.cancelled), approval(), decision(Decision.approve), NOW, Out(False, None),
                 id="the run was cancelled meanwhile: False"),
    pytest.param(head(RunStatus.expired), approval(), decision(Decision.approve), NOW, Out(False, None),
                 id="the run expired meanwhile: False"),
])
def test_decide_approval(before: RunHead, read: Approval, message: DecisionMessage, now: datetime,
                         expect: Out) -> None:
    verify(lambda: decisions.decide_approval(before, read, message, now), before, now, expect)


def test_a_reject_carries_no_edited_arguments() -> None:
    m = decisions.decide_approval(waiting(), approval(), decision(Decision.reject, "no", arguments=EDIT), NOW)
    assert m.value is True
    assert m.events[0].data["arguments"] is None
    assert m.approvals[0].edited_arguments is None


# --- expire_approval ----------------------------------------------------------------------------------------

NOBODY = f"nobody decided before {at(3660).isoformat()}"


@pytest.mark.parametrize(("before", "read", "now", "expect"), [
    pytest.param(waiting(), approval(), at(3660),
                 Out(Claim.work, resumed(), (decided("expired", by="", comment=NOBODY, decision_id=None,
                                                     arguments=None),), step=1,
                     approvals=({"status": ApprovalStatus.expired, "decided_at": at(3660), "comment": NOBODY,
                                 "decided_by": None},)),
                 id="on_expiry reject: expired, and the run goes on as after a rejection"),
    pytest.param(waiting(), approval(), at(3660) - TIMER_TOLERANCE,
                 Out(Claim.work, resumed(), (decided("expired"),), approvals=({"status": ApprovalStatus.expired},)),
                 id="a task within the clock tolerance of the expiry is due"),
    pytest.param(waiting(), approval(on_expiry="fail"), at(4000),
                 Out(Claim.finished, finished(RunStatus.failed, step=0, generation=2, error=RunError(
                     code="approval_expired", message=f"the call of pay waited for approval {APPROVAL_ID} and "
                     f"nobody decided before {at(3660).isoformat()}")),
                     (decided("expired", by=None, comment=NOBODY), (K.run_finished, {"status": "failed"})), step=1,
                     approvals=({"status": ApprovalStatus.expired},)),
                 id="on_expiry fail: expired, and the run fails naming the approval"),
    pytest.param(waiting(RECONCILE), RECONCILE, at(3660),
                 Out(Claim.work, resumed(), (decided("expired", "reconcile"),),
                     approvals=({"status": ApprovalStatus.expired, "resolution": None},)),
                 id="an unanswered reconciliation expires too (its step then fails the run)"),
    pytest.param(waiting(), approval(), at(3660) - TIMER_TOLERANCE - timedelta(microseconds=1),
                 Raises(NotDue, APPROVAL_ID), id="the expiry task came early: not due, retried later"),
    pytest.param(head(RunStatus.queued), approval(), at(3660), Out(None, None),
                 id="decided before the expiry task ran: nothing to expire"),
    pytest.param(waiting(), approval(status=ApprovalStatus.approved), at(3660), Out(None, None),
                 id="the approval read was settled: nothing to expire"),
    pytest.param(head(RunStatus.cancelled), approval(), at(3660), Out(None, None),
                 id="the run was cancelled: nothing to expire"),
    pytest.param(waiting(RECONCILE), approval(), at(3660), Out(None, None),
                 id="the run waits for another approval: nothing to expire"),
])
def test_expire_approval(before: RunHead, read: Approval, now: datetime, expect: Out | Raises) -> None:
    verify(lambda: decisions.expire_approval(before, read, now), before, now, expect)


# --- defer_call ---------------------------------------------------------------------------------------------

RETRY_AT = NOW + timedelta(seconds=30)


@pytest.mark.parametrize(("before", "owner", "expect"), [
    pytest.param(running(generation=1), A.owner,
                 Out(None, {"status": RunStatus.waiting_timer, "wake_at": RETRY_AT, "lease": None, "generation": 2,
                            "step": 0},
                     ((K.tool_deferred, {"call_id": "call-1", "name": "pay", "retry_at": RETRY_AT.isoformat(),
                                         "reason": "429 Too Many Requests"}),), step=1),
                 id="RetryLater: the step waits for a timer under a new task generation; not committed"),
    pytest.param(running(B), A.owner, Raises(LeaseLost), id="fenced: taken over"),
    pytest.param(head(RunStatus.cancelled), A.owner, Raises(LeaseLost, "cancelled"), id="fenced: cancelled"),
])
def test_defer_call(before: RunHead, owner: str, expect: Out | Raises) -> None:
    verify(lambda: decisions.defer_call(before, owner, 1, CALL, RETRY_AT, "429 Too Many Requests", NOW),
           before, NOW, expect)


# --- record_late_result -------------------------------------------------------------------------------------

LATE = {"call_id": "call-1", "name": "pay", "ok": True, "output": {"paid": 250}, "owner": A.owner, "intent_seq": 2,
        "at": NOW.isoformat()}
RETRIED = RECONCILE.model_copy(update={"status": ApprovalStatus.resolved, "resolution": Decision.retry,
                                       "decided_by": "ops@example.com"})
FACTS = "settled by the facts: attempt dev--run_1--s000001#0@a, which had lost its lease, reported at"


@pytest.mark.parametrize(("before", "ok", "read", "continue_at", "expect"), [
    pytest.param(running(B), True, None, None,
                 Out(Late.recorded, {"status": RunStatus.running, "lease": lease_of(B)},
                     ((K.tool_late_result, {**LATE, "continue_at": ABSENT}),), step=1),
                 id="no reconciliation yet (the taker has not asked): the event alone, no fence"),
    pytest.param(waiting(RECONCILE), True, RECONCILE, None,
                 Out(Late.settled, resumed(),
                     ((K.tool_late_result, LATE),
                      decided("done", "reconcile", approval_id=RECONCILE_ID, by=SYSTEM, decision_id=None)), step=1,
                     approvals=({"status": ApprovalStatus.resolved, "resolution": Decision.done, "decided_by": SYSTEM,
                                 "decided_at": NOW, "late_result": LATE},)),
                 id="a pending reconciliation is settled done by the facts and the run resumes"),
    pytest.param(waiting(RECONCILE), False, RECONCILE, None,
                 Out(Late.settled, resumed(), ((K.tool_late_result, {"ok": False}), decided("done", "reconcile")),
                     approvals=({"resolution": Decision.done},)),
                 id="a call that returned an error settles it all the same (it happened)"),
    pytest.param(head(RunStatus.queued, generation=3), True, RETRIED, None,
                 Out(Late.attached, {"status": RunStatus.queued, "generation": 3}, ((K.tool_late_result, LATE),),
                     approvals=({"status": ApprovalStatus.resolved, "resolution": Decision.retry,
                                 "decided_by": "ops@example.com", "late_result": LATE, "updated_at": NOW},)),
                 id="settled already (retry): the result is attached for the operator, the decision stands"),
    pytest.param(head(RunStatus.queued), True, RETRIED.model_copy(update={"late_result": {"ok": False}}), None,
                 Out(Late.recorded, {}, ((K.tool_late_result, LATE),)),
                 id="a reconciliation that has a late result already keeps the first"),
    pytest.param(head(RunStatus.succeeded, step=3), True, None, None,
                 Out(Late.recorded, {"status": RunStatus.succeeded, "step": 3}, ((K.tool_late_result, LATE),)),
                 id="the run finished meanwhile: recorded as a fact"),
    pytest.param(head(RunStatus.cancelled), True, None, None,
                 Out(Late.recorded, {"status": RunStatus.cancelled}, ((K.tool_late_result, LATE),)),
                 id="the run was cancelled meanwhile: recorded as a fact"),
    pytest.param(running(B), True, None, LATER,
                 Out(Late.recorded, {}, ((K.tool_late_result, {"continue_at": LATER.isoformat()}),)),
                 id="a ContinueLater result keeps its continue time"),
    pytest.param(waiting(), True, None, None, Out(Late.recorded, {"status": RunStatus.waiting_approval,
                                                                   "approval_id": APPROVAL_ID},
                                                  ((K.tool_late_result, LATE),)),
                 id="the run waits for another call's approval: the event alone"),
    pytest.param(waiting(RECONCILE), True, None, None, Raises(ApprovalMoved, RECONCILE_ID),
                 id="the run waits for the reconciliation but it was not read: read it"),
    pytest.param(head(RunStatus.queued), True, RECONCILE, None, Raises(ApprovalMoved),
                 id="read pending, but it was settled since: read it again"),
    pytest.param(waiting(RECONCILE), True, approval("reconcile", approval_id="apr_round1"), None,
                 Raises(ApprovalMoved), id="a reconciliation of another round read: read the expected one"),
])
def test_record_late_result(before: RunHead, ok: bool, read: Approval | None, continue_at: datetime | None,
                            expect: Out | Raises) -> None:
    output = {"paid": 250} if ok else {"error": "declined"}
    m = verify(lambda: decisions.record_late_result(before, A.owner, 1, CALL, ok, output, 2, 0, read, NOW,
                                                    continue_at), before, NOW, expect)
    if m is not None and m.value == Late.settled:
        outcome = "succeeded" if ok else "returned an error"
        comment = m.approvals[0].comment
        assert comment.startswith(FACTS) and f"the call {outcome}; the run goes on with that result" in comment
        assert m.events[1].data["comment"] == comment


# --- reconcile_reason ---------------------------------------------------------------------------------------

TAIL = (". If that attempt is still running and its call returns, the result is recorded here and settles this "
        "reconciliation by itself. Otherwise say whether the call happened (done), should be made again (retry), "
        "or the run should stop (fail).")
OPENING = "pay is not idempotent, and it is not known whether this call of it happened: "


@pytest.mark.parametrize(("facts", "said"), [
    pytest.param(Uncertainty(owner=A.owner, announced_at=at(60), lease_until=at(120), taken_over_by=B.owner,
                             taken_over_at=at(121)),
                 f"attempt {A.owner} announced the call at 2026-01-01T00:01:00+00:00 and has not reported back; "
                 "its lease expired at 2026-01-01T00:02:00+00:00 without being renewed, so it was presumed dead, "
                 f"and attempt {B.owner} took the step over at 2026-01-01T00:02:01+00:00",
                 id="everything known: who announced it when, the lease's end, who took over when"),
    pytest.param(Uncertainty(), "an earlier attempt announced the call and has not reported back",
                 id="nothing known beyond the intent"),
    pytest.param(Uncertainty(owner=A.owner, announced_at=at(60)),
                 f"attempt {A.owner} announced the call at 2026-01-01T00:01:00+00:00 and has not reported back",
                 id="no takeover recorded"),
    pytest.param(Uncertainty(owner=A.owner, taken_over_by=B.owner),
                 f"attempt {A.owner} announced the call and has not reported back, and attempt {B.owner} took the "
                 "step over", id="times unknown are left out"),
    pytest.param(Uncertainty(announced_at=at(60.5)),
                 "an earlier attempt announced the call at 2026-01-01T00:01:00+00:00 and has not reported back",
                 id="times are shown to the second"),
])
def test_reconcile_reason(facts: Uncertainty, said: str) -> None:
    assert decisions.reconcile_reason(CALL, facts) == OPENING + said + TAIL


# --- the functions compose: one step, end to end, on the pure core ------------------------------------------

def test_a_step_through_the_pure_core_writes_a_gapless_history() -> None:
    """claim, model response, tool result, approval, decision, resumed claim, commit: every mutation continues
    the sequence of the head it was given, so the events of a step are numbered without gaps or overlaps."""
    events: list[Event] = []

    def apply(m: Mutation[Any]) -> RunHead:
        assert m.head is not None
        check_continues(h.seq, m.events)
        events.extend(m.events)
        return m.head

    h = head(seq=1)
    h = apply(decisions.claim(h, A, NOW, LEASE))
    h = apply(decisions.record_model_response(h, A.owner, 1, response(NEXT, CALL), "gemini", 0.01, NOW, NEXT))
    h = apply(decisions.record_tool_result(h, A.owner, 1, NEXT, True, {"ok": 1}, None, NOW))
    requested = decisions.request_approval(h, A.owner, 1, CALL, POLICY, NOW)
    h = apply(requested)
    assert requested.value is not None
    h = apply(decisions.decide_approval(h, requested.value, decision(Decision.approve), NOW))
    assert h.status == RunStatus.queued and h.generation == 1
    h = apply(decisions.claim(h, B, NOW, LEASE))
    h = apply(decisions.record_intent(h, B.owner, 1, CALL, NOW))
    h = apply(decisions.record_tool_result(h, B.owner, 1, CALL, True, {"paid": 250}, None, NOW))
    h = apply(decisions.complete_step(h, B.owner, 1, says(NEXT, CALL), NOW))
    assert (h.step, h.status, h.lease) == (1, RunStatus.running, None)
    assert [e.seq for e in events] == list(range(2, 2 + len(events)))
    assert [e.kind for e in events] == [
        K.step_started, K.model_response, K.tool_intent, K.tool_result, K.approval_requested, K.approval_decided,
        K.step_started, K.tool_intent, K.tool_result, K.step_completed]
    with pytest.raises(StaleDelivery):
        decisions.claim(h, A, NOW, LEASE)


def test_the_last_result_and_the_commit_are_one_write_equal_to_the_two() -> None:
    """``record_last_result`` is ``record_tool_result`` then ``complete_step``, as one mutation: the same head and
    the same events, in the same order, fenced the same way."""
    call = FunctionCall(id="c1", name="tick", args={"n": 1})
    message = Message(role="model", parts=[Part(function_call=call)])
    now = NOW + timedelta(seconds=5)
    head = running()
    owner = A.owner
    one = decisions.record_last_result(head, owner, 1, call, True, {"n": 1}, now, None, message, None)
    first = decisions.record_tool_result(head, owner, 1, call, True, {"n": 1}, None, now)
    assert first.head is not None
    two = decisions.complete_step(first.head, owner, 1, message, now)
    assert one.head == two.head and [e.kind for e in one.events] == [*(e.kind for e in first.events),
                                                                     *(e.kind for e in two.events)]
    assert [e.seq for e in one.events] == list(range(head.seq + 1, head.seq + 1 + len(one.events)))
    with pytest.raises(LeaseLost):
        decisions.record_last_result(head, "someone-else", 1, call, True, {"n": 1}, now, None, message, None)
