"""What the API answers about behaviour and spend, from runs' metrics records: an agent's metrics per
version and time bucket, usage grouped by tenant, user, agent, version, model or tool, drift alerts, and
evaluation results. Tenant-scoped like every API read: a caller sees its tenant's runs only.

Aggregated on read from the per-run records (no counter documents to keep hot); a query reads at most
``MAX_RECORDS`` records and says when it stopped there (``truncated``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agex.core.agent import AgentRegistry
from agex.core.clock import Clock, Ids
from agex.core.errors import RequestError
from agex.core.metrics import DriftAlert, RunMetrics
from agex.ports.auth import Caller
from agex.ports.metrics_store import MetricsStore

MAX_RECORDS = 20_000
MAX_RANGE = timedelta(days=92)
Bucket = Literal["hour", "day", "none"]
_BUCKET_S = {"hour": 3600, "day": 86400}
GROUPS = ("tenant", "user", "agent", "version", "model", "tool", "day", "hour")


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Distribution(_View):
    n: int
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    max: float | None = None
    total: float | None = None


class BehaviourBucket(_View):
    start: datetime
    runs: int
    outcomes: dict[str, int]
    """Runs per terminal status."""
    errors: dict[str, int]
    """Failed runs per error code."""
    steps: Distribution
    tokens: Distribution
    cost_usd: Distribution
    latency_s: Distribution
    active_s: Distribution
    tool_calls: dict[str, int]
    tool_errors: dict[str, int]
    approvals: dict[str, int]
    """requested, granted, rejected, edited, expired."""
    guard_verdicts: dict[str, int]
    retries: int
    unrecorded_model_calls: int
    watched: dict[str, Distribution]
    scores: dict[str, Distribution]


class VersionMetrics(_View):
    version: str
    fingerprints: list[str]
    """The fingerprints its runs ran with: more than one means it changed without a version bump."""
    total: BehaviourBucket
    buckets: list[BehaviourBucket]


class AgentMetrics(_View):
    agent: str
    from_: datetime = Field(alias="from")
    to: datetime
    bucket: Bucket
    versions: list[VersionMetrics]
    truncated: bool
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class UsageGroup(_View):
    key: dict[str, str]
    runs: int
    model_calls: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    """None when grouped by tool: a model call's cost is not any one tool's."""
    unrecorded_model_calls: int | None = None
    unrecorded_cost_usd: float | None = None
    tool_calls: int | None = None
    """None when grouped by model."""
    cached_input_tokens: int | None = None
    """The part of ``input_tokens`` served from a context cache; None when grouped by tool."""
    saving_usd: float | None = None
    """What caching saved: the cached tokens at the input price less at the cached price (the storage of
    explicit caches, billed per hour, is not deducted). None when grouped by tool."""


class UsageReport(_View):
    from_: datetime = Field(alias="from")
    to: datetime
    group_by: list[str]
    groups: list[UsageGroup]
    total_cost_usd: float
    truncated: bool
    total_saving_usd: float = 0.0
    """What context caching saved over the period (``saving_usd`` of every group)."""
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class AlertView(_View):
    alert: dict[str, Any]
    """The ``drift.alert`` message as published (examples limited to the caller's tenant)."""
    published_at: datetime | None


class AlertsPage(_View):
    alerts: list[AlertView]


class EvalSubmission(_View):
    """An evaluation result, as ``agex eval`` stores it (docs/observability.md, "Evaluations")."""

    eval_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,128}$")
    version: str = Field(min_length=1, max_length=64)
    fingerprint: str = Field(default="", max_length=100)
    evalset: str = Field(min_length=1, max_length=200)
    passed: bool
    accepted: bool = False
    summary: dict[str, Any] = Field(default_factory=dict)
    cases: list[dict[str, Any]] = Field(default_factory=list, max_length=2000)


class EvalView(EvalSubmission):
    eval_id: str
    agent: str
    tenant: str
    principal: str
    created_at: datetime


class EvalsPage(_View):
    evals: list[EvalView]


def distribution(values: Sequence[float]) -> Distribution:
    if not values:
        return Distribution(n=0)
    ordered = sorted(values)

    def q(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, math.ceil(p * len(ordered)) - 1)], 6)

    return Distribution(n=len(ordered), mean=round(sum(ordered) / len(ordered), 6), p50=q(0.5), p90=q(0.9),
                        max=round(ordered[-1], 6), total=round(sum(ordered), 6))


def _count(into: dict[str, int], items: Iterable[tuple[str, int]]) -> None:
    for k, v in items:
        into[k] = into.get(k, 0) + v


def behaviour(start: datetime, runs: Sequence[RunMetrics]) -> BehaviourBucket:
    outcomes: dict[str, int] = {}
    errors: dict[str, int] = {}
    tools: dict[str, int] = {}
    tool_errors: dict[str, int] = {}
    verdicts: dict[str, int] = {}
    watched: dict[str, list[float]] = {}
    scores: dict[str, list[float]] = {}
    for r in runs:
        _count(outcomes, [(r.status, 1)])
        if r.error_code:
            _count(errors, [(r.error_code, 1)])
        _count(tools, r.tool_calls.items())
        _count(tool_errors, r.tool_errors.items())
        _count(verdicts, r.guard_verdicts.items())
        for name, values in r.watched.items():
            watched.setdefault(name, []).extend(values)
        for name, score in r.scores.items():
            scores.setdefault(name, []).append(score)
    return BehaviourBucket(
        start=start, runs=len(runs), outcomes=outcomes, errors=errors,
        steps=distribution([r.steps for r in runs]),
        tokens=distribution([r.input_tokens + r.output_tokens for r in runs]),
        cost_usd=distribution([r.cost_usd for r in runs]),
        latency_s=distribution([r.latency_s for r in runs]), active_s=distribution([r.active_s for r in runs]),
        tool_calls=tools, tool_errors=tool_errors,
        approvals={"requested": sum(r.approvals_requested for r in runs),
                   "granted": sum(r.approvals_granted for r in runs),
                   "rejected": sum(r.approvals_rejected for r in runs),
                   "edited": sum(r.approvals_edited for r in runs),
                   "expired": sum(r.approvals_expired for r in runs)},
        guard_verdicts=verdicts, retries=sum(r.retries for r in runs),
        unrecorded_model_calls=sum(r.unrecorded_model_calls for r in runs),
        watched={k: distribution(v) for k, v in sorted(watched.items())},
        scores={k: distribution(v) for k, v in sorted(scores.items())})


def bucket_start(at: datetime, bucket: Bucket, origin: datetime) -> datetime:
    if bucket == "none":
        return origin
    size = _BUCKET_S[bucket]
    epoch = at.timestamp()
    return datetime.fromtimestamp(epoch - epoch % size, tz=UTC)


def agent_metrics(agent: str, runs: Sequence[RunMetrics], start: datetime, end: datetime, bucket: Bucket,
                  version: str | None, truncated: bool) -> AgentMetrics:
    by_version: dict[str, list[RunMetrics]] = {}
    for r in runs:
        if version is None or r.agent_version == version:
            by_version.setdefault(r.agent_version, []).append(r)
    versions = []
    for v, rs in sorted(by_version.items()):
        buckets: dict[datetime, list[RunMetrics]] = {}
        for r in rs:
            buckets.setdefault(bucket_start(r.ended_at, bucket, start), []).append(r)
        versions.append(VersionMetrics(
            version=v, fingerprints=sorted({r.fingerprint for r in rs if r.fingerprint}),
            total=behaviour(start, rs), buckets=[behaviour(b, buckets[b]) for b in sorted(buckets)]))
    return AgentMetrics.model_validate({"agent": agent, "from": start, "to": end, "bucket": bucket,
                                        "versions": versions, "truncated": truncated})


def usage(runs: Sequence[RunMetrics], group_by: Sequence[str], start: datetime, end: datetime,
          truncated: bool) -> UsageReport:
    """Spend and calls per group. Each model call is counted once, in the run that recorded it; a run
    counts when it ends (a run still going shows its usage so far on ``GET /v1/runs/{id}``)."""
    by_model, by_tool = "model" in group_by, "tool" in group_by
    groups: dict[tuple[str, ...], dict[str, Any]] = {}

    def key_of(r: RunMetrics, extra: dict[str, str]) -> dict[str, str]:
        values = {"tenant": r.tenant, "user": r.principal, "agent": r.agent, "version": r.agent_version,
                  "day": bucket_start(r.ended_at, "day", start).isoformat(),
                  "hour": bucket_start(r.ended_at, "hour", start).isoformat(), **extra}
        return {g: values[g] for g in group_by}

    def add(key: dict[str, str], **amounts: float) -> None:
        slot = groups.setdefault(tuple(key.values()), {"key": key, "runs": set()})
        for k, v in amounts.items():
            slot[k] = slot.get(k, 0) + v

    for r in runs:
        if by_model:
            for model, u in r.models.items():
                key = key_of(r, {"model": model})
                add(key, model_calls=u.calls, input_tokens=u.input_tokens, output_tokens=u.output_tokens,
                    cost_usd=u.cost_usd, cached_input_tokens=u.cached_input_tokens, saving_usd=u.saving_usd)
                groups[tuple(key.values())]["runs"].add(r.run_id)
            if r.unrecorded_model_calls:
                key = key_of(r, {"model": next(iter(r.models), "unknown")})
                add(key, unrecorded_model_calls=r.unrecorded_model_calls, unrecorded_cost_usd=r.unrecorded_cost_usd)
                groups[tuple(key.values())]["runs"].add(r.run_id)
        elif by_tool:
            for tool, n in r.tool_calls.items():
                key = key_of(r, {"tool": tool})
                add(key, tool_calls=n)
                groups[tuple(key.values())]["runs"].add(r.run_id)
        else:
            key = key_of(r, {})
            add(key, model_calls=r.model_calls, input_tokens=r.input_tokens, output_tokens=r.output_tokens,
                cost_usd=r.cost_usd, unrecorded_model_calls=r.unrecorded_model_calls,
                unrecorded_cost_usd=r.unrecorded_cost_usd, tool_calls=sum(r.tool_calls.values()),
                cached_input_tokens=sum(u.cached_input_tokens for u in r.models.values()),
                saving_usd=_saved(r))
            groups[tuple(key.values())]["runs"].add(r.run_id)
    out = []
    for slot in groups.values():
        runs_in = len(slot.pop("runs"))
        if "cost_usd" in slot:
            slot["cost_usd"] = round(slot["cost_usd"], 9)
        if "unrecorded_cost_usd" in slot:
            slot["unrecorded_cost_usd"] = round(slot["unrecorded_cost_usd"], 9)
        if "saving_usd" in slot:
            slot["saving_usd"] = round(slot["saving_usd"], 9)
        if by_model:
            slot.setdefault("model_calls", 0)
            slot.setdefault("input_tokens", 0)
            slot.setdefault("output_tokens", 0)
            slot.setdefault("cost_usd", 0.0)
            slot.setdefault("unrecorded_model_calls", 0)
            slot.setdefault("unrecorded_cost_usd", 0.0)
            slot.setdefault("cached_input_tokens", 0)
            slot.setdefault("saving_usd", 0.0)
        out.append(UsageGroup(runs=runs_in, **slot))
    out.sort(key=lambda g: (-(g.cost_usd or 0.0), -(g.tool_calls or 0), sorted(g.key.items())))
    total = round(sum(r.cost_usd for r in runs), 9)
    saved = round(sum(_saved(r) for r in runs), 9)
    return UsageReport.model_validate({"from": start, "to": end, "group_by": list(group_by), "groups": out,
                                       "total_cost_usd": total, "total_saving_usd": saved, "truncated": truncated})


def _saved(run: RunMetrics) -> float:
    return sum(u.saving_usd for u in run.models.values())


class Reports:
    """The API's reads of the metrics store (and its one write, evaluation results)."""

    def __init__(self, *, metrics: Callable[[], MetricsStore], agents: AgentRegistry, clock: Clock,
                 ids: Ids) -> None:
        self._metrics, self.agents, self.clock, self.ids = metrics, agents, clock, ids

    @property
    def metrics(self) -> MetricsStore:
        return self._metrics()

    def period(self, start: datetime | None, end: datetime | None) -> tuple[datetime, datetime, bool]:
        """The period asked for, and whether it was cut: one longer than ``MAX_RANGE`` becomes the
        ``MAX_RANGE`` before its end (the answer's ``from`` says so, and ``truncated``). A period that ends
        before it starts is empty."""
        end = end or self.clock.now()
        start = start or end - timedelta(days=7)
        if end - start > MAX_RANGE:
            return end - MAX_RANGE, end, True
        return start, max(start, end), False

    def agent_metrics(self, caller: Caller, agent: str, *, version: str | None, start: datetime | None,
                      end: datetime | None, bucket: Bucket) -> AgentMetrics:
        self.agents.get(agent)
        start, end, cut = self.period(start, end)
        runs = self.metrics.query_run_metrics(ended_from=start, ended_to=end, agent=agent, tenant=caller.tenant,
                                              version=version, limit=MAX_RECORDS + 1)
        return agent_metrics(agent, runs[:MAX_RECORDS], start, end, bucket, version, cut or len(runs) > MAX_RECORDS)

    def usage(self, caller: Caller, group_by: Sequence[str], *, start: datetime | None, end: datetime | None,
              agent: str | None = None) -> UsageReport:
        unknown = [g for g in group_by if g not in GROUPS]
        if unknown or not group_by or len(set(group_by)) != len(group_by):
            raise RequestError(f"query parameter group_by must be a comma-separated list of distinct names "
                               f"among {', '.join(GROUPS)}; got {','.join(group_by)!r}")
        if "model" in group_by and "tool" in group_by:
            raise RequestError("group_by cannot have both model and tool: a model call is no one tool's")
        start, end, cut = self.period(start, end)
        runs = self.metrics.query_run_metrics(ended_from=start, ended_to=end, agent=agent, tenant=caller.tenant,
                                              limit=MAX_RECORDS + 1)
        return usage(runs[:MAX_RECORDS], group_by, start, end, cut or len(runs) > MAX_RECORDS)

    def alerts(self, caller: Caller, *, agent: str | None, since: datetime | None, limit: int) -> AlertsPage:
        if agent is not None:
            self.agents.get(agent)
        stored = self.metrics.list_alerts(agent=agent, since=since, limit=limit)
        return AlertsPage(alerts=[AlertView(alert=_for_tenant(s.alert, caller.tenant), published_at=s.published_at)
                                  for s in stored])

    def put_eval(self, caller: Caller, agent: str, submission: EvalSubmission) -> EvalView:
        self.agents.get(agent)
        view = EvalView(**{**_text(submission.model_dump()), "eval_id": submission.eval_id or self.ids.new_id("eval_"),
                           "agent": agent, "tenant": caller.tenant, "principal": caller.principal,
                           "created_at": self.clock.now()})
        self.metrics.put_eval(caller.tenant, view.model_dump())
        return view

    def evals(self, caller: Caller, agent: str, *, version: str | None, accepted: bool | None,
              limit: int) -> EvalsPage:
        self.agents.get(agent)
        found = self.metrics.list_evals(caller.tenant, agent, version=version, accepted=accepted, limit=limit)
        return EvalsPage(evals=[EvalView.model_validate(e) for e in found])


def _text(value: Any) -> Any:
    """``value`` with every string (keys too) made storable: a lone surrogate, which JSON allows and no store
    can encode, becomes U+FFFD. A result is a report, not an input the runtime acts on."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace") if _SURROGATE.search(value) \
            else value
    if isinstance(value, dict):
        return {_text(k): _text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_text(v) for v in value]
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")


def _for_tenant(alert: DriftAlert, tenant: str) -> dict[str, Any]:
    """The alert as a tenant may see it: example runs of other tenants left out (their ids are theirs)."""
    shown = alert.model_dump(mode="json", by_alias=True)
    shown["examples"] = [e for e in shown["examples"] if e.get("tenant") == tenant]
    return shown
