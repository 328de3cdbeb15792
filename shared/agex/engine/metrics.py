"""A run's behavioural metrics, computed from its events once it has ended, and the recorder that writes
them (once: the record is keyed by the run, so a redelivery or the drift function's collector writing it
again changes nothing).

Computed from the events rather than counted as the run goes: a step writes nothing more than it did,
and no counter document becomes hot. The price is one read per event of the run, once, when it ends
(docs/observability.md, "Cost of the metrics").
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from agex.core.agent import Agent, AgentRegistry
from agex.core.clock import Clock
from agex.core.errors import ConfigurationError
from agex.core.metrics import METRICS_RETENTION_DAYS, AgentVersion, ModelUsage, RunMetrics, Watch
from agex.core.pricing import Pricing
from agex.core.run import Event, EventKind, RunHead
from agex.obs import logging as log
from agex.ports.checkpoint_store import CheckpointStore
from agex.ports.metrics_store import MetricsStore

_log = log.get("metrics")
MAX_WATCHED_VALUES = 50
_PAGE = 500


def summarize(head: RunHead, events: Sequence[Event], agent: Agent | None, now: datetime,
              by: Literal["step", "collector"] = "step", pricing: Pricing | None = None) -> RunMetrics:
    """The metrics of an ended run from all its events (in ``seq`` order). ``agent``: its declaration, for
    the watched values (None when the deployment no longer runs the agent). ``pricing``: what prices the
    saving of cached input tokens (default: the built-in list prices)."""
    models: dict[str, dict[str, float]] = {}
    tools: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    verdicts: Counter[str] = Counter()
    approvals: Counter[str] = Counter()
    starts: dict[int, list[int]] = {}
    responses: dict[int, tuple[int, float]] = {}
    waited = 0.0
    waiting_since: datetime | None = None
    fingerprint = ""
    for e in events:
        d = e.data
        if waiting_since is not None and e.kind in (EventKind.step_started, EventKind.approval_decided):
            waited += max(0.0, (e.at - waiting_since).total_seconds())
            waiting_since = None
        if e.kind == EventKind.run_created:
            fingerprint = str(d.get("fingerprint", ""))
        elif e.kind == EventKind.step_started:
            # a claim after a lease issued to another delivery stands for that delivery too, which left no event
            starts.setdefault(e.step, []).extend([e.seq] * (2 if d.get("issued_to") else 1))
        elif e.kind == EventKind.model_response:
            usage = d.get("usage", {})
            m = models.setdefault(str(d.get("model", "")), {"calls": 0, "in": 0, "out": 0, "cost": 0.0, "cached": 0})
            m["calls"] += 1
            m["in"] += int(usage.get("input_tokens", 0))
            m["out"] += int(usage.get("output_tokens", 0))
            m["cached"] += int(usage.get("cached_input_tokens", 0))
            m["cost"] += float(usage.get("cost_usd", 0.0))
            responses.setdefault(e.step, (e.seq, float(usage.get("cost_usd", 0.0))))
        elif e.kind in (EventKind.tool_result, EventKind.tool_late_result):
            name = str(d.get("name", ""))
            tools[name] += 1
            if not d.get("ok", False):
                errors[name] += 1
        elif e.kind == EventKind.guard_verdict:
            for v in d.get("verdicts", []):
                verdicts[f"{v.get('guard', '?')}:{v.get('action', '?')}"] += 1
        elif e.kind == EventKind.approval_requested and d.get("kind", "approval") == "approval":
            approvals["requested"] += 1
            waiting_since = e.at
        elif e.kind == EventKind.approval_requested:
            waiting_since = e.at
        elif e.kind == EventKind.approval_decided and d.get("kind", "approval") == "approval":
            decision = str(d.get("decision", ""))
            approvals[decision] += 1
            if decision == "approved" and d.get("arguments") is not None:
                approvals["edited"] += 1
        elif e.kind == EventKind.timer_set:
            waiting_since = e.at
    unrecorded, unrecorded_cost = _unrecorded(starts, responses, models)
    end = head.updated_at
    if waiting_since is not None:  # it ended while waiting (an approval expired, a cancellation)
        waited += max(0.0, (end - waiting_since).total_seconds())
    latency = max(0.0, (end - head.created_at).total_seconds())
    return RunMetrics(
        run_id=head.run_id, tenant=head.tenant, agent=head.agent, agent_version=head.agent_version,
        fingerprint=fingerprint, principal=head.principal, status=head.status.value,
        error_code=head.error.code if head.error else None, steps=head.step,
        input_tokens=head.usage.input_tokens, output_tokens=head.usage.output_tokens,
        cost_usd=head.usage.cost_usd, model_calls=head.usage.model_calls,
        models={k: ModelUsage(calls=int(v["calls"]), input_tokens=int(v["in"]), output_tokens=int(v["out"]),
                              cost_usd=round(v["cost"], 9), cached_input_tokens=int(v["cached"]),
                              saving_usd=_saving(pricing or _PRICING, k, int(v["cached"])))
                for k, v in models.items()},
        unrecorded_model_calls=unrecorded, unrecorded_cost_usd=round(unrecorded_cost, 9),
        latency_s=round(latency, 3), active_s=round(max(0.0, latency - waited), 3),
        tool_calls=dict(tools), tool_errors=dict(errors),
        approvals_requested=approvals["requested"], approvals_granted=approvals["approved"],
        approvals_rejected=approvals["rejected"], approvals_edited=approvals["edited"],
        approvals_expired=approvals["expired"], guard_verdicts=dict(verdicts),
        retries=sum(len(s) - 1 for s in starts.values()),
        watched=watched_values(agent.watch, events) if agent is not None else {},
        created_at=head.created_at, ended_at=end, recorded_at=now,
        expire_at=end + timedelta(days=METRICS_RETENTION_DAYS), recorded_by=by, evaluation="eval" in head.metadata)


_PRICING = Pricing()


def _saving(pricing: Pricing, model: str, cached_input_tokens: int) -> float:
    if not cached_input_tokens:
        return 0.0
    try:
        return round(pricing.saving(model, cached_input_tokens), 9)
    except ConfigurationError:  # a model priced elsewhere than this table: no saving claimed
        return 0.0


def _unrecorded(starts: dict[int, list[int]], responses: dict[int, tuple[int, float]],
                models: dict[str, dict[str, float]]) -> tuple[int, float]:
    """Attempts that claimed a step and were followed by another attempt before the step's response was
    recorded: each may have paid for a model call whose response was lost with it. An upper bound (an
    attempt may have died before calling the model), priced as the step's recorded call or, for a step
    without one, the run's average call."""
    calls = sum(int(m["calls"]) for m in models.values())
    average = sum(m["cost"] for m in models.values()) / calls if calls else 0.0
    count, cost = 0, 0.0
    for step, seqs in starts.items():
        response = responses.get(step)
        before = [s for s in seqs if response is None or s < response[0]]
        lost = max(0, len(before) - 1)
        count += lost
        cost += lost * (response[1] if response is not None else average)
    return count, cost


def watched_values(watch: Sequence[Watch], events: Sequence[Event]) -> dict[str, list[float]]:
    """The values of the watched arguments the model proposed, in call order. What the agent asked for is
    its behaviour, whatever an approver or the tool then made of it."""
    if not watch:
        return {}
    out: dict[str, list[float]] = {w.metric: [] for w in watch}
    latest: dict[str, Any] = {}
    for e in events:
        if e.kind == EventKind.tool_result and e.data.get("ok"):
            latest[str(e.data.get("name", ""))] = e.data.get("output")
        if e.kind != EventKind.model_response:
            continue
        for part in e.data.get("message", {}).get("parts", []):
            call = part.get("function_call") if isinstance(part, dict) else None
            if not call:
                continue
            for w in watch:
                if call.get("name") != w.tool or len(out[w.metric]) >= MAX_WATCHED_VALUES:
                    continue
                value = _number(_path(call.get("args", {}), w.arg))
                if value is None:
                    continue
                if w.per is not None:
                    tool, _, path = w.per.partition(".")
                    base = _number(_path(latest.get(tool), path))
                    if not base:
                        continue
                    value = value / base
                out[w.metric].append(round(value, 6))
    return out


def _path(value: Any, path: str) -> Any:
    for key in path.split("."):
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return None
    return value


def _number(value: Any) -> float | None:
    """A number, or a string of one (the tool's argument model would read it as one too)."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def sampled(run_id: str, name: str, share: float) -> bool:
    """Whether the evaluator ``name`` scores this run: fixed by the run id, so every recorder agrees."""
    digest = hashlib.sha256(f"{name}\0{run_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def read_events(store: CheckpointStore, tenant: str, run_id: str) -> list[Event]:
    events: list[Event] = []
    while True:
        page = store.list_events(tenant, run_id, after_seq=events[-1].seq if events else 0, limit=_PAGE)
        events.extend(page)
        if len(page) < _PAGE:
            return events


class Recorder:
    """Writes an ended run's metrics record: called by the step that ended it, and by the drift function's
    collector for runs that ended elsewhere (cancelled, expired) or whose recorder died."""

    def __init__(self, *, store: CheckpointStore, metrics: MetricsStore, agents: AgentRegistry,
                 clock: Clock, pricing: Pricing | None = None) -> None:
        self.store, self.metrics, self.agents, self.clock = store, metrics, agents, clock
        self.pricing = pricing

    def record(self, head: RunHead, by: Literal["step", "collector"] = "step") -> RunMetrics | None:
        if not head.status.terminal:
            return None
        agent: Agent | None = self.agents.version(head.agent, head.agent_version)
        events = read_events(self.store, head.tenant, head.run_id)
        record = summarize(head, events, agent, self.clock.now(), by, self.pricing)
        if agent is not None and agent.evaluators:
            record = record.model_copy(update={"scores": self._scores(agent, record, head, events)})
        created = self.metrics.put_run_metrics(record)
        if created:
            log.info(_log, "run metrics recorded", run=head.run_id, agent=head.agent, status=record.status,
                     cost_usd=record.cost_usd, steps=record.steps, recorded_by=by)
        return record

    def _scores(self, agent: Agent, record: RunMetrics, head: RunHead, events: Sequence[Event]) -> dict[str, float]:
        scores: dict[str, float] = {}
        for evaluator in agent.evaluators:
            if not sampled(head.run_id, evaluator.name, evaluator.sample):
                continue
            try:
                score = evaluator.score(record, head.result, events)
            except Exception:
                _log.exception("evaluator %s failed on run %s; the run is recorded without its score",
                               evaluator.name, head.run_id)
                continue
            if score is not None:
                scores[evaluator.name] = float(score)
        return scores



class Versions:
    """The fingerprints of the agents this process runs, each registered in the metrics store once per
    process (the first time a run of it starts). A version seen before with another fingerprint means
    its behaviour changed without a version bump: flagged in the log and on the stored version, where the
    API, ``agex metrics`` and the drift function show it."""

    def __init__(self, metrics: MetricsStore | None, clock: Clock) -> None:
        self.metrics, self.clock = metrics, clock
        self._known: dict[tuple[str, str], str] = {}

    def fingerprint(self, agent: Agent) -> str:
        key = (agent.name, agent.version)
        known = self._known.get(key)
        if known is not None:
            return known
        from agex.core import fingerprint

        digest = fingerprint.fingerprint(agent)
        self._known[key] = digest
        if self.metrics is not None:
            try:
                self.check(agent, digest, fingerprint.parts(agent))
            except Exception:
                _log.exception("could not register version %s of agent %s", agent.version, agent.name)
        return digest

    def check(self, agent: Agent, digest: str, parts: dict[str, str]) -> AgentVersion:
        assert self.metrics is not None
        stored = self.metrics.register_version(AgentVersion(
            agent=agent.name, version=agent.version, fingerprint=digest, parts=parts, first_seen=self.clock.now()))
        if stored.fingerprint != digest:
            changed = sorted(k for k, v in parts.items() if stored.parts.get(k) != v)
            _log.warning("agent %s version %s changed without a version bump: its %s differ from the version "
                         "first seen on %s (fingerprint %s, now %s). Bump the version so that its metrics, "
                         "drift baselines and evaluations are not mixed with the old behaviour's",
                         agent.name, agent.version, ", ".join(changed) or "parts", stored.first_seen.isoformat(),
                         stored.fingerprint, digest, extra={"fields": {
                             "drift_event": "fingerprint_changed", "agent": agent.name, "version": agent.version,
                             "changed": changed}})
        return stored
