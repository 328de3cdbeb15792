"""What the runtime knows of an agent's behaviour: the values an agent declares as watched, the metrics
record of one run (written once when the run ends), the online evaluators that score a sample of runs,
the fingerprint of a version, and the drift alert the drift function publishes (schema v1).

See docs/observability.md for what each metric means and how drift is tested.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator

DRIFT_ALERTS_TOPIC = "agex-drift-alerts"
"""Where the drift function publishes ``drift.alert`` messages; notifiers subscribe as for approvals."""
DRIFT_ALERT_SCHEMA = 1
METRICS_RETENTION_DAYS = 400
"""How long a run's metrics record is kept (Firestore TTL on ``expire_at``): long enough for a
year-on-year look at spend, far longer than the run itself (7 days)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Watch(_Model):
    """A value the runtime records from every call of a tool, so that its distribution is a behavioural
    metric (and can drift): ``Watch(tool="issue_refund", arg="amount_usd")``. With ``per``, the value is
    divided by a number an earlier tool call of the same run returned, the latest one before the call:
    ``Watch(name="refund_share", tool="issue_refund", arg="amount_usd", per="lookup_order.amount_usd")``
    is the refund as a share of the order's amount."""

    tool: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
    arg: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,200}$")
    """A dotted path into the call's arguments."""
    per: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,63}\.[A-Za-z0-9_.-]{1,200}$")
    """``tool.path``: a dotted path into the output of the latest earlier successful call of ``tool``."""
    name: str = Field(default="", pattern=r"^$|^[A-Za-z0-9_.-]{1,100}$")
    """The metric's name; default ``tool.arg``."""

    @property
    def metric(self) -> str:
        return self.name or f"{self.tool}.{self.arg}"


class ModelUsage(_Model):
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cached_input_tokens: int = 0
    """The part of ``input_tokens`` served from a context cache (docs/models.md, "Context caching")."""
    saving_usd: float = 0.0
    """What those tokens would have cost more at the input price (cache storage not deducted)."""


class RunMetrics(_Model):
    """One run's behaviour, computed from its events when it ended and written once (keyed by the run)."""

    format: int = 1
    run_id: str
    tenant: str
    agent: str
    agent_version: str
    fingerprint: str = ""
    """Of the agent as it ran (``agex.core.metrics.fingerprint``); empty if unknown."""
    principal: str
    status: str
    """The run's terminal status: succeeded, failed, cancelled, expired."""
    error_code: str | None = None
    steps: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    model_calls: int = 0
    models: dict[str, ModelUsage] = Field(default_factory=dict)
    """Per model: the calls recorded in the run's events, their tokens and cost."""
    unrecorded_model_calls: int = 0
    """Model calls that were probably paid for but never recorded: attempts of a step that claimed it and
    died before its response was written (an upper bound; see docs/observability.md)."""
    unrecorded_cost_usd: float = 0.0
    """Their estimated cost: each priced as the step's recorded call (or the run's average call)."""
    latency_s: float = 0.0
    """From the run's creation to its end, waits for humans and timers included."""
    active_s: float = 0.0
    """Latency less the time spent waiting for approvals and timers."""
    tool_calls: dict[str, int] = Field(default_factory=dict)
    """Calls per tool that ran (results recorded, late results included)."""
    tool_errors: dict[str, int] = Field(default_factory=dict)
    approvals_requested: int = 0
    approvals_granted: int = 0
    approvals_rejected: int = 0
    approvals_edited: int = 0
    approvals_expired: int = 0
    guard_verdicts: dict[str, int] = Field(default_factory=dict)
    """Verdicts other than allow, per ``guard:action``."""
    retries: int = 0
    """Step attempts beyond the first (redeliveries and takeovers)."""
    watched: dict[str, list[float]] = Field(default_factory=dict)
    """The values of the agent's watched arguments, per metric, in call order (at most 50 each)."""
    scores: dict[str, float] = Field(default_factory=dict)
    """Online evaluators' scores, for the sampled runs."""
    created_at: datetime
    ended_at: datetime
    recorded_at: datetime
    expire_at: datetime
    evaluation: bool = False
    """A run of ``agex eval`` (its metadata has ``eval``): counted in usage, left out of drift baselines and
    windows, which are about live traffic."""
    recorded_by: Literal["step", "collector"] = "step"
    """Who wrote it: the step that ended the run, or the drift function's collector (runs that ended by
    cancellation or expiry, or whose recorder died)."""


@runtime_checkable
class Evaluator(Protocol):
    """An online evaluator: scores a sampled share of live runs after they end (``sample``, 0 to 1; chosen
    by the run id, so a redelivery scores the same runs). Its score, a number, becomes a behavioural
    metric of the run (``scores[name]``) and is tested for drift like any other. It must not raise for a
    run it cannot judge: return None."""

    name: str
    sample: float

    def score(self, run: RunMetrics, answer: str | None, events: Sequence[Any]) -> float | None: ...


class AgentVersion(_Model):
    """A version of an agent as first seen running, with its fingerprint (``agent_versions`` collection)."""

    agent: str
    version: str
    fingerprint: str
    parts: dict[str, str] = Field(default_factory=dict)
    """A digest of each part of the fingerprint, so a mismatch can say what changed."""
    first_seen: datetime
    mismatches: list[dict[str, Any]] = Field(default_factory=list)
    """Fingerprints seen later under the same version (a change without a version bump): at most 20."""


class Summary(_Model):
    """A side of a drift comparison, as the alert shows it."""

    n: int
    mean: float | None = None
    median: float | None = None
    p90: float | None = None
    rate: float | None = None
    counts: dict[str, int] | None = None


class DriftAlert(_Model):
    """``drift.alert`` v1: a behavioural metric of an agent version moved away from its baseline."""

    type: Literal["drift.alert"] = "drift.alert"
    schema_version: int = Field(default=DRIFT_ALERT_SCHEMA, alias="schema")
    alert_id: str
    """Stable for (agent, version, metric, window): every copy of the same alert has it."""
    agent: str
    version: str
    metric: str
    kind: Literal["categorical", "numeric", "rate"]
    test: str
    """``chi2`` (categorical), ``ks`` (numeric, two-sample Kolmogorov-Smirnov), ``fisher`` (rates)."""
    statistic: float
    p_value: float
    threshold: float
    """The p-value below which the metric alerts in this check (after correction for the number of
    metrics and of checks per window)."""
    baseline: Summary
    current: Summary
    baseline_version: str
    baseline_window: dict[str, str]
    window: dict[str, str]
    """``{"id", "from", "to"}`` of the window the current side comes from."""
    examples: list[dict[str, str]] = Field(default_factory=list)
    """Up to 5 runs of the current window showing the change: ``{"tenant", "run_id"}``."""
    detected_at: datetime

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("examples")
    @classmethod
    def _few(cls, v: list[dict[str, str]]) -> list[dict[str, str]]:
        return v[:5]
