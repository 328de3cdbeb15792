"""Human approvals: the policy an agent declares, the approval record, and the messages of both topics.

A tool call that a policy covers is not executed until a principal the policy names decides it. The
approval is stored as ``tenants/{tenant}/approvals/{approval_id}``; it changes state only in the same
atomic commit as its run's head (see ``agex.engine.decisions``), so the run and its approval never
disagree. Lifecycle and message schemas: docs/approvals.md.
"""

from __future__ import annotations

import copy
import fnmatch
import operator
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agex.core.clock import derived_id
from agex.core.errors import PermissionDenied, RequestError

REDACTED = "[redacted]"
"""Shown to approvers in place of an argument the policy redacts. An approver who edits the arguments
and leaves the marker in place keeps the original value."""

FORMAT_VERSION = 1


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- policy ---------------------------------------------------------------------------------------

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le, "eq": operator.eq,
    "ne": operator.ne, "in": lambda a, b: a in b, "not_in": lambda a, b: a not in b,
}


class Condition(_Doc):
    """A rule on one argument: ``{"field": "amount_usd", "op": "gt", "value": 50}``. ``field`` is a
    dotted path into the call's arguments."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(min_length=1)
    op: Literal["gt", "ge", "lt", "le", "eq", "ne", "in", "not_in"]
    value: Any

    def holds(self, args: dict[str, Any], *, unjudgeable: bool = True) -> bool:
        """Whether the rule holds; ``unjudgeable`` is the answer for a value of an unexpected type."""
        found, value = _lookup(args, self.field)
        if not found:
            return False
        try:
            return bool(_OPS[self.op](value, self.value))
        except TypeError:
            # for `when`, an argument of an unexpected type cannot be judged safe: ask a human
            return unjudgeable


class ApprovalPolicy(_Doc):
    """Which calls of one tool need a human, who may decide them, and what happens if nobody does.

    Declarative (no code), so the agents file that Terraform reads can hold it too."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tool: str = Field(min_length=1)
    when: tuple[Condition, ...] = ()
    """The call needs approval when any condition holds; with none, every call of the tool does."""
    approvers: tuple[str, ...] = Field(min_length=1)
    """Principals who may decide, exact (``lee@example.com``) or as shell patterns (``*@finance.example.com``)."""
    four_eyes: bool = True
    """The principal who started the run may not decide its approvals."""
    allow_edits: bool = False
    """Approvers may change the arguments listed in ``editable`` (the edited call is validated against the
    tool's model, ``edit_limits`` and ``check_edit``, and must still fall under this policy)."""
    editable: tuple[str, ...] = ()
    """Dotted argument paths an approver may change; every other argument must stay as the model sent it
    (the sample lets a lead lower a refund's amount, never change its order)."""
    edit_limits: tuple[Condition, ...] = ()
    """Conditions every edited call must satisfy, all of them: ``{"field": "amount_usd", "op": "le",
    "value": 500}``. A field the limit names must be present."""
    check_edit: Callable[[dict[str, Any], dict[str, Any]], str | None] | None = Field(default=None, exclude=True)
    """A business rule on edits, in code: called with the original and the edited arguments, returns why
    the edit is refused, or None. For rules that need data, like "at most the refundable amount of that
    order". Runs in the API (to answer the approver) and again in the approvals function."""
    expires_after_s: int = Field(default=24 * 3600, ge=1, le=7 * 24 * 3600)
    on_expiry: Literal["reject", "fail"] = "reject"
    """``reject``: the model is told nobody approved in time and continues; ``fail``: the run fails."""
    redact: tuple[str, ...] = ()
    """Dotted argument paths shown to approvers and notifiers as ``[redacted]``."""
    reason: str = ""
    """Shown to the approver: why this call needs a human."""

    @model_validator(mode="after")
    def _edits_name_fields(self) -> ApprovalPolicy:
        if self.allow_edits and not self.editable:
            raise ValueError(f"approval policy for {self.tool!r}: allow_edits needs `editable`, the argument paths "
                             "an approver may change (the others stay as the model sent them)")
        if not self.allow_edits and (self.editable or self.edit_limits or self.check_edit):
            raise ValueError(f"approval policy for {self.tool!r}: editable, edit_limits and check_edit need "
                             "allow_edits=True")
        return self

    def applies(self, args: dict[str, Any]) -> bool:
        return not self.when or any(c.holds(args) for c in self.when)

    def edit_problems(self, original: dict[str, Any], edited: dict[str, Any]) -> list[str]:
        """Why an approver's edit of a call is not allowed (empty: allowed). The tool's argument model and
        the re-evaluation of the policies are checked by the caller, who knows the agent."""
        problems = [f"{path} may not be edited (editable: {', '.join(self.editable)})"
                    for path in changed_paths(original, edited)
                    if not any(path == e or path.startswith(e + ".") for e in self.editable)]
        for limit in self.edit_limits:
            found, _ = _lookup(edited, limit.field)
            if not found or not limit.holds(edited, unjudgeable=False):
                problems.append(f"{limit.field} must be {limit.op} {limit.value!r}")
        if not problems and self.check_edit is not None:
            why = self.check_edit(original, edited)
            if why:
                problems.append(why)
        return problems


def may_decide(approvers: tuple[str, ...] | list[str], principal: str) -> bool:
    return any(fnmatch.fnmatchcase(principal, pattern) for pattern in approvers)


# --- the approval record --------------------------------------------------------------------------

class ApprovalStatus(StrEnum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"
    expired = "expired"
    cancelled = "cancelled"
    """The run was cancelled while it waited."""
    resolved = "resolved"
    """A reconciliation was decided: ``retry``, ``done`` or ``fail`` (see ``Approval.kind``)."""


class Decision(StrEnum):
    approve = "approve"
    reject = "reject"
    # reconciling a non-idempotent call that may or may not have happened (an attempt crashed inside it)
    retry = "retry"
    """It did not happen: call it again."""
    done = "done"
    """It happened: go on as if it had succeeded."""
    fail = "fail"
    """Stop: the run fails."""


DECISIONS_BY_KIND = {"approval": (Decision.approve, Decision.reject),
                     "reconcile": (Decision.retry, Decision.done, Decision.fail),
                     "budget": (Decision.approve, Decision.reject),
                     "memory": (Decision.approve, Decision.reject)}
ApprovalKind = Literal["approval", "reconcile", "budget", "memory"]


class Approval(_Doc):
    format: int = FORMAT_VERSION
    approval_id: str
    kind: ApprovalKind = "approval"
    """``approval``: a call a policy holds for sign-off (approve or reject). ``reconcile``: a non-idempotent
    call an attempt may have made before it crashed; a human says what happened (retry, done or fail).
    ``budget``: a budget with ``action: approve`` is spent; a human lets the run go on (approve) or not (its
    ``tool`` is ``budget:{name}``, its ``arguments`` where the budget stands; docs/budgets.md). ``memory``: a fact
    learned from the run contradicts one remembered; a human says whether the new one is true (approve) or not
    (reject) (its ``tool`` is ``memory:{key}``, its ``arguments`` the two facts; docs/memory.md). The run has
    ended: the decision changes the memory, not the run."""
    tenant: str
    run_id: str
    agent: str
    agent_version: str = ""
    """The version of the agent whose policy asked (empty on approvals stored before versions were kept)."""
    step: int
    call_id: str
    tool: str
    arguments: dict[str, Any]
    """The call's arguments as approvers see them: redacted where the policy says."""
    call_arguments: dict[str, Any]
    """The call's arguments as the model sent them. Internal: never shown by the API or in messages
    (they are in the run's events already); kept to restore redacted fields of edited arguments."""
    redact: list[str] = Field(default_factory=list)
    reason: str = ""
    approvers: list[str]
    four_eyes: bool
    allow_edits: bool
    on_expiry: Literal["reject", "fail"]
    requested_by: str
    """The principal who started the run (four eyes)."""
    status: ApprovalStatus = ApprovalStatus.pending
    created_at: datetime
    expires_at: datetime
    decision_id: str | None = None
    resolution: Decision | None = None
    """The decision that settled a ``reconcile`` (``retry``, ``done`` or ``fail``)."""
    decided_by: str | None = None
    decided_at: datetime | None = None
    comment: str = ""
    edited_arguments: dict[str, Any] | None = None
    """Arguments an approver changed (redacted like ``arguments``); the tool ran with the edit."""
    late_decisions: list[dict[str, Any]] = Field(default_factory=list)
    """Decisions that arrived after this one was settled: recorded, never applied."""
    late_result: dict[str, Any] | None = None
    """``reconcile`` only: what the uncertain call returned, reported by the attempt that made it after it
    had lost its lease (``ok``, ``output``, ``owner``, ``at``). It settles a pending reconciliation
    (``done``, by ``agex``); on a settled one it is the fact the operator decided without."""
    trace: str = ""
    """The run's traceparent, so deciding joins the run's trace."""
    updated_at: datetime
    expire_at: datetime
    """Deleted by the Firestore TTL policy with its run."""

    def check_decision(self, decision: Decision) -> None:
        """Raise ``RequestError`` for a decision that does not fit this kind of approval."""
        allowed = DECISIONS_BY_KIND[self.kind]
        if decision not in allowed:
            raise RequestError(f"{self.approval_id} is a{'n' if self.kind == 'approval' else ''} {self.kind}: decide "
                               f"{' or '.join(d.value for d in allowed)}, not {decision.value}")

    def check_authority(self, principal: str) -> None:
        """Raise ``PermissionDenied`` unless ``principal`` may decide this approval."""
        if not may_decide(self.approvers, principal):
            raise PermissionDenied(
                f"{principal} is not an approver of {self.tool} calls of agent {self.agent}; the approvers are "
                f"{', '.join(self.approvers)}")
        if self.four_eyes and principal == self.requested_by:
            raise PermissionDenied(
                f"{principal} started run {self.run_id} and may not approve its own request (four-eyes policy); "
                f"ask another approver: {', '.join(self.approvers)}")


def approval_id(run_id: str, step: int, call_id: str, round: str = "") -> str:
    """Deterministic: a retried step asks for the same approval instead of a second one. ``round``
    tells apart the reconciliations of one call (each crash inside it asks anew)."""
    return derived_id("apr_", f"{run_id}\0{step}\0{call_id}{round}")


def redact(args: dict[str, Any], paths: tuple[str, ...] | list[str]) -> dict[str, Any]:
    shown = copy.deepcopy(args)
    for path in paths:
        parent, key = _parent(shown, path)
        if parent is not None and key in parent:
            parent[key] = REDACTED
    return shown


def unredact(edited: dict[str, Any], original: dict[str, Any], paths: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """The arguments an approver sent, with every redacted field still showing the marker restored."""
    merged = copy.deepcopy(edited)
    for path in paths:
        parent, key = _parent(merged, path)
        found, value = _lookup(original, path)
        if parent is not None and found and parent.get(key) == REDACTED:
            parent[key] = copy.deepcopy(value)
    return merged


def changed_paths(original: dict[str, Any], edited: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted paths whose values differ between two argument objects (lists compare whole)."""
    paths: list[str] = []
    for key in sorted(set(original) | set(edited), key=str):
        path = f"{prefix}{key}"
        a, b = original.get(key, _MISSING), edited.get(key, _MISSING)
        if isinstance(a, dict) and isinstance(b, dict):
            paths.extend(changed_paths(a, b, path + "."))
        elif a != b or type(a) is not type(b) and not (_number(a) and _number(b)):
            paths.append(path)
    return paths


_MISSING = object()


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _lookup(args: dict[str, Any], path: str) -> tuple[bool, Any]:
    value: Any = args
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _parent(args: dict[str, Any], path: str) -> tuple[dict[str, Any] | None, str]:
    *head, key = path.split(".")
    found, parent = _lookup(args, ".".join(head)) if head else (True, args)
    return (parent if found and isinstance(parent, dict) else None), key


# --- messages -------------------------------------------------------------------------------------

APPROVAL_REQUESTS_TOPIC = "agex-approval-requests"
"""``approval.requested`` messages, for notifiers (chat, email)."""
DECISIONS_TOPIC = "agex-approval-decisions"
"""``approval.decision`` messages, applied by the ``approvals`` function."""
DECISIONS_DEAD_LETTER_TOPIC = "agex-approval-decisions-dead"
"""Where Pub/Sub moves a decision the function refused ``max_delivery_attempts`` times."""


class DecisionMessage(_Doc):
    """Published on :data:`DECISIONS_TOPIC` by a decision source (the API, for the CLI and the console; a
    chat bot with a key of its own) and applied only if its signature verifies (``agex.core.decision_signing``).
    Version 2 added ``source``, ``key_id`` and ``signature``; unsigned version 1 messages are refused."""

    type: Literal["approval.decision"] = "approval.decision"
    version: Literal[2] = 2
    decision_id: str = Field(min_length=1, max_length=128)
    """Unique per decision; the same decision delivered twice is applied once."""
    tenant: str = Field(min_length=1)
    approval_id: str = Field(min_length=1, max_length=64)
    decision: Decision
    principal: str = Field(min_length=1)
    """Who decided, as authenticated by the publisher."""
    comment: str = Field(default="", max_length=2000)
    arguments: dict[str, Any] | None = None
    """Edited arguments (approve only, when the policy allows edits)."""
    decided_at: datetime
    source: str = Field(default="", max_length=64)
    """The decision source that vouches for ``principal`` and signed the message (``api``)."""
    key_id: str = Field(default="", max_length=64)
    """Which of the source's keys signed it."""
    signature: str = Field(default="", max_length=256)
    """Ed25519 over every other field (base64url); see ``agex.core.decision_signing.canonical``."""


class ApprovalRequested(_Doc):
    """Published on :data:`APPROVAL_REQUESTS_TOPIC` when a run starts waiting; at least once."""

    type: Literal["approval.requested"] = "approval.requested"
    version: Literal[1] = 1
    tenant: str
    approval_id: str
    kind: ApprovalKind = "approval"
    run_id: str
    agent: str
    tool: str
    arguments: dict[str, Any]
    """Redacted as the policy says."""
    reason: str
    approvers: list[str]
    expires_at: datetime
    decide_url: str = ""
    """``POST`` here to decide, when the deployment knows its public URL."""
    review_url: str = ""
    """The approval's page in the console (docs/console.md): where a person decides it, signed in."""

    @classmethod
    def of(cls, approval: Approval, base_url: str = "") -> ApprovalRequested:
        return cls(tenant=approval.tenant, approval_id=approval.approval_id, kind=approval.kind, run_id=approval.run_id,
                   agent=approval.agent, tool=approval.tool, arguments=approval.arguments, reason=approval.reason,
                   approvers=approval.approvers, expires_at=approval.expires_at,
                   decide_url=f"{base_url.rstrip('/')}/v1/approvals/{approval.approval_id}" if base_url else "",
                   review_url=f"{base_url.rstrip('/')}/console/approvals/{approval.approval_id}" if base_url else "")
