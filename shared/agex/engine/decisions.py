"""Pure decisions of the step protocol: each takes the run head read in a transaction and returns the
``Mutation`` to commit. No I/O, no clock, no randomness: time and identities are arguments.

Why the protocol is safe under redelivery and crashes (see docs/architecture.md):
- ``head.step`` is a fencing sequence number: only the task for step ``head.step + 1`` may work, so a
  duplicate or stale task finds its step committed and is acknowledged without a write;
- a step is worked by the holder of the lease alone, and every write of the step checks the lease, so
  an attempt that was taken over cannot write after the one that took over; a live holder renews its
  lease (``renew_lease``), and only an expired lease is taken over;
- what a step learns (the model's response, each tool's result) is written as it is learned, so a
  retried step reuses it instead of paying for it, or doing it, twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from agex.core.approval import (
    Approval,
    ApprovalKind,
    ApprovalPolicy,
    ApprovalStatus,
    Decision,
    DecisionMessage,
    approval_id,
    redact,
)
from agex.core.errors import Conflict, LeaseHeld, LeaseLost, NotDue, StaleDelivery
from agex.core.messages import FunctionCall, Message, ModelResponse
from agex.core.run import CALLS_SEEN_KEPT, ISSUED, Event, EventKind, Lease, RunError, RunHead, RunStatus
from agex.core.spend import LEDGER_RETENTION, SpendEntry
from agex.engine.conversation import Uncertainty
from agex.engine.window import Carried
from agex.ports.checkpoint_store import Mutation
from agex.ports.task_queue import StepTask

TIMER_TOLERANCE = timedelta(seconds=1)
"""A timer task may arrive this much before ``wake_at`` (clocks of machines differ) and still run."""


@dataclass(frozen=True)
class Delivery:
    """One delivery attempt of one step task, as Cloud Tasks describes it in its headers."""

    tenant: str
    run_id: str
    step: int
    task_name: str
    attempt: int
    """``X-CloudTasks-TaskRetryCount``. It proves nothing about earlier attempts: Cloud Tasks dispatches a
    task again while an attempt is still running (``RunTask``, or a retry after the dispatch deadline),
    so a higher attempt is refused like any other delivery while the lease is live."""
    instance: str
    carried: Carried | None = None
    """The context window the task carries, if it does (``agex.engine.window``): used only if the head sealed it."""

    @property
    def owner(self) -> str:
        return f"{self.task_name}#{self.attempt}@{self.instance}"

    @classmethod
    def of(cls, task: StepTask, attempt: int, instance: str, task_name: str | None = None) -> Delivery:
        """The delivery of ``task`` (``task_name``: the queue's name for it, if it says)."""
        carried = Carried(task.window_through, task.window) if task.window_through is not None and task.window else None
        return cls(tenant=task.tenant, run_id=task.run_id, step=task.step, task_name=task_name or task.name,
                   attempt=attempt, instance=instance, carried=carried)


class Claim(StrEnum):
    work = "work"
    finished = "finished"


def _events(head: RunHead, now: datetime, step: int, *items: tuple[EventKind, dict[str, Any]]) -> list[Event]:
    return [
        Event(seq=head.seq + i, step=step, kind=kind, at=now, expire_at=head.expire_at, data=data)
        for i, (kind, data) in enumerate(items, start=1)
    ]


def _advance(head: RunHead, now: datetime, events: list[Event], **changes: Any) -> RunHead:
    return head.model_copy(update={"seq": head.seq + len(events), "updated_at": now, **changes})


def finish(head: RunHead, now: datetime, status: RunStatus, *, result: str | None = None,
           error: RunError | None = None, step: int | None = None,
           extra: tuple[tuple[EventKind, dict[str, Any]], ...] = (), shown: str | None = None) -> Mutation[Claim]:
    """End the run: terminal status, no lease, a ``run_finished`` event. ``shown``: the result as events
    may show it (personal data redacted), when it differs from ``result``."""
    at_step = head.step if step is None else step
    summary = {"status": status.value, "result": shown if shown is not None else result,
               "error": error.model_dump() if error else None,
               "usage": head.usage.model_dump()}
    events = _events(head, now, at_step, *extra, (EventKind.run_finished, summary))
    new = _advance(head, now, events, status=status, lease=None, result=result, error=error, approval_id=None,
                   wake_at=None)
    return Mutation(new, events, Claim.finished)


EXPIRED = RunError(code="expired", message="the run passed its 7-day retention and expired")


def as_seen(head: RunHead, now: datetime) -> RunHead:
    """The head as readers must see it: past its retention a run is expired even before a step or the
    sweep has written so (Firestore TTL and the sweep both lag)."""
    if head.status.terminal or now < head.expire_at:
        return head
    return head.model_copy(update={"status": RunStatus.expired, "lease": None, "error": EXPIRED, "approval_id": None,
                                   "wake_at": None})


def expire(head: RunHead, now: datetime) -> Mutation[Claim]:
    """End a run past its retention; the Firestore TTL policy deletes it some time after."""
    if head.status.terminal:
        return Mutation(None)
    return finish(head, now, RunStatus.expired, error=EXPIRED)


def claim(head: RunHead, d: Delivery, now: datetime, lease_seconds: float,
          migrate_to: str | None = None) -> Mutation[Claim]:
    """Take the lease of step ``d.step``, or refuse the delivery. ``migrate_to``: the version a declared rule
    moves the run to from this step on, recorded (``run_migrated``) in the same commit."""
    if head.status.terminal:
        raise StaleDelivery(f"run {head.run_id} is already {head.status.value}")
    if d.step <= head.step:
        raise StaleDelivery(f"step {d.step} of run {head.run_id} is already committed (at step {head.step})")
    if d.step > head.step + 1:
        raise StaleDelivery(f"step {d.step} is ahead of run {head.run_id} (at step {head.step}); ignored")
    if head.status == RunStatus.waiting_timer and head.wake_at and now < head.wake_at - TIMER_TOLERANCE:
        raise NotDue(f"run {head.run_id} waits until {head.wake_at.isoformat()}; this task came early")
    if head.status not in (RunStatus.queued, RunStatus.running, RunStatus.waiting_timer):
        raise StaleDelivery(f"run {head.run_id} is {head.status.value}; its step task is not due")
    if now >= head.expire_at:
        return expire(head, now)
    if now - head.created_at > timedelta(seconds=head.limits.max_wall_time_s):
        return finish(head, now, RunStatus.failed, error=RunError(
            code="max_wall_time", message=f"the run exceeded its wall-time limit of {head.limits.max_wall_time_s} s"))
    lease = head.lease
    # An issued lease is taken by a claim whatever its expiry: nothing was written under it, and a first delivery
    # that may be working under it (calling the model) fails its first write's fence and stops.
    if lease and lease.step == d.step and lease.until > now and not lease.issued:
        # A live lease is never taken over, whoever asks: its holder renews it while it works, so it is
        # alive or only just died. Not even a later attempt of the same task: Cloud Tasks dispatches a
        # task again while an attempt still runs (RunTask; a retry after the dispatch deadline).
        if lease.owner == d.owner:
            raise LeaseHeld(f"step {d.step} of run {head.run_id}: this delivery is already in progress")
        raise LeaseHeld(f"step {d.step} of run {head.run_id} is being worked by {lease.owner}, whose lease runs "
                        f"until {lease.until.isoformat()} and is renewed while it works; try again later")
    # an issued lease nobody wrote under is no takeover: nothing of the step was written
    resumed = lease is not None and lease.step == d.step and not lease.issued
    # a lease issued to a task whose first delivery may not be this one (a retry, another task, or a lease that ran
    # out): that delivery may have called the model and died, or be calling it still, without a trace; the run's
    # metrics count it as a possible lost call (an upper bound, as for every attempt that left no response)
    after_issued = (lease is not None and lease.step == d.step and lease.issued
                    and (d.attempt > 0 or lease.task != d.task_name or lease.until <= now))
    moved = () if migrate_to is None or migrate_to == head.agent_version else (
        (EventKind.run_migrated, {"from_version": head.agent_version, "to_version": migrate_to,
                                  "rule": "fleet file migrate"}),)
    events = _events(head, now, d.step, *moved, (EventKind.step_started, {
        "attempt": d.attempt, "task": d.task_name, "owner": d.owner, "resumed": resumed,
        **({"previous_owner": lease.owner, "previous_until": lease.until.isoformat()}
           if resumed and lease else {}), **({"issued_to": lease.task} if after_issued and lease else {})}))
    new_lease = Lease(owner=d.owner, task=d.task_name, attempt=d.attempt, step=d.step,
                      until=now + timedelta(seconds=lease_seconds))
    version = migrate_to if moved else head.agent_version
    return Mutation(_advance(head, now, events, status=RunStatus.running, lease=new_lease, wake_at=None,
                             agent_version=version), events, Claim.work)


def renew_lease(head: RunHead, owner: str, step: int, now: datetime, lease_seconds: float) -> Mutation[bool]:
    """The heartbeat of a live attempt: its lease now ends ``lease_seconds`` from ``now`` (never earlier
    than it did). Writes the head only, no event. Value False, nothing written, when the lease ended
    (the attempt released it with its last write, or the run stopped running this step); raises
    ``LeaseLost`` when another attempt holds it."""
    lease = head.lease
    if lease is not None and lease.step == step and lease.owner != owner:
        raise LeaseLost(f"step {step} of run {head.run_id}: {lease.owner} took the lease over")
    if head.status != RunStatus.running or lease is None or lease.owner != owner or head.step + 1 != step:
        return Mutation(None, value=False)
    until = max(lease.until, now + timedelta(seconds=lease_seconds))
    return Mutation(head.model_copy(update={"lease": lease.model_copy(update={"until": until})}), value=True)


def adopts(head: RunHead, d: Delivery, now: datetime, lease_seconds: float, migrate_to: str | None = None) -> bool:
    """Whether ``d`` may work its step without a claim of its own: the first delivery of the task the last commit
    issued the step's lease to, with most of that lease left, and nothing for a claim to decide (no expiry, wall
    time or migration). Its first write takes the lease (``take_issued``); until then it writes nothing."""
    lease = head.lease
    return (lease is not None and lease.issued and lease.task == d.task_name and lease.step == d.step
            and d.attempt == 0 and head.status == RunStatus.running and head.step + 1 == d.step
            and (lease.until - now).total_seconds() >= lease_seconds * 2 / 3
            and now < head.expire_at and now - head.created_at <= timedelta(seconds=head.limits.max_wall_time_s)
            and (migrate_to is None or migrate_to == head.agent_version))


def take_issued(head: RunHead, d: Delivery, now: datetime, lease_seconds: float) -> tuple[RunHead, list[Event]]:
    """The head with the issued lease taken by ``d`` and the ``step_started`` event that records it, for the first
    write of a delivery that ``adopts`` its step; the head unchanged when the lease is not issued to ``d``'s task
    (taken already, by ``d`` or by a claim: the write's fence decides)."""
    lease = head.lease
    if lease is None or not lease.issued or lease.task != d.task_name or lease.step != d.step:
        return head, []
    events = _events(head, now, d.step, (EventKind.step_started, {
        "attempt": d.attempt, "task": d.task_name, "owner": d.owner, "resumed": False, "issued": True}))
    taken = Lease(owner=d.owner, task=d.task_name, attempt=d.attempt, step=d.step,
                  until=max(lease.until, now + timedelta(seconds=lease_seconds)))
    return _advance(head, now, events, lease=taken), events


def check_fence(head: RunHead, owner: str, step: int) -> None:
    """Every write of a step goes through here: only the lease holder of the current step may write."""
    if head.status != RunStatus.running or head.lease is None or head.lease.owner != owner or head.step + 1 != step:
        if head.status != RunStatus.running:
            why = f"the run is {head.status.value}"
        elif head.lease is not None and head.lease.owner != owner:
            why = f"{head.lease.owner} took the step over after this attempt's lease expired"
        else:
            why = "the lease moved on"
        raise LeaseLost(f"step {step} of run {head.run_id}: stopped writing because {why}")


def idempotency_key(head: RunHead, step: int, call: FunctionCall) -> str:
    return f"{head.run_id}:{step}:{call.id}"


def intent_event(head: RunHead, owner: str, step: int, call: FunctionCall) -> tuple[EventKind, dict[str, Any]]:
    # the arguments are in the step's model_response event already; the intent only names the call, and
    # the attempt about to make it (what a reconciliation tells the operator)
    return (EventKind.tool_intent, {"call_id": call.id, "name": call.name,
                                    "idempotency_key": idempotency_key(head, step, call), "owner": owner})


def record_model_response(head: RunHead, owner: str, step: int, response: ModelResponse, model: str,
                          cost_usd: float, now: datetime, announce: FunctionCall | None = None, *,
                          message: dict[str, Any] | None = None, verdicts: tuple[dict[str, Any], ...] = (),
                          blocked: RunError | None = None, input_view: str | None = None,
                          route: dict[str, Any] | None = None,
                          recalled: tuple[str, list[dict[str, Any]]] | None = None) -> Mutation[Claim]:
    """Record what the model said (so a retry reuses it), its usage, and the intent of ``announce`` (the
    first tool call, unless it must wait for approval); or end the run if the usage went over a limit.

    Guardrails: ``message``, the stored fields of the message as the chain left it (its record view and
    restricted views, ``guarding.Guarded.stored``); ``verdicts``, the ``guard_verdict`` events of the
    step's input, answer and calls, written first; ``blocked``: a guard blocked the run, which ends here;
    ``input_view``: what the model is shown of the run's input from now on. ``route``: why ``model`` answered
    and not the agent's own (the models that could not, and why), when it is a fallback. ``recalled``: the note of
    memories the model was shown and what they were, fixed on the head and recorded (``memory_recalled``) first."""
    check_fence(head, owner, step)
    tokens = response.usage.input_tokens + response.usage.output_tokens
    usage = head.usage.add(response.usage.input_tokens, response.usage.output_tokens, cost_usd)
    record = (EventKind.model_response, {
        "model": model, "model_version": response.model_version, "finish_reason": response.finish_reason,
        **(message or {"message": response.message.model_dump(mode="json", exclude_none=True)}),
        "usage": {**response.usage.model_dump(exclude={"cached_input_tokens"} if not response.usage.cached_input_tokens
                                              else set()), "cost_usd": cost_usd}, **({"route": route} if route else {})})
    guarded = tuple((EventKind.guard_verdict, v) for v in verdicts)
    if recalled is not None:
        guarded = ((EventKind.memory_recalled, {"memories": recalled[1]}), *guarded)
    head = head.model_copy(update={"usage": usage, **({"input_view": input_view} if input_view is not None else {}),
                                   **({"recalled": recalled[0]} if recalled is not None else {})})
    limits = head.limits
    over = None
    seen, repeated = _count_calls(head.calls_seen, response.message.function_calls)
    head = head.model_copy(update={"calls_seen": seen})
    if blocked is None and usage.input_tokens + usage.output_tokens > limits.max_tokens:
        over = RunError(code="max_tokens", message=f"the run used {usage.input_tokens + usage.output_tokens} "
                        f"tokens, over its limit of {limits.max_tokens} (this call used {tokens})")
    elif blocked is None and usage.cost_usd > limits.max_cost_usd:
        over = RunError(code="max_cost", message=f"the run cost ${usage.cost_usd:.6f}, over its limit of "
                        f"${limits.max_cost_usd:.6f}")
    elif blocked is None and repeated is not None and repeated[0] > limits.max_repeated_calls:
        over = RunError(code="repeated_call", message=(
            f"the model asked for {repeated[1]} with the same arguments {repeated[0]} times, over the run's "
            f"limit of {limits.max_repeated_calls}: a loop, stopped before the call was made"))
    if blocked is not None or over is not None:
        ended = finish(head, now, RunStatus.failed, error=blocked or over, step=step, extra=(*guarded, record))
        return replace(ended, spend=_spent(head, ended.events, model, cost_usd, tokens))
    items = [*guarded, record] + ([intent_event(head, owner, step, announce)] if announce else [])
    events = _events(head, now, step, *items)
    return Mutation(_advance(head, now, events), events, Claim.work, spend=_spent(head, events, model, cost_usd, tokens))


def call_digest(call: FunctionCall) -> str:
    """The same tool with the same arguments has the same digest, whatever their order."""
    canonical = json.dumps({"name": call.name, "args": call.args}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _count_calls(seen: Sequence[str], calls: Sequence[FunctionCall]) -> tuple[list[str], tuple[int, str] | None]:
    """``seen`` with ``calls`` counted, and the count and tool of the call asked most often now. Only the
    ``CALLS_SEEN_KEPT`` most asked are kept, the most recent of equals: a loop stays, being asked more than
    anything else, and a call asked once makes way for the next."""
    counts: dict[str, int] = {}
    for item in seen:
        digest, _, asked = item.partition(":")
        counts[digest] = int(asked)
    top: tuple[int, str] | None = None
    for call in calls:
        key = call_digest(call)
        n = counts.pop(key, 0) + 1
        counts[key] = n  # the dict keeps recency: asked last, last
        if top is None or n > top[0]:
            top = (n, call.name)
    order = list(counts)
    kept = sorted(sorted(range(len(order)), key=lambda i: (-counts[order[i]], -i))[:CALLS_SEEN_KEPT])
    return [f"{order[i]}:{counts[order[i]]}" for i in kept], top


def _spent(head: RunHead, events: Sequence[Event], model: str, cost_usd: float, tokens: int) -> tuple[SpendEntry, ...]:
    """The ledger entry of the call whose response ``events`` record, named by that event."""
    seq = next(e.seq for e in events if e.kind == EventKind.model_response)
    at = next(e.at for e in events if e.kind == EventKind.model_response)
    return (SpendEntry(entry_id=f"{head.run_id}-{seq}", tenant=head.tenant, principal=head.principal,
                       agent=head.agent, run_id=head.run_id, model=model, at=at, cost_usd=cost_usd, tokens=tokens,
                       expire_at=at + LEDGER_RETENTION),)


def record_tool_result(head: RunHead, owner: str, step: int, call: FunctionCall, ok: bool,
                       output: dict[str, Any], next_call: FunctionCall | None, now: datetime,
                       continue_at: datetime | None = None, *, stored: dict[str, Any] | None = None,
                       verdict: dict[str, Any] | None = None) -> Mutation[None]:
    """Record one tool's result and, in the same write, the intent of the next call of the step.
    ``continue_at``: the tool asked the run to wait until then before its next step. ``stored``: the
    output's fields as the guardrail chain left it (``guarding.Guarded.stored``), in place of ``output``;
    ``verdict``: its ``guard_verdict`` event, written right after the result."""
    check_fence(head, owner, step)
    result: dict[str, Any] = {"call_id": call.id, "name": call.name, "ok": ok, **(stored or {"output": output})}
    if continue_at is not None:
        result["continue_at"] = continue_at.isoformat()
    items = [(EventKind.tool_result, result)]
    if verdict is not None:
        items.append((EventKind.guard_verdict, verdict))
    if next_call:
        items.append(intent_event(head, owner, step, next_call))
    events = _events(head, now, step, *items)
    return Mutation(_advance(head, now, events), events)


def record_last_result(head: RunHead, owner: str, step: int, call: FunctionCall, ok: bool, output: dict[str, Any],
                       now: datetime, continue_at: datetime | None, message: Message, wake_at: datetime | None, *,
                       stored: dict[str, Any] | None = None, verdict: dict[str, Any] | None = None,
                       shown: str | None = None, issue_seconds: float | None = None) -> Mutation[Claim]:
    """The step's last result and the step's commit in one write: nothing happens between them that a crash
    could split, so one commit does what two did (``record_tool_result`` then ``complete_step``). ``wake_at``:
    the latest time a tool of the step asked to continue at, this one's included."""
    recorded = record_tool_result(head, owner, step, call, ok, output, None, now, continue_at, stored=stored,
                                  verdict=verdict)
    assert recorded.head is not None
    completed = complete_step(recorded.head, owner, step, message, now, wake_at, shown=shown, issue_seconds=issue_seconds)
    return Mutation(completed.head, [*recorded.events, *completed.events], completed.value)


def record_intent(head: RunHead, owner: str, step: int, call: FunctionCall, now: datetime) -> Mutation[None]:
    """The intent of a call whose predecessor's result was written by an earlier attempt."""
    check_fence(head, owner, step)
    events = _events(head, now, step, intent_event(head, owner, step, call))
    return Mutation(_advance(head, now, events), events)


def fail_step(head: RunHead, owner: str, step: int, error: RunError, now: datetime,
              verdicts: tuple[dict[str, Any], ...] = ()) -> Mutation[Claim]:
    """End the run as failed; ``verdicts``: the ``guard_verdict`` events that failed it, written first."""
    check_fence(head, owner, step)
    return finish(head, now, RunStatus.failed, error=error, step=step,
                  extra=tuple((EventKind.guard_verdict, v) for v in verdicts))


def complete_step(head: RunHead, owner: str, step: int, message: Message, now: datetime,
                  wake_at: datetime | None = None, shown: str | None = None,
                  issue_seconds: float | None = None) -> Mutation[Claim]:
    """Evaluate the step and commit it: done, over the step limit, or on to the next step (at
    ``wake_at`` when a tool asked to continue later). ``shown``: the answer as events may show it.
    ``issue_seconds``: a next step due now gets its lease, this long, issued to its task (``adopts``)."""
    check_fence(head, owner, step)
    calls = message.function_calls
    evaluation = {"tool_calls": len(calls), "done": not calls}
    committed = head.model_copy(update={"step": step})
    if not calls:
        if not message.text.strip():
            return finish(committed, now, RunStatus.failed, step=step, extra=((EventKind.step_completed, evaluation),),
                          error=RunError(code="model_error", message="the model returned neither text nor tool calls"))
        return finish(committed, now, RunStatus.succeeded, result=message.text, step=step,
                      extra=((EventKind.step_completed, evaluation),), shown=shown)
    if step >= head.limits.max_steps:
        return finish(committed, now, RunStatus.failed, step=step, extra=((EventKind.step_completed, evaluation),),
                      error=RunError(code="max_steps", message=f"the run reached its limit of "
                                     f"{head.limits.max_steps} steps without a final answer"))
    tokens, throttled = _step_rate(head, now)
    committed = committed.model_copy(update={"step_tokens": tokens, "step_tokens_at": now})
    reason = "a tool asked to continue later"
    if throttled is not None and (wake_at is None or throttled > wake_at):
        wake_at, reason = throttled, (f"step_rate: the run steps faster than its limit of "
                                      f"{head.limits.max_steps_per_minute} a minute")
    if wake_at is not None and wake_at > now:
        events = _events(committed, now, step, (EventKind.step_completed, evaluation),
                         (EventKind.timer_set, {"wake_at": wake_at.isoformat(), "reason": reason}))
        return Mutation(_advance(committed, now, events, lease=None, status=RunStatus.waiting_timer, wake_at=wake_at),
                        events, Claim.work)
    events = _events(committed, now, step, (EventKind.step_completed, evaluation))
    issued = None
    if issue_seconds is not None:
        task = StepTask.next_of(committed).name
        issued = Lease(owner=f"{task}#issued", task=task, attempt=ISSUED, step=step + 1,
                       until=now + timedelta(seconds=issue_seconds))
    return Mutation(_advance(committed, now, events, lease=issued), events, Claim.work)


def _step_rate(head: RunHead, now: datetime) -> tuple[float, datetime | None]:
    """The step-rate bucket after this step took a token, and when the next may start if none is left: the
    bucket holds ``max_steps_per_minute`` and refills at that rate."""
    per_minute = head.limits.max_steps_per_minute
    rate = per_minute / 60.0
    tokens = float(per_minute)
    if head.step_tokens is not None and head.step_tokens_at is not None:
        elapsed = max((now - head.step_tokens_at).total_seconds(), 0.0)
        tokens = min(float(per_minute), head.step_tokens + elapsed * rate)
    tokens -= 1.0
    if tokens >= 1.0:
        return tokens, None
    return tokens, now + timedelta(seconds=(1.0 - tokens) / rate)


class ApprovalMoved(Exception):
    """The approval read before the transaction is not the one the run waits for now: read again."""


def cancel(head: RunHead, principal: str, now: datetime, approval: Approval | None = None) -> Mutation[None]:
    """Cancel an unfinished run; the approval it waits for (read beforehand) is cancelled with it."""
    if head.status.terminal or now >= head.expire_at:
        raise Conflict(f"run {head.run_id} is already {as_seen(head, now).status.value}; only an unfinished run can "
                       "be cancelled")
    approvals: list[Approval] = []
    if head.approval_id is not None:
        if approval is None or approval.approval_id != head.approval_id:
            raise ApprovalMoved(head.approval_id)
        approvals.append(approval.model_copy(update={"status": ApprovalStatus.cancelled, "decided_by": principal,
                                                     "decided_at": now, "updated_at": now}))
    events = _events(head, now, head.step, (EventKind.run_cancelled, {"by": principal}))
    new = _advance(head, now, events, status=RunStatus.cancelled, lease=None, approval_id=None, wake_at=None)
    return Mutation(new, events, approvals=approvals)


def reenqueue(head: RunHead, now: datetime, stale_before: datetime) -> Mutation[int]:
    """The sweep's decision for an active run whose step task was lost: a new task generation."""
    if head.status == RunStatus.waiting_timer:
        if head.wake_at is None or head.wake_at > stale_before:
            return Mutation(None)
    elif head.status not in (RunStatus.queued, RunStatus.running) or head.updated_at > stale_before:
        return Mutation(None)
    if head.lease and head.lease.until > now:
        return Mutation(None)
    generation = head.generation + 1
    events = _events(head, now, head.step + 1, (EventKind.sweep_reenqueued, {"generation": generation}))
    return Mutation(_advance(head, now, events, generation=generation), events, generation)


# --- approvals and timers -------------------------------------------------------------------------

class EventsMoved(Exception):
    """Events were written since the caller read them (a late result, by an attempt that lost its
    lease): read them again before deciding."""


def reconcile_approval_id(run_id: str, step: int, call_id: str, round: int) -> str:
    """The reconciliation of the ``round``-th uncertain call of ``call_id``: known to the attempt that
    makes the call before anyone opens it, so a late result finds it."""
    return approval_id(run_id, step, call_id, f"#reconcile{round}")


def request_approval(head: RunHead, owner: str, step: int, call: FunctionCall, policy: ApprovalPolicy,
                     now: datetime, kind: ApprovalKind = "approval",
                     round: int = 0, seen_seq: int | None = None,
                     personal: tuple[str, ...] = ()) -> Mutation[Approval]:
    """Park the run on a human decision: record the approval, release the lease, and wait. Nothing runs
    until the decision (or the expiry task) resumes the run. ``kind="reconcile"``: the decision is what
    became of a non-idempotent call that an attempt may have made (``round`` counts such asks).
    ``seen_seq``: the caller decided on the events up to it; raise ``EventsMoved`` if more were written
    since (a late result that makes the question moot). ``personal``: argument paths holding personal
    data, redacted in what the approval shows like the policy's own ``redact`` paths."""
    check_fence(head, owner, step)
    if seen_seq is not None and head.seq != seen_seq:
        raise EventsMoved(f"run {head.run_id} has events after {seen_seq}")
    expires = min(now + timedelta(seconds=policy.expires_after_s), head.expire_at)
    hidden = tuple(dict.fromkeys((*policy.redact, *personal)))
    approval = Approval(
        approval_id=(reconcile_approval_id(head.run_id, step, call.id, round) if kind == "reconcile"
                     else approval_id(head.run_id, step, call.id)),
        kind=kind, tenant=head.tenant, run_id=head.run_id, agent=head.agent, agent_version=head.agent_version,
        step=step, call_id=call.id, tool=call.name, arguments=redact(call.args, hidden),
        call_arguments=dict(call.args), redact=list(hidden), reason=policy.reason,
        approvers=list(policy.approvers), four_eyes=policy.four_eyes, allow_edits=policy.allow_edits,
        on_expiry=policy.on_expiry, requested_by=head.principal, created_at=now, expires_at=expires, trace=head.trace,
        updated_at=now, expire_at=head.expire_at)
    events = _events(head, now, step, (EventKind.approval_requested, {
        "approval_id": approval.approval_id, "kind": kind, "call_id": call.id, "name": call.name,
        "approvers": approval.approvers, "expires_at": expires.isoformat(), "reason": policy.reason}))
    new = _advance(head, now, events, status=RunStatus.waiting_approval, lease=None, approval_id=approval.approval_id,
                   wake_at=expires)
    return Mutation(new, events, approval, approvals=[approval])


def budget_call(name: str, standing: dict[str, Any]) -> FunctionCall:
    """The question a spent ``approve`` budget asks, in the shape of the call an approval is about."""
    return FunctionCall(id=f"budget-{name}", name=f"budget:{name}", args=standing)


def _waits_for(head: RunHead, approval: Approval) -> bool:
    return (head.status == RunStatus.waiting_approval and head.approval_id == approval.approval_id
            and approval.status == ApprovalStatus.pending)


def _settle(head: RunHead, settled: Approval, now: datetime, decision: str, by: str, comment: str,
            decision_id: str | None, arguments: dict[str, Any] | None,
            before: tuple[tuple[EventKind, dict[str, Any]], ...] = ()) -> Mutation[bool]:
    """Record how an approval was settled and put the run back in the queue, with a new task generation
    (the paused step's own task name was used already). ``before``: events written first."""
    events = _events(head, now, settled.step, *before, (EventKind.approval_decided, {
        "approval_id": settled.approval_id, "kind": settled.kind, "call_id": settled.call_id, "decision": decision,
        "by": by, "comment": comment, "decision_id": decision_id, "arguments": arguments}))
    new = _advance(head, now, events, status=RunStatus.queued, lease=None, approval_id=None, wake_at=None,
                   generation=head.generation + 1)
    return Mutation(new, events, True, approvals=[settled])


def decide_approval(head: RunHead, approval: Approval, message: DecisionMessage, now: datetime) -> Mutation[bool]:
    """Apply a decision to the run waiting for it. ``value`` False (nothing written) when the run no longer
    waits for this approval as read: the caller reads the approval again and answers from it."""
    if not _waits_for(head, approval) or now >= approval.expires_at:
        return Mutation(None, value=False)
    # only an approval runs the call with edited arguments: a rejection or a reconciliation has none to keep
    arguments = message.arguments if message.decision == Decision.approve else None
    if approval.kind == "budget":
        # the run goes on past this budget (or not) for the rest of its life: the step reads it on the head
        budget = approval.tool.removeprefix("budget:")
        head = head.model_copy(update={"budget_decisions": {
            **head.budget_decisions, budget: "approved" if message.decision == Decision.approve else "rejected"}})
    if approval.kind == "reconcile":
        status, outcome = ApprovalStatus.resolved, message.decision.value
    else:
        status = ApprovalStatus.approved if message.decision == Decision.approve else ApprovalStatus.rejected
        outcome = status.value
    settled = approval.model_copy(update={
        "status": status, "resolution": message.decision if approval.kind == "reconcile" else None,
        "decision_id": message.decision_id, "decided_by": message.principal, "decided_at": now,
        "comment": message.comment, "updated_at": now,
        "edited_arguments": redact(arguments, approval.redact) if arguments is not None else None})
    return _settle(head, settled, now, outcome, message.principal, message.comment, message.decision_id, arguments)


def settle_memory(head: RunHead, approval: Approval, seen_seq: int, now: datetime, decision: str, by: str | None,
                  comment: str, decision_id: str | None) -> Mutation[Approval]:
    """Settle a ``memory`` approval (a conflict between a fact learned and one remembered, after the run ended):
    the approval and its ``approval_decided`` event, on the run as it is. ``seen_seq``: the head's seq when the
    approval was read as pending; ``EventsMoved`` if the run changed since (another decision may have settled it),
    so two decisions never both apply."""
    if head.seq != seen_seq:
        raise EventsMoved(f"run {head.run_id} has events after {seen_seq}")
    status = {"approve": ApprovalStatus.approved, "reject": ApprovalStatus.rejected}.get(decision, ApprovalStatus.expired)
    settled = approval.model_copy(update={"status": status, "decision_id": decision_id, "decided_by": by,
                                          "decided_at": now, "comment": comment, "updated_at": now})
    events = _events(head, now, head.step, (EventKind.approval_decided, {
        "approval_id": approval.approval_id, "kind": approval.kind, "call_id": approval.call_id, "decision": decision,
        "by": by, "comment": comment, "decision_id": decision_id, "arguments": None}))
    return Mutation(_advance(head, now, events), events, settled, approvals=[settled])


def expire_approval(head: RunHead, approval: Approval, now: datetime) -> Mutation[Claim]:
    """The expiry task's decision: a still-pending approval expires, and the run goes on as after a
    rejection or fails, as the policy says. ``value`` None when there was nothing to expire."""
    if not _waits_for(head, approval):
        return Mutation(None)
    if now < approval.expires_at - TIMER_TOLERANCE:
        raise NotDue(f"approval {approval.approval_id} expires at {approval.expires_at.isoformat()}")
    comment = f"nobody decided before {approval.expires_at.isoformat()}"
    settled = approval.model_copy(update={"status": ApprovalStatus.expired, "decided_at": now, "comment": comment,
                                          "updated_at": now})
    if approval.on_expiry == "fail":
        record = (EventKind.approval_decided, {
            "approval_id": approval.approval_id, "kind": approval.kind, "call_id": approval.call_id,
            "decision": "expired", "by": None,
            "comment": comment, "decision_id": None, "arguments": None})
        ended = finish(head, now, RunStatus.failed, step=approval.step, extra=(record,), error=RunError(
            code="approval_expired", message=f"the call of {approval.tool} waited for approval "
            f"{approval.approval_id} and nobody decided before {approval.expires_at.isoformat()}"))
        return Mutation(ended.head, ended.events, Claim.finished, approvals=[settled])
    resumed = _settle(head, settled, now, "expired", "", comment, None, None)
    return Mutation(resumed.head, resumed.events, Claim.work, approvals=resumed.approvals)


def defer_call(head: RunHead, owner: str, step: int, call: FunctionCall, retry_at: datetime, reason: str,
               now: datetime) -> Mutation[None]:
    """A tool asked to be called again later and did nothing: wait for a scheduled task (a new generation
    of this step's task) instead of sleeping in the instance."""
    check_fence(head, owner, step)
    events = _events(head, now, step, (EventKind.tool_deferred, {
        "call_id": call.id, "name": call.name, "retry_at": retry_at.isoformat(), "reason": reason}))
    new = _advance(head, now, events, status=RunStatus.waiting_timer, wake_at=retry_at, lease=None,
                   generation=head.generation + 1)
    return Mutation(new, events)


# --- late results -----------------------------------------------------------------------------------

SYSTEM = "agex"
"""Who settles a reconciliation that a late result made moot (``decided_by``)."""


class Late(StrEnum):
    settled = "settled"
    """The call's reconciliation was pending: the late result settled it (``done``) and the run resumes."""
    attached = "attached"
    """Someone had settled the reconciliation already: the late result is recorded on it as a fact."""
    recorded = "recorded"
    """No reconciliation of the call (yet): the event is all; a step that reads it uses it as the result."""


def record_late_result(head: RunHead, owner: str, step: int, call: FunctionCall, ok: bool, output: dict[str, Any],
                       intent_seq: int | None, round: int, approval: Approval | None, now: datetime,
                       continue_at: datetime | None = None, stored: dict[str, Any] | None = None) -> Mutation[Late]:
    """What a call returned, reported by an attempt that lost its lease while making it: appended as a
    ``tool_late_result`` event whatever became of the run (no fence: it is a fact, not a step's write).

    ``intent_seq`` names the intent the call answers, so the result is never taken for a later call of
    the same id; ``approval``: the call's reconciliation (``reconcile_approval_id(..., round)``) as read
    before, or None. A pending one is settled by the result, ``done``, in the same commit (what an
    operator would say, now known instead of guessed), and the run resumes with the real result; a
    settled one gets the result attached, for the operator to see. Raises ``ApprovalMoved`` when the
    reconciliation read is not the one the run has now."""
    expected = reconcile_approval_id(head.run_id, step, call.id, round)
    at = now.isoformat()
    late: dict[str, Any] = {"call_id": call.id, "name": call.name, "ok": ok, **(stored or {"output": output}),
                            "owner": owner, "intent_seq": intent_seq, "at": at}
    if continue_at is not None:
        late["continue_at"] = continue_at.isoformat()
    item = (EventKind.tool_late_result, late)
    read = approval if approval is not None and approval.approval_id == expected else None
    waits = head.status == RunStatus.waiting_approval and head.approval_id == expected
    if waits != (read is not None and read.status == ApprovalStatus.pending):
        raise ApprovalMoved(expected)  # opened or settled since it was read
    if read is not None and waits:
        outcome = "succeeded" if ok else "returned an error"
        comment = (f"settled by the facts: attempt {owner}, which had lost its lease, reported at {at} that the "
                   f"call {outcome}; the run goes on with that result")
        settled = read.model_copy(update={
            "status": ApprovalStatus.resolved, "resolution": Decision.done, "decided_by": SYSTEM, "decided_at": now,
            "comment": comment, "updated_at": now, "late_result": late})
        resumed = _settle(head, settled, now, Decision.done.value, SYSTEM, comment, None, None, before=(item,))
        return Mutation(resumed.head, resumed.events, Late.settled, approvals=resumed.approvals)
    events = _events(head, now, step, item)
    new = _advance(head, now, events)
    if read is not None and read.late_result is None:
        return Mutation(new, events, Late.attached,
                        approvals=[read.model_copy(update={"late_result": late, "updated_at": now})])
    return Mutation(new, events, Late.recorded)


def reconcile_reason(call: FunctionCall, facts: Uncertainty) -> str:
    """What a reconciliation tells the operator: what is known of the uncertain call, and nothing more."""
    who = f"attempt {facts.owner}" if facts.owner else "an earlier attempt"
    text = f"{call.name} is not idempotent, and it is not known whether this call of it happened: "
    text += f"{who} announced the call"
    text += f" at {_t(facts.announced_at)}" if facts.announced_at else ""
    text += " and has not reported back"
    if facts.lease_until is not None:
        text += f"; its lease expired at {_t(facts.lease_until)} without being renewed, so it was presumed dead"
    if facts.taken_over_by:
        text += f", and attempt {facts.taken_over_by} took the step over"
        text += f" at {_t(facts.taken_over_at)}" if facts.taken_over_at else ""
    return text + (". If that attempt is still running and its call returns, the result is recorded here and "
                   "settles this reconciliation by itself. Otherwise say whether the call happened (done), "
                   "should be made again (retry), or the run should stop (fail).")


def _t(at: datetime | None) -> str:
    return at.isoformat(timespec="seconds") if at else "an unknown time"
