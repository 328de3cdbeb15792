"""Approvals in the engine: submitting decisions (``ApprovalService``, behind ``/v1/approvals``) and applying
them and expiries to runs exactly once (``ApprovalApplier``, served by the ``approvals`` function for
decisions from Pub/Sub and by the step function for expiry tasks and the sweep).

Submitting only checks and publishes a signed decision: the ``approvals`` function applies it, so every
decider (API, CLI, chat bots publishing to the topic) goes through the same gate.

Exactly once: a decision is applied in one commit on the run head, conditioned on the run still
waiting for that approval; the approval document changes in the same commit. A redelivered decision
finds the approval settled by itself (same ``decision_id``) and only repeats the idempotent follow-up
(enqueuing the resumed step under its deterministic name). A different decision arriving later is
recorded on the approval as late and changes nothing else.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agex.core.agent import AgentRegistry
from agex.core.approval import DECISIONS_TOPIC, Approval, ApprovalStatus, Decision, DecisionMessage, unredact
from agex.core.clock import Clock, Ids, derived_id
from agex.core.decision_signing import DecisionRefused, DecisionSigner, DecisionVerifier
from agex.core.errors import Conflict, NotDue, NotFound, RequestError, validation_problems
from agex.core.run import RunHead, RunStatus
from agex.core.webhook import Webhook
from agex.engine import decisions, notify
from agex.engine.decisions import Claim
from agex.obs import logging as log
from agex.obs import tracing
from agex.ports.auth import Caller
from agex.ports.checkpoint_store import CheckpointStore
from agex.ports.event_bus import EventBus
from agex.ports.task_queue import StepTask, TaskQueue

if TYPE_CHECKING:
    from agex.engine.memory import MemoryService

_log = log.get("approvals")


class Applied(StrEnum):
    applied = "applied"
    """The decision settled the approval and the run resumed (or failed, for an expiry so configured)."""
    duplicate = "duplicate"
    """This decision was applied before; nothing changed."""
    late = "late"
    """Another decision settled the approval first; this one is recorded as late, nothing else changed."""
    not_pending = "not_pending"
    """The approval expired or its run was cancelled; nothing changed."""
    unknown = "unknown"
    """No such approval in the tenant (never existed, or deleted with its run)."""
    refused = "refused"
    """The principal may not decide this approval, or the edit is not allowed; nothing changed."""
    unauthenticated = "unauthenticated"
    """The message is not signed by a declared decision source (forged or altered); nothing changed."""


@dataclass(frozen=True)
class Outcome:
    result: Applied
    detail: str


CLOCK_SKEW = timedelta(minutes=5)
"""How far a decision's ``decided_at`` may be ahead of this clock, or before its approval was created."""


def edited_arguments(approval: Approval, agents: AgentRegistry, arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments an approved call runs with when an approver edited them: redacted fields restored,
    then checked against the tool's argument model, the policy's ``editable``, ``edit_limits`` and
    ``check_edit``, and the agent's policies re-evaluated on the edited call (an edit that would need
    another approver is refused). One check for the API and the approvals function alike."""
    if not approval.allow_edits:
        raise RequestError(f"the approval policy of {approval.tool} does not allow edited arguments; approve "
                           "or reject the call as it is")
    edited = unredact(arguments, approval.call_arguments, approval.redact)
    try:
        # the policy of the version that asked, which the run goes on with (docs/versions.md)
        agent = agents.version(approval.agent, approval.agent_version) or agents.get(approval.agent)
    except NotFound as e:  # the approval exists: a 404 here would say it did not
        raise Conflict(f"agent {approval.agent} is no longer deployed; approve or reject the call as it is") from e
    tool, policy = agent.tool(approval.tool), agent.approval_policy(approval.tool, approval.call_arguments)
    if tool is None or policy is None or not policy.allow_edits:
        raise Conflict(f"agent {approval.agent} no longer has an editable approval policy for {approval.tool}; "
                       "approve or reject the call as it is")
    try:
        tool.args_model.model_validate(edited)
    except ValidationError as e:
        raise RequestError(f"edited arguments are not valid for {approval.tool}: "
                           f"{validation_problems(e, 'arguments')}") from e
    problems = policy.edit_problems(approval.call_arguments, edited)
    if problems:
        raise RequestError(f"this edit of the {approval.tool} call is not allowed: {'; '.join(problems)}")
    now_needs = agent.approval_policy(approval.tool, edited)
    if now_needs is not None and (tuple(now_needs.approvers) != tuple(approval.approvers)
                                  or now_needs.four_eyes != approval.four_eyes):
        raise RequestError(f"the edited {approval.tool} call needs approval by {', '.join(now_needs.approvers)}, "
                           f"not by this approval's approvers; reject this call instead, or edit it within "
                           "this approval's policy")
    return edited


class ApprovalApplier:
    def __init__(self, *, store: CheckpointStore, queue: TaskQueue, bus: EventBus, clock: Clock,
                 agents: AgentRegistry, verifier: DecisionVerifier, webhooks: Sequence[Webhook] = (),
                 memory: Callable[[], MemoryService] | None = None) -> None:
        self.store, self.queue, self.bus, self.clock = store, queue, bus, clock
        self.webhooks = tuple(webhooks)
        self.agents, self.verifier = agents, verifier
        self.memory = memory
        """Where a ``memory`` approval's decision goes: the conflict it asked about is settled in memory."""

    def apply(self, message: DecisionMessage) -> Outcome:
        with log.labels(tenant=message.tenant), tracing.tracer().start_as_current_span(
                "approval.apply", attributes={"agex.approval": message.approval_id,
                                              "agex.decision": message.decision.value}):
            try:
                # before anything else, whatever the transport: an unauthenticated message reads nothing
                self.verifier.verify(message)
            except DecisionRefused as e:
                return _refused(message, Applied.unauthenticated, e.message, event="decision_unauthenticated")
            outcome = self._apply(message)
            log.info(_log, f"decision {message.decision_id} on {message.approval_id}: {outcome.detail}",
                     outcome=outcome.result.value, approval=message.approval_id, principal=message.principal)
        return outcome

    def _apply(self, message: DecisionMessage) -> Outcome:
        for _ in range(3):
            approval = self.store.get_approval(message.tenant, message.approval_id)
            if approval is None:
                return Outcome(Applied.unknown, f"no approval {message.approval_id} in tenant {message.tenant}")
            if approval.status != ApprovalStatus.pending:
                return self._settled_already(approval, message)
            try:
                # again here, not only in the API: chat bots and other deciders publish to the topic directly
                approval.check_decision(message.decision)
                approval.check_authority(message.principal)
            except RequestError as e:
                return _refused(message, Applied.refused, e.message, event="decision_not_authorized")
            if self.clock.now() >= approval.expires_at:
                # too late: the expiry task (or the sweep) settles it as the policy says
                return Outcome(Applied.not_pending, f"approval expired at {approval.expires_at.isoformat()}")
            if not approval.created_at - CLOCK_SKEW <= message.decided_at <= self.clock.now() + CLOCK_SKEW:
                # signed, but not for this approval's lifetime: a replay of an old decision
                return _refused(message, Applied.refused, "the decision was made outside this approval's lifetime",
                                event="decision_replayed",
                                why=f"decided at {message.decided_at.isoformat()}, outside the approval's lifetime")
            if message.arguments is not None and message.decision != Decision.approve:
                return Outcome(Applied.refused, "arguments can only be edited when approving")
            if approval.kind == "memory":
                settled = self._settle_memory(approval, message.decision.value, message.principal, message.comment,
                                              message.decision_id)
                if settled is None:
                    continue  # the run moved: read the approval again
                return Outcome(Applied.applied, f"memory conflict {approval.tool}: {settled}")
            if message.arguments is not None:
                try:
                    message = message.model_copy(update={
                        "arguments": edited_arguments(approval, self.agents, message.arguments)})
                except RequestError as e:
                    return Outcome(Applied.refused, e.message)
            result = self.store.update_run(approval.tenant, approval.run_id, functools.partial(
                decisions.decide_approval, approval=approval, message=message, now=self.clock.now()))
            if result.value and result.head is not None:
                self._resume(result.head)
                return Outcome(Applied.applied, f"{approval.tool} call: {message.decision.value} by "
                                                f"{message.principal}; run {approval.run_id} resumes")
            # the run stopped waiting for it between the two reads: answer from the approval as it is now
        return Outcome(Applied.not_pending, f"run {message.approval_id} kept changing; decision not applied")

    def _settle_memory(self, approval: Approval, decision: str, by: str | None, comment: str,
                       decision_id: str | None) -> str | None:
        """Record the decision of a ``memory`` approval on its (ended) run, then apply it to memory; None when the
        run changed since the approval was read."""
        head = self.store.get_run(approval.tenant, approval.run_id)
        if head is None:
            return "the run is gone; nothing to settle"
        now = self.clock.now()
        try:
            self.store.update_run(approval.tenant, approval.run_id, lambda h: decisions.settle_memory(
                h, approval, head.seq, now, decision, by, comment, decision_id))
        except decisions.EventsMoved:
            return None
        return self._remember(approval, decision)

    def _remember(self, approval: Approval, decision: str) -> str:
        if self.memory is None:
            return f"{decision}; this deployment keeps no memory to change"
        outcome = self.memory().settle(approval, Decision.approve if decision == "approve" else Decision.reject,
                                       self.clock.now())
        return f"{decision}: {'the learned fact is remembered' if outcome == 'learned' else 'the remembered fact stands'}"

    def _settled_already(self, approval: Approval, message: DecisionMessage) -> Outcome:
        if approval.decision_id == message.decision_id and approval.kind == "memory":
            # a redelivery: the decision was recorded, its change to memory may not have been made (idempotent)
            return Outcome(Applied.duplicate, self._remember(approval, message.decision.value))
        if approval.decision_id == message.decision_id:
            # a redelivery: the commit happened, but the enqueue after it may not have
            head = self.store.get_run(approval.tenant, approval.run_id)
            if head is not None and head.status == RunStatus.queued and head.step + 1 == approval.step:
                self._resume(head)
            return Outcome(Applied.duplicate, "already applied")
        if approval.status in (ApprovalStatus.approved, ApprovalStatus.rejected):
            self.store.add_late_decision(approval.tenant, approval.approval_id, {
                "decision_id": message.decision_id, "decision": message.decision.value, "by": message.principal,
                "at": message.decided_at.isoformat()})
            return Outcome(Applied.late, f"already {approval.status.value} by {approval.decided_by}; recorded as late")
        return Outcome(Applied.not_pending, f"approval is {approval.status.value}; nothing to decide")

    def expire(self, tenant: str, run_id: str, approval_id: str) -> Outcome:
        """The expiry task's work: a still-pending approval expires at ``expires_at``."""
        approval = self.store.get_approval(tenant, approval_id)
        if approval is None or approval.run_id != run_id:
            return Outcome(Applied.unknown, f"no approval {approval_id} of run {run_id}")
        if approval.status != ApprovalStatus.pending:
            return Outcome(Applied.not_pending, f"approval is {approval.status.value}")
        now = self.clock.now()
        if approval.kind == "memory":
            if now < approval.expires_at - decisions.TIMER_TOLERANCE:
                raise NotDue(f"approval {approval_id} expires at {approval.expires_at.isoformat()}")
            settled = self._settle_memory(approval, "expired", None, f"nobody decided before "
                                          f"{approval.expires_at.isoformat()}", None)
            return Outcome(Applied.applied if settled else Applied.not_pending, f"expired: {settled}")
        result = self.store.update_run(tenant, run_id, lambda h: decisions.expire_approval(h, approval, now))
        if result.head is None or result.value is None:
            return Outcome(Applied.not_pending, "the run no longer waits for it")
        if result.value == Claim.finished:
            notify.run_finished(self.bus, result.head, self.queue, self.webhooks)
            return Outcome(Applied.applied, f"expired; run {run_id} failed (the policy says so)")
        self._resume(result.head)
        log.info(_log, f"approval {approval_id} expired; run {run_id} resumes as after a rejection",
                 approval=approval_id, run=run_id, tenant=tenant)
        return Outcome(Applied.applied, "expired; the run resumes as after a rejection")

    def sweep(self, grace: timedelta, limit: int = 200) -> int:
        """Expire approvals whose expiry task is overdue by ``grace`` (it was lost): the sweep's part."""
        expired = 0
        for head in self.store.find_waiting(self.clock.now() - grace, limit):
            if head.status == RunStatus.waiting_approval and head.approval_id and head.expire_at > self.clock.now():
                expired += self.expire(head.tenant, head.run_id, head.approval_id).result == Applied.applied
        return expired

    def _resume(self, head: RunHead) -> None:
        self.queue.enqueue(StepTask.next_of(head))


def _refused(message: DecisionMessage, result: Applied, detail: str, *, event: str, why: str = "") -> Outcome:
    """A decision refused for want of authority: logged as a security event, answered with ``detail``."""
    security_event(f"refused decision {message.decision_id} on {message.approval_id}: {why or detail}", event=event,
                   approval=message.approval_id, principal=message.principal, source=message.source)
    return Outcome(result, detail)


def security_event(message: str, *, event: str, **fields: Any) -> None:
    """A refused attempt to act without authority, logged at WARNING with ``security_event`` set, so one
    Cloud Logging filter (``jsonPayload.security_event:*``) or a log-based alert finds them all."""
    _log.warning(message, extra={"fields": {"security_event": event, **fields}})


# --- submitting decisions (the API) -----------------------------------------------------------------

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class DecideRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Decision = Field(description="`approve` or `reject` an approval; `retry`, `done` or `fail` a "
                               "reconciliation (see the approval's `kind`).")
    comment: str = Field(default="", max_length=2000,
                         description="Why; required to reject (the agent is told the reason).")
    arguments: dict[str, Any] | None = Field(
        default=None, description="Approve with these arguments instead, when the policy allows edits. Fields "
        "shown as `[redacted]` may be left so; they keep their original values.")

    @model_validator(mode="after")
    def _check(self) -> DecideRequest:
        if self.decision == Decision.reject and not self.comment.strip():
            raise ValueError("a rejection needs a comment: the reason is told to the agent")
        if self.decision != Decision.approve and self.arguments is not None:
            raise ValueError("arguments can only be edited when approving")
        return self


@dataclass(frozen=True)
class Submitted:
    decision_id: str
    approval: Approval
    replayed: bool = False
    """True when this Idempotency-Key's decision was submitted (and applied) before."""


class ApprovalService:
    def __init__(self, *, store: CheckpointStore, bus: EventBus, agents: AgentRegistry, clock: Clock,
                 ids: Ids, signer: Callable[[], DecisionSigner]) -> None:
        self.store, self.bus, self.agents, self.clock, self.ids = store, bus, agents, clock, ids
        self.signer = signer
        """The API's decision signer; a callable, so its key is read from Secret Manager on the first
        decision, not at cold start."""

    def list(self, caller: Caller, *, status: ApprovalStatus | None = None, limit: int = 100,
             after: tuple[datetime, str] | None = None) -> list[Approval]:
        return self.store.list_approvals(caller.tenant, status=status, limit=limit, after=after)

    def get(self, caller: Caller, approval_id: str) -> Approval:
        approval = self.store.get_approval(caller.tenant, approval_id) if _ID.match(approval_id) else None
        if approval is None:
            # another tenant's approval is indistinguishable from a missing one
            raise NotFound(f"approval {approval_id!r} not found")
        return approval

    def decide(self, caller: Caller, approval_id: str, request: DecideRequest, *,
               idempotency_key: str | None = None) -> Submitted:
        approval = self.get(caller, approval_id)
        decision_id = self._decision_id(caller, approval_id, request, idempotency_key)
        if approval.status != ApprovalStatus.pending:
            if approval.decision_id == decision_id:
                return Submitted(decision_id, approval, replayed=True)
            by = f" by {approval.decided_by}" if approval.decided_by else ""
            raise Conflict(f"approval {approval_id} is already {approval.status.value}{by}; "
                           "only a pending approval can be decided")
        approval.check_decision(request.decision)
        approval.check_authority(caller.principal)
        run = self.store.get_run(caller.tenant, approval.run_id)
        # as readers see it: a run past its retention is over even before the sweep recorded so
        run = decisions.as_seen(run, self.clock.now()) if run is not None else None
        # a memory conflict is asked about after its run ended: the decision changes memory, not the run
        if run is None or (run.status.terminal and approval.kind != "memory"):
            raise Conflict(f"run {approval.run_id} is {run.status.value if run else 'gone'}; its approval can no "
                           "longer be decided")
        if self.clock.now() >= approval.expires_at:
            raise Conflict(f"approval {approval_id} expired at {approval.expires_at.isoformat()}; it is settled as "
                           f"its policy says ({approval.on_expiry})")
        arguments = (edited_arguments(approval, self.agents, request.arguments)
                     if request.arguments is not None else None)
        message = self.signer().sign(DecisionMessage(
            decision_id=decision_id, tenant=caller.tenant, approval_id=approval_id, decision=request.decision,
            principal=caller.principal, comment=request.comment, arguments=arguments, decided_at=self.clock.now()))
        self.bus.publish(DECISIONS_TOPIC, message.model_dump(mode="json"), {
            "type": message.type, "version": str(message.version), "tenant": caller.tenant,
            **({"traceparent": approval.trace} if approval.trace else {})})
        return Submitted(decision_id, approval)

    def _decision_id(self, caller: Caller, approval_id: str, request: DecideRequest,
                     idempotency_key: str | None) -> str:
        if idempotency_key is None:  # else checked by the caller, as for runs (``RunService.start``)
            return self.ids.new_id("dec_")
        # the request is part of the id: a key reused for another decision is not mistaken for a replay of the
        # first (once the first is applied, the second is a 409 instead of "already applied")
        body = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return derived_id("dec_", f"{caller.tenant}\0{caller.principal}\0{approval_id}\0{idempotency_key}\0{body}")
