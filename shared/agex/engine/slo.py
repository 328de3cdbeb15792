"""Service-level objectives: how fast each agent spends its error budget, and the degradation that follows.

An agent's ``SLO`` (``agex.core.spend``) allows a share of its runs to fail (``max_error_rate``) and a share
to take longer than ``latency_s`` of active time (``1 - latency_target``). The burn rate of an objective is
the share of recent runs that missed it divided by the share allowed: 1 spends the budget exactly as fast
as allowed, 4 four times as fast. Recent runs are those of the agent's current version (the one deployed
here) that ended in the last ``window_minutes``; runs of ``agex eval`` and cancelled runs are left out (a
caller's cancellation says nothing of the service), failed and expired runs count as errors.

Hysteresis: the agent degrades when its worst burn rate reaches ``burn_rate``, recovers when every burn
rate is below ``recover_below``, and between the two stays as it is; fewer than ``min_runs`` runs decide
nothing either way.

:class:`SloService` evaluates every agent each time the drift function is called. Its transitions go
through the degradations store (``agex.ports.degradations``), atomic across instances, so each is
announced once: a log entry (``degradation_event``), a count on ``agex.degradations``, and an
``slo.degraded`` or ``slo.recovered`` message (schema 1) on the drift alerts topic. A transition whose
message could not go out (the publisher failed or died) is published by a later evaluation, with the same
``event_id``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agex.core.agent import Agent, AgentRegistry
from agex.core.clock import Clock
from agex.core.metrics import DRIFT_ALERTS_TOPIC, RunMetrics
from agex.core.spend import SLO, Degrade
from agex.obs import logging as log
from agex.obs import metrics
from agex.ports.degradations import Degradation, DegradationStore, Recovery, Transition
from agex.ports.event_bus import EventBus
from agex.ports.metrics_store import MetricsStore

_log = log.get("slo")
SOURCE = "slo"
SLO_EVENT_SCHEMA = 1
_ERRORS = ("failed", "expired")
_LEFT_OUT = ("cancelled",)


# --- burn rates ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Burn:
    """An agent's recent runs against its objectives."""

    runs: int
    """Runs counted (evaluation and cancelled runs left out)."""
    failed: int = 0
    slow: int = 0
    error: float | None = None
    """Burn rate of the error objective; None if the agent declares none."""
    latency: float | None = None

    @property
    def rates(self) -> dict[str, float]:
        return {k: v for k, v in (("error", self.error), ("latency", self.latency)) if v is not None}

    @property
    def worst(self) -> float:
        return max(self.rates.values(), default=0.0)


def counted(runs: Sequence[RunMetrics]) -> list[RunMetrics]:
    return [r for r in runs if not r.evaluation and r.status not in _LEFT_OUT]


def burn(slo: SLO, runs: Sequence[RunMetrics]) -> Burn:
    kept = counted(runs)
    n = len(kept)
    failed = sum(1 for r in kept if r.status in _ERRORS)
    slow = sum(1 for r in kept if slo.latency_s is not None and r.active_s > slo.latency_s)
    if n == 0:
        return Burn(0)
    return Burn(runs=n, failed=failed, slow=slow,
                error=failed / n / slo.max_error_rate if slo.max_error_rate is not None else None,
                latency=slow / n / (1 - slo.latency_target) if slo.latency_s is not None else None)


Decision = Literal["enter", "recover"]


def decide(slo: SLO, b: Burn) -> Decision | None:
    """``enter`` at ``burn_rate`` or more, ``recover`` below ``recover_below``; None between them, or on
    fewer than ``min_runs`` runs."""
    if b.runs < slo.min_runs:
        return None
    if b.worst >= slo.burn_rate:
        return "enter"
    if b.worst < slo.recover_below:
        return "recover"
    return None


def explain(slo: SLO, b: Burn, version: str) -> str:
    parts = []
    if b.error is not None and slo.max_error_rate is not None:
        parts.append(f"error burn rate {b.error:.3g}: {b.failed} of {b.runs} runs failed, "
                     f"{_percent(slo.max_error_rate)} allowed")
    if b.latency is not None and slo.latency_s is not None:
        parts.append(f"latency burn rate {b.latency:.3g}: {b.slow} of {b.runs} runs over {slo.latency_s:g} s "
                     f"active, {_percent(1 - slo.latency_target)} allowed")
    return f"{'; '.join(parts)} (version {version}, last {slo.window_minutes} min)"


def _percent(share: float) -> str:
    return f"{share * 100:.4g}%"


# --- what steps apply ----------------------------------------------------------------------------------------


def reader(store: DegradationStore) -> Callable[[str, datetime], Degrade | None]:
    """What ``StepRunner(degradation=...)`` asks before a step of an agent with an SLO: the agent's current
    ``Degrade``, or None. A cached read (``DegradationStore.active``); the store's errors go to the caller."""

    def current(agent: str, now: datetime) -> Degrade | None:
        found = store.active(agent, now)
        return found.degrade if found is not None else None

    return current


# --- the announcement ----------------------------------------------------------------------------------------


class SloEvent(BaseModel):
    """``slo.degraded`` / ``slo.recovered`` v1, on the drift alerts topic."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    type: Literal["slo.degraded", "slo.recovered"]
    schema_version: int = Field(default=SLO_EVENT_SCHEMA, alias="schema")
    event_id: str
    """The same for every copy of one transition's message: a consumer drops the copies."""
    agent: str
    source: str
    reason: str
    """Why it degraded, or why it recovered."""
    burn_rates: dict[str, float]
    """At the transition: ``{"error": ..., "latency": ...}`` (the objectives the agent declares)."""
    runs: int
    degrade: Degrade
    """What the steps do differently (degraded), or stop doing (recovered)."""
    since: datetime
    """When the degradation began."""
    at: datetime
    """When this transition happened (``since`` for ``slo.degraded``)."""

    @classmethod
    def of(cls, t: Transition) -> SloEvent:
        d, r = t.degradation, t.recovery
        return cls(type="slo.degraded" if r is None else "slo.recovered", event_id=t.id, agent=d.agent,
                   source=d.source, reason=d.reason if r is None else r.reason,
                   burn_rates=d.burn_rates if r is None else r.burn_rates, runs=d.runs if r is None else r.runs,
                   degrade=d.degrade, since=d.since, at=t.at)


# --- the evaluator -------------------------------------------------------------------------------------------


@dataclass
class SloReport:
    transitions: list[Transition] = field(default_factory=list)
    """The transitions this evaluation made (each announced by it)."""
    burn_rates: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per agent with an SLO: ``{"runs", "burn_rates", "decision"}``."""
    late: list[str] = field(default_factory=list)
    """Event ids of earlier transitions this evaluation published, their announcer having failed."""
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"transitions": [f"{t.degradation.agent}: {t.event}" for t in self.transitions],
                "burn_rates": self.burn_rates, "late": self.late, "errors": self.errors}


class SloService:
    """``max_runs``: records read per agent and evaluation; a busier window is narrowed to its latest part
    (a quarter at a time) until it holds fewer. ``announce_after_s``: how long a transition may stay
    unpublished before another evaluation publishes it (its announcer is taken to have died)."""

    def __init__(self, store: DegradationStore, metrics_store: MetricsStore, agents: AgentRegistry, clock: Clock,
                 bus: EventBus, *, max_runs: int = 2000, announce_after_s: float = 60.0) -> None:
        self.store, self.metrics_store, self.agents, self.clock, self.bus = store, metrics_store, agents, clock, bus
        self.max_runs, self.announce_after_s = max_runs, announce_after_s

    def evaluate(self, now: datetime | None = None) -> SloReport:
        """Evaluate every agent once; an agent that cannot be evaluated is logged and skipped."""
        now = now or self.clock.now()
        report = SloReport()
        try:
            for t in self.store.unannounced(now - timedelta(seconds=self.announce_after_s)):
                if self._publish(t):
                    report.late.append(t.id)
                    log.info(_log, f"published the {t.event} transition of agent {t.degradation.agent} late",
                             degradation_late=t.id, agent=t.degradation.agent)
        except Exception as e:
            _log.exception("could not publish the unannounced degradations; the next evaluation tries again")
            report.errors.append(f"unannounced: {e}")
        for agent in self.agents.all():
            try:
                self._evaluate(agent, now, report)
            except Exception as e:
                _log.exception("could not evaluate the SLO of agent %s; the next evaluation tries again", agent.name)
                report.errors.append(f"{agent.name}: {e}")
        return report

    def _evaluate(self, agent: Agent, now: datetime, report: SloReport) -> None:
        slo = agent.slo
        if slo is None:
            ended = self.store.recover(agent.name, SOURCE, now, reason="the agent no longer declares an SLO")
            if ended is not None:
                self._announce(Transition(degradation=ended, recovery=Recovery(
                    at=now, reason="the agent no longer declares an SLO")), report)
            return
        b = burn(slo, self._runs(agent, slo, now))
        decision = decide(slo, b)
        report.burn_rates[agent.name] = {"runs": b.runs, "burn_rates": b.rates, "decision": decision}
        if decision == "enter":
            d = Degradation(agent=agent.name, source=SOURCE, reason=explain(slo, b, agent.version), since=now,
                            burn_rates=b.rates, runs=b.runs, degrade=slo.degrade)
            if self.store.enter(d):
                self._announce(Transition(degradation=d), report)
        elif decision == "recover":
            reason = f"burn rates below {slo.recover_below:g}: {explain(slo, b, agent.version)}"
            ended = self.store.recover(agent.name, SOURCE, now, reason=reason, burn_rates=b.rates, runs=b.runs)
            if ended is not None:
                self._announce(Transition(degradation=ended, recovery=Recovery(
                    at=now, reason=reason, burn_rates=b.rates, runs=b.runs)), report)

    def _runs(self, agent: Agent, slo: SLO, now: datetime) -> list[RunMetrics]:
        span = timedelta(minutes=slo.window_minutes)
        while True:
            runs = self.metrics_store.query_run_metrics(agent=agent.name, version=agent.version,
                                                        ended_from=now - span, ended_to=now, limit=self.max_runs)
            if len(runs) < self.max_runs or span <= timedelta(minutes=1):
                return runs
            span /= 4

    def _announce(self, t: Transition, report: SloReport) -> None:
        """The one announcement of a transition this call made: log entry and metric, then the message."""
        d = t.degradation
        event = SloEvent.of(t)
        fields = {"degradation_event": t.event, "agent": d.agent, "source": d.source, "event_id": t.id,
                  "error_burn_rate": event.burn_rates.get("error"),
                  "latency_burn_rate": event.burn_rates.get("latency"), "runs": event.runs, "reason": event.reason,
                  "degrade": d.degrade.model_dump(exclude_defaults=True)}
        if t.event == "entered":
            _log.warning("agent %s degraded (%s): %s", d.agent, d.source, event.reason, extra={"fields": fields})
        else:
            log.info(_log, f"agent {d.agent} recovered ({d.source}): {event.reason}", **fields)
        metrics.record_degradation(agent=d.agent, source=d.source, event=t.event)
        report.transitions.append(t)
        self._publish(t)

    def _publish(self, t: Transition) -> bool:
        event = SloEvent.of(t)
        try:
            self.bus.publish(DRIFT_ALERTS_TOPIC, event.model_dump(mode="json", by_alias=True), {
                "type": event.type, "schema": str(event.schema_version), "event_id": event.event_id,
                "agent": event.agent, "source": event.source})
        except Exception:
            _log.exception("could not publish %s of agent %s; an evaluation publishes it after %g s",
                           event.type, event.agent, self.announce_after_s)
            return False
        self.store.announced(t)
        return True
