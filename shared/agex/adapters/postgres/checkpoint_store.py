"""Postgres adapter of the checkpoint store port (tables: :mod:`agex.adapters.postgres.schema`).

``update_run`` is one transaction: ``SELECT ... FOR UPDATE`` of the head row, ``mutate`` on what was read,
the rules of :mod:`agex.ports.rules`, then the head, its new events, the approvals and the spend entries
of the mutation, committed together or not at all. The row lock serializes writers of one run, so under
the default READ COMMITTED nothing another writer commits can slip in between the read and the write; under
a stricter isolation the server may refuse a commit instead (a serialization failure), and so may a deadlock:
those are retried with a new read and a new decision, ``max_attempts`` times in all, then ``TransientError``.
An event is inserted, never overwritten: a sequence number stored already is a conflict (``AlreadyExists``).

The same write rules as Firestore's hold (document sizes, ids), so code that passes on one store passes on
the other. A connection lost mid-transaction leaves nothing: the server rolls back what was not committed.
A connection lost *during* the commit leaves its outcome unknown, as any database's, so it is not retried
here: ``TransientError``, and the caller's retry (Cloud Tasks') reads the head again.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from psycopg import Connection, sql
from psycopg import errors as pgerr
from psycopg_pool import ConnectionPool

from agex.core.approval import Approval, ApprovalStatus
from agex.core.errors import AlreadyExists, NotFound, TransientError
from agex.core.run import UNFINISHED_STATUSES, WAITING_STATUSES, Event, RunHead, RunStatus
from agex.core.spend import SpendEntry
from agex.ports.checkpoint_store import CheckpointStore, Mutation, RunFilter
from agex.ports.failpoints import NO_FAILPOINTS, Failpoints
from agex.ports.metrics_rules import utc
from agex.ports.rules import check_continues, check_late_decision, check_size, check_update, valid_document_id

from .connections import calling, check_schema, open_pool
from .documents import decode_approval, decode_event, decode_head, encode_approval, encode_event, encode_head
from .schema import ensure_schema, status_literals

T = TypeVar("T")

__all__ = ["BEFORE_COMMIT", "PostgresCheckpointStore"]

BEFORE_COMMIT = "postgres.before_commit"
"""The failpoint hit in ``update_run`` after every write and before the commit: a drill that kills the
process there shows that nothing of an uncommitted transaction is ever seen."""

_RETRIED = (pgerr.SerializationFailure, pgerr.DeadlockDetected)

_HEAD_COLUMNS = "status, agent, agent_version, principal, thread_id, created_at, updated_at, wake_at, expire_at, head"
_SELECT_HEAD = "SELECT head FROM {s}.runs WHERE tenant = %s AND run_id = %s"
_INSERT_HEAD = ("INSERT INTO {s}.runs (tenant, run_id, " + _HEAD_COLUMNS + ") "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb) "
                "ON CONFLICT (tenant, run_id) DO NOTHING RETURNING 1")
_UPDATE_HEAD = ("UPDATE {s}.runs SET (" + _HEAD_COLUMNS + ") = (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb) "
                "WHERE tenant = %s AND run_id = %s")
_INSERT_EVENT = ("INSERT INTO {s}.events (tenant, run_id, seq, step, expire_at, event) "
                 "VALUES (%s, %s, %s, %s, %s, %s::json)")
_UPSERT_APPROVAL = ("INSERT INTO {s}.approvals (tenant, approval_id, run_id, status, created_at, expire_at, approval) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s::json) ON CONFLICT (tenant, approval_id) DO UPDATE SET "
                    "(run_id, status, created_at, expire_at, approval) = (EXCLUDED.run_id, EXCLUDED.status, "
                    "EXCLUDED.created_at, EXCLUDED.expire_at, EXCLUDED.approval)")
# an entry carried again (a replayed decision) writes the same row: the entry's id is its run's and seq's
_UPSERT_SPEND = ("INSERT INTO {s}.spend (entry_id, tenant, principal, agent, run_id, model, at, cost_usd, tokens, "
                 "expire_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (entry_id) DO UPDATE SET "
                 "(tenant, principal, agent, run_id, model, at, cost_usd, tokens, expire_at) = (EXCLUDED.tenant, "
                 "EXCLUDED.principal, EXCLUDED.agent, EXCLUDED.run_id, EXCLUDED.model, EXCLUDED.at, "
                 "EXCLUDED.cost_usd, EXCLUDED.tokens, EXCLUDED.expire_at)")


class PostgresCheckpointStore(CheckpointStore):
    """Run heads, events, approvals and spend entries in Postgres.

    ``pool_or_dsn``: a ``psycopg_pool.ConnectionPool`` (shared with other adapters; the caller closes it), or
    a DSN (``postgresql://user:password@host:port/database``) for which the store opens its own pool of
    ``max_connections`` (closed by :meth:`close`). ``schema``: where the tables are, created unless they exist
    (``create_schema=False`` when a migration job owns them). ``max_attempts``: attempts of one
    ``update_run`` refused by a serialization failure or a deadlock. ``lock_timeout_s``: how long
    ``update_run`` waits for a run's row lock before ``TransientError`` (a writer stuck mid-transaction must
    not stall every other). ``failpoints``: :data:`BEFORE_COMMIT`, for drills.
    """

    def __init__(self, pool_or_dsn: ConnectionPool | str, *, schema: str = "agex", create_schema: bool = True,
                 max_attempts: int = 10, lock_timeout_s: float = 10.0, max_connections: int = 10,
                 failpoints: Failpoints = NO_FAILPOINTS) -> None:
        self.schema = check_schema(schema)
        self._owns_pool = isinstance(pool_or_dsn, str)
        self.pool = open_pool(pool_or_dsn, max_size=max_connections) if isinstance(pool_or_dsn, str) else pool_or_dsn
        self._max_attempts = max(1, max_attempts)
        self._lock_timeout = f"{max(1, int(lock_timeout_s * 1000))}ms"
        self._failpoints = failpoints
        self._queries: dict[str, sql.Composed] = {}
        if create_schema:
            ensure_schema(self.pool, schema)

    def close(self) -> None:
        """Close the pool if the store opened it."""
        if self._owns_pool:
            self.pool.close()

    def _q(self, template: str) -> sql.Composed:
        query = self._queries.get(template)
        if query is None:
            query = self._queries[template] = sql.SQL(template).format(s=sql.Identifier(self.schema))
        return query

    def _rows(self, what: str, query: sql.Composed, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with calling(what), self.pool.connection() as conn:
            return conn.execute(query, params).fetchall()

    # --- runs ---------------------------------------------------------------------------------------------

    def create_run(self, head: RunHead, events: Sequence[Event]) -> RunHead:
        check_continues(head.seq - len(events), events)
        _check_id("tenant", head.tenant)
        _check_id("run id", head.run_id)
        _check_sizes(head, events)
        doc = encode_head(head)
        rows = [_event_row(head.tenant, head.run_id, e) for e in events]
        what = f"creating run {head.run_id}"
        with calling(what), self.pool.connection() as conn, conn.transaction():
            if conn.execute(self._q(_INSERT_HEAD), (head.tenant, head.run_id, *_head_columns(head, doc))).fetchone():
                self._insert_events(conn, rows, f"run {head.run_id} of tenant {head.tenant} cannot be created: "
                                                f"events of an earlier run with this id are still stored")
                return head
            row = conn.execute(self._q(_SELECT_HEAD), (head.tenant, head.run_id)).fetchone()
        raise AlreadyExists(f"run {head.run_id} exists", existing=decode_head(row[0]) if row else None)

    def get_run(self, tenant: str, run_id: str) -> RunHead | None:
        if not _valid(tenant, run_id):
            return None  # no run can have this name: create_run refuses it
        rows = self._rows(f"reading run {run_id}", self._q(_SELECT_HEAD), (tenant, run_id))
        return decode_head(rows[0][0]) if rows else None

    def update_run(self, tenant: str, run_id: str, mutate: Callable[[RunHead], Mutation[T]]) -> Mutation[T]:
        if not _valid(tenant, run_id):
            raise NotFound(f"run {run_id} not found")
        refused: BaseException | None = None
        for attempt in range(1, self._max_attempts + 1):
            if attempt > 1:
                time.sleep(random.uniform(0, min(0.5, 0.005 * 2**attempt)))  # de-synchronize contenders
            try:
                with calling(f"updating run {run_id}"), self.pool.connection() as conn:
                    return self._update_once(conn, tenant, run_id, mutate)
            except TransientError as e:
                # only what the server rolled back for certain is tried again; a connection lost during the
                # commit may have committed, and deciding again on the new head would apply mutate twice
                if not isinstance(e.__cause__, _RETRIED):
                    raise
                refused = e.__cause__
        raise TransientError(f"updating run {run_id}: too much contention, gave up after {self._max_attempts} "
                             f"attempts (serialization failures or deadlocks)") from refused

    def _update_once(self, conn: Connection[Any], tenant: str, run_id: str,
                     mutate: Callable[[RunHead], Mutation[T]]) -> Mutation[T]:
        with conn.transaction():
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (self._lock_timeout,))
            row = conn.execute(self._q(_SELECT_HEAD + " FOR UPDATE"), (tenant, run_id)).fetchone()
            if row is None:
                raise NotFound(f"run {run_id} not found")
            head = decode_head(row[0])
            result = mutate(head)
            if result.head is None:
                return result
            # all checked before anything is sent: all or nothing, and a refused mutation costs no round trip
            check_update(head, result.events, result.approvals)
            _check_sizes(result.head, result.events)
            for approval in result.approvals:
                check_size(_approval_path(approval.tenant, approval.approval_id), approval.model_dump(mode="python"))
            doc = encode_head(result.head)
            events = [_event_row(tenant, run_id, e) for e in result.events]
            approvals = [_approval_row(a) for a in result.approvals]
            conn.execute(self._q(_UPDATE_HEAD), (*_head_columns(result.head, doc), tenant, run_id))
            self._insert_events(conn, events, f"run {run_id}: an event among seq {[e.seq for e in result.events]} "
                                              f"exists already although the head was locked; the run's events are "
                                              f"inconsistent with its head")
            with conn.cursor() as cur:
                if approvals:
                    cur.executemany(self._q(_UPSERT_APPROVAL), approvals)
                if result.spend:
                    cur.executemany(self._q(_UPSERT_SPEND), [_spend_row(e) for e in result.spend])
            self._failpoints.hit(BEFORE_COMMIT)
        return result

    def _insert_events(self, conn: Connection[Any], rows: list[tuple[Any, ...]], conflict: str) -> None:
        """Insert, never overwrite: a sequence number stored already is ``AlreadyExists(conflict)``."""
        if not rows:
            return
        try:
            with conn.cursor() as cur:
                cur.executemany(self._q(_INSERT_EVENT), rows)
        except pgerr.UniqueViolation as e:
            raise AlreadyExists(conflict) from e

    # --- events -------------------------------------------------------------------------------------------

    def list_events(self, tenant: str, run_id: str, *, after_seq: int = 0, limit: int = 100) -> list[Event]:
        if limit <= 0 or not _valid(tenant, run_id):
            return []
        rows = self._rows(f"listing events of run {run_id}", self._q(
            "SELECT event FROM {s}.events WHERE tenant = %s AND run_id = %s AND seq > %s ORDER BY seq LIMIT %s"),
            (tenant, run_id, after_seq, limit))
        return [decode_event(r[0]) for r in rows]

    def events_since_step(self, tenant: str, run_id: str, step: int) -> list[Event]:
        if not _valid(tenant, run_id):
            return []
        rows = self._rows(f"reading events of run {run_id}", self._q(
            "SELECT event FROM {s}.events WHERE tenant = %s AND run_id = %s AND step >= %s ORDER BY seq"),
            (tenant, run_id, step))
        return [decode_event(r[0]) for r in rows]

    # --- queries over runs --------------------------------------------------------------------------------

    def find_runs(self, statuses: Sequence[RunStatus], updated_before: datetime, limit: int = 100, *,
                  updated_after: datetime | None = None) -> list[RunHead]:
        if not statuses or limit <= 0:
            return []
        after = sql.SQL("AND updated_at > %s") if updated_after is not None else sql.SQL("")
        query = sql.SQL("SELECT head FROM {s}.runs WHERE status = ANY(%s) AND updated_at < %s {after} "
                        "ORDER BY updated_at, tenant, run_id LIMIT %s").format(
            s=sql.Identifier(self.schema), after=after)
        params: list[Any] = [sorted({str(RunStatus(s)) for s in statuses}), utc(updated_before)]
        if updated_after is not None:
            params.append(utc(updated_after))
        return [decode_head(r[0]) for r in self._rows("finding runs", query, [*params, limit])]

    def list_runs(self, tenant: str, where: RunFilter, *, limit: int = 100,
                  after: tuple[datetime, str] | None = None) -> list[RunHead]:
        if limit <= 0 or not _valid(tenant):
            return []
        conditions: list[sql.Composable] = [sql.SQL("tenant = %s")]
        params: list[Any] = [tenant]
        for column, value in (("agent", where.agent), ("status", str(RunStatus(where.status)) if where.status else None),
                              ("principal", where.principal), ("thread_id", where.thread)):
            if value is not None:
                conditions.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                params.append(value)
        if where.created_after is not None:
            conditions.append(sql.SQL("created_at >= %s"))
            params.append(utc(where.created_after))
        if where.created_before is not None:
            conditions.append(sql.SQL("created_at < %s"))
            params.append(utc(where.created_before))
        if after is not None:
            conditions.append(sql.SQL("(created_at, run_id) < (%s, %s)"))
            params += [utc(after[0]), after[1]]
        query = sql.SQL("SELECT head FROM {s}.runs WHERE {where} ORDER BY created_at DESC, run_id DESC "
                        "LIMIT %s").format(s=sql.Identifier(self.schema), where=sql.SQL(" AND ").join(conditions))
        return [decode_head(r[0]) for r in self._rows(f"listing runs of tenant {tenant}", query, [*params, limit])]

    def unfinished_versions(self, *, tenant: str | None = None, agent: str | None = None) -> dict[tuple[str, str], int]:
        if tenant is not None and not _valid(tenant):
            return {}
        conditions: list[sql.Composable] = [sql.SQL("status IN {}").format(status_literals(UNFINISHED_STATUSES))]
        params: list[Any] = []
        for column, value in (("tenant", tenant), ("agent", agent)):
            if value is not None:
                conditions.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                params.append(value)
        query = sql.SQL("SELECT agent, agent_version, count(*) FROM {s}.runs WHERE {where} GROUP BY agent, "
                        "agent_version").format(s=sql.Identifier(self.schema), where=sql.SQL(" AND ").join(conditions))
        return {(r[0], r[1]): int(r[2]) for r in self._rows("counting unfinished runs per version", query, params)}

    def find_waiting(self, due_before: datetime, limit: int = 100) -> list[RunHead]:
        if limit <= 0:
            return []
        # the statuses as literals, so the partial index runs_waiting serves the query
        query = sql.SQL("SELECT head FROM {s}.runs WHERE status IN {waiting} AND wake_at < %s "
                        "ORDER BY wake_at, tenant, run_id LIMIT %s").format(
            s=sql.Identifier(self.schema), waiting=status_literals(WAITING_STATUSES))
        return [decode_head(r[0]) for r in self._rows("finding waiting runs", query, (utc(due_before), limit))]

    # --- approvals ----------------------------------------------------------------------------------------

    def get_approval(self, tenant: str, approval_id: str) -> Approval | None:
        if not _valid(tenant, approval_id):
            return None  # no approval can have this name
        rows = self._rows(f"reading approval {approval_id}", self._q(
            "SELECT approval FROM {s}.approvals WHERE tenant = %s AND approval_id = %s"), (tenant, approval_id))
        return decode_approval(rows[0][0]) if rows else None

    def list_approvals(self, tenant: str, *, status: ApprovalStatus | None = None, limit: int = 100,
                       after: tuple[datetime, str] | None = None) -> list[Approval]:
        if limit <= 0 or not _valid(tenant):
            return []
        conditions: list[sql.Composable] = [sql.SQL("tenant = %s")]
        params: list[Any] = [tenant]
        if status is not None:
            conditions.append(sql.SQL("status = %s"))
            params.append(str(ApprovalStatus(status)))
        if after is not None:
            conditions.append(sql.SQL("(created_at, approval_id) > (%s, %s)"))
            params += [utc(after[0]), after[1]]
        query = sql.SQL("SELECT approval FROM {s}.approvals WHERE {where} ORDER BY created_at, approval_id "
                        "LIMIT %s").format(s=sql.Identifier(self.schema), where=sql.SQL(" AND ").join(conditions))
        rows = self._rows(f"listing approvals of tenant {tenant}", query, [*params, limit])
        return [decode_approval(r[0]) for r in rows]

    def add_late_decision(self, tenant: str, approval_id: str, entry: dict[str, Any]) -> None:
        if not _valid(tenant, approval_id):
            raise NotFound(f"approval {approval_id} not found")
        check_late_decision(approval_id, entry)
        what = f"recording a late decision on approval {approval_id}"
        with calling(what), self.pool.connection() as conn, conn.transaction():
            # the row lock makes a concurrent redelivery wait, then find the entry there and add nothing
            row = conn.execute(self._q("SELECT approval FROM {s}.approvals WHERE tenant = %s AND approval_id = %s "
                                       "FOR UPDATE"), (tenant, approval_id)).fetchone()
            if row is None:
                raise NotFound(f"approval {approval_id} not found")
            approval = decode_approval(row[0])
            if entry in approval.late_decisions:
                return  # a redelivered late decision is recorded once
            updated = approval.model_copy(update={"late_decisions": [*approval.late_decisions, dict(entry)]})
            check_size(_approval_path(tenant, approval_id), updated.model_dump(mode="python"))
            conn.execute(self._q("UPDATE {s}.approvals SET approval = %s::json WHERE tenant = %s AND approval_id = %s"),
                         (encode_approval(updated), tenant, approval_id))

    # --- retention ----------------------------------------------------------------------------------------

    def delete_expired(self, now: datetime | None = None, *, batch: int = 1000) -> dict[str, int]:
        """Delete every row whose ``expire_at`` has passed (Firestore's TTL policies): see
        :func:`agex.adapters.postgres.retention.delete_expired`."""
        from .retention import delete_expired

        return delete_expired(self.pool, self.schema, now or datetime.now(UTC), batch=batch)


# --- rows ------------------------------------------------------------------------------------------------


def _head_columns(head: RunHead, doc: str) -> tuple[Any, ...]:
    return (str(head.status), head.agent, head.agent_version, head.principal, head.thread_id, utc(head.created_at),
            utc(head.updated_at), utc(head.wake_at) if head.wake_at else None, utc(head.expire_at), doc)


def _event_row(tenant: str, run_id: str, event: Event) -> tuple[Any, ...]:
    return (tenant, run_id, event.seq, event.step, utc(event.expire_at), encode_event(event))


def _approval_row(a: Approval) -> tuple[Any, ...]:
    return (a.tenant, a.approval_id, a.run_id, str(a.status), utc(a.created_at), utc(a.expire_at), encode_approval(a))


def _spend_row(e: SpendEntry) -> tuple[Any, ...]:
    return (e.entry_id, e.tenant, e.principal, e.agent, e.run_id, e.model, utc(e.at), e.cost_usd, e.tokens,
            utc(e.expire_at))


# --- rules -----------------------------------------------------------------------------------------------


def _approval_path(tenant: str, approval_id: str) -> str:
    return f"tenants/{tenant}/approvals/{approval_id}"


def _check_sizes(head: RunHead, events: Sequence[Event]) -> None:
    """Firestore's document limit, so that what passes here passes there."""
    path = f"tenants/{head.tenant}/runs/{head.run_id}"
    check_size(path, head.model_dump(mode="python"))
    for event in events:
        check_size(f"{path}/events/{event.seq:010d}", event.model_dump(mode="python"))


def _valid(*values: str) -> bool:
    """Ids a run or approval can have: Firestore's document ids (the rule every store shares), and no NUL,
    which Postgres text cannot hold."""
    return all(valid_document_id(v) and "\x00" not in v for v in values)


def _check_id(what: str, value: str) -> None:
    if not _valid(value):
        raise ValueError(f"invalid {what} {value!r}: ids must be non-empty, without '/' or NUL, not '.', '..' or "
                         f"'__...__', and at most 1500 bytes")
