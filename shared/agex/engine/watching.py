"""The drift check, run by the ``drift`` function on a schedule: collect the metrics of runs that ended
without a record, compare each agent version's current window with its baseline, and publish a
``drift.alert`` for each metric that moved, exactly once per (agent, version, metric, window).

The current side of a comparison is the runs that ended in the last ``window_s``; an alert is keyed by
the tumbling window ``[k * window_s, (k + 1) * window_s)`` the check runs in, so a metric alerts at
most once per window however often the check runs. A window is checked ``window_s / interval_s`` times;
the false-alarm budget ``alpha`` is split across those looks and across the metrics
(``agex.engine.drift``), so a stable version alerts with probability at most about ``alpha`` per window.
The baseline of a version: a pinned one (the fleet file's ``drift.baseline_version``), else the previous
version's last ``baseline_s`` of runs before this version first ran, else (a first version, or a
previous one with too few runs) this version's own ``baseline_s`` of runs before the current side.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from agex.core.agent import AgentRegistry
from agex.core.clock import Clock
from agex.core.metrics import DRIFT_ALERTS_TOPIC, AgentVersion, DriftAlert, RunMetrics
from agex.core.run import RunStatus
from agex.engine import drift
from agex.engine.metrics import Recorder, Versions
from agex.obs import logging as log
from agex.ports.checkpoint_store import CheckpointStore
from agex.ports.event_bus import EventBus
from agex.ports.metrics_store import AlertClaim, MetricsStore

_log = log.get("drift")
_TERMINAL = (RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled, RunStatus.expired)
_COLLECTOR_STATE = "drift.collector"


@dataclass(frozen=True)
class Baseline:
    """A pinned baseline (fleet file ``drift.baseline``): a version, and optionally the period of its runs."""

    version: str
    start: datetime | None = None
    end: datetime | None = None


@dataclass(frozen=True)
class DriftSettings:
    window_s: float = 86_400.0
    interval_s: float = 3_600.0
    """How often the check runs (the schedule): the number of looks per window is ``window_s / interval_s``."""
    alpha: float = 0.01
    min_runs: int = 30
    baseline_s: float = 7 * 86_400.0
    settle_s: float = 60.0
    """The collector leaves runs that ended less than this ago to the step that ended them."""
    max_runs: int = 5_000
    """At most this many records per side are read for one comparison (the earliest of the period)."""
    pins: Mapping[str, Baseline] = field(default_factory=dict)

    @property
    def looks(self) -> int:
        return max(1, round(self.window_s / max(self.interval_s, 1e-9)))


@dataclass
class DriftReport:
    collected: int = 0
    compared: list[str] = field(default_factory=list)
    """``agent@version`` compared in this check (with the baseline version in brackets)."""
    alerts: list[str] = field(default_factory=list)
    """Alert ids this check published."""
    skipped: list[str] = field(default_factory=list)
    """Why a version was not compared (no baseline, too few runs)."""

    def as_dict(self) -> dict[str, Any]:
        return {"collected": self.collected, "compared": self.compared, "alerts": self.alerts,
                "skipped": self.skipped}


class DriftService:
    def __init__(self, *, store: CheckpointStore, metrics: MetricsStore, bus: EventBus, agents: AgentRegistry,
                 clock: Clock, recorder: Recorder, versions: Versions, settings: DriftSettings,
                 instance: str) -> None:
        self.store, self.metrics, self.bus, self.agents, self.clock = store, metrics, bus, agents, clock
        self.recorder, self.versions, self.settings, self.instance = recorder, versions, settings, instance

    def check(self) -> DriftReport:
        report = DriftReport(collected=self.collect())
        now = self.clock.now()
        s = self.settings
        key = _window_start(now, s.window_s)
        start = now - timedelta(seconds=s.window_s)
        window = {"id": f"{key.isoformat()}/{int(s.window_s)}s", "from": start.isoformat(), "to": now.isoformat()}
        policy = drift.Policy(alpha=s.alpha, min_runs=s.min_runs, looks_per_window=s.looks)
        for agent in self.agents.all():
            self.versions.fingerprint(agent)
            current_runs = self.metrics.query_run_metrics(agent=agent.name, ended_from=start, ended_to=now,
                                                          limit=s.max_runs)
            by_version: dict[str, list[RunMetrics]] = {}
            for r in current_runs:
                if not r.evaluation:
                    by_version.setdefault(r.agent_version, []).append(r)
            known = self.metrics.list_versions(agent.name)
            for version, current in sorted(by_version.items()):
                found = self._baseline(agent.name, version, known, start)
                if found is None:
                    report.skipped.append(f"{agent.name}@{version}: no baseline with runs yet")
                    continue
                base_version, base_window, baseline = found
                if len(baseline) < s.min_runs or len(current) < s.min_runs:
                    report.skipped.append(f"{agent.name}@{version}: {len(current)} runs in the window, "
                                          f"{len(baseline)} in the baseline; {s.min_runs} needed")
                    continue
                report.compared.append(f"{agent.name}@{version} [{base_version}]")
                for finding in drift.compare(baseline, current, policy):
                    if finding.drifted:
                        alert = _alert(agent.name, version, finding, base_version, base_window, window, now)
                        if self._publish(alert):
                            report.alerts.append(alert.alert_id)
        return report

    def collect(self) -> int:
        """Record the metrics of runs that ended (since the last check) without a record: cancelled or
        expired ones, and any whose step died before its recorder wrote. Resumes from a watermark; runs
        are re-read a little before it, since ``updated_at`` is not strictly the commit order."""
        now = self.clock.now()
        state = self.metrics.get_state(_COLLECTOR_STATE) or {}
        since = _parse(state.get("watermark")) or now - timedelta(seconds=self.settings.baseline_s)
        until = now - timedelta(seconds=self.settings.settle_s)
        if until <= since:
            return 0
        ended = self.store.find_runs(list(_TERMINAL), until, limit=1000,
                                     updated_after=since - timedelta(seconds=self.settings.settle_s))
        have = self.metrics.recorded((h.tenant, h.run_id) for h in ended)
        count = 0
        for head in ended:
            if (head.tenant, head.run_id) not in have:
                try:
                    self.recorder.record(head, by="collector")
                    count += 1
                except Exception:
                    _log.exception("could not record the metrics of run %s; the next check tries again", head.run_id)
                    return count
        watermark = ended[-1].updated_at if len(ended) == 1000 else until
        self.metrics.put_state(_COLLECTOR_STATE, {"watermark": watermark.isoformat()})
        return count

    def _baseline(self, agent: str, version: str, known: Sequence[AgentVersion],
                  window_start: datetime) -> tuple[str, dict[str, str], list[RunMetrics]] | None:
        s = self.settings
        span = timedelta(seconds=s.baseline_s)
        pin = s.pins.get(agent)
        if pin is not None and pin.version != version:
            end = pin.end or window_start
            begin = pin.start or end - span
            return pin.version, _period(begin, end), self._runs(agent, pin.version, begin, end)
        order = [v.version for v in known]
        first_seen = next((v.first_seen for v in known if v.version == version), None)
        if pin is None and version in order and order.index(version) > 0 and first_seen is not None:
            previous = order[order.index(version) - 1]
            begin = first_seen - span
            runs = self._runs(agent, previous, begin, first_seen)
            if len(runs) >= s.min_runs:
                return previous, _period(begin, first_seen), runs
        begin = window_start - span
        own = self._runs(agent, version, begin, window_start)
        return (version, _period(begin, window_start), own) if own else None

    def _runs(self, agent: str, version: str, begin: datetime, end: datetime) -> list[RunMetrics]:
        runs = self.metrics.query_run_metrics(agent=agent, version=version, ended_from=begin, ended_to=end,
                                              limit=self.settings.max_runs)
        return [r for r in runs if not r.evaluation]

    def _publish(self, alert: DriftAlert) -> bool:
        """Publish the alert unless it went out (or is going out) already: the store's claim makes one
        publisher of each alert id however many checks run at once or retry."""
        now = self.clock.now()
        claim = self.metrics.claim_alert(alert, self.instance, now)
        if claim not in (AlertClaim.created, AlertClaim.reclaimed):
            return False
        message = alert.model_dump(mode="json", by_alias=True)
        self.bus.publish(DRIFT_ALERTS_TOPIC, message, {
            "type": "drift.alert", "schema": str(alert.schema_version), "alert_id": alert.alert_id,
            "agent": alert.agent, "version": alert.version, "metric": alert.metric})
        self.metrics.mark_published(alert.alert_id, self.instance, self.clock.now())
        _log.warning("drift: %s of agent %s version %s moved from its baseline (%s, p=%.3g < %.3g)",
                     alert.metric, alert.agent, alert.version, alert.test, alert.p_value, alert.threshold,
                     extra={"fields": {"drift_event": "drift_alert", "alert_id": alert.alert_id,
                                       "agent": alert.agent, "version": alert.version, "metric": alert.metric}})
        return True


def alert_id(agent: str, version: str, metric: str, window_id: str) -> str:
    return "drift_" + hashlib.sha256(f"{agent}\0{version}\0{metric}\0{window_id}".encode()).hexdigest()[:24]


def _alert(agent: str, version: str, f: drift.Finding, base_version: str, base_window: dict[str, str],
           window: dict[str, str], now: datetime) -> DriftAlert:
    return DriftAlert(
        alert_id=alert_id(agent, version, f.metric, window["id"]), agent=agent, version=version, metric=f.metric,
        kind=f.kind, test=f.test, statistic=f.statistic, p_value=f.p_value, threshold=f.threshold,
        baseline=f.baseline, current=f.current, baseline_version=base_version, baseline_window=base_window,
        window=window, examples=[{"tenant": t, "run_id": r} for t, r in f.examples], detected_at=now)


def _window_start(now: datetime, window_s: float) -> datetime:
    epoch = now.timestamp()
    return datetime.fromtimestamp(epoch - epoch % window_s, tz=UTC)


def _period(begin: datetime, end: datetime) -> dict[str, str]:
    return {"from": begin.isoformat(), "to": end.isoformat()}


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
