"""Budgets across runs: how much of each budget a run's scope has spent, what that means for a new run or the
next model call, and the alerts at 50%, 80% and 100% (docs/budgets.md).

Spend is read from the ledger (one aggregation query per budget that applies). A read is reused for a few
seconds only while the budget is far from its cap: the share read, plus what the spend rate seen between
this process's last two reads would add since, must stay under ``1 - margin``. Close to the cap every check
reads, so a budget is overshot by no more than the model calls already under way when it was reached: at
most one step's cost for each step in flight.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agex.core.errors import AgexError, BudgetExceeded
from agex.core.spend import ALERT_THRESHOLDS, BUDGET_ALERTS_TOPIC, Budget, Degrade, Spent
from agex.obs import logging as log
from agex.ports.event_bus import EventBus
from agex.ports.spend_ledger import Member, SpendLedger

_log = log.get("budgets")
_OLDEST_SCAN = 500


@dataclass(frozen=True)
class Standing:
    """Where one member of a budget's scope stands."""

    budget: Budget
    member: str
    spent: Spent

    @property
    def share(self) -> float:
        """The larger of the cost and the token share of the cap (1.0: reached)."""
        shares = [self.spent.cost_usd / self.budget.max_cost_usd if self.budget.max_cost_usd else 0.0,
                  self.spent.tokens / self.budget.max_tokens if self.budget.max_tokens else 0.0]
        return max(shares)

    @property
    def reached(self) -> bool:
        return self.share >= 1.0

    def record(self) -> dict[str, Any]:
        """Where the member stands, as approvers and alerts show it."""
        b = self.budget
        return {"budget": b.name, "scope": b.scope, "member": self.member, "window": b.window,
                "share": round(self.share, 4), "spent_usd": round(self.spent.cost_usd, 6),
                "spent_tokens": self.spent.tokens, "max_cost_usd": b.max_cost_usd, "max_tokens": b.max_tokens}

    def describe(self) -> str:
        caps = [f"${self.spent.cost_usd:.4f} of ${self.budget.max_cost_usd:.4f}" if self.budget.max_cost_usd else "",
                f"{self.spent.tokens} of {self.budget.max_tokens} tokens" if self.budget.max_tokens else ""]
        return (f"budget {self.budget.name!r} ({self.budget.scope} {self.member}, rolling {self.budget.window}): "
                f"{', '.join(c for c in caps if c)} spent")


@dataclass(frozen=True)
class StepBudget:
    """What the budgets say about a step's model call."""

    refuse: Standing | None = None
    """A ``refuse`` budget is reached: the run stops here."""
    approve: tuple[Standing, ...] = ()
    """``approve`` budgets reached: the run goes on only once a human let it."""
    degrade: Degrade = field(default_factory=Degrade)
    degraded_by: tuple[str, ...] = ()
    """The budgets that degrade the step, each with its standing, for the routing event."""


@dataclass
class _Read:
    at: datetime
    spent: Spent
    rate: float | None  # share per second between the two last reads; None after the first


class Budgets:
    """The deployment's budgets over one ledger. ``cache_s``: how long a read may be reused far from the cap;
    ``margin``: the share below the cap from which every check reads (0.2: from 80%)."""

    def __init__(self, budgets: Sequence[Budget], ledger: SpendLedger, bus: EventBus | None = None, *,
                 cache_s: float = 5.0, margin: float = 0.2) -> None:
        names = [b.name for b in budgets]
        if len(set(names)) != len(names):
            raise ValueError("two budgets have the same name; budget names must be unique")
        self.budgets, self.ledger, self.bus = tuple(budgets), ledger, bus
        self.cache_s, self.margin = cache_s, margin
        self._reads: dict[tuple[str, str], _Read] = {}
        self._alerted: set[str] = set()
        self._lock = threading.Lock()

    def applying(self, tenant: str, agent: str) -> list[Budget]:
        return [b for b in self.budgets if b.applies(tenant, agent)]

    def standings(self, tenant: str, agent: str, principal: str, now: datetime) -> list[Standing]:
        """Each applying budget's standing for this run's members; sends the alerts they cross."""
        found = []
        for budget in self.applying(tenant, agent):
            member = budget.member(tenant, agent, principal)
            spent = self._spent(budget, _member(budget, member), member, now)
            standing = Standing(budget, member, spent)
            self._alert(standing, now)
            found.append(standing)
        return found

    def admit(self, tenant: str, agent: str, principal: str, now: datetime) -> None:
        """Raise ``BudgetExceeded`` if a ``refuse`` budget this run would spend from is reached."""
        for s in self.standings(tenant, agent, principal, now):
            if s.budget.action == "refuse" and s.reached:
                resets = self.resets_at(s, now)
                raise BudgetExceeded(
                    f"{s.describe()}: no new run until {resets.isoformat()}, when enough of the window's spend "
                    "has aged out", budget=s.budget.name, resets_at=resets,
                    retry_after_s=max(1, math.ceil((resets - now).total_seconds())))

    def for_step(self, tenant: str, agent: str, principal: str, now: datetime) -> StepBudget:
        refuse, approve = None, []
        degrade, by = Degrade(), []
        for s in self.standings(tenant, agent, principal, now):
            b = s.budget
            if s.reached and b.action == "refuse":
                refuse = refuse or s
            elif s.reached and b.action == "approve":
                approve.append(s)
            if (s.reached and b.action == "degrade") or (b.degrade_at is not None and s.share >= b.degrade_at):
                degrade = degrade.merge(b.degrade)
                by.append(f"{b.name} at {s.share:.0%}")
        return StepBudget(refuse, tuple(approve), degrade, tuple(by))

    def spent_here(self, tenant: str, agent: str, principal: str, spent: Spent) -> None:
        """Count a model call this process just recorded into its reads: another call here sees it even
        from a reused read (other instances' spend it learns from the ledger)."""
        with self._lock:
            for budget in self.applying(tenant, agent):
                read = self._reads.get((budget.name, budget.member(tenant, agent, principal)))
                if read is not None:
                    read.spent = Spent(cost_usd=read.spent.cost_usd + spent.cost_usd,
                                       tokens=read.spent.tokens + spent.tokens)

    def resets_at(self, s: Standing, now: datetime) -> datetime:
        """When enough of the window's oldest spend ages out for the member to be under the cap again (a
        lower bound when more than a few hundred calls would have to age out)."""
        budget = s.budget
        since = now - budget.span
        cost, tokens = s.spent.cost_usd, s.spent.tokens
        entries = self.ledger.oldest(_member(budget, s.member), since, _OLDEST_SCAN)
        for e in entries:
            cost, tokens = cost - e.cost_usd, tokens - e.tokens
            if Standing(budget, s.member, Spent(cost_usd=max(cost, 0.0), tokens=max(tokens, 0))).share < 1.0:
                return e.at + budget.span
        return (entries[-1].at if entries else now) + budget.span

    def _spent(self, budget: Budget, member: Member, key: str, now: datetime) -> Spent:
        with self._lock:
            last = self._reads.get((budget.name, key))
        if last is not None and self._fresh_enough(budget, last, now):
            return last.spent
        spent = self.ledger.spent(member, now - budget.span)
        rate = None
        if last is not None and now > last.at:
            grown = Standing(budget, key, spent).share - Standing(budget, key, last.spent).share
            rate = max(grown, 0.0) / (now - last.at).total_seconds()
        with self._lock:
            self._reads[(budget.name, key)] = _Read(now, spent, rate)
        return spent

    def _fresh_enough(self, budget: Budget, last: _Read, now: datetime) -> bool:
        age = (now - last.at).total_seconds()
        if last.rate is None or not 0 <= age < self.cache_s:
            return False
        projected = Standing(budget, "", last.spent).share + last.rate * age
        return projected < 1.0 - self.margin

    def _alert(self, s: Standing, now: datetime) -> None:
        """A ``budget.alert`` for each threshold the standing has crossed, once per window period (the UTC
        day, or the calendar month) across every instance: the ledger's claim decides who sends it."""
        if self.bus is None:
            return
        period = now.strftime("%Y-%m-%d" if s.budget.window == "day" else "%Y-%m")
        for threshold in ALERT_THRESHOLDS:
            if s.share < threshold:
                break
            alert_id = f"budget:{s.budget.name}:{s.member}:{int(threshold * 100)}:{period}"
            with self._lock:
                if alert_id in self._alerted:
                    continue
                self._alerted.add(alert_id)
            try:
                if not self.ledger.claim_alert(alert_id, now):
                    continue
                b = s.budget
                message = {"type": "budget.alert", "version": 1, "alert_id": alert_id, **s.record(),
                           "threshold": threshold, "action": b.action, "at": now.isoformat()}
                _log.warning("%s: %d%% of the budget reached (action %s)", s.describe(), int(threshold * 100),
                             b.action, extra={"fields": {"budget_event": "alert", "budget": b.name,
                                                         "member": s.member, "threshold": threshold,
                                                         "alert_id": alert_id}})
                self.bus.publish(BUDGET_ALERTS_TOPIC, message, {
                    "type": "budget.alert", "version": "1", "budget": b.name, "alert_id": alert_id,
                    "threshold": str(int(threshold * 100))})
            except AgexError as e:
                _log.warning("could not send budget alert %s: %s", alert_id, e.message)
            except Exception:
                _log.exception("could not send budget alert %s", alert_id)


def _member(budget: Budget, key: str) -> Member:
    """The ledger filter of a member key made by ``Budget.member``."""
    if budget.scope == "user":
        tenant, _, principal = key.partition("/")
        return Member(tenant=tenant, principal=principal, agents=budget.agents)
    if budget.scope == "tenant":
        return Member(tenant=key, agents=budget.agents)
    if budget.scope == "agent":
        return Member(agent=key, tenants=budget.tenants)
    return Member(tenants=budget.tenants, agents=budget.agents)

