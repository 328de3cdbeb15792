"""Postgres adapter of the spend ledger port: sums the rows of ``spend`` that
:class:`~agex.adapters.postgres.checkpoint_store.PostgresCheckpointStore` writes in the commit of each model
response (a row per model call, so no row is written by two steps), and claims alerts in ``budget_alerts``.

A budget's spend is one aggregate over its scope's rows in its window, served by the indexes
``spend (tenant, at)`` and ``spend (agent, at)`` (:mod:`agex.adapters.postgres.schema`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import sql
from psycopg_pool import ConnectionPool

from agex.core.spend import SpendEntry, Spent
from agex.ports.metrics_rules import utc
from agex.ports.rules import valid_document_id
from agex.ports.spend_ledger import Member, SpendLedger

from .connections import calling, check_schema, open_pool
from .schema import ensure_schema

__all__ = ["PostgresSpendLedger"]

_ALERT_RETENTION = timedelta(days=62)
"""Longer than the longest window (a month), as Firestore's: a claimed alert is never claimed twice."""
_ENTRY = "entry_id, tenant, principal, agent, run_id, model, at, cost_usd, tokens, expire_at"


class PostgresSpendLedger(SpendLedger):
    """``pool_or_dsn`` and ``schema``: the checkpoint store's (``store.pool``, ``store.schema``), whose commits
    write the entries; a DSN opens a pool of the ledger's own, closed by :meth:`close`."""

    def __init__(self, pool_or_dsn: ConnectionPool | str, *, schema: str = "agex", create_schema: bool = True) -> None:
        self.schema = check_schema(schema)
        self._owns_pool = isinstance(pool_or_dsn, str)
        self.pool = open_pool(pool_or_dsn) if isinstance(pool_or_dsn, str) else pool_or_dsn
        if create_schema:
            ensure_schema(self.pool, schema)

    def close(self) -> None:
        if self._owns_pool:
            self.pool.close()

    def _matching(self, member: Member, since: datetime) -> tuple[sql.Composed, list[Any]]:
        conditions: list[sql.Composable] = [sql.SQL("at > %s")]
        params: list[Any] = [utc(since)]
        for column in ("tenant", "principal", "agent"):
            value = getattr(member, column)
            if value is not None:
                conditions.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                params.append(value)
        for column, values in (("tenant", member.tenants), ("agent", member.agents)):
            if values:
                conditions.append(sql.SQL("{} = ANY(%s)").format(sql.Identifier(column)))
                params.append(list(values))
        return sql.SQL(" AND ").join(conditions), params

    def _rows(self, what: str, query: sql.Composed, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with calling(what), self.pool.connection() as conn:
            return conn.execute(query, params).fetchall()

    def spent(self, member: Member, since: datetime) -> Spent:
        where, params = self._matching(member, since)
        query = sql.SQL("SELECT coalesce(sum(cost_usd), 0), coalesce(sum(tokens), 0) FROM {t} WHERE {where}").format(
            t=sql.Identifier(self.schema, "spend"), where=where)
        [(cost, tokens)] = self._rows("summing spend for a budget", query, params)
        return Spent(cost_usd=float(cost), tokens=int(tokens))

    def oldest(self, member: Member, since: datetime, limit: int) -> Sequence[SpendEntry]:
        if limit <= 0:
            return []
        where, params = self._matching(member, since)
        query = sql.SQL("SELECT " + _ENTRY + " FROM {t} WHERE {where} ORDER BY at, entry_id LIMIT %s").format(
            t=sql.Identifier(self.schema, "spend"), where=where)
        rows = self._rows("reading the oldest spend of a budget", query, [*params, limit])
        return [_entry(row) for row in rows]

    def record(self, entry: SpendEntry) -> bool:
        if not valid_document_id(entry.entry_id) or "\x00" in entry.entry_id:  # the id Firestore would refuse
            raise ValueError(f"spend entry id {entry.entry_id!r} cannot name a document")
        query = sql.SQL("INSERT INTO {t} (" + _ENTRY + ") VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                        "ON CONFLICT (entry_id) DO NOTHING").format(t=sql.Identifier(self.schema, "spend"))
        params = (entry.entry_id, entry.tenant, entry.principal, entry.agent, entry.run_id, entry.model, utc(entry.at),
                  entry.cost_usd, entry.tokens, utc(entry.expire_at))
        with calling(f"recording spend {entry.entry_id}"), self.pool.connection() as conn:
            return conn.execute(query, params).rowcount == 1

    def claim_alert(self, alert_id: str, now: datetime) -> bool:
        query = sql.SQL("INSERT INTO {t} (alert_id, at, expire_at) VALUES (%s, %s, %s) "
                        "ON CONFLICT (alert_id) DO NOTHING").format(t=sql.Identifier(self.schema, "budget_alerts"))
        with calling(f"claiming budget alert {alert_id}"), self.pool.connection() as conn:
            return conn.execute(query, (alert_id, utc(now), utc(now) + _ALERT_RETENTION)).rowcount == 1


def _entry(row: tuple[Any, ...]) -> SpendEntry:
    entry_id, tenant, principal, agent, run_id, model, at, cost, tokens, expire_at = row
    return SpendEntry(entry_id=entry_id, tenant=tenant, principal=principal, agent=agent, run_id=run_id, model=model,
                      at=at.astimezone(UTC), cost_usd=cost, tokens=tokens, expire_at=expire_at.astimezone(UTC))
