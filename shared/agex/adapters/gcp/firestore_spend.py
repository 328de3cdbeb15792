"""Firestore adapter of the spend ledger port.

Layout (``prefix`` is empty in production; tests isolate themselves with a unique one)::

    {prefix}spend/{run}-{seq}          tenant, principal, agent, run_id, model, at, cost_usd, tokens, expire_at
    {prefix}budget_alerts/{alert id}   at: when the alert was claimed

The entries are written by :class:`~agex.adapters.gcp.firestore_store.FirestoreCheckpointStore` in the
commit of each model response: a new document per model call, so no document is written by two steps and
none is hot however many runs share a budget. A budget's spend is one aggregation query (``sum`` of cost and
tokens) over the entries of its scope in its window, billed one read per 1,000 entries it covers.

Indexes (``terraform/modules/fleet`` declares them): composite indexes on ``spend`` for each scope's
filters followed by ``at``: (``tenant``, ``principal``, ``at``), (``tenant``, ``at``), (``agent``, ``at``),
(``agent``, ``tenant``, ``at``), (``tenant``, ``agent``, ``at``), (``tenant``, ``principal``, ``agent``, ``at``);
a TTL policy on ``spend.expire_at`` and ``budget_alerts.expire_at``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from agex.adapters.gcp.firestore_calls import calling, native
from agex.core.spend import SpendEntry, Spent
from agex.ports.metrics_rules import utc
from agex.ports.rules import check_collection_prefix, valid_document_id
from agex.ports.spend_ledger import Member, SpendLedger

if TYPE_CHECKING:
    from google.cloud import firestore

__all__ = ["FirestoreSpendLedger"]

_ALERT_RETENTION = timedelta(days=62)


class FirestoreSpendLedger(SpendLedger):
    """``client``: a ``google.cloud.firestore.Client``; ``prefix``: the checkpoint store's, whose commits
    write the entries."""

    def __init__(self, client: firestore.Client | None = None, *, project: str | None = None,
                 prefix: str = "") -> None:
        check_collection_prefix(prefix)
        if client is None:
            from google.cloud import firestore

            client = firestore.Client(project=project)
        self._client = client
        self._spend = f"{prefix}spend"
        self._alerts = f"{prefix}budget_alerts"

    def _query(self, member: Member, since: datetime) -> Any:
        from google.cloud.firestore_v1.base_query import FieldFilter

        query: Any = self._client.collection(self._spend)
        for name in ("tenant", "principal", "agent"):
            value = getattr(member, name)
            if value is not None:
                query = query.where(filter=FieldFilter(name, "==", value))
        if member.tenants:
            query = query.where(filter=FieldFilter("tenant", "in", list(member.tenants)))
        if member.agents:
            query = query.where(filter=FieldFilter("agent", "in", list(member.agents)))
        return query.where(filter=FieldFilter("at", ">", utc(since)))

    def spent(self, member: Member, since: datetime) -> Spent:
        aggregate = self._query(member, since).sum("cost_usd", alias="cost").sum("tokens", alias="tokens")
        with calling("summing spend for a budget"):
            results = aggregate.get()
        values = {r.alias: r.value for r in (results[0] if results else [])}
        return Spent(cost_usd=float(values.get("cost") or 0.0), tokens=int(values.get("tokens") or 0))

    def oldest(self, member: Member, since: datetime, limit: int) -> Sequence[SpendEntry]:
        query = self._query(member, since).order_by("at").limit(limit)
        with calling("reading the oldest spend of a budget"):
            docs = list(query.stream())
        return [SpendEntry.model_validate(native(d.to_dict())) for d in docs]

    def record(self, entry: SpendEntry) -> bool:
        from google.api_core import exceptions as gexc

        if not valid_document_id(entry.entry_id):
            raise ValueError(f"spend entry id {entry.entry_id!r} cannot name a document")
        ref = self._client.collection(self._spend).document(entry.entry_id)
        with calling(f"recording spend {entry.entry_id}"):
            try:
                ref.create(entry.model_dump(mode="python"))
            except gexc.Conflict:
                return False
        return True

    def claim_alert(self, alert_id: str, now: datetime) -> bool:
        from google.api_core import exceptions as gexc

        doc_id = alert_id.replace("/", "~")
        if not valid_document_id(doc_id):
            raise ValueError(f"budget alert id {alert_id!r} cannot name a document")
        ref = self._client.collection(self._alerts).document(doc_id)
        with calling(f"claiming budget alert {alert_id}"):
            try:
                ref.create({"at": utc(now), "expire_at": utc(now) + _ALERT_RETENTION})
            except gexc.Conflict:
                return False
        return True
