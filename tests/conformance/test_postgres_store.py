"""The Postgres checkpoint store beyond the shared suites: its tables, contention and lost connections, lock
time-outs, values only Postgres refuses, schema creation, and the deletion job that stands in for TTL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from agex.adapters.postgres.checkpoint_store import PostgresCheckpointStore
from agex.adapters.postgres.schema import SCHEMA_VERSION
from agex.adapters.postgres.spend_ledger import PostgresSpendLedger
from agex.core.errors import AlreadyExists, ConfigurationError, TransientError
from agex.core.run import EventKind, RunHead, RunStatus
from agex.core.spend import SpendEntry
from agex.ports.checkpoint_store import Mutation
from agex.ports.spend_ledger import Member

from .conftest import fail_commits, unique
from .test_checkpoint_store import T0, append, create, make_approval, make_event, make_head, wait_for


@pytest.fixture
def pg(postgres_pool: Any) -> PostgresCheckpointStore:
    return PostgresCheckpointStore(postgres_pool, schema=unique("p_"), max_attempts=3)


def _one(store: PostgresCheckpointStore, query: str, *params: Any) -> Any:
    with store.pool.connection() as conn:
        row = conn.execute(sql.SQL(query).format(s=sql.Identifier(store.schema)), params).fetchone()
    return row


def test_tables_hold_the_head_as_jsonb_and_the_columns_queries_use(pg: PostgresCheckpointStore) -> None:
    head = create(pg, make_head(status=RunStatus.waiting_timer, wake_at=T0 + timedelta(hours=1), thread_id="th-1"),
                  n_events=2)
    row = _one(pg, "SELECT status, agent, principal, thread_id, wake_at, expire_at, pg_typeof(head)::text, "
                   "head->>'status', head->'metadata'->>'ticket' FROM {s}.runs WHERE tenant = %s AND run_id = %s",
               head.tenant, head.run_id)
    assert row == ("waiting_timer", "support", head.principal, "th-1", head.wake_at, head.expire_at, "jsonb",
                   "waiting_timer", "T-1")
    events = _one(pg, "SELECT array_agg(seq ORDER BY seq), min(expire_at), min(step) FROM {s}.events "
                      "WHERE tenant = %s AND run_id = %s", head.tenant, head.run_id)
    assert events == ([1, 2], T0 + timedelta(days=7), 0)
    assert _one(pg, "SELECT pg_typeof(event)::text, event->'data'->>'n' FROM {s}.events WHERE seq = 2") == ("json", "2")
    assert _one(pg, "SELECT max(version) FROM {s}.schema_version") == (SCHEMA_VERSION,)


def test_contention_beyond_retries_is_transient_and_writes_nothing(pg: PostgresCheckpointStore) -> None:
    head = create(pg, make_head(status=RunStatus.running))
    fail_commits(pg, 100)
    calls: list[int] = []

    def mutate(h: RunHead) -> Mutation[str]:
        calls.append(1)
        return wait_for(h, make_approval(h, "apr_never"))

    with pytest.raises(TransientError, match="contention") as info:
        pg.update_run(head.tenant, head.run_id, mutate)
    assert isinstance(info.value.__cause__, psycopg.errors.SerializationFailure)
    assert len(calls) == 3  # max_attempts, each deciding again on what it read
    assert pg.get_run(head.tenant, head.run_id) == head
    assert [e.seq for e in pg.list_events(head.tenant, head.run_id)] == [1]
    assert pg.get_approval(head.tenant, "apr_never") is None


def test_a_stored_sequence_number_is_a_conflict_never_overwritten(pg: PostgresCheckpointStore) -> None:
    head = create(pg, make_head())
    # an event row the head does not account for (written by hand): the next append collides with it
    stray = make_event(2, 9, EventKind.tool_result, stray=True)
    with pg.pool.connection() as conn:
        conn.execute(sql.SQL("INSERT INTO {}.events VALUES (%s, %s, 2, 9, %s, %s::json)").format(
            sql.Identifier(pg.schema)), (head.tenant, head.run_id, T0, stray.model_dump_json()))
    with pytest.raises(AlreadyExists, match="inconsistent"):
        pg.update_run(head.tenant, head.run_id, lambda h: append(h, make_event(2, 1, other=True)))
    assert pg.get_run(head.tenant, head.run_id) == head
    assert pg.list_events(head.tenant, head.run_id, after_seq=1) == [stray]


def test_a_run_over_events_left_behind_is_refused(pg: PostgresCheckpointStore) -> None:
    head = create(pg, make_head(), n_events=2)
    with pg.pool.connection() as conn:  # the head expired and went; its events are still there
        conn.execute(sql.SQL("DELETE FROM {}.runs").format(sql.Identifier(pg.schema)))
    with pytest.raises(AlreadyExists, match="events of an earlier run") as info:
        create(pg, head, n_events=1)
    assert info.value.existing is None and pg.get_run(head.tenant, head.run_id) is None


def test_values_that_are_not_json_are_refused(pg: PostgresCheckpointStore) -> None:
    head = make_head(seq=1)
    with pytest.raises(ValueError, match="JSON"):
        pg.create_run(head, [make_event(1, 0, when=datetime.now(UTC))])
    assert pg.get_run(head.tenant, head.run_id) is None
    head = create(pg, make_head(status=RunStatus.running))
    a = make_approval(head, arguments={"when": datetime.now(UTC)})
    with pytest.raises(ValueError, match="JSON"):
        pg.update_run(head.tenant, head.run_id, lambda h: wait_for(h, a))
    with pytest.raises(ValueError, match="JSON"):
        pg.update_run(head.tenant, head.run_id, lambda h: append(h, make_event(2, 1, ratio=float("nan"))))
    assert pg.get_run(head.tenant, head.run_id) == head
    assert pg.get_approval(head.tenant, a.approval_id) is None


def test_nul_characters_round_trip_in_payloads_and_are_refused_in_the_head(pg: PostgresCheckpointStore) -> None:
    head = create(pg, make_head(status=RunStatus.running))
    event = make_event(2, 1, EventKind.tool_result, output="bytes\x00inside")
    a = make_approval(head, arguments={"blob": "\x00"})
    pg.update_run(head.tenant, head.run_id, lambda h: Mutation(wait_for(h).head, [event], approvals=[a]))
    assert pg.list_events(head.tenant, head.run_id, after_seq=1) == [event]
    assert pg.get_approval(head.tenant, a.approval_id) == a
    bad = make_head(input="a NUL \x00 in the input")
    with pytest.raises(ValueError, match="NUL"):
        pg.create_run(bad, [])
    assert pg.get_run(bad.tenant, bad.run_id) is None
    assert pg.get_run(head.tenant, "run\x00") is None


def test_a_lost_connection_is_transient_and_the_pool_recovers(postgres_dsn: str) -> None:
    store = PostgresCheckpointStore(postgres_dsn, schema=unique("p_"), max_connections=1)
    try:
        head = create(store, make_head())
        with store.pool.connection() as conn:
            pid = conn.info.backend_pid
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:  # as a failover or a restart would
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(TransientError, match="unavailable"):
            store.get_run(head.tenant, head.run_id)
        assert store.get_run(head.tenant, head.run_id) == head  # the broken connection was replaced
    finally:
        store.close()
    assert store.pool.closed


def test_a_run_locked_too_long_is_transient(postgres_pool: Any) -> None:
    store = PostgresCheckpointStore(postgres_pool, schema=unique("p_"), lock_timeout_s=0.2)
    head = create(store, make_head())
    with postgres_pool.connection() as holder, holder.transaction():  # a writer stuck mid-transaction
        holder.execute(sql.SQL("SELECT 1 FROM {}.runs FOR UPDATE").format(sql.Identifier(store.schema)))
        with pytest.raises(TransientError) as info:
            store.update_run(head.tenant, head.run_id, lambda h: append(h, make_event(2)))
        assert isinstance(info.value.__cause__, psycopg.errors.LockNotAvailable)
    store.update_run(head.tenant, head.run_id, lambda h: append(h, make_event(2)))


def test_a_dsn_that_cannot_connect_is_a_configuration_error(postgres_dsn: str) -> None:
    wrong = psycopg.conninfo.make_conninfo(postgres_dsn, password="wrong", connect_timeout=2)
    with pytest.raises(ConfigurationError, match="cannot connect to Postgres"):
        PostgresCheckpointStore(wrong, schema=unique("p_"))


@pytest.mark.parametrize("schema", ["Upper", "1st", "pg_catalog", "a-b", "x" * 64, ""])
def test_schema_names_are_checked(postgres_pool: Any, schema: str) -> None:
    with pytest.raises(ValueError, match="schema name"):
        PostgresCheckpointStore(postgres_pool, schema=schema)


def test_the_schema_is_created_once_by_concurrent_starts(postgres_pool: Any) -> None:
    schema = unique("p_")
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_store() -> None:
        try:
            start.wait()
            PostgresCheckpointStore(postgres_pool, schema=schema)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    store = PostgresCheckpointStore(postgres_pool, schema=schema)
    assert _one(store, "SELECT count(*) FROM {s}.schema_version") == (1,)
    with postgres_pool.connection() as conn:
        conn.execute(sql.SQL("INSERT INTO {}.schema_version VALUES (%s)").format(sql.Identifier(schema)),
                     (SCHEMA_VERSION + 1,))
    with pytest.raises(ConfigurationError, match="newer than this code"):
        PostgresCheckpointStore(postgres_pool, schema=schema)


@pytest.fixture
def expiring(pg: PostgresCheckpointStore) -> tuple[RunHead, RunHead]:
    """Two runs, each with two events, an approval and a spend entry, all expiring with the run: one at
    T0 + 1 day, one at T0 + 30 days; and a budget alert claimed long before."""
    made = []
    for days in (1, 30):
        expire = T0 + timedelta(days=days)
        head = make_head(status=RunStatus.running, expire_at=expire, seq=1)
        pg.create_run(head, [make_event(1).model_copy(update={"expire_at": expire})])
        a = make_approval(head, expire_at=expire)
        entry = SpendEntry(entry_id=f"{head.run_id}-2", tenant=head.tenant, principal="p", agent="support",
                           run_id=head.run_id, model="m", at=T0, cost_usd=1.0, tokens=1, expire_at=expire)

        def mutate(h: RunHead, a: Any = a, entry: SpendEntry = entry, expire: datetime = expire) -> Mutation[str]:
            m = wait_for(h, a)
            return Mutation(m.head, [e.model_copy(update={"expire_at": expire}) for e in m.events], approvals=[a],
                            spend=[entry])

        pg.update_run(head.tenant, head.run_id, mutate)
        made.append(head)
    PostgresSpendLedger(pg.pool, schema=pg.schema).claim_alert("old", T0 - timedelta(days=70))
    return made[0], made[1]


def test_expired_rows_are_deleted_by_the_job(pg: PostgresCheckpointStore, expiring: tuple[RunHead, RunHead]) -> None:
    old, kept = expiring
    ledger = PostgresSpendLedger(pg.pool, schema=pg.schema)
    deleted = pg.delete_expired(T0 + timedelta(days=2), batch=1)  # one row per transaction: batches loop
    assert deleted == {"runs": 1, "events": 2, "approvals": 1, "spend": 1, "budget_alerts": 1}
    assert pg.get_run(old.tenant, old.run_id) is None and pg.list_events(old.tenant, old.run_id) == []
    assert pg.list_approvals(old.tenant) == []
    assert pg.get_run(kept.tenant, kept.run_id) is not None
    assert len(pg.list_events(kept.tenant, kept.run_id)) == 2 and len(pg.list_approvals(kept.tenant)) == 1
    assert ledger.spent(Member(), T0 - timedelta(days=1)).tokens == 1
    assert ledger.claim_alert("old", T0) is True  # its claim expired with it
    assert pg.delete_expired(T0 + timedelta(days=2)) == dict.fromkeys(deleted, 0)
