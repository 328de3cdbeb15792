"""Metrics store port: what the runtime keeps of behaviour once runs end. Runs' metrics records, the agent
versions seen with their fingerprints, drift alerts (each published exactly once), the drift function's
own state, and evaluation results.

Every write is keyed so that doing it twice changes nothing: a run's record by its run id, a version by
(agent, version), an alert by its id. Adapters: Firestore (``agex.adapters.gcp.firestore_metrics``) and
memory (``agex.adapters.inmemory.metrics_store``), held to ``tests/conformance/test_metrics_store.py``.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from agex.core.metrics import AgentVersion, DriftAlert, RunMetrics


class AlertClaim(StrEnum):
    created = "created"
    """The alert is new: this caller must publish it, then ``mark_published``."""
    reclaimed = "reclaimed"
    """It was claimed before by someone whose claim lapsed unpublished (it died): this caller publishes it
    (again, with the same alert id: a consumer drops the copy if the first one did go out)."""
    held = "held"
    """Someone else claimed it moments ago and may be publishing it: leave it."""
    published = "published"
    """It went out already: nothing to do."""


@dataclass(frozen=True)
class StoredAlert:
    alert: DriftAlert
    published_at: datetime | None


class MetricsStore(abc.ABC):
    # --- runs' metrics ---------------------------------------------------------------------------------

    @abc.abstractmethod
    def put_run_metrics(self, record: RunMetrics) -> bool:
        """Store the record unless one exists for its (tenant, run id); True if this call created it."""

    @abc.abstractmethod
    def recorded(self, runs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of the (tenant, run id) pairs have a record."""

    @abc.abstractmethod
    def query_run_metrics(self, *, ended_from: datetime, ended_to: datetime, agent: str | None = None,
                          tenant: str | None = None, version: str | None = None,
                          limit: int = 1000) -> list[RunMetrics]:
        """Records of runs that ended in ``[ended_from, ended_to)``, of one agent (and version) or all, of
        one tenant or every tenant, ordered by ``ended_at``; at most ``limit``."""

    # --- agent versions --------------------------------------------------------------------------------

    @abc.abstractmethod
    def register_version(self, version: AgentVersion) -> AgentVersion:
        """Record the version unless it is known; if it is known with another fingerprint, note the new one
        in ``mismatches`` (once per fingerprint). Return the stored version."""

    @abc.abstractmethod
    def list_versions(self, agent: str) -> list[AgentVersion]:
        """The agent's versions, in the order they were first seen."""

    # --- drift alerts ----------------------------------------------------------------------------------

    @abc.abstractmethod
    def claim_alert(self, alert: DriftAlert, owner: str, now: datetime, hold_s: float = 120.0) -> AlertClaim:
        """Claim the right to publish ``alert`` (keyed by ``alert_id``), atomically: a first claim stores
        it; a claim lapsed for ``hold_s`` without ``mark_published`` may be taken again."""

    @abc.abstractmethod
    def mark_published(self, alert_id: str, owner: str, now: datetime) -> None: ...

    @abc.abstractmethod
    def list_alerts(self, *, agent: str | None = None, since: datetime | None = None,
                    limit: int = 100) -> list[StoredAlert]:
        """Alerts, newest first."""

    # --- the drift function's state ----------------------------------------------------------------------

    @abc.abstractmethod
    def get_state(self, key: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    def put_state(self, key: str, value: dict[str, Any]) -> None: ...

    # --- evaluation results ----------------------------------------------------------------------------

    @abc.abstractmethod
    def put_eval(self, tenant: str, result: dict[str, Any]) -> None:
        """Store (or replace) an evaluation result: a dict with at least ``eval_id``, ``agent``,
        ``version``, ``created_at`` (a datetime) and ``accepted`` (bool)."""

    @abc.abstractmethod
    def list_evals(self, tenant: str, agent: str, *, version: str | None = None, accepted: bool | None = None,
                   limit: int = 20) -> list[dict[str, Any]]:
        """A tenant's evaluation results of an agent, newest first."""
