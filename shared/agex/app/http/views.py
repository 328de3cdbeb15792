"""What the API returns, as pydantic models: they give both the responses and the OpenAPI schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agex.core.agent import Agent
from agex.core.approval import Approval, ApprovalPolicy, ApprovalStatus, Decision, redact
from agex.core.errors import AgexError
from agex.core.guard import Guard, GuardSpec
from agex.core.memory import MemoryRecord
from agex.core.run import Event, RunHead, RunStatus
from agex.core.thread import Thread, ThreadPolicy
from agex.core.tool import Tool
from agex.engine import guarding
from agex.engine.schedules import ScheduleView as ScheduledView


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UsageView(_View):
    input_tokens: int
    output_tokens: int
    cost_usd: float
    model_calls: int


class ErrorView(_View):
    code: str
    message: str
    budget: str | None = Field(default=None, description="`budget_exceeded`: the budget that is spent.")
    resets_at: datetime | None = Field(default=None, description=(
        "`budget_exceeded`: when enough of the budget's rolling window ages out for a run to start."))


class RunLinks(_View):
    self: str
    events: str
    cancel: str


class RunView(_View):
    run_id: str
    agent: str
    agent_version: str
    status: RunStatus
    step: int = Field(description="Steps committed so far.")
    input: str
    metadata: dict[str, str]
    usage: UsageView
    result: str | None = Field(description="The agent's final answer, once the run succeeded.")
    error: ErrorView | None = Field(description="Why the run failed, was cancelled or expired.")
    thread_id: str | None = Field(default=None, description="The thread the run is a turn of (docs/threads.md).")
    created_at: datetime
    updated_at: datetime
    expire_at: datetime
    links: RunLinks

    @classmethod
    def of(cls, head: RunHead, base: str = "") -> RunView:
        self_link = f"{base}/v1/runs/{head.run_id}"
        return cls(run_id=head.run_id, agent=head.agent, agent_version=head.agent_version, status=head.status,
                   step=head.step, input=head.input, metadata=head.metadata, thread_id=head.thread_id,
                   usage=UsageView(**head.usage.model_dump()), result=head.result,
                   error=ErrorView(**head.error.model_dump()) if head.error else None,
                   created_at=head.created_at, updated_at=head.updated_at, expire_at=head.expire_at,
                   links=RunLinks(self=self_link, events=f"{self_link}/events", cancel=f"{self_link}:cancel"))


class EventView(_View):
    seq: int
    step: int
    kind: str
    at: datetime
    data: dict[str, Any]

    @classmethod
    def of(cls, event: Event) -> EventView:
        # the restricted views of guarded content (what the model saw, originals) never leave the engine
        return cls(seq=event.seq, step=event.step, kind=event.kind.value, at=event.at, data=guarding.public(event.data))


class ScheduleStateView(_View):
    paused: bool
    by: str = Field(description="Who paused or resumed it last.")
    at: datetime


class ScheduleView(_View):
    name: str
    agent: str
    cron: str
    time_zone: str
    input: str
    principal: str = Field(description="Who its runs are started as.")
    paused: bool
    state: ScheduleStateView | None = Field(description="The last pause or resume; null if never.")
    next_due: datetime | None = Field(description="When it fires next; null while paused.")

    @classmethod
    def of(cls, view: ScheduledView) -> ScheduleView:
        s, state = view.schedule, view.state
        return cls(name=s.name, agent=s.agent, cron=s.cron, time_zone=s.time_zone, input=s.input,
                   principal=s.started_by, paused=bool(state and state.paused),
                   state=ScheduleStateView(paused=state.paused, by=state.by, at=state.at) if state else None,
                   next_due=view.next_due)


class ScheduleList(_View):
    schedules: list[ScheduleView]


class RunsPage(_View):
    runs: list[RunView] = Field(description="Newest first.")
    next_page_token: str | None = Field(description="Pass as page_token, with the same filters, to get the next "
                                        "page; null at the end.")


class EventsPage(_View):
    events: list[EventView]
    next_page_token: str | None = Field(description="Pass as page_token to get the next page; null at the end.")


class ToolLimitsView(_View):
    max_concurrent: int | None
    per_second: float | None


class ToolView(_View):
    name: str
    kind: Literal["python", "http", "mcp"]
    description: str
    idempotent: bool
    parameters: dict[str, Any] = Field(description="JSON schema of the arguments; empty when the tool's server "
                                       "could not be asked for it (MCP) just now.")
    timeout_s: float
    secrets: list[str] = Field(description="Names of the secrets the tool is given (never their values).")
    limits: ToolLimitsView

    @classmethod
    def of(cls, tool: Tool) -> ToolView:
        try:
            spec = tool.spec()
            description, parameters = spec.description, spec.parameters
        except AgexError:  # an MCP server that cannot be reached must not break the agent listing
            description, parameters = tool.description, {}
        return cls(name=tool.name, kind=tool.kind, description=description, idempotent=tool.idempotent,  # type: ignore[arg-type]
                   parameters=parameters, timeout_s=tool.timeout_s, secrets=list(tool.secrets),
                   limits=ToolLimitsView(max_concurrent=tool.limits.max_concurrent, per_second=tool.limits.per_second))


class ConditionView(_View):
    field: str = Field(description="Dotted path into the call's arguments.")
    op: Literal["gt", "ge", "lt", "le", "eq", "ne", "in", "not_in"]
    value: Any


class ApprovalPolicyView(_View):
    tool: str
    when: list[ConditionView] = Field(
        description="The call needs approval when any condition holds; when empty, every call does.")
    approvers: list[str] = Field(description="Principals who may decide, exact or as shell patterns.")
    four_eyes: bool = Field(description="The principal who started the run may not decide its approvals.")
    allow_edits: bool = Field(description="Approvers may change the arguments the tool runs with.")
    expires_after_s: int
    on_expiry: Literal["reject", "fail"] = Field(
        description="`reject`: the agent is told nobody approved in time; `fail`: the run fails.")
    redact: list[str] = Field(description="Argument paths shown to approvers as `[redacted]`.")
    reason: str

    @classmethod
    def of(cls, policy: ApprovalPolicy) -> ApprovalPolicyView:
        return cls(tool=policy.tool, when=[ConditionView(field=c.field, op=c.op, value=c.value) for c in policy.when],
                   approvers=list(policy.approvers), four_eyes=policy.four_eyes, allow_edits=policy.allow_edits,
                   expires_after_s=policy.expires_after_s, on_expiry=policy.on_expiry, redact=list(policy.redact),
                   reason=policy.reason)


class GuardView(_View):
    name: str = Field(description="A built-in guard (`pii`, `prompt_injection`, ...) or the agent's own.")
    channels: list[str] | None = Field(description="Where it looks; null: the guard's own default.")
    action: str | None = Field(description="What it does when it fires; null: the guard's own default.")

    @classmethod
    def of(cls, guard: GuardSpec | Guard) -> GuardView:
        if isinstance(guard, GuardSpec):
            return cls(name=guard.use, channels=[c.value for c in guard.channels] if guard.channels else None,
                       action=guard.action.value if guard.action else None)
        return cls(name=guard.name, channels=sorted(c.value for c in guard.channels), action=None)


class AgentView(_View):
    name: str
    version: str
    description: str
    model: str
    identity: str = Field(description="The service account the agent's tools act as; its secrets are read as it.")
    tools: list[ToolView]
    limits: dict[str, Any]
    approvals: list[ApprovalPolicyView] = Field(description="Which tool calls wait for a human decision.")
    operators: list[str] = Field(description="Who may reconcile an uncertain call (empty: the tool's approvers, "
                                 "or anyone in the tenant).")
    fallbacks: list[str] = Field(description="Models tried in order when the one before cannot answer "
                                             "(docs/models.md).")
    fingerprint: str | None = Field(description="Digest of what shapes the version's behaviour "
                                                "(docs/observability.md); null while a tool's server (MCP) cannot "
                                                "be asked for its schema, which the digest covers.")
    watch: list[str] = Field(description="The watched values recorded as behavioural metrics.")
    guards: list[GuardView] = Field(default_factory=list, description="The guardrail chain, in order "
                                                                      "(docs/guardrails.md); empty: no guarding.")

    @classmethod
    def of(cls, agent: Agent) -> AgentView:
        return cls(name=agent.name, version=agent.version, description=agent.description, model=agent.model,
                   identity=agent.identity, tools=[ToolView.of(t) for t in agent.tools],
                   limits=agent.limits.model_dump(), approvals=[ApprovalPolicyView.of(p) for p in agent.approvals],
                   operators=list(agent.operators), fallbacks=list(agent.fallbacks), fingerprint=fingerprint_of(agent),
                   watch=[w.metric for w in agent.watch], guards=[GuardView.of(g) for g in agent.guards])


def fingerprint_of(agent: Agent) -> str | None:
    """The agent's fingerprint, or None while an MCP server it names cannot be asked for its tools' schemas: a
    listing of agents must not fail because one tool's server is down."""
    from agex.core.fingerprint import fingerprint

    try:
        return fingerprint(agent)
    except AgexError:
        return None


class AgentList(_View):
    agents: list[AgentView]


class TurnView(_View):
    run_id: str
    input: str = Field(description="What the user said, as the model saw it (cut to 4,000 characters).")
    answer: str = Field(description="The run's answer, or what became of a run that did not succeed.")
    at: datetime


class ThreadLinks(_View):
    self: str
    runs: str = Field(description="POST a message here: the thread's next turn.")
    history: str = Field(description="The thread's runs, newest first (GET /v1/runs?thread=).")


class ThreadView(_View):
    thread_id: str
    agent: str
    principal: str = Field(description="Who created the thread.")
    policy: ThreadPolicy = Field(description="What a message sent while a run is going does.")
    metadata: dict[str, str]
    active_run: str | None = Field(description="The run of the turn under way.")
    pending_runs: list[str] = Field(description="Runs waiting their turn, oldest first (policy queue).")
    turns: int = Field(description="Turns ended so far.")
    summary: str = Field(description="What the model wrote of the turns older than the kept ones.")
    summarized_turns: int
    recent_turns: list[TurnView] = Field(description="The last turns, kept whole; the next turn sees them.")
    created_at: datetime
    updated_at: datetime
    expire_at: datetime = Field(description="The thread is deleted 30 days after its last turn.")
    links: ThreadLinks

    @classmethod
    def of(cls, thread: Thread, base: str = "") -> ThreadView:
        self_link = f"{base}/v1/threads/{thread.thread_id}"
        ctx = thread.context
        return cls(thread_id=thread.thread_id, agent=thread.agent, principal=thread.principal, policy=thread.policy,
                   metadata=thread.metadata, active_run=thread.active_run, pending_runs=list(thread.pending),
                   turns=thread.turns, summary=ctx.summary, summarized_turns=ctx.summarized_turns,
                   recent_turns=[TurnView(**t.model_dump()) for t in ctx.turns], created_at=thread.created_at,
                   updated_at=thread.updated_at, expire_at=thread.expire_at,
                   links=ThreadLinks(self=self_link, runs=f"{self_link}/runs",
                                     history=f"{base}/v1/runs?thread={thread.thread_id}"))


class VersionView(_View):
    version: str
    current: bool = Field(description="New runs start on this version.")
    served: bool = Field(description="This deployment serves it: its runs step. A version not served that still "
                                     "has unfinished runs is retired too early: its runs wait (docs/versions.md).")
    fingerprint: str | None = Field(description="Digest of what shapes the version's behaviour, when served.")
    unfinished_runs: int = Field(description="Runs of the caller's tenant on this version that have not ended.")
    migrates_to: str | None = Field(description="The version a declared rule moves its runs to at their next step.")


class VersionList(_View):
    agent: str
    versions: list[VersionView] = Field(description="The current version first, then earlier ones served, then "
                                                    "versions not served that unfinished runs still name.")


class ErrorBody(_View):
    error: ErrorView


class ApprovalLinks(_View):
    self: str = Field(description="`GET` the approval, `POST` a decision.")
    run: str


class ApprovalView(_View):
    """An approval as approvers see it. The call's unredacted arguments are never part of it."""

    approval_id: str
    kind: Literal["approval", "reconcile", "budget", "memory"] = Field(
        description="`approval`: a call held for sign-off (`approve`/`reject`). `reconcile`: a non-idempotent call "
        "an attempt may have made before it stopped reporting (`retry`/`done`/`fail`). `budget`: a spent budget "
        "whose runs wait for a human to let them go on (`approve`/`reject`); `tool` is `budget:{name}`. `memory`: a "
        "fact learned contradicts one remembered (`approve` the learned one, `reject` to keep the remembered); "
        "`tool` is `memory:{key}`, the run has ended.")
    run_id: str
    agent: str
    step: int = Field(description="The step whose tool call waits.")
    tool: str
    arguments: dict[str, Any] = Field(description="The call's arguments, `[redacted]` where the policy says.")
    reason: str = Field(description="Why this call needs a human.")
    approvers: list[str]
    four_eyes: bool
    allow_edits: bool
    on_expiry: Literal["reject", "fail"]
    requested_by: str = Field(description="The principal who started the run.")
    status: ApprovalStatus
    created_at: datetime
    expires_at: datetime
    decision_id: str | None = Field(description="The decision that settled it.")
    resolution: Decision | None = Field(description="How a reconciliation was settled: `retry`, `done` or `fail`.")
    decided_by: str | None
    decided_at: datetime | None
    comment: str
    edited_arguments: dict[str, Any] | None = Field(
        description="The arguments the tool ran with, when the approver edited them (redacted alike).")
    late_decisions: list[dict[str, str]] = Field(
        description="Decisions that arrived after the approval was settled, recorded and never applied: "
        "`decision_id`, `decision`, `by` and `at` (RFC 3339).")
    late_result: dict[str, Any] | None = Field(
        default=None, description="A reconciliation's facts: what the uncertain call returned (`ok`, `output`), "
        "reported at `at` by the attempt that made it (`owner`) after it had lost its lease. It settles a pending "
        "reconciliation (`done`, by `agex`); on one settled before it arrived, it is what the decider did not know.")
    links: ApprovalLinks

    @classmethod
    def of(cls, approval: Approval, base: str = "") -> ApprovalView:
        # redacted again on the way out: whatever a writer stored, a redacted path is never shown
        def shown(args: dict[str, Any]) -> dict[str, Any]:
            return redact(args, approval.redact)

        return cls(approval_id=approval.approval_id, kind=approval.kind, resolution=approval.resolution,
                   run_id=approval.run_id, agent=approval.agent, step=approval.step,
                   tool=approval.tool, arguments=shown(approval.arguments), reason=approval.reason,
                   approvers=approval.approvers, four_eyes=approval.four_eyes, allow_edits=approval.allow_edits,
                   on_expiry=approval.on_expiry, requested_by=approval.requested_by, status=approval.status,
                   created_at=approval.created_at, expires_at=approval.expires_at, decision_id=approval.decision_id,
                   decided_by=approval.decided_by,
                   decided_at=approval.decided_at, comment=approval.comment,
                   edited_arguments=shown(approval.edited_arguments) if approval.edited_arguments is not None
                   else None,
                   late_decisions=[{k: str(v) for k, v in d.items()} for d in approval.late_decisions],
                   late_result=approval.late_result,
                   links=ApprovalLinks(self=f"{base}/v1/approvals/{approval.approval_id}",
                                       run=f"{base}/v1/runs/{approval.run_id}"))


class ApprovalsPage(_View):
    approvals: list[ApprovalView]
    next_page_token: str | None = Field(description="Pass as page_token to get the next page; null at the end.")


class DecisionView(_View):
    decision_id: str = Field(description="The same for a retry with the same Idempotency-Key and body.")
    status: Literal["submitted", "already_applied"] = Field(
        description="`submitted`: the decision is queued and applied shortly (the run resumes then); "
        "`already_applied`: this Idempotency-Key's decision was applied before.")
    approval: ApprovalView = Field(description="The approval as it is now; still `pending` when `submitted`.")


class MemoryView(_View):
    """One memory, as its user may see it (docs/memory.md): what it says and where it came from, not its vector."""

    memory_id: str
    text: str
    kind: str = Field(description="`fact`, `preference`, `entity` or `note`.")
    key: str | None = Field(default=None, description="What it is about: facts of one key are compared for conflicts.")
    value: str | None = None
    status: str = Field(description="`active`; `superseded` (a newer fact replaced it: `superseded_by`); `flagged` "
                        "(held back from recall: a conflict waits for review).")
    confidence: float
    trusted: bool = Field(description="False when learned from a tool's output.")
    run_id: str | None = Field(default=None, description="The run it was learned from.")
    thread_id: str | None = None
    created_at: datetime
    valid_from: datetime
    valid_to: datetime | None = None
    superseded_by: str | None = None
    expire_at: datetime | None = Field(default=None, description="When it is deleted (retention).")

    @classmethod
    def of(cls, record: MemoryRecord) -> MemoryView:
        key, value = record.metadata.get("key"), record.metadata.get("value")
        return cls(memory_id=record.id, text=record.text, kind=record.kind.value,
                   key=str(key) if key is not None else None, value=str(value) if value is not None else None,
                   status=record.status.value, confidence=record.confidence, trusted=record.source.trusted,
                   run_id=record.source.run_id, thread_id=record.source.thread_id, created_at=record.created_at,
                   valid_from=record.valid_from, valid_to=record.valid_to, superseded_by=record.superseded_by,
                   expire_at=record.expire_at)


class MemoryScopeView(_View):
    agent: str | None = Field(description="The agent these memories are with; null: the user's memories across "
                              "agents (`agent=*` in the query).")
    memories: list[MemoryView] = Field(description="Newest first, superseded and flagged ones included.")
    next_page_token: str | None = Field(default=None, description="Pass with `agent` for the next page of this scope.")


class MemoryList(_View):
    user: str
    scopes: list[MemoryScopeView]


class MemoryErased(_View):
    user: str
    deleted: dict[str, int] = Field(description="How many items were deleted, per store (`memories`, `graph`).")
