"""In-memory metrics store: one lock stands in for Firestore's preconditions. The rules both adapters
apply are in :mod:`agex.ports.metrics_rules`."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from agex.core.errors import NotFound
from agex.core.metrics import AgentVersion, DriftAlert, RunMetrics
from agex.ports.metrics_rules import (
    check_eval,
    check_id,
    check_query,
    claim_state,
    merge_version,
    utc,
    utc_all,
)
from agex.ports.metrics_store import AlertClaim, MetricsStore, StoredAlert
from agex.ports.rules import check_size


class InMemoryMetricsStore(MetricsStore):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[tuple[str, str], RunMetrics] = {}
        self._versions: dict[tuple[str, str], AgentVersion] = {}
        self._alerts: dict[str, dict[str, Any]] = {}
        self._state: dict[str, dict[str, Any]] = {}
        self._evals: dict[tuple[str, str], dict[str, Any]] = {}

    # --- runs' metrics ---------------------------------------------------------------------------------

    def put_run_metrics(self, record: RunMetrics) -> bool:
        check_id("tenant", record.tenant)
        check_id("run id", record.run_id)
        record = RunMetrics.model_validate(utc_all(record.model_dump()))
        with self._lock:
            if (record.tenant, record.run_id) in self._runs:
                return False
            self._runs[(record.tenant, record.run_id)] = record
            return True

    def recorded(self, runs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        with self._lock:
            return {(t, r) for t, r in runs if (t, r) in self._runs}

    def query_run_metrics(self, *, ended_from: datetime, ended_to: datetime, agent: str | None = None,
                          tenant: str | None = None, version: str | None = None,
                          limit: int = 1000) -> list[RunMetrics]:
        check_query(agent, version)
        lo, hi = utc(ended_from), utc(ended_to)
        with self._lock:
            found = [m for m in self._runs.values()
                     if lo <= m.ended_at < hi
                     and (tenant is None or m.tenant == tenant)
                     and (agent is None or m.agent == agent)
                     and (version is None or m.agent_version == version)]
        # Firestore breaks ties by document path: tenant, then run id
        found.sort(key=lambda m: (m.ended_at, m.tenant, m.run_id))
        return found[:max(0, limit)]

    # --- agent versions --------------------------------------------------------------------------------

    def register_version(self, version: AgentVersion) -> AgentVersion:
        check_id("agent version", f"{version.agent}~{version.version}")
        version = AgentVersion.model_validate(utc_all(version.model_dump()))
        key = (version.agent, version.version)
        with self._lock:
            new = merge_version(self._versions.get(key), version)
            if new is not None:
                self._versions[key] = new
            return self._versions[key].model_copy(deep=True)

    def list_versions(self, agent: str) -> list[AgentVersion]:
        with self._lock:
            found = [v.model_copy(deep=True) for (a, _), v in self._versions.items() if a == agent]
        return sorted(found, key=lambda v: (v.first_seen, v.version))

    # --- drift alerts ----------------------------------------------------------------------------------

    def claim_alert(self, alert: DriftAlert, owner: str, now: datetime, hold_s: float = 120.0) -> AlertClaim:
        check_id("alert id", alert.alert_id)
        with self._lock:
            doc = self._alerts.get(alert.alert_id)
            if doc is None:
                self._alerts[alert.alert_id] = {
                    "alert": DriftAlert.model_validate(utc_all(alert.model_dump())),
                    "claimed_by": owner, "claimed_at": utc(now), "published_at": None, "published_by": None}
                return AlertClaim.created
            state = claim_state(doc["claimed_at"], doc["published_at"], now, hold_s)
            if state is AlertClaim.reclaimed:
                doc.update(claimed_by=owner, claimed_at=utc(now))
            return state

    def mark_published(self, alert_id: str, owner: str, now: datetime) -> None:
        with self._lock:
            doc = self._alerts.get(alert_id)
            if doc is None:
                raise NotFound(f"alert {alert_id} was never claimed")
            if doc["published_at"] is None:
                doc.update(published_at=utc(now), published_by=owner)

    def list_alerts(self, *, agent: str | None = None, since: datetime | None = None,
                    limit: int = 100) -> list[StoredAlert]:
        with self._lock:
            found = [StoredAlert(d["alert"], d["published_at"]) for d in self._alerts.values()
                     if (agent is None or d["alert"].agent == agent)
                     and (since is None or d["alert"].detected_at >= utc(since))]
        found.sort(key=lambda s: (s.alert.detected_at, s.alert.alert_id), reverse=True)
        return found[:max(0, limit)]

    # --- the drift function's state ----------------------------------------------------------------------

    def get_state(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            value = self._state.get(key)
            return copy.deepcopy(value) if value is not None else None

    def put_state(self, key: str, value: dict[str, Any]) -> None:
        check_id("state key", key)
        value = utc_all(value)
        check_size(f"agex_state/{key}", {"value": value})
        with self._lock:
            self._state[key] = value

    # --- evaluation results ----------------------------------------------------------------------------

    def put_eval(self, tenant: str, result: dict[str, Any]) -> None:
        check_id("tenant", tenant)
        check_eval(result)
        result = utc_all(result)
        check_size(f"tenants/{tenant}/evals/{result['eval_id']}", result)
        with self._lock:
            self._evals[(tenant, result["eval_id"])] = result

    def list_evals(self, tenant: str, agent: str, *, version: str | None = None, accepted: bool | None = None,
                   limit: int = 20) -> list[dict[str, Any]]:
        with self._lock:
            found = [copy.deepcopy(r) for (t, _), r in self._evals.items()
                     if t == tenant and r["agent"] == agent
                     and (version is None or r["version"] == version)
                     and (accepted is None or r["accepted"] == accepted)]
        found.sort(key=lambda r: (r["created_at"], r["eval_id"]), reverse=True)
        return found[:max(0, limit)]
