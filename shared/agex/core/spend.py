"""Spend control as data: budgets over rolling windows, and the ways a step may be degraded.

A budget caps the tokens or the cost of model calls of one scope (a user, an agent, a tenant, or the whole
deployment) over a rolling day or month; when it is reached, its ``action`` applies (docs/budgets.md). A
degradation (``Degrade``) is what a step does differently when a budget is close or an agent misses its
service-level objective (``SLO``): a cheaper or faster model, a shorter context window, fewer tools.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

BUDGET_ALERTS_TOPIC = "agex-budget-alerts"
"""Pub/Sub topic of ``budget.alert`` messages: a budget crossed 50%, 80% or 100% (once each per window)."""

ALERT_THRESHOLDS = (0.5, 0.8, 1.0)

Scope = Literal["user", "agent", "tenant", "deployment"]
Window = Literal["day", "month"]
WINDOWS: dict[str, timedelta] = {"day": timedelta(days=1), "month": timedelta(days=30)}
"""Rolling: a day is the last 24 hours, a month the last 30 days."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Degrade(_Frozen):
    """What a degraded step does differently; unset fields change nothing."""

    model: str | None = None
    """Asked first instead of the agent's model (which, with the fallbacks, is still tried after it)."""
    context_window_steps: int | None = Field(default=None, ge=1)
    """A shorter context window (never a longer one than the agent's)."""
    skip_optional_tools: bool = False
    """Leave out the tools the agent marks ``critical=False``: the model is not offered them."""

    def merge(self, other: Degrade) -> Degrade:
        """Both at once: the first model set wins, the shorter window, and skipping if either skips."""
        windows = [w for w in (self.context_window_steps, other.context_window_steps) if w is not None]
        return Degrade(model=self.model or other.model, context_window_steps=min(windows) if windows else None,
                       skip_optional_tools=self.skip_optional_tools or other.skip_optional_tools)

    @property
    def empty(self) -> bool:
        return self.model is None and self.context_window_steps is None and not self.skip_optional_tools


class Budget(_Frozen):
    """A cap on model spend of every member of a scope over a rolling window (docs/budgets.md)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")
    scope: Scope
    """Whose spend is summed: each user's (the run's principal), each agent's, each tenant's, or the whole
    deployment's. Each member of the scope has the budget to itself."""
    window: Window = "day"
    max_cost_usd: float | None = Field(default=None, gt=0)
    max_tokens: int | None = Field(default=None, ge=1)
    action: Literal["refuse", "degrade", "approve", "alert"] = "refuse"
    """Reached: ``refuse`` new runs (429 saying when it frees up) and stop running ones at their next model
    call; ``degrade`` their steps as ``degrade`` says; ``approve``: a run waits at its next model call until
    one of ``approvers`` lets it go on (for the rest of the run) or not (it fails); ``alert``: only the
    alerts."""
    degrade: Degrade = Field(default_factory=Degrade)
    """For ``degrade``; may also apply from ``degrade_at`` on whatever the action."""
    degrade_at: float | None = Field(default=None, gt=0, le=1)
    """Degrade from this share of the budget on (``0.8``: from 80%), before the action at 100%."""
    approvers: tuple[str, ...] = ()
    """For ``approve``: who may let a run go on, as in approval policies (exact principals or shell patterns).
    The run's own principal never may (four eyes)."""
    approval_expires_s: int = Field(default=24 * 3600, ge=60, le=7 * 24 * 3600)
    """For ``approve``: a run nobody lets go on within this fails (``approval_expired``)."""
    tenants: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    """Only these tenants or agents (empty: all). A tenant's budget of its own is one with ``tenants``."""

    @model_validator(mode="after")
    def _has_a_cap(self) -> Budget:
        if self.max_cost_usd is None and self.max_tokens is None:
            raise ValueError(f"budget {self.name!r}: give max_cost_usd, max_tokens, or both")
        if self.action == "approve" and not self.approvers:
            raise ValueError(f"budget {self.name!r}: action approve needs approvers")
        if (self.action == "degrade" or self.degrade_at is not None) and self.degrade.empty:
            raise ValueError(f"budget {self.name!r}: say how to degrade (degrade: {{model: ...}})")
        return self

    @property
    def span(self) -> timedelta:
        return WINDOWS[self.window]

    def applies(self, tenant: str, agent: str) -> bool:
        return (not self.tenants or tenant in self.tenants) and (not self.agents or agent in self.agents)

    def member(self, tenant: str, agent: str, principal: str) -> str:
        """The member of the scope a run belongs to: whose spend it adds to."""
        return {"user": f"{tenant}/{principal}", "agent": agent, "tenant": tenant, "deployment": "*"}[self.scope]


class SLO(_Frozen):
    """A service-level objective of an agent, over its recent runs (docs/models.md, "Degradation").

    The burn rate is how fast the error budget is spent: the share of recent runs that failed (or were slower
    than ``latency_s``) divided by the share allowed. At ``burn_rate`` or more the agent's steps degrade as
    ``degrade`` says; they recover once it falls below ``recover_below``."""

    max_error_rate: float | None = Field(default=None, gt=0, lt=1)
    """The share of runs that may fail (0.05: 95% succeed)."""
    latency_s: float | None = Field(default=None, gt=0)
    latency_target: float = Field(default=0.95, gt=0, lt=1)
    """``latency_target`` of runs finish within ``latency_s`` of active time (waits for humans excluded)."""
    window_minutes: int = Field(default=60, ge=5, le=7 * 24 * 60)
    burn_rate: float = Field(default=2.0, gt=0)
    recover_below: float = Field(default=1.0, gt=0)
    min_runs: int = Field(default=10, ge=1)
    """Fewer runs in the window than this decide nothing (a single failure is not a trend)."""
    degrade: Degrade

    @model_validator(mode="after")
    def _has_an_objective(self) -> SLO:
        if self.max_error_rate is None and self.latency_s is None:
            raise ValueError("an SLO needs max_error_rate, latency_s, or both")
        if self.recover_below > self.burn_rate:
            raise ValueError("recover_below must not exceed burn_rate")
        if self.degrade.empty:
            raise ValueError("an SLO must say how to degrade")
        return self


class SpendEntry(_Frozen):
    """One model call's spend, written with the model response that paid for it (in the same commit, so
    exactly once per call however often the step is delivered): the ledger budgets sum over windows."""

    entry_id: str
    """``{run}-{seq}``: the run and the sequence number of its ``model_response`` event."""
    tenant: str
    principal: str
    agent: str
    run_id: str
    model: str
    at: datetime
    cost_usd: float
    tokens: int
    expire_at: datetime
    """A little over the longest window: the ledger keeps nothing it no longer needs."""


class Spent(_Frozen):
    cost_usd: float = 0.0
    tokens: int = 0


LEDGER_RETENTION = timedelta(days=32)
