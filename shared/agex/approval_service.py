"""The application layer behind ``/v1/approvals``: list and read a tenant's approvals, and submit
decisions. Submitting only checks and publishes: the ``approvals`` function applies the decision to the
run (``agex.engine.approvals``), exactly once, so every decider (API, CLI, chat bots publishing to the
topic) goes through the same gate.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agex.agent import AgentRegistry
from agex.approval import (
    DECISIONS_TOPIC,
    Approval,
    ApprovalStatus,
    Decision,
    DecisionMessage,
)
from agex.auth import Caller
from agex.clock import Clock, Ids
from agex.decision_signing import DecisionSigner
from agex.engine import decisions
from agex.engine.approvals import edited_arguments
from agex.errors import Conflict, NotFound, RequestError
from agex.ports.checkpoint_store import CheckpointStore
from agex.ports.event_bus import EventBus

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
        if run is None or run.status.terminal:
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
        if idempotency_key is None:
            return self.ids.new_id("dec_")
        if not (0 < len(idempotency_key) <= 255) or not idempotency_key.isprintable():
            raise RequestError("Idempotency-Key must be 1-255 printable characters")
        # the request is part of the id: a key reused for another decision is not mistaken for a replay of the
        # first (once the first is applied, the second is a 409 instead of "already applied")
        body = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(
            f"{caller.tenant}\0{caller.principal}\0{approval_id}\0{idempotency_key}\0{body}".encode())
        return "dec_" + base64.b32encode(digest.digest()).decode().lower().rstrip("=")[:26]
