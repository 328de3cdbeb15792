"""In-memory spend ledger: sums the entries the in-memory checkpoint store keeps."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime

from agex.adapters.inmemory.checkpoint_store import InMemoryCheckpointStore
from agex.core.spend import SpendEntry, Spent
from agex.ports.metrics_rules import utc
from agex.ports.spend_ledger import Member, SpendLedger


class InMemorySpendLedger(SpendLedger):
    def __init__(self, store: InMemoryCheckpointStore) -> None:
        self._store = store
        self._claimed: set[str] = set()
        self._lock = threading.Lock()

    def _entries(self, member: Member, since: datetime) -> list[SpendEntry]:
        since = utc(since)
        return [e for e in self._store.spend_entries() if utc(e.at) > since and member.matches(e)]

    def spent(self, member: Member, since: datetime) -> Spent:
        entries = self._entries(member, since)
        return Spent(cost_usd=sum(e.cost_usd for e in entries), tokens=sum(e.tokens for e in entries))

    def oldest(self, member: Member, since: datetime, limit: int) -> Sequence[SpendEntry]:
        return sorted(self._entries(member, since), key=lambda e: (e.at, e.entry_id))[:limit]

    def record(self, entry: SpendEntry) -> bool:
        return self._store.add_spend(entry)

    def claim_alert(self, alert_id: str, now: datetime) -> bool:
        with self._lock:
            if alert_id in self._claimed:
                return False
            self._claimed.add(alert_id)
            return True
