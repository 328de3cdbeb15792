"""What Firestore's TTL policies do, done by a job: delete the rows whose ``expire_at`` has passed.

Postgres has no TTL: something must call :func:`delete_expired` periodically (the sweep, a scheduled job, or
pg_cron). Each batch is its own short transaction, so a large backlog never holds locks for long nor bloats
one transaction; a row is deleted by the same rule as a Firestore document, whatever else still refers to
it (a run's events and approvals carry their own ``expire_at``, as they do in Firestore).
"""

from __future__ import annotations

from datetime import datetime

from psycopg import sql
from psycopg_pool import ConnectionPool

from agex.ports.metrics_rules import utc

from .connections import calling, check_schema

__all__ = ["TABLES", "delete_expired"]

TABLES = ("runs", "events", "approvals", "spend", "budget_alerts")


def delete_expired(pool: ConnectionPool, schema: str, now: datetime, *, batch: int = 1000,
                   max_batches: int | None = None, tables: tuple[str, ...] = TABLES) -> dict[str, int]:
    """Delete the rows of ``tables`` (the run state's, by default; memory's pass theirs) with ``expire_at < now``,
    ``batch`` rows per transaction, until none is left (or ``max_batches`` per table were deleted: a job that runs
    again later finishes the rest). A row without ``expire_at`` is kept. Returns the rows deleted per table."""
    check_schema(schema)
    deleted: dict[str, int] = {}
    for table in tables:
        # ctid: the rows the subquery picked, whatever the table's key
        query = sql.SQL("DELETE FROM {t} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {t} WHERE expire_at < %s "
                        "LIMIT %s FOR UPDATE SKIP LOCKED))").format(t=sql.Identifier(schema, table))
        deleted[table] = n = 0
        while max_batches is None or n < max_batches:
            with calling(f"deleting expired rows of {schema}.{table}"), pool.connection() as conn:
                count = conn.execute(query, (utc(now), batch)).rowcount
            deleted[table] += count
            n += 1
            if count < batch:
                break
    return deleted
