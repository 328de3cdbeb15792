"""The tables of the Postgres checkpoint store and spend ledger, created idempotently in one schema.

    runs           (tenant, run_id)       the RunHead as jsonb, and the columns the queries filter and sort on
    events         (tenant, run_id, seq)  one Event each, as json; step for the context window
    approvals      (tenant, approval_id)  one Approval each, as json; status and created_at for listing
    spend          (entry_id)             one SpendEntry each, as columns (the ledger sums them)
    budget_alerts  (alert_id)             an alert claimed once
    schema_version                        which version of this layout the schema holds

Ids are ``COLLATE "C"``: listing orders and cursors compare them by code point, as Firestore and the memory
store do, whatever the database's default collation. Every table has ``expire_at`` (indexed) for
:func:`agex.adapters.postgres.retention.delete_expired`. Event and approval payloads are ``json``, not
``jsonb``: they are free-form tool data, never queried, and ``json`` keeps them exactly (a NUL character,
key order, the digits of a number); the head is ``jsonb`` for operators' ad-hoc queries.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from psycopg import Connection, sql
from psycopg_pool import ConnectionPool

from agex.core.errors import ConfigurationError
from agex.core.run import UNFINISHED_STATUSES, WAITING_STATUSES, RunStatus

from .connections import calling, check_schema

__all__ = ["SCHEMA_VERSION", "ensure_schema", "status_literals"]

SCHEMA_VERSION = 1


def status_literals(values: Iterable[RunStatus]) -> sql.Composed:
    """``('a', 'b')`` as a literal list: a partial index is used only by a query that repeats its predicate's
    literals, which a bound parameter would not."""
    return sql.SQL("({})").format(sql.SQL(", ").join(sql.Literal(str(v)) for v in values))


_DDL = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.schema_version (version integer NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.runs (
    tenant        text COLLATE "C" NOT NULL,
    run_id        text COLLATE "C" NOT NULL,
    status        text NOT NULL,
    agent         text NOT NULL,
    agent_version text NOT NULL,
    principal     text NOT NULL,
    thread_id     text,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    wake_at       timestamptz,
    expire_at     timestamptz NOT NULL,
    head          jsonb NOT NULL,
    PRIMARY KEY (tenant, run_id)
);
CREATE INDEX IF NOT EXISTS runs_status_updated ON {s}.runs (status, updated_at);
CREATE INDEX IF NOT EXISTS runs_waiting ON {s}.runs (wake_at) WHERE status IN {waiting};
CREATE INDEX IF NOT EXISTS runs_unfinished ON {s}.runs (agent, agent_version) WHERE status IN {unfinished};
CREATE INDEX IF NOT EXISTS runs_listing ON {s}.runs (tenant, created_at, run_id);
CREATE INDEX IF NOT EXISTS runs_expire ON {s}.runs (expire_at);
CREATE TABLE IF NOT EXISTS {s}.events (
    tenant    text COLLATE "C" NOT NULL,
    run_id    text COLLATE "C" NOT NULL,
    seq       bigint NOT NULL,
    step      bigint NOT NULL,
    expire_at timestamptz NOT NULL,
    event     json NOT NULL,
    PRIMARY KEY (tenant, run_id, seq)
);
CREATE INDEX IF NOT EXISTS events_step ON {s}.events (tenant, run_id, step);
CREATE INDEX IF NOT EXISTS events_expire ON {s}.events (expire_at);
CREATE TABLE IF NOT EXISTS {s}.approvals (
    tenant      text COLLATE "C" NOT NULL,
    approval_id text COLLATE "C" NOT NULL,
    run_id      text COLLATE "C" NOT NULL,
    status      text NOT NULL,
    created_at  timestamptz NOT NULL,
    expire_at   timestamptz NOT NULL,
    approval    json NOT NULL,
    PRIMARY KEY (tenant, approval_id)
);
CREATE INDEX IF NOT EXISTS approvals_listing ON {s}.approvals (tenant, created_at, approval_id);
CREATE INDEX IF NOT EXISTS approvals_status ON {s}.approvals (tenant, status, created_at, approval_id);
CREATE INDEX IF NOT EXISTS approvals_expire ON {s}.approvals (expire_at);
CREATE TABLE IF NOT EXISTS {s}.spend (
    entry_id  text COLLATE "C" PRIMARY KEY,
    tenant    text NOT NULL,
    principal text NOT NULL,
    agent     text NOT NULL,
    run_id    text NOT NULL,
    model     text NOT NULL,
    at        timestamptz NOT NULL,
    cost_usd  double precision NOT NULL,
    tokens    bigint NOT NULL,
    expire_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS spend_at ON {s}.spend (at);
CREATE INDEX IF NOT EXISTS spend_tenant ON {s}.spend (tenant, at);
CREATE INDEX IF NOT EXISTS spend_agent ON {s}.spend (agent, at);
CREATE INDEX IF NOT EXISTS spend_expire ON {s}.spend (expire_at);
CREATE TABLE IF NOT EXISTS {s}.budget_alerts (
    alert_id  text COLLATE "C" PRIMARY KEY,
    at        timestamptz NOT NULL,
    expire_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS budget_alerts_expire ON {s}.budget_alerts (expire_at);
"""


def ensure_schema(pool: ConnectionPool, schema: str) -> None:
    """Create the schema and its tables unless they exist. A schema of this layout already is only read (an
    instance starting must not take DDL locks on tables every step writes); otherwise concurrent callers
    serialize on an advisory lock, since ``IF NOT EXISTS`` alone races on the catalogs. A schema of a newer
    layout than this code knows is refused."""
    check_schema(schema)
    version_table = sql.Identifier(schema, "schema_version")
    ddl = sql.SQL(_DDL).format(s=sql.Identifier(schema), waiting=status_literals(WAITING_STATUSES),
                               unfinished=status_literals(UNFINISHED_STATUSES))
    lock = f"agex schema {schema}"
    with calling(f"creating the tables of schema {schema}"), pool.connection() as conn:
        with conn.transaction():
            if _version(conn, schema, version_table) == SCHEMA_VERSION:
                return
        # A session lock, and the DDL in a transaction begun after it: a transaction that waited for the
        # lock could still see the catalogs as they were before the other creator committed.
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (lock,))
        conn.commit()
        try:
            with conn.transaction():
                conn.execute(ddl)
                version = _version(conn, schema, version_table)
                if version is None:
                    conn.execute(sql.SQL("INSERT INTO {} VALUES (%s)").format(version_table), (SCHEMA_VERSION,))
                elif version > SCHEMA_VERSION:
                    raise ConfigurationError(f"Postgres schema {schema} has layout version {version}, newer than "
                                             f"this code's {SCHEMA_VERSION}: deploy the newer code, or use another "
                                             f"schema")
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (lock,))
            conn.commit()


def _version(conn: Connection[Any], schema: str, table: sql.Identifier) -> int | None:
    found = conn.execute("SELECT to_regclass(%s)", (f'"{schema}".schema_version',)).fetchone()
    if not found or found[0] is None:
        return None
    row = conn.execute(sql.SQL("SELECT max(version) FROM {}").format(table)).fetchone()
    return int(row[0]) if row and row[0] is not None else None
