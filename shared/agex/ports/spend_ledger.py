"""Spend ledger port: what the model calls of a scope cost over a window, for budgets (docs/budgets.md).

The entries are written by the checkpoint store, in the commit that records each model response
(``Mutation.spend``), so a redelivered step never counts a call twice and a call is never counted without
its response. The ledger sums them; it has no document every step writes to, so no hot spot however many
runs share a budget.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from agex.core.spend import SpendEntry, Spent


@dataclass(frozen=True)
class Member:
    """Whose spend a budget sums: the fields every counted entry must have (None: any), and the tenants or
    agents the budget is restricted to (empty: any)."""

    tenant: str | None = None
    principal: str | None = None
    agent: str | None = None
    tenants: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()

    def matches(self, e: SpendEntry) -> bool:
        return ((self.tenant is None or e.tenant == self.tenant)
                and (self.principal is None or e.principal == self.principal)
                and (self.agent is None or e.agent == self.agent)
                and (not self.tenants or e.tenant in self.tenants)
                and (not self.agents or e.agent in self.agents))


class SpendLedger(abc.ABC):
    @abc.abstractmethod
    def spent(self, member: Member, since: datetime) -> Spent:
        """The summed cost and tokens of ``member``'s entries after ``since`` (an entry made exactly a window ago has aged out)."""

    @abc.abstractmethod
    def oldest(self, member: Member, since: datetime, limit: int) -> Sequence[SpendEntry]:
        """``member``'s first ``limit`` entries after ``since``, oldest first: when a rolling window
        frees up enough to go on."""

    @abc.abstractmethod
    def record(self, entry: SpendEntry) -> bool:
        """Write an entry no run's commit carries (a thread's summary call), once by its id: False when an
        entry of that id is there already (a redelivered task)."""

    @abc.abstractmethod
    def claim_alert(self, alert_id: str, now: datetime) -> bool:
        """True for the one caller, across every instance, that may publish the alert ``alert_id``."""
